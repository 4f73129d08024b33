"""``ichct manifest export-nnunet``: a manifest -> an nnU-Net v2 raw dataset.

One tiny synthetic cohort (6 patients, 64 x 64 x 12, tilted stacks and extra series included) and
its manifest (2 folds + test) are built once per module and exported once; the tests check the
export with nnU-Net's own ``verify_dataset_integrity``, against ``ichct convert`` voxel for voxel,
against the manifest's folds, and the refusals (no voxel labels, a non-empty target, a failure
half-way leaves nothing).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from eval_helpers import set_env

from ichct.errors import InputError
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.ingest import convert_series
from ichct.pipeline.manifests import export_nnunet, load_manifest, nnunet_export

DATASET = "Dataset501_ICH"
CASE_FILE = re.compile(r"ICH_\d{4}(_0000)?\.nii\.gz")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A 6-patient synthetic cohort, its manifest and the export of it (Python API)."""
    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    base = tmp_path_factory.mktemp("nnunet_export")
    with pytest.MonkeyPatch.context() as mp:
        set_env(mp, base / "env")
        cfg = SynthConfig(n_patients=6, seed=5, matrix=64, slices=12, follow_up_fraction=0.3)
        generate_cohort(cfg, base / "cohort", workers=1)
        manifest = base / "m.json"
        build_manifest("synth", base / "cohort", manifest, folds=2, test_fraction=0.25, seed=0, cache=False)
        export = export_nnunet(manifest, base / "raw", 501, cache=False)
    return {"base": base, "manifest": manifest, "export": export, "data": json.loads(manifest.read_text())}


def _dataset(cohort) -> Path:
    return cohort["base"] / "raw" / DATASET


def _case_map(cohort) -> dict:
    return json.loads((_dataset(cohort) / "ichct_case_map.json").read_text())


def _entries_by_study(cohort) -> dict[str, dict]:
    return {e["study_uid"]: e for e in load_manifest(cohort["manifest"], "all", check=False)}


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_export_passes_nnunets_integrity_check(cohort, capfd):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    capfd.readouterr()
    verify_dataset_integrity(str(_dataset(cohort)), num_processes=1)  # raises on a missing file or a bad label
    out = capfd.readouterr().out
    assert "verify_dataset_integrity Done" in out
    assert "Warning" not in out and "Error" not in out, out  # origin/direction mismatches are only printed
    dataset = json.loads((_dataset(cohort) / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"} and dataset["file_ending"] == ".nii.gz"
    assert dataset["labels"] == {"background": 0, "epidural": 1, "intraparenchymal": 2, "intraventricular": 3,
                                 "subarachnoid": 4, "subdural": 5}
    assert dataset["numTraining"] == len(cohort["data"]["training"]) == cohort["export"].n_training


def test_images_are_ichct_convert_output_and_labels_lie_on_their_grid(cohort, tmp_path):
    by_study = _entries_by_study(cohort)
    cases = _case_map(cohort)["cases"]
    tilted = 0
    for case in cases:
        entry = by_study[case["study_uid"]]
        suffix = "Tr" if case["split"] == "training" else "Ts"
        exported = nib.load(_dataset(cohort) / f"images{suffix}" / f"{case['case_id']}_0000.nii.gz")
        convert_series(entry["image"], tmp_path / f"{case['case_id']}.nii.gz")  # what `ichct convert` writes
        reference = nib.load(tmp_path / f"{case['case_id']}.nii.gz")
        assert exported.get_data_dtype() == reference.get_data_dtype()
        assert np.array_equal(np.asanyarray(exported.dataobj), np.asanyarray(reference.dataobj))
        assert np.array_equal(exported.affine, reference.affine)
        assert exported.header.get_qform(coded=True)[1] == reference.header.get_qform(coded=True)[1] == 1
        tilted += json.loads((tmp_path / f"{case['case_id']}.json").read_text())["tilt"]["corrected"]
        label = nib.load(_dataset(cohort) / f"labels{suffix}" / f"{case['case_id']}.nii.gz")
        source = nib.load(entry["label"])
        assert label.get_data_dtype() == np.uint8 and label.shape == exported.shape
        assert np.array_equal(label.affine, exported.affine)
        assert np.array_equal(np.asanyarray(label.dataobj), np.asanyarray(source.dataobj).astype(np.uint8))
        assert np.max(np.abs(source.affine - exported.affine)) < 0.01
    assert tilted >= 1, "the cohort should hold a tilted stack (convert's tilt correction is compared too)"


def test_splits_final_are_the_manifests_patient_level_folds(cohort):
    splits = json.loads((_dataset(cohort) / "splits_final.json").read_text())
    case_map = _case_map(cohort)
    by_case = {c["case_id"]: c for c in case_map["cases"]}
    training = sorted(c["case_id"] for c in case_map["cases"] if c["split"] == "training")
    assert len(splits) == cohort["data"]["num_folds"] == 2
    fold_of_patient: dict[str, int] = {}
    for k, split in enumerate(splits):
        assert sorted(split["train"] + split["val"]) == training and not set(split["train"]) & set(split["val"])
        assert split["val"] and all(by_case[c]["fold"] == k for c in split["val"])
        for case_id in split["val"]:
            assert fold_of_patient.setdefault(by_case[case_id]["patient_key"], k) == k  # one fold per patient
    folds = {e["study_uid"]: e["fold"] for e in cohort["data"]["training"]}
    assert {c["study_uid"]: c["fold"] for c in case_map["cases"] if c["split"] == "training"} == folds


def test_case_map_names_every_study_once_and_file_names_nothing(cohort):
    case_map = _case_map(cohort)
    data = cohort["data"]
    assert {k: case_map[k] for k in ("format", "version", "dataset_id", "dataset_name", "salt_id", "label_values")} == {
        "format": "ichct-nnunet-case-map", "version": 1, "dataset_id": 501, "dataset_name": DATASET,
        "salt_id": data["salt_id"], "label_values": "ichct"}
    assert case_map["manifest"] == str(cohort["manifest"])
    assert case_map["manifest_sha256"] == sha256_file(cohort["manifest"])
    entries = [(e["study_uid"], e["patient_key"], "training", e["fold"]) for e in data["training"]]
    entries += [(e["study_uid"], e["patient_key"], "test", None) for e in data["test"]]
    assert sorted((c["study_uid"], c["patient_key"], c["split"], c["fold"]) for c in case_map["cases"]) == sorted(entries)
    ids = [c["case_id"] for c in case_map["cases"]]
    assert ids == [f"ICH_{i:04d}" for i in range(1, len(entries) + 1)]
    assert [(c["patient_key"], c["study_uid"]) for c in case_map["cases"]] == sorted(
        (c["patient_key"], c["study_uid"]) for c in case_map["cases"])
    files = [p for p in _dataset(cohort).rglob("*.nii.gz")]
    assert len(files) == 2 * len(entries) and all(CASE_FILE.fullmatch(p.name) for p in files)
    test_ids = {c["case_id"] for c in case_map["cases"] if c["split"] == "test"}
    assert {p.name[:8] for p in (_dataset(cohort) / "imagesTs").iterdir()} == test_ids
    assert {p.name[:8] for p in (_dataset(cohort) / "labelsTs").iterdir()} == test_ids


def test_cli_export_is_deterministic_and_refuses_a_non_empty_target(cohort, tmp_path, run_cli):
    res = run_cli("manifest", "export-nnunet", cohort["manifest"], tmp_path, "--dataset-id", "501", "--no-cache")
    assert res.code == 0, res.err
    assert f"{tmp_path / DATASET}: {cohort['export'].n_training} training case(s) in 2 fold(s)" in res.out
    again = json.loads((tmp_path / DATASET / "ichct_case_map.json").read_text())
    assert again["cases"] == _case_map(cohort)["cases"]
    before = _tree(tmp_path)
    res = run_cli("manifest", "export-nnunet", cohort["manifest"], tmp_path, "--dataset-id", "501", "--no-cache")
    assert res.code == 1 and str(tmp_path / DATASET) in res.err and "not an empty folder" in res.err
    res = run_cli("manifest", "export-nnunet", cohort["manifest"], tmp_path, "--dataset-id", "501", "--name", "Other")
    assert res.code == 1 and DATASET in res.err and "dataset id 501" in res.err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("args, word", [(["--dataset-id", "0"], "--dataset-id"), (["--dataset-id", "1000"], "--dataset-id"),
                                        (["--dataset-id", "5", "--name", "a b"], "--name")])
def test_bad_dataset_id_or_name_is_a_usage_error(cohort, tmp_path, run_cli, args, word):
    res = run_cli("manifest", "export-nnunet", cohort["manifest"], tmp_path / "raw", *args)
    assert res.code == 2 and word in res.err
    assert not (tmp_path / "raw").exists()


def test_a_manifest_without_voxel_labels_is_refused(cohort, tmp_path, run_cli):
    data = json.loads(json.dumps(cohort["data"]))
    for e in data["training"][:2]:
        del e["label"], e["label_values"]
    unlabelled = cohort["manifest"].with_name("no_labels.json")  # beside the original: same relative paths
    unlabelled.write_text(json.dumps(data))
    res = run_cli("manifest", "export-nnunet", unlabelled, tmp_path / "raw", "--dataset-id", "7")
    n = len(data["training"]) + len(data["test"])
    assert res.code == 1 and str(unlabelled) in res.err and f"2 of {n} entries have no voxel label" in res.err
    assert not (tmp_path / "raw").exists() or _tree(tmp_path / "raw") == []


def test_a_failure_half_way_leaves_nothing(cohort, tmp_path, monkeypatch):
    calls = []

    def failing(label_path, ct_img, *, binary):
        calls.append(label_path)
        if len(calls) == 3:
            raise InputError(label_path, "simulated failure")
        return original(label_path, ct_img, binary=binary)

    original = nnunet_export.label_on_grid
    monkeypatch.setattr(nnunet_export, "label_on_grid", failing)
    (tmp_path / "raw").mkdir()
    with pytest.raises(InputError, match="simulated failure"):
        export_nnunet(cohort["manifest"], tmp_path / "raw", 9, cache=False)
    assert len(calls) == 3 and _tree(tmp_path / "raw") == []


def test_binary_manifest_exports_hemorrhage_labels(cohort, tmp_path):
    data = json.loads(json.dumps(cohort["data"]))
    data["training"][0]["label_values"] = "binary"  # a mix: every map is exported as 0/1
    mixed = cohort["manifest"].with_name("mixed.json")
    mixed.write_text(json.dumps(data))
    export = export_nnunet(mixed, tmp_path, 12, name="Bin", cache=False)
    assert export.label_values == "binary" and export.labels == {"background": 0, "hemorrhage": 1}
    dataset = json.loads((export.path / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "hemorrhage": 1}
    values = set()
    for p in (export.path / "labelsTr").iterdir():
        values |= set(np.unique(np.asanyarray(nib.load(p).dataobj)).tolist())
    assert values == {0, 1} and json.loads((export.path / "ichct_case_map.json").read_text())["label_values"] == "binary"


def test_the_export_never_imports_nnunet(cohort, tmp_path):
    """ichct writes plain files: exporting imports neither nnU-Net nor torchvision (nnU-Net's dependency)."""
    code = ("import sys; from ichct.pipeline.manifests import export_nnunet; "
            f"export_nnunet({str(cohort['manifest'])!r}, {str(tmp_path)!r}, 77, cache=False); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'nnunetv2', 'torchvision'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ICHCT_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]" and (tmp_path / "Dataset077_ICH" / "dataset.json").is_file()
