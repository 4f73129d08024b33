"""Write small, real CT DICOM data sets of a phantom defined in WORLD coordinates (LPS, mm).

Because the phantom is a function of world position, the truth for any output grid is the phantom
evaluated at the world position of each output voxel: for a NIfTI/MONAI RAS affine,
``world_lps = diag(-1, -1, 1) @ (affine_ras @ [i, j, k, 1])`` (see :func:`voxel_world_lps`).

What can be written (all with pydicom, plus python-gdcm for JPEG Lossless SV1):

* CT Image Storage single-frame series of any slice orientation and any per-slice position
  (gantry tilt as tilted IOP with z-stepped IPP or as axial IOP with y-shifted IPP, gaps, uneven
  spacing, overlapping stacks, duplicates), per-slice RescaleSlope/RescaleIntercept, signed or
  unsigned pixels, BitsStored < BitsAllocated (optionally with junk in the unused high bits, or a
  signed value that is not sign-extended), PixelPaddingValue outside a circular field of view;
* transfer syntaxes: explicit/implicit VR little endian, deflated explicit VR LE, RLE Lossless,
  JPEG 2000 Lossless (pylibjpeg-openjpeg) and JPEG Lossless SV1 (python-gdcm);
* file layouts: random names without extension, nested subfolders, DICOMDIR (pydicom FileSet);
* other objects a real study folder holds: localizers, a secondary-capture dose report, derived
  reformats, MR series, Enhanced CT Image Storage (multi-frame), non-DICOM and truncated files.

The fake patient identity (:data:`FAKE_PATIENT_NAME`, :data:`FAKE_PATIENT_ID`,
:data:`FAKE_BIRTH_DATE`) is written into every file so that tests can check it never leaks.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

FAKE_PATIENT_NAME = "Zebulonqx^Testpatientin"
FAKE_PATIENT_ID = "ZQXPID4711"
FAKE_BIRTH_DATE = "19230405"
#: Strings that must never appear in any ingest output (sidecar, stdout, stderr, logs).
PHI_STRINGS = ("Zebulonqx", "Testpatientin", FAKE_PATIENT_ID, FAKE_BIRTH_DATE, "1923-04-05")

#: Short names for the transfer syntaxes the factory can write.
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "j2k": JPEG2000Lossless,
    "jpegls1": JPEGLosslessSV1,  # JPEG Lossless, Non-Hierarchical, First-Order Prediction (SV1)
}

AIR_HU = -1000.0
# Decimals written for ImagePositionPatient / ImageOrientationPatient (DS values are at most 16
# characters). Geometry is rounded to these BEFORE the phantom is sampled, so the pixel values
# belong exactly to the positions written in the file.
IPP_DECIMALS = 6
IOP_DECIMALS = 10
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --------------------------------------------------------------------------------------------
# Phantom
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phantom:
    """A head-like phantom in LPS world coordinates (mm); HU = :meth:`hu` (points).

    An ellipsoidal skull shell (1000 HU) around brain (35 HU) with an ellipsoidal hematoma
    (65 HU), air (-1000 HU) outside, and small bright Gaussian "marker" blobs (peak +1500 HU over
    brain) at known world positions. Nothing in the phantom takes a value between -1000 and 35 HU
    (markers only add), which lets tests use such values as recognisable padding.
    """

    center: tuple[float, float, float] = (4.0, -12.0, 30.0)
    outer_semi_axes: tuple[float, float, float] = (72.0, 88.0, 64.0)
    skull_mm: float = 7.0
    skull_hu: float = 1000.0
    brain_hu: float = 35.0
    hematoma_hu: float = 65.0
    hematoma_offset: tuple[float, float, float] = (32.0, 14.0, 4.0)
    hematoma_semi_axes: tuple[float, float, float] = (12.0, 10.0, 8.0)
    marker_offsets: tuple[tuple[float, float, float], ...] = ((-28.0, 30.0, -8.0), (22.0, -38.0, 6.0), (6.0, 12.0, 16.0))
    marker_hu: float = 1500.0
    marker_sigma_mm: float = 3.0

    @property
    def markers_lps(self) -> np.ndarray:
        """World (LPS) positions of the marker blob centres, shape (M, 3)."""
        return np.asarray(self.center) + np.asarray(self.marker_offsets, dtype=float)

    def _ellipsoid_r2(self, pts: np.ndarray, offset: Sequence[float], semi: Sequence[float]) -> np.ndarray:
        d = (pts - (np.asarray(self.center) + np.asarray(offset))) / np.asarray(semi, dtype=float)
        return np.einsum("...i,...i->...", d, d)

    def inside_head(self, pts: np.ndarray) -> np.ndarray:
        """True inside the outer skull surface."""
        return self._ellipsoid_r2(np.asarray(pts, dtype=float), (0, 0, 0), self.outer_semi_axes) <= 1.0

    def inside_brain(self, pts: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """True inside the inner skull surface shrunk by ``margin_mm``."""
        semi = np.asarray(self.outer_semi_axes) - self.skull_mm - margin_mm
        return self._ellipsoid_r2(np.asarray(pts, dtype=float), (0, 0, 0), semi) <= 1.0

    def hu(self, pts: np.ndarray) -> np.ndarray:
        """Hounsfield units at LPS world points ``pts`` (shape (..., 3)), float64."""
        pts = np.asarray(pts, dtype=float)
        out = np.full(pts.shape[:-1], AIR_HU)
        out[self.inside_head(pts)] = self.skull_hu
        brain = self.inside_brain(pts)
        out[brain] = self.brain_hu
        out[brain & (self._ellipsoid_r2(pts, self.hematoma_offset, self.hematoma_semi_axes) <= 1.0)] = self.hematoma_hu
        for m in self.markers_lps:
            r2 = np.einsum("...i,...i->...", pts - m, pts - m)
            out += self.marker_hu * np.exp(-r2 / (2.0 * self.marker_sigma_mm**2))
        return out

    def edge_distance_lower_bound(self, pts: np.ndarray) -> np.ndarray:
        """A lower bound of the distance (mm) from each point to the nearest hard edge (skull
        surfaces, hematoma surface) or to a marker blob (its centre minus 4 sigma).

        For an ellipsoid E with smallest semi-axis a and a point at normalised radius r, the
        distance to the surface is at least |r - 1| * a (r E + (1 - r) a B is inside E).
        """
        pts = np.asarray(pts, dtype=float)
        outer = np.asarray(self.outer_semi_axes, dtype=float)
        inner = outer - self.skull_mm
        out = np.full(pts.shape[:-1], np.inf)
        for offset, semi in (((0, 0, 0), outer), ((0, 0, 0), inner), (self.hematoma_offset, self.hematoma_semi_axes)):
            r = np.sqrt(self._ellipsoid_r2(pts, offset, semi))
            out = np.minimum(out, np.abs(r - 1.0) * float(np.min(semi)))
        for m in self.markers_lps:
            d = np.sqrt(np.einsum("...i,...i->...", pts - m, pts - m)) - 4.0 * self.marker_sigma_mm
            out = np.minimum(out, d)
        return out

    def marker_mass(self) -> float:
        """Integral of one marker blob (HU * mm^3)."""
        return float(self.marker_hu * (2.0 * math.pi) ** 1.5 * self.marker_sigma_mm**3)


DEFAULT_PHANTOM = Phantom()


# --------------------------------------------------------------------------------------------
# Study / series / slice specifications
# --------------------------------------------------------------------------------------------


def deterministic_uid(*parts: object) -> UID:
    """A deterministic UID from the given parts (reproducible test data)."""
    return generate_uid(entropy_srcs=[repr(p) for p in parts])


@dataclass
class Study:
    """Patient and study level attributes shared by the series of one folder."""

    key: str = "study"
    patient_name: str = FAKE_PATIENT_NAME
    patient_id: str = FAKE_PATIENT_ID
    birth_date: str = FAKE_BIRTH_DATE
    study_uid: str = ""
    frame_of_reference_uid: str = ""

    def __post_init__(self) -> None:
        self.study_uid = self.study_uid or str(deterministic_uid("study", self.key))
        self.frame_of_reference_uid = self.frame_of_reference_uid or str(deterministic_uid("for", self.key))


@dataclass
class SliceSpec:
    """One 2D image: where it is (IPP, IOP) and how its stored values map to HU."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    instance_number: int = 1
    slope: float = 1.0
    intercept: float = -1024.0
    acquisition_number: int = 1


@dataclass
class SeriesSpec:
    """A series of single-frame images (or the frames of one enhanced multi-frame file)."""

    slices: list[SliceSpec]
    rows: int = 60
    cols: int = 64
    pixel_spacing: tuple[float, float] = (4.2, 3.9)  # DICOM order: (row spacing, column spacing)
    key: str = "series"
    modality: str = "CT"
    sop_class_uid: str = CT_IMAGE_STORAGE
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")
    kernel: str = "STANDARD"
    description: str = "HEAD 5mm STND"
    series_number: int = 2
    slice_thickness: float | None = 5.0
    gantry_tilt_header: float | None = 0.0
    pixel_representation: int = 0  # 0 unsigned, 1 signed (two's complement)
    bits_allocated: int = 16
    bits_stored: int = 16
    sign_extend: bool = True  # signed values with BitsStored < 16: False leaves the high bits 0
    high_bit_junk: bool = False  # unsigned BitsStored < 16: set unused high bits in some pixels
    padding_value: int | None = None  # stored PixelPaddingValue written outside the FOV circle
    fov_radius_mm: float | None = None  # circular reconstruction field of view around the image centre
    transfer_syntax: str = "explicit"
    series_uid: str = ""

    def __post_init__(self) -> None:
        self.series_uid = self.series_uid or str(deterministic_uid("series", self.key))

    # -- geometry -------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return len(self.slices)

    def pixel_world(self, s: SliceSpec) -> np.ndarray:
        """LPS world position of every pixel of a slice, shape (rows, cols, 3)."""
        rs, cs = self.pixel_spacing
        o = np.asarray(s.orientation, dtype=float)
        row, col = o[:3], o[3:]
        j, i = np.meshgrid(np.arange(self.rows), np.arange(self.cols), indexing="ij")
        return np.asarray(s.position) + i[..., None] * cs * row + j[..., None] * rs * col

    def fov_mask(self) -> np.ndarray:
        """True for pixels (rows, cols) inside the reconstruction circle (all True without one)."""
        if self.fov_radius_mm is None:
            return np.ones((self.rows, self.cols), dtype=bool)
        rs, cs = self.pixel_spacing
        j, i = np.meshgrid(np.arange(self.rows), np.arange(self.cols), indexing="ij")
        dy = (j - (self.rows - 1) / 2.0) * rs
        dx = (i - (self.cols - 1) / 2.0) * cs
        return dx * dx + dy * dy <= self.fov_radius_mm**2

    def stored_range(self) -> tuple[int, int]:
        if self.pixel_representation:
            return -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
        return 0, (1 << self.bits_stored) - 1

    def stored_pixels(self, s: SliceSpec, phantom: Phantom) -> np.ndarray:
        """Stored values (before rescale) of a slice, int64, (rows, cols); padding applied."""
        hu = phantom.hu(self.pixel_world(s))
        stored = np.rint((hu - s.intercept) / s.slope).astype(np.int64)
        lo, hi = self.stored_range()
        if stored.min() < lo or stored.max() > hi:
            raise ValueError(f"phantom HU do not fit the stored range {lo}..{hi} with slope {s.slope} intercept {s.intercept}")
        if self.padding_value is not None:
            if not lo <= self.padding_value <= hi:
                raise ValueError("padding value outside the stored range")
            inside = self.fov_mask()
            if np.any(stored[inside] == self.padding_value):
                raise ValueError("padding value occurs in real pixels")
            stored[~inside] = self.padding_value
        return stored

    def normal(self) -> np.ndarray:
        o = np.asarray(self.slices[0].orientation, dtype=float)
        n = np.cross(o[:3], o[3:])
        return n / np.linalg.norm(n)

    def positions_along_normal(self) -> np.ndarray:
        n = self.normal()
        return np.asarray([np.dot(s.position, n) for s in self.slices])

    def covers(self, pts: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """True for LPS points inside the acquired slab and inside every slice's field of view.

        The slab is bounded by the first and last slice along the normal; in-plane, the point
        must lie ``margin_mm`` inside the image of the (linearly interpolated) neighbouring slices.
        All slices must share one orientation.
        """
        pts = np.asarray(pts, dtype=float)
        o = np.asarray(self.slices[0].orientation, dtype=float)
        row, col = o[:3], o[3:]
        n = self.normal()
        ipp = np.asarray([s.position for s in self.slices], dtype=float)
        along = ipp @ n
        order = np.argsort(along)
        along, ipp = along[order], ipp[order]
        # drop exact duplicates (interp needs increasing abscissae)
        keep = np.concatenate([[True], np.diff(along) > 1e-6])
        along, ipp = along[keep], ipp[keep]
        s = pts @ n
        inside = (s >= along[0] - 1e-3) & (s <= along[-1] + 1e-3)
        origin = np.stack([np.interp(s, along, ipp[:, a]) for a in range(3)], axis=-1)
        rel = pts - origin
        u, v = rel @ row, rel @ col
        rs, cs = self.pixel_spacing
        inside &= (u >= margin_mm) & (u <= (self.cols - 1) * cs - margin_mm)
        inside &= (v >= margin_mm) & (v <= (self.rows - 1) * rs - margin_mm)
        return inside

    def distance_to_nearest_slice(self, pts: np.ndarray) -> np.ndarray:
        """Distance (mm, along the normal) from each point to the nearest acquired slice plane."""
        along = np.sort(self.positions_along_normal())
        s = np.asarray(pts, dtype=float) @ self.normal()
        idx = np.clip(np.searchsorted(along, s), 1, len(along) - 1)
        return np.minimum(np.abs(s - along[idx - 1]), np.abs(s - along[idx]))

    def with_(self, **changes) -> SeriesSpec:
        """A copy with changes (a new ``key`` gives a new SeriesInstanceUID)."""
        if "key" in changes and "series_uid" not in changes:
            changes["series_uid"] = ""
        return replace(self, **changes)


def _ds(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        raise ValueError(f"DS value {text} longer than 16 characters")
    return text


def _rot(axis: Sequence[float], deg: float) -> np.ndarray:
    """Rotation matrix about ``axis`` by ``deg`` degrees (right hand)."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    t = math.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * (k @ k)


PLANES = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}


def make_stack(
    n_slices: int = 20,
    spacing_mm: float = 5.0,
    *,
    offsets_mm: Sequence[float] | None = None,
    plane: str = "axial",
    tilt_deg: float = 0.0,
    tilt_mode: str = "iop",
    inplane_rotation_deg: float = 0.0,
    flip_rows: bool = False,
    center_shift: Sequence[float] = (3.0, -5.0, 0.0),
    phantom: Phantom = DEFAULT_PHANTOM,
    rows: int = 60,
    cols: int = 64,
    pixel_spacing: tuple[float, float] = (4.2, 3.9),
    slope: float | Sequence[float] = 1.0,
    intercept: float | Sequence[float] = -1024.0,
    instance_numbers: str = "ordered",
    seed: int = 0,
    **series_kwargs,
) -> SeriesSpec:
    """A stack of parallel (possibly sheared) slices through the phantom.

    Parameters
    ----------
    offsets_mm
        Slice positions along the stacking direction, relative to the image centre point
        (default: ``n_slices`` positions ``spacing_mm`` apart, centred). Any list (gaps, uneven,
        repeated values) is allowed.
    tilt_deg, tilt_mode
        Gantry tilt. ``"iop"``: the slice plane is rotated about the patient x axis and the
        slice positions step along patient z (as the table moves). ``"ipp"``: axial orientation,
        the positions step along z and shift along y by ``tan(tilt)`` per mm.
    inplane_rotation_deg, flip_rows
        Rotate the row/column cosines in the slice plane; ``flip_rows`` reverses the column
        direction cosine (e.g. a prone-like orientation).
    slope, intercept
        One value or one per slice (cycled).
    instance_numbers
        ``"ordered"`` (1..n along the stack), ``"reversed"`` or ``"scrambled"``.
    """
    row, col = (np.asarray(v, dtype=float) for v in PLANES[plane])
    normal = np.cross(row, col)
    step_dir = normal.copy()
    if inplane_rotation_deg:
        r = _rot(normal, inplane_rotation_deg)
        row, col = r @ row, r @ col
    if flip_rows:
        row = -row
        normal = -normal
        step_dir = -step_dir
    if tilt_deg:
        if plane != "axial":
            raise ValueError("gantry tilt is modelled for axial stacks only")
        t = math.radians(tilt_deg)
        z = np.array([0.0, 0.0, 1.0])
        if tilt_mode == "iop":
            r = _rot((1.0, 0.0, 0.0), tilt_deg)
            row, col = r @ row, r @ col
            step_dir = z
        elif tilt_mode == "ipp":
            step_dir = np.array([0.0, math.tan(t), 1.0])
        else:
            raise ValueError(tilt_mode)
    row = np.round(row, IOP_DECIMALS) + 0.0
    col = np.round(col, IOP_DECIMALS) + 0.0
    orientation = tuple(float(v) for v in np.concatenate([row, col]))
    if offsets_mm is None:
        offsets_mm = [(k - (n_slices - 1) / 2.0) * spacing_mm for k in range(n_slices)]
    offsets = list(offsets_mm)
    rs, cs = pixel_spacing
    centre = np.asarray(phantom.center) + np.asarray(center_shift, dtype=float)
    corner = -((cols - 1) / 2.0) * cs * np.asarray(row) - ((rows - 1) / 2.0) * rs * np.asarray(col)
    slopes = [slope] if np.isscalar(slope) else list(slope)  # type: ignore[arg-type]
    intercepts = [intercept] if np.isscalar(intercept) else list(intercept)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    numbers = list(range(1, len(offsets) + 1))
    if instance_numbers == "reversed":
        numbers = numbers[::-1]
    elif instance_numbers == "scrambled":
        numbers = list(rng.permutation(numbers) + 0)
    elif instance_numbers != "ordered":
        raise ValueError(instance_numbers)
    slices = []
    for k, off in enumerate(offsets):
        pos = np.round(centre + off * step_dir + corner, IPP_DECIMALS) + 0.0
        slices.append(SliceSpec(
            position=tuple(float(v) for v in pos),
            orientation=orientation,  # type: ignore[arg-type]
            instance_number=int(numbers[k]),
            slope=float(slopes[k % len(slopes)]),
            intercept=float(intercepts[k % len(intercepts)]),
        ))
    thickness = series_kwargs.pop("slice_thickness", spacing_mm)
    return SeriesSpec(slices=slices, rows=rows, cols=cols, pixel_spacing=pixel_spacing,
                      slice_thickness=thickness, gantry_tilt_header=float(tilt_deg), **series_kwargs)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _base_dataset(study: Study, series: SeriesSpec, sop_class: str, sop_uid: str, ts: UID) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240131"
    ds.SeriesDate = "20240131"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = series.modality
    ds.Manufacturer = "ICHCT-TEST"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CT HEAD WO"
    ds.SeriesDescription = series.description
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series.series_number
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    return ds


def _set_pixel_module(ds: Dataset, series: SeriesSpec) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = series.rows
    ds.Columns = series.cols
    ds.BitsAllocated = series.bits_allocated
    ds.BitsStored = series.bits_stored
    ds.HighBit = series.bits_stored - 1
    ds.PixelRepresentation = series.pixel_representation
    if series.padding_value is not None:
        ds.add_new(0x00280120, "SS" if series.pixel_representation else "US", int(series.padding_value))


def _encode_native(stored: np.ndarray, series: SeriesSpec, rng: np.random.Generator) -> bytes:
    """Little-endian native pixel bytes (16 bit) with the bit layout options of ``series``."""
    if series.bits_allocated != 16:
        raise ValueError("only BitsAllocated 16 is written")
    values = stored.astype(np.int64)
    if series.pixel_representation and series.bits_stored < 16 and not series.sign_extend:
        values = values & ((1 << series.bits_stored) - 1)  # two's complement in BitsStored bits only
    raw = (values & 0xFFFF).astype("<u2")
    if series.high_bit_junk:
        if series.pixel_representation or series.bits_stored >= 16:
            raise ValueError("high-bit junk is only meaningful for unsigned BitsStored < 16")
        junk_bits = (0xFFFF << series.bits_stored) & 0xFFFF
        junk = (rng.integers(0, 1 << 16, size=raw.shape).astype("<u2") & junk_bits)
        junk[rng.random(raw.shape) < 0.5] = 0
        raw = raw | junk.astype("<u2")
    return raw.tobytes()


def ct_slice_dataset(series: SeriesSpec, index: int, study: Study, phantom: Phantom,
                     rng: np.random.Generator) -> tuple[Dataset, np.ndarray]:
    """Slice ``index`` of ``series`` as a single-frame CT (or MR) dataset, uncompressed."""
    s = series.slices[index]
    sop_uid = str(deterministic_uid("sop", series.series_uid, index, s.instance_number, s.position, s.acquisition_number))
    ds = _base_dataset(study, series, series.sop_class_uid, sop_uid, ExplicitVRLittleEndian)
    ds.ImageType = list(series.image_type)
    ds.InstanceNumber = s.instance_number
    ds.AcquisitionNumber = s.acquisition_number
    ds.ImagePositionPatient = [_ds(v, IPP_DECIMALS) for v in s.position]
    ds.ImageOrientationPatient = [_ds(v, IOP_DECIMALS) for v in s.orientation]
    ds.PixelSpacing = [f"{v:g}" for v in series.pixel_spacing]
    if series.slice_thickness is not None:
        ds.SliceThickness = f"{series.slice_thickness:g}"
    n = np.cross(np.asarray(s.orientation[:3]), np.asarray(s.orientation[3:]))
    ds.SliceLocation = f"{float(np.dot(s.position, n)):.3f}"
    if series.modality == "CT":
        ds.KVP = "120"
        ds.ConvolutionKernel = series.kernel
        if series.gantry_tilt_header is not None:
            ds.GantryDetectorTilt = f"{series.gantry_tilt_header:g}"
        ds.RescaleIntercept = f"{s.intercept:g}"
        ds.RescaleSlope = f"{s.slope:g}"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
    else:
        ds.MagneticFieldStrength = "3"
        ds.EchoTime = "90"
        ds.RepetitionTime = "5000"
    _set_pixel_module(ds, series)
    stored = series.stored_pixels(s, phantom)
    ds.PixelData = _encode_native(stored, series, rng)
    return ds, stored


def _save(ds: Dataset, path: Path, ts_key: str, expected: np.ndarray | None) -> None:
    """Save ``ds`` with the transfer syntax ``ts_key``; check the file decodes to ``expected``."""
    ts = TRANSFER_SYNTAXES[ts_key]
    path.parent.mkdir(parents=True, exist_ok=True)
    if ts_key in ("explicit", "implicit", "deflated"):
        ds.file_meta.TransferSyntaxUID = ts
        ds.save_as(path, enforce_file_format=True)
    elif ts_key == "rle":
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
        ds.save_as(path, enforce_file_format=True)
    elif ts_key == "j2k":
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        ds.save_as(path, enforce_file_format=True)
    elif ts_key == "jpegls1":
        _gdcm_jpeg_lossless(ds, path)
    else:
        raise ValueError(ts_key)
    if expected is not None:
        back = pydicom.dcmread(path)
        if str(back.file_meta.TransferSyntaxUID) != str(ts):
            raise RuntimeError(f"{path}: written with {back.file_meta.TransferSyntaxUID}, wanted {ts}")
        arr = back.pixel_array
        if not np.array_equal(arr.reshape(expected.shape).astype(np.int64), expected.astype(np.int64)):
            raise RuntimeError(f"{path}: {ts.name} round trip is not lossless")


def _gdcm_jpeg_lossless(ds: Dataset, path: Path) -> None:
    """Encode with python-gdcm's ImageChangeTransferSyntax to JPEG Lossless SV1 (1.2.840.10008.1.2.4.70)."""
    import gdcm  # python-gdcm; an ImportError here means the encoder is unavailable

    src = path.with_name(path.name + ".native.tmp")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(src, enforce_file_format=True)
    try:
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        if not reader.Read():
            raise RuntimeError(f"gdcm cannot read {src}")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError("gdcm could not change the transfer syntax to JPEG Lossless SV1")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(path))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError(f"gdcm could not write {path}")
    finally:
        src.unlink(missing_ok=True)


def _file_name(rng: np.random.Generator, naming: str, index: int) -> str:
    if naming == "random":
        return "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"), size=12))
    if naming == "ordered":
        return f"IM{index:05d}"
    if naming == "dcm":
        return f"slice_{index:04d}.dcm"
    raise ValueError(naming)


def write_series(
    folder: str | Path,
    series: SeriesSpec,
    *,
    study: Study | None = None,
    phantom: Phantom = DEFAULT_PHANTOM,
    naming: str = "random",
    subfolders: int = 0,
    seed: int = 0,
) -> list[Path]:
    """Write every slice of ``series`` as one single-frame file; returns paths in slice order.

    ``naming="random"`` gives 12-character names without extension (so the file order says
    nothing about slice order); ``subfolders > 0`` spreads the files over nested folders.
    """
    study = study or Study()
    folder = Path(folder)
    rng = np.random.default_rng(zlib.crc32(f"{series.series_uid}/{seed}".encode()))
    paths: list[Path] = []
    write_order = rng.permutation(series.n)  # files are written in shuffled order too
    names = {}
    for k in write_order:
        ds, stored = ct_slice_dataset(series, int(k), study, phantom, rng)
        sub = folder
        if subfolders:
            bucket = int(rng.integers(0, subfolders))
            sub = folder / f"sub{bucket}" / ("deeper" if bucket % 2 else "")
        name = _file_name(rng, naming, int(k))
        path = sub / name
        while path.exists():
            path = sub / (name + "X")
            name += "X"
        expected = stored if series.bits_stored == 16 or series.sign_extend or not series.pixel_representation else None
        if series.high_bit_junk:
            expected = None
        _save(ds, path, series.transfer_syntax, expected)
        names[int(k)] = path
    paths = [names[k] for k in range(series.n)]
    return paths


def write_enhanced_ct(
    path: str | Path,
    series: SeriesSpec,
    *,
    study: Study | None = None,
    phantom: Phantom = DEFAULT_PHANTOM,
    shuffle_frames: bool = True,
    per_frame_rescale: bool = True,
    seed: int = 0,
) -> Path:
    """Write ``series`` as one Enhanced CT Image Storage (multi-frame) file.

    Shared functional groups: PlaneOrientationSequence, PixelMeasuresSequence and
    CTImageFrameTypeSequence; per frame: PlanePositionSequence, FrameContentSequence and (with
    ``per_frame_rescale``) PixelValueTransformationSequence. Frames are stored in shuffled
    order when ``shuffle_frames`` (InStackPositionNumber gives the true order).
    """
    study = study or Study()
    path = Path(path)
    rng = np.random.default_rng(seed)
    sop_uid = str(deterministic_uid("enhanced", series.series_uid))
    ds = _base_dataset(study, series, ENHANCED_CT_IMAGE_STORAGE, sop_uid, ExplicitVRLittleEndian)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.ContentDate = "20240131"
    ds.ContentTime = "101500"
    ds.AcquisitionDateTime = "20240131101500"
    ds.KVP = "120"
    ds.PresentationLUTShape = "IDENTITY"
    _set_pixel_module(ds, series)
    order = list(rng.permutation(series.n)) if shuffle_frames else list(range(series.n))
    ds.NumberOfFrames = series.n

    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = [_ds(v, IOP_DECIMALS) for v in series.slices[0].orientation]
    shared.PlaneOrientationSequence = DicomSequence([po])
    pm = Dataset()
    pm.PixelSpacing = [f"{v:g}" for v in series.pixel_spacing]
    pm.SliceThickness = f"{series.slice_thickness or 1.0:g}"
    shared.PixelMeasuresSequence = DicomSequence([pm])
    ft = Dataset()
    ft.FrameType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    shared.CTImageFrameTypeSequence = DicomSequence([ft])
    recon = Dataset()
    recon.ConvolutionKernel = series.kernel
    shared.CTReconstructionSequence = DicomSequence([recon])
    if not per_frame_rescale:
        pv = Dataset()
        pv.RescaleIntercept = f"{series.slices[0].intercept:g}"
        pv.RescaleSlope = f"{series.slices[0].slope:g}"
        pv.RescaleType = "HU"
        shared.PixelValueTransformationSequence = DicomSequence([pv])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    along = series.positions_along_normal()
    rank = {int(k): r for r, k in enumerate(np.argsort(along))}
    frames = []
    pixel_frames = []
    for k in order:
        s = series.slices[int(k)]
        if not per_frame_rescale and (s.slope, s.intercept) != (series.slices[0].slope, series.slices[0].intercept):
            raise ValueError("shared rescale needs one slope/intercept")
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [_ds(v, IPP_DECIMALS) for v in s.position]
        item.PlanePositionSequence = DicomSequence([pp])
        fc = Dataset()
        fc.StackID = "1"
        fc.InStackPositionNumber = rank[int(k)] + 1
        fc.DimensionIndexValues = [1, rank[int(k)] + 1]
        item.FrameContentSequence = DicomSequence([fc])
        if per_frame_rescale:
            pv = Dataset()
            pv.RescaleIntercept = f"{s.intercept:g}"
            pv.RescaleSlope = f"{s.slope:g}"
            pv.RescaleType = "HU"
            item.PixelValueTransformationSequence = DicomSequence([pv])
        frames.append(item)
        pixel_frames.append(series.stored_pixels(s, phantom))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    stored = np.stack(pixel_frames)
    ds.PixelData = _encode_native(stored, series, rng)
    _save(ds, path, series.transfer_syntax, stored)
    return path


def write_scout(folder: str | Path, *, study: Study | None = None, planes: Sequence[str] = ("sagittal", "coronal"),
                key: str = "scout", series_number: int = 1, phantom: Phantom = DEFAULT_PHANTOM) -> list[Path]:
    """A localizer series: one single-slice image per plane (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)."""
    paths: list[Path] = []
    uid = str(deterministic_uid("series", key))
    for n, plane in enumerate(planes):
        spec = make_stack(1, 1.0, plane=plane, key=key, series_uid=uid, rows=64, cols=64, pixel_spacing=(4.0, 4.0),
                          image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), description="Topogram 0.6 T20s",
                          series_number=series_number, kernel="T20s", slice_thickness=1.0, phantom=phantom)
        spec.slices[0].instance_number = n + 1
        paths += write_series(folder, spec, study=study, phantom=phantom, seed=n)
    return paths


def write_dose_report(folder: str | Path, *, study: Study | None = None, key: str = "dose") -> Path:
    """A Secondary Capture dose screen (Modality CT, RGB, no slice geometry)."""
    study = study or Study()
    spec = SeriesSpec(slices=[], key=key, description="Dose Report", series_number=999,
                      image_type=("DERIVED", "SECONDARY", "OTHER"))
    sop_uid = str(deterministic_uid("sop", key))
    ds = _base_dataset(study, spec, SECONDARY_CAPTURE_STORAGE, sop_uid, ExplicitVRLittleEndian)
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = 32
    ds.Columns = 48
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    img = np.zeros((32, 48, 3), dtype=np.uint8)
    img[4:10, 4:40] = 255
    ds.PixelData = img.tobytes()
    path = Path(folder) / "DOSEREPORT01"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_junk(folder: str | Path, truncate_from: Path | None = None) -> dict[str, Path]:
    """Non-DICOM files (text, JPEG-like bytes without extension) and, from ``truncate_from``,
    a DICOM file cut inside its header. Returns ``{"text", "jpeg", "truncated"}`` paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {"text": folder / "README.txt", "jpeg": folder / "PREVIEW0001"}
    out["text"].write_text("Exported by the PACS. Not an image.\n", encoding="utf-8")
    rng = np.random.default_rng(7)
    out["jpeg"].write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
                            + rng.integers(0, 256, size=3000, dtype=np.uint8).tobytes() + b"\xff\xd9")
    if truncate_from is not None:
        data = Path(truncate_from).read_bytes()
        cut = header_length(truncate_from) // 2
        out["truncated"] = folder / "TRUNCATED77"
        out["truncated"].write_bytes(data[:cut])
    return out


def strip_file_meta(path: Path, implicit: bool) -> None:
    """Rewrite a file as a bare dataset: no preamble, no ``DICM``, no file meta (old PACS exports),
    little endian with implicit or explicit VR."""
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    ds = pydicom.dcmread(path)
    del ds.file_meta
    with open(path, "wb") as f:
        fp = DicomFileLike(f)
        fp.is_little_endian, fp.is_implicit_VR = True, implicit
        write_dataset(fp, ds)


def header_length(path: Path) -> int:
    """Byte offset where the PixelData element starts in a file (the header's length)."""
    data = Path(path).read_bytes()
    idx = data.rfind(b"\xe0\x7f\x10\x00")
    if idx < 0:
        raise ValueError(f"{path}: no PixelData tag")
    return idx


def truncate_pixel_data(path: Path, keep_fraction: float = 0.5) -> None:
    """Cut a file inside its pixel data (an interrupted transfer)."""
    data = Path(path).read_bytes()
    start = header_length(path)
    cut = start + int((len(data) - start) * keep_fraction)
    Path(path).write_bytes(data[:cut])


def write_dicomdir(folder: str | Path, sources: Sequence[Path]) -> Path:
    """Copy ``sources`` into a DICOM File-set (IHE-style names, DICOMDIR at the root) in ``folder``.

    Returns the DICOMDIR path.
    """
    from pydicom.fileset import FileSet

    fs = FileSet()
    for p in sources:
        fs.add(pydicom.dcmread(p))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fs.write(folder)
    return folder / "DICOMDIR"


# --------------------------------------------------------------------------------------------
# Truth on an output grid
# --------------------------------------------------------------------------------------------


def voxel_world_lps(affine_ras: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """LPS world position of every voxel of a volume with a RAS affine, shape (*shape, 3)."""
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape[:3]], indexing="ij"), axis=-1)
    aff = LPS_FROM_RAS @ np.asarray(affine_ras, dtype=float)
    return idx @ aff[:3, :3].T + aff[:3, 3]


def truth_on_grid(affine_ras: np.ndarray, shape: Sequence[int], phantom: Phantom = DEFAULT_PHANTOM) -> np.ndarray:
    """Phantom HU at every voxel of the output grid."""
    return phantom.hu(voxel_world_lps(affine_ras, shape))


@dataclass
class MarkerResult:
    expected_lps: np.ndarray
    measured_lps: np.ndarray
    mass_ratio: float
    error_mm: float = field(init=False)

    def __post_init__(self) -> None:
        self.error_mm = float(np.linalg.norm(self.measured_lps - self.expected_lps))


def marker_centroids(
    volume: np.ndarray,
    affine_ras: np.ndarray,
    phantom: Phantom = DEFAULT_PHANTOM,
    series: SeriesSpec | None = None,
    radius_mm: float = 12.0,
) -> list[MarkerResult]:
    """Intensity-weighted centroid (world LPS) of each marker blob found in ``volume``.

    Weights are ``HU - brain`` (clipped at 0) inside a sphere of ``radius_mm`` around the
    marker's true position. Markers not well inside the acquired slab of ``series`` (when given)
    are left out. ``mass_ratio`` compares the blob's integral with the phantom's (1.0 = all HU
    of the blob are there).
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim == 4:
        vol = vol[0]
    world = voxel_world_lps(affine_ras, vol.shape)
    voxel_volume = abs(float(np.linalg.det(np.asarray(affine_ras)[:3, :3])))
    results = []
    for m in phantom.markers_lps:
        if series is not None and not series.covers(m[None], margin_mm=4 * phantom.marker_sigma_mm)[0]:
            continue
        d2 = np.einsum("...i,...i->...", world - m, world - m)
        window = d2 <= radius_mm**2
        w = np.clip(vol - phantom.brain_hu, 0.0, None) * window
        mass = float(w.sum())
        centroid = (w[..., None] * world).sum(axis=(0, 1, 2)) / mass if mass > 0 else np.full(3, np.inf)
        results.append(MarkerResult(expected_lps=m, measured_lps=centroid, mass_ratio=mass * voxel_volume / phantom.marker_mass()))
    return results


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray, object]:
    """(data as stored, best affine (sform when set), nibabel image)."""
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=float), img


def tree_listing(folder: str | Path) -> list[str]:
    """Every file and folder under ``folder`` (hidden ones included), relative, sorted."""
    folder = Path(folder)
    if not folder.exists():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            out.append(str((Path(dirpath) / name).relative_to(folder)))
    return sorted(out)


def copy_tree(src: str | Path, dst: str | Path) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


# --------------------------------------------------------------------------------------------
# Checks against the truth
# --------------------------------------------------------------------------------------------


def read_sidecar(nifti: Path) -> dict:
    name = nifti.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return json.loads(nifti.with_name(name[: -len(ext)] + ".json").read_text(encoding="utf-8"))
    raise ValueError(nifti)


def assert_no_phi(*texts: str) -> None:
    for text in texts:
        for s in PHI_STRINGS:
            assert s.lower() not in text.lower(), f"patient identifier {s!r} leaked into output"


def assert_exact(volume: np.ndarray, affine_ras: np.ndarray, series: SeriesSpec, tol: float = 0.55,
                 phantom: Phantom = DEFAULT_PHANTOM) -> None:
    """Every voxel equals the phantom at its world position (within the quantisation ``tol``)."""
    vol = np.asarray(volume, dtype=np.float64)
    truth = truth_on_grid(affine_ras, vol.shape, phantom)
    world = voxel_world_lps(affine_ras, vol.shape)
    covered = series.covers(world, margin_mm=-0.01)
    assert covered.mean() > 0.99, "output grid extends beyond the acquired slices"
    err = np.abs(vol - truth)
    if series.fov_radius_mm is not None:
        err = np.where(series.covers(world) & _in_fov(world, series), err, 0.0)
    bad = err > tol
    assert not bad.any(), (f"{int(bad.sum())} voxels differ from the phantom by more than {tol} HU "
                           f"(max {err.max():.1f} HU at voxel {np.unravel_index(np.argmax(err), err.shape)})")


def _in_fov(world: np.ndarray, series: SeriesSpec) -> np.ndarray:
    """Points inside the circular reconstruction FOV of the (straight) stack."""
    s0 = series.slices[0]
    o = np.asarray(s0.orientation)
    rel = world - np.asarray(s0.position)
    rs, cs = series.pixel_spacing
    u = rel @ o[:3] - (series.cols - 1) / 2.0 * cs
    v = rel @ o[3:] - (series.rows - 1) / 2.0 * rs
    return u * u + v * v <= (series.fov_radius_mm or np.inf) ** 2 - 1e-6


def assert_geometry(volume: np.ndarray, affine_ras: np.ndarray, series: SeriesSpec, *, reach_mm: float,
                    phantom: Phantom = DEFAULT_PHANTOM, min_markers: int = 2) -> None:
    """Checks for a resampled volume against the phantom.

    * median |HU - truth| <= 3 over voxels inside the head (and inside the acquired slab);
    * |HU - truth| <= 1 wherever no phantom edge or marker is within ``reach_mm`` (so that
      interpolation cannot explain a difference);
    * each marker's centroid (world, from the affine) within 1.5 mm of its true position, and
      its integrated HU within 15 % of the phantom's.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim == 4:
        vol = vol[0]
    world = voxel_world_lps(affine_ras, vol.shape)
    truth = phantom.hu(world)
    covered = series.covers(world, margin_mm=reach_mm)
    head = phantom.inside_head(world) & covered
    assert head.sum() > 1000, "too few head voxels inside the acquired slab"
    err = np.abs(vol - truth)
    assert float(np.median(err[head])) <= 3.0, f"median |HU error| inside the head is {np.median(err[head]):.1f}"
    interior = covered & (phantom.edge_distance_lower_bound(world) > reach_mm)
    assert interior.sum() > 1000
    worst = float(err[interior].max())
    assert worst <= 1.0, f"{int((err[interior] > 1).sum())} voxels away from any edge differ from the phantom (max {worst:.1f} HU)"
    results = marker_centroids(vol, affine_ras, phantom, series=series)
    assert len(results) >= min_markers, "test set-up: too few markers inside the acquired slab"
    for r in results:
        assert r.error_mm <= 1.5, f"marker at {r.expected_lps} found at {r.measured_lps} ({r.error_mm:.2f} mm off)"
        assert 0.85 <= r.mass_ratio <= 1.15, f"marker at {r.expected_lps}: integrated HU ratio {r.mass_ratio:.2f}"
