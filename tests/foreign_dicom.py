"""A corpus of "foreign" CT DICOM: what public archives and other people's PACS exports look like.

Everything here is written with pydicom directly (``Dataset`` / ``FileMetaDataset``), not with
ichct's writers nor with ``tests/dicom_factory.py``, so that ichct's reader meets headers it was
not written alongside. The pixels come from :class:`HeadPhantom`, an analytic head evaluated at
each voxel centre in DICOM patient coordinates (LPS, mm), so the truth is known exactly: the
writers return the HU volume and the voxel label map of the blood they wrote.

Writers
-------
* :func:`write_rsna_layout`: the RSNA 2019 ICH challenge layout (``stage_2_train.csv`` and a
  flat ``stage_2_train/`` folder of ``ID_<hex>.dcm`` files, all series mixed) with the challenge's
  minimal headers, its per-series pixel encodings (signed 16-bit, unsigned 12-bit) and optionally
  the 12-bit "offset wrap" files. Streaming: one slice at a time, so it can write 100,000 files.
* :func:`write_deidentified_study`: a PS3.15 Basic-Profile de-identified CT series.
* :func:`write_transfer_syntax_series`: implicit VR LE, explicit VR big endian, JPEG-LS lossless,
  JPEG 2000 lossless.
* :func:`write_private_tag_series`: GE-style private blocks (odd groups only).
* :func:`write_charset_series`: non-ASCII patient names in ``ISO_IR 100`` or ``ISO_IR 192``.
* :func:`write_ct_series`: the general writer behind the last four.

Axes of the truth arrays
------------------------
``truth_hu`` and ``blood`` are indexed ``[k, r, c]`` = (slice, row, column) with slices sorted by
increasing position along the slice normal (+z, since every series here is axial with
ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]``), i.e. in the order a reader stacks them whatever
the file order. ``ForeignSeries.truth_ijk`` is the same array as ``[i, j, k]`` = (column, row,
slice), the layout of ichct's NIfTI output, whose RAS affine is ``ForeignSeries.affine_ras``.

This module does not import pytest or ichct, and has no ``from __future__ import annotations``
(whose string annotations break dataclasses in a module that is not in ``sys.modules``), so a
benchmark can load it by path::

    spec = importlib.util.spec_from_file_location("foreign_dicom", "tests/foreign_dicom.py")
    fd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fd)
    fd.write_rsna_layout("corpus", n_series=2500, files_per_series=40, keep_truth=False)  # 100,000 files
"""

import contextlib
import csv
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

__all__ = [
    "CT_IMAGE_STORAGE", "SUBTYPES", "RSNA_SUBTYPES", "RSNA_KEYWORDS", "SIGNED16", "UNSIGNED12", "WRAP12",
    "TRANSFER_SYNTAXES", "AIR_HU", "SCALP_HU", "BRAIN_HU", "VENTRICLE_HU", "CALCIFICATION_HU", "BLOOD_HU",
    "Hemorrhage", "HeadPhantom", "SliceGeometry", "ForeignSeries", "RsnaCorpus",
    "centred_geometry", "default_hemorrhage", "write_rsna_layout", "write_ct_series", "write_deidentified_study",
    "write_transfer_syntax_series", "write_private_tag_series", "write_charset_series", "quiet_pydicom",
    "rsna_id", "uid_2_25", "read_keywords", "RSNA_VARIANTS", "DEID_TYPE2", "DEID_REMOVED", "CHARSET_SAMPLES",
    "MAX_HU",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: The five hemorrhage subtypes in RSNA order; a voxel label value is the index + 1 (0: no blood).
SUBTYPES: tuple[str, ...] = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
#: The six label columns of the RSNA CSV, in the order the challenge file lists them per image.
RSNA_SUBTYPES: tuple[str, ...] = SUBTYPES + ("any",)

#: The only data elements (keywords) an RSNA challenge file carries; everything else is absent.
RSNA_KEYWORDS: frozenset[str] = frozenset({
    "SOPInstanceUID", "Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "StudyID",
    "ImagePositionPatient", "ImageOrientationPatient", "SamplesPerPixel", "PhotometricInterpretation", "Rows",
    "Columns", "PixelSpacing", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "WindowCenter",
    "WindowWidth", "RescaleIntercept", "RescaleSlope", "PixelData",
})

#: RSNA pixel encodings. ``SIGNED16``: PixelRepresentation 1, BitsStored 16, intercept -1024.
#: ``UNSIGNED12``: PixelRepresentation 0, BitsStored 12, intercept -1024 (stored = HU + 1024).
#: ``WRAP12``: PixelRepresentation 0, BitsStored 12, intercept above -100 (0 or 1) and
#: stored = (HU - intercept) mod 4096, so air (-1000 HU) is stored near 3096 and reads as about
#: +3096 HU unless the reader undoes the wrap (reported by RSNA challenge participants).
SIGNED16, UNSIGNED12, WRAP12 = "signed16", "unsigned12", "wrap12"
RSNA_VARIANTS: tuple[str, ...] = (SIGNED16, UNSIGNED12, WRAP12)

#: Short names of the transfer syntaxes :func:`write_ct_series` can write.
TRANSFER_SYNTAXES: dict[str, str] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "big_endian": ExplicitVRBigEndian,
    "jpeg_ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}

AIR_HU = -1000
SCALP_HU = 40
BRAIN_HU = 35
VENTRICLE_HU = 5
CALCIFICATION_HU = 150
BLOOD_HU = 70
BONE_MEAN_HU, BONE_SWING_HU = 1200, 180  # skull: 1020..1380 HU, varying around the head
MAX_HU = 2000


# ---------------------------------------------------------------------------------------------
# phantom
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hemorrhage:
    """An ellipsoid of blood inside the brain (world LPS coordinates, mm).

    Parameters
    ----------
    center_mm, semi_axes_mm
        Centre and semi-axes along x (patient left), y (posterior), z (head).
    subtype
        One of :data:`SUBTYPES`; the voxel label value is its index + 1.
    hu
        Density of the blood.

    Examples
    --------
    >>> Hemorrhage(subtype="subdural").label_value
    5
    """

    center_mm: tuple[float, float, float] = (28.0, -12.0, 5.0)
    semi_axes_mm: tuple[float, float, float] = (14.0, 18.0, 12.0)
    subtype: str = "intraparenchymal"
    hu: int = BLOOD_HU

    def __post_init__(self) -> None:
        if self.subtype not in SUBTYPES:
            raise ValueError(f"subtype must be one of {SUBTYPES}, got {self.subtype!r}")

    @property
    def label_value(self) -> int:
        return SUBTYPES.index(self.subtype) + 1


def _inside(x: np.ndarray, y: np.ndarray, z: np.ndarray, center: Sequence[float], semi: Sequence[float]) -> np.ndarray | bool:
    """Points (x, y, z broadcast together) inside an axis-aligned ellipsoid. Each axis term is
    computed on its own (small, when the inputs are a slice's row and column vectors)."""
    d = ((x - center[0]) / semi[0]) ** 2 + ((y - center[1]) / semi[1]) ** 2 + ((z - center[2]) / semi[2]) ** 2
    return d <= 1.0


def _misses(z: np.ndarray, center: Sequence[float], semi: Sequence[float]) -> bool:
    """True when no point of ``z`` can be inside the ellipsoid (a quick skip for whole slices)."""
    return bool(np.all(np.abs(np.asarray(z) - center[2]) > semi[2]))


@dataclass(frozen=True)
class HeadPhantom:
    """An analytic head in world LPS coordinates (mm), with integer HU everywhere.

    Outside the head: air (-1000). Layers from outside in: scalp (40 HU, ``scalp_mm`` thick),
    skull (1020-1380 HU, varying with the angle around the head, ``skull_mm`` thick), brain
    (35 HU). Inside the brain: two lateral ventricles of unequal size (5 HU), a calcification on
    the patient's left-posterior-inferior side (150 HU; it breaks every mirror symmetry, so a
    flipped axis is caught) and the hemorrhages (their own HU, on top of everything else inside
    the brain). Values are point samples at voxel centres (no partial volume), so a lossless
    reader must reproduce them exactly.

    Examples
    --------
    >>> ph = HeadPhantom()
    >>> hu, label = ph.evaluate(np.array([[0.0, 0.0, 0.0], [200.0, 0.0, 0.0]]))
    >>> hu.tolist(), label.tolist()
    ([35, -1000], [0, 0])
    """

    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    semi_axes_mm: tuple[float, float, float] = (78.0, 95.0, 88.0)
    scalp_mm: float = 4.0
    skull_mm: float = 7.0
    hemorrhages: tuple[Hemorrhage, ...] = ()

    def with_hemorrhages(self, *hemorrhages: Hemorrhage) -> "HeadPhantom":
        return replace(self, hemorrhages=tuple(hemorrhages))

    def _shell(self, inset_mm: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.center_mm, tuple(a - inset_mm for a in self.semi_axes_mm)

    def _structures(self) -> list[tuple[tuple[float, ...], tuple[float, ...], int]]:
        """(centre, semi-axes, HU) of the structures inside the brain, painted in this order."""
        c = self.center_mm
        at = lambda off: tuple(c[i] + off[i] for i in range(3))  # noqa: E731
        return [(at((9.0, -5.0, 8.0)), (6.0, 20.0, 10.0), VENTRICLE_HU),  # left ventricle (LPS +x)
                (at((-9.0, -5.0, 8.0)), (5.0, 17.0, 9.0), VENTRICLE_HU),  # right ventricle, smaller
                (at((18.0, 35.0, -10.0)), (6.0, 6.0, 6.0), CALCIFICATION_HU)]

    def inside_brain(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)
        return np.asarray(_inside(pts[..., 0], pts[..., 1], pts[..., 2], *self._shell(self.scalp_mm + self.skull_mm)))

    def evaluate(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """HU (int16) and blood label (uint8, 0 or subtype index + 1) at points ``(..., 3)`` (LPS, mm)."""
        pts = np.asarray(pts, dtype=np.float64)
        return self.evaluate_xyz(pts[..., 0], pts[..., 1], pts[..., 2])

    def evaluate_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`evaluate`, for coordinates that broadcast together (e.g. a slice's
        ``x[None, :]``, ``y[:, None]`` and its scalar ``z``: much faster than a point array)."""
        x, y, z = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), np.asarray(z, dtype=np.float64)
        shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
        hu = np.full(shape, AIR_HU, dtype=np.int16)
        label = np.zeros(shape, dtype=np.uint8)
        head = np.broadcast_to(_inside(x, y, z, *self._shell(0.0)), shape)
        if not head.any():
            return hu, label
        hu[head] = SCALP_HU
        skull = np.broadcast_to(_inside(x, y, z, *self._shell(self.scalp_mm)), shape)
        c = self.center_mm
        angle = np.arctan2(y - c[1], x - c[0])
        bone = np.broadcast_to(np.rint(BONE_MEAN_HU + BONE_SWING_HU * np.cos(3.0 * angle)).astype(np.int16), shape)
        hu[skull] = bone[skull]
        brain = np.broadcast_to(_inside(x, y, z, *self._shell(self.scalp_mm + self.skull_mm)), shape)
        hu[brain] = BRAIN_HU
        for center, semi, value in self._structures():
            if not _misses(z, center, semi):
                hu[brain & _inside(x, y, z, center, semi)] = value
        for h in self.hemorrhages:
            if _misses(z, h.center_mm, h.semi_axes_mm):
                continue
            blood = brain & _inside(x, y, z, h.center_mm, h.semi_axes_mm)
            hu[blood] = h.hu
            label[blood] = h.label_value
        return hu, label


def default_hemorrhage(index: int = 0, rng: np.random.Generator | None = None) -> Hemorrhage:
    """A hemorrhage for the ``index``-th positive study: subtype cycles through :data:`SUBTYPES`,
    the position moves a little with ``rng``.

    Examples
    --------
    >>> default_hemorrhage(2).subtype
    'intraventricular'
    """
    shift = np.zeros(3) if rng is None else rng.uniform(-8.0, 8.0, size=3).round(1)
    side = 1.0 if index % 2 == 0 else -1.0  # alternate hemispheres
    base = np.array([28.0 * side, -12.0, 5.0])
    return Hemorrhage(center_mm=tuple(float(v) for v in base + shift), subtype=SUBTYPES[index % len(SUBTYPES)])


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceGeometry:
    """An axial stack: ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]``, z stepping by ``slice_step``.

    Parameters
    ----------
    rows, cols, n_slices
        Matrix and number of slices.
    pixel_spacing
        DICOM PixelSpacing: (row spacing, column spacing) in mm.
    slice_step
        Distance between consecutive slice positions (mm, > 0).
    origin
        ImagePositionPatient of the lowest slice (LPS centre of its first pixel, mm).

    Examples
    --------
    >>> g = SliceGeometry(rows=4, cols=4, n_slices=3, pixel_spacing=(2.0, 2.0), slice_step=5.0, origin=(-3.0, -3.0, 10.0))
    >>> g.ipp(2)
    (-3.0, -3.0, 20.0)
    >>> g.affine_ras()[:3, 3].tolist()
    [3.0, 3.0, 10.0]
    """

    rows: int = 96
    cols: int = 96
    n_slices: int = 24
    pixel_spacing: tuple[float, float] = (2.5, 2.5)
    slice_step: float = 5.0
    origin: tuple[float, float, float] = (-118.75, -118.75, -57.5)

    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

    def ipp(self, k: int) -> tuple[float, float, float]:
        x0, y0, z0 = self.origin
        return (float(x0), float(y0), float(z0 + k * self.slice_step))

    def slice_points(self, k: int) -> np.ndarray:
        """World LPS centres of the pixels of slice ``k``, shape (rows, cols, 3)."""
        x0, y0, z = self.ipp(k)
        rs, cs = self.pixel_spacing
        x = x0 + cs * np.arange(self.cols, dtype=np.float64)
        y = y0 + rs * np.arange(self.rows, dtype=np.float64)
        out = np.empty((self.rows, self.cols, 3), dtype=np.float64)
        out[..., 0] = x[None, :]
        out[..., 1] = y[:, None]
        out[..., 2] = z
        return out

    def affine_lps(self) -> np.ndarray:
        """Voxel ``[i, j, k]`` (column, row, slice) to LPS world (mm)."""
        rs, cs = self.pixel_spacing
        a = np.eye(4)
        a[:3, 0] = np.asarray(self.orientation[:3]) * cs
        a[:3, 1] = np.asarray(self.orientation[3:]) * rs
        a[:3, 2] = np.cross(self.orientation[:3], self.orientation[3:]) * self.slice_step
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """The same in RAS (NIfTI / MONAI): ``diag(-1, -1, 1, 1) @ affine_lps``."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()


def centred_geometry(rows: int = 96, cols: int | None = None, n_slices: int = 24, pixel_spacing: float = 2.5,
                     slice_step: float = 5.0, shift_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> SliceGeometry:
    """A stack centred on the phantom (plus ``shift_mm``).

    Examples
    --------
    >>> centred_geometry(96, n_slices=24).origin
    (-118.75, -118.75, -57.5)
    """
    cols = rows if cols is None else cols
    sx, sy, sz = (float(v) for v in shift_mm)
    return SliceGeometry(rows=rows, cols=cols, n_slices=n_slices, pixel_spacing=(pixel_spacing, pixel_spacing),
                         slice_step=slice_step,
                         origin=(-(cols - 1) / 2.0 * pixel_spacing + sx, -(rows - 1) / 2.0 * pixel_spacing + sy,
                                 -(n_slices - 1) / 2.0 * slice_step + sz))


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


@dataclass
class ForeignSeries:
    """One written series and its truth.

    Attributes
    ----------
    folder
        Where its files are (for RSNA: the flat image folder shared with every other series).
    files, sop_uids
        In slice order (increasing z), whatever order they were written in.
    truth_hu, blood
        ``[k, r, c]`` arrays (int16 HU, uint8 label 0..5) in slice order; None when the writer
        was asked not to keep them.
    slice_flags
        ``(n_slices, 5)`` 0/1 per subtype (:data:`SUBTYPES` order), in slice order.
    patient_name, birth_date
        What the files hold (None/"" when absent or empty).
    extra
        Writer-specific details (e.g. the rescale intercept, the transfer syntax UID).
    """

    folder: Path
    files: list[Path]
    sop_uids: list[str]
    series_uid: str
    study_uid: str
    patient_id: str
    geometry: SliceGeometry
    slice_flags: np.ndarray
    truth_hu: np.ndarray | None = None
    blood: np.ndarray | None = None
    variant: str = ""
    transfer_syntax: str = ExplicitVRLittleEndian
    patient_name: str | None = None
    birth_date: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return self.geometry.n_slices

    @property
    def affine_ras(self) -> np.ndarray:
        return self.geometry.affine_ras()

    @property
    def truth_ijk(self) -> np.ndarray:
        """``truth_hu`` as ``[i, j, k]`` = (column, row, slice): the layout of ichct's NIfTI output."""
        if self.truth_hu is None:
            raise ValueError("the truth was not kept (keep_truth=False)")
        return self.truth_hu.transpose(2, 1, 0)

    @property
    def blood_ijk(self) -> np.ndarray:
        if self.blood is None:
            raise ValueError("the truth was not kept (keep_truth=False)")
        return self.blood.transpose(2, 1, 0)

    @property
    def slice_labels(self) -> list[list[int]]:
        """Rows ``[any, epidural, ..., subdural]`` per slice, slice order (ichct's ``slice_labels``)."""
        return [[int(r.any())] + [int(v) for v in r] for r in self.slice_flags]

    @property
    def ct_labels(self) -> dict[str, int]:
        flags = self.slice_flags.any(axis=0)
        return {"any": int(flags.any()), **{name: int(flags[i]) for i, name in enumerate(SUBTYPES)}}

    @property
    def phi(self) -> tuple[str, ...]:
        """Identifying strings of this series that must never appear in an output."""
        out = [self.patient_id]
        if self.patient_name:
            out += [p for p in self.patient_name.replace("=", "^").split("^") if len(p) >= 2]
        if self.birth_date:
            out += [self.birth_date, f"{self.birth_date[:4]}-{self.birth_date[4:6]}-{self.birth_date[6:]}"]
        return tuple(dict.fromkeys(s for s in out if s))


@dataclass
class RsnaCorpus:
    """What :func:`write_rsna_layout` wrote.

    Attributes
    ----------
    root
        The data set root (``--root`` of ``ichct manifest build --source rsna``).
    csv_path, image_dir
        ``root/stage_2_train.csv`` and ``root/stage_2_train``.
    series
        Every series written, in writing order.
    n_files
        Number of DICOM files written.
    """

    root: Path
    csv_path: Path
    image_dir: Path
    series: list[ForeignSeries]
    n_files: int

    @property
    def by_series_uid(self) -> dict[str, ForeignSeries]:
        return {s.series_uid: s for s in self.series}

    @property
    def patients(self) -> dict[str, list[ForeignSeries]]:
        out: dict[str, list[ForeignSeries]] = {}
        for s in self.series:
            out.setdefault(s.patient_id, []).append(s)
        return out

    @property
    def studies(self) -> dict[str, list[ForeignSeries]]:
        out: dict[str, list[ForeignSeries]] = {}
        for s in self.series:
            out.setdefault(s.study_uid, []).append(s)
        return out

    @property
    def phi(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for s in self.series for p in s.phi))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Within the block pydicom neither validates nor warns about values (RSNA "UIDs" are not UIDs).

    Examples
    --------
    >>> with quiet_pydicom():
    ...     ds = Dataset(); ds.SOPInstanceUID = "ID_0123456789"
    """
    settings = pydicom.config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Invalid value for VR")
            yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


class _IdMaker:
    """Unique ``ID_<hex>`` strings (as in the RSNA set), drawn from one generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def __call__(self, n_hex: int) -> str:
        while True:
            value = rsna_id(self.rng, n_hex)
            if value not in self.used:
                self.used.add(value)
                return value


def rsna_id(rng: np.random.Generator, n_hex: int = 9) -> str:
    """An RSNA-style identifier: ``ID_`` and ``n_hex`` lower-case hex digits.

    Examples
    --------
    >>> rsna_id(np.random.default_rng(0), 10)[:3]
    'ID_'
    """
    return "ID_" + format(int(rng.integers(0, 16 ** n_hex)), f"0{n_hex}x")


def uid_2_25(rng: np.random.Generator) -> str:
    """A valid DICOM UID under the UUID-derived root ``2.25`` (PS3.5 B.2), from ``rng``.

    Examples
    --------
    >>> uid_2_25(np.random.default_rng(0)).startswith("2.25.")
    True
    """
    value = int.from_bytes(rng.bytes(16), "big") or 1
    return f"2.25.{value}"


def _ds(value: float) -> str:
    """A DS string of at most 16 characters."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        text = f"{float(value):.10g}"
    return text


def _file_meta(sop_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    return meta


def _slice_truth(phantom: HeadPhantom, geometry: SliceGeometry, k: int) -> tuple[np.ndarray, np.ndarray]:
    """HU and blood label of slice ``k``, shape (rows, cols)."""
    x0, y0, z = geometry.ipp(k)
    rs, cs = geometry.pixel_spacing
    x = (x0 + cs * np.arange(geometry.cols, dtype=np.float64))[None, :]
    y = (y0 + rs * np.arange(geometry.rows, dtype=np.float64))[:, None]
    return phantom.evaluate_xyz(x, y, z)


def _stored(hu: np.ndarray, variant: str, intercept: float) -> np.ndarray:
    """Stored pixel values of one slice for an RSNA encoding variant."""
    if variant == SIGNED16:
        return (hu.astype(np.int32) - int(intercept)).astype(np.int16)
    if variant == UNSIGNED12:
        out = hu.astype(np.int32) - int(intercept)
        if out.min() < 0 or out.max() > 4095:
            raise ValueError("HU out of the 12-bit range of this encoding")
        return out.astype(np.uint16)
    if variant == WRAP12:
        return np.mod(hu.astype(np.int32) - int(intercept), 4096).astype(np.uint16)
    raise ValueError(f"unknown variant {variant!r}; one of {RSNA_VARIANTS}")


def _pixel_module(ds: Dataset, rows: int, cols: int, signed: bool, bits_stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)


# ---------------------------------------------------------------------------------------------
# RSNA 2019 layout
# ---------------------------------------------------------------------------------------------


def write_rsna_layout(
    root: str | Path,
    *,
    studies: int = 3,
    patients: int | None = None,
    series_per_study: int | Sequence[int] = 1,
    n_series: int | None = None,
    files_per_series: int = 24,
    positive_fraction: float = 0.5,
    positives: Sequence[bool] | None = None,
    variants: Sequence[str] = (SIGNED16, UNSIGNED12),
    wrap_intercept: float = 1.0,
    multi_valued_window_every: int = 3,
    shuffle: bool = True,
    seed: int = 0,
    rows: int = 96,
    cols: int | None = None,
    pixel_spacing: float = 2.5,
    slice_step: float = 5.0,
    keep_truth: bool = True,
    image_dir: str = "stage_2_train",
    csv_name: str = "stage_2_train.csv",
) -> RsnaCorpus:
    """Write the RSNA 2019 intracranial hemorrhage challenge layout, one slice at a time.

    ``root/stage_2_train/ID_<hex>.dcm`` (flat; the file name is the SOPInstanceUID) and
    ``root/stage_2_train.csv`` (``ID,Label``; rows ``ID_<hex>_<subtype>`` for the five subtypes
    and ``any``, six consecutive rows per image, labels from the phantom's blood per slice).
    Every file holds exactly the elements of :data:`RSNA_KEYWORDS`: no SOPClassUID (only the file
    meta's MediaStorageSOPClassUID), no FrameOfReferenceUID, ImageType, InstanceNumber,
    SliceThickness, SeriesNumber or Manufacturer; StudyID is present but empty. "UIDs" are
    ``ID_`` + 9 (SOP) or 10 (study, series) hex digits; PatientID is ``ID_`` + 8 hex digits, as in
    the challenge data. Transfer syntax: explicit VR little endian.

    Parameters
    ----------
    root
        Data set root; created. Existing files of the same names are overwritten.
    studies, patients
        Number of studies, and of patients they belong to (studies are dealt to patients in
        turn; default: one patient per study).
    series_per_study
        Series per study (an int, or one count per study). Series of one study share the
        patient, the study UID and the hemorrhage, but not their position or encoding.
    n_series
        Total number of series instead of ``studies`` (studies = ceil(n_series /
        series_per_study)); with ``files_per_series`` it sizes big corpora (e.g. 2500 x 40 =
        100,000 files).
    files_per_series
        Slices per series.
    positive_fraction, positives
        Which studies hold a hemorrhage: ``positives`` (one bool per study) or the first
        ``round(positive_fraction * studies)`` studies of a seeded shuffle.
    variants
        Pixel encodings dealt to the series in turn: :data:`SIGNED16`, :data:`UNSIGNED12`,
        :data:`WRAP12` (the 12-bit offset-wrap files, RescaleIntercept ``wrap_intercept``).
    multi_valued_window_every
        Every n-th series gets multi-valued WindowCenter/WindowWidth (``00036\\00036``-style);
        0 for never.
    shuffle
        Write slices (files and CSV rows) in a random order within each series; the flat
        folder mixes series whatever the order.
    seed
        Everything (IDs, positions, hemorrhages) follows from it.
    rows, cols, pixel_spacing, slice_step
        Matrix (cols defaults to rows), in-plane spacing and z step (mm). Each series' origin is
        shifted by a few mm in x, y, z.
    keep_truth
        Keep each series' HU volume and blood labels in the result (turn off for big corpora:
        the slice labels are always kept).

    Returns
    -------
    RsnaCorpus
        Root, CSV, image folder, and per series a :class:`ForeignSeries` (``extra`` holds
        ``intercept``, ``pixel_representation``, ``bits_stored``, ``window_multi_valued``).

    Examples
    --------
    >>> import tempfile
    >>> corpus = write_rsna_layout(tempfile.mkdtemp(), studies=2, files_per_series=4, rows=32, pixel_spacing=7.5)
    >>> corpus.n_files, len(corpus.series), (corpus.root / "stage_2_train.csv").exists()
    (8, 2, True)
    """
    root = Path(root)
    flat = root / image_dir
    flat.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    new_id = _IdMaker(rng)
    if isinstance(series_per_study, int):
        if n_series is not None:
            studies = max(1, math.ceil(n_series / series_per_study))
        per_study = [series_per_study] * studies
    else:
        per_study = [int(v) for v in series_per_study]
        studies = len(per_study)
    if n_series is not None:
        remaining = n_series
        capped = []
        for count in per_study:
            capped.append(min(count, remaining))
            remaining -= capped[-1]
        per_study = [c for c in capped if c > 0]
        studies = len(per_study)
    n_patients = studies if patients is None else max(1, min(patients, studies))
    patient_ids = [new_id(8) for _ in range(n_patients)]
    if positives is None:
        n_pos = int(round(positive_fraction * studies))
        chosen = set(rng.permutation(studies)[:n_pos].tolist())
        positives = [s in chosen for s in range(studies)]
    elif len(positives) != studies:
        raise ValueError(f"positives: need one flag per study ({studies}), got {len(positives)}")
    if not variants or any(v not in RSNA_VARIANTS for v in variants):
        raise ValueError(f"variants must be a non-empty sequence of {RSNA_VARIANTS}")
    base_phantom = HeadPhantom()

    series_out: list[ForeignSeries] = []
    n_files = 0
    series_index = 0
    n_positive = 0
    with quiet_pydicom(), open(root / csv_name, "w", newline="", encoding="ascii") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["ID", "Label"])
        for s in range(studies):
            patient_id = patient_ids[s % n_patients]
            study_uid = new_id(10)
            phantom = base_phantom
            if positives[s]:
                phantom = base_phantom.with_hemorrhages(default_hemorrhage(n_positive, rng))
                n_positive += 1
            for _ in range(per_study[s]):
                variant = variants[series_index % len(variants)]
                shift = (float(rng.integers(-4, 5)), float(rng.integers(-4, 5)), float(rng.integers(-8, 9)) / 2.0)
                geometry = centred_geometry(rows, cols, files_per_series, pixel_spacing, slice_step, shift)
                multi = multi_valued_window_every > 0 and series_index % multi_valued_window_every == multi_valued_window_every - 1
                series = _write_rsna_series(flat, writer, new_id, rng, phantom, geometry, patient_id, study_uid, variant,
                                            wrap_intercept, multi, shuffle, keep_truth)
                series_out.append(series)
                n_files += files_per_series
                series_index += 1
    return RsnaCorpus(root=root, csv_path=root / csv_name, image_dir=flat, series=series_out, n_files=n_files)


def _write_rsna_series(flat: Path, writer, new_id: _IdMaker, rng: np.random.Generator, phantom: HeadPhantom,
                       geometry: SliceGeometry, patient_id: str, study_uid: str, variant: str, wrap_intercept: float,
                       multi_window: bool, shuffle: bool, keep_truth: bool) -> ForeignSeries:
    series_uid = new_id(10)
    n = geometry.n_slices
    signed = variant == SIGNED16
    bits_stored = 16 if signed else 12
    intercept = wrap_intercept if variant == WRAP12 else -1024.0
    sop_uids = [new_id(9) for _ in range(n)]
    files = [flat / f"{sop}.dcm" for sop in sop_uids]
    flags = np.zeros((n, len(SUBTYPES)), dtype=np.int8)
    truth = np.empty((n, geometry.rows, geometry.cols), dtype=np.int16) if keep_truth else None
    blood = np.empty((n, geometry.rows, geometry.cols), dtype=np.uint8) if keep_truth else None
    order = rng.permutation(n) if shuffle else np.arange(n)
    if multi_window:
        center, width = ["00036", "00036"], ["00080", "00080"]
    else:
        center, width = "40", "80"
    # One data set per series, updated in place for each slice (the per-slice elements are
    # SOPInstanceUID, ImagePositionPatient and PixelData): cheaper than building 22 elements per file.
    ds = Dataset()
    ds.file_meta = _file_meta(sop_uids[0], ExplicitVRLittleEndian)
    ds.SOPInstanceUID = sop_uids[0]
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.ImagePositionPatient = [_ds(v) for v in geometry.ipp(0)]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
    _pixel_module(ds, geometry.rows, geometry.cols, signed, bits_stored)
    ds.PixelSpacing = [_ds(v) for v in geometry.pixel_spacing]
    ds.WindowCenter = center
    ds.WindowWidth = width
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = "1"
    ds.PixelData = b""
    for k in order.tolist():
        hu, label = _slice_truth(phantom, geometry, k)
        if truth is not None:
            truth[k], blood[k] = hu, label  # type: ignore[index]
        for v in range(1, len(SUBTYPES) + 1):
            flags[k, v - 1] = int((label == v).any())
        stored = _stored(hu, variant, intercept)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uids[k]
        ds.SOPInstanceUID = sop_uids[k]
        ds.ImagePositionPatient = [_ds(v) for v in geometry.ipp(k)]
        ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
        ds.save_as(files[k], enforce_file_format=True)
        sop = sop_uids[k]
        for name in RSNA_SUBTYPES:
            value = int(flags[k].any()) if name == "any" else int(flags[k, SUBTYPES.index(name)])
            writer.writerow([f"{sop}_{name}", value])
    return ForeignSeries(
        folder=flat, files=files, sop_uids=sop_uids, series_uid=series_uid, study_uid=study_uid, patient_id=patient_id,
        geometry=geometry, slice_flags=flags, truth_hu=truth, blood=blood, variant=variant,
        transfer_syntax=ExplicitVRLittleEndian,
        extra={"intercept": intercept, "pixel_representation": int(signed), "bits_stored": bits_stored,
               "window_multi_valued": multi_window,
               "hemorrhage": phantom.hemorrhages[0] if phantom.hemorrhages else None},
    )


# ---------------------------------------------------------------------------------------------
# full CT image headers: de-identified studies, transfer syntaxes, private tags, character sets
# ---------------------------------------------------------------------------------------------

#: Type 2 attributes that a Basic-Profile de-identification empties (or removes).
DEID_TYPE2 = ("PatientBirthDate", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID")
#: Other identifying or dating attributes a de-identifier removes.
DEID_REMOVED = ("SeriesDate", "AcquisitionDate", "ContentDate", "SeriesTime", "AcquisitionTime", "ContentTime",
                "InstitutionName", "InstitutionAddress", "OperatorsName", "StationName", "PatientAge", "PatientSex")


def _ge_private_blocks(ds: Dataset) -> None:
    """GE-style private data (odd groups 0009, 0019, 0043, 0045), like a LightSpeed's."""
    iden = ds.private_block(0x0009, "GEMS_IDEN_01", create=True)
    iden.add_new(0x01, "LO", "CT_LIGHTSPEED")
    iden.add_new(0x02, "SH", "CT01")
    iden.add_new(0x04, "SH", "LightSpeed16")
    iden.add_new(0x27, "SL", 1_120_000_000)
    acqu = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    acqu.add_new(0x02, "SL", 912)
    acqu.add_new(0x23, "DS", "0.5625")
    acqu.add_new(0x24, "DS", "-157.5")
    parm = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
    parm.add_new(0x10, "US", 65)
    parm.add_new(0x28, "OB", b"\x01\x02\x03\x04")
    helios = ds.private_block(0x0045, "GEMS_HELIOS_01", create=True)
    helios.add_new(0x01, "SS", 16)


def _encode_pixels(ds: Dataset, stored: np.ndarray, syntax: str) -> None:
    uid = TRANSFER_SYNTAXES[syntax]
    ds.file_meta.TransferSyntaxUID = uid
    if syntax in ("explicit", "implicit"):
        ds.PixelData = stored.astype("<i2" if stored.dtype == np.int16 else "<u2").tobytes()
    elif syntax == "big_endian":
        ds.PixelData = stored.astype(">i2" if stored.dtype == np.int16 else ">u2").tobytes()
    else:
        # pyjpegls (JPEG-LS) / pylibjpeg-openjpeg (JPEG 2000); the instance keeps its SOPInstanceUID
        ds.compress(uid, stored, generate_instance_uid=False)


def write_ct_series(
    folder: str | Path,
    *,
    n_slices: int = 16,
    rows: int = 64,
    cols: int | None = None,
    pixel_spacing: float = 3.75,
    slice_step: float = 5.0,
    shift_mm: Sequence[float] = (0.0, 0.0, 0.0),
    hemorrhage: Hemorrhage | bool | None = True,
    transfer_syntax: str = "explicit",
    signed: bool = False,
    bits_stored: int | None = None,
    patient_name: str = "Zebulonqx^Foreigner",
    patient_id: str = "FRGN-4711-ZQX",
    birth_date: str = "19230405",
    charset: str | None = None,
    series_description: str = "HEAD 5mm STND",
    institution: str = "Foreign Hospital",
    private_tags: bool = False,
    deidentify: bool = False,
    type2: str = "empty",
    frame_of_reference: bool = True,
    shuffle_files: bool = True,
    seed: int = 0,
    verify: bool = True,
) -> ForeignSeries:
    """Write one axial CT Image Storage series with a full CT image header.

    Parameters
    ----------
    folder
        Created; files are named ``IM00001``... in a shuffled order (no extension).
    n_slices, rows, cols, pixel_spacing, slice_step, shift_mm
        Geometry (see :func:`centred_geometry`); the default 64 x 64 at 3.75 mm covers the head.
    hemorrhage
        A :class:`Hemorrhage`, True (:func:`default_hemorrhage`) or None/False (no blood).
    transfer_syntax
        A key of :data:`TRANSFER_SYNTAXES`.
    signed, bits_stored
        PixelRepresentation 1 with stored = HU (intercept 0, BitsStored 16), or 0 with
        stored = HU + 1024 (intercept -1024, BitsStored 12 unless given).
    patient_name, patient_id, birth_date, charset
        Identity; ``charset`` becomes SpecificCharacterSet (e.g. ``"ISO_IR 100"``,
        ``"ISO_IR 192"``) and pydicom encodes the text with it.
    series_description, institution
        Free text (may be non-ASCII with a matching ``charset``).
    private_tags
        Add GE-style private blocks (see :func:`write_private_tag_series`).
    deidentify, type2, frame_of_reference
        See :func:`write_deidentified_study`.
    seed
        UIDs (2.25 root) and the file order follow from it.
    verify
        Read every file back with pydicom and check its stored pixels.

    Returns
    -------
    ForeignSeries

    Examples
    --------
    >>> import tempfile
    >>> s = write_ct_series(tempfile.mkdtemp(), n_slices=3, rows=32, pixel_spacing=7.5)
    >>> s.truth_hu.shape, len(s.files)
    ((3, 32, 32), 3)
    """
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {tuple(TRANSFER_SYNTAXES)}, got {transfer_syntax!r}")
    if type2 not in ("empty", "absent"):
        raise ValueError(f"type2 must be 'empty' or 'absent', got {type2!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    geometry = centred_geometry(rows, cols, n_slices, pixel_spacing, slice_step, shift_mm)
    if hemorrhage is True:
        hemorrhage = default_hemorrhage(0)
    phantom = HeadPhantom().with_hemorrhages(hemorrhage) if hemorrhage else HeadPhantom()
    bits = bits_stored or (16 if signed else 12)
    intercept = 0.0 if signed else -1024.0
    study_uid, series_uid, for_uid = uid_2_25(rng), uid_2_25(rng), uid_2_25(rng)
    sop_uids = [uid_2_25(rng) for _ in range(n_slices)]
    if deidentify:
        patient_id = f"DEID{int(rng.integers(0, 16 ** 8)):08X}"  # the de-identifier's pseudonym
        patient_name = ""
        birth_date = "" if type2 == "empty" else None  # type: ignore[assignment]
    write_order = rng.permutation(n_slices) if shuffle_files else np.arange(n_slices)
    files: list[Path | None] = [None] * n_slices
    truth = np.empty((n_slices, geometry.rows, geometry.cols), dtype=np.int16)
    blood = np.empty_like(truth, dtype=np.uint8)
    flags = np.zeros((n_slices, len(SUBTYPES)), dtype=np.int8)
    for number, k in enumerate(write_order.tolist(), start=1):
        hu, label = _slice_truth(phantom, geometry, k)
        truth[k], blood[k] = hu, label
        for v in range(1, len(SUBTYPES) + 1):
            flags[k, v - 1] = int((label == v).any())
        stored = hu.astype(np.int16) if signed else (hu.astype(np.int32) + 1024).astype(np.uint16)
        ds = Dataset()
        ds.file_meta = _file_meta(sop_uids[k], TRANSFER_SYNTAXES[transfer_syntax])
        if charset:
            ds.SpecificCharacterSet = charset
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uids[k]
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20190612"
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101530"
        ds.AccessionNumber = "ACC20190612A"
        ds.Modality = "CT"
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        ds.InstitutionName = institution
        ds.ReferringPhysicianName = "Referrer^Ronja"
        ds.StationName = "CTSTATION1"
        ds.StudyDescription = "CT HEAD"
        ds.SeriesDescription = series_description
        ds.ManufacturerModelName = "LightSpeed16"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = birth_date
        ds.PatientSex = "O"
        ds.PatientAge = "095Y"
        ds.BodyPartExamined = "HEAD"
        ds.SliceThickness = _ds(slice_step)
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "4711"
        ds.SeriesNumber = 3
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = number  # follows the file order, not the anatomy
        ds.ImagePositionPatient = [_ds(v) for v in geometry.ipp(k)]
        ds.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(geometry.ipp(k)[2])
        _pixel_module(ds, geometry.rows, geometry.cols, signed, bits)
        ds.PixelSpacing = [_ds(v) for v in geometry.pixel_spacing]
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        if private_tags:
            _ge_private_blocks(ds)
        if deidentify:
            _deidentify(ds, type2=type2, frame_of_reference=frame_of_reference)
        elif not frame_of_reference:
            del ds.FrameOfReferenceUID
            del ds.PositionReferenceIndicator
        _encode_pixels(ds, stored, transfer_syntax)
        path = folder / f"IM{number:05d}"
        ds.save_as(path, enforce_file_format=True)
        files[k] = path
        if verify:
            back = pydicom.dcmread(path)
            if not np.array_equal(back.pixel_array, stored):
                raise AssertionError(f"{path}: pixels do not read back ({transfer_syntax})")
    return ForeignSeries(
        folder=folder, files=[p for p in files if p is not None], sop_uids=sop_uids, series_uid=series_uid,
        study_uid=study_uid, patient_id=patient_id, geometry=geometry, slice_flags=flags, truth_hu=truth, blood=blood,
        variant=("signed16" if signed else f"unsigned{bits}"), transfer_syntax=TRANSFER_SYNTAXES[transfer_syntax],
        patient_name=patient_name or None, birth_date=birth_date or None,
        extra={"intercept": intercept, "charset": charset, "frame_of_reference_uid": for_uid if frame_of_reference else None,
               "private_tags": private_tags, "deidentified": deidentify, "type2": type2 if deidentify else None,
               "series_description": series_description},
    )


def _deidentify(ds: Dataset, *, type2: str, frame_of_reference: bool) -> None:
    """PS3.15 Annex E Basic Application Level Confidentiality Profile, as a de-identifier applies it
    (the UIDs were already generated fresh under 2.25; the pseudonymous PatientID is set by the caller)."""
    ds.PatientName = ""
    for keyword in DEID_TYPE2:
        if type2 == "empty":
            setattr(ds, keyword, "")
        elif keyword in ds:
            delattr(ds, keyword)
    for keyword in DEID_REMOVED:
        if keyword in ds:
            delattr(ds, keyword)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 Basic Application Level Confidentiality Profile"
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = DicomSequence([code])
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    if not frame_of_reference:
        del ds.FrameOfReferenceUID
        del ds.PositionReferenceIndicator


def write_deidentified_study(folder: str | Path, *, type2: str = "empty", frame_of_reference: bool = True,
                             **kwargs: Any) -> ForeignSeries:
    """A CT series as a PS3.15 Basic-Profile de-identifier leaves it.

    PatientName empty; PatientID replaced by a pseudonym (``DEID`` + 8 hex digits);
    PatientBirthDate, StudyDate, StudyTime, AccessionNumber, ReferringPhysicianName and StudyID
    present but empty (``type2="empty"``) or absent (``type2="absent"``); other dates, times,
    institution, station, age and sex removed; PatientIdentityRemoved ``YES``,
    DeidentificationMethod and its code sequence (DCM 113100); Study, Series, SOP Instance and
    Frame of Reference UIDs new ``2.25.<int>`` UIDs; FrameOfReferenceUID (and
    PositionReferenceIndicator) absent with ``frame_of_reference=False``.

    Parameters
    ----------
    folder
        Created.
    type2
        ``"empty"`` or ``"absent"``.
    frame_of_reference
        Keep FrameOfReferenceUID.
    **kwargs
        Passed to :func:`write_ct_series` (geometry, transfer syntax, seed...).

    Returns
    -------
    ForeignSeries
        ``patient_id`` is the pseudonym, ``patient_name`` None.

    Examples
    --------
    >>> import tempfile
    >>> s = write_deidentified_study(tempfile.mkdtemp(), type2="absent", n_slices=2, rows=32, pixel_spacing=7.5)
    >>> "BirthDate" in str(pydicom.dcmread(s.files[0], stop_before_pixels=True))
    False
    """
    return write_ct_series(folder, deidentify=True, type2=type2, frame_of_reference=frame_of_reference, **kwargs)


def write_transfer_syntax_series(folder: str | Path, syntax: str, **kwargs: Any) -> ForeignSeries:
    """A CT series in one transfer syntax: ``"implicit"`` (implicit VR little endian),
    ``"big_endian"`` (explicit VR big endian, retired but found in old archives; the pixel bytes
    are big endian), ``"jpeg_ls"`` (JPEG-LS lossless, pyjpegls) or ``"jpeg2000"`` (JPEG 2000
    lossless, pylibjpeg-openjpeg); also ``"explicit"``.

    Parameters
    ----------
    folder
        Created.
    syntax
        A key of :data:`TRANSFER_SYNTAXES`.
    **kwargs
        Passed to :func:`write_ct_series` (e.g. ``signed=True``).

    Examples
    --------
    >>> import tempfile
    >>> s = write_transfer_syntax_series(tempfile.mkdtemp(), "big_endian", n_slices=2, rows=32, pixel_spacing=7.5)
    >>> s.transfer_syntax == ExplicitVRBigEndian
    True
    """
    return write_ct_series(folder, transfer_syntax=syntax, **kwargs)


def write_private_tag_series(folder: str | Path, **kwargs: Any) -> ForeignSeries:
    """A CT series with GE-style private data in odd groups only: (0009,0010) ``GEMS_IDEN_01``,
    (0019,0010) ``GEMS_ACQU_01``, (0043,0010) ``GEMS_PARM_01``, (0045,0010) ``GEMS_HELIOS_01``,
    each with a few values (LO, SH, SL, DS, US, OB, SS).

    Parameters
    ----------
    folder
        Created.
    **kwargs
        Passed to :func:`write_ct_series` (e.g. ``transfer_syntax="implicit"``, where the
        private VRs are lost and read back as UN).

    Examples
    --------
    >>> import tempfile
    >>> s = write_private_tag_series(tempfile.mkdtemp(), n_slices=2, rows=32, pixel_spacing=7.5)
    >>> str(pydicom.dcmread(s.files[0])[0x0009, 0x0010].value)
    'GEMS_IDEN_01'
    """
    return write_ct_series(folder, private_tags=True, **kwargs)


#: Non-ASCII identities per SpecificCharacterSet: (patient name, series description, institution).
CHARSET_SAMPLES: dict[str, tuple[str, str, str]] = {
    "ISO_IR 100": ("Müller^Jürgen", "Schädel nativ 5mm", "Klinikum Süd"),
    "ISO_IR 192": ("山田^太郎", "頭部 単純 5mm", "Øvergård sjukehus"),
}


def write_charset_series(folder: str | Path, charset: str = "ISO_IR 100", *, patient_name: str | None = None,
                         **kwargs: Any) -> ForeignSeries:
    """A CT series whose patient name, series description and institution are non-ASCII text in
    ``charset`` (SpecificCharacterSet): ``"ISO_IR 100"`` (Latin-1, ``Müller^Jürgen``) or
    ``"ISO_IR 192"`` (UTF-8, ``山田^太郎``; pass e.g. ``patient_name="Øvergård^Åse"``).

    Parameters
    ----------
    folder
        Created.
    charset
        A key of :data:`CHARSET_SAMPLES`.
    patient_name
        Overrides the sample name.
    **kwargs
        Passed to :func:`write_ct_series`.

    Examples
    --------
    >>> import tempfile
    >>> s = write_charset_series(tempfile.mkdtemp(), "ISO_IR 100", n_slices=2, rows=32, pixel_spacing=7.5)
    >>> "Müller".encode("latin-1") in s.files[0].read_bytes()
    True
    """
    name, description, institution = CHARSET_SAMPLES[charset]
    return write_ct_series(folder, charset=charset, patient_name=patient_name or name, series_description=description,
                           institution=institution, **kwargs)


def read_keywords(path: str | Path) -> set[str]:
    """Keywords of the data set's top-level elements (file meta excluded; private elements as
    ``(gggg,eeee)``).

    Examples
    --------
    >>> import tempfile
    >>> c = write_rsna_layout(tempfile.mkdtemp(), studies=1, files_per_series=2, rows=32, pixel_spacing=7.5)
    >>> read_keywords(c.series[0].files[0]) == RSNA_KEYWORDS
    True
    """
    with quiet_pydicom():
        ds = pydicom.dcmread(path)
        return {elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})" for elem in ds}


if __name__ == "__main__":  # a quick way to look at a corpus: python tests/foreign_dicom.py OUT [N_SERIES]
    import sys
    import time

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "foreign_rsna")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    t0 = time.perf_counter()
    c = write_rsna_layout(out, n_series=count, files_per_series=40, keep_truth=False,
                          variants=(SIGNED16, UNSIGNED12, WRAP12))
    print(f"{c.n_files} files in {time.perf_counter() - t0:.1f} s under {os.fspath(out)}")
