"""A tiny cohort + manifest + 1-epoch seg and cls runs, built once per test session.

Shared by ``test_inference_*.py`` and ``test_evaluate_*.py`` (a plain module, not a conftest):
each test module wraps :func:`eval_setup` in a session-scoped fixture; the first call builds,
later calls return the same dict.
"""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import pytest

SEG_CFG = {"spacing_mm": [3.0, 3.0, 5.0], "patch": [32, 32, 16], "samples_per_volume": 1, "batch_size": 1,
           "network": {"channels": [8, 16], "strides": [2], "num_res_units": 0}}
CLS_CFG = {"in_plane": [32, 32], "network": {"feature_dim": 16, "rnn_hidden": 8}}
FOLD = 0
_CACHE: dict[str, Any] = {}


def set_env(mp: pytest.MonkeyPatch, base: Path) -> None:
    mp.setenv("ICHCT_SALT", "ichct-test-salt-0123456789abcdef")
    mp.setenv("ICHCT_SALT_FILE", str(base / "salt"))
    mp.setenv("XDG_CONFIG_HOME", str(base))
    mp.setenv("ICHCT_CACHE_DIR", str(base / "cache"))
    mp.setenv("MPLBACKEND", "Agg")


def eval_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """8 synthetic patients (64 x 64 x 16), 2 folds + test, a 1-epoch seg and cls run on fold 0."""
    if _CACHE:
        return _CACHE
    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.synth import SynthConfig, generate_cohort
    from ichct.pipeline.train.engine import train

    base = tmp_path_factory.mktemp("eval_cohort")
    with pytest.MonkeyPatch.context() as mp:
        set_env(mp, base / "env")
        cfg = SynthConfig(n_patients=8, seed=3, matrix=64, slices=16, follow_up_fraction=0.0,
                          bone_fraction=0.0, scout_fraction=0.0, tilt_fraction=0.0)
        generate_cohort(cfg, base / "cohort", workers=1)
        manifest = base / "m.json"
        doc = build_manifest("synth", base / "cohort", manifest, folds=2, test_fraction=0.25, seed=0, cache=False)
        train("seg", manifest, FOLD, base / "seg", epochs=1, config=SEG_CFG, seed=0)
        train("cls", manifest, FOLD, base / "cls", epochs=1, config=CLS_CFG, seed=0)
    _CACHE.update(base=base, manifest=manifest, doc=doc, seg=base / "seg", cls=base / "cls")
    return _CACHE


# --------------------------------------------------------------------------------------------
# Predictions written "by another tool" (tests/test_evaluate_external*.py)
# --------------------------------------------------------------------------------------------


def split_entries(setup: dict[str, Any], split: str = "all") -> list[dict[str, Any]]:
    """The manifest entries of a split (absolute paths), without running the checks again."""
    from ichct.pipeline.manifests import load_manifest

    return load_manifest(setup["manifest"], split, check=False)


def write_label_predictions(entries: list[dict[str, Any]], folder: Path, name=None, values=None) -> list[Path]:
    """Each entry's reference label map, written as another tool's NIfTI prediction.

    ``name(entry)`` gives the file name without suffix (default: the study UID); ``values(array)``
    changes the voxel values (default: unchanged ichct values). Returns the files written.
    """
    import nibabel as nib
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for e in entries:
        img = nib.load(e["label"])
        arr = np.asarray(img.dataobj).astype(np.uint8)
        out = folder / f"{name(e) if name else e['study_uid']}.nii.gz"
        nib.save(nib.Nifti1Image(values(arr) if values else arr, img.affine), out)
        paths.append(out)
    return paths


def evaluate_predictions(run_cli: Any, setup: dict[str, Any], preds: Path, out: Path, *extra: Any) -> Any:
    """``ichct evaluate --predictions PREDS`` on the setup's manifest, 20 bootstrap resamples, quiet."""
    return run_cli("evaluate", "--predictions", preds, "--manifest", setup["manifest"], "--out", out,
                   "--bootstrap", "20", "-q", *extra)


def read_metrics(out: Path) -> dict[str, Any]:
    """``metrics.json`` of an evaluation folder."""
    return json.loads((out / "metrics.json").read_text())
