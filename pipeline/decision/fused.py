"""Rule on both models at once: the ``fused`` score and its threshold from the two models' rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision.rule import DecisionRule

__all__ = ["fused_scores", "fused_threshold"]


def fused_scores(consecutive: Mapping[str, float], peak: Mapping[str, float]) -> dict[str, float]:
    """The ``fused`` rule's scores: the mean of a classifier's ``consecutive`` and a segmenter's
    ``seg_peak`` score, for each label both scored.

    Examples
    --------
    >>> fused_scores({"any": 0.4, "subdural": 0.3}, {"any": 0.9})
    {'any': 0.65}
    """
    return {label: 0.5 * (float(consecutive[label]) + float(peak[label])) for label in consecutive if label in peak}


def fused_threshold(consecutive: DecisionRule, peak: DecisionRule, labels: Sequence[str] = LABEL_NAMES) -> DecisionRule:
    """The ``fused`` rule whose threshold of each label is the mean of the two rules' thresholds
    (a study on both models' thresholds lies on the fused one), with the ``consecutive`` rule's ``k``.

    Examples
    --------
    >>> cons = DecisionRule("consecutive", threshold={"any": 0.7, "subdural": 0.5}, k=3)
    >>> rule = fused_threshold(cons, DecisionRule("seg_peak", threshold=0.9), labels=("any", "subdural"))
    >>> rule.name, rule.k, {s: round(t, 3) for s, t in rule.threshold.items()}
    ('fused', 3, {'any': 0.8, 'subdural': 0.7})
    """
    if consecutive.name != "consecutive" or peak.name != "seg_peak":
        raise ValueError(f"fused_threshold needs a consecutive and a seg_peak rule, got {consecutive.name} and "
                         f"{peak.name}")
    threshold = {s: 0.5 * (consecutive.threshold_for(s) + peak.threshold_for(s)) for s in labels}
    return DecisionRule("fused", threshold=threshold, k=consecutive.k,
                        meta={"chosen_on": "the mean of the classifier's consecutive and the segmenter's seg_peak "
                                           "thresholds",
                              "consecutive_chosen_on": consecutive.meta.get("chosen_on"),
                              "seg_peak_chosen_on": peak.meta.get("chosen_on")})
