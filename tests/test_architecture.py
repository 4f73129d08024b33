"""Architecture rules, checked on the syntax tree of every Python file of the project.

Nothing is imported to check a rule: each reads the ``import`` statements (at module level and
inside functions) and the attribute accesses of every file under ``pipeline/``, ``transforms/``,
``networks/``, ``tests/`` and ``benchmarks/`` and of the package's top-level files.

The rules:

- ``ichct.networks`` imports nothing of ``ichct`` but itself (the networks stand alone);
- ``ichct.transforms`` never imports ``ichct.pipeline`` (transforms are below the stages);
- no stage imports the CLI: only the ``pipeline/cli/`` package and the
  ``python -m ichct`` entry point import a CLI module (tests may import ``ichct.pipeline.cli``
  to drive ``main``, and no other CLI module);
- no module uses another module's private name (``from X import _y`` or ``module._y``), in the
  package, the tests and the benchmarks alike; dunder names are not private;
- no file uses a deprecated alias (:data:`DEPRECATED_ALIASES`), and each alias still is the
  object of its new name;
- no file imports a deprecated module path (:data:`DEPRECATED_MODULES`, the thin shims that keep the
  published bundles' ``_target_`` names resolving), and each name a shim re-exports is the object
  of its new module.

Every test lists all its offenders, as ``path:line: what``.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("pipeline", "transforms", "networks")
PACKAGE_FILES = ("__init__.py", "__main__.py", "errors.py")
SCRIPT_DIRS = ("tests", "benchmarks")

#: Private names that may be used outside their module, each a deprecated alias of the public name
#: given. Only names that published model bundles use belong here; everything else gets a public name.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {
    # bundles/ich_ct_classification/configs/train.json, published as 0.1.0 and 0.2.0, names
    # ``ichct.pipeline.train._cls_prepare_batch``; bundles packaged now name cls_prepare_batch.
    ("ichct.pipeline.train", "_cls_prepare_batch"): "cls_prepare_batch",
}

#: Old names kept importable for code written against them: (module, old name) -> new name. No file
#: of this repository uses them (only the published bundle configs use the private one).
DEPRECATED_ALIASES: dict[tuple[str, str], str] = {
    **ALLOWED_PRIVATE,
    # SUBTYPES used to mean the six labels ("any" + five subtypes) here; it now means the five
    # subtypes only (ichct.pipeline.core.labels.SUBTYPES), and the six are LABEL_NAMES everywhere.
    ("ichct.pipeline.decision", "SUBTYPES"): "LABEL_NAMES",
    ("ichct.networks", "SUBTYPES"): "LABEL_NAMES",
    ("ichct.networks.slice_sequence", "SUBTYPES"): "LABEL_NAMES",
}

#: Module paths of the flat pipeline/ before the stage packages (core, models, train, evaluate, predict,
#: bundle), kept as thin re-export shims: old module -> new module. Only the published bundle configs
#: (bundles/*/configs/*.json, 0.1.0 and 0.2.0; test_bundle_targets.py) name them; no file of this
#: repository imports them. (``ichct.pipeline.train`` and ``ichct.pipeline.evaluate``, also named by
#: those configs, are the stage packages themselves: their exports keep ``train.RSNAWeightedBCE``,
#: ``train._cls_prepare_batch`` and ``evaluate.evaluate`` resolving.)
DEPRECATED_MODULES: dict[str, str] = {
    "ichct.pipeline.bundle_components": "ichct.pipeline.bundle.components",
    "ichct.pipeline.bundle_network": "ichct.pipeline.bundle.network",
    "ichct.pipeline.inference": "ichct.pipeline.models.inference",
    "ichct.pipeline.train_data": "ichct.pipeline.models.data",
    # module paths the README of ichct 0.1 documented
    "ichct.pipeline.train_config": "ichct.pipeline.models.config",
    "ichct.pipeline.train_side_by_side": "ichct.pipeline.train.side_by_side",
}

#: The one file besides the pipeline/cli/ package that imports the CLI: ``python -m ichct``.
CLI_ENTRY_POINTS = {"__main__.py"}


@dataclass(frozen=True)
class Source:
    """One parsed Python file: its path relative to the repository and its import name."""

    path: str
    module: str
    is_package: bool
    tree: ast.Module


@dataclass(frozen=True)
class Import:
    """One imported module (``import m``, ``from m import n`` or ``from p import m``) at a line."""

    line: int
    module: str
    names: tuple[str, ...]  # the names of ``from module import ...``; () for ``import module``


def _module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[0] == "tests":  # tests/ is on sys.path (conftest.py): its helpers import as top-level modules
        return parts[-1]
    if parts[0] == "benchmarks":
        return ".".join(parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["ichct", *parts])


def parse(rel: str, text: str) -> Source:
    """A :class:`Source` of ``text`` as if it were the file ``rel`` of the repository."""
    path = Path(rel)
    return Source(path.as_posix(), _module_name(path), path.name == "__init__.py", ast.parse(text, filename=rel))


@cache
def sources() -> tuple[Source, ...]:
    """Every Python file of the project, parsed."""
    paths = [ROOT / name for name in PACKAGE_FILES if (ROOT / name).is_file()]
    for folder in PACKAGE_DIRS + SCRIPT_DIRS:
        paths += sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return tuple(parse(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8")) for p in paths)


@cache
def known_modules() -> frozenset[str]:
    """The import names of all project files (package modules, test helpers, benchmarks)."""
    return frozenset(s.module for s in sources())


def _absolute(src: Source, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = src.module if src.is_package else src.module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports(src: Source) -> Iterator[Import]:
    """Every module ``src`` imports, wherever the import statement is."""
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name, ())
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(src, node)
            names = tuple(alias.name for alias in node.names)
            yield Import(node.lineno, module, names)
            for name in names:  # ``from ichct.pipeline import train_cli`` imports a module too
                if f"{module}.{name}" in known_modules():
                    yield Import(node.lineno, f"{module}.{name}", ())


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_offenders(srcs: Iterable[Source], select: Callable[[Source], bool],
                     forbidden: Callable[[Source, str], bool]) -> list[str]:
    """``path:line: imports M`` for every import of a selected file that is forbidden to it."""
    return [f"{src.path}:{imp.line}: imports {imp.module}"
            for src in srcs if select(src) for imp in imports(src) if forbidden(src, imp.module)]


def networks_offenders(srcs: Iterable[Source]) -> list[str]:
    """Imports of ichct outside ``ichct.networks`` by ``ichct.networks``."""
    return import_offenders(srcs, lambda src: _inside(src.module, "ichct.networks"),
                            lambda src, mod: _inside(mod, "ichct") and not _inside(mod, "ichct.networks"))


def transforms_offenders(srcs: Iterable[Source]) -> list[str]:
    """Imports of ``ichct.pipeline`` by ``ichct.transforms``."""
    return import_offenders(srcs, lambda src: _inside(src.module, "ichct.transforms"),
                            lambda src, mod: _inside(mod, "ichct.pipeline"))


def _is_cli(module: str) -> bool:
    return _inside(module, "ichct.pipeline.cli")


def _may_import_cli(src: Source, module: str) -> bool:
    if _is_cli(src.module) or src.path in CLI_ENTRY_POINTS:
        return True
    return src.path.startswith("tests/") and module == "ichct.pipeline.cli"


def cli_offenders(srcs: Iterable[Source]) -> list[str]:
    """Imports of a CLI module by anything but the CLI (tests: ``ichct.pipeline.cli`` only)."""
    return import_offenders(srcs, lambda src: True, lambda src, mod: _is_cli(mod) and not _may_import_cli(src, mod))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_bindings(src: Source) -> dict[str, str]:
    """Local names bound to project modules: ``import a.b as m``, ``from a import b``, ``import a.b``."""
    bound: dict[str, str] = {}
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.partition(".")[0]] = alias.name if alias.asname else \
                    alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(src, node)
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{module}.{alias.name}"
    return {name: mod for name, mod in bound.items() if mod in known_modules()}


def _dotted(node: ast.expr, bound: dict[str, str]) -> str | None:
    """The module path an expression such as ``ichct.pipeline.train`` or ``train`` names, if any."""
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, bound)
        return f"{base}.{node.attr}" if base else None
    return None


def name_uses(src: Source) -> Iterator[tuple[int, str, str]]:
    """``(line, module, name)`` for every name of another project module that ``src`` imports
    (``from module import name``) or reads as an attribute (``module.name``)."""
    for imp in imports(src):
        if imp.module in known_modules() and imp.module != src.module:
            for name in imp.names:
                yield imp.line, imp.module, name
    bound = _module_bindings(src)
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Attribute):
            module = _dotted(node.value, bound)
            if module in known_modules() and module != src.module:
                yield node.lineno, module, node.attr


def private_offenders(srcs: Iterable[Source]) -> list[str]:
    """Uses of another module's private name that :data:`ALLOWED_PRIVATE` does not allow."""
    return [f"{src.path}:{line}: {module}.{name}" for src in srcs for line, module, name in name_uses(src)
            if _is_private(name) and (module, name) not in ALLOWED_PRIVATE]


def deprecated_offenders(srcs: Iterable[Source]) -> list[str]:
    """Uses of a :data:`DEPRECATED_ALIASES` name and imports of a :data:`DEPRECATED_MODULES` shim."""
    names = [f"{src.path}:{line}: {module}.{name} (use {DEPRECATED_ALIASES[module, name]})"
             for src in srcs for line, module, name in name_uses(src) if (module, name) in DEPRECATED_ALIASES]
    return names + [f"{src.path}:{imp.line}: imports {imp.module} (use {DEPRECATED_MODULES[imp.module]})"
                    for src in srcs for imp in imports(src) if imp.module in DEPRECATED_MODULES]


# --------------------------------------------------------------------------------------------
# The rules on the project
# --------------------------------------------------------------------------------------------


def test_every_layer_is_found() -> None:
    modules = known_modules()
    assert {"ichct", "ichct.errors", "ichct.networks", "ichct.transforms.crop", "ichct.pipeline.train"} <= modules
    assert {f"ichct.pipeline.{stage}" for stage in ("core", "models", "train", "evaluate", "predict", "bundle")} <= modules
    assert {"conftest", "test_architecture", "benchmarks.train"} <= modules


def test_networks_import_nothing_else_of_ichct() -> None:
    bad = networks_offenders(sources())
    assert not bad, "ichct.networks must import nothing of ichct:\n" + "\n".join(bad)


def test_transforms_never_import_the_pipeline() -> None:
    bad = transforms_offenders(sources())
    assert not bad, "ichct.transforms must not import ichct.pipeline:\n" + "\n".join(bad)


def test_no_stage_imports_the_cli() -> None:
    bad = cli_offenders(sources())
    assert not bad, "only the CLI modules import the CLI (tests: ichct.pipeline.cli only):\n" + "\n".join(bad)


def test_no_module_uses_another_modules_private_names() -> None:
    bad = private_offenders(sources())
    assert not bad, "private names used outside their module (give them a public name):\n" + "\n".join(bad)


def test_no_file_uses_a_deprecated_alias() -> None:
    bad = deprecated_offenders(sources())
    assert not bad, "deprecated aliases used:\n" + "\n".join(bad)


def test_deprecated_aliases_are_their_new_names() -> None:
    """Each alias is importable and is the very object of its new name (so old code behaves the same)."""
    wrong = []
    for (module, old), new in DEPRECATED_ALIASES.items():
        mod = importlib.import_module(module)
        if getattr(mod, old) is not getattr(mod, new):
            wrong.append(f"{module}.{old} is not {module}.{new}")
    assert not wrong, wrong


def test_deprecated_modules_re_export_their_new_modules() -> None:
    """Each shim is importable and every public name it has is the very object of its new module."""
    wrong = []
    for old, new in DEPRECATED_MODULES.items():
        shim, target = importlib.import_module(old), importlib.import_module(new)
        names = [n for n in vars(shim) if not n.startswith("_")]
        wrong += [f"{old}.{n} is not {new}.{n}" for n in names if getattr(shim, n) is not getattr(target, n, None)]
        assert names, f"{old} re-exports nothing"
    assert not wrong, wrong


# --------------------------------------------------------------------------------------------
# The checks themselves: each finds what it is for
# --------------------------------------------------------------------------------------------


def test_the_checks_find_violations() -> None:
    bad = [
        parse("networks/bad.py", "def f():\n    from ichct.pipeline.core import labels\n"),
        parse("transforms/bad.py", "from ..pipeline.decision import RULES\n"),
        parse("pipeline/bad.py", "import ichct.pipeline.cli.train\nfrom ichct.pipeline.cli import predict\n"
                                 "from .train.engine import _seg_loss\nfrom ichct.pipeline.train import engine\n"
                                 "engine._keep_logger_setup()\nimport ichct.pipeline.models.inference\n"
                                 "ichct.pipeline.models.inference._fresh(1)\nfrom ichct.pipeline.decision import SUBTYPES\n"
                                 "from ichct.pipeline.train_data import cls_items\n"),
        parse("tests/test_bad.py", "from ichct.pipeline.cli import main\nfrom ichct.pipeline.cli.evaluate import run\n"
                                   "import dicom_factory as fac\nfac._private\nfac.__name__\n"),
    ]
    assert networks_offenders(bad) == ["networks/bad.py:2: imports ichct.pipeline.core",
                                       "networks/bad.py:2: imports ichct.pipeline.core.labels"]
    assert transforms_offenders(bad) == ["transforms/bad.py:1: imports ichct.pipeline.decision"]
    assert cli_offenders(bad) == ["pipeline/bad.py:1: imports ichct.pipeline.cli.train",
                                  "pipeline/bad.py:2: imports ichct.pipeline.cli",
                                  "pipeline/bad.py:2: imports ichct.pipeline.cli.predict",
                                  "tests/test_bad.py:2: imports ichct.pipeline.cli.evaluate"]
    assert sorted(private_offenders(bad)) == ["pipeline/bad.py:3: ichct.pipeline.train.engine._seg_loss",
                                              "pipeline/bad.py:5: ichct.pipeline.train.engine._keep_logger_setup",
                                              "pipeline/bad.py:7: ichct.pipeline.models.inference._fresh",
                                              "tests/test_bad.py:4: dicom_factory._private"]
    assert deprecated_offenders(bad) == [
        "pipeline/bad.py:8: ichct.pipeline.decision.SUBTYPES (use LABEL_NAMES)",
        "pipeline/bad.py:9: imports ichct.pipeline.train_data (use ichct.pipeline.models.data)"]


def test_the_checks_allow_what_is_allowed() -> None:
    fine = [
        parse("pipeline/train/engine.py", "from ._private_helper import x\n_y = 1\n_y\n"),  # its own names
        parse("pipeline/bundle_x.py", "from ichct.pipeline.train import cls_prepare_batch\nimport ichct\n"
                                      "ichct.__version__\n"),
        parse("pipeline/cli/__init__.py", "from ichct.pipeline.cli import train\n"),
        parse("pipeline/cli/x.py", "from ichct.pipeline.cli import main\n"),
        parse("transforms/crop2.py", "from .spatial import ToRAS\n"),
        parse("networks/unet2.py", "from .slice_sequence import LABEL_NAMES\n"),
    ]
    assert not networks_offenders(fine) and not transforms_offenders(fine) and not cli_offenders(fine)
    assert not private_offenders(fine) and not deprecated_offenders(fine)
