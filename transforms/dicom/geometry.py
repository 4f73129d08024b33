"""Slice-stack geometry: order, spacing, gaps, duplicates and gantry-tilt shear.

Everything here is computed from each slice's own ImagePositionPatient projected on the slice
normal (from ImageOrientationPatient), never from InstanceNumber or file names. Coordinates are
DICOM patient coordinates (LPS, millimetres).

Voxel index convention (the same as NIfTI, ITK and MONAI): ``volume[i, j, k]`` is column ``i``,
row ``j`` of slice ``k``, so the affine's first column is the row direction cosine times the column
spacing, the second the column direction cosine times the row spacing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .headers import SliceHeader

DUPLICATE_TOLERANCE_MM = 0.01
SHEAR_TOLERANCE_FRACTION = 0.05  # of the in-plane pixel spacing (rounding of positions stays below)
UNIFORM_TOLERANCE_FRACTION = 0.05  # of the slice spacing, allowed residual from a uniform grid
ZONE_MIN_STEPS = 3  # a run of this many equal steps is a spacing zone of its own (e.g. posterior fossa)
ZONE_MIN_EXTENT_FRACTION = 0.15  # ... when it covers at least this share of the stack


@dataclass
class StackGeometry:
    """Where every slice of a stack sits, and what it takes to put them on a regular grid.

    Attributes
    ----------
    order
        Indices into the header list, sorted along the slice normal (duplicates removed).
    positions_mm
        Position of each ordered slice along the normal (mm).
    inplane_offsets_mm
        In-plane offset (along row cosine, along column cosine) of each ordered slice from the
        first one: zero for a straight stack, growing linearly with a gantry tilt.
    """

    row_cosine: np.ndarray
    col_cosine: np.ndarray
    normal: np.ndarray
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing), DICOM order
    origin_mm: np.ndarray
    order: list[int]
    positions_mm: np.ndarray
    inplane_offsets_mm: np.ndarray
    slice_spacing_mm: float
    grid_spacing_mm: float = 0.0
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[dict[str, float]] = field(default_factory=list)
    uniform: bool = True
    sheared: bool = False
    tilt_deg: float = 0.0

    @property
    def n_slices(self) -> int:
        return len(self.order)

    @property
    def grid_step_mm(self) -> float:
        """Slice step of the uniform output grid.

        For an uneven stack this is :attr:`grid_spacing_mm` (the finest spacing zone, else the
        median spacing) adjusted so that a whole number of steps spans first to last slice exactly:
        the grid neither extrapolates past the last slice nor drops the end of the stack.
        """
        if self.uniform or self.n_slices < 2:
            return self.uniform_step_mm
        extent = float(self.positions_mm[-1] - self.positions_mm[0])
        n_steps = max(1, int(round(extent / (self.grid_spacing_mm or self.slice_spacing_mm))))
        return extent / n_steps

    def grid_positions_mm(self) -> np.ndarray:
        """Positions along the normal of the uniform grid from the first to the last slice."""
        if self.uniform:
            return self.positions_mm.copy()
        extent = float(self.positions_mm[-1] - self.positions_mm[0])
        n_steps = int(round(extent / self.grid_step_mm))
        return self.positions_mm[0] + np.arange(n_steps + 1) * self.grid_step_mm

    @property
    def uniform_step_mm(self) -> float:
        """Distance between slices along the normal: exact for a uniform stack, else the median."""
        if self.uniform and self.n_slices > 1:
            return float((self.positions_mm[-1] - self.positions_mm[0]) / (self.n_slices - 1))
        return float(self.slice_spacing_mm)

    @property
    def shear_per_mm(self) -> np.ndarray:
        """In-plane offset (row, column cosine) per mm along the normal: tan(tilt) components."""
        extent = float(self.positions_mm[-1] - self.positions_mm[0]) if self.n_slices > 1 else 0.0
        if not self.sheared or extent <= 0:
            return np.zeros(2)
        return self.inplane_offsets_mm[-1] / extent

    def affine_lps(self, sheared: bool = False, step_mm: float | None = None) -> np.ndarray:
        """Voxel-to-world affine (LPS) of the stack.

        Parameters
        ----------
        sheared
            False: the regular (tilt-corrected) grid with orthogonal axes. True: the grid as
            acquired, whose slice axis follows the tilted slice-to-slice step.
        step_mm
            Slice distance along the normal (default :attr:`uniform_step_mm`).
        """
        row_sp, col_sp = self.pixel_spacing_mm
        step = self.uniform_step_mm if step_mm is None else float(step_mm)
        affine = np.eye(4)
        affine[:3, 0] = self.row_cosine * col_sp
        affine[:3, 1] = self.col_cosine * row_sp
        slice_axis = self.normal.copy()
        if sheared:
            shear = self.shear_per_mm
            slice_axis = slice_axis + self.row_cosine * shear[0] + self.col_cosine * shear[1]
        affine[:3, 2] = slice_axis * step
        affine[:3, 3] = self.origin_mm
        return affine


def stack_geometry(headers: list[SliceHeader]) -> StackGeometry:
    """Sort a single-orientation group of slices and describe its geometry.

    Parameters
    ----------
    headers
        Frames of one series and one orientation (all with position, orientation and spacing).
        Slices at the same position (within 0.01 mm) are listed in ``duplicates`` as
        ``(kept, other)`` index pairs; the caller decides what to do with their pixels.

    Examples
    --------
    Needs DICOM headers, so not run here::

        group = choose_default(group_series(scan_folder("/data/head_ct/study_1").headers))
        geometry = stack_geometry(group.headers)
        geometry.n_slices, geometry.uniform_step_mm, geometry.affine_lps()
    """
    first = headers[0]
    assert first.pixel_spacing_mm is not None and first.image_orientation is not None
    return geometry_from_positions(
        first.image_orientation,
        [h.image_position_mm for h in headers],
        first.pixel_spacing_mm,
        fallback_spacing_mm=float(first.slice_thickness_mm or 1.0),
    )


def geometry_from_positions(
    image_orientation: "np.ndarray | tuple[float, ...]",
    image_positions_mm: "np.ndarray | list",
    pixel_spacing_mm: "tuple[float, float] | np.ndarray",
    fallback_spacing_mm: float = 1.0,
) -> StackGeometry:
    """Stack geometry from raw DICOM values: ImageOrientationPatient (6), one ImagePositionPatient
    per slice (N x 3, any order) and PixelSpacing (row, column); see :func:`stack_geometry`.

    Writers of synthetic data use this too, so that their label grids are the reader's grid.
    """
    iop = np.asarray(image_orientation, dtype=float)
    row = iop[:3] / np.linalg.norm(iop[:3])
    col = iop[3:] / np.linalg.norm(iop[3:])
    # Re-orthogonalise: some scanners round cosines to 5-6 decimals.
    col = col - row * float(row @ col)
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    ipp = np.asarray(image_positions_mm, dtype=float)
    along = ipp @ normal
    order = list(np.argsort(along, kind="stable"))

    duplicates: list[tuple[int, int]] = []
    kept: list[int] = []
    for idx in order:
        if kept and abs(along[idx] - along[kept[-1]]) < DUPLICATE_TOLERANCE_MM:
            duplicates.append((int(kept[-1]), int(idx)))
            continue
        kept.append(int(idx))

    positions = along[kept]
    origin = ipp[kept[0]]
    rel = ipp[kept] - origin
    offsets = np.stack([rel @ row, rel @ col], axis=1)
    pixel_spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))

    diffs = np.diff(positions)
    spacing = float(np.median(diffs)) if diffs.size else float(fallback_spacing_mm)
    uniform = True
    gaps: list[dict[str, float]] = []
    if diffs.size:
        n = positions.size
        ideal = positions[0] + np.arange(n) * (positions[-1] - positions[0]) / max(n - 1, 1)
        residual = float(np.max(np.abs(positions - ideal)))
        uniform = residual <= UNIFORM_TOLERANCE_FRACTION * spacing and bool(
            np.all(np.abs(diffs - spacing) <= max(UNIFORM_TOLERANCE_FRACTION * spacing, 1e-3))
        )
        gaps = _find_gaps(diffs, positions, spacing)
    grid_spacing = spacing if uniform else _finest_zone_spacing(diffs, spacing)

    shear_tol = SHEAR_TOLERANCE_FRACTION * min(pixel_spacing)
    sheared = bool(np.max(np.abs(offsets)) > shear_tol) if offsets.size else False
    tilt = 0.0
    if sheared and positions.size > 1:
        dz = positions - positions[0]
        denom = float(dz @ dz)
        slope_row = float(offsets[:, 0] @ dz) / denom if denom > 0 else 0.0
        slope_col = float(offsets[:, 1] @ dz) / denom if denom > 0 else 0.0
        magnitude = np.degrees(np.arctan(np.hypot(slope_row, slope_col)))
        sign = np.sign(slope_col) if abs(slope_col) >= abs(slope_row) else np.sign(slope_row)
        tilt = float(magnitude * (sign or 1.0))

    return StackGeometry(
        row_cosine=row,
        col_cosine=col,
        normal=normal,
        pixel_spacing_mm=pixel_spacing,
        origin_mm=origin,
        order=kept,
        positions_mm=positions,
        inplane_offsets_mm=offsets,
        slice_spacing_mm=spacing,
        grid_spacing_mm=grid_spacing,
        duplicates=duplicates,
        gaps=gaps,
        uniform=uniform,
        sheared=sheared,
        tilt_deg=tilt,
    )


def _find_gaps(diffs: np.ndarray, positions: np.ndarray, median_spacing: float) -> list[dict[str, float]]:
    """Steps longer than 1.5 x the local spacing (the larger of the neighbouring steps).

    Judging a step against its neighbours rather than the median keeps a protocol change (2.5 mm
    posterior fossa, then 5 mm cerebrum, in one series) from being reported as missing slices.
    """
    gaps: list[dict[str, float]] = []
    for k, d in enumerate(diffs):
        neighbours = [float(diffs[j]) for j in (k - 1, k + 1) if 0 <= j < diffs.size]
        local = max(neighbours) if neighbours else median_spacing
        if d > 1.5 * local:
            gaps.append({
                "after_slice": int(k),
                "from_mm": float(positions[k] - positions[0]),
                "to_mm": float(positions[k + 1] - positions[0]),
                "distance_mm": float(d),
                "missing_slices": int(round(d / local)) - 1,
            })
    return gaps


def _finest_zone_spacing(diffs: np.ndarray, median_spacing: float) -> float:
    """Spacing of the finest zone of a stack acquired with several slice spacings, else the median.

    A zone is a run of at least :data:`ZONE_MIN_STEPS` equal steps (within 5 %) that covers at
    least :data:`ZONE_MIN_EXTENT_FRACTION` of the stack: resampling onto its spacing keeps the
    thin slices' detail (the thick part is interpolated). Isolated short or long steps (a
    displaced slice, a gap) never set the grid.
    """
    extent = float(diffs.sum())
    zones: list[float] = []
    start = 0
    for k in range(1, diffs.size + 1):
        if k < diffs.size and abs(diffs[k] - diffs[start]) <= UNIFORM_TOLERANCE_FRACTION * diffs[start]:
            continue
        run = diffs[start:k]
        if run.size >= ZONE_MIN_STEPS and extent > 0 and run.sum() >= ZONE_MIN_EXTENT_FRACTION * extent:
            zones.append(float(np.median(run)))
        start = k
    return min(zones) if zones else median_spacing


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert an LPS voxel-to-world affine to RAS (flip the x and y world axes).

    Examples
    --------
    >>> import numpy as np
    >>> from ichct.transforms.dicom import lps_to_ras
    >>> lps_to_ras(np.diag([0.5, 0.5, 5.0, 1.0])).diagonal().tolist()
    [-0.5, -0.5, 5.0, 1.0]
    """
    return LPS_TO_RAS @ affine_lps
