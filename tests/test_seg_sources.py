"""SEG source headers completed from minimal archive headers (ichct.pipeline.predict.seg_sources)."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset

from ichct.errors import IchctError
from ichct.pipeline.predict.seg_sources import TYPE2_COPIED, SegSourceError, complete_seg_sources, frame_of_reference_for
from ichct.transforms.dicom.geometry import stack_geometry
from ichct.transforms.dicom.headers import headers_from_dataset
from ichct.transforms.dicom.validation import quiet_pydicom_values

CT = "1.2.840.10008.5.1.4.1.1.2"


def rsna_like(z: float, sop: str) -> Dataset:
    """The RSNA 2019 element set: SOP class in the file meta only, no frame of reference, 'ID_' UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.SOPInstanceUID, ds.Modality, ds.PatientID = sop, "CT", "ID_9a8b7c6d5e"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.StudyID = "ID_a1b2c3d4e5", "ID_0f9e8d7c6b", ""
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [-125.0, -125.0, z], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.Rows, ds.Columns = [0.5, 0.5], 4, 4
    return ds


def test_rsna_headers_are_completed_by_the_documented_rules_only():
    sources = [rsna_like(5.0 * k, f"ID_00000000{k:02x}") for k in (2, 0, 1)]
    with quiet_pydicom_values():
        paths = [f"/data/{s.SOPInstanceUID}.dcm" for s in sources]
        headers = [h for s, path in zip(sources, paths) for h in headers_from_dataset(s, path)]
        done = complete_seg_sources(sources, paths, stack_geometry(headers).slice_spacing_mm)
        assert [str(d.SOPClassUID) for d in done.datasets] == [CT] * 3
        assert done.sop_class_from_file_meta
        # the source's own non-conforming UIDs are referenced as they are
        assert [d.SOPInstanceUID for d in done.datasets] == [s.SOPInstanceUID for s in sources]
        assert {d.StudyInstanceUID for d in done.datasets} == {"ID_a1b2c3d4e5"}
        assert {d.PatientID for d in done.datasets} == {"ID_9a8b7c6d5e"}
        # a new frame of reference, shared by the series and stable across reruns
        assert done.frame_of_reference_generated
        assert {d.FrameOfReferenceUID for d in done.datasets} == {done.frame_of_reference_uid}
        assert done.frame_of_reference_uid == frame_of_reference_for("ID_0f9e8d7c6b")
        assert done.frame_of_reference_uid.startswith("2.25.")
        # absent Type 2 attributes present and empty; the present (empty) StudyID kept as it is
        for keyword in TYPE2_COPIED:
            assert keyword in done.datasets[0]
            if keyword != "PatientID":
                assert str(done.datasets[0].get(keyword)) == ""
        assert "StudyID" not in done.filled_type2 and "PatientID" not in done.filled_type2
        assert set(done.filled_type2) == set(TYPE2_COPIED) - {"StudyID", "PatientID"}
        # the SEG's pixel measures need a thickness: the slice spacing the reader measured, said so
        assert done.slice_thickness_mm == pytest.approx(5.0)
        described = done.describe()
        assert described["frame_of_reference_source"] == "generated"
        assert described["seg_slice_thickness_mm"] == pytest.approx(5.0)
    # nothing of this reaches the caller's datasets
    for s in sources:
        assert "SOPClassUID" not in s and "FrameOfReferenceUID" not in s and "PatientName" not in s


def test_complete_headers_are_left_as_they_are():
    ds = rsna_like(0.0, "1.2.3.4.1")
    ds.SOPClassUID, ds.FrameOfReferenceUID, ds.SliceThickness = CT, "1.2.3.9", 2.5
    for keyword in TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    done = complete_seg_sources([ds], "/data/x.dcm")
    assert done.filled_type2 == [] and not done.frame_of_reference_generated
    assert done.frame_of_reference_uid == "1.2.3.9" and not done.sop_class_from_file_meta
    assert done.slice_thickness_mm is None and float(done.datasets[0].SliceThickness) == 2.5


@pytest.mark.parametrize("drop, words", [("SOPClassUID", "SOPClassUID"), ("StudyInstanceUID", "StudyInstanceUID"),
                                         ("SOPInstanceUID", "SOPInstanceUID")])
def test_a_source_that_cannot_be_referenced_is_refused_naming_the_file(drop, words):
    ds = rsna_like(0.0, "ID_01")
    if drop == "SOPClassUID":
        del ds.file_meta.MediaStorageSOPClassUID
    else:
        delattr(ds, drop)
    with quiet_pydicom_values(), pytest.raises(SegSourceError) as err:
        complete_seg_sources([ds], "/data/ID_01.dcm")
    assert "/data/ID_01.dcm" in str(err.value) and words in str(err.value)
    assert err.value.reason in str(err.value)  # ichct predict records the reason and writes the rest
    assert isinstance(err.value, IchctError)  # a data problem: exit 1 through the CLI
