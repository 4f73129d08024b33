"""The ichct code a bundle's configs need, its third-party packages, and vendoring it into ``scripts/``.

* :func:`config_modules` - the ``ichct`` modules that configs name (``_target_`` and ``$``
  expressions).
* :func:`module_closure` - those modules and everything of ichct they import (read from the
  source with :mod:`ast`, function-local imports included).
* :func:`third_party` - the distributions (``pydicom``, ``SimpleITK``, ...) that code imports.
* :func:`vendor` - copy the closure into ``scripts/ichct/`` of an exported bundle with its imports
  rewritten (``ichct.`` -> ``scripts.ichct.``) so that it runs without ``ichct`` installed.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGE", "config_modules", "module_closure", "third_party", "vendor", "rewrite_code", "rewrite_config",
           "installed_versions"]

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
                mod = _longest_module(m.group(0))
                if mod:
                    found.add(mod)

    for c in configs:
        walk(c)
    return found


@cache
def _imports(name: str) -> tuple[frozenset[str], frozenset[str]]:
    """(ichct modules, top-level third-party modules) imported by one ichct module."""
    path = _module_file(name)
    assert path is not None
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    own: set[str] = set()
    other: set[str] = set()
    lazy = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                (own if a.name.split(".")[0] == PACKAGE else other).add(a.name if a.name.startswith(PACKAGE)
                                                                        else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != PACKAGE:
                other.add(mod.split(".")[0])
                continue
            own.add(mod)
            for a in node.names:
                if _module_file(f"{mod}.{a.name}") is not None:
                    own.add(f"{mod}.{a.name}")
        elif isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and path.name == "__init__.py":
            lazy = True  # names resolved lazily from the package's submodules
    if lazy:
        own |= {f"{name}.{p.stem}" for p in path.parent.glob("*.py") if p.stem != "__init__"}
    resolved = {m for m in (_longest_module(o) for o in own) if m}
    return frozenset(resolved), frozenset(o for o in other if o and o != "__future__")


def module_closure(modules: Iterable[str]) -> set[str]:
    """The modules and every ``ichct`` module (and parent package) they import, transitively."""
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
        tops |= set(_imports(m)[1])
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


def vendor(modules: Iterable[str], scripts_dir: str | Path) -> list[str]:
    """Copy the modules (and the JSON data files of their packages) into ``scripts_dir/ichct/``.

    Returns the written paths relative to ``scripts_dir``.
    """
    dest_root = Path(scripts_dir)
    written: list[str] = []
    init = dest_root / "__init__.py"
    if not init.exists():
        dest_root.mkdir(parents=True, exist_ok=True)
        init.write_text('"""Bundle scripts: a copy of the ichct code the configs need (`scripts.ichct`)."""\n',
                        encoding="utf-8")
        written.append("__init__.py")
    packages: set[Path] = set()
    for m in sorted(modules):
        src = _module_file(m)
        assert src is not None
        rel = src.relative_to(_ROOT)
        dst = dest_root / "ichct" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(rewrite_code(src.read_text(encoding="utf-8")), encoding="utf-8")
        written.append(str(Path("ichct") / rel))
        if src.name == "__init__.py":
            packages.add(src.parent)
    for pkg in sorted(packages):
        for data in sorted(pkg.glob("*.json")):
            rel = data.relative_to(_ROOT)
            shutil.copyfile(data, dest_root / "ichct" / rel)
            written.append(str(Path("ichct") / rel))
    return written
