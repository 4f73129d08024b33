"""The post-processing stage: choose a segmenter's confidence filter and minimum component volume, or a
classifier's thresholds, on held-out studies (``ichct postprocess``).

Modules:

* ``run`` - :func:`determine_postprocessing`: predict a split once, score every candidate value,
  store the choice beside the model's config;
* ``confidence`` - the per-value summary of the sweep, the rule that chooses a value and the
  optional false-blood budget that raises it;
* ``min_volume`` - the rule that chooses the minimum component volume;
* ``thresholds`` - a classifier's slice-rule thresholds chosen on held-out studies.
"""

from __future__ import annotations

from typing import Any

from ichct.pipeline.core.exports import load_export

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "determine_postprocessing": "run",
    "POSTPROCESSING_FILE": "run",
    "DEFAULT_CONFIDENCES": "confidence",
    "check_tolerances": "confidence",
    "choose_confidence": "confidence",
    "sweep_summary": "confidence",
    "check_false_blood_budget": "confidence",
    "within_false_blood_budget": "confidence",
    "DEFAULT_MIN_COMPONENTS_ML": "min_volume",
    "DEFAULT_MAX_FP_PER_SCAN": "min_volume",
    "check_min_components": "min_volume",
    "choose_min_component_ml": "min_volume",
    "choose_slice_thresholds": "thresholds",
    "ct_label_vector": "thresholds",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name)
