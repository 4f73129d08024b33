"""A Part 10 file's header parsed from its bytes with pydicom's readers, without dcmread's wrappers.

``pydicom.dcmread(..., stop_before_pixels=True)`` builds five data sets for one file (the file
meta twice over, a command-set probe, the data set and its ``FileDataset`` wrapper); for the small
files of a flat archive (RSNA's 752,803 slices) that wrapping costs as much as parsing the
elements. :func:`read_part10_header` parses the same elements with pydicom's own
``data_element_generator`` (file meta) and ``read_dataset`` (the data set, with pydicom's check of
an implicit/explicit VR mismatch and its character set), so the elements are pydicom's raw elements,
converted on access exactly as dcmread's. It returns None for anything but a plain Part 10 file
whose data set is in implicit or explicit VR little endian, explicit big endian or an encapsulated
(compressed) syntax: bare data sets, deflated or private syntaxes, a command set or a file meta not
in explicit VR. The caller then reads the file with dcmread, as before.
"""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import data_element_generator, read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian, \
    PrivateTransferSyntaxes

__all__ = ["read_part10_header"]

_PREAMBLE = 128
_TRANSFER_SYNTAX = 0x00020010
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # dcmread's stop_before_pixels


def _after_file_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 0x0002


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in _PIXEL_TAGS


def read_part10_header(data: bytes) -> tuple[Dataset, int] | None:
    """The data set (elements raw, its ``file_meta`` attached) and the offset of its pixel data, or None.

    Parameters
    ----------
    data
        A whole file's bytes (or at least its header).

    Returns
    -------
    tuple or None
        ``(dataset, offset)`` like ``dcmread(BytesIO(data), stop_before_pixels=True)`` and the stream's
        position after it; None where dcmread must decide (see the module's notes), including any
        parse error, so that the caller's messages stay dcmread's.

    Examples
    --------
    >>> from pydicom.dataset import FileMetaDataset
    >>> from pydicom.uid import ExplicitVRLittleEndian
    >>> ds = Dataset()
    >>> ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"
    >>> ds.Modality, ds.Rows = "CT", 2
    >>> ds.file_meta = FileMetaDataset()
    >>> ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    >>> buffer = BytesIO()
    >>> ds.save_as(buffer, enforce_file_format=True)
    >>> parsed, offset = read_part10_header(buffer.getvalue())
    >>> parsed.Modality, parsed.Rows, offset == len(buffer.getvalue())
    ('CT', 2, True)
    >>> read_part10_header(b"not DICOM") is None
    True
    """
    if data[_PREAMBLE:_PREAMBLE + 4] != b"DICM" or not _explicit_vr_at(data, _PREAMBLE + 4):
        return None
    try:
        fp = BytesIO(data)
        fp.seek(_PREAMBLE + 4)
        meta = {e.tag: e for e in data_element_generator(fp, False, True, stop_when=_after_file_meta)}
        encoding = _encoding(meta)
        if encoding is None or data[fp.tell():fp.tell() + 2] == b"\0\0":  # group 0000: a command set
            return None
        ds = read_dataset(fp, *encoding, stop_when=_at_pixel_data)
        ds.file_meta = FileMetaDataset(meta)
        ds.set_original_encoding(*encoding, ds.original_character_set)  # as dcmread: the declared VR
        return ds, fp.tell()
    except Exception:  # noqa: BLE001 - dcmread reads it again and says what is wrong
        return None


def _explicit_vr_at(data: bytes, offset: int) -> bool:
    """Whether the element at ``offset`` carries an explicit VR (two upper-case letters after its tag)."""
    vr = data[offset + 4:offset + 6]
    return len(vr) == 2 and vr.isalpha() and vr.isupper()


def _encoding(meta: dict[BaseTag, object]) -> tuple[bool, bool] | None:
    """``(implicit VR, little endian)`` of the data set, as dcmread's ``read_partial`` sets them, or None."""
    element = meta.get(BaseTag(_TRANSFER_SYNTAX))
    value = getattr(element, "value", None)
    if not isinstance(value, bytes):
        return None
    syntax = value.decode("ascii").rstrip("\0 ")
    if not syntax or syntax in (DeflatedExplicitVRLittleEndian, *PrivateTransferSyntaxes):
        return None
    if syntax == ImplicitVRLittleEndian:
        return True, True
    return False, syntax != ExplicitVRBigEndian
