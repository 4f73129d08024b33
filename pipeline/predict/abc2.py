"""Bedside ABC/2 hematoma volume estimate from a voxel mask (Kothari et al., Stroke 1996).

The classic estimate measures the hematoma on the axial slice where it is largest:

* ``A``: its longest diameter on that slice (mm);
* ``B``: its largest extent perpendicular to ``A`` on the same slice (mm);
* ``C``: the number of slices showing the hematoma times the slice thickness (mm);

and reports ``A * B * C / 2`` (mm^3, here in mL). An ellipsoid has volume ``pi/6 * A*B*C``, about
``0.52 * A*B*C``, which is what the division by two approximates.

:func:`abc2_estimate` does this for the largest connected component of a mask whose last axis is
the slice axis (axial for an axial series). Diameters are measured on the outline of the
component's pixels (their corners), so that no lesion measures zero: a single pixel has
A = B = its diagonal. Pure NumPy/SciPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

__all__ = ["ABC2Estimate", "abc2_estimate", "largest_component"]


@dataclass(frozen=True)
class ABC2Estimate:
    """An ABC/2 measurement of one component.

    Attributes
    ----------
    volume_ml
        ``A * B * C / 2`` in mL.
    a_mm, b_mm, c_mm
        The three diameters (mm).
    slice_index
        Index (last axis) of the slice of largest area, where ``A`` and ``B`` were measured.
    n_slices
        Slices showing the component (``C = n_slices * slice thickness``).
    component_volume_ml
        The component's volume counted from voxels, for comparison.
    """

    volume_ml: float
    a_mm: float
    b_mm: float
    c_mm: float
    slice_index: int
    n_slices: int
    component_volume_ml: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields."""
        return asdict(self)


def largest_component(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Boolean mask of the largest connected component of ``mask`` (empty when ``mask`` is).

    Parameters
    ----------
    mask
        Boolean or 0/1 array.
    connectivity
        1 = face neighbours ... ``mask.ndim`` = all neighbours (as in :mod:`ichct.pipeline.decision`).
    """
    m = np.asarray(mask).astype(bool)
    if not m.any():
        return m.copy()
    structure = ndimage.generate_binary_structure(m.ndim, connectivity)
    labels, n = ndimage.label(m, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _corner_points(slice_mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """(M, 2) physical coordinates (mm) of the four corners of every pixel in a 2D mask."""
    ij = np.argwhere(slice_mask).astype(np.float64)
    offsets = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    corners = (ij[:, None, :] + offsets[None]).reshape(-1, 2)
    return np.unique(corners, axis=0) * np.asarray(spacing, dtype=np.float64)


def _diameters(points: np.ndarray) -> tuple[float, float]:
    """Longest diameter of a 2D point set and its extent perpendicular to it (mm)."""
    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:  # collinear points (a one-pixel-wide line has corners on two lines: not here)
        hull = points
    d = hull[:, None, :] - hull[None, :, :]
    dist2 = np.einsum("ijk,ijk->ij", d, d)
    i, j = np.unravel_index(int(np.argmax(dist2)), dist2.shape)
    a = float(np.sqrt(dist2[i, j]))
    if a == 0.0:
        return 0.0, 0.0
    u = (hull[j] - hull[i]) / a
    perp = np.array([-u[1], u[0]])
    proj = hull @ perp
    return a, float(proj.max() - proj.min())


def abc2_estimate(mask: np.ndarray, spacing_mm: Sequence[float], slice_thickness_mm: float | None = None,
                  connectivity: int = 1, voxel_volume_ml: float | None = None) -> ABC2Estimate | None:
    """ABC/2 estimate of the largest connected component of a 3D mask.

    Parameters
    ----------
    mask
        ``(X, Y, Z)`` boolean mask; the last axis is the slice axis.
    spacing_mm
        Voxel spacing ``(sx, sy, sz)`` in mm.
    slice_thickness_mm
        Thickness used for ``C``; default the slice spacing ``sz``.
    connectivity
        Connectivity of the components (1 = faces).
    voxel_volume_ml
        Voxel volume for ``component_volume_ml`` (default the product of ``spacing_mm``; a
        sheared grid's is ``|det(affine)|`` / 1000).

    Returns
    -------
    ABC2Estimate or None
        ``None`` for an empty mask.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim != 3:
        raise ValueError(f"abc2_estimate needs a 3D mask, got shape {m.shape}")
    sp = tuple(float(s) for s in spacing_mm)
    if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise ValueError(f"spacing_mm must be 3 positive values, got {spacing_mm!r}")
    voxel_ml = float(voxel_volume_ml) if voxel_volume_ml is not None else float(np.prod(sp)) / 1000.0
    comp = largest_component(m, connectivity)
    if not comp.any():
        return None
    area = comp.sum(axis=(0, 1))
    k = int(np.argmax(area))
    n_slices = int(np.count_nonzero(area))
    thickness = float(slice_thickness_mm) if slice_thickness_mm else sp[2]
    a, b = _diameters(_corner_points(comp[:, :, k], (sp[0], sp[1])))
    c = n_slices * thickness
    return ABC2Estimate(volume_ml=a * b * c / 2.0 / 1000.0, a_mm=a, b_mm=b, c_mm=c, slice_index=k,
                        n_slices=n_slices, component_volume_ml=float(comp.sum()) * voxel_ml)
