"""Per-label findings of one prediction for ``report.json``: CT-level call under the chosen rule,
the slice ranges that drove it, segmented volume and the ABC/2 estimate.

Slice ranges (``[first, last]``, 0-based, inclusive, along the image's last axis = the reader's
slice order) that "drove" a call:

* ``consecutive``: positive -> every run of ``>= k`` adjacent slices with ``p >= threshold``;
  negative -> the window of ``k`` slices that gave the score (its minimum is the score);
* ``max``: positive -> every run of slices with ``p >= threshold``; negative -> the maximum slice;
* ``topk_mean``: the ``k`` slices averaged (grouped into runs);
* ``seg_volume``, ``seg_peak``, ``fused``: the slices holding segmented voxels of the label (original
  grid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ichct.pipeline.predict.abc2 import abc2_estimate
from ichct.pipeline.decision import SLICE_RULES, DecisionRule, affine_voxel_volume_ml
from ichct.pipeline.core.labels import LABEL_NAMES

__all__ = ["runs", "slice_rule_ranges", "seg_ranges", "label_mask", "build_findings"]


def runs(indices: np.ndarray | list[int]) -> list[list[int]]:
    """Sorted indices -> ``[[first, last], ...]`` runs of consecutive values."""
    idx = sorted(int(i) for i in indices)
    out: list[list[int]] = []
    for i in idx:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def slice_rule_ranges(p: np.ndarray, rule: DecisionRule, threshold: float, positive: bool) -> tuple[list[list[int]], str]:
    """Slice ranges behind a slice-rule decision on one label's probabilities ``p`` (N,), and how
    they were chosen (a sentence for the report)."""
    p = np.asarray(p, dtype=np.float64)
    k = int(rule.k)
    passing = runs(np.flatnonzero(p >= threshold))
    if rule.name == "consecutive":
        if positive:
            return [r for r in passing if r[1] - r[0] + 1 >= k], f"runs of >= {k} adjacent slices with p >= {threshold:.4g}"
        if p.size < k:
            return [], f"fewer than {k} slices: no window of {k} adjacent slices"
        mins = np.lib.stride_tricks.sliding_window_view(p, k).min(axis=-1)
        start = int(np.argmax(mins))
        return [[start, start + k - 1]], f"the {k} adjacent slices whose minimum p gave the score"
    if rule.name == "max":
        if positive:
            return passing, f"slices with p >= {threshold:.4g}"
        top = int(np.argmax(p))
        return [[top, top]], "the slice of highest p"
    if rule.name == "topk_mean":
        kk = min(k, p.size)
        top = np.argsort(-p, kind="stable")[:kk]
        return runs(top), f"the {kk} slices of highest p (their mean is the score)"
    raise ValueError(f"{rule.name} is not a slice rule")


def seg_ranges(mask: np.ndarray) -> list[list[int]]:
    """Runs of slices (last axis) that hold at least one voxel of ``mask``."""
    return runs(np.flatnonzero(np.asarray(mask).any(axis=(0, 1))))


def label_mask(labels: np.ndarray, label: str, num_classes: int) -> np.ndarray | None:
    """Boolean mask of one label (``"any"``: all blood) in a label map, ``None`` when a binary map
    cannot speak about a subtype."""
    if label == "any":
        return labels > 0
    if num_classes != len(LABEL_NAMES):
        return None
    return labels == LABEL_NAMES.index(label)


def build_findings(pred: Any, rule_name: str, rule: DecisionRule) -> dict[str, dict[str, Any]]:
    """``findings`` of ``report.json`` for one :class:`~ichct.pipeline.models.inference.StudyPrediction`.

    Parameters
    ----------
    pred
        The prediction (``decisions[rule_name]`` computed).
    rule_name, rule
        The chosen decision rule.
    """
    decisions: Mapping[str, Mapping[str, Any]] = pred.decisions.get(rule_name, {})
    labels = [s for s in LABEL_NAMES if s in decisions]
    if pred.seg_original is not None:
        k = int(pred.num_seg_classes)
        labels += [s for s in LABEL_NAMES if s not in labels and (s == "any" or k == len(LABEL_NAMES))]
    from ichct.transforms import voxel_spacing

    spacing = tuple(float(v) for v in voxel_spacing(pred.original_affine))
    voxel_ml = affine_voxel_volume_ml(pred.original_affine)
    out: dict[str, dict[str, Any]] = {}
    for label in labels:
        d = decisions.get(label)
        slice_rule = rule.name in SLICE_RULES
        probability = rule.name != "seg_volume"  # slice rules, seg_peak and fused score probabilities
        f: dict[str, Any] = {
            "probability": float(d["score"]) if d is not None and probability else None,
            "score": float(d["score"]) if d is not None else None,
            "score_unit": ("probability" if probability else "mL") if d is not None else None,
            "threshold": float(d["threshold"]) if d is not None else None,
            "call": bool(d["positive"]) if d is not None else None,
            "slice_ranges": [], "slice_ranges_source": None,
            "volume_ml": None, "volume_ml_model_grid": None, "abc2": None,
        }
        mask = label_mask(pred.seg_original, label, int(pred.num_seg_classes)) if pred.seg_original is not None else None
        if d is not None and slice_rule:
            j = LABEL_NAMES.index(label)
            f["slice_ranges"], f["slice_ranges_source"] = slice_rule_ranges(pred.slice_probs[:, j], rule, f["threshold"],
                                                                             f["call"])
        elif d is not None and mask is not None:
            f["slice_ranges"], f["slice_ranges_source"] = seg_ranges(mask), "slices with segmented voxels"
        if mask is not None:
            f["volume_ml"] = float(pred.volumes_ml_original.get(label, float(np.count_nonzero(mask)) * voxel_ml))
            f["volume_ml_model_grid"] = pred.volumes_ml.get(label)
            est = abc2_estimate(mask, spacing, voxel_volume_ml=voxel_ml)
            if est is not None:
                f["abc2"] = {**est.to_dict(), "slice_thickness_mm": spacing[2]}
        out[label] = f
    return out
