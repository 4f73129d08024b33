"""Usage examples in docstrings run as doctests, and every public transform and network has one.

The modules are found by walking the package's source folders (``pipeline/``, ``transforms/``,
``networks/`` and ``errors.py``) and turning file paths into module names
(``pipeline/cli/info.py`` -> ``ichct.pipeline.cli.info``, ``__init__.py`` -> the package), so the
test follows modules when they move. Examples that need DICOM files or other data are written as
plain code blocks (no ``>>>`` prompts) and are not run.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import io
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "ichct"
SOURCE_DIRS = ("pipeline", "transforms", "networks")
SOURCE_FILES = ("errors.py",)
OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# packages whose exported names must each carry an "Examples" section
EXAMPLE_PACKAGES = ("ichct.transforms", "ichct.networks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _source_files() -> list[Path]:
    """The package's ``.py`` files whose path is a module name (``__main__`` left out: importing runs it)."""
    files = [REPO / name for name in SOURCE_FILES if (REPO / name).is_file()]
    for folder in SOURCE_DIRS:
        files += (REPO / folder).rglob("*.py")
    parts = {p: p.relative_to(REPO).with_suffix("").parts for p in files}
    return sorted(p for p in files if p.name != "__main__.py" and all(part.isidentifier() for part in parts[p]))


SOURCES = {_module_name(p): p for p in _source_files()}
MODULES = sorted(SOURCES)
#: Modules whose source holds a ``>>>`` example (the others have nothing to run, and are not collected).
DOCTEST_MODULES = [m for m in MODULES if ">>>" in SOURCES[m].read_text(encoding="utf-8")]


def test_modules_found() -> None:
    """The walk finds the package (a moved or renamed source folder must not empty the test)."""
    assert {"ichct.errors", "ichct.transforms.crop", "ichct.networks.unet3d"} <= set(MODULES)
    assert any(name.startswith("ichct.pipeline.") for name in MODULES)
    assert any(">>>" in path.read_text(encoding="utf-8") for path in SOURCES.values())


@pytest.mark.parametrize("module_name", DOCTEST_MODULES, ids=DOCTEST_MODULES)
def test_doctests(module_name: str) -> None:
    """Every ``>>>`` example in the module's docstrings runs and prints what it shows."""
    module = importlib.import_module(module_name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module_name) if t.examples]
    assert tests, f"{module_name} shows '>>>' but no docstring example was found"
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=out.write)
    assert runner.failures == 0, (
        f"{runner.failures} of {runner.tries} doctest example(s) failed in {module_name}:\n{out.getvalue()}"
    )


def _exported() -> list[tuple[str, str]]:
    """Exported classes and functions (constants carry no docstring of their own: their module's
    ``#:`` comments describe them)."""
    names = []
    for package in EXAMPLE_PACKAGES:
        module = importlib.import_module(package)
        names += [(package, name) for name in module.__all__
                  if inspect.isclass(getattr(module, name)) or inspect.isroutine(getattr(module, name))]
    return names


def _has_examples_section(doc: str) -> bool:
    lines = inspect.cleandoc(doc).splitlines()
    for i, line in enumerate(lines):
        title = line.strip()
        if title in ("Example::", "Examples::"):
            return True
        if title in ("Example", "Examples") and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            return True
    return False


@pytest.mark.parametrize(("package", "name"), _exported(), ids=[f"{p}.{n}" for p, n in _exported()])
def test_exported_names_have_examples(package: str, name: str) -> None:
    """Each exported class and function documents itself with an ``Examples`` section."""
    obj = getattr(importlib.import_module(package), name)
    doc = obj.__doc__ or ""
    assert doc.strip(), f"{package}.{name} has no docstring"
    assert _has_examples_section(doc), f"{package}.{name}'s docstring has no 'Examples' section"
