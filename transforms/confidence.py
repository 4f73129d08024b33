"""Predicted blood components the segmenter is unsure of: find them, drop them.

Under another scanner's image formation a segmenter's false blood (the bright band under the inner
table, calcifications) tends to come as components whose voxels only just pass 0.5, while real
bleeds have a confident core: for one segmenter on the shifted-domain cohort (docs/benchmarks.md,
component confidence filter) the false components' mean foreground probability had a median of
0.72, the true ones' 0.91. How far apart the two lie depends on the model, so the threshold is a
per-run setting. A component is kept when the mean foreground probability (1 - P(background)) over
its voxels reaches ``min_confidence``; the decision is made on the model's own grid and
probabilities, before any argmax or resampling, so every later step agrees with it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from .components import component_structure

__all__ = ["SuppressUncertainComponents", "SuppressUncertainComponentsd", "confident_component_mask", "to_background",
           "predicted_foreground", "unit_interval"]


def unit_interval(value: float, name: str) -> float:
    """``value`` as a float within [0, 1]; a ``ValueError`` naming ``name`` otherwise.

    Examples
    --------
    >>> unit_interval(0.4, "min_score")
    0.4
    """
    if not (math.isfinite(float(value)) and 0 <= float(value) <= 1):
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")
    return float(value)


def predicted_foreground(probs: NdarrayOrTensor, spatial_dims: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(probs as an array, where a class other than background wins)`` of class probabilities
    ``(K, *spatial)`` with K >= 2, background first (``spatial_dims``: how many spatial axes they must have).

    Examples
    --------
    >>> import numpy as np
    >>> predicted_foreground(np.array([[0.2, 0.9], [0.8, 0.1]]))[1].tolist()
    [True, False]
    """
    arr = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    if arr.ndim < 2 or arr.shape[0] < 2 or (spatial_dims is not None and arr.ndim != spatial_dims + 1):
        axes = "*spatial" if spatial_dims is None else ", ".join("XYZ"[:spatial_dims])
        raise ValueError(f"expected class probabilities (K >= 2, {axes}), got shape {arr.shape}")
    return arr, np.argmax(arr, axis=0) > 0


def confident_component_mask(mask: np.ndarray, foreground_prob: np.ndarray, min_confidence: float,
                             connectivity: int = 1) -> np.ndarray:
    """Boolean mask of the components of ``mask`` whose mean ``foreground_prob`` is >= ``min_confidence``.

    Parameters
    ----------
    mask
        Boolean (or 0/1) array.
    foreground_prob
        Probability of blood (any class but background) per voxel, ``mask``'s shape.
    min_confidence
        In [0, 1]; 0 keeps every component.
    connectivity
        1 = face neighbours (6 in 3D) ... ``mask.ndim`` = all neighbours (26 in 3D).

    Returns
    -------
    numpy.ndarray
        Boolean array of ``mask``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> from ichct.transforms import confident_component_mask
    >>> mask = np.zeros((6, 6, 2), dtype=bool); prob = np.zeros((6, 6, 2))
    >>> mask[0:2, 0:2] = True; prob[0:2, 0:2] = 0.95  # a confident bleed
    >>> mask[4:6, 4:6] = True; prob[4:6, 4:6] = 0.6   # a doubtful one
    >>> int(confident_component_mask(mask, prob, 0.8).sum())
    8
    """
    m = np.asarray(mask).astype(bool)
    p = np.asarray(foreground_prob, dtype=np.float64)
    if p.shape != m.shape:
        raise ValueError(f"foreground_prob has shape {p.shape}, the mask {m.shape}")
    unit_interval(min_confidence, "min_confidence")
    structure = component_structure(m.ndim, connectivity)
    if min_confidence == 0 or not m.any():
        return m.copy()
    labels, n = ndimage.label(m, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sums = np.bincount(labels.ravel(), weights=p.ravel(), minlength=n + 1)
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = sums[1:] >= min_confidence * sizes[1:]
    return keep[labels]


class SuppressUncertainComponents(Transform):
    """Turn to background every predicted blood component whose mean blood probability is low.

    Works on the class probabilities on the model's own grid (``(K, *spatial)``, background first),
    before any argmax or resampling: the foreground is where a class other than background wins;
    a component of it whose mean blood probability (1 - P(background)) is below ``min_confidence``
    gets P(background) = 1 and the other classes 0. Every later step (argmax, the inverse to the
    input's grid, volumes) then sees it as background.

    Parameters
    ----------
    min_confidence
        In [0, 1]; 0 keeps everything.
    connectivity
        1: faces (6-connectivity in 3D), 2: faces and edges, 3 (default): all 26 neighbours, as
        ``ichct evaluate``'s lesions.

    Examples
    --------
    >>> import torch
    >>> from ichct.transforms import SuppressUncertainComponents
    >>> blood = torch.zeros(6, 6, 2); blood[0:2, 0:2] = 0.95; blood[4:6, 4:6] = 0.6
    >>> probs = torch.stack([1 - blood, blood])
    >>> out = SuppressUncertainComponents(0.8)(probs)
    >>> int((out.argmax(0) == 1).sum()), float(out[0, 5, 5, 0])  # the doubtful bleed is background now
    (8, 1.0)
    """

    backend = [torch.Tensor.__module__, np.ndarray.__module__]

    def __init__(self, min_confidence: float, connectivity: int = 3) -> None:
        self.min_confidence = unit_interval(min_confidence, "min_confidence")
        self.connectivity = int(connectivity)

    def __call__(self, probs: NdarrayOrTensor) -> NdarrayOrTensor:
        """``probs``: class probabilities ``(K, *spatial)`` with K >= 2, background first."""
        if self.min_confidence == 0:
            return probs
        arr, foreground = predicted_foreground(probs)
        drop = foreground & ~confident_component_mask(foreground, 1.0 - arr[0], self.min_confidence, self.connectivity)
        return to_background(probs, drop)


def to_background(probs: NdarrayOrTensor, drop: np.ndarray) -> NdarrayOrTensor:
    """``probs`` (``(K, *spatial)``, background first) with P(background) = 1 and the other classes 0
    where ``drop`` is true; ``probs`` itself when nothing is dropped.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.2, 0.9], [0.8, 0.1]])  # two voxels, blood wins in the first
    >>> to_background(probs, np.array([True, False]))[:, 0].tolist()
    [1.0, 0.0]
    """
    if not drop.any():
        return probs
    if isinstance(probs, torch.Tensor):
        background = torch.zeros(probs.shape[0], dtype=probs.dtype, device=probs.device)
        background[0] = 1
        out = probs.clone()
        out[:, torch.as_tensor(drop, device=probs.device)] = background[:, None]
        return out
    arr = np.asarray(probs)
    background = np.zeros(arr.shape[0], dtype=arr.dtype)
    background[0] = 1
    out = arr.copy()
    out[:, drop] = background[:, None]
    return out


class SuppressUncertainComponentsd(MapTransform):
    """Dictionary twin of :class:`SuppressUncertainComponents`.

    Parameters
    ----------
    keys
        Keys of the class probabilities to clean.
    min_confidence, connectivity
        See :class:`SuppressUncertainComponents`.
    allow_missing_keys
        Skip keys absent from the data instead of raising.

    Examples
    --------
    >>> import numpy as np
    >>> from ichct.transforms import SuppressUncertainComponentsd
    >>> blood = np.zeros((4, 4, 1)); blood[:2, :2] = 0.6  # blood at p = 0.6
    >>> out = SuppressUncertainComponentsd("pred", min_confidence=0.8)({"pred": np.stack([1 - blood, blood])})
    >>> int((out["pred"].argmax(0) == 1).sum())
    0
    """

    backend = SuppressUncertainComponents.backend

    def __init__(self, keys: KeysCollection, min_confidence: float, connectivity: int = 3,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.suppress = SuppressUncertainComponents(min_confidence, connectivity)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.suppress(d[key])
        return d
