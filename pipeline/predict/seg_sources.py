"""Source headers for a DICOM SEG, from the minimal headers that real archives carry.

A SEG copies the Patient and General Study modules of its source and references the source's
SOP class, SOP instance and frame of reference. Public archives and de-identified exports
(PS3.15 Basic Profile) often lack what highdicom reads there: the RSNA 2019 ICH files carry
about 22 data elements, with SOPClassUID only in the file meta, no FrameOfReferenceUID, and
no PatientName, PatientBirthDate, StudyDate... This module completes a copy of each source
header (never the files) by these rules, and nothing else is invented:

=====================================  ==========================================================
missing in the source                  what the SEG's source header gets
=====================================  ==========================================================
SOPClassUID (data set)                 the file meta's MediaStorageSOPClassUID
Type 2 patient / study attributes      present and empty (PatientName, PatientID,
                                       PatientBirthDate, PatientSex, StudyDate, StudyTime,
                                       ReferringPhysicianName, StudyID, AccessionNumber)
FrameOfReferenceUID                    a new UID, the same for every instance of the series
                                       and derived from its SeriesInstanceUID (so a rerun gives
                                       the same one); ``report.json`` records it
SliceThickness (Type 2 of Image Plane) the slice spacing measured from the source positions:
                                       highdicom copies it into the SEG's own Pixel Measures,
                                       where DICOM requires a value (Type 1C); ``report.json``
                                       records it (nothing else of the source module reaches
                                       the SEG)
=====================================  ==========================================================

UIDs the source carries are referenced as they are, valid or not (``ID_6207127578``): the SEG
must point at the instances the user has. A source without SOPClassUID anywhere, without
StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID cannot be referenced: that raises
:class:`SegSourceError`, and ``ichct predict`` writes the study without ``seg.dcm``, saying why (a
warning and ``outputs.seg_dicom_skipped`` in ``report.json``). Stand-in UIDs are never made up for
the source: a SEG referencing instances that exist nowhere would mislead any archive or viewer it
reaches (the generated frame of reference above is different: it names no source object, and the
SEG's geometry is the source's own).

Example
-------
>>> from pydicom import Dataset
>>> from pydicom.dataset import FileMetaDataset
>>> ds = Dataset(); ds.file_meta = FileMetaDataset()
>>> ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
>>> ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "ID_1", "ID_2", "ID_3"
>>> done = complete_seg_sources([ds], "/data/ID_1.dcm")
>>> str(done.datasets[0].SOPClassUID), done.filled_type2[:2]
('1.2.840.10008.5.1.4.1.1.2', ['PatientName', 'PatientID'])
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from ichct.transforms.dicom.errors import DicomIngestError

__all__ = ["TYPE2_COPIED", "SegSources", "SegSourceError", "complete_seg_sources", "frame_of_reference_for"]

#: Type 2 attributes of the Patient and General Study modules that a SEG copies from its source.
TYPE2_COPIED: tuple[str, ...] = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                                 "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class SegSourceError(DicomIngestError):
    """A source instance that a DICOM SEG cannot reference (names the file and the missing attribute).

    ``ichct predict`` catches it: the study is written without ``seg.dcm``, with the reason as a
    warning and in ``report.json`` (``outputs.seg_dicom_skipped``).

    Examples
    --------
    >>> err = SegSourceError("ct/1.dcm", "no SOPInstanceUID")
    >>> str(err), err.reason
    ('ct/1.dcm: no SOPInstanceUID', 'no SOPInstanceUID')
    """


@dataclass
class SegSources:
    """Completed copies of the source headers and what was added to them (JSON-ready fields).

    Attributes
    ----------
    datasets
        One header (no pixel data) per source instance, completed by the module's rules.
    paths
        The file of each source instance.
    frame_of_reference_uid
        The frame of reference the SEG is in.
    frame_of_reference_generated
        True when the source had none and ``frame_of_reference_uid`` is new.
    sop_class_from_file_meta
        True when SOPClassUID was taken from the file meta of at least one source.
    filled_type2
        Type 2 attributes the source lacked, written present and empty.
    """

    datasets: list[Dataset]
    paths: list[str]
    frame_of_reference_uid: str
    frame_of_reference_generated: bool = False
    sop_class_from_file_meta: bool = False
    filled_type2: list[str] = field(default_factory=list)
    slice_thickness_mm: float | None = None

    def describe(self) -> dict[str, Any]:
        """What the SEG's source headers got, for ``report.json``."""
        return {"frame_of_reference_uid": self.frame_of_reference_uid,
                "frame_of_reference_source": "generated" if self.frame_of_reference_generated else "source",
                "sop_class_from_file_meta": self.sop_class_from_file_meta,
                "type2_written_empty": list(self.filled_type2),
                "seg_slice_thickness_mm": self.slice_thickness_mm,
                "seg_slice_thickness_source": None if self.slice_thickness_mm is None else "measured slice spacing"}


def frame_of_reference_for(series_uid: str) -> str:
    """A new FrameOfReferenceUID (``2.25.<n>``) derived from a series' UID: stable across reruns.

    >>> frame_of_reference_for("ID_0f9e8d7c6b") == frame_of_reference_for("ID_0f9e8d7c6b")
    True
    """
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'ichct frame of reference ' + str(series_uid)).int}"


def _value(ds: Dataset, keyword: str) -> str:
    """The element's value as text, '' when absent or empty (never raises on a malformed value)."""
    try:
        value = ds.get(keyword, None)
    except Exception:  # noqa: BLE001 - a malformed value counts as absent
        return ""
    return "" if value is None else str(value).strip()


def _sop_class(ds: Dataset, where: str) -> tuple[str, bool]:
    """(SOPClassUID, taken from the file meta?) of one source."""
    own = _value(ds, "SOPClassUID")
    if own:
        return own, False
    meta = getattr(ds, "file_meta", None)
    from_meta = _value(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if not from_meta:
        raise SegSourceError(where, "no SOPClassUID in the data set nor MediaStorageSOPClassUID in the file meta; "
                                    "a DICOM SEG cannot reference this instance")
    return from_meta, True


def complete_seg_sources(datasets: Sequence[Dataset], paths: Sequence[str] | str,
                         slice_spacing_mm: float | None = None) -> SegSources:
    """Copies of ``datasets`` completed so that highdicom can build a SEG referencing them.

    Parameters
    ----------
    datasets
        Source headers (read without pixel data), all of one series.
    paths
        The file of each dataset (or one path for all), named in errors.
    slice_spacing_mm
        The series' slice spacing as the reader measured it
        (:attr:`ichct.transforms.dicom.StackGeometry.slice_spacing_mm`): the SEG's slice thickness
        when the sources have none.

    Returns
    -------
    SegSources
        The completed copies and what was added (see the module docstring for the rules).

    Raises
    ------
    SegSourceError
        A source without SOPClassUID (data set and file meta) or without one of the study, series
        or instance UIDs.
    """
    where = [paths] * len(datasets) if isinstance(paths, str) else list(paths)
    out: list[Dataset] = []
    filled: dict[str, None] = {}
    from_meta = False
    frames = {_value(ds, "FrameOfReferenceUID") for ds in datasets} - {""}
    series = _value(datasets[0], "SeriesInstanceUID") if datasets else ""
    for_uid = sorted(frames)[0] if frames else frame_of_reference_for(series)
    for ds, path in zip(datasets, where):
        missing = [k for k in _REQUIRED_UIDS if not _value(ds, k)]
        if missing:
            raise SegSourceError(path, f"no {', '.join(missing)}; a DICOM SEG cannot reference this instance")
        done = copy.deepcopy(ds)  # headers only (no pixel data): cheap, and the caller's dataset stays as read
        sop_class, meta_used = _sop_class(ds, path)
        from_meta |= meta_used
        done.SOPClassUID = sop_class
        for keyword in TYPE2_COPIED:
            if keyword not in done:
                setattr(done, keyword, "")
                filled[keyword] = None
        if not _value(ds, "FrameOfReferenceUID"):
            done.FrameOfReferenceUID = for_uid
        if "SpecificCharacterSet" in done and not _value(ds, "SpecificCharacterSet"):
            del done.SpecificCharacterSet  # empty means the default repertoire, as absent does; highdicom refuses ''
        out.append(done)
    thickness = None
    if any(not _value(ds, "SliceThickness") for ds in datasets) and "PerFrameFunctionalGroupsSequence" not in datasets[0]:
        thickness = None if slice_spacing_mm is None else round(float(slice_spacing_mm), 4)
        for ds in out:
            ds.SliceThickness = "" if thickness is None else thickness
    return SegSources(datasets=out, paths=where, frame_of_reference_uid=for_uid, frame_of_reference_generated=not frames,
                      sop_class_from_file_meta=from_meta, filled_type2=list(filled), slice_thickness_mm=thickness)

