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


def _docstring_lines(text: str) -> list[tuple[int, int]]:
    """``(first, last)`` 0-based line indexes of every docstring whose closing quotes stand alone."""
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            first, last = body[0].lineno - 1, (body[0].end_lineno or body[0].lineno) - 1
            if last > first and lines[last].strip() in ('"""', "'''"):
                out.append((first, last))
    return out


def _example_lines(lines: list[str], first: int, last: int) -> set[int]:
    """Lines of one docstring that are its Examples section or a doctest (``>>>`` and its output)."""
    def is_header(i: int) -> bool:
        return i + 1 < last and bool(lines[i].strip()) and set(lines[i + 1].strip()) == {"-"}

    cut: set[int] = set()
    i = first + 1
    while i < last:
        if is_header(i) and lines[i].strip() in ("Examples", "Example"):
            j = i + 2
            while j < last and not is_header(j):
                j += 1
            cut.update(range(i, j))
            i = j
        elif lines[i].lstrip().startswith(">>>"):
            j = i
            while j < last and lines[j].strip():
                j += 1
            cut.update(range(i, j))
            i = j
        else:
            i += 1
    return cut


def _without_examples(text: str) -> str:
    """``text`` without the Examples sections and doctests of its docstrings (and the blank lines they leave)."""
    lines = text.splitlines()
    cut: set[int] = set()
    for first, last in _docstring_lines(text):
        gone = _example_lines(lines, first, last)
        kept = [i for i in range(first + 1, last) if i not in gone]
        for a, b in zip(kept, kept[1:] + [last]):
            if not lines[a].strip() and (b == last or not lines[b].strip()):
                gone.add(a)  # a blank line left before the closing quotes or before another blank
        if len(kept) - len(gone & set(kept)) == 0 and lines[first].strip() not in ('"""', "'''"):
            lines[first] += lines[last].strip()  # only the summary line is left: close it there
            gone.add(last)
        cut |= gone
    return "".join(line + "\n" for i, line in enumerate(lines) if i not in cut)


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
