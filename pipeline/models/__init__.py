"""The one model recipe shared by training, inference and the bundles.

Modules:

* ``config`` - training configuration: defaults per kind, overrides, saved run configs;
* ``network_factory`` - the network of a run from its resolved config;
* ``data`` - dataset items and MONAI transforms (segmentation and slice classification);
* ``losses`` - the classifier's loss and batch preparation (training and the bundles' train.json);
* ``inference`` - load a training run, predict one study (the one inference code path);
* ``shipped_models`` - the model bundles shipped inside the package (default models).
"""

from __future__ import annotations

from typing import Any

from ichct.pipeline.core.exports import load_export

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "KINDS": "config",
    "DEFAULTS": "config",
    "resolve_config": "config",
    "resolve_saved_config": "config",
    "saved_run_config": "config",
    "config_windows": "config",
    "input_channels": "config",
    "read_config_file": "config",
    "validate_config": "config",
    "build_network": "network_factory",
    "network_kwargs": "network_factory",
    "seg_items": "data",
    "seg_transforms": "data",
    "cls_items": "data",
    "cls_transforms": "data",
    "cls_collate": "data",
    "pos_weight_auto": "data",
    "make_loaders": "data",
    "RSNAWeightedBCE": "losses",
    "cls_prepare_batch": "losses",
    "LoadedModel": "inference",
    "StudyPrediction": "inference",
    "load_run": "inference",
    "read_run_config": "inference",
    "predict_study": "inference",
    "default_rules": "inference",
    "load_study_image": "inference",
    "cls_eval_transforms": "inference",
    "seg_eval_transforms": "inference",
    "SHIPPED_BUNDLES": "shipped_models",
    "shipped_bundle_dirs": "shipped_models",
    "load_shipped_models": "shipped_models",
    "is_shipped_model": "shipped_models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name)
