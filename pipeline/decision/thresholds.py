"""Threshold selection: an operating threshold chosen on validation scores (``positive = score >= threshold``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ichct.pipeline.core.labels import LABEL_NAMES

__all__ = ["probability_threshold", "choose_threshold", "choose_thresholds"]


def _operating_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) with sensitivity and specificity of ``score >= t``."""
    thresholds = np.unique(scores)[::-1]
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    sens = tp / pos.size if pos.size else np.full(thresholds.shape, np.nan)
    spec = 1.0 - fp / neg.size if neg.size else np.full(thresholds.shape, np.nan)
    return thresholds, sens, spec


def _gap_midpoint(thresholds: np.ndarray, index: int) -> float:
    """Midpoint between ``thresholds[index]`` and the next lower observed score (descending
    ``thresholds``); the score itself when it is the lowest."""
    if index + 1 >= thresholds.size:
        return float(thresholds[index])
    return float(0.5 * (thresholds[index] + thresholds[index + 1]))


def probability_threshold(threshold: float) -> float:
    """A chosen threshold as a probability rule's threshold: within ``[1e-6, 1]`` (0 would call every CT).

    Examples
    --------
    >>> probability_threshold(0.0), probability_threshold(0.4), probability_threshold(1.2)
    (1e-06, 0.4, 1.0)
    """
    return float(min(max(float(threshold), 1e-6), 1.0))


def choose_threshold(
    scores: Any, labels: Any, method: str = "youden", target: float = 0.95
) -> float:
    """Pick an operating threshold on validation scores (``positive = score >= threshold``).

    Every threshold in the gap between the chosen observed score and the next lower one gives the
    same validation operating point; the midpoint of that gap is returned (the largest margin on
    both sides), so applying it to the same scores reproduces the operating point exactly while a
    new score just below the lowest called positive is not missed. On perfectly separated
    validation scores, Youden's J thus lands halfway between the highest negative and the lowest
    positive, not on the lowest positive (a fragile edge: a validation fold whose positives all
    scored 0.998 gave a threshold that missed most test positives).

    Parameters
    ----------
    scores
        ``(M,)`` CT-level scores (any scale: probabilities, mL, ...).
    labels
        ``(M,)`` ground truth, 0/1 or bool.
    method
        ``"youden"``: maximise sensitivity + specificity - 1 (ties between operating points: the
        one of the highest threshold);
        ``"sensitivity"``: the operating point of the highest threshold whose sensitivity is >= ``target``;
        ``"specificity"``: the operating point of the lowest threshold whose specificity is >= ``target``.
    target
        Required sensitivity or specificity in ``(0, 1]``.

    Returns
    -------
    float
        The threshold.

    Raises
    ------
    ValueError
        On NaN/inf scores, non-binary labels, mismatched lengths, or when the data lack the class
        the method needs (both classes for Youden; positives for sensitivity; negatives for
        specificity).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels)
    if y.ndim != 1 or s.size != y.size:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if s.size == 0:
        raise ValueError("no scores")
    if np.isnan(s).any() or not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0/1 or bool")
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    thresholds, sens, spec = _operating_points(s, y)

    if method == "youden":
        if n_pos == 0 or n_neg == 0:
            raise ValueError(f"Youden's J needs positives and negatives (got {n_pos} and {n_neg})")
        j = sens + spec - 1.0
        return _gap_midpoint(thresholds, int(np.argmax(j)))  # thresholds descending: first max = highest
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    if method == "sensitivity":
        if n_pos == 0:
            raise ValueError("a sensitivity target needs at least one positive case")
        ok = np.flatnonzero(sens >= target - 1e-12)
        return _gap_midpoint(thresholds, int(ok[0]))  # sensitivity grows as the threshold falls
    if method == "specificity":
        if n_neg == 0:
            raise ValueError("a specificity target needs at least one negative case")
        ok = np.flatnonzero(spec >= target - 1e-12)
        if ok.size == 0:
            raise ValueError(
                f"no observed score reaches specificity {target}: a negative case holds the highest score"
            )
        return _gap_midpoint(thresholds, int(ok[-1]))
    raise ValueError(f"method must be 'youden', 'sensitivity' or 'specificity', got {method!r}")


def choose_thresholds(
    scores: Any,
    labels: Any,
    method: str = "youden",
    target: float = 0.95,
    subtypes: Sequence[str] = LABEL_NAMES,
) -> dict[str, float]:
    """:func:`choose_threshold` per column of ``(M, C)`` scores and labels.

    Returns
    -------
    dict
        ``{subtype: threshold}``, usable as ``DecisionRule(threshold=...)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 2 or s.shape != y.shape or s.shape[1] != len(subtypes):
        raise ValueError(
            f"scores and labels must both be (M, {len(subtypes)}), got {s.shape} and {y.shape}"
        )
    out: dict[str, float] = {}
    for j, name in enumerate(subtypes):
        try:
            out[name] = choose_threshold(s[:, j], y[:, j], method=method, target=target)
        except ValueError as exc:
            raise ValueError(f"subtype {name!r}: {exc}") from exc
    return out
