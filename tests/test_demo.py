"""`ichct demo --quick`: the README's main job, end to end on the embedded synthetic data."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

import contextlib
import io

import pytest

from ichct.pipeline.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`ichct demo --quick` run once: (output folder, what it printed)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["demo", "--quick", "--out", str(out), "--workers", "1"]) == 0
    return out, buf.getvalue()


def test_demo_quick_leaves_only_its_artefacts(demo):
    out, _ = demo
    assert sorted(p.name for p in out.iterdir()) == [
        "bundles", "evaluation", "manifest.json", "predict", "runs", "synthetic", "volumes"]


def test_demo_quick_writes_cohort_and_reads_every_study(demo):
    out, printed = demo
    cohort = json.loads((out / "synthetic" / "cohort.json").read_text())
    studies = cohort["studies"]
    assert len(studies) >= 3
    assert f"{len(studies)} studies" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["training"]) + len(manifest["test"]) == len(studies)
    train_keys = {e["patient_key"] for e in manifest["training"]}
    assert train_keys.isdisjoint({e["patient_key"] for e in manifest["test"]})
    assert "manifest.json" in printed
    for study in studies:
        volume_path = out / "volumes" / f"{study['study_uid']}.nii.gz"
        volume = nib.load(volume_path)
        label = nib.load(out / "synthetic" / study["label"])
        assert volume.shape == label.shape
        np.testing.assert_allclose(volume.affine, label.affine, atol=1e-3)
        sidecar = json.loads(volume_path.with_name(volume_path.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["series_uid"] == study["series_uid"]
        hu = np.asarray(volume.dataobj)
        blood = np.asarray(label.dataobj) > 0
        if study["ct_labels"]["any"]:
            assert blood.any()
            assert 40 <= float(np.median(hu[blood])) <= 100  # acute blood, read back in HU
        else:
            assert not blood.any()
        assert study["study_uid"][-10:] in printed


def test_demo_quick_trains_evaluates_packages_and_predicts(demo):
    """The later stages of the demo: runs, held-out evaluation, verified bundles, a predict report."""
    from ichct.pipeline.bundle_verify import verify_bundle

    out, printed = demo
    manifest = json.loads((out / "manifest.json").read_text())
    test_keys = {e["patient_key"] for e in manifest["test"]}
    for kind in ("seg", "cls"):
        run = out / "runs" / kind
        assert (run / "best.pt").is_file() and (run / "thresholds.json").is_file()
        assert test_keys.isdisjoint(json.loads((run / "train_patients.json").read_text())["patient_keys"])
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_studies"] == len(manifest["test"])
    assert set(metrics["model"]["runs"]) == {"seg", "cls"}
    for name in ("ich_ct_segmentation", "ich_ct_classification"):
        bundle = out / "bundles" / name
        assert all(r.ok for r in verify_bundle(bundle)), name
        assert json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
        assert str(bundle) in printed
    predict_dirs = list((out / "predict").iterdir())
    assert len(predict_dirs) == 1
    report = json.loads((predict_dirs[0] / "report.json").read_text())
    assert report["findings"]["any"]["call"] in (True, False)
    for name in ("mask.nii.gz", "seg.dcm"):
        assert (predict_dirs[0] / name).is_file()
    assert any(p.suffix == ".png" for p in (predict_dirs[0] / "overlays").iterdir())
    assert "held-out evaluation" in printed and "roc_auc" in printed
