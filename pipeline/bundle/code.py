"""The ichct code a bundle's configs need, its third-party packages, and vendoring it into ``scripts/``.

* :func:`config_modules` - the ``ichct`` modules that configs name (``_target_`` and ``$``
  expressions); a name a package exports lazily (its ``_EXPORTS``) counts as the module that
  defines it.
* :func:`module_closure` - those modules and what they import at module level, transitively (read
  from the source with :mod:`ast`). A function-local import is not followed: it is how a module
  keeps an optional or heavy dependency off its import (``ichct.pipeline.models.data`` imports
  the training config only where a transform list is built, which a bundle never does); the
  exported bundles are run end to end without ichct to prove nothing they need is missing
  (``tests/test_bundle_export.py``), and :func:`lazy_imports_outside` lists what is left out.
* :func:`third_party` - the distributions (``pydicom``, ``SimpleITK``, ...) that code imports,
  function-local imports included.

What an export copies is narrower still: :mod:`ichct.pipeline.bundle.prune` keeps only the
definitions the configs reach, and :mod:`ichct.pipeline.bundle.vendor` writes them into
``scripts/``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGE", "ICHCT_NAME", "config_names", "config_modules", "module_closure", "third_party",
           "installed_versions", "lazy_imports_outside", "resolve_name", "module_file", "longest_module",
           "import_base", "lazy_exports"]

PACKAGE = "ichct"
_ROOT = Path(__file__).resolve().parents[2]  # the installed ``ichct`` package folder
ICHCT_NAME = re.compile(r"(?<![\w.])ichct(?:\.[A-Za-z_]\w*)+")
_BASE = {"monai", "torch", "numpy"}  # own keys of metadata.json


def module_file(name: str) -> Path | None:
    """Source file of an ``ichct`` module or package (``None`` when it is neither).

    Examples
    --------
    >>> module_file("ichct.transforms").name, module_file("ichct.transforms.crop").name
    ('__init__.py', 'crop.py')
    >>> module_file("ichct.transforms.CropHeadd") is None, module_file("numpy") is None
    (True, True)
    """
    top, *parts = name.split(".")
    if top != PACKAGE:
        return None
    base = _ROOT.joinpath(*parts) if parts else _ROOT
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    f = base.with_suffix(".py")
    return f if parts and f.is_file() else None


def longest_module(dotted: str) -> str | None:
    """The longest prefix of a dotted name that is an ``ichct`` module (``None`` when none is).

    Examples
    --------
    >>> longest_module("ichct.pipeline.decision.DecisionRule.load")
    'ichct.pipeline.decision'
    """
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if module_file(cand) is not None:
            return cand
    return None


@cache
def lazy_exports(package: str) -> dict[str, str]:
    """``{name: defining module}`` of a package whose ``__init__`` resolves names lazily from an ``_EXPORTS`` dict.

    Examples
    --------
    >>> lazy_exports("ichct.transforms")["LoadCTd"]
    'ichct.transforms.loading'
    """
    path = module_file(package)
    if path is None or path.name != "__init__.py":
        return {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and getattr(node, "value", None) is not None:
            exports = ast.literal_eval(node.value)
            return {str(k): f"{package}.{str(v).partition(':')[0]}" for k, v in exports.items()}
    return {}


def resolve_name(dotted: str) -> str | None:
    """The ``ichct`` module that defines ``dotted`` (a module, or a name in one), or None.

    Examples
    --------
    >>> resolve_name("ichct.transforms.LoadCTd")  # exported lazily by ichct.transforms
    'ichct.transforms.loading'
    >>> resolve_name("ichct.pipeline.decision.DecisionRule.load")
    'ichct.pipeline.decision'
    """
    module = longest_module(dotted)
    if module is None:
        return None
    rest = dotted[len(module) + 1:].split(".")[0] if len(dotted) > len(module) else ""
    defined_in = lazy_exports(module).get(rest)
    return resolve_name(defined_in) if defined_in and defined_in != module else module


def config_names(configs: Iterable[Any]) -> set[str]:
    """Dotted ``ichct`` names anywhere in the configs (``_target_`` values, expressions, imports).

    Examples
    --------
    >>> sorted(config_names([{"t": {"_target_": "ichct.transforms.LoadCTd"}, "e": "$ichct.networks.ich_unet3d(1)"}]))
    ['ichct.networks.ich_unet3d', 'ichct.transforms.LoadCTd']
    """
    found: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, Mapping):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            found.update(m.group(0) for m in ICHCT_NAME.finditer(x))

    for c in configs:
        walk(c)
    return found


def config_modules(configs: Iterable[Any]) -> set[str]:
    """``ichct`` modules that define the names in the configs (``_target_`` values, expressions, imports)."""
    return {m for m in map(resolve_name, config_names(configs)) if m}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body: Iterable[ast.stmt], module_level: bool) -> Iterator[ast.stmt]:
    """Import statements of a body: at module level (class bodies and ``if``/``try`` blocks run on
    import, function bodies and ``if TYPE_CHECKING:`` do not), or anywhere."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif module_level and isinstance(node, ast.If) and _is_type_checking(node):
            yield from _statements(node.orelse, module_level)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _statements([child], module_level)
                elif isinstance(child, ast.excepthandler):
                    yield from _statements(child.body, module_level)


def import_base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module that an ``ImportFrom`` statement in ``module`` imports from.

    Examples
    --------
    >>> import_base("ichct.transforms.dicom.reader", ast.parse("from ..crop import CropHead").body[0])
    'ichct.transforms.crop'
    """
    if not node.level:
        return node.module or ""
    path = module_file(module)
    pkg = module if path is not None and path.name == "__init__.py" else module.rsplit(".", 1)[0]
    base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
    return f"{base}.{node.module}" if node.module else base


def _imported(name: str, node: ast.Import | ast.ImportFrom) -> tuple[set[str], set[str]]:
    """(ichct modules, top-level third-party modules) of one import statement in module ``name``."""
    if isinstance(node, ast.Import):
        own = {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        return own, {a.name.split(".")[0] for a in node.names if a.name.split(".")[0] != PACKAGE}
    mod = import_base(name, node)
    if mod.split(".")[0] != PACKAGE:
        return set(), {mod.split(".")[0]}
    own = {mod} | {resolve_name(f"{mod}.{a.name}") or mod for a in node.names}
    return own, set()


@cache
def _imports(name: str, module_level: bool = True) -> tuple[frozenset[str], frozenset[str]]:
    """(ichct modules, top-level third-party modules) imported by one ichct module."""
    path = module_file(name)
    assert path is not None
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own: set[str] = set()
    other: set[str] = set()
    for node in _statements(tree.body, module_level):
        o, t = _imported(name, node)  # type: ignore[arg-type]
        own |= o
        other |= t
    resolved = {m for m in (longest_module(o) for o in own) if m}
    return frozenset(resolved), frozenset(o for o in other if o and o != "__future__")


def module_closure(modules: Iterable[str]) -> set[str]:
    """The modules and every ``ichct`` module (and parent package) they import at module level, transitively."""
    todo, seen = list(modules), set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += list(_imports(m)[0])
    return seen


def lazy_imports_outside(modules: Iterable[str]) -> dict[str, set[str]]:
    """``{module: ichct modules it imports inside a function}`` that are not among ``modules``."""
    closure = set(modules)
    out: dict[str, set[str]] = {}
    for m in sorted(closure):
        missing = set(_imports(m, module_level=False)[0]) - closure
        if missing:
            out[m] = missing
    return out


def installed_versions() -> dict[str, str]:
    """``{distribution name: version}`` of the installed distributions."""
    out: dict[str, str] = {}
    for d in importlib_metadata.distributions():
        name = d.metadata.get("Name")
        if name:
            out.setdefault(name, d.version)
    return out


def third_party(modules: Iterable[str]) -> dict[str, str]:
    """``{distribution: installed version}`` that the modules import (monai, torch, numpy and the
    standard library excluded)."""
    tops: set[str] = set()
    for m in modules:
        tops |= set(_imports(m, module_level=False)[1])
    dists = importlib_metadata.packages_distributions()
    versions = installed_versions()
    out: dict[str, str] = {}
    for top in sorted(tops):
        if top in sys.stdlib_module_names or top in _BASE or top == PACKAGE:
            continue
        for dist in dists.get(top, []):
            if dist.lower() not in _BASE and dist in versions:
                out[dist] = versions[dist]
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))
