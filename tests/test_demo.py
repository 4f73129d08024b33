"""`ichct demo --quick`: the README's main job, end to end on the embedded synthetic data."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from ichct.pipeline.cli import main


def test_demo_quick_writes_cohort_and_reads_every_study(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
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
