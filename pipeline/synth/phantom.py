"""Render a patient's head (anatomy, mimics, lesions) on a voxel grid: noiseless HU and labels.

The grid is processed a few slices at a time, each chunk cropped in-plane to the head's bounding
box: arrays stay cache-sized and air is never evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import HeadParams, compute_fields, paint_anatomy
from .grid import Grid, PartialVolume, Pose
from .lesions import Lesion, mass_effect, midline_shift, render_lesions
from .mimics import Mimics, paint_mimics
from .shapes import F32

CHUNK_SLICES = 4
AIR_HU = -1000.0


@dataclass
class Rendered:
    """Arrays ``[k, j, i]`` on the grid.

    ``hu``: noiseless HU (None in label-only mode); ``label``: uint8 voxel labels; ``depth``:
    distance below the skin (mm, 0 outside the head) and ``head_z``: head z of each voxel, both
    used to modulate the noise.
    """

    hu: np.ndarray | None
    label: np.ndarray
    depth: np.ndarray | None
    head_z: np.ndarray | None


def head_box(head: HeadParams) -> tuple[np.ndarray, np.ndarray]:
    """A head-coordinate box that holds everything the phantom paints (ears and face included)."""
    lo = np.array([-(head.a + 30.0), -(head.b_front + 24.0), head.z_mf - 80.0])
    hi = np.array([head.a + 30.0, head.b_back + head.skull_mm + head.scalp_mm + 6.0, head.top_z + 4.0])
    return lo, hi


def render(head: HeadParams, mimics: Mimics, lesions: list[Lesion], pose: Pose, grid: Grid, pv: PartialVolume,
           with_hu: bool = True) -> Rendered:
    """Evaluate the phantom at the voxel centres of ``grid``.

    Labels are a pure function of world position (lesion regions intersected with their
    compartments, evaluated at the voxel centre), so the same patient rendered on two grids gives
    labels that agree wherever the grids' voxel centres coincide.
    """
    shape = grid.array_shape
    hu = np.full(shape, F32(AIR_HU), dtype=np.float32) if with_hu else None
    depth = np.zeros(shape, dtype=np.float32) if with_hu else None
    head_z = np.zeros(shape, dtype=np.float32) if with_hu else None
    label = np.zeros(shape, dtype=np.uint8)
    shift = midline_shift(lesions)
    lo, hi = head_box(head)
    for k0 in range(0, shape[0], CHUNK_SLICES):
        k1 = min(shape[0], k0 + CHUNK_SLICES)
        bb = grid.box_block(pose, lo, hi, k0, k1)
        if bb is None:
            continue
        sub = grid.sub(bb)
        x, y, z = sub.head_coords(pose)

        def block(centre, radius, _sub=sub):
            return _sub.block(pose, centre, radius)

        mass = mass_effect(lesions, x, y, z, block, shift)
        fields = compute_fields(head, x, y, z, pv, mass, block)
        vol = None
        if with_hu:
            vol = paint_anatomy(head, fields, pv, block)
            paint_mimics(mimics, head, fields, vol, block, pv.iso_width)
        lab = np.zeros(x.shape, dtype=np.uint8)
        render_lesions(lesions, head, fields, vol, lab, sub, pose, block, pv.iso_width)
        label[bb] = lab
        if with_hu:
            hu[bb] = vol
            depth[bb] = np.maximum(-fields.head, F32(0.0))
            head_z[bb] = z
    return Rendered(hu=hu, label=label, depth=depth, head_z=head_z)
