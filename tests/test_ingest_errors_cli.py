"""Category 9 (wrong input -> exit 1, reason on stderr, no output), the sidecar, patient privacy,
and the installed command run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dicom_factory as fac
import numpy as np
import pydicom
import pytest


def _make_input(kind: str, folder):
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "mr_only":
        fac.write_series(folder, fac.make_stack(10, 5.0, key="mr-only", modality="MR", sop_class_uid=fac.MR_IMAGE_STORAGE,
                                                image_type=("ORIGINAL", "PRIMARY", "M")))
        return ("MR", "CT")
    if kind == "empty":
        return ("empty",)
    if kind == "only_scouts":
        fac.write_scout(folder, planes=("sagittal", "coronal"))
        fac.write_scout(folder / "second", planes=("coronal",), key="scout2", series_number=7)
        return ("localizer",)
    if kind == "single_slice":
        fac.write_series(folder, fac.make_stack(1, 5.0, key="single"))
        return ("single slice",)
    if kind == "non_dicom_only":
        fac.write_junk(folder)
        return ("no DICOM",)
    if kind == "dose_report_only":
        fac.write_dose_report(folder)
        return ("secondary capture",)
    if kind in ("zero_pixel_spacing", "degenerate_orientation"):
        keyword, value = (("PixelSpacing", [0, 0]) if kind == "zero_pixel_spacing"
                          else ("ImageOrientationPatient", [0, 0, 0, 0, 0, 0]))
        for path in fac.write_series(folder, fac.make_stack(10, 5.0, key=kind)):
            ds = pydicom.dcmread(path)
            setattr(ds, keyword, value)
            ds.save_as(path)
        return (keyword, "not a positive size" if kind == "zero_pixel_spacing" else "perpendicular unit vectors")
    raise ValueError(kind)


KINDS = ["mr_only", "empty", "only_scouts", "single_slice", "non_dicom_only", "dose_report_only", "zero_pixel_spacing",
         "degenerate_orientation"]


@pytest.mark.parametrize("kind", KINDS)
def test_unusable_input_exits_1_without_output(tmp_path, run_cli, kind):
    src = tmp_path / f"input_{kind}"
    words = _make_input(kind, src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = run_cli("convert", src, out_dir / "ct.nii.gz")
    assert res.code == 1
    assert str(src) in res.err, f"stderr does not name the folder: {res.err!r}"
    for w in words:
        assert w.lower() in res.err.lower(), f"stderr does not give the reason ({w}): {res.err!r}"
    assert "Traceback" not in res.err
    assert fac.tree_listing(out_dir) == [], "output or temporary files were left behind"
    assert res.out == ""


def test_missing_folder_exits_1(tmp_path, run_cli):
    res = run_cli("convert", tmp_path / "does_not_exist", tmp_path / "o.nii.gz")
    assert res.code == 1
    assert "does_not_exist" in res.err and "not exist" in res.err
    assert fac.tree_listing(tmp_path) == []


def test_bad_output_name_exits_2_without_output(tmp_path, run_cli):
    """A wrong OUT extension is a usage error (tests/test_cli_usage.py), refused before reading."""
    fac.write_series(tmp_path / "dcm", fac.make_stack(10, 5.0, key="badout"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = run_cli("convert", tmp_path / "dcm", out_dir / "ct.nrrd")
    assert res.code == 2
    assert "ct.nrrd" in res.err and "argument OUT" in res.err
    assert fac.tree_listing(out_dir) == []


def test_usage_error_exits_2(run_cli):
    assert run_cli("convert").code == 2


@pytest.mark.parametrize("kind", ["only_scouts", "mr_only", "single_slice"])
def test_info_on_unusable_folder_reports_no_default(tmp_path, run_cli, kind):
    src = tmp_path / "in"
    _make_input(kind, src)
    res = run_cli("info", src, "--json")
    assert res.code == 0, res.err
    info = json.loads(res.out)
    assert info["default_series_uid"] is None
    assert info["series"] and all(s["excluded_reason"] for s in info["series"])


def test_sidecar_contents_and_no_patient_identifiers(study_folder, tmp_path, run_cli, caplog):
    out = tmp_path / "ct.nii.gz"
    res_info = run_cli("info", study_folder.root, "--json")
    res_info_txt = run_cli("info", study_folder.root, "-v")
    res = run_cli("convert", study_folder.root, out, "-v")
    assert res.code == 0, res.err
    side_text = (tmp_path / "ct.json").read_text(encoding="utf-8")
    side = json.loads(side_text)
    fac.assert_no_phi(side_text, res.out, res.err, res_info.out, res_info.err, res_info_txt.out, res_info_txt.err,
                      caplog.text)
    # The NIfTI header carries no identifiers either.
    import gzip

    fac.assert_no_phi(gzip.decompress(out.read_bytes())[:2048].decode("latin-1"))
    assert fac.tree_listing(tmp_path) == ["ct.json", "ct.nii.gz"]
    spec = study_folder.soft
    assert side["series_uid"] == spec.series_uid
    assert side["study_uid"] == study_folder.study.study_uid
    assert side["modality"] == "CT" and side["units"] == "HU" and side["space"] == "RAS"
    assert side["shape"] == [64, 60, 20]
    assert np.allclose(side["spacing_mm"], [3.9, 4.2, 5.0])
    assert side["pixel_spacing_mm"] == [4.2, 3.9]
    assert side["slice_count"] == 20 and side["source_slice_count"] == 20 and side["source_file_count"] == 20
    assert side["tilt"]["detected"] is False and side["tilt"]["corrected"] is False
    assert side["gaps"] == [] and side["missing_slices"] == 0 and side["resampled_to_uniform_spacing"] is False
    assert side["duplicates"]["count"] == 0
    assert side["skipped_files"] >= 3
    _, affine, _ = fac.load_nifti(out)
    assert np.allclose(side["affine_ras"], affine, atol=1e-5)
    # a salted pseudonym instead of the patient ID, stable for the same salt
    assert side["patient_key"] and side["patient_key"] != fac.FAKE_PATIENT_ID
    from ichct.transforms.dicom import patient_key

    assert side["patient_key"] == patient_key(fac.FAKE_PATIENT_ID)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "patient_name", "patient_id", "birth_date"):
        assert key not in side


def _subprocess_env(tmp_path):
    env = dict(os.environ)
    env["ICHCT_SALT"] = "ichct-test-salt-subprocess"
    env["ICHCT_SALT_FILE"] = str(tmp_path / "salt")
    env["HOME"] = str(tmp_path / "home")
    return env


def test_subprocess_convert_and_failure(tmp_path):
    spec = fac.make_stack(16, 4.0, key="subprocess", tilt_deg=-14.0, tilt_mode="ipp")
    fac.write_series(tmp_path / "dcm", spec, subfolders=2)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out" / "ct.nii.gz"
    env = _subprocess_env(tmp_path)
    script = ("import sys\nfrom ichct.pipeline.cli import main\n"
              "sys.exit(max(main(sys.argv[1:4]), 10 * main(sys.argv[4:])))")
    # One interpreter for both runs keeps the suite fast; `python -m ichct` is checked below.
    proc = subprocess.run([sys.executable, "-c", script, "convert", str(tmp_path / "dcm"), str(out),
                           "convert", str(tmp_path / "empty"), str(tmp_path / "out2" / "x.nii.gz")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 10, proc.stderr  # first run 0, second run 1
    assert str(tmp_path / "empty") in proc.stderr and "empty" in proc.stderr
    assert not (tmp_path / "out2").exists() or fac.tree_listing(tmp_path / "out2") == []
    data, affine, _ = fac.load_nifti(out)
    fac.assert_geometry(data, affine, spec, reach_mm=6.5)
    fac.assert_no_phi(proc.stdout, proc.stderr)
    assert not (tmp_path / "home").exists()


def test_module_entry_point_subprocess(tmp_path):
    spec = fac.make_stack(10, 5.0, key="module-entry")
    fac.write_series(tmp_path / "dcm", spec)
    out = tmp_path / "ct.nii.gz"
    proc = subprocess.run([sys.executable, "-m", "ichct", "convert", str(tmp_path / "dcm"), str(out)],
                          capture_output=True, text=True, env=_subprocess_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    data, affine, _ = fac.load_nifti(out)
    fac.assert_exact(data, affine, spec)
    assert str(out) in proc.stdout
