"""`ichct predict` and `ichct evaluate` on foreign DICOM (headers written by tests/foreign_dicom.py).

Every study gets mask.nii.gz, seg.dcm, report.json and overlays, with the shipped bundles and no
model flag; every seg.dcm is checked with dciodvfy (no error except those about the source's own
non-conforming UID values it must reference), reopened with highdicom's ``segread``, and its
frames are checked against the mask in world space, per source instance.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest

import foreign_dicom as fd
from dciodvfy_check import dciodvfy_lines, unexpected_errors

pytestmark = pytest.mark.slow
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def shipped():
    from ichct.pipeline.models.shipped_models import load_shipped_models

    return load_shipped_models(device="cpu", warn=False)


def assert_no_phi(*texts: str, phi: tuple[str, ...]) -> None:
    """No patient name part, ID or birth date of the corpus in any of ``texts``."""
    assert phi
    for text in texts:
        for value in phi:
            assert value.lower() not in text.lower(), f"patient identifier {value!r} leaked"


def _series_cases(root: Path) -> dict[str, fd.ForeignSeries]:
    """One series per variant of the foreign corpus, each in a folder of its own."""
    kw = dict(n_slices=12, rows=64, seed=3)
    cases: dict[str, fd.ForeignSeries] = {}
    for syntax in ("implicit", "big_endian", "jpeg_ls", "jpeg2000"):
        cases[syntax] = fd.write_transfer_syntax_series(root / syntax, syntax, **kw)
    cases["deid_empty"] = fd.write_deidentified_study(root / "deid_empty", type2="empty", **kw)
    cases["deid_absent_no_for"] = fd.write_deidentified_study(root / "deid_absent", type2="absent",
                                                              frame_of_reference=False, **kw)
    cases["private"] = fd.write_private_tag_series(root / "private", **kw)
    cases["latin1"] = fd.write_charset_series(root / "latin1", "ISO_IR 100", **kw)
    cases["utf8"] = fd.write_charset_series(root / "utf8", "ISO_IR 192", **kw)
    return cases


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    rsna = fd.write_rsna_layout(root / "rsna", studies=4, files_per_series=16, rows=64, pixel_spacing=3.75,
                                positives=[True, False, True, False], variants=(fd.SIGNED16, fd.UNSIGNED12, fd.WRAP12),
                                seed=5)
    return root, rsna, _series_cases(root / "series")


def _rsna_study_folder(rsna: fd.RsnaCorpus, series: fd.ForeignSeries, dest: Path) -> Path:
    """One RSNA series as a folder of its own (hard links into the flat folder, names kept)."""
    dest.mkdir(parents=True)
    for f in series.files:
        (dest / f.name).hardlink_to(f)
    return dest


def _check_seg_on_source(seg_path: Path, mask_path: Path, series: fd.ForeignSeries) -> None:
    """seg.dcm reopens with segread, references every source instance, and each frame equals the
    mask sampled at that source slice's world position."""
    from ichct.transforms.dicom.validation import quiet_pydicom_values

    mask = nib.load(str(mask_path))
    labels = np.asarray(mask.dataobj)
    inv = np.linalg.inv(mask.affine)
    with quiet_pydicom_values():
        seg = hd.seg.segread(str(seg_path))
        referenced = {str(item.ReferencedSOPInstanceUID)
                      for s in seg.ReferencedSeriesSequence for item in s.ReferencedInstanceSequence}
        assert referenced == set(series.sop_uids)
        planes = {}
        for n, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
            src = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            ipp = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            ident = frame if "SegmentIdentificationSequence" in frame else seg.SharedFunctionalGroupsSequence[0]
            segment = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            planes.setdefault(src, []).append((ipp, segment, seg.pixel_array[n] if seg.pixel_array.ndim == 3
                                               else seg.pixel_array))
    assert planes, "the SEG holds no frame"
    for k, sop in enumerate(series.sop_uids):
        expected_ipp = series.geometry.ipp(k)
        ijk = inv @ (_LPS @ np.array([*expected_ipp, 1.0]))
        kk = int(round(ijk[2]))
        want = labels[:, :, kk].T  # (rows, columns) of the source slice
        got = np.zeros_like(want)
        for ipp, segment, pixels in planes.get(sop, []):
            np.testing.assert_allclose(ipp, expected_ipp, atol=1e-3)  # the frame lies on its source slice
            got[pixels > 0] = segment
        np.testing.assert_array_equal(got, want, err_msg=f"SEG frame of {sop} differs from the mask")


def _check_prediction(out: Path, series: fd.ForeignSeries, texts: list[str]) -> dict:
    for name in ("mask.nii.gz", "seg.dcm", "report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["outputs"]["seg_dicom"] == "seg.dcm" and "seg_dicom_skipped" not in report["outputs"]
    assert report["outputs"]["overlays"] and all((out / p).is_file() for p in report["outputs"]["overlays"])
    assert report["models_source"] == "shipped"
    lines = dciodvfy_lines(out / "seg.dcm")
    assert not unexpected_errors(lines, [*series.sop_uids, series.series_uid, series.study_uid]), lines
    _check_seg_on_source(out / "seg.dcm", out / "mask.nii.gz", series)
    assert_no_phi(*texts, (out / "report.json").read_text(), phi=series.phi)
    return report


def test_predict_with_no_model_flag_on_an_rsna_study(corpus, run_cli, tmp_path):
    _root, rsna, _cases = corpus
    series = next(s for s in rsna.series if s.variant == fd.SIGNED16)
    study = _rsna_study_folder(rsna, series, tmp_path / "study")
    res = run_cli("predict", study, tmp_path / "out")
    assert res.code == 0, res.err
    assert "demonstration weights" in res.err and "synthetic" in res.err
    assert sum("UID" in line for line in res.err.splitlines()) <= 1  # one line per series, not per file
    report = _check_prediction(tmp_path / "out", series, [res.out, res.err])
    src = report["outputs"]["seg_dicom_source"]
    assert src["frame_of_reference_source"] == "generated" and src["sop_class_from_file_meta"]
    assert "PatientName" in src["type2_written_empty"] and "PatientBirthDate" in src["type2_written_empty"]
    assert any("FrameOfReferenceUID" in w for w in report["warnings"])


@pytest.mark.parametrize("variant", [fd.UNSIGNED12, fd.WRAP12])
def test_predict_rsna_encodings(corpus, shipped, tmp_path, variant):
    from ichct.pipeline.predict.run import predict

    _root, rsna, _cases = corpus
    series = next(s for s in rsna.series if s.variant == variant)
    study = _rsna_study_folder(rsna, series, tmp_path / "study")
    report = predict(study, tmp_path / "out", shipped, models_source="shipped")
    _check_prediction(tmp_path / "out", series, [])
    rule = report["series"]["hu_check"]["rule"]
    assert ("wrap" in rule) == (variant == fd.WRAP12)
    if variant == fd.WRAP12:
        assert any("wrap" in w for w in report["warnings"])


@pytest.mark.parametrize("case", ["implicit", "big_endian", "jpeg_ls", "jpeg2000", "deid_empty", "deid_absent_no_for",
                                  "private", "latin1", "utf8"])
def test_predict_foreign_series(corpus, shipped, tmp_path, case, caplog):
    from ichct.pipeline.predict.run import predict

    _root, _rsna, cases = corpus
    series = cases[case]
    report = predict(series.folder, tmp_path / "out", shipped, models_source="shipped")
    _check_prediction(tmp_path / "out", series, [caplog.text])
    expected_for = "generated" if case == "deid_absent_no_for" else "source"
    assert report["outputs"]["seg_dicom_source"]["frame_of_reference_source"] == expected_for


def test_predict_batch_over_the_rsna_series(corpus, run_cli, tmp_path):
    _root, rsna, _cases = corpus
    rows = ["id,path"]
    for n, s in enumerate(rsna.series):
        rows.append(f"s{n},{_rsna_study_folder(rsna, s, tmp_path / 'studies' / f's{n}')}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    res = run_cli("predict", "--batch", tmp_path / "list.csv", tmp_path / "out", "--no-overlays")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert summary["n"] == len(rsna.series) and summary["n_failed"] == 0
    for n, s in enumerate(rsna.series):
        lines = dciodvfy_lines(tmp_path / "out" / f"s{n}" / "seg.dcm")
        assert not unexpected_errors(lines, [*s.sop_uids, s.series_uid, s.study_uid]), lines
        _check_seg_on_source(tmp_path / "out" / f"s{n}" / "seg.dcm", tmp_path / "out" / f"s{n}" / "mask.nii.gz", s)
    assert_no_phi(res.out, res.err, phi=rsna.phi)


def test_a_study_no_seg_can_reference_is_written_without_seg_dcm_and_says_why(corpus, run_cli, tmp_path):
    """No SOP class anywhere (data set nor file meta): mask, report and overlays, no seg.dcm; the warning,
    report.json and a batch's summary.csv name the file and the cause (it used to fail the study)."""
    import pydicom

    _root, rsna, _cases = corpus
    series = rsna.series[0]
    study = tmp_path / "study"
    study.mkdir()
    for f in series.files:
        ds = pydicom.dcmread(f)
        del ds.file_meta.MediaStorageSOPClassUID
        ds.save_as(study / f.name)
    res = run_cli("predict", study, tmp_path / "out")
    assert res.code == 0, res.err
    assert "no DICOM SEG written" in res.err and "SOPClassUID" in res.err and "Traceback" not in res.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["outputs"]["seg_dicom"] is None and not (tmp_path / "out" / "seg.dcm").exists()
    assert "SOPClassUID" in report["outputs"]["seg_dicom_skipped"] and ".dcm" in report["outputs"]["seg_dicom_skipped"]
    assert (tmp_path / "out" / "mask.nii.gz").is_file() and report["outputs"]["overlays"]
    (tmp_path / "list.csv").write_text(f"path,id\n{study},s0\n", encoding="utf-8")
    res = run_cli("predict", "--batch", tmp_path / "list.csv", tmp_path / "batch", "--no-overlays", "--workers", "1")
    assert res.code == 0, res.err
    row = (tmp_path / "batch" / "summary.csv").read_text(encoding="utf-8").splitlines()
    assert "seg_dicom" in row[0].split(",") and "skipped: the source series cannot be referenced" in row[1]


def test_manifest_and_evaluate_with_no_model_flag_on_the_rsna_layout(corpus, run_cli, tmp_path):
    _root, rsna, _cases = corpus
    manifest = tmp_path / "rsna.json"
    res = run_cli("manifest", "build", "--source", "rsna", "--root", rsna.root, "--out", manifest, "--folds", "2",
                  "--test-fraction", "0.5")
    assert res.code == 0, res.err
    res = run_cli("evaluate", "--manifest", manifest, "--split", "all", "--out", tmp_path / "eval",
                  "--bootstrap", "20")
    assert res.code == 0, res.err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["models_source"] == "shipped"
    per_case = (tmp_path / "eval" / "per_case.csv").read_text().splitlines()
    assert len(per_case) - 1 == len(rsna.series)
    assert_no_phi(res.out, res.err, (tmp_path / "eval" / "report.md").read_text(),
                  (tmp_path / "eval" / "per_case.csv").read_text(), phi=rsna.phi)
