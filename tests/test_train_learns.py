"""Short real training runs that must beat chance by a clear margin on held-out patients.

The data is a PhysioNet CT-ICH-layout phantom (NIfTI volumes in HU, masks, the slice CSV) read
through the ``physionet`` adapter, so the test also covers the bring-your-own-data path: a skull
ring around brain tissue (35 HU, noise), and in half of the patients an acute bleed (70 HU
ellipsoid). Both models train for a few epochs from scratch on the training folds; the test
patients are never seen. Chance is Dice ~0 and AUC 0.5.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ichct.pipeline.evaluate.metrics_ct import roc_auc_known_labels as roc_auc
from ichct.pipeline.train.engine import train

SHAPE = (64, 64, 16)
SPACING = (3.0, 3.0, 5.0)
N_PATIENTS = 20


def _phantom(rng: np.random.Generator, bleed: bool) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(SHAPE, SPACING)], indexing="ij")
    a, b = rng.uniform(70, 80), rng.uniform(82, 90)  # outer skull semi-axes (mm)
    r = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    head = r <= 1.0
    brain = r <= 0.9
    hu = np.full(SHAPE, -1000.0)
    hu[head] = 1200.0  # skull
    hu[brain] = (35.0 + 8.0 * np.sin(x / 9.0) * np.cos(y / 11.0))[brain]  # grey/white texture
    mask = np.zeros(SHAPE, np.uint8)
    if bleed:
        c = np.array([rng.uniform(-35, 35), rng.uniform(-40, 40), rng.uniform(-15, 15)])
        radii = rng.uniform([9, 9, 8], [16, 16, 14])
        blob = (((x - c[0]) / radii[0]) ** 2 + ((y - c[1]) / radii[1]) ** 2 + ((z - c[2]) / radii[2]) ** 2) <= 1.0
        blob &= brain
        hu[blob] = rng.uniform(65, 80)
        mask[blob] = 1
    hu[head] += rng.normal(0.0, 5.0, size=int(head.sum()))
    return np.rint(hu).astype(np.int16), mask


def make_physionet_phantom(base: Path) -> dict:
    """Write the phantom cohort under ``base`` and build its manifest (3 folds + test)."""
    from ichct.pipeline.manifests import build_manifest, load_manifest

    root = base / "ct-ich"
    (root / "ct_scans").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(11)
    affine = np.diag([*SPACING, 1.0])
    rows = []
    for number in range(1, N_PATIENTS + 1):
        hu, mask = _phantom(rng, bleed=number % 2 == 0)
        nib.save(nib.Nifti1Image(hu, affine), root / "ct_scans" / f"{number:03d}.nii")
        nib.save(nib.Nifti1Image(mask, affine), root / "masks" / f"{number:03d}.nii")
        for k in range(SHAPE[2]):
            pos = int(mask[..., k].any())
            rows.append({"PatientNumber": number, "SliceNumber": k + 1, "Intraventricular": 0, "Intraparenchymal": pos,
                         "Subarachnoid": 0, "Epidural": 0, "Subdural": 0, "No_Hemorrhage": 1 - pos, "Fracture_Yes_No": 0})
    with open(root / "hemorrhage_diagnosis_raw_ct.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    manifest = base / "physionet.json"
    doc = build_manifest("physionet", root, manifest, folds=3, test_fraction=0.25, seed=1, cache=False)
    return {"base": base, "manifest": manifest, "doc": doc, "test": load_manifest(manifest, "test")}


@pytest.fixture(scope="module")
def physionet_phantom(tmp_path_factory) -> dict:
    return make_physionet_phantom(tmp_path_factory.mktemp("learn"))


def test_segmenter_beats_chance_on_held_out_patients(physionet_phantom) -> None:
    from ichct.pipeline.models.inference import load_run, predict_study

    cfg = {"spacing_mm": [3.0, 3.0, 5.0], "patch": [32, 32, 8], "samples_per_volume": 4, "batch_size": 2,
           "network": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}, "lr": 5e-3}
    run = physionet_phantom["base"] / "seg"
    train("seg", physionet_phantom["manifest"], 0, run, epochs=8, config=cfg, seed=0)
    model = load_run(run)
    dices, scores, labels = [], [], []
    for entry in physionet_phantom["test"]:
        pred = predict_study({"seg": model}, entry["image"])
        truth = np.asarray(nib.load(entry["label"]).dataobj) > 0
        got = pred.seg_original > 0
        if truth.any():
            dices.append(2.0 * float((got & truth).sum()) / float(got.sum() + truth.sum()))
        scores.append(float(pred.volumes_ml["any"]))
        labels.append(int(entry["ct_labels"]["any"]))
    assert 0 < sum(labels) < len(labels)
    assert np.mean(dices) > 0.5, dices
    assert roc_auc(scores, labels) >= 0.8


def test_classifier_beats_chance_on_held_out_slices(physionet_phantom) -> None:
    from ichct.pipeline.models.inference import load_run, predict_study

    cfg = {"in_plane": [32, 32], "batch_size": 1, "lr": 1e-2,
           "network": {"feature_dim": 32, "rnn_hidden": 16}}
    run = physionet_phantom["base"] / "cls"
    train("cls", physionet_phantom["manifest"], 0, run, epochs=12, config=cfg, seed=0)
    model = load_run(run)
    probs, labels = [], []
    for entry in physionet_phantom["test"]:
        pred = predict_study({"cls": model}, entry["image"])
        probs += pred.slice_probs[:, 0].tolist()
        labels += [int(row[0]) for row in entry["slice_labels"]]
    assert 0 < sum(labels) < len(labels)
    assert roc_auc(probs, labels) >= 0.8
