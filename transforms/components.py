"""Small connected components of a predicted label map: find them, drop them.

A segmenter trained on a few minutes of CPU leaves specks of a few voxels (a few hundredths of a
mL) scattered over scans without blood; a real bleed is a connected region. Components are formed
on the foreground (every label > 0 together), so a small region of one subtype that touches a large
bleed of another stays. MONAI's ``RemoveSmallObjects`` does the same by voxel count or physical size
but needs scikit-image, which ichct does not depend on; this uses :func:`scipy.ndimage.label`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from scipy import ndimage

__all__ = ["RemoveSmallComponents", "RemoveSmallComponentsd", "component_structure", "large_component_mask"]

# relative tolerance when comparing a component's volume with the minimum (voxel volumes are products
# of float spacings: a component of exactly the minimum volume must not be dropped by rounding)
_VOLUME_RTOL = 1e-9


def component_structure(ndim: int, connectivity: int) -> np.ndarray:
    """The :func:`scipy.ndimage.label` structure of ``connectivity`` for ``ndim``-D data, checked.

    ``connectivity``: 1 = face neighbours (6 in 3D) ... ``ndim`` = all neighbours (26 in 3D); any
    other value raises ``ValueError``.

    Examples
    --------
    >>> from ichct.transforms import component_structure
    >>> int(component_structure(3, 1).sum()), int(component_structure(3, 3).sum())
    (7, 27)
    """
    if not 1 <= connectivity <= max(ndim, 1):
        raise ValueError(f"connectivity must be in [1, {ndim}] for {ndim}-D data, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, connectivity)


def large_component_mask(mask: np.ndarray, voxel_volume_ml: float, min_volume_ml: float,
                         connectivity: int = 1) -> np.ndarray:
    """Boolean mask of the connected components of ``mask`` whose volume is >= ``min_volume_ml``.

    Parameters
    ----------
    mask
        Boolean (or 0/1) array of any dimension.
    voxel_volume_ml
        Volume of one voxel in mL (> 0).
    min_volume_ml
        Components below this volume are dropped; one of exactly this volume is kept; 0 keeps all.
    connectivity
        1 = face neighbours (6 in 3D) ... ``mask.ndim`` = all neighbours (26 in 3D).

    Returns
    -------
    numpy.ndarray
        Boolean array of ``mask``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> from ichct.transforms import large_component_mask
    >>> mask = np.zeros((8, 8, 4), dtype=bool)
    >>> mask[0:4, 0:4, 0:2] = True  # 32 voxels
    >>> mask[7, 7, 3] = True        # a single voxel
    >>> int(large_component_mask(mask, voxel_volume_ml=0.001, min_volume_ml=0.01).sum())
    32
    """
    m = np.asarray(mask).astype(bool)
    if not (math.isfinite(voxel_volume_ml) and voxel_volume_ml > 0):
        raise ValueError(f"voxel_volume_ml must be a positive number, got {voxel_volume_ml!r}")
    if not (math.isfinite(min_volume_ml) and min_volume_ml >= 0):
        raise ValueError(f"min_volume_ml must be >= 0, got {min_volume_ml!r}")
    structure = component_structure(m.ndim, connectivity)
    out = m.copy()
    if min_volume_ml == 0 or not m.any():
        return out
    # label only the foreground's bounding box (blood is a small part of a head CT), and clear each
    # small component inside its own box, instead of passes over the whole volume
    box = _bounding_box(m)
    labels, n = ndimage.label(m[box], structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = np.flatnonzero(sizes[1:] * voxel_volume_ml < min_volume_ml * (1.0 - _VOLUME_RTOL)) + 1
    if small.size:
        inside = out[box]  # a view: clearing it clears ``out``
        objects = ndimage.find_objects(labels)
        for label in small:
            where = objects[label - 1]
            inside[where][labels[where] == label] = False
    return out


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel of a non-empty boolean ``mask``."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


class RemoveSmallComponents(Transform):
    """Set to background every foreground component of a channel-first label map below a volume.

    Parameters
    ----------
    min_volume_ml
        Foreground components (all labels > 0 together) smaller than this are set to 0.
    connectivity
        1: faces (6-connectivity in 3D), 2: faces and edges, 3: all 26 neighbours.
    voxel_volume_ml
        Volume of one voxel in mL for plain arrays; a ``MetaTensor`` uses its affine instead.

    Examples
    --------
    With 1 mm voxels (0.001 mL), a 2-voxel speck is dropped and a 4 x 4 x 2 bleed of label 2 stays:

    >>> import torch
    >>> from monai.data import MetaTensor
    >>> from ichct.transforms import RemoveSmallComponents
    >>> seg = torch.zeros(1, 8, 8, 4)
    >>> seg[0, 0:4, 0:4, 0:2] = 2
    >>> seg[0, 7, 6:8, 3] = 1
    >>> out = RemoveSmallComponents(min_volume_ml=0.01)(MetaTensor(seg))
    >>> int((out > 0).sum()), out.unique().tolist()
    (32, [0.0, 2.0])
    """

    backend = [torch.Tensor.__module__, np.ndarray.__module__]

    def __init__(self, min_volume_ml: float, connectivity: int = 1, voxel_volume_ml: float | None = None) -> None:
        if not (math.isfinite(float(min_volume_ml)) and float(min_volume_ml) >= 0):
            raise ValueError(f"min_volume_ml must be >= 0, got {min_volume_ml!r}")
        self.min_volume_ml = float(min_volume_ml)
        self.connectivity = int(connectivity)
        self.voxel_volume_ml = voxel_volume_ml

    def _voxel_ml(self, img: NdarrayOrTensor) -> float:
        if isinstance(img, MetaTensor):
            spatial = img.ndim - 1
            return float(abs(np.linalg.det(np.asarray(img.affine, dtype=np.float64)[:spatial, :spatial]))) / 1000.0
        if self.voxel_volume_ml is None:
            raise ValueError("a plain array needs voxel_volume_ml (a MetaTensor takes it from its affine)")
        return float(self.voxel_volume_ml)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img``: label map ``(1, *spatial)`` (or ``(C, *spatial)``: every channel's foreground
        counts, every channel is cleared the same way)."""
        if self.min_volume_ml == 0:
            return img
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        foreground = np.any(arr > 0, axis=0)
        drop = foreground & ~large_component_mask(foreground, self._voxel_ml(img), self.min_volume_ml,
                                                  self.connectivity)
        if not drop.any():
            return img
        if isinstance(img, torch.Tensor):
            return img.masked_fill(torch.as_tensor(drop, device=img.device)[None], 0)
        return np.where(drop[None], np.zeros((), dtype=arr.dtype), arr)


class RemoveSmallComponentsd(MapTransform):
    """Dictionary twin of :class:`RemoveSmallComponents`.

    Parameters
    ----------
    keys
        Keys of the label maps to clean.
    min_volume_ml, connectivity, voxel_volume_ml
        See :class:`RemoveSmallComponents`.
    allow_missing_keys
        Skip keys absent from the data instead of raising.

    Examples
    --------
    >>> import numpy as np
    >>> from ichct.transforms import RemoveSmallComponentsd
    >>> seg = np.zeros((1, 8, 8, 4), dtype=np.uint8)
    >>> seg[0, 0:4, 0:4, 0:2] = 1
    >>> seg[0, 7, 7, 3] = 1
    >>> out = RemoveSmallComponentsd("pred", min_volume_ml=0.01, voxel_volume_ml=0.001)({"pred": seg})
    >>> int(out["pred"].sum())
    32
    """

    backend = RemoveSmallComponents.backend

    def __init__(self, keys: KeysCollection, min_volume_ml: float, connectivity: int = 1,
                 voxel_volume_ml: float | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remover = RemoveSmallComponents(min_volume_ml, connectivity, voxel_volume_ml)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remover(d[key])
        return d
