"""Write synthetic series as CT Image Storage DICOM files (one file per slice, atomically).

Modules written: Patient, General Study, General Series, Frame of Reference, General Equipment,
General Image, Image Plane, Image Pixel, CT Image, VOI LUT and SOP Common, with every Type 1
attribute present and non-empty and the Type 2 attributes present. Transfer syntaxes: Explicit or
Implicit VR Little Endian, RLE Lossless (pydicom), JPEG Lossless SV1 (GDCM when importable,
otherwise JPEG 2000 Lossless through pylibjpeg-openjpeg).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
)

from ichct.pipeline.core.atomic import atomic_path

from .acquisition import Vendor

logger = logging.getLogger(__name__)

HU_MIN, HU_MAX = -1024, 3071

try:  # GDCM is optional: JPEG Lossless SV1 needs it, JPEG 2000 Lossless is the fallback
    import gdcm  # type: ignore[import-not-found]

    HAVE_GDCM = True
except ImportError:  # pragma: no cover - depends on the environment
    gdcm = None
    HAVE_GDCM = False


@dataclass
class StudyHeader:
    """Patient and study attributes shared by every series of a study."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    age: str
    study_uid: str
    study_id: str
    accession: str
    study_date: str
    study_time: str
    frame_of_reference_uid: str
    vendor: Vendor
    software: str


@dataclass
class SeriesHeader:
    """Series attributes plus everything per slice (positions, UIDs, instance numbers)."""

    series_uid: str
    series_number: int
    description: str
    image_type: tuple[str, ...]
    kernel: str
    series_time: str
    kvp: int
    mas: float
    thickness_mm: float
    tilt_deg: float
    fov_mm: float
    windows: list[tuple[float, float]]
    iop_text: tuple[str, ...]
    pixel_spacing_text: tuple[str, str]
    ipp_text: list[tuple[str, ...]]
    slice_locations: list[float]
    sop_uids: list[str]
    instance_numbers: list[int]
    rescale_intercept: int
    rescale_type: str = "HU"
    padding_value: int | None = None
    pixel_signed: bool = True
    bits_stored: int = 16


def encode_stored(hu: np.ndarray, vendor: Vendor, outside: np.ndarray | None) -> tuple[np.ndarray, int | None]:
    """HU (float, ``[k, j, i]``) -> stored integers in the vendor's encoding; returns (stored, padding)."""
    values = np.clip(np.rint(hu), HU_MIN, HU_MAX) - vendor.intercept
    padding = None
    if outside is not None:
        if vendor.padding_hu is not None:
            padding = int(vendor.padding_hu - vendor.intercept)
            values[:, outside] = padding
        else:
            values[:, outside] = HU_MIN - vendor.intercept
    dtype = np.int16 if vendor.signed else np.uint16
    return values.astype(dtype), padding


def _base_dataset(study: StudyHeader, series: SeriesHeader, rows: int, columns: int) -> Dataset:
    v = study.vendor
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(series.image_type)
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = series.series_time
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = series.sop_uids[0]
    ds.StudyDate = study.study_date
    ds.SeriesDate = study.study_date
    ds.AcquisitionDate = study.study_date
    ds.ContentDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesTime = series.series_time
    ds.AcquisitionTime = series.series_time
    ds.ContentTime = series.series_time
    ds.AccessionNumber = study.accession
    ds.Modality = "CT"
    ds.Manufacturer = v.manufacturer
    ds.InstitutionName = "ichct synthetic cohort"
    ds.ReferringPhysicianName = ""
    ds.StationName = "SYNTHCT01"
    ds.StudyDescription = "CT HEAD WO CONTRAST"
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = v.model
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.PatientAge = study.age
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = _ds(series.thickness_mm)
    ds.KVP = str(series.kvp)
    ds.DataCollectionDiameter = "500"
    ds.SoftwareVersions = study.software
    ds.ReconstructionDiameter = _ds(series.fov_mm)
    ds.DistanceSourceToDetector = "946.7"
    ds.DistanceSourceToPatient = "541"
    ds.GantryDetectorTilt = _ds(series.tilt_deg)
    ds.TableHeight = "160"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "1000"
    ds.XRayTubeCurrent = str(int(round(series.mas)))
    ds.Exposure = str(int(round(series.mas)))
    ds.FilterType = "HEAD FILTER"
    ds.FocalSpots = "0.7"
    ds.ConvolutionKernel = series.kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = series.instance_numbers[0]
    ds.ImagePositionPatient = list(series.ipp_text[0])
    ds.ImageOrientationPatient = list(series.iop_text)
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(series.slice_locations[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = list(series.pixel_spacing_text)
    ds.BitsAllocated = 16
    ds.BitsStored = series.bits_stored
    ds.HighBit = series.bits_stored - 1
    ds.PixelRepresentation = 1 if series.pixel_signed else 0
    if series.padding_value is not None:
        ds.PixelPaddingValue = series.padding_value
    centres = [_ds(c) for c, _ in series.windows]
    widths = [_ds(w) for _, w in series.windows]
    ds.WindowCenter = centres if len(centres) > 1 else centres[0]
    ds.WindowWidth = widths if len(widths) > 1 else widths[0]
    ds.RescaleIntercept = str(series.rescale_intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = series.rescale_type
    ds.LossyImageCompression = "00"
    return ds


def _ds(value: float) -> str:
    from .grid import format_ds

    return format_ds(float(value), 4)


def _file_meta(sop_uid: str, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "ICHCT_SYNTH"
    return meta


# Attributes that change from slice to slice; everything else is serialised once per series.
_PER_SLICE = (0x00080018, 0x00200013, 0x00200032, 0x00201041, 0x7FE00010)
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}


def _element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    """One little-endian data element (``value`` already padded to even length)."""
    head = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
    if implicit:
        return head + len(value).to_bytes(4, "little") + value
    if vr in _LONG_VRS:
        return head + vr.encode("ascii") + b"\0\0" + len(value).to_bytes(4, "little") + value
    return head + vr.encode("ascii") + len(value).to_bytes(2, "little") + value


def _text(value: str, pad: bytes = b" ") -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def _file_meta_bytes(sop_uid: str, syntax: str) -> bytes:
    """Preamble, DICM prefix and the File Meta Information group (always Explicit VR LE)."""
    body = b"".join([
        _element(0x00020001, "OB", b"\0\1", False),
        _element(0x00020002, "UI", _text(str(CTImageStorage), b"\0"), False),
        _element(0x00020003, "UI", _text(sop_uid, b"\0"), False),
        _element(0x00020010, "UI", _text(str(syntax), b"\0"), False),
        _element(0x00020012, "UI", _text(str(PYDICOM_IMPLEMENTATION_UID), b"\0"), False),
        _element(0x00020013, "SH", _text("ICHCT_SYNTH"), False),
    ])
    return b"\0" * 128 + b"DICM" + _element(0x00020000, "UL", len(body).to_bytes(4, "little"), False) + body


def _dataset_bytes(ds: Dataset, implicit: bool) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


class _SeriesEncoder:
    """Serialises the constant attributes of a series once; slices only add their own few elements."""

    def __init__(self, ds: Dataset, implicit: bool) -> None:
        self.implicit = implicit
        bounds = list(_PER_SLICE)
        runs: list[Dataset] = [Dataset() for _ in range(len(bounds) + 1)]
        for elem in ds:
            tag = int(elem.tag)
            if tag in _PER_SLICE:
                continue
            runs[sum(tag > b for b in bounds)].add(elem)
        self.runs = [_dataset_bytes(r, implicit) if len(r) else b"" for r in runs]

    def encode(self, sop_uid: str, syntax: str, instance: int, ipp: tuple[str, ...], location: str, pixel_element: bytes) -> bytes:
        imp = self.implicit
        variable = [
            _element(0x00080018, "UI", _text(sop_uid, b"\0"), imp),
            _element(0x00200013, "IS", _text(str(instance)), imp),
            _element(0x00200032, "DS", _text("\\".join(ipp)), imp),
            _element(0x00201041, "DS", _text(location), imp),
            pixel_element,
        ]
        parts = [_file_meta_bytes(sop_uid, syntax)]
        for run, elem in zip(self.runs, variable):
            parts.append(run)
            parts.append(elem)
        parts.append(self.runs[-1])
        return b"".join(parts)


def _native_pixels(plane: np.ndarray, implicit: bool) -> bytes:
    return _element(0x7FE00010, "OW", plane.astype("<u2" if plane.dtype.kind == "u" else "<i2").tobytes(), implicit)


def _encapsulated_pixels(frame: bytes) -> bytes:
    from pydicom.encaps import encapsulate

    payload = encapsulate([frame])
    head = (0x7FE0).to_bytes(2, "little") + (0x0010).to_bytes(2, "little") + b"OB\0\0" + b"\xff\xff\xff\xff"
    return head + payload + b"\xfe\xff\xdd\xe0\0\0\0\0"


def write_series(series_dir: str | Path, study: StudyHeader, series: SeriesHeader, stored: np.ndarray, compression: str) -> list[Path]:
    """Write ``stored`` (``[k, rows, cols]``, slice ``k`` at ``series.ipp_text[k]``) as one file per slice.

    Files are named ``IM<instance>.dcm`` and written to a hidden temporary name first, then renamed.
    The bytes are those pydicom writes for the same dataset; constant attributes are encoded once.
    """
    series_dir = Path(series_dir)
    series_dir.mkdir(parents=True, exist_ok=True)
    n, rows, columns = stored.shape
    ds = _base_dataset(study, series, rows, columns)
    if compression == "none":
        syntax = ImplicitVRLittleEndian if study.vendor.implicit_vr else ExplicitVRLittleEndian
    elif compression == "rle":
        syntax = RLELossless
    elif HAVE_GDCM:
        syntax = ExplicitVRLittleEndian  # transcoded by GDCM below
    else:
        syntax = JPEG2000Lossless
    encoder = _SeriesEncoder(ds, implicit=syntax == ImplicitVRLittleEndian)
    paths: list[Path] = []
    for k in range(n):
        plane = np.ascontiguousarray(stored[k])
        if syntax in (RLELossless, JPEG2000Lossless):
            from pydicom.pixels.encoders import JPEG2000LosslessEncoder, RLELosslessEncoder

            enc = RLELosslessEncoder if syntax == RLELossless else JPEG2000LosslessEncoder
            frame = enc.encode(plane, rows=rows, columns=columns, samples_per_pixel=1, bits_allocated=16,
                               bits_stored=series.bits_stored, pixel_representation=1 if series.pixel_signed else 0,
                               photometric_interpretation="MONOCHROME2", number_of_frames=1)
            pixels = _encapsulated_pixels(frame)
        else:
            pixels = _native_pixels(plane, encoder.implicit)
        data = encoder.encode(series.sop_uids[k], syntax, series.instance_numbers[k], series.ipp_text[k],
                              _ds(series.slice_locations[k]), pixels)
        final = series_dir / f"IM{series.instance_numbers[k]:04d}.dcm"
        if compression == "jpeg_lossless" and HAVE_GDCM:
            _save_gdcm_jpeg_lossless(data, final)
        else:
            with atomic_path(final) as tmp:
                tmp.write_bytes(data)
        paths.append(final)
    return paths


def _set_raw(ds: Dataset, uid: str, plane: np.ndarray, syntax: str) -> None:
    ds.file_meta = _file_meta(uid, syntax)
    ds.PixelData = plane.tobytes()
    ds["PixelData"].VR = "OW"
    ds["PixelData"].is_undefined_length = False


def _save(ds: Dataset, final: Path) -> None:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with atomic_path(final) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _save_gdcm_jpeg_lossless(data: bytes, final: Path) -> None:
    """Uncompressed file bytes -> GDCM JPEG Lossless SV1 transcoding -> rename onto ``final``."""
    fd, raw_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".raw.dcm", dir=final.parent)
    os.close(fd)
    raw = Path(raw_name)
    try:
        raw.write_bytes(data)
        with atomic_path(final) as tmp:
            reader = gdcm.ImageReader()
            reader.SetFileName(str(raw))
            if not reader.Read():
                raise RuntimeError(f"GDCM could not read {raw}")
            change = gdcm.ImageChangeTransferSyntax()
            change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
            change.SetInput(reader.GetImage())
            if not change.Change():
                raise RuntimeError("GDCM could not encode JPEG Lossless")
            writer = gdcm.ImageWriter()
            writer.SetFileName(str(tmp))
            writer.SetFile(reader.GetFile())
            writer.SetImage(change.GetOutput())
            if not writer.Write():
                raise RuntimeError(f"GDCM could not write {tmp}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            raw.unlink()


@dataclass
class ScoutHeader:
    series_uid: str
    series_number: int
    sop_uid: str
    description: str
    spacing_text: str
    iop_text: tuple[str, ...]
    ipp_text: tuple[str, ...]
    series_time: str
    kvp: int


def write_scout(series_dir: str | Path, study: StudyHeader, scout: ScoutHeader, image: np.ndarray) -> Path:
    """A single-frame lateral localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)."""
    header = SeriesHeader(
        series_uid=scout.series_uid, series_number=scout.series_number, description=scout.description,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), kernel="", series_time=scout.series_time, kvp=scout.kvp,
        mas=30.0, thickness_mm=1.0, tilt_deg=0.0, fov_mm=float(scout.spacing_text) * image.shape[1],
        windows=[(1800.0, 3600.0)], iop_text=scout.iop_text, pixel_spacing_text=(scout.spacing_text, scout.spacing_text),
        ipp_text=[scout.ipp_text], slice_locations=[0.0], sop_uids=[scout.sop_uid], instance_numbers=[1],
        rescale_intercept=0, rescale_type="US", pixel_signed=False, bits_stored=12,
    )
    series_dir = Path(series_dir)
    series_dir.mkdir(parents=True, exist_ok=True)
    ds = _base_dataset(study, header, image.shape[0], image.shape[1])
    del ds.ConvolutionKernel
    ds.preamble = b"\0" * 128
    _set_raw(ds, scout.sop_uid, np.ascontiguousarray(image.astype(np.uint16)), ExplicitVRLittleEndian)
    final = series_dir / "IM0001.dcm"
    _save(ds, final)
    return final
