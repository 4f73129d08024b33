"""Lateral scout (localizer) image: analytic X-ray projection of the head through ellipsoids."""

from __future__ import annotations

import numpy as np

from .anatomy import HeadParams
from .grid import Pose, format_ds

MU_WATER = 0.019  # 1/mm


def _chord(o: np.ndarray, d: np.ndarray, centre, semi) -> np.ndarray:
    """Length of the ray ``o + t d`` (|d| = 1) inside an axis-aligned ellipsoid."""
    s = np.asarray(semi, dtype=float)
    q = (o - np.asarray(centre, dtype=float)) / s
    dd = d / s
    a = float(dd @ dd)
    b = q @ dd
    c = np.einsum("...i,...i->...", q, q) - 1.0
    disc = np.maximum(b * b - a * c, 0.0)
    return 2.0 * np.sqrt(disc) / a


def scout_geometry(matrix: int, centre_world: np.ndarray, fov_mm: float = 320.0) -> dict:
    """Header geometry of a lateral scout centred on ``centre_world`` (DS strings included)."""
    spacing = fov_mm / matrix
    row = np.array([0.0, 1.0, 0.0])  # columns run anterior -> posterior
    col = np.array([0.0, 0.0, -1.0])  # rows run superior -> inferior
    half = (matrix - 1) / 2 * spacing
    origin = np.array([0.0, centre_world[1], centre_world[2]]) - half * row - half * col
    return {
        "spacing": spacing,
        "spacing_text": format_ds(spacing, 6),
        "iop_text": tuple(format_ds(v, 8) for v in (*row, *col)),
        "ipp_text": tuple(format_ds(v, 4) for v in origin),
        "origin": origin,
        "row": row,
        "col": col,
    }


def scout_image(head: HeadParams, pose: Pose, matrix: int, geometry: dict, gen: np.random.Generator) -> np.ndarray:
    """Projection values (uint16, 0-4095; bone bright) of the head seen from the side."""
    sp = float(geometry["spacing_text"])
    r = np.arange(matrix)
    c = np.arange(matrix)
    world = (geometry["origin"][None, None, :] + c[None, :, None] * sp * geometry["row"] + r[:, None, None] * sp * geometry["col"])
    o = pose.to_head(world.reshape(-1, 3)).reshape(matrix, matrix, 3)
    d = pose.rotation.T @ np.array([1.0, 0.0, 0.0])
    h = head
    b = (h.b_front + h.b_back) / 2
    out = h.skull_mm + h.scalp_mm
    total = np.zeros((matrix, matrix))
    total += 1.04 * _chord(o, d, (0, (h.b_back - h.b_front) / 2, 0), (h.a + out, b + out, h.c_up + out))
    total += 1.04 * _chord(o, d, (0.0, -6.0, h.z_mf - 22.0), (h.a + 12.0, h.b_front + 14.0, 45.0))
    total += 1.04 * _chord(o, d, (0.0, 12.0, h.z_mf - 110.0), (52.0, 58.0, 80.0))  # neck
    skull = (_chord(o, d, (0, (h.b_back - h.b_front) / 2, 0), (h.a + h.skull_mm, b + h.skull_mm, h.c_up + h.skull_mm))
             - _chord(o, d, (0, (h.b_back - h.b_front) / 2, 0), (h.a, b, h.c_up)))
    total += 1.6 * np.maximum(skull, 0.0)
    total += 0.5 * _chord(o, d, (0.0, -h.b_front + 12.0, h.z_af - 38.0), (48.0, 26.0, 30.0))  # facial bones
    total += 1.4 * _chord(o, d, (0.0, 4.0, h.z_mf - 3.0), (50.0, 22.0, 7.0))  # skull base
    total += 1.5 * _chord(o, d, (0.0, 26.0, h.z_pf - 60.0), (10.0, 12.0, 55.0))  # cervical spine
    for side in (-1, 1):
        total -= 1.0 * _chord(o, d, (side * 22.0, -h.b_front + 24.0, h.z_af - 42.0), (12.0, 15.0, 15.0))  # maxillary sinuses
    total -= 1.0 * _chord(o, d, (0.0, -8.0, h.z_mf - 34.0), (12.0, 7.0, 12.0))  # nasopharynx
    line = np.maximum(total, 0.0) * MU_WATER
    value = 4095.0 * (1.0 - np.exp(-line / 2.5))
    value += gen.normal(0.0, 12.0, value.shape)
    return np.clip(np.rint(value), 0, 4095).astype(np.uint16)
