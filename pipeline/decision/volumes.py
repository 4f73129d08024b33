"""Rule on a segmentation: voxel volumes, small components removed, blood volume in mL per label."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ichct.pipeline.core.labels import LABEL_NAMES

__all__ = ["voxel_volume_ml", "affine_voxel_volume_ml", "remove_small_components", "segmentation_volumes"]


def voxel_volume_ml(spacing_mm: Sequence[float]) -> float:
    """Volume of one voxel in mL from its spacing in mm (1 mL = 1000 mm^3)."""
    sp = np.asarray(spacing_mm, dtype=np.float64)
    if sp.ndim != 1 or sp.size == 0 or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be positive finite values in mm, got {spacing_mm!r}")
    return float(np.prod(sp) / 1000.0)


def affine_voxel_volume_ml(affine: Any) -> float:
    """Volume of one voxel in mL from a voxel-to-world affine: ``|det|`` of its 3x3 part.

    Unlike the product of the column norms (the spacing), this is right for a sheared grid too
    (a gantry-tilted stack kept as acquired, whose voxels are parallelepipeds).
    """
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    volume = float(abs(np.linalg.det(m)))
    if not np.isfinite(volume) or volume <= 0:
        raise ValueError(f"affine has no positive voxel volume: {m.tolist()!r}")
    return volume / 1000.0


def _check_volume_args(voxel_ml: float, min_component_ml: float) -> None:
    if not (math.isfinite(voxel_ml) and voxel_ml > 0):
        raise ValueError(f"voxel_volume_ml must be a positive number, got {voxel_ml!r}")
    if not (math.isfinite(min_component_ml) and min_component_ml >= 0):
        raise ValueError(f"min_component_ml must be >= 0, got {min_component_ml!r}")


def remove_small_components(
    mask: Any, voxel_volume_ml: float, min_component_ml: float, connectivity: int = 1
) -> np.ndarray:
    """Drop connected components smaller than ``min_component_ml`` from a binary mask.

    Parameters
    ----------
    mask
        Boolean (or 0/1) array, e.g. ``(X, Y, Z)``.
    voxel_volume_ml
        Volume of one voxel in mL (see :func:`voxel_volume_ml`).
    min_component_ml
        Components with a volume below this are removed; a component of exactly this volume is
        kept. 0 keeps everything.
    connectivity
        1 = face neighbours (6-connectivity in 3D) ... ``mask.ndim`` = all neighbours (26 in 3D).

    Returns
    -------
    numpy.ndarray
        Boolean mask of the kept components.
    """
    from ichct.transforms.components import large_component_mask

    _check_volume_args(float(voxel_volume_ml), float(min_component_ml))
    return large_component_mask(np.asarray(mask), float(voxel_volume_ml), float(min_component_ml), connectivity)


def _as_label_map(segmentation: Any, num_classes: int | None) -> tuple[np.ndarray, int]:
    """Label map ``(X, Y, Z)`` and class count from a label map or a ``(C, X, Y, Z)`` probability map."""
    arr = np.asarray(segmentation)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"segmentation must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError("segmentation contains NaN values")
    if arr.ndim == 4 and arr.shape[0] >= 2:  # per-class probabilities (or logits)
        c = arr.shape[0]
        if num_classes is not None and num_classes != c:
            raise ValueError(f"probability map has {c} channels but num_classes={num_classes}")
        if c not in (2, len(LABEL_NAMES)):
            raise ValueError(f"probability map must have 2 or {len(LABEL_NAMES)} channels, got {c}")
        return np.argmax(arr, axis=0), c
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(
            f"segmentation must be a label map (X, Y, Z) / (1, X, Y, Z) or a probability map "
            f"(C, X, Y, Z), got shape {arr.shape}"
        )
    if num_classes is None:
        raise ValueError(
            "num_classes is required for a label map (2: background/blood, 6: background + subtypes); "
            "label 1 means 'any blood' in one and 'epidural' in the other"
        )
    if num_classes not in (2, len(LABEL_NAMES)):
        raise ValueError(f"num_classes must be 2 or {len(LABEL_NAMES)}, got {num_classes}")
    if arr.size and (np.any(arr != np.round(arr)) or arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"label map values must be integers in [0, {num_classes - 1}]")
    return arr.astype(np.int64), num_classes


def segmentation_volumes(
    segmentation: Any,
    voxel_volume_ml: float,
    min_component_ml: float = 0.0,
    num_classes: int | None = None,
    connectivity: int = 1,
) -> dict[str, float]:
    """Blood volume in mL per subtype and for any blood, after removing small components.

    Parameters
    ----------
    segmentation
        A label map ``(X, Y, Z)`` or ``(1, X, Y, Z)`` (0 = background; binary: 1 = blood;
        6 classes: label i = ``LABEL_NAMES[i]``), or a per-class probability/logit map
        ``(C, X, Y, Z)`` with C = 2 or 6, turned into labels by argmax.
    voxel_volume_ml
        Volume of one voxel in mL.
    min_component_ml
        Components below this volume are discarded (see :func:`remove_small_components`).
    num_classes
        2 or 6; required for label maps, checked against C for probability maps.
    connectivity
        Neighbourhood of the connected components (1: faces ... 3: faces, edges and corners).

    Returns
    -------
    dict
        ``{"any": mL}`` for a binary segmentation; ``{subtype: mL}`` for all :data:`LABEL_NAMES`
        for a 6-class one. ``"any"`` uses the components of the union of all blood labels.
    """
    labels, c = _as_label_map(segmentation, num_classes)
    _check_volume_args(float(voxel_volume_ml), float(min_component_ml))

    def volume(mask: np.ndarray) -> float:
        kept = remove_small_components(mask, voxel_volume_ml, min_component_ml, connectivity)
        return float(np.count_nonzero(kept) * voxel_volume_ml)

    out = {"any": volume(labels > 0)}
    if c == len(LABEL_NAMES):
        for i, name in enumerate(LABEL_NAMES[1:], start=1):
            out[name] = volume(labels == i)
    return out
