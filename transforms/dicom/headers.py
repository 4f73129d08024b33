"""Per-slice header records read from DICOM files (one record per 2D frame)."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, fields
from collections.abc import Callable
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from .fast_values import FastValues

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
CT_SOP_CLASSES = frozenset({CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE})


@dataclass(slots=True)
class SliceHeader:
    """Everything ingest needs to know about one 2D frame, read without its pixel data.

    Slotted: a cohort scan keeps one per file until its series are assembled (752,803 for RSNA).

    Geometry follows DICOM: ``image_orientation`` holds the row and column direction cosines in LPS,
    ``image_position_mm`` the LPS centre of the first transmitted pixel, ``pixel_spacing_mm`` the
    (row spacing, column spacing) pair.
    """

    path: str
    frame_index: int | None
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    transfer_syntax_uid: str
    rows: int
    columns: int
    image_type: tuple[str, ...] = ()
    image_orientation: tuple[float, ...] | None = None
    image_position_mm: tuple[float, float, float] | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    rescale_type: str | None = None
    slice_thickness_mm: float | None = None
    convolution_kernel: str = ""
    series_description: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    acquisition_number: int | None = None
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    patient_id: str | None = None
    patient_name: str | None = None  # kept in memory only (to redact it from paths); never written
    gantry_tilt_deg: float | None = None
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    pixel_padding_value: int | None = None
    pixel_padding_range_limit: int | None = None
    manufacturer: str = ""
    number_of_frames: int = 1
    has_pixel_data: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_multiframe(self) -> bool:
        return self.frame_index is not None

    @property
    def normal(self) -> np.ndarray | None:
        """Unit slice normal (row cosine x column cosine), or None without orientation."""
        if self.image_orientation is None:
            return None
        row = np.asarray(self.image_orientation[:3], dtype=float)
        col = np.asarray(self.image_orientation[3:], dtype=float)
        n = np.cross(row, col)
        norm = np.linalg.norm(n)
        return n / norm if norm > 0 else None

    def __reduce__(self) -> tuple[type[SliceHeader], tuple[Any, ...]]:
        """Pickled as its field values: half the bytes and time of the default (a header scan on Dask
        sends one record per file back to the client)."""
        return type(self), _field_values(self)


#: a header's field values, in the order of ``SliceHeader(...)``'s arguments
_field_values = operator.attrgetter(*(item.name for item in fields(SliceHeader)))


def ensure_transfer_syntax(ds: Dataset) -> Dataset:
    """Give a dataset read with ``force=True`` (no preamble, no file meta) its transfer syntax.

    Old archives hold bare data sets: pydicom guesses their encoding while parsing but leaves
    ``file_meta.TransferSyntaxUID`` unset, and decoding the pixel data needs it.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and getattr(meta, "TransferSyntaxUID", None):
        return ds
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if implicit is None:
        implicit = True
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian)
    return ds


def file_meta_value(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``getattr(ds.file_meta, keyword, default)``, or ``default`` for a data set without file meta.

    Examples
    --------
    >>> file_meta_value(Dataset(), "TransferSyntaxUID", "")
    ''
    """
    meta = getattr(ds, "file_meta", None)
    return getattr(meta, keyword, default) if meta is not None else default


def decimal(value: Any) -> float:
    """``float(value)``, also for a decimal string written with a decimal comma.

    Some exporters write DS values in their locale (``-1024,0``): a comma is never valid in a
    decimal string, and one comma in a number without a point can only be its decimal mark.

    Examples
    --------
    >>> decimal("-1024,0 "), decimal(b"0.5"), decimal(2)
    (-1024.0, 0.5, 2.0)
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.strip(" \0")
        if value.count(",") == 1 and "." not in value:
            value = value.replace(",", ".")
    return float(value)


def _values(value: Any) -> list[Any]:
    """The values of a possibly multi-valued element (a raw ``a\\b`` string split)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        return value.split("\\")
    return list(value) if hasattr(value, "__iter__") else [value]


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        seq = [decimal(v) for v in _values(value)]
    except (TypeError, ValueError):
        return None
    if len(seq) != count or not all(map(math.isfinite, seq)):
        return None
    return tuple(seq)


def _pixel_spacing(value: Any) -> tuple[tuple[float, float] | None, bool]:
    """(row, column) spacing of a PixelSpacing, and whether it held one value read as square pixels.

    PixelSpacing has two values (VM 2); some exporters write one (seen in the wild). CT
    reconstructions have square pixels (one field of view over a square matrix), so one positive
    value is read as both, and the reader warns.
    """
    pair = _floats(value, 2)
    if pair is not None or value is None:
        return pair, False  # type: ignore[return-value]
    single = _floats(value, 1)
    if single is None or single[0] <= 0:
        return None, False
    return (single[0], single[0]), True


def _float(value: Any) -> float | None:
    """One number, or None; a value repeated (``-1024\\-1024``, seen in the wild) is that number."""
    if value is None or value == "":
        return None
    try:
        seq = {decimal(v) for v in _values(value)}
    except (TypeError, ValueError):
        return None
    out = seq.pop() if len(seq) == 1 else math.nan
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))):
        return "\\".join(str(v) for v in value)
    return str(value)


def _first_text(value: Any) -> str:
    """First value of a possibly multi-valued string element (e.g. Siemens ``['Hr38', '3']``)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))):
        values = [str(v) for v in value]
        return values[0] if values else ""
    return str(value)


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword, None)
    except Exception:  # a malformed element must not take the whole file down
        return None


def _padding(get: Callable[[str], Any], keyword: str) -> int | None:
    value = get(keyword)
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 2:
            return None
        signed = _pixel_representation(get) == 1
        return int.from_bytes(value, "little", signed=signed)
    return _int(value)


#: ``SliceHeader.extra`` key set on frames whose Modality and SOP class are both absent, taken as CT
MODALITY_ASSUMED = "modality_assumed_ct"
#: ``SliceHeader.extra`` key: ``{keyword: text}`` of RescaleSlope/RescaleIntercept present but not a number
UNREADABLE_RESCALE = "unreadable_rescale"
#: ``SliceHeader.extra`` key: the text of a PixelSpacing with one value, read as square pixels
SQUARE_PIXELS_ASSUMED = "square_pixels_assumed"
#: ``SliceHeader.extra`` key set on frames without BitsStored (or empty): BitsAllocated is used
BITS_STORED_ASSUMED = "bits_stored_assumed"
#: ``SliceHeader.extra`` key set on frames without PixelRepresentation (or empty): the value
#: :func:`assumed_pixel_representation` chose
PIXEL_REPRESENTATION_ASSUMED = "pixel_representation_assumed"
#: the top of the extended CT scale (about +30,700 HU): no stored value maps above it
EXTENDED_CT_TOP_HU = 31000.0


def assumed_pixel_representation(bits_stored: int | None, slope: float | None, intercept: float | None) -> int:
    """PixelRepresentation for a CT image whose files lack it: 1 (two's complement) or 0 (unsigned).

    Only 16-bit values from 32768 up read differently; read unsigned they would be
    ``32768 * slope + intercept`` HU or more. Where that lies above the extended CT scale's top
    (:data:`EXTENDED_CT_TOP_HU`), such values can only be negative numbers in two's complement,
    so the pixels are read as signed (this is the common case: intercept -1024 or 0). With fewer
    stored bits, or an intercept near -32768 (air stored near 31,768), unsigned is kept; a
    12-bit two's complement read as unsigned is caught by the HU check's wrap rule.

    Examples
    --------
    >>> assumed_pixel_representation(16, 1.0, -1024.0), assumed_pixel_representation(16, 1.0, -32768.0)
    (1, 0)
    >>> assumed_pixel_representation(12, 1.0, -1024.0), assumed_pixel_representation(None, None, None)
    (0, 1)
    """
    slope = 1.0 if not slope else float(slope)
    if (bits_stored or 16) != 16:
        return 0
    return 1 if 32768 * slope + float(intercept or 0.0) > EXTENDED_CT_TOP_HU else 0


def _modality(get: Callable[[str], Any], sop_class: str) -> str:
    """Modality, or CT for a file without it whose SOP class is a CT image storage class.

    Public archives drop even Type 1 attributes; the SOP class (data set or file meta) still says
    unambiguously that the object is a CT image. A file with neither Modality nor SOP class but a
    RescaleIntercept (Type 1 in the CT Image module, absent from MR's) is taken as CT too: bare
    data sets of old archives keep only pixels, geometry and rescale.
    """
    modality = str(get("Modality") or "").strip().upper()
    if not modality and (sop_class in CT_SOP_CLASSES or (not sop_class and _float(get("RescaleIntercept")) is not None)):
        return "CT"
    return modality


def _functional_item(ds: Dataset, frame_item: Dataset | None, sequence: str) -> Dataset | None:
    """Find a functional-group macro for a frame: per-frame first, then shared."""
    for container in (frame_item, _first_item(ds, "SharedFunctionalGroupsSequence")):
        if container is None:
            continue
        seq = _get(container, sequence)
        if seq:
            return seq[0]
    return None


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = _get(ds, keyword)
    return seq[0] if seq else None


def headers_from_dataset(ds: Dataset, path: str, *, fast: bool | FastValues = False) -> list[SliceHeader]:
    """Turn one DICOM dataset (read with or without pixel data) into per-frame header records.

    ``fast`` decodes the plain elements (UIDs, codes, numbers) straight from their stored bytes
    (:class:`FastValues`, or the one given) instead of through pydicom's element conversion; the
    records are equal.
    """
    fast_values = (fast if isinstance(fast, FastValues) else FastValues(ds)) if fast else None
    get: Callable[[str], Any] = fast_values or (lambda keyword: _get(ds, keyword))
    meta_get = fast_values.meta if fast_values else (lambda keyword, default: file_meta_value(ds, keyword, default))
    transfer_syntax = str(meta_get("TransferSyntaxUID", "") or "")
    sop_class = str(get("SOPClassUID") or meta_get("MediaStorageSOPClassUID", ""))
    raw_type = get("ImageType")
    image_type = tuple(str(v).upper() for v in (raw_type or ()))
    if isinstance(raw_type, str):
        image_type = tuple(v.upper() for v in str(raw_type).split("\\"))
    common = _common_fields(get, ds, path, sop_class, transfer_syntax, image_type)
    n_frames = _int(get("NumberOfFrames")) or 1
    per_frame = get("PerFrameFunctionalGroupsSequence")
    shared = get("SharedFunctionalGroupsSequence")
    if per_frame is not None or (shared[0] if shared else None) is not None:
        return _enhanced_headers(ds, common, n_frames, per_frame)

    spacing, square_assumed = _pixel_spacing(get("PixelSpacing"))
    rescale = {k: _float(get(k)) for k in ("RescaleSlope", "RescaleIntercept")}
    header = SliceHeader(
        frame_index=None,
        image_orientation=_floats(get("ImageOrientationPatient"), 6),
        image_position_mm=_floats(get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        pixel_spacing_mm=spacing,
        rescale_slope=rescale["RescaleSlope"],
        rescale_intercept=rescale["RescaleIntercept"],
        rescale_type=(str(get("RescaleType")) if get("RescaleType") else None),
        slice_thickness_mm=_float(get("SliceThickness")),
        number_of_frames=n_frames,
        **common,
    )
    unreadable = {k: _text(get(k)) for k, value in rescale.items() if value is None and _text(get(k)).strip(" \0")}
    if unreadable:  # present but not a number: not the same as absent (stored values are HU)
        header.extra = {**header.extra, UNREADABLE_RESCALE: unreadable}
    if square_assumed:
        header.extra = {**header.extra, SQUARE_PIXELS_ASSUMED: _text(get("PixelSpacing"))}
    if _int(get("BitsStored")) is None and _int(get("BitsAllocated")) is not None:
        header.extra = {**header.extra, BITS_STORED_ASSUMED: True}
    return [header]


def _common_fields(get: Callable[[str], Any], ds: Dataset, path: str, sop_class: str, transfer_syntax: str,
                   image_type: tuple[str, ...]) -> dict[str, Any]:
    """The fields every frame of a file shares."""
    present = get.has if isinstance(get, FastValues) else ds.__contains__
    patient_id, patient_name = get("PatientID"), get("PatientName")
    modality = _modality(get, sop_class)
    assumed = not sop_class and modality == "CT" and not str(get("Modality") or "").strip()
    return dict(
        path=path,
        series_uid=str(get("SeriesInstanceUID") or ""),
        sop_instance_uid=str(get("SOPInstanceUID") or ""),
        sop_class_uid=sop_class,
        modality=modality,
        transfer_syntax_uid=transfer_syntax,
        rows=_int(get("Rows")) or 0,
        columns=_int(get("Columns")) or 0,
        image_type=image_type,
        convolution_kernel=_first_text(get("ConvolutionKernel")),
        series_description=_text(get("SeriesDescription")),
        series_number=_int(get("SeriesNumber")),
        instance_number=_int(get("InstanceNumber")),
        acquisition_number=_int(get("AcquisitionNumber")),
        study_uid=str(get("StudyInstanceUID") or ""),
        frame_of_reference_uid=str(get("FrameOfReferenceUID") or ""),
        patient_id=(str(patient_id) if patient_id not in (None, "") else None),
        patient_name=(str(patient_name) if patient_name not in (None, "") else None),
        gantry_tilt_deg=_float(get("GantryDetectorTilt")),
        samples_per_pixel=_int(get("SamplesPerPixel")) or 1,
        bits_allocated=_int(get("BitsAllocated")) or 16,
        bits_stored=_int(get("BitsStored")) or _int(get("BitsAllocated")) or 16,
        pixel_representation=_pixel_representation(get),
        pixel_padding_value=_padding(get, "PixelPaddingValue"),
        pixel_padding_range_limit=_padding(get, "PixelPaddingRangeLimit"),
        manufacturer=_text(get("Manufacturer")),
        has_pixel_data=(present("PixelData") or present("FloatPixelData") or present("DoubleFloatPixelData")
                        or get("Rows") is not None),
        extra={**({MODALITY_ASSUMED: True} if assumed else {}),
               **({PIXEL_REPRESENTATION_ASSUMED: True} if _int(get("PixelRepresentation")) is None else {})},
    )


def _pixel_representation(get: Callable[[str], Any]) -> int:
    """PixelRepresentation, or :func:`assumed_pixel_representation`'s choice when it is absent or empty."""
    value = _int(get("PixelRepresentation"))
    if value is not None:
        return value
    bits = _int(get("BitsStored")) or _int(get("BitsAllocated"))
    return assumed_pixel_representation(bits, _float(get("RescaleSlope")), _float(get("RescaleIntercept")))


def _enhanced_headers(ds: Dataset, common: dict[str, Any], n_frames: int, per_frame: Any) -> list[SliceHeader]:
    """Per-frame records of an enhanced (multi-frame) image from its functional groups."""
    out: list[SliceHeader] = []
    frame_items = list(per_frame) if per_frame is not None else []
    for index in range(n_frames):
        item = frame_items[index] if index < len(frame_items) else None
        position = _functional_item(ds, item, "PlanePositionSequence")
        orientation = _functional_item(ds, item, "PlaneOrientationSequence")
        measures = _functional_item(ds, item, "PixelMeasuresSequence")
        rescale = _functional_item(ds, item, "PixelValueTransformationSequence")
        ct_frame = _functional_item(ds, item, "CTReconstructionSequence")
        frame_type_item = _functional_item(ds, item, "CTImageFrameTypeSequence")
        frame_type = tuple(str(v).upper() for v in (_get(frame_type_item, "FrameType") or ())) if frame_type_item else ()
        fields = dict(common)
        if frame_type:
            fields["image_type"] = frame_type
        if ct_frame is not None and _get(ct_frame, "ConvolutionKernel"):
            fields["convolution_kernel"] = _first_text(_get(ct_frame, "ConvolutionKernel"))
        spacing_text = _get(measures, "PixelSpacing") if measures else _get(ds, "PixelSpacing")
        spacing, square_assumed = _pixel_spacing(spacing_text)
        if square_assumed:
            fields["extra"] = {**fields.get("extra", {}), SQUARE_PIXELS_ASSUMED: _text(spacing_text)}
        out.append(
            SliceHeader(
                frame_index=index,
                image_orientation=_floats(_get(orientation, "ImageOrientationPatient"), 6) if orientation else _floats(_get(ds, "ImageOrientationPatient"), 6),
                image_position_mm=_floats(_get(position, "ImagePositionPatient"), 3) if position else None,  # type: ignore[arg-type]
                pixel_spacing_mm=spacing,
                rescale_slope=_float(_get(rescale, "RescaleSlope")) if rescale else _float(_get(ds, "RescaleSlope")),
                rescale_intercept=_float(_get(rescale, "RescaleIntercept")) if rescale else _float(_get(ds, "RescaleIntercept")),
                rescale_type=(str(_get(rescale, "RescaleType")) if rescale is not None and _get(rescale, "RescaleType") else None),
                slice_thickness_mm=_float(_get(measures, "SliceThickness")) if measures else _float(_get(ds, "SliceThickness")),
                number_of_frames=n_frames,
                **fields,
            )
        )
    return out
