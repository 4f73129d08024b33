"""``ichct predict`` on the command line: run folders, refusals without partial output, batch mode.

Models are run folders holding randomly initialised networks built by training's constructor
(``predict_helpers.write_run``), loaded by ``--run`` like trained runs.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import pytest

import dicom_factory as fac
import predict_helpers as ph


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("predict_cli")


@pytest.fixture(scope="module")
def runs(base):
    return ph.write_run(base / "runs" / "seg", "seg"), ph.write_run(base / "runs" / "cls", "cls")


@pytest.fixture(scope="module")
def good(base):
    ph.write_study(base / "good" / "dcm", key="good")
    return base / "good"


@pytest.fixture(scope="module")
def mr(base):
    spec = fac.make_stack(12, 5.0, key="mr", modality="MR", sop_class_uid=fac.MR_IMAGE_STORAGE, description="AX T2",
                          image_type=("ORIGINAL", "PRIMARY", "M", "NORM"))
    fac.write_series(base / "mr", spec, study=fac.Study(key="mr"))
    return base / "mr"


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_predict_with_run_folders(run_cli, base, runs, good):
    from ichct.pipeline.ingest import convert_series

    out = base / "out_cli"
    r = run_cli("predict", good, out, "--run", runs[0], "--run", runs[1], "--rule", "max")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["rule"] == "max" and isinstance(summary["any"]["call"], bool)
    assert _listing(out) == ["mask.nii.gz", "overlays", "report.json", "seg.dcm"]
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert doc["models"]["seg"]["run_dir"] == str(runs[0].resolve()) and doc["models"]["cls"]["kind"] == "cls"
    assert doc["rule"]["name"] == "max" and doc["findings"]["any"]["score_unit"] == "probability"
    convert_series(good, base / "ref_cli.nii.gz")
    ref, mask = nib.load(base / "ref_cli.nii.gz"), nib.load(out / "mask.nii.gz")
    assert mask.shape == ref.shape and (abs(mask.affine - ref.affine) < 1e-5).all()
    fac.assert_no_phi(r.out, r.err, (out / "report.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", ["mr", "empty", "corrupt"])
def test_bad_input_exits_1_naming_it_and_writes_nothing(run_cli, base, runs, mr, case):
    if case == "mr":
        src, expect = mr, "MR"
    elif case == "empty":
        src, expect = base / "empty_study", "is empty"
        src.mkdir()
    else:
        src = base / "corrupt"
        _, paths = ph.write_study(src, key="corrupt", n_slices=6)
        for p in paths:
            fac.truncate_pixel_data(p, keep_fraction=0.3)
        expect = "truncated DICOM file"
    parent = base / f"outs_{case}"
    parent.mkdir()
    out = parent / "result"
    r = run_cli("predict", src, out, "--run", runs[0], "--run", runs[1])
    assert r.code == 1
    assert str(src) in r.err and expect in r.err, r.err
    assert not out.exists() and _listing(parent) == []  # nothing half-written, no temp folder left
    fac.assert_no_phi(r.err)


def test_existing_output_folder_needs_overwrite(run_cli, base, runs, good):
    out = base / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    r = run_cli("predict", good, out, "--run", runs[0], "--no-overlays")
    assert r.code == 1 and "--overwrite" in r.err
    assert _listing(out) == ["keep.txt"]
    r = run_cli("predict", good, out, "--run", runs[0], "--no-overlays", "--overwrite")
    assert r.code == 0, r.err
    assert _listing(out) == ["mask.nii.gz", "report.json", "seg.dcm"]
    assert [p.name for p in base.iterdir() if p.name.startswith(".taken.")] == []


def test_usage_errors_exit_2(run_cli, base, runs, good):
    assert run_cli("predict", good, "--run", runs[0]).code == 2  # no OUT_DIR
    assert run_cli("predict", good, base / "u1", "--run", runs[0], "--run", runs[1], "--bundle", runs[0]).code == 2
    # no model at all is no usage error: the shipped bundles are used (tests/test_shipped_models.py)
    assert run_cli("predict", good, base / "u2", "--run", runs[0], "--rule", "nope").code == 2
    r = run_cli("predict", good, base / "u3", "--run", runs[0], "--rule", "consecutive")
    assert r.code == 1 and "needs a classification model" in r.err
    assert not any((base / f"u{i}").exists() for i in (1, 2, 3))


def test_batch_reports_a_broken_study_and_goes_on(run_cli, base, runs, good, mr):
    from ichct.pipeline.ingest import convert_series

    nii = base / "batch_inputs" / "second.nii.gz"
    convert_series(good, nii)
    lst = base / "batch_inputs" / "list.csv"
    lst.write_text(f"id,path\nfirst,{good}\nbroken,{mr}\n,second.nii.gz\nmissing,{base / 'nope'}\n", encoding="utf-8")
    out = base / "batch_out"
    r = run_cli("predict", "--batch", lst, out, "--run", runs[0], "--run", runs[1], "--no-overlays")
    assert r.code == 1, r.err
    summary = json.loads(r.out)
    assert (summary["n"], summary["n_ok"], summary["n_failed"]) == (4, 2, 2)
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["first", "broken", "second", "missing"]
    assert rows["first"]["status"] == rows["second"]["status"] == "ok"
    assert rows["broken"]["status"] == "error" and "MR" in rows["broken"]["error"]
    assert rows["missing"]["status"] == "error" and "no such file" in rows["missing"]["error"]
    assert _listing(out) == ["first", "second", "summary.csv"]
    assert (out / "first" / "seg.dcm").is_file() and not (out / "second" / "seg.dcm").exists()
    assert rows["first"]["call_any"] in ("True", "False") and float(rows["first"]["seconds"]) > 0
    fac.assert_no_phi(r.out, r.err, (out / "summary.csv").read_text(encoding="utf-8"))
    # all studies fine -> exit 0
    ok_list = base / "batch_inputs" / "ok.csv"
    ok_list.write_text(f"path\n{good}\n", encoding="utf-8")
    r = run_cli("predict", "--batch", ok_list, base / "batch_ok", "--run", runs[0], "-q")
    assert r.code == 0, r.err
    assert _listing(base / "batch_ok") == ["good", "summary.csv"]


def test_report_path_does_not_name_the_patient(run_cli, base, runs):
    """Archives filed by patient (``<PatientID>/<Family_Given>/``): the report keeps where the study
    came from with the DICOM PatientID and the parts of PatientName replaced by ``[patient]``."""
    family, given = fac.FAKE_PATIENT_NAME.split("^")[:2]
    src = base / "archive" / fac.FAKE_PATIENT_ID / f"{family.upper()}_{given.lower()}" / "CT_HEAD"
    ph.write_study(src, key="filed")
    out = base / "out_filed"
    r = run_cli("predict", src, out, "--run", runs[0], "--no-overlays")
    assert r.code == 0, r.err
    report_text = (out / "report.json").read_text(encoding="utf-8")
    doc = json.loads(report_text)
    expected = str((base / "archive").resolve() / "[patient]" / "[patient]_[patient]" / "CT_HEAD")
    assert doc["input"]["path"] == expected
    fac.assert_no_phi(report_text)


@pytest.mark.parametrize("case", ["truncated_gzip", "text"])
def test_unreadable_nifti_exits_1_naming_it_without_a_traceback(run_cli, base, runs, good, case):
    from ichct.pipeline.ingest import convert_series

    src = base / f"bad_{case}.nii.gz"
    if case == "truncated_gzip":
        whole = base / "whole_for_truncation.nii.gz"
        convert_series(good, whole)
        src.write_bytes(whole.read_bytes()[:3000])
    else:
        src.write_text("not a NIfTI image\n", encoding="utf-8")
    parent = base / f"outs_nifti_{case}"
    parent.mkdir()
    r = run_cli("predict", src, parent / "result", "--run", runs[0], "--run", runs[1])
    assert r.code == 1
    assert f"{src}: not a readable NIfTI file" in r.err, r.err
    assert "Traceback" not in r.err
    assert _listing(parent) == []
