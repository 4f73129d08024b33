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
* :func:`vendor` - copy the closure into ``scripts/ichct/`` of an exported bundle with its imports
  rewritten (``ichct.`` -> ``scripts.ichct.``) so that it runs without ``ichct`` installed.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGE", "config_modules", "module_closure", "third_party", "vendor", "rewrite_code", "rewrite_config",
           "installed_versions", "lazy_imports_outside", "resolve_name", "export_size"]

PACKAGE = "ichct"
_ROOT = Path(__file__).resolve().parents[2]  # the installed ``ichct`` package folder
_NAME = re.compile(r"(?<![\w.])ichct(?:\.[A-Za-z_]\w*)+")
_BASE = {"monai", "torch", "numpy"}  # own keys of metadata.json


def _module_file(name: str) -> Path | None:
    """Source file of an ``ichct`` module or package (``None`` when it is neither)."""
    parts = name.split(".")[1:]
    base = _ROOT.joinpath(*parts) if parts else _ROOT
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    f = base.with_suffix(".py")
    return f if parts and f.is_file() else None


def _longest_module(dotted: str) -> str | None:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if _module_file(cand) is not None:
            return cand
    return None


@cache
def _lazy_exports(package: str) -> dict[str, str]:
    """``{name: module}`` of a package whose ``__init__`` resolves names lazily from an ``_EXPORTS`` dict."""
    path = _module_file(package)
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
    module = _longest_module(dotted)
    if module is None:
        return None
    rest = dotted[len(module) + 1:].split(".")[0] if len(dotted) > len(module) else ""
    defined_in = _lazy_exports(module).get(rest)
    return resolve_name(defined_in) if defined_in and defined_in != module else module


def config_modules(configs: Iterable[Any]) -> set[str]:
    """``ichct`` modules named anywhere in the configs (``_target_`` values, expressions, imports)."""
    found: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, Mapping):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            for m in _NAME.finditer(x):
                mod = resolve_name(m.group(0))
                if mod:
                    found.add(mod)

    for c in configs:
        walk(c)
    return found


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


def _imported(name: str, node: ast.Import | ast.ImportFrom) -> tuple[set[str], set[str]]:
    """(ichct modules, top-level third-party modules) of one import statement in module ``name``."""
    path = _module_file(name)
    assert path is not None
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    if isinstance(node, ast.Import):
        own = {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        return own, {a.name.split(".")[0] for a in node.names if a.name.split(".")[0] != PACKAGE}
    if node.level:
        base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
        mod = f"{base}.{node.module}" if node.module else base
    else:
        mod = node.module or ""
    if mod.split(".")[0] != PACKAGE:
        return set(), {mod.split(".")[0]}
    own = {mod} | {resolve_name(f"{mod}.{a.name}") or mod for a in node.names}
    return own, set()


@cache
def _imports(name: str, module_level: bool = True) -> tuple[frozenset[str], frozenset[str]]:
    """(ichct modules, top-level third-party modules) imported by one ichct module."""
    path = _module_file(name)
    assert path is not None
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own: set[str] = set()
    other: set[str] = set()
    for node in _statements(tree.body, module_level):
        o, t = _imported(name, node)  # type: ignore[arg-type]
        own |= o
        other |= t
    resolved = {m for m in (_longest_module(o) for o in own) if m}
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


# --------------------------------------------------------------------------------------------
# Vendoring into scripts/
# --------------------------------------------------------------------------------------------

_FROM = re.compile(r"^(\s*)from ichct(\.|\s)", re.M)
_IMPORT = re.compile(r"^(\s*)import ichct(\.[\w.]+)?(\s+as\s+\w+)?\s*$", re.M)
_RESOURCE = re.compile(r"((?:resources\.files|import_module)\(f?[\"'])ichct([.\"'])")


def _rewrite_import(match: re.Match[str]) -> str:
    indent, sub, alias = match.group(1), match.group(2) or "", match.group(3)
    if alias:
        return f"{indent}import scripts.ichct{sub}{alias}"
    if sub:
        raise ValueError(f"cannot vendor 'import ichct{sub}' without an alias (use 'from ichct... import')")
    return f"{indent}from scripts import ichct"


def rewrite_code(text: str) -> str:
    """Source of an ichct module with its ``ichct`` imports pointing at ``scripts.ichct``.

    Rewrites ``from ichct... import``, ``import ichct`` (-> ``from scripts import ichct``) and the
    package names given to ``importlib.resources.files`` / ``importlib.import_module``.
    """
    text = _FROM.sub(r"\1from scripts.ichct\2", text)
    text = _IMPORT.sub(_rewrite_import, text)
    return _RESOURCE.sub(r"\1scripts.ichct\2", text)


def rewrite_config(obj: Any) -> Any:
    """A config with every ``ichct.`` name (targets, expressions, imports) moved to ``scripts.ichct.``."""
    if isinstance(obj, Mapping):
        return {k: rewrite_config(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rewrite_config(v) for v in obj]
    if isinstance(obj, str):
        return _NAME.sub(lambda m: f"scripts.{m.group(0)}", obj)
    return obj


_SCRIPTS_INIT = '"""Bundle scripts: a copy of the ichct code the configs need (`scripts.ichct`)."""\n'


def _vendored_files(modules: Iterable[str]) -> list[tuple[Path, Path]]:
    """``(source, path under scripts/ichct/)`` of the modules and the JSON data files of their packages."""
    files: list[tuple[Path, Path]] = []
    packages: set[Path] = set()
    for m in sorted(modules):
        src = _module_file(m)
        assert src is not None
        files.append((src, src.relative_to(_ROOT)))
        if src.name == "__init__.py":
            packages.add(src.parent)
    for pkg in sorted(packages):
        files += [(data, data.relative_to(_ROOT)) for data in sorted(pkg.glob("*.json"))]
    return files


def export_size(modules: Iterable[str]) -> tuple[int, int]:
    """``(files, physical lines)`` of the ``scripts/`` that :func:`vendor` writes for ``modules``.

    Examples
    --------
    >>> files, lines = export_size(module_closure(["ichct.transforms.intensity"]))
    >>> files, lines > 100
    (4, True)
    """
    files = _vendored_files(modules)
    lines = sum(rewrite_code(src.read_text(encoding="utf-8")).count("\n") if src.suffix == ".py"
                else src.read_bytes().count(b"\n") for src, _ in files)
    return len(files) + 1, lines + _SCRIPTS_INIT.count("\n")


def vendor(modules: Iterable[str], scripts_dir: str | Path) -> list[str]:
    """Copy the modules (and the JSON data files of their packages) into ``scripts_dir/ichct/``.

    Returns the written paths relative to ``scripts_dir``.
    """
    dest_root = Path(scripts_dir)
    written: list[str] = []
    init = dest_root / "__init__.py"
    if not init.exists():
        dest_root.mkdir(parents=True, exist_ok=True)
        init.write_text(_SCRIPTS_INIT, encoding="utf-8")
        written.append("__init__.py")
    for src, rel in _vendored_files(modules):
        dst = dest_root / "ichct" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".py":
            dst.write_text(rewrite_code(src.read_text(encoding="utf-8")), encoding="utf-8")
        else:
            shutil.copyfile(src, dst)
        written.append(str(Path("ichct") / rel))
    return written
