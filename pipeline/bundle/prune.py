"""Definition-level closure of a bundle's code: only the functions, classes and constants its configs reach.

:func:`ichct.pipeline.bundle.code.module_closure` finds whole modules; most of a module a bundle
imports is code the bundle never runs (``ichct.pipeline.decision`` is imported for
``DecisionRule`` and brings every scoring rule along). Here the unit is a module's top-level
statement:

* :func:`definition_closure` - starting from the dotted names the configs give, every top-level
  statement a kept statement names, transitively: function and class bodies, default values,
  decorators, base classes and annotations (so the pruned source still defines or imports every
  name it mentions). An import inside a function is followed only into modules that are kept
  anyway: as in :func:`~ichct.pipeline.bundle.code.module_closure`, such an import is how a module
  keeps a dependency off the paths a bundle takes. Statements that bind no
  name (an ``if`` or ``try`` at module level, a call) run on import and always stay, as do a
  package's lazy ``__getattr__`` and its parents' ``__init__`` code.
* :func:`pruned_source` - a module's source without the statements outside the closure, its
  ``import`` lists, ``__all__`` and lazy ``_EXPORTS`` table cut to the names kept. Comments and
  blank lines above a left-out statement go with it.

Names looked up by string at run time (``getattr(module, name)``) are not seen; the exported
bundles are run end to end without ichct to prove nothing they need is missing
(``tests/test_bundle_export.py``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache

from ichct.pipeline.bundle.code import PACKAGE, import_base, lazy_exports, longest_module, module_file

__all__ = ["KeptCode", "definition_closure", "pruned_source"]

_ALWAYS_NAMES = {"__getattr__", "__dir__", "__all__", "__version__"}
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Assign,
                ast.AnnAssign)


@dataclass
class _Module:
    """One ``ichct`` module's top-level statements and the names each binds."""

    name: str
    lines: list[str]
    body: list[ast.stmt]
    binds: dict[str, int] = field(default_factory=dict)  # name -> statement index
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name -> (ichct module, attr)
    always: set[int] = field(default_factory=set)
    lazy: dict[str, str] = field(default_factory=dict)  # lazy package: name -> defining module


@dataclass
class KeptCode:
    """What :func:`definition_closure` keeps: statement indexes and the names used, per module."""

    statements: dict[str, set[int]] = field(default_factory=dict)
    names: dict[str, set[str]] = field(default_factory=dict)

    @property
    def modules(self) -> set[str]:
        """The modules with at least one kept statement (parent packages included)."""
        return set(self.statements)


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _import_bindings(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str, str | None]]:
    """``(bound name, ichct module, attribute or None)`` of the ``ichct`` names one import binds."""
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name.split(".")[0] == PACKAGE:
                yield (a.asname or a.name).split(".")[0], (a.name if a.asname else PACKAGE), None
        return
    base = import_base(module, node)
    if base.split(".")[0] != PACKAGE:
        return
    for a in node.names:
        sub = f"{base}.{a.name}"
        yield (a.asname or a.name), *((sub, None) if module_file(sub) is not None else (base, a.name))


@cache
def _module(name: str) -> _Module:
    path = module_file(name)
    if path is None:
        raise KeyError(f"{name} is not an {PACKAGE} module")
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    info = _Module(name, text.splitlines(keepends=True), tree.body)
    for i, node in enumerate(tree.body):
        names = _bound_names(node)
        if not isinstance(node, _DEFINITIONS) or not names or _is_future(node) or set(names) & _ALWAYS_NAMES:
            info.always.add(i)
        info.binds.update({n: i for n in names})
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            info.imports.update({b: (m, a) for b, m, a in _import_bindings(name, node)})
    info.lazy = lazy_exports(name)
    return info


def _is_future(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and node.module == "__future__"


class _References(ast.NodeVisitor):
    """``(name, attribute or None)`` for every name a statement loads (``x.y`` gives ``("x", "y")``)."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str | None]] = []

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name):
            self.found.append((node.value.id, node.attr))
        else:
            self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self.found.append((node.id, None))


class _Closure:
    """The work list of :func:`definition_closure`."""

    def __init__(self) -> None:
        self.kept = KeptCode()
        self.todo: list[tuple[str, int]] = []

    def keep_statement(self, module: str, index: int) -> None:
        if index not in self.kept.statements.setdefault(module, set()):
            self.kept.statements[module].add(index)
            self.todo.append((module, index))

    def keep_module(self, module: str) -> None:
        """``module`` is imported: its parents' and its own import-time statements run."""
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            info = _module(".".join(parts[:i]))
            self.kept.statements.setdefault(info.name, set())
            for index in info.always:
                self.keep_statement(info.name, index)

    def keep_name(self, module: str, name: str | None) -> None:
        """Keep what ``module.name`` is: a definition, an import's target, a lazy export or a submodule."""
        self.keep_module(module)
        info = _module(module)
        if name is None:
            return
        self.kept.names.setdefault(module, set()).add(name)
        if name in info.binds:
            self.keep_statement(module, info.binds[name])
            if name in info.imports:
                self.keep_name(*info.imports[name])
        elif name in info.lazy:
            self.keep_name(info.lazy[name], name)
        elif module_file(f"{module}.{name}") is not None:
            self.keep_module(f"{module}.{name}")

    def follow(self, module: str, index: int) -> None:
        """Keep every name one kept statement uses."""
        info = _module(module)
        node = info.body[index]
        refs = _References()
        refs.visit(node)
        for name, attr in refs.found:
            if name not in info.binds:
                continue  # a local, a parameter or a builtin
            self.keep_name(module, name)
            target = info.imports.get(name)
            if target is not None and target[1] is None and attr is not None:
                self.keep_name(target[0], attr)  # module.attr

    def follow_local_imports(self) -> None:
        """Keep what kept functions import from modules that are kept anyway (work for :meth:`follow`)."""
        for module, indexes in list(self.kept.statements.items()):
            info = _module(module)
            for index in list(indexes):
                node = info.body[index]
                for sub in ast.walk(node):
                    if not isinstance(sub, (ast.Import, ast.ImportFrom)) or sub is node:
                        continue
                    for _, target, attr in _import_bindings(module, sub):
                        if target in self.kept.statements and attr not in self.kept.names.get(target, set()):
                            self.keep_name(target, attr)


def definition_closure(names: Iterable[str]) -> KeptCode:
    """The top-level statements of ``ichct`` modules that the dotted names need, transitively.

    Examples
    --------
    >>> kept = definition_closure(["ichct.pipeline.decision.DecisionRule.load"])
    >>> "ichct.pipeline.decision.rule" in kept.modules, "topk_mean_score" in kept.names["ichct.pipeline.decision"]
    (True, False)
    >>> "ichct.pipeline.decision.slice_rules" in kept.modules  # the package imports it, DecisionRule does not
    False
    """
    closure = _Closure()
    for dotted in names:
        module = longest_module(dotted)
        if module is None:
            raise KeyError(f"{dotted}: not an {PACKAGE} name")
        rest = dotted[len(module) + 1:].split(".")[0] if len(dotted) > len(module) else None
        closure.keep_name(module, rest)
    while closure.todo:
        while closure.todo:
            closure.follow(*closure.todo.pop())
        closure.follow_local_imports()
    return closure.kept


def _literal_table(node: ast.Assign | ast.AnnAssign, keep: set[str]) -> str:
    """``__all__`` (wrapped) or ``_EXPORTS`` (one entry per line) cut to the kept names."""
    target = node.targets[0] if isinstance(node, ast.Assign) else node.target
    head = ast.unparse(target) + (f": {ast.unparse(node.annotation)}" if isinstance(node, ast.AnnAssign) else "")
    value = ast.literal_eval(node.value)  # type: ignore[arg-type]
    if isinstance(value, dict):
        items = "".join(f'    "{k}": "{v}",\n' for k, v in value.items() if k in keep)
        return f"{head} = {{\n{items}}}\n"
    lines, line = [], f"{head} = ["
    for name in (f'"{k}"' for k in value if k in keep):
        if len(line) + len(name) + 2 > 110:
            lines.append(line.rstrip())
            line = " " * (len(head) + 4)
        line += f"{name}, "
    return "\n".join(lines + [line.rstrip(", ") + "]"]) + "\n"


def _first_line(node: ast.stmt) -> int:
    """The statement's first line, its decorators included."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def _statement_text(info: _Module, index: int, used: set[str], referenced: set[str]) -> str:
    """One kept statement's source, its import list or name table cut to the names used.

    An ``ichct`` import keeps only the names kept code refers to: its other names may be pruned
    from the module it imports from."""
    node = info.body[index]
    lines = "".join(info.lines[_first_line(node) - 1:node.end_lineno])
    names = _bound_names(node)
    if isinstance(node, (ast.Import, ast.ImportFrom)) and not _is_future(node):
        wanted = referenced if any(True for _ in _import_bindings(info.name, node)) else used
        kept = [a for a in node.names if (a.asname or a.name).split(".")[0] in wanted]
        if len(kept) < len(node.names):
            node = type(node)(**{**node.__dict__, "names": kept})  # type: ignore[arg-type]
            return ast.unparse(node) + "\n"
    elif names in (["__all__"], ["_EXPORTS"]) and isinstance(node, (ast.Assign, ast.AnnAssign)):
        if isinstance(node.value, (ast.List, ast.Tuple, ast.Dict)):
            return _literal_table(node, used)
    return lines


def pruned_source(module: str, kept: KeptCode) -> str:
    """The source of ``module`` with only the statements and names ``kept`` holds.

    Examples
    --------
    >>> kept = definition_closure(["ichct.pipeline.decision.DecisionRule.load"])
    >>> text = pruned_source("ichct.pipeline.decision", kept)
    >>> "import DecisionRule" in text, "consecutive_call" in text  # the package's imports cut to the kept names
    (True, False)
    >>> text = pruned_source("ichct.pipeline.decision.rule", kept)
    >>> "class DecisionRule" in text, "def check_k" in text
    (True, False)
    """
    info = _module(module)
    indexes = kept.statements.get(module, set())
    used = kept.names.get(module, set()) | {n for i in indexes for n in _bound_names(info.body[i])
                                            if n not in ("__all__", "_EXPORTS")}
    out: list[str] = []
    previous_end, gap = 0, ""
    for i, node in enumerate(info.body):
        start = _first_line(node)
        above = "".join(info.lines[previous_end:start - 1])  # comments and blank lines above it
        if i in indexes:
            out += [gap, above, _statement_text(info, i, used, kept.names.get(module, set()))]
            gap = ""
        else:
            gap += "\n" * (above.count("\n") - len(above.strip().splitlines()))  # its blank lines stay
        previous_end = node.end_lineno or start
    out.append("".join(info.lines[previous_end:]))
    return _tidy("".join(out))


def _tidy(text: str) -> str:
    """At most two blank lines in a row, none at the end."""
    lines, blank = [], 0
    for line in text.splitlines():
        blank = blank + 1 if not line.strip() else 0
        if blank <= 2:
            lines.append(line)
    return "\n".join(lines).rstrip() + "\n"
