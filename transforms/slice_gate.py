"""Predicted blood components on slices a slice scorer calls quiet: find them, drop them.

A segmenter's false blood on a normal scan (the bright band under the inner table, a dense sinus)
lies on slices a slice classifier scores low, while its true bleeds lie on slices the classifier
scores at least moderately, even where it misses the study. A component is kept when the highest
slice score over the source slices it touches reaches ``min_score``. The components are those of
the model's own grid and probabilities, before any argmax or resampling (as the confidence filter
of :mod:`ichct.transforms.confidence`), and a 4 x 4 matrix maps the model grid's voxel indices to the
source image's, whose slices lie along its last axis: any reorientation, resampling or crop between
the two is allowed.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from .components import component_structure
from .confidence import predicted_foreground, to_background, unit_interval

__all__ = ["SuppressQuietSliceComponents", "SuppressQuietSliceComponentsd", "components_on_scored_slices"]


def _source_slices(coords: np.ndarray, grid_to_source: np.ndarray, n_slices: int) -> np.ndarray:
    """Index of the source slice nearest to each model-grid voxel (``coords``: ``(3, V)``), clipped."""
    matrix = np.asarray(grid_to_source, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"grid_to_source must be a 4 x 4 matrix, got shape {matrix.shape}")
    z = matrix[2, :3] @ coords + matrix[2, 3]
    return np.clip(np.rint(z), 0, n_slices - 1).astype(np.int64)


def components_on_scored_slices(mask: np.ndarray, slice_scores: Sequence[float], grid_to_source: np.ndarray,
                                min_score: float, connectivity: int = 3) -> np.ndarray:
    """Boolean mask of the components of ``mask`` that touch a source slice scored >= ``min_score``.

    Parameters
    ----------
    mask
        Boolean (or 0/1) 3D array on the model's grid.
    slice_scores
        One score per slice of the source image (its last axis), e.g. a classifier's p(any).
    grid_to_source
        4 x 4 matrix from the model grid's voxel indices to the source image's
        (``inv(source_affine) @ grid_affine``).
    min_score
        In [0, 1]; 0 keeps every component.
    connectivity
        1 = face neighbours (6) ... 3 = all 26 neighbours (default, as ``ichct evaluate``'s lesions).

    Returns
    -------
    numpy.ndarray
        Boolean array of ``mask``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((4, 4, 6), dtype=bool)
    >>> mask[0, 0, 0:2] = True; mask[3, 3, 4:6] = True  # one component low, one high in the stack
    >>> scores = [0.9, 0.9, 0.1, 0.1, 0.1, 0.1]           # the classifier sees blood on slices 0-1
    >>> keep = components_on_scored_slices(mask, scores, np.eye(4), 0.4)
    >>> bool(keep[0, 0, 0]), bool(keep[3, 3, 4])
    (True, False)
    """
    m = np.asarray(mask).astype(bool)
    scores = np.asarray(slice_scores, dtype=np.float64).reshape(-1)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3D, got shape {m.shape}")
    if not scores.size or not np.all(np.isfinite(scores)):
        raise ValueError("slice_scores must be one finite score per source slice")
    unit_interval(min_score, "min_score")
    if min_score == 0 or not m.any():
        return m.copy()
    labels, n = ndimage.label(m, structure=component_structure(3, connectivity))
    coords = np.nonzero(labels)
    voxel_scores = scores[_source_slices(np.asarray(coords, dtype=np.float64), grid_to_source, scores.size)]
    best = np.zeros(n + 1)
    np.maximum.at(best, labels[coords], voxel_scores)
    keep = best >= min_score
    keep[0] = False
    return keep[labels]


class SuppressQuietSliceComponents(Transform):
    """Turn to background every predicted blood component on source slices all scored below ``min_score``.

    Works on the class probabilities on the model's own grid (``(K, X, Y, Z)``, background first):
    the foreground is where a class other than background wins; a component of it whose source
    slices (:func:`components_on_scored_slices`) all score below ``min_score`` gets P(background)
    = 1 and the other classes 0, so every later step (argmax, the inverse to the input's grid,
    volumes) sees it as background.

    Parameters
    ----------
    min_score
        In [0, 1]; 0 keeps everything.
    connectivity
        1: faces (6-connectivity), 2: faces and edges, 3 (default): all 26 neighbours.

    Examples
    --------
    >>> import numpy as np, torch
    >>> blood = torch.zeros(4, 4, 6); blood[0, 0, 0:2] = 0.9; blood[3, 3, 4:6] = 0.9
    >>> gate = SuppressQuietSliceComponents(0.4)
    >>> out = gate(torch.stack([1 - blood, blood]), [0.9, 0.9, 0.1, 0.1, 0.1, 0.1], np.eye(4))
    >>> int((out.argmax(0) == 1).sum())  # the component on quiet slices is background now
    2
    """

    backend = [torch.Tensor.__module__, np.ndarray.__module__]

    def __init__(self, min_score: float, connectivity: int = 3) -> None:
        self.min_score = unit_interval(min_score, "min_score")
        self.connectivity = int(connectivity)

    def __call__(self, probs: NdarrayOrTensor, slice_scores: Sequence[float],
                 grid_to_source: np.ndarray) -> NdarrayOrTensor:
        """``probs``: class probabilities ``(K, X, Y, Z)``; ``slice_scores`` and ``grid_to_source``
        as :func:`components_on_scored_slices` takes them."""
        if self.min_score == 0:
            return probs
        _, foreground = predicted_foreground(probs, spatial_dims=3)
        keep = components_on_scored_slices(foreground, slice_scores, grid_to_source, self.min_score, self.connectivity)
        return to_background(probs, foreground & ~keep)


class SuppressQuietSliceComponentsd(MapTransform):
    """Dictionary twin of :class:`SuppressQuietSliceComponents`: the slice scores and the grid-to-source
    matrix come from the data under ``scores_key`` and ``grid_to_source_key``.

    Examples
    --------
    >>> import numpy as np
    >>> blood = np.zeros((4, 4, 6)); blood[3, 3, 4:6] = 0.9
    >>> gate = SuppressQuietSliceComponentsd("pred", min_score=0.4)
    >>> out = gate({"pred": np.stack([1 - blood, blood]), "slice_scores": [0.9] * 2 + [0.1] * 4,
    ...             "grid_to_source": np.eye(4)})
    >>> int((out["pred"].argmax(0) == 1).sum())
    0
    """

    backend = SuppressQuietSliceComponents.backend

    def __init__(self, keys: KeysCollection, min_score: float, scores_key: str = "slice_scores",
                 grid_to_source_key: str = "grid_to_source", connectivity: int = 3,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.gate = SuppressQuietSliceComponents(min_score, connectivity)
        self.scores_key, self.grid_to_source_key = scores_key, grid_to_source_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.gate(d[key], d[self.scores_key], d[self.grid_to_source_key])
        return d
