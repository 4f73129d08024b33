"""What ``ichct bundle export`` copies into ``scripts/``: the modules the configs import, and nothing else.

Read from the source (no export, no data): the committed bundles' configs name only modules whose
module-level imports stay clear of the synthetic-data generator, manifest building, the CLI and
packaging; names that a package exports lazily count as the module that defines them; and the
bundle's own runtime modules import nothing inside a function that the export leaves out, but for
the paths listed here (which a bundle packaged now never takes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bundle_export import NOT_EXPORTED

from ichct.pipeline.bundle.code import config_modules, lazy_imports_outside, module_closure, resolve_name
from ichct.pipeline.bundle.vendor import bundle_code, export_size
from ichct.pipeline.bundle.configs import bundle_configs

REPO = Path(__file__).resolve().parents[1]
NAMES = ("ich_ct_segmentation", "ich_ct_classification")
#: The modules of ichct that exist for the bundles' configs (or that the bundles' code lives in).
BUNDLE_RUNTIME = ("ichct.pipeline.bundle.", "ichct.pipeline.models.data", "ichct.transforms.")
#: Function-local imports of those modules that an export leaves out, and why a bundle never runs them.
KNOWN_LAZY = {
    # ValidationScores completes the whole ichct_config of configs published before 0.3.0
    ("ichct.pipeline.bundle.components", "ichct.pipeline.models.config"),
    # building transform lists from a run config (ichct's own training and inference) and the
    # classifier's collate (a segmentation bundle never collates slice stacks)
    ("ichct.pipeline.models.data", "ichct.pipeline.models.config"),
    ("ichct.pipeline.models.data", "ichct.networks.slice_sequence"),
    # make_loaders with cache "disk" (ichct train --cache-dir); a bundle's configs never call it
    ("ichct.pipeline.models.data", "ichct.pipeline.preprocess.plans"),
}


def _run_config(name: str) -> dict:
    return json.loads((REPO / "bundles" / name / "models" / "run_config.json").read_text())


def _closure(name: str) -> set[str]:
    return module_closure(config_modules(bundle_configs(_run_config(name)).values()))


@pytest.mark.parametrize("name", NAMES)
def test_the_export_holds_what_the_configs_import(name):
    modules = _closure(name)
    assert not [m for m in modules if m.startswith(NOT_EXPORTED)]
    expected = {"ichct.transforms.dicom.reader", "ichct.transforms.loading", "ichct.transforms.intensity",
                "ichct.pipeline.decision", "ichct.pipeline.bundle.components", "ichct.pipeline.bundle.evaluation",
                "ichct.pipeline.evaluate.metrics_ct", "ichct.pipeline.evaluate.bootstrap",
                "ichct.pipeline.evaluate.report", "ichct.pipeline.train.record"}
    assert expected <= modules, expected - modules
    network = "ichct.networks.unet3d" if name == "ich_ct_segmentation" else "ichct.networks.slice_sequence"
    other = "ichct.networks.slice_sequence" if name == "ich_ct_segmentation" else "ichct.networks.unet3d"
    assert network in modules and other not in modules
    kept = bundle_code(bundle_configs(_run_config(name)).values())
    assert kept.modules <= modules, kept.modules - modules  # the export prunes within the module closure
    files, lines = export_size(kept)
    assert files == len(kept.modules) + 1 and lines > 0  # + scripts/__init__.py (the docs' count: test_bundle_export.py)


@pytest.mark.parametrize("name", NAMES)
def test_bundle_runtime_modules_import_nothing_left_out_but_known_paths(name):
    modules = _closure(name)
    lazy = {(m, target) for m, targets in lazy_imports_outside(modules).items() for target in targets
            if m.startswith(BUNDLE_RUNTIME) or m in {r.rstrip(".") for r in BUNDLE_RUNTIME}}
    assert lazy <= KNOWN_LAZY, lazy - KNOWN_LAZY


def test_names_resolve_to_their_defining_module():
    assert resolve_name("ichct.transforms.CropHeadd") == "ichct.transforms.crop"
    assert resolve_name("ichct.pipeline.train.RSNAWeightedBCE") == resolve_name("ichct.pipeline.train.engine")
    assert resolve_name("ichct.pipeline.bundle.components.study_items") == "ichct.pipeline.bundle.components"
    assert resolve_name("ichct.networks") == "ichct.networks" and resolve_name("ichct.nothing.here") == "ichct"
    assert config_modules([{"a": "$import ichct.transforms", "b": {"_target_": "ichct.transforms.LoadCTd"}}]) == \
        {"ichct.transforms", "ichct.transforms.loading"}
