"""The decision rules' names, grouped by the model output each scores, and what each rule needs."""

from __future__ import annotations

__all__ = ["SLICE_RULES", "SEG_RULES", "PAIR_RULES", "RULES", "UNCALIBRATED_RULES", "PROBABILITY_MAP_RULES",
           "models_needed"]

#: Rules on a classifier's slice probabilities.
SLICE_RULES: tuple[str, ...] = ("consecutive", "max", "topk_mean")
#: Rules on a segmenter's output: its blood volume (label map) and its peak probability (probability map).
SEG_RULES: tuple[str, ...] = ("seg_volume", "seg_peak")
#: Rules on a classifier's slice probabilities and a segmenter's probabilities together.
PAIR_RULES: tuple[str, ...] = ("fused",)
RULES: tuple[str, ...] = (*SLICE_RULES, *SEG_RULES, *PAIR_RULES)
#: Rules whose score is no probability of the study (a volume, a voxel's peak, the mean of a slice
#: window and a voxel's peak): ``ichct evaluate`` gives them no calibration metrics.
UNCALIBRATED_RULES: tuple[str, ...] = (*SEG_RULES, *PAIR_RULES)
#: Rules that score a model's probability maps, which predictions as files (label maps, slice or
#: study probabilities) do not carry.
PROBABILITY_MAP_RULES: tuple[str, ...] = ("seg_peak", "fused")


def models_needed(rule_name: str) -> str:
    """What a rule needs, in words: a classifier, a segmenter, or both.

    Examples
    --------
    >>> models_needed("consecutive"), models_needed("fused")
    ('a classification model', 'both a classification and a segmentation model')
    """
    if rule_name in PAIR_RULES:
        return "both a classification and a segmentation model"
    return "a segmentation model" if rule_name in SEG_RULES else "a classification model"
