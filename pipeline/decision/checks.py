"""Input checks the decision rules share: slice probabilities, a window size and a threshold."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["as_slice_probabilities", "check_k", "check_threshold"]


def as_slice_probabilities(probs: Any) -> tuple[np.ndarray, bool]:
    """Validate slice probabilities; return a float64 ``(N, C)`` array and whether input was 1-D.

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities in ``[0, 1]``, at least one slice, no NaN.

    Returns
    -------
    tuple
        The ``(N, C)`` array (``C = 1`` for 1-D input) and whether the input was 1-D.

    Raises
    ------
    ValueError
        On another shape, no slice, NaN or a value outside ``[0, 1]``.

    Examples
    --------
    >>> arr, one_d = as_slice_probabilities([0.1, 0.9])
    >>> arr.shape, one_d
    ((2, 1), True)
    """
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"slice probabilities must be (N,) or (N, C), got shape {arr.shape}")
    one_d = arr.ndim == 1
    if one_d:
        arr = arr[:, None]
    if arr.shape[0] == 0:
        raise ValueError("slice probabilities are empty (a CT needs at least one slice)")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(f"slice probabilities contain {n_nan} NaN value(s); refusing to decide on them")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(
            f"slice probabilities must lie in [0, 1] (got min {arr.min()}, max {arr.max()}); "
            "apply a sigmoid to logits first"
        )
    return arr, one_d


def check_k(k: int) -> int:
    """``k`` as an ``int`` when it is a positive integer (a window length, a top-k or a filter size).

    Raises
    ------
    ValueError
        When ``k`` is a bool, not integral or below 1.

    Examples
    --------
    >>> check_k(3.0)
    3
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_threshold(t: Any, rule: str) -> float:
    """A rule's threshold as a ``float``: mL > 0 for ``seg_volume``, within ``(0, 1]`` for the other rules.

    Parameters
    ----------
    t
        The threshold (a number; not a bool).
    rule
        The rule's name (see :data:`~ichct.pipeline.decision.names.RULES`).

    Raises
    ------
    ValueError
        When ``t`` is no number or out of the rule's range (0 would call every CT positive).

    Examples
    --------
    >>> check_threshold(2, "seg_volume"), check_threshold(0.5, "max")
    (2.0, 0.5)
    """
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)):
        raise ValueError(f"threshold must be a number, got {t!r}")
    t = float(t)
    if rule == "seg_volume":
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"seg_volume threshold is a blood volume in mL and must be > 0, got {t}")
    elif not 0.0 < t <= 1.0:
        raise ValueError(f"{rule} threshold must lie in (0, 1] (0 would call every CT positive), got {t}")
    return t
