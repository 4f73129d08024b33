"""Plain element values decoded straight from their stored bytes, for fast header scans.

pydicom converts an element on first access (value representation lookup, validation, a
``DSfloat``/``UID``/``MultiValue`` object per value); a header scan of a large flat folder (RSNA's
752,803 files) spends most of its time there. :class:`FastValues` decodes the few value
representations a slice header needs (UI, CS, LO, SH, DS, IS, US, SS) itself, and hands every
other case (another or an unknown VR, a character set, an empty or unusual value, a sequence) to
pydicom, so that the values it returns compare equal to pydicom's wherever the header code uses
them (``str()``, ``float()``, ``int()``, iteration).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

#: keyword -> (tag, the value representation it has in the standard) for the elements decoded here
_ELEMENTS: dict[str, tuple[int, str]] = {
    keyword: (int(Tag(keyword)), vr) for keyword, vr in (
        ("SOPClassUID", "UI"), ("SOPInstanceUID", "UI"), ("SeriesInstanceUID", "UI"), ("StudyInstanceUID", "UI"),
        ("FrameOfReferenceUID", "UI"), ("ImageType", "CS"), ("Modality", "CS"), ("RescaleType", "LO"),
        ("ConvolutionKernel", "SH"), ("SeriesDescription", "LO"), ("Manufacturer", "LO"), ("PatientID", "LO"),
        ("SeriesNumber", "IS"), ("InstanceNumber", "IS"), ("AcquisitionNumber", "IS"), ("NumberOfFrames", "IS"),
        ("ImagePositionPatient", "DS"), ("ImageOrientationPatient", "DS"), ("PixelSpacing", "DS"),
        ("RescaleSlope", "DS"), ("RescaleIntercept", "DS"), ("SliceThickness", "DS"), ("GantryDetectorTilt", "DS"),
        ("Rows", "US"), ("Columns", "US"), ("SamplesPerPixel", "US"), ("BitsAllocated", "US"), ("BitsStored", "US"),
        ("PixelRepresentation", "US"),
    )
}
#: the file meta elements decoded here (:meth:`FastValues.meta`)
_META_ELEMENTS: dict[str, tuple[int, str]] = {
    keyword: (int(Tag(keyword)), "UI") for keyword in ("MediaStorageSOPClassUID", "TransferSyntaxUID")
}
_TEXT_VRS = frozenset({"LO", "SH"})  # decoded with the data set's character set: only without one
_SPECIFIC_CHARACTER_SET = 0x00080005
_UNSEEN = object()


class _Fallback(Exception):
    """The stored value is not one this module decodes: ask pydicom."""


class FastValues:
    """``FastValues(ds)(keyword)``: an element's value like ``ds.get(keyword)``, decoded from its bytes.

    Parameters
    ----------
    ds
        A data set as ``pydicom.dcmread`` returns it (elements still raw).

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.Rows, ds.PixelSpacing, ds.Modality = 64, [0.5, 0.5], "CT"
    >>> get = FastValues(ds)
    >>> get("Rows"), [float(v) for v in get("PixelSpacing")], get("Modality"), get("SliceThickness")
    (64, [0.5, 0.5], 'CT', None)
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        # plain int keys: a lookup by int in a dict of BaseTag keys calls BaseTag.__eq__ (Python code)
        self.elements = {int(tag): element for tag, element in ds.items()}
        self.plain_text = _SPECIFIC_CHARACTER_SET not in self.elements
        self._seen: dict[str, Any] = {}  # each keyword decoded once (the header code asks some twice)
        self._seen_meta: dict[str, Any] = {}  # the same for the file meta (_UNSEEN: absent)

    def has(self, keyword: str) -> bool:
        """``keyword in ds``."""
        return _tag_of(keyword) in self.elements

    def __call__(self, keyword: str) -> Any:
        value = self._seen.get(keyword, _UNSEEN)
        if value is not _UNSEEN:
            return value
        known = _ELEMENTS.get(keyword)
        if known is None:
            value = _pydicom_value(self.ds, keyword) if self.has(keyword) else None
        else:
            tag, vr = known
            element = self.elements.get(tag)
            value = None if element is None else _element_value(self.ds, element, keyword, vr, self.plain_text)
        self._seen[keyword] = value
        return value

    def meta(self, keyword: str, default: Any = None) -> Any:
        """``getattr(ds.file_meta, keyword, default)`` (``default`` without a file meta) for the file
        meta elements decoded here (MediaStorageSOPClassUID, TransferSyntaxUID).

        Examples
        --------
        >>> from pydicom.dataset import Dataset, FileMetaDataset
        >>> ds = Dataset()
        >>> ds.file_meta = FileMetaDataset()
        >>> ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        >>> FastValues(ds).meta("TransferSyntaxUID"), FastValues(ds).meta("MediaStorageSOPClassUID", "")
        ('1.2.840.10008.1.2.1', '')
        """
        value = self._seen_meta.get(keyword, _UNSEEN)
        if value is _UNSEEN:
            meta = getattr(self.ds, "file_meta", None)
            tag, vr = _META_ELEMENTS[keyword]
            element = meta.get_item(tag) if meta is not None else None
            value = self._seen_meta[keyword] = _UNSEEN if element is None else _element_value(
                meta, element, keyword, vr, True)
        return default if value is _UNSEEN else value


def _element_value(ds: Dataset, element: Any, keyword: str, vr: str, plain_text: bool) -> Any:
    """``ds.get(keyword)`` for the present ``element`` of ``ds`` whose standard VR is ``vr``."""
    if not isinstance(element, RawDataElement):
        return element.value  # converted already: what pydicom's attribute access returns
    try:
        if element.value is None:
            raise _Fallback
        stored_vr = element.VR
        if stored_vr is not None and stored_vr != vr:
            raise _Fallback
        if vr in _TEXT_VRS and not plain_text:
            raise _Fallback
        return _decode(element.value, vr, element.is_little_endian)
    except _Fallback:
        return _pydicom_value(ds, keyword)
    except Exception:  # noqa: BLE001 - anything odd: pydicom decides, as without this module
        return _pydicom_value(ds, keyword)


@lru_cache(maxsize=256)
def _tag_of(keyword: str) -> int:
    return int(Tag(keyword))


def _pydicom_value(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword, None)
    except Exception:  # noqa: BLE001 - a malformed element must not take the whole file down
        return None


def _decode(value: bytes, vr: str, little_endian: bool) -> Any:
    """A stored value as pydicom would give it for the uses of a slice header, or :class:`_Fallback`."""
    if not value:
        raise _Fallback
    if vr in ("US", "SS"):
        if len(value) != 2:
            raise _Fallback
        return struct.unpack(("<" if little_endian else ">") + ("H" if vr == "US" else "h"), value)[0]
    text = value.decode("ascii")
    if vr == "UI":
        if "\\" in text:
            raise _Fallback
        return text.rstrip("\0 ")
    if vr == "CS":  # pydicom's multi_string: padding stripped at the end, then split
        items = text.rstrip(" \0").split("\\")
        return items[0] if len(items) == 1 else items
    if vr in _TEXT_VRS:
        if "\\" in text:
            raise _Fallback
        return text.rstrip("\0 ")
    items = [item.strip(" \0") for item in text.split("\\")]
    if not all(items):
        raise _Fallback
    numbers = [float(item) for item in items] if vr == "DS" else [_integer_string(item) for item in items]
    return numbers[0] if len(numbers) == 1 else numbers


def _integer_string(item: str) -> int:
    if not item.lstrip("+-").isdigit():
        raise _Fallback
    return int(item)
