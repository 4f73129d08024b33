"""Predicted blood components the segmenter is unsure of: find them, drop them.

Under another scanner's image formation a segmenter's false blood (the bright band under the inner
table, calcifications) tends to come as components whose voxels only just pass 0.5, while real
bleeds have a confident core: on the shifted-domain cohort (docs/benchmarks.md) the false
components' mean foreground probability had a median of 0.72, the true ones' 0.91. A component is
kept when the mean foreground probability (1 - P(background)) over its voxels reaches
``min_confidence``. Components are formed as in :mod:`.components` (every label > 0 together).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from scipy import ndimage

__all__ = ["RemoveUncertainComponents", "RemoveUncertainComponentsd", "confident_component_mask"]


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
    if not (math.isfinite(min_confidence) and 0 <= min_confidence <= 1):
        raise ValueError(f"min_confidence must be within [0, 1], got {min_confidence!r}")
    if not 1 <= connectivity <= max(m.ndim, 1):
        raise ValueError(f"connectivity must be in [1, {m.ndim}] for {m.ndim}-D data, got {connectivity}")
    if min_confidence == 0 or not m.any():
        return m.copy()
    labels, n = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, connectivity))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sums = np.bincount(labels.ravel(), weights=p.ravel(), minlength=n + 1)
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = sums[1:] >= min_confidence * sizes[1:]
    return keep[labels]


class RemoveUncertainComponents(Transform):
    """Set to background every foreground component of a label map whose mean blood probability is low.

    Parameters
    ----------
    min_confidence
        Components whose mean foreground probability is below this are set to 0 (0: keep all).
    connectivity
        1: faces (6-connectivity in 3D), 2: faces and edges, 3: all 26 neighbours.

    Examples
    --------
    >>> import torch
    >>> from ichct.transforms import RemoveUncertainComponents
    >>> labels = torch.zeros(1, 6, 6, 2); probs = torch.zeros(2, 6, 6, 2); probs[0] = 1.0
    >>> labels[0, 0:2, 0:2] = 1; probs[:, 0:2, 0:2] = torch.tensor([0.05, 0.95])[:, None, None, None]
    >>> labels[0, 4:6, 4:6] = 1; probs[:, 4:6, 4:6] = torch.tensor([0.4, 0.6])[:, None, None, None]
    >>> int(RemoveUncertainComponents(0.8)(labels, probs).sum())
    8
    """

    backend = [torch.Tensor.__module__, np.ndarray.__module__]

    def __init__(self, min_confidence: float, connectivity: int = 1) -> None:
        if not (math.isfinite(float(min_confidence)) and 0 <= float(min_confidence) <= 1):
            raise ValueError(f"min_confidence must be within [0, 1], got {min_confidence!r}")
        self.min_confidence = float(min_confidence)
        self.connectivity = int(connectivity)

    def __call__(self, img: NdarrayOrTensor, probs: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img``: label map ``(1, *spatial)``; ``probs``: class probabilities ``(K, *spatial)``, background first."""
        if self.min_confidence == 0:
            return img
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        prob = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
        if prob.shape[1:] != arr.shape[1:]:
            raise ValueError(f"probabilities of shape {prob.shape} do not fit the label map {arr.shape}")
        foreground = np.any(arr > 0, axis=0)
        drop = foreground & ~confident_component_mask(foreground, 1.0 - prob[0], self.min_confidence,
                                                      self.connectivity)
        if not drop.any():
            return img
        if isinstance(img, torch.Tensor):
            return img.masked_fill(torch.as_tensor(drop, device=img.device)[None], 0)
        return np.where(drop[None], np.zeros((), dtype=arr.dtype), arr)


class RemoveUncertainComponentsd(MapTransform):
    """Dictionary twin of :class:`RemoveUncertainComponents`.

    Parameters
    ----------
    keys
        Keys of the label maps to clean.
    prob_key
        Key of the class probabilities on the same grid (``(K, *spatial)``, background first).
    min_confidence, connectivity
        See :class:`RemoveUncertainComponents`.
    allow_missing_keys
        Skip keys absent from the data instead of raising.

    Examples
    --------
    >>> import numpy as np
    >>> from ichct.transforms import RemoveUncertainComponentsd
    >>> pred = np.zeros((1, 4, 4, 1)); pred[0, :2, :2] = 1
    >>> prob = np.stack([1 - 0.6 * pred[0], 0.6 * pred[0]])  # blood at p = 0.6
    >>> out = RemoveUncertainComponentsd("pred", "prob", min_confidence=0.8)({"pred": pred, "prob": prob})
    >>> int(out["pred"].sum())
    0
    """

    backend = RemoveUncertainComponents.backend

    def __init__(self, keys: KeysCollection, prob_key: str, min_confidence: float, connectivity: int = 1,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.prob_key = prob_key
        self.remover = RemoveUncertainComponents(min_confidence, connectivity)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remover(d[key], d[self.prob_key])
        return d
