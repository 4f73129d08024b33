"""Where the voxels are: head pose, slice stacks (straight or gantry-tilted) and voxel grids.

World coordinates are DICOM patient coordinates (LPS, mm). The phantom is defined in *head
coordinates*: LPS-aligned axes (x left, y posterior, z superior) centred in the cranial cavity;
a :class:`Pose` maps them to the world (``world = R @ head + centre``).

A :class:`Grid` is any affine voxel grid; arrays on it are indexed ``[k, j, i]`` (slice, row,
column: C-order planes as stored in DICOM). Its ``affine`` maps ``(i, j, k)`` to world LPS like
the affines of :mod:`ichct.transforms.dicom.geometry`.

:func:`stack_layout` places a slice stack: the DICOM strings of ImagePositionPatient and
ImageOrientationPatient, the acquired grid the pixels are rendered on, and the grid that
``read_dicom_series`` will return for it (tilt-corrected when the stack is sheared), computed from
the same rounded header values the reader sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ichct.transforms.dicom.geometry import geometry_from_positions


def format_ds(value: float, decimals: int = 6) -> str:
    """A Decimal String (<= 16 characters) for ``value``, without trailing zeros."""
    for d in range(decimals, -1, -1):
        text = f"{value:.{d}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text in ("-0", ""):
            text = "0"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value} cannot be written as a DICOM DS")


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Rotation about head z (yaw), then x (pitch, chin down positive), then y (roll)."""
    cy, sy = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    cp, sp = np.cos(np.radians(pitch_deg)), np.sin(np.radians(pitch_deg))
    cr, sr = np.cos(np.radians(roll_deg)), np.sin(np.radians(roll_deg))
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
    rx = np.array([[1.0, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cr, 0, sr], [0, 1.0, 0], [-sr, 0, cr]])
    return ry @ rx @ rz


@dataclass
class Pose:
    """Head placement: ``world = rotation @ head + centre`` (mm, LPS)."""

    rotation: np.ndarray
    centre: np.ndarray

    def to_world(self, head_points: np.ndarray) -> np.ndarray:
        return np.asarray(head_points, dtype=float) @ self.rotation.T + self.centre

    def to_head(self, world_points: np.ndarray) -> np.ndarray:
        return (np.asarray(world_points, dtype=float) - self.centre) @ self.rotation


@dataclass
class Grid:
    """An affine voxel grid: ``shape`` = (ni, nj, nk), ``affine`` maps (i, j, k, 1) to world LPS."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def inverse(self) -> np.ndarray:
        """World -> (i, j, k) affine (cached)."""
        inv = self.__dict__.get("_inverse")
        if inv is None:
            inv = np.linalg.inv(self.affine)
            self.__dict__["_inverse"] = inv
        return inv

    @property
    def array_shape(self) -> tuple[int, int, int]:
        """Shape of arrays on this grid, ``(nk, nj, ni)``."""
        ni, nj, nk = self.shape
        return nk, nj, ni

    def head_affine(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """``(M, t)`` with head coordinates = ``M @ (i, j, k) + t``."""
        m = pose.rotation.T @ self.affine[:3, :3]
        t = pose.rotation.T @ (self.affine[:3, 3] - pose.centre)
        return m, t

    def head_coords(self, pose: Pose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Head coordinates of every voxel centre as three float32 arrays ``[k, j, i]``."""
        m, t = self.head_affine(pose)
        ni, nj, nk = self.shape
        ii = np.arange(ni, dtype=np.float64)
        jj = np.arange(nj, dtype=np.float64)
        kk = np.arange(nk, dtype=np.float64)
        out = []
        for row in range(3):
            a = (m[row, 0] * ii + t[row]).astype(np.float32)[None, None, :]
            b = (m[row, 1] * jj).astype(np.float32)[None, :, None]
            c = (m[row, 2] * kk).astype(np.float32)[:, None, None]
            arr = np.empty((nk, nj, ni), dtype=np.float32)
            np.add(a, b, out=arr)
            arr += c
            out.append(arr)
        return out[0], out[1], out[2]

    def world_coord(self, axis: int, block: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """One world coordinate (0 x, 1 y, 2 z) of the voxel centres, on ``block`` or everywhere."""
        ni, nj, nk = self.shape
        sk, sj, si = block if block is not None else (slice(0, nk), slice(0, nj), slice(0, ni))
        a = self.affine[axis]
        ii = (a[0] * np.arange(si.start, si.stop) + a[3]).astype(np.float32)[None, None, :]
        jj = (a[1] * np.arange(sj.start, sj.stop)).astype(np.float32)[None, :, None]
        kk = (a[2] * np.arange(sk.start, sk.stop)).astype(np.float32)[:, None, None]
        return ii + jj + kk

    def sub(self, block: tuple[slice, slice, slice]) -> "Grid":
        """The part of this grid under array slices ``[k, j, i]`` (same voxels, shifted origin)."""
        sk, sj, si = block
        shift = np.eye(4)
        shift[:3, 3] = (si.start, sj.start, sk.start)
        return Grid(shape=(si.stop - si.start, sj.stop - sj.start, sk.stop - sk.start), affine=self.affine @ shift)

    def box_block(self, pose: Pose, lo, hi, k0: int, k1: int, margin: int = 2) -> tuple[slice, slice, slice] | None:
        """Array slices covering slices ``k0:k1`` where they meet a head-coordinate box ``lo``-``hi``."""
        lo = np.asarray(lo, dtype=float)
        hi = np.asarray(hi, dtype=float)
        n = 24
        t = np.linspace(0.0, 1.0, n)
        pts = []
        for axis in range(3):  # points on the six faces of the box
            a, b = [ax for ax in range(3) if ax != axis]
            ua, ub = np.meshgrid(lo[a] + t * (hi[a] - lo[a]), lo[b] + t * (hi[b] - lo[b]), indexing="ij")
            for face in (lo[axis], hi[axis]):
                p = np.empty((n * n, 3))
                p[:, axis] = face
                p[:, a] = ua.ravel()
                p[:, b] = ub.ravel()
                pts.append(p)
        world = pose.to_world(np.concatenate(pts))
        inv = np.linalg.inv(self.affine)
        idx = world @ inv[:3, :3].T + inv[:3, 3]
        step = max(1.0, float(np.max(np.abs(hi - lo))) / (n - 1) * float(np.max(np.linalg.norm(inv[:3, :3], axis=1))))
        sel = (idx[:, 2] >= k0 - 0.5 - step) & (idx[:, 2] <= k1 - 0.5 + step)
        if not sel.any():  # a slab that meets the box always cuts some of its faces
            return None
        pad = margin + step
        i0 = max(0, int(np.floor(idx[sel, 0].min() - pad)))
        i1 = min(self.shape[0], int(np.ceil(idx[sel, 0].max() + pad)) + 1)
        j0 = max(0, int(np.floor(idx[sel, 1].min() - pad)))
        j1 = min(self.shape[1], int(np.ceil(idx[sel, 1].max() + pad)) + 1)
        if i1 <= i0 or j1 <= j0:
            return None
        return slice(k0, k1), slice(j0, j1), slice(i0, i1)

    def block(self, pose: Pose, centre_head, radius: float) -> tuple[slice, slice, slice] | None:
        """Array slices ``[k, j, i]`` covering a head-coordinate sphere; None when it misses the grid."""
        world = pose.to_world(np.asarray(centre_head, dtype=float))
        inv = self.inverse
        centre_idx = inv[:3, :3] @ world + inv[:3, 3]
        extent = radius * np.linalg.norm(inv[:3, :3], axis=1)
        lo = np.floor(centre_idx - extent).astype(int)
        hi = np.ceil(centre_idx + extent).astype(int) + 1
        out = []
        for axis in (2, 1, 0):
            a, b = max(0, lo[axis]), min(self.shape[axis], hi[axis])
            if b <= a:
                return None
            out.append(slice(int(a), int(b)))
        return out[0], out[1], out[2]


@dataclass
class PartialVolume:
    """Voxel footprint used for partial-volume edges: in-plane pixel size and slice thickness (mm).

    ``slice_dir_head`` is the slice normal in head coordinates. A surface whose unit normal makes
    ``cos = n . slice_dir`` with it gets an edge ramp of width ``sqrt(px^2 + (T^2 - px^2) cos^2)``.
    """

    pixel_mm: float
    thickness_mm: float
    slice_dir_head: np.ndarray

    @property
    def iso_width(self) -> float:
        """Ramp width for edges of unknown orientation (mean of cos^2 over the sphere is 1/3)."""
        return float(np.sqrt(self.pixel_mm**2 + (self.thickness_mm**2 - self.pixel_mm**2) / 3.0))

    def width(self, cos_normal: np.ndarray) -> np.ndarray:
        px2 = np.float32(self.pixel_mm**2)
        extra = np.float32(self.thickness_mm**2 - self.pixel_mm**2)
        w = cos_normal * cos_normal
        w *= extra
        w += px2
        return np.sqrt(w, out=w)


@dataclass
class StackLayout:
    """A slice stack as written to DICOM and the grids that go with it.

    ``ipp_text[k]`` / ``iop_text`` are the exact header strings; slice ``k`` is the k-th slice
    along the slice normal (the reader's order), and ``convert_grid`` slice ``k`` lies in the plane
    of acquired slice ``k``.
    """

    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing), as parsed from the DS text
    pixel_spacing_text: tuple[str, str]
    iop: np.ndarray  # 6 floats parsed from iop_text
    iop_text: tuple[str, ...]
    ipp: np.ndarray  # (n, 3) floats parsed from ipp_text
    ipp_text: list[tuple[str, str, str]]
    thickness_mm: float
    tilt_deg: float
    acquired_grid: Grid
    convert_grid: Grid

    @property
    def n_slices(self) -> int:
        return len(self.ipp_text)

    @property
    def sheared(self) -> bool:
        return not np.allclose(self.acquired_grid.affine, self.convert_grid.affine, atol=1e-6)

    @property
    def normal(self) -> np.ndarray:
        return self.convert_grid.affine[:3, 2] / np.linalg.norm(self.convert_grid.affine[:3, 2])

    def slice_location(self, k: int) -> float:
        """SliceLocation: position along the slice normal (mm)."""
        return float(self.ipp[k] @ self.normal)


def reader_grid(iop: np.ndarray, ipp: np.ndarray, pixel_spacing: tuple[float, float], rows: int, columns: int) -> Grid:
    """The grid ``read_dicom_series`` builds for a uniform single-orientation stack (tilt corrected).

    Computed by the reader's own geometry code, so labels always lie on the converted grid.
    """
    geometry = geometry_from_positions(iop, ipp, pixel_spacing)
    return Grid(shape=(columns, rows, geometry.n_slices), affine=geometry.affine_lps())


def stack_layout(
    matrix: int,
    n_slices: int,
    fov_mm: float,
    thickness_mm: float,
    tilt_deg: float,
    mid_centre_world: np.ndarray,
) -> StackLayout:
    """Place an axial stack of ``n_slices`` contiguous slices.

    The acquisition plane is tilted about the patient's left-right axis by ``tilt_deg`` (anterior
    edge up for positive values); the table moves along world z by ``thickness / cos(tilt)`` per
    slice, so slices are ``thickness`` apart along their normal. ``mid_centre_world`` is the centre
    of the field of view of the middle slice.
    """
    theta = np.radians(tilt_deg)
    spacing = fov_mm / matrix
    spacing_text = format_ds(spacing, 6)
    ps = float(spacing_text)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(theta), -np.sin(theta)])
    iop_text = tuple(format_ds(v, 8) for v in (*row, *col))
    iop = np.array([float(v) for v in iop_text])
    table_step = thickness_mm / np.cos(theta)
    half = (matrix - 1) / 2.0 * ps
    ipp_text: list[tuple[str, str, str]] = []
    for k in range(n_slices):
        centre = np.asarray(mid_centre_world, dtype=float) + (k - (n_slices - 1) / 2.0) * table_step * np.array([0.0, 0.0, 1.0])
        corner = centre - half * iop[:3] - half * iop[3:]
        ipp_text.append(tuple(format_ds(v, 4) for v in corner))  # type: ignore[arg-type]
    ipp = np.array([[float(v) for v in p] for p in ipp_text])
    # acquired grid: per-slice origin IPP_k, i.e. a (possibly sheared) affine
    acq = np.eye(4)
    acq[:3, 0] = iop[:3] * ps
    acq[:3, 1] = iop[3:] * ps
    acq[:3, 2] = (ipp[-1] - ipp[0]) / max(n_slices - 1, 1)
    acq[:3, 3] = ipp[0]
    return StackLayout(
        rows=matrix,
        columns=matrix,
        pixel_spacing=(ps, ps),
        pixel_spacing_text=(spacing_text, spacing_text),
        iop=iop,
        iop_text=iop_text,
        ipp=ipp,
        ipp_text=ipp_text,
        thickness_mm=float(thickness_mm),
        tilt_deg=float(tilt_deg),
        acquired_grid=Grid(shape=(matrix, matrix, n_slices), affine=acq),
        convert_grid=reader_grid(iop, ipp, (ps, ps), matrix, matrix),
    )
