"""The model bundles that ship inside the ``ichct`` package: the default models of predict and evaluate.

The wheel (and the source tree) carries two MONAI bundles under ``ichct/bundles/``:
``ich_ct_segmentation`` (3D U-Net, any blood) and ``ich_ct_classification`` (slice-sequence
classifier, any blood and five subtypes). Their weights are DEMONSTRATION weights, trained on
synthetic cohorts only (the segmenter for an hour of CPU time on ``ichct synth --cohort
synth_large``, the classifier for 5 minutes on ``ichct synth --default-cohort``) and never
validated on real scans. ``ichct predict`` and ``ichct evaluate`` use them when no model is given
(``--run``/``--bundle``), say so in a warning and record ``models_source: "shipped"`` in their
output; for real work train a model (``ichct train``) or give a bundle.

:func:`shipped_bundle_dirs` finds the bundle folders through :func:`importlib.resources.files`,
so they are found in a source checkout, an editable install and an installed wheel alike;
:func:`load_shipped_models` loads both (:func:`ichct.pipeline.bundle.package.load_bundle`).

Examples
--------
>>> from ichct.pipeline.models.shipped_models import shipped_bundle_dirs
>>> sorted(shipped_bundle_dirs())
['cls', 'seg']
>>> shipped_bundle_dirs()["seg"].name
'ich_ct_segmentation'
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from ichct.errors import IchctError

logger = logging.getLogger("ichct.shipped_models")

__all__ = ["SHIPPED_BUNDLES", "MODELS_SOURCES", "ShippedModelsMissingError", "shipped_bundle_dirs",
           "shipped_models_warning", "load_shipped_models", "is_shipped_model"]

#: Folder names (under ``ichct/bundles/``) of the shipped bundles, by model kind.
SHIPPED_BUNDLES: dict[str, str] = {"seg": "ich_ct_segmentation", "cls": "ich_ct_classification"}
#: Values of ``models_source`` in ``report.json`` / ``metrics.json``: models the user gave, or the shipped ones.
MODELS_SOURCES = ("user", "shipped")
#: Files a shipped bundle needs to be loaded.
_NEEDED = ("configs/metadata.json", "models/model.pt", "models/run_config.json", "models/thresholds.json",
           "models/train_patients.json")


class ShippedModelsMissingError(IchctError):
    """The shipped model bundles are not part of this installation (or are incomplete)."""


def _package_root() -> Path:
    root = resources.files("ichct")
    if not isinstance(root, Path):  # e.g. imported from a zip file: load_bundle needs real files
        raise ShippedModelsMissingError(
            f"the ichct package is not installed as plain files ({root}); the shipped model bundles cannot be "
            "loaded from it: install the wheel normally, or give a model with --run or --bundle")
    return root


def shipped_bundle_dirs() -> dict[str, Path]:
    """``{"seg": <ich_ct_segmentation folder>, "cls": <ich_ct_classification folder>}`` of the installed package.

    Raises
    ------
    ShippedModelsMissingError
        A bundle folder or one of the files needed to load it is missing (an incomplete
        installation, or a wheel built without the package data).
    """
    root = _package_root() / "bundles"
    out: dict[str, Path] = {}
    for kind, name in SHIPPED_BUNDLES.items():
        folder = root / name
        missing = [f for f in _NEEDED if not (folder / f).is_file()]
        if missing:
            raise ShippedModelsMissingError(
                f"{folder}: the shipped {kind} model bundle is missing or incomplete (no {', '.join(missing)}); "
                "reinstall ichct, or give a model with --run or --bundle")
        out[kind] = folder
    return out


def _version(folder: Path) -> str | None:
    try:
        return json.loads((folder / "configs" / "metadata.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None


def shipped_models_warning(kinds: tuple[str, ...] = ("seg", "cls")) -> str:
    """The warning that goes with results of the shipped bundles (console, ``report.json``, ``report.md``)."""
    dirs = shipped_bundle_dirs()
    names = " and ".join(f"{SHIPPED_BUNDLES[k]} {_version(dirs[k]) or ''}".strip() for k in kinds)
    return (f"using the shipped model bundles {names}: demonstration weights trained on synthetic data only, "
            "not validated on real scans; their findings must not be relied on (give your own model with "
            "--run or --bundle)")


def load_shipped_models(device: str = "cpu", warn: bool = True) -> list[Any]:
    """Both shipped bundles, loaded (:func:`ichct.pipeline.bundle.package.load_bundle`): ``[seg, cls]``.

    Logs :func:`shipped_models_warning` (a ``WARNING`` of the ``ichct`` logger) unless ``warn`` is false.
    """
    from ichct.pipeline.bundle.package import load_bundle

    dirs = shipped_bundle_dirs()
    models = [load_bundle(dirs[k], device=device) for k in ("seg", "cls")]
    if warn:
        logger.warning("%s", shipped_models_warning())
    return models


def is_shipped_model(model: Any) -> bool:
    """Whether a loaded model is one of the shipped bundles (by its ``bundle_dir``)."""
    bundle_dir = getattr(model, "bundle_dir", None)
    if bundle_dir is None:
        return False
    try:
        dirs = shipped_bundle_dirs()
    except ShippedModelsMissingError:
        return False
    return Path(bundle_dir).resolve() == dirs.get(model.kind, Path("/nonexistent")).resolve()
