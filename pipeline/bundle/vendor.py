"""Writing a bundle's code into ``scripts/`` of an export: what the configs reach, runnable without ichct.

* :func:`bundle_code` - the definitions the configs reach
  (:func:`ichct.pipeline.bundle.prune.definition_closure` of their ``ichct`` names).
* :func:`vendor` - write them into ``scripts/ichct/``: each module pruned to its kept definitions,
  its ``ichct`` imports rewritten (``ichct.`` -> ``scripts.ichct.``) and its docstrings' Examples
  sections left out (they import ``ichct`` and are run as ichct's own doctests, not the bundle's).
* :func:`rewrite_config` - the configs' names moved to ``scripts.ichct.`` the same way.
* :func:`export_size` - the files and lines :func:`vendor` writes, for the bundle docs.
"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ichct.pipeline.bundle.code import ICHCT_NAME, PACKAGE, config_names, module_file
from ichct.pipeline.bundle.prune import KeptCode, definition_closure, pruned_source

__all__ = ["bundle_code", "vendor", "vendored_source", "export_size", "rewrite_code", "rewrite_config"]

_ROOT = module_file(PACKAGE).parent  # type: ignore[union-attr]
_FROM = re.compile(r"^(\s*)from ichct(\.|\s)", re.M)
_IMPORT = re.compile(r"^([ \t]*)import ichct(\.[\w.]+)?([ \t]+as[ \t]+\w+)?[ \t]*$", re.M)
_RESOURCE = re.compile(r"((?:resources\.files|import_module)\(f?[\"'])ichct([.\"'])")
_SECTION = re.compile(r"^\s*(\w[\w ]*)\n\s*-{3,}\s*$", re.M)  # a NumPy docstring section header
_SCRIPTS_INIT = '"""Bundle scripts: a copy of the ichct code the configs need (`scripts.ichct`)."""\n'


def bundle_code(configs: Iterable[Any]) -> KeptCode:
    """The ``ichct`` definitions a bundle's configs reach, transitively.

    Examples
    --------
    >>> kept = bundle_code([{"_target_": "ichct.transforms.MultiWindowd", "keys": "image"}])
    >>> sorted(m for m in kept.modules if not m.endswith(("ichct", "transforms")))
    ['ichct.transforms.intensity']
    """
    return definition_closure(sorted(config_names(configs)))


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

    Examples
    --------
    >>> rewrite_code("from ichct.transforms import LoadCTd\\nimport ichct\\n")
    'from scripts.ichct.transforms import LoadCTd\\nfrom scripts import ichct\\n'
    """
    text = _FROM.sub(r"\1from scripts.ichct\2", text)
    text = _IMPORT.sub(_rewrite_import, text)
    return _RESOURCE.sub(r"\1scripts.ichct\2", text)


def rewrite_config(obj: Any) -> Any:
    """A config with every ``ichct.`` name (targets, expressions, imports) moved to ``scripts.ichct.``.

    Examples
    --------
    >>> rewrite_config({"_target_": "ichct.transforms.LoadCTd", "keys": ["image"]})
    {'_target_': 'scripts.ichct.transforms.LoadCTd', 'keys': ['image']}
    """
    if isinstance(obj, Mapping):
        return {k: rewrite_config(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rewrite_config(v) for v in obj]
    if isinstance(obj, str):
        return ICHCT_NAME.sub(lambda m: f"scripts.{m.group(0)}", obj)
    return obj


def _without_examples(text: str) -> str:
    """``text`` with the ``Examples`` section of every docstring left out."""
    cuts: list[tuple[int, int]] = []
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if not (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            continue
        doc = body[0].value
        lines = text.splitlines(keepends=True)[doc.lineno - 1:doc.end_lineno]
        chunk = "".join(lines)
        heads = [(m.start(), m.group(1).strip()) for m in _SECTION.finditer(chunk)]
        if lines[-1].strip() not in ('"""', "'''"):
            continue  # the closing quotes share a line with text: left as it is
        for k, (start, name) in enumerate(heads):
            if name in ("Examples", "Example"):
                end = heads[k + 1][0] if k + 1 < len(heads) else len(chunk) - len(lines[-1])
                first = doc.lineno + chunk[:start].count("\n")  # line number of the header
                stop = first + chunk[start:end].count("\n")  # first line kept after the section
                if not lines[first - doc.lineno - 1].strip():
                    first -= 1  # the blank line above the header goes too
                cuts.append((first, stop))
    lines = text.splitlines(keepends=True)
    for first, stop in sorted(cuts, reverse=True):
        del lines[first - 1:stop - 1]
    return "".join(lines)


def vendored_source(module: str, kept: KeptCode) -> str:
    """What :func:`vendor` writes for one module: pruned, Examples left out, imports rewritten.

    Examples
    --------
    >>> kept = bundle_code([{"_target_": "ichct.transforms.MultiWindowd"}])
    >>> text = vendored_source("ichct.transforms.intensity", kept)
    >>> "class MultiWindowd" in text, ">>> " in text
    (True, False)
    """
    return rewrite_code(_without_examples(pruned_source(module, kept)))


def _files(kept: KeptCode) -> list[tuple[str | Path, Path]]:
    """``(module name or data file, path under scripts/ichct/)`` of the kept modules and their packages' JSON."""
    files: list[tuple[str | Path, Path]] = []
    for m in sorted(kept.modules):
        src = module_file(m)
        assert src is not None
        files.append((m, src.relative_to(_ROOT)))
        if src.name == "__init__.py":
            files += [(data, data.relative_to(_ROOT)) for data in sorted(src.parent.glob("*.json"))]
    return files


def export_size(kept: KeptCode) -> tuple[int, int]:
    """``(files, physical lines)`` of the ``scripts/`` that :func:`vendor` writes.

    Examples
    --------
    >>> files, lines = export_size(bundle_code(["ichct.transforms.MultiWindowd"]))
    >>> files, 100 < lines < 400
    (4, True)
    """
    lines = sum(vendored_source(src, kept).count("\n") if isinstance(src, str) else src.read_bytes().count(b"\n")
                for src, _ in _files(kept))
    return len(_files(kept)) + 1, lines + _SCRIPTS_INIT.count("\n")


def vendor(kept: KeptCode, scripts_dir: str | Path) -> list[str]:
    """Write the kept code (and the JSON data files of its packages) into ``scripts_dir/ichct/``.

    Returns the written paths relative to ``scripts_dir``.
    """
    dest_root = Path(scripts_dir)
    written: list[str] = []
    init = dest_root / "__init__.py"
    if not init.exists():
        dest_root.mkdir(parents=True, exist_ok=True)
        init.write_text(_SCRIPTS_INIT, encoding="utf-8")
        written.append("__init__.py")
    for src, rel in _files(kept):
        dst = dest_root / "ichct" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, str):
            dst.write_text(vendored_source(src, kept), encoding="utf-8")
        else:
            shutil.copyfile(src, dst)
        written.append(str(Path("ichct") / rel))
    return written
