"""Class probabilities on a model's grid -> a label map on another grid (the input's), slab by slab.

A segmenter predicts on its own grid (reoriented, resampled, cropped); the label map belongs on the
input's grid. Interpolating the class probabilities linearly onto the input's grid and taking the
argmax there gives smoother and more faithful boundaries than resampling labels. MONAI's ``Invertd``
does it by undoing each transform in turn, which builds a sampling grid and the probabilities over
the whole target volume at once: for a thin-slice study (512 x 512 x 160 voxels) about 2 GB of
intermediate arrays. Every one of those transforms is an affine map of voxel coordinates, so the
composition is one matrix, ``inv(source_affine) @ target_affine``: :func:`labels_on_grid` samples
the probabilities with SciPy's ``affine_transform`` a slab of target slices at a time and keeps
only the argmax, so memory stays at the label map plus a slab.

Beyond the source grid every class probability is 0, as in ``Invertd`` (PyTorch's ``grid_sample``
with zero padding, ``align_corners=False``): a target voxel more than a voxel outside is background
(the first class wins ties); within a voxel of the edge the inside values are weighted toward 0,
which keeps their argmax. On the committed segmenter's predictions and on random probabilities,
axial, tilt-corrected and oblique inputs, the labels equal ``Invertd``'s voxel for voxel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["labels_on_grid"]

#: Target voxels sampled per slab: about 16 MB of float32 per class.
SLAB_VOXELS = 1 << 22


def labels_on_grid(probs: Any, source_affine: Any, target_affine: Any, target_shape: tuple[int, ...],
                   slab_voxels: int = SLAB_VOXELS) -> np.ndarray:
    """The argmax over classes of ``probs`` linearly interpolated onto the target grid, as uint8.

    Parameters
    ----------
    probs
        Class probabilities ``(K, X', Y', Z')`` on the source grid (NumPy or torch), K <= 255.
    source_affine, target_affine
        4 x 4 voxel-to-world affines of the source grid (the model's) and of the target grid (the
        input's), in the same world frame.
    target_shape
        The target grid's ``(X, Y, Z)``.
    slab_voxels
        Target voxels sampled at once (whole slices of the last axis; at least one slice).

    Returns
    -------
    numpy.ndarray
        uint8 labels of ``target_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> blood = np.zeros((4, 4, 4), np.float32); blood[1:3, 1:3, 1:3] = 1
    >>> probs = np.stack([1 - blood, blood])
    >>> # the same field of view at twice the resolution (voxel centres shifted by a quarter voxel)
    >>> fine = np.diag([0.5, 0.5, 0.5, 1.0]); fine[:3, 3] = -0.25
    >>> labels = labels_on_grid(probs, np.eye(4), fine, (8, 8, 8))
    >>> labels.shape, int(labels.sum())  # a 4 x 4 x 4 cube whose 8 corner voxels round off (trilinear)
    ((8, 8, 8), 56)
    """
    arr = probs.detach().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
    arr = arr.astype(np.float32, copy=False)
    shape = tuple(int(s) for s in target_shape)
    if arr.ndim != 4 or len(shape) != 3 or not 1 <= arr.shape[0] <= 255:
        raise ValueError(f"expected probabilities (K, X, Y, Z) and a 3D target shape, got {arr.shape} and {shape}")
    to_source = np.linalg.inv(np.asarray(source_affine, np.float64)) @ np.asarray(target_affine, np.float64)
    labels = np.zeros(shape, dtype=np.uint8)
    box = _target_box(arr, to_source, shape)
    if box is None:  # nothing but zeros within reach: background everywhere
        return labels
    # two classes: the sign of the interpolated difference is the argmax (interpolation is linear),
    # one channel instead of two; the first class keeps ties, as argmax
    channels = [arr[1] - arr[0]] if arr.shape[0] == 2 else list(arr)
    lo, hi = box
    matrix = to_source[:3, :3]
    per_slab = max(1, int(slab_voxels) // max(1, (hi[0] - lo[0]) * (hi[1] - lo[1])))
    for z0 in range(lo[2], hi[2], per_slab):
        z1 = min(hi[2], z0 + per_slab)
        # the slab's first voxel is its own index 0
        offset = to_source[:3, 3] + matrix @ np.array([lo[0], lo[1], z0], dtype=np.float64)
        out_shape = (hi[0] - lo[0], hi[1] - lo[1], z1 - z0)
        sampled = [ndimage.affine_transform(c, matrix, offset=offset, output_shape=out_shape, order=1,
                                            mode="grid-constant", cval=0.0, prefilter=False) for c in channels]
        view = labels[lo[0]:hi[0], lo[1]:hi[1], z0:z1]
        if len(channels) == 1:
            view[sampled[0] > 0] = 1
        else:
            view[...] = np.argmax(np.stack(sampled), axis=0)  # the first maximum, as torch.argmax on ties
    return labels


def _target_box(arr: np.ndarray, to_source: np.ndarray,
                shape: tuple[int, ...]) -> tuple[list[int], list[int]] | None:
    """``(lo, hi)`` of the target voxels within one voxel of where ``arr`` is not all zero (beyond
    that every interpolated value is 0: background), or None when there is no such voxel."""
    support = np.argwhere(np.any(arr != 0, axis=0))
    if support.size == 0:
        return None
    first, last = support.min(0) - 1.0, support.max(0) + 1.0
    corners = np.array([[x, y, z, 1.0] for x in (first[0], last[0]) for y in (first[1], last[1])
                        for z in (first[2], last[2])])
    target = corners @ np.linalg.inv(to_source).T
    lo = np.maximum(np.floor(target[:, :3].min(0)), 0).astype(int)
    hi = np.minimum(np.ceil(target[:, :3].max(0)) + 1, shape).astype(int)
    if np.any(hi <= lo):
        return None
    return [int(v) for v in lo], [int(v) for v in hi]
