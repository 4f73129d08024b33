"""One call per CT: a rule's CT-level score per label, and ``score >= threshold``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision.checks import as_slice_probabilities
from ichct.pipeline.decision.fused import fused_scores
from ichct.pipeline.decision.names import PROBABILITY_MAP_RULES
from ichct.pipeline.decision.peak import peak_probability_scores
from ichct.pipeline.decision.rule import DecisionRule
from ichct.pipeline.decision.slice_rules import slice_scores
from ichct.pipeline.decision.volumes import segmentation_volumes

__all__ = ["ct_scores", "decide", "decide_scores"]


def ct_scores(
    rule: DecisionRule,
    *,
    slice_probs: Any = None,
    segmentation: Any = None,
    voxel_volume_ml: float | None = None,
    subtypes: Sequence[str] = LABEL_NAMES,
    probabilities: Any = None,
    peak_scores: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """CT-level score per subtype under ``rule``.

    Parameters
    ----------
    rule
        The decision rule.
    slice_probs
        ``(N, len(subtypes))`` slice probabilities (slice rules, ``fused``).
    segmentation
        Label or probability map (``seg_volume``), see :func:`segmentation_volumes`.
    voxel_volume_ml
        Voxel volume in mL (``seg_volume``).
    subtypes
        Column names of ``slice_probs``.
    probabilities
        ``(C, X, Y, Z)`` class probabilities of a segmenter (``seg_peak``, ``fused``).
    peak_scores
        Their :func:`peak_probability_scores`, when already computed (then ``probabilities`` may be
        left out): one pass over the map serves ``seg_peak`` and ``fused``.

    Returns
    -------
    dict
        ``{subtype: score}``; for a binary segmentation only ``"any"``.
    """
    if rule.name in PROBABILITY_MAP_RULES:
        if (probabilities is None and peak_scores is None) or (rule.name == "fused" and slice_probs is None):
            needs = "slice_probs= and probabilities=" if rule.name == "fused" else "probabilities="
            raise ValueError(f"the {rule.name} rule needs {needs}")
        peak = dict(peak_scores) if peak_scores is not None else peak_probability_scores(probabilities)
        if rule.name == "seg_peak":
            return peak
        return fused_scores(ct_scores(dataclasses.replace(rule, name="consecutive"), slice_probs=slice_probs,
                                      subtypes=subtypes), peak)
    if rule.name == "seg_volume":
        if segmentation is None or voxel_volume_ml is None:
            raise ValueError("the seg_volume rule needs segmentation= and voxel_volume_ml=")
        return segmentation_volumes(
            segmentation,
            float(voxel_volume_ml),
            rule.min_component_ml,
            num_classes=rule.num_seg_classes,
            connectivity=rule.connectivity,
        )
    if slice_probs is None:
        raise ValueError(f"the {rule.name} rule needs slice_probs=")
    arr, _ = as_slice_probabilities(slice_probs)
    if arr.shape[1] != len(subtypes):
        raise ValueError(f"slice_probs has {arr.shape[1]} columns, expected {len(subtypes)} ({tuple(subtypes)})")
    scores = np.atleast_1d(slice_scores(arr, rule))
    return {s: float(v) for s, v in zip(subtypes, scores)}


def decide(
    rule: DecisionRule,
    *,
    slice_probs: Any = None,
    segmentation: Any = None,
    voxel_volume_ml: float | None = None,
    subtypes: Sequence[str] = LABEL_NAMES,
    probabilities: Any = None,
) -> dict[str, dict[str, Any]]:
    """One call per subtype for one CT.

    Parameters are those of :func:`ct_scores`.

    Returns
    -------
    dict
        ``{subtype: {"score": float, "threshold": float, "positive": bool}}`` with
        ``positive = score >= threshold``.
    """
    return decide_scores(rule, ct_scores(rule, slice_probs=slice_probs, segmentation=segmentation,
                                         voxel_volume_ml=voxel_volume_ml, subtypes=subtypes,
                                         probabilities=probabilities))


def decide_scores(rule: DecisionRule, scores: Mapping[str, float],
                  skip_unthresholded: bool = False) -> dict[str, dict[str, Any]]:
    """The calls of :func:`decide` from CT-level scores :func:`ct_scores` already gave.

    A label the rule has no threshold for raises ``KeyError``, or is left out with
    ``skip_unthresholded`` (scores from another tool, whose labels the rule may not all cover).

    Examples
    --------
    >>> decide_scores(DecisionRule("max", threshold=0.5), {"any": 0.7})
    {'any': {'score': 0.7, 'threshold': 0.5, 'positive': True}}
    >>> decide_scores(DecisionRule("max", threshold={"any": 0.5}), {"any": 0.2, "subdural": 0.9}, skip_unthresholded=True)
    {'any': {'score': 0.2, 'threshold': 0.5, 'positive': False}}
    """
    out: dict[str, dict[str, Any]] = {}
    for s, score in scores.items():
        try:
            t = rule.threshold_for(s)
        except KeyError:
            if skip_unthresholded:
                continue
            raise
        out[s] = {"score": score, "threshold": t, "positive": bool(score >= t)}
    return out
