"""What a lesion is for the lesion-level metrics of ``ichct evaluate``, and the lesion counts of one study.

A lesion is a connected component of a mask (``connectivity`` 6, 18 or 26 neighbours in 3D) whose
volume is at least ``min_volume_ml``. The same definition is applied to the reference and to the
prediction:

* a reference component below the minimum is not a lesion to find (it is not counted in
  ``n_true_lesions``, found or not);
* a predicted component below the minimum is not a false positive (nor counted in ``n_pred_lesions``);
* a reference lesion is *detected* when any predicted voxel overlaps it, and a predicted lesion is a
  *false positive* when it overlaps no reference voxel. Overlap is judged against the **whole** other
  mask, small components included: a predicted speck inside a large true lesion detects it, and a
  predicted lesion overlapping only a reference speck is not a false positive.

Volumes are voxel count x voxel volume (``|det(affine)|`` on sheared grids), compared with a relative
tolerance of 1e-9 so that a component of exactly the minimum volume is a lesion. The default
(:data:`DEFAULT_LESIONS`, 26-connected components of at least 0.05 mL) keeps sulcal blood that
shatters into single voxels from counting as dozens of lesions; ``LesionDefinition(6, 0.0)`` is the
definition ichct used before (6-connected, every component).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ichct.errors import InputError

__all__ = ["CONNECTIVITIES", "DEFAULT_LESIONS", "LesionDefinition", "lesion_counts"]

#: Neighbours in 3D -> the rank of :func:`scipy.ndimage.generate_binary_structure`.
CONNECTIVITIES: dict[int, int] = {6: 1, 18: 2, 26: 3}

# a component of exactly the minimum volume is a lesion (voxel volumes are products of float spacings)
_RTOL = 1e-9


@dataclass(frozen=True)
class LesionDefinition:
    """Connected components of ``connectivity`` neighbours (6, 18, 26) of at least ``min_volume_ml``.

    Raises :class:`ichct.errors.InputError` for another connectivity or a negative or non-finite
    minimum.

    Examples
    --------
    >>> LesionDefinition().describe()
    '26-connected components of >= 0.05 mL'
    >>> LesionDefinition(6, 0.0).describe()
    '6-connected components of any size'
    >>> LesionDefinition.from_dict(LesionDefinition(18, 0.1).to_dict()) == LesionDefinition(18, 0.1)
    True
    """

    connectivity: int = 26
    min_volume_ml: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.connectivity, bool) or self.connectivity not in CONNECTIVITIES:
            raise InputError(f"lesion connectivity (--lesion-connectivity) must be one of 6, 18, 26, "
                             f"got {self.connectivity!r}")
        ml = self.min_volume_ml
        if not isinstance(ml, (int, float)) or isinstance(ml, bool) or not math.isfinite(ml) or ml < 0:
            raise InputError(f"lesion minimum volume (--lesion-min-ml) must be a number >= 0, got {ml!r}")
        object.__setattr__(self, "connectivity", int(self.connectivity))
        object.__setattr__(self, "min_volume_ml", float(ml))

    @property
    def rank(self) -> int:
        """The connectivity as :func:`scipy.ndimage.generate_binary_structure` counts it (1, 2, 3)."""
        return CONNECTIVITIES[self.connectivity]

    def describe(self) -> str:
        """The definition in words, as ``report.md`` prints it."""
        size = "any size" if self.min_volume_ml == 0 else f">= {self.min_volume_ml:g} mL"
        return f"{self.connectivity}-connected components of {size}"

    def to_dict(self) -> dict[str, Any]:
        """``{"connectivity", "min_volume_ml", "description"}`` (``metrics.json["lesion_definition"]``)."""
        return {"connectivity": self.connectivity, "min_volume_ml": self.min_volume_ml,
                "description": self.describe()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LesionDefinition:
        """Inverse of :meth:`to_dict` (the description is ignored)."""
        return cls(int(data["connectivity"]), float(data["min_volume_ml"]))


#: The default lesion definition of ``ichct evaluate``.
DEFAULT_LESIONS = LesionDefinition()


def _lesion_labels(labels: np.ndarray, n: int, voxel_volume_ml: float, min_volume_ml: float) -> np.ndarray:
    """Boolean array over component labels ``0..n``: True for the components that are lesions."""
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes * voxel_volume_ml >= min_volume_ml * (1.0 - _RTOL)
    keep[0] = False
    return keep


def lesion_counts(pred: Any, true: Any, lesions: LesionDefinition = DEFAULT_LESIONS,
                  voxel_volume_ml: float | None = None) -> dict[str, int]:
    """``{"n_true_lesions", "n_detected_lesions", "n_pred_lesions", "n_fp_lesions"}`` of two masks.

    Parameters
    ----------
    pred, true
        Boolean (or 0/1) masks on the same grid.
    lesions
        What a lesion is (see the module docstring for the overlap rules).
    voxel_volume_ml
        Volume of one voxel in mL; needed when ``lesions.min_volume_ml > 0``.

    Examples
    --------
    >>> import numpy as np
    >>> true = np.zeros((4, 4, 4), bool)
    >>> true[0, 0, 0] = true[1, 1, 1] = True  # two voxels touching at a corner
    >>> lesion_counts(true, true, LesionDefinition(26, 0.0))["n_true_lesions"]
    1
    >>> lesion_counts(true, true, LesionDefinition(6, 0.0))["n_true_lesions"]
    2
    >>> lesion_counts(true, true, LesionDefinition(26, 0.05), voxel_volume_ml=0.001)["n_true_lesions"]
    0
    """
    p, t = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {t.shape}")
    if lesions.min_volume_ml > 0 and (voxel_volume_ml is None or not voxel_volume_ml > 0):
        raise ValueError(f"a lesion minimum volume needs a positive voxel volume, got {voxel_volume_ml!r}")
    both = p | t
    if not both.any():
        return {"n_true_lesions": 0, "n_detected_lesions": 0, "n_pred_lesions": 0, "n_fp_lesions": 0}
    # every component of either mask lies inside the bounding box of both: label only that box
    idx = np.argwhere(both)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(idx.min(axis=0), idx.max(axis=0)))
    p, t = p[box], t[box]
    structure = ndimage.generate_binary_structure(p.ndim, min(lesions.rank, max(p.ndim, 1)))
    tl, nt = ndimage.label(t, structure=structure)
    pl, npred = ndimage.label(p, structure=structure)
    ml = float(voxel_volume_ml) if voxel_volume_ml is not None else 1.0
    true_lesion = _lesion_labels(tl, nt, ml, lesions.min_volume_ml)
    pred_lesion = _lesion_labels(pl, npred, ml, lesions.min_volume_ml)
    found = np.zeros(nt + 1, dtype=bool)
    found[tl[p]] = True  # reference components overlapped by any predicted voxel
    touched = np.zeros(npred + 1, dtype=bool)
    touched[pl[t]] = True  # predicted components overlapping any reference voxel
    return {
        "n_true_lesions": int(true_lesion.sum()),
        "n_detected_lesions": int((true_lesion & found).sum()),
        "n_pred_lesions": int(pred_lesion.sum()),
        "n_fp_lesions": int((pred_lesion & ~touched).sum()),
    }
