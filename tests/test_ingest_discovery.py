"""Category 1: finding DICOM files (recursive, any name, DICOMDIR) and skipping what is not usable."""

from __future__ import annotations

import logging
import shutil

import dicom_factory as fac
import pytest

from ichct.transforms.dicom import read_dicom_series, scan_folder


def _warnings_naming(caplog, path) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("ichct") and path.name in r.getMessage()]


def test_recursive_scan_random_names_and_junk_skipped_with_warning(study_folder, caplog):
    caplog.set_level(logging.WARNING, logger="ichct")
    scan = scan_folder(study_folder.root)
    soft_uid = study_folder.soft.series_uid
    found = {h.path for h in scan.headers if h.series_uid == soft_uid}
    assert found == {str(p) for p in study_folder.soft_paths}, "soft series files in nested folders not all found"
    assert any(len(p.relative_to(study_folder.root).parts) >= 3 for p in study_folder.soft_paths)
    assert all(p.suffix == "" for p in study_folder.soft_paths)

    skipped = {s.path for s in scan.skipped}
    for kind in ("text", "jpeg", "truncated"):
        path = study_folder.junk[kind]
        assert str(path) in skipped, f"{kind} file {path.name} not reported as skipped"
        assert _warnings_naming(caplog, path), f"no warning naming the skipped {kind} file {path.name}"
    for p in study_folder.soft_paths:
        assert not _warnings_naming(caplog, p), f"a valid slice {p.name} was warned about"


def test_recursive_folder_reads_the_right_volume(study_folder):
    vol = read_dicom_series(study_folder.root)
    assert vol.series_uid == study_folder.soft.series_uid
    assert vol.hu_volume.shape == (64, 60, 20)
    fac.assert_exact(vol.hu_volume, vol.affine_ras, study_folder.soft)
    assert vol.info["skipped_files"] >= 3


@pytest.mark.parametrize("target", ["folder", "dicomdir_file"])
def test_dicomdir_file_set(tmp_path, run_cli, target):
    spec = fac.make_stack(14, 5.0, key="dicomdir")
    staged = fac.write_series(tmp_path / "staging", spec, naming="dcm")
    dicomdir = fac.write_dicomdir(tmp_path / "cd", staged)
    shutil.rmtree(tmp_path / "staging")
    assert dicomdir.is_file()
    out = tmp_path / "out" / "vol.nii.gz"
    res = run_cli("convert", dicomdir.parent if target == "folder" else dicomdir, out)
    assert res.code == 0, res.err
    data, affine, _ = fac.load_nifti(out)
    fac.assert_exact(data, affine, spec)
    side = fac.read_sidecar(out)
    assert side["source_file_count"] == 14
    assert side["series_uid"] == spec.series_uid


@pytest.mark.parametrize("where, fraction", [("header", 0.25), ("header", 0.75), ("pixel_data", 0.5)])
def test_truncated_slice_is_named_and_reported(tmp_path, caplog, where, fraction):
    """An interrupted transfer leaves one slice file truncated: it must be named in a warning, and
    the hole it leaves must be reported (not silently stacked over)."""
    caplog.set_level(logging.WARNING, logger="ichct")
    spec = fac.make_stack(16, 5.0, key=f"trunc-{where}-{fraction}")
    paths = fac.write_series(tmp_path / "dcm", spec)
    victim = paths[2]  # well away from the markers
    if where == "header":
        data = victim.read_bytes()
        victim.write_bytes(data[: int(fac.header_length(victim) * fraction)])
    else:
        fac.truncate_pixel_data(victim, fraction)
    vol = read_dicom_series(tmp_path / "dcm")
    assert _warnings_naming(caplog, victim), f"no warning names the truncated file {victim.name}"
    assert vol.info["missing_slices"] == 1
    assert vol.info["resampled_to_uniform_spacing"] is True
    assert vol.hu_volume.shape[2] == 16
    fac.assert_geometry(vol.hu_volume, vol.affine_ras, spec, reach_mm=6.0)


def test_hidden_and_extension_files(tmp_path):
    """Files with a .dcm extension and files without one are read the same; a non-DICOM file with
    a DICOM-looking name is skipped."""
    spec = fac.make_stack(10, 5.0, key="mixed-names")
    paths = fac.write_series(tmp_path / "a", spec, naming="random")
    for p in paths[::2]:
        p.rename(p.with_name(p.name + ".dcm"))
    (tmp_path / "a" / "IM999999.dcm").write_bytes(b"this is not dicom at all" * 20)
    vol = read_dicom_series(tmp_path / "a")
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)
    assert vol.info["skipped_files"] == 1


@pytest.mark.parametrize("implicit", [True, False])
def test_bare_dataset_without_preamble_or_file_meta_is_read(tmp_path, implicit):
    """Old archives hold bare data sets (no 128-byte preamble, no "DICM", no file meta): legal, and
    read exactly, with the transfer syntax pydicom recognises from the encoding."""
    spec = fac.make_stack(8, 5.0, key=f"bare-{implicit}")
    paths = fac.write_series(tmp_path / "dcm", spec, naming="dcm")
    for path in paths:
        fac.strip_file_meta(path, implicit)
        assert path.read_bytes()[128:132] != b"DICM"
    vol = read_dicom_series(tmp_path / "dcm")
    assert vol.info["skipped_files"] == 0
    assert vol.info["transfer_syntax_uid"] == ("1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1")
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)


def test_symlinked_series_folder_is_followed_once(tmp_path):
    """A study folder whose series folder is a symlink (XNAT, NAS exports) is read through the
    link; a link back up the tree (a loop) neither recurses forever nor duplicates slices."""
    spec = fac.make_stack(8, 5.0, key="symlinked")
    fac.write_series(tmp_path / "store" / "series1", spec)
    study = tmp_path / "study"
    study.mkdir()
    (study / "series1").symlink_to(tmp_path / "store" / "series1", target_is_directory=True)
    (tmp_path / "store" / "series1" / "loop").symlink_to(tmp_path / "store", target_is_directory=True)
    scan = scan_folder(study)
    assert len(scan.headers) == 8
    vol = read_dicom_series(study, scan=scan)
    assert vol.info["duplicates"]["count"] == 0
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)


def test_slice_without_position_is_left_out_and_its_hole_reported(tmp_path, caplog):
    """One slice of a series lost its ImagePositionPatient (a broken export): the other slices
    still make the volume; the slice is not stacked at a guessed position, and its place is a gap."""
    import pydicom

    spec = fac.make_stack(16, 5.0, key="no-ipp")
    paths = fac.write_series(tmp_path / "dcm", spec)
    ds = pydicom.dcmread(paths[5])
    del ds.ImagePositionPatient
    ds.save_as(paths[5], enforce_file_format=True)
    vol = read_dicom_series(tmp_path / "dcm")
    assert vol.info["source_slice_count"] == 15
    assert vol.info["missing_slices"] == 1
    assert vol.hu_volume.shape[2] == 16
    fac.assert_geometry(vol.hu_volume, vol.affine_ras, spec, reach_mm=6.0)


@pytest.mark.parametrize("implicit", [True, False])
def test_bare_dataset_with_only_pixels_geometry_and_rescale_is_read_as_ct(tmp_path, implicit):
    """Anonymised archives keep some files as bare data sets holding only the pixels, geometry and
    rescale: no UID, no Modality, no SOP class. They are DICOM images (not junk) and read as CT."""
    import pydicom

    keep = {"ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
            "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
            "PhotometricInterpretation", "PixelData"}
    spec = fac.make_stack(8, 5.0, key=f"bare-minimal-{implicit}")
    paths = fac.write_series(tmp_path / "dcm", spec, naming="dcm")
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword in set(ds.dir()) - keep:
            delattr(ds, keyword)
        ds.save_as(path)
        fac.strip_file_meta(path, implicit)
    vol = read_dicom_series(tmp_path / "dcm")
    assert vol.info["skipped_files"] == 0
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)
    assert any("neither Modality nor SOPClassUID" in w for w in vol.info["warnings"])


def _rewrite_part10(path, meta: str, implicit: bool) -> None:
    """Rewrite a file with its 128-byte preamble and "DICM" but an odd file meta: ``"none"`` (no
    group 0002 at all), ``"no_syntax"`` (no TransferSyntaxUID) or ``"explicit"`` (one that declares
    explicit VR whatever the data set's encoding)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = pydicom.dcmread(path)
    out = b"\0" * 128 + b"DICM"
    if meta != "none":
        file_meta = FileMetaDataset()
        file_meta.MediaStorageSOPClassUID, file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        if meta == "explicit":
            file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, file_meta, enforce_standard=False)
        out += fp.getvalue()
    del ds.file_meta
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    path.write_bytes(out + fp.getvalue())


@pytest.mark.parametrize("meta, implicit", [("none", True), ("none", False), ("no_syntax", True), ("no_syntax", False),
                                            ("explicit", True)])
def test_preamble_with_missing_or_wrong_file_meta_is_read(tmp_path, meta, implicit):
    """"DICM" then no file meta, a file meta without TransferSyntaxUID, or one that declares explicit
    VR over an implicit data set: pydicom reads the header, so must the pixel decoding and the
    truncation check (which measured the pixel element header by the declared syntax)."""
    spec = fac.make_stack(8, 5.0, key=f"odd-meta-{meta}-{implicit}")
    paths = fac.write_series(tmp_path / "dcm", spec, naming="dcm")
    for path in paths:
        _rewrite_part10(path, meta, implicit)
    vol = read_dicom_series(tmp_path / "dcm")
    assert vol.info["skipped_files"] == 0 and vol.hu_volume.shape[2] == 8
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)


def test_a_series_none_of_whose_files_decodes_names_the_first_file_and_its_cause(tmp_path):
    """Every file's compressed frame is corrupt: the error named the folder and series but not why;
    it now repeats the first file's cause (file name and reason) after the count."""
    import pydicom
    from pydicom.encaps import encapsulate

    from ichct.transforms.dicom import DicomIngestError

    paths = fac.write_series(tmp_path / "dcm", fac.make_stack(6, 5.0, key="undecodable", transfer_syntax="rle"),
                             naming="ordered")
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PixelData = encapsulate([b"\x00" * 16])  # an RLE header that announces no segment
        ds.save_as(p)
    with pytest.raises(DicomIngestError) as err:
        read_dicom_series(tmp_path / "dcm")
    first = sorted(paths)[0].name
    message = str(err.value)
    assert "cannot be decoded" in message and f"{len(paths)} file(s); the first, {first}: " in message, message
    assert message.count(first) == 1 and "\n" not in message


def test_a_folder_whose_every_file_is_skipped_names_the_first_file_and_its_cause(tmp_path):
    """Every file truncated in its pixel data: 'no DICOM image files found (N skipped)' now says why."""
    from ichct.transforms.dicom import DicomIngestError

    paths = fac.write_series(tmp_path / "dcm", fac.make_stack(4, 5.0, key="all-truncated"), naming="ordered")
    for p in paths:
        fac.truncate_pixel_data(p, 0.5)
    with pytest.raises(DicomIngestError) as err:
        read_dicom_series(tmp_path / "dcm")
    message = str(err.value)
    assert "4 file(s) skipped" in message and "truncated" in message, message
    assert any(f"the first, {p.name}: " in message for p in paths), message
