"""Rule on a segmenter's probabilities: the ``seg_peak`` score, its highest neighbourhood-averaged probability."""

from __future__ import annotations

from typing import Any

import numpy as np

from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision.checks import check_k

__all__ = ["peak_probability_scores"]


def peak_probability_scores(probabilities: Any, size: int = 3) -> dict[str, float]:
    """Highest neighbourhood-averaged probability per label of a segmenter's class probabilities.

    Parameters
    ----------
    probabilities
        ``(C, X, Y, Z)`` class probabilities (softmax; C = 2: background, blood; C = 6: background
        and the subtypes in :data:`LABEL_NAMES` order).
    size
        Edge of the cube each voxel's probability is averaged over first (1: the raw maximum).

    Returns
    -------
    dict
        ``{"any": score}`` (any: 1 - p(background)) and, for 6 classes, one score per subtype.

    Examples
    --------
    >>> p = np.zeros((2, 6, 6, 6)); p[0] = 1.0
    >>> p[:, 2:5, 2:5, 2:5] = [[[[0.1]]], [[[0.9]]]]       # a 3 x 3 x 3 blob at 0.9
    >>> p[:, 0, 0, 0] = [0.0, 1.0]                          # one voxel at 1.0: averaged away
    >>> round(peak_probability_scores(p)["any"], 3)
    0.9
    """
    from scipy.ndimage import uniform_filter

    arr = np.asarray(probabilities, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] not in (2, len(LABEL_NAMES)):
        raise ValueError(f"probabilities must be (C, X, Y, Z) with C = 2 or {len(LABEL_NAMES)}, got {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise ValueError("probabilities must be finite values within [0, 1] (softmax the logits first)")
    size = check_k(size)

    def peak(channel: np.ndarray) -> float:
        return float(np.clip(uniform_filter(channel, size=size, mode="nearest").max(), 0.0, 1.0))

    out = {"any": peak(1.0 - arr[0])}
    if arr.shape[0] == len(LABEL_NAMES):
        out.update({name: peak(arr[i]) for i, name in enumerate(LABEL_NAMES[1:], start=1)})
    return out
