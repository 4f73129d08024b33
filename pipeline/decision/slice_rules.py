"""Rules on slice probabilities ``(N, C)``: ``max``, ``topk_mean`` and ``consecutive``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ichct.pipeline.decision.checks import as_slice_probabilities, check_k, check_threshold
from ichct.pipeline.decision.names import SLICE_RULES
from ichct.pipeline.decision.rule import DecisionRule

__all__ = ["max_score", "topk_mean_score", "consecutive_score", "consecutive_call", "slice_scores"]


def _out(values: np.ndarray, one_d: bool) -> np.ndarray | float:
    """Per-column values, or the one value as a float when the input was 1-D."""
    return float(values[0]) if one_d else values


def max_score(probs: Any) -> np.ndarray | float:
    """Highest slice probability.

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities.

    Returns
    -------
    numpy.ndarray or float
        ``(C,)`` scores, or a float for 1-D input.
    """
    arr, one_d = as_slice_probabilities(probs)
    return _out(arr.max(axis=0), one_d)


def topk_mean_score(probs: Any, k: int = 3) -> np.ndarray | float:
    """Mean of the ``k`` highest slice probabilities (of all slices when there are fewer than k).

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities.
    k
        Number of slices averaged.

    Returns
    -------
    numpy.ndarray or float
        ``(C,)`` scores, or a float for 1-D input.
    """
    arr, one_d = as_slice_probabilities(probs)
    k = min(check_k(k), arr.shape[0])
    top = -np.partition(-arr, k - 1, axis=0)[:k]
    return _out(top.mean(axis=0), one_d)


def consecutive_score(probs: Any, k: int = 3) -> np.ndarray | float:
    """Max over windows of ``k`` adjacent slices of the minimum probability in the window.

    ``consecutive_score(p, k) >= t`` exactly when at least ``k`` adjacent slices have
    ``p >= t`` (for any ``t > 0``); see :func:`consecutive_call`. With fewer than ``k`` slices the
    score is 0.

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities in slice order.
    k
        Window length (number of adjacent slices).

    Returns
    -------
    numpy.ndarray or float
        ``(C,)`` scores, or a float for 1-D input.
    """
    arr, one_d = as_slice_probabilities(probs)
    k = check_k(k)
    if arr.shape[0] < k:
        return _out(np.zeros(arr.shape[1]), one_d)
    windows = np.lib.stride_tricks.sliding_window_view(arr, k, axis=0)  # (N-k+1, C, k)
    return _out(windows.min(axis=-1).max(axis=0), one_d)


def consecutive_call(probs: Any, threshold: float, k: int = 3) -> np.ndarray | bool:
    """Direct form of the ``consecutive`` rule: is there a run of >= ``k`` adjacent passing slices?

    A slice passes when ``p >= threshold``. Passing slices separated by a failing one are
    separate runs. This is the reference definition; :func:`decide` uses the equivalent
    ``consecutive_score(probs, k) >= threshold``.

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities in slice order.
    threshold
        Slice threshold in ``(0, 1]``.
    k
        Minimum run length.

    Returns
    -------
    numpy.ndarray or bool
        ``(C,)`` booleans, or a bool for 1-D input.
    """
    arr, one_d = as_slice_probabilities(probs)
    k = check_k(k)
    check_threshold(threshold, "consecutive")
    longest = np.zeros(arr.shape[1], dtype=int)
    run = np.zeros(arr.shape[1], dtype=int)
    for row in arr >= threshold:
        run = np.where(row, run + 1, 0)
        longest = np.maximum(longest, run)
    calls = longest >= k
    return bool(calls[0]) if one_d else calls


def slice_scores(probs: Any, rule: str | DecisionRule, k: int = 3) -> np.ndarray | float:
    """CT-level scores of a slice-probability rule.

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities.
    rule
        A rule name from :data:`SLICE_RULES` or a :class:`DecisionRule` (whose ``k`` is used).
    k
        Window / top-k size when ``rule`` is a name.

    Returns
    -------
    numpy.ndarray or float
        ``(C,)`` scores, or a float for 1-D input.
    """
    if isinstance(rule, DecisionRule):
        name, k = rule.name, rule.k
    else:
        name = rule
    if name == "max":
        return max_score(probs)
    if name == "topk_mean":
        return topk_mean_score(probs, k)
    if name == "consecutive":
        return consecutive_score(probs, k)
    raise ValueError(f"slice rule must be one of {SLICE_RULES}, got {name!r}")
