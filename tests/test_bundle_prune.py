"""The definition-level closure behind ``ichct bundle export`` (``ichct.pipeline.bundle.prune`` and ``vendor``).

Read from the source, no export: the pruned modules of both committed bundles define every global
name their code uses (no name lost with a left-out definition, on any path, run or not), keep
decorators and the imports they use, cut ``__all__`` and the lazy export tables to what is kept,
and leave docstring Examples out; the modules an export writes are the module closure's or fewer.
"""

from __future__ import annotations

import ast
import builtins
import json
import symtable
from pathlib import Path

import pytest

from ichct.pipeline.bundle.code import import_base
from ichct.pipeline.bundle.configs import bundle_configs
from ichct.pipeline.bundle.prune import definition_closure, pruned_source
from ichct.pipeline.bundle.vendor import bundle_code, export_size, vendored_source

REPO = Path(__file__).resolve().parents[1]
NAMES = ("ich_ct_segmentation", "ich_ct_classification")


def _kept(name: str):
    rc = json.loads((REPO / "bundles" / name / "models" / "run_config.json").read_text())
    return bundle_code(bundle_configs(rc).values())


def _module_names(tree: ast.Module) -> set[str]:
    """Every name bound at module level, in any statement (imports, definitions, assignments, blocks)."""
    table = symtable.symtable(ast.unparse(tree), "<pruned>", "exec")
    return {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}


def _global_loads(source: str) -> set[str]:
    """Names the functions and classes of a module read from its global scope."""
    out: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        module_scope = table.get_type() == "module"
        out.update(s.get_name() for s in table.get_symbols() if s.is_referenced() and (module_scope or s.is_global()))
        for child in table.get_children():
            walk(child)

    walk(symtable.symtable(source, "<pruned>", "exec"))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_pruned_modules_define_every_global_name_they_use(name):
    kept = _kept(name)
    undefined = {}
    for module in sorted(kept.modules):
        text = pruned_source(module, kept)
        tree = ast.parse(text)
        missing = _global_loads(text) - _module_names(tree) - set(dir(builtins)) - {"__file__", "__name__"}
        if missing:
            undefined[module] = sorted(missing)
    assert not undefined, undefined


@pytest.mark.parametrize("name", NAMES)
def test_pruned_ichct_imports_name_only_what_the_pruned_modules_keep(name):
    """``from ichct.x import a, b`` with only ``a`` used is cut to ``a``: ``b`` may be pruned from ``ichct.x``
    (an import kept whole once named a definition the export had left out, and the bundle failed to load)."""
    kept = _kept(name)
    sources = {m: pruned_source(m, kept) for m in kept.modules}
    unresolved = []
    for module, text in sorted(sources.items()):
        for node in ast.parse(text).body:
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            base = import_base(module, node)
            if base.split(".")[0] != "ichct":
                continue
            for alias in node.names:
                target = sources.get(base, "")
                found = (f"{base}.{alias.name}" in sources or alias.name in _module_names(ast.parse(target))
                         or f'"{alias.name}":' in target)  # a lazy package's export table
                if not found:
                    unresolved.append(f"{module}: from {base} import {alias.name}")
    assert not unresolved, unresolved


@pytest.mark.parametrize("name", NAMES)
def test_vendored_sources_compile_and_carry_no_doctests(name):
    kept = _kept(name)
    for module in kept.modules:
        text = vendored_source(module, kept)
        imported = [n.module if isinstance(n, ast.ImportFrom) else a.name for n in ast.walk(ast.parse(text))
                    if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names]
        assert not [m for m in imported if m and m.split(".")[0] == "ichct"], module  # all moved to scripts.ichct
        assert ">>> " not in text, module
    files, lines = export_size(kept)
    assert files == len(kept.modules) + 1 and lines < 9250  # classification 0.5.1: 9,112 (decision a package)


def test_closure_keeps_decorators_imports_and_cuts_tables():
    kept = definition_closure(["ichct.transforms.dicom.headers.SliceHeader"])
    text = pruned_source("ichct.transforms.dicom.headers", kept)
    assert "@dataclass(slots=True)\nclass SliceHeader" in text  # the decorator comes with its class
    assert "from dataclasses import dataclass, field, fields" in text  # fields: used by __reduce__'s helper
    assert "def headers_from_dataset" not in text and "def ensure_transfer_syntax" not in text
    package = pruned_source("ichct.transforms", definition_closure(["ichct.transforms.MultiWindowd"]))
    exports = ast.literal_eval(package.split("_EXPORTS: dict[str, str] = ", 1)[1].split("\n}\n")[0] + "\n}")
    assert exports == {"MultiWindowd": "intensity"}  # the lazy table holds only the kept name


def test_local_imports_are_followed_only_into_exported_modules():
    # ichct.pipeline.models.data.cls_collate imports pad_slice_batch inside the function
    with_network = definition_closure(["ichct.pipeline.models.data.cls_collate",
                                       "ichct.networks.SliceSequenceClassifier"])
    assert "pad_slice_batch" in with_network.names["ichct.networks.slice_sequence"]
    alone = definition_closure(["ichct.pipeline.models.data.cls_collate"])
    assert "ichct.networks.slice_sequence" not in alone.modules


def test_unknown_names_are_refused():
    with pytest.raises(KeyError, match="not an ichct name"):
        definition_closure(["numpy.zeros"])
