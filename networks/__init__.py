"""Networks for intracranial hemorrhage detection (imports nothing else of ichct).

* :func:`ich_unet3d` - 3D MONAI UNet/DynUNet segmentation of multi-window CT (2 or 6 classes),
  :func:`sliding_window_predict` for whole-volume inference.
* :class:`SegmentationEnsemble` - several trained segmenters as one network (mean probabilities).
* :class:`ClassifierEnsemble` - several trained slice classifiers as one network (mean probabilities);
  :func:`ensemble_state_dict`, :func:`member_state_dict`, :func:`ensemble_size` - their weights' layout.
* :func:`mirror_ensemble`, :class:`MirrorEnsembleInferer` - test-time mirroring (mean over flips).
* :class:`SliceSequenceClassifier` - 2D slice encoder + bidirectional RNN over the slice axis,
  6 logits per slice (:data:`LABEL_NAMES`), :func:`pad_slice_batch` to batch studies.

Only torch, MONAI and NumPy are imported. Names are resolved lazily, so ``import ichct.networks``
itself is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "SEG_CLASSES": "unet3d",
    "count_parameters": "unet3d",
    "ich_unet3d": "unet3d",
    "sliding_window_predict": "unet3d",
    "SegmentationEnsemble": "ensemble",
    "ClassifierEnsemble": "classifier_ensemble",
    "ensemble_size": "ensemble_state",
    "ensemble_state_dict": "ensemble_state",
    "member_state_dict": "ensemble_state",
    "mirror_ensemble": "mirror",
    "mirror_combinations": "mirror",
    "MirrorEnsembleInferer": "mirror",
    "ENCODERS": "slice_sequence",
    "POOLINGS": "slice_sequence",
    "seg_slice_stats": "slice_sequence",
    "LABEL_NAMES": "slice_sequence",
    "SUBTYPES": "slice_sequence",  # deprecated name of LABEL_NAMES
    "SliceSequenceClassifier": "slice_sequence",
    "lengths_to_mask": "slice_sequence",
    "pad_slice_batch": "slice_sequence",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The exported ``name``, importing the submodule that defines it on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    submodule = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    return globals().setdefault(name, getattr(submodule, name))


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
