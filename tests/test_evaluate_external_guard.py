"""``ichct evaluate --predictions DIR``: thresholds (given, chosen on validation predictions), the leakage
guard (--trained-on a manifest, nnU-Net splits_final.json, a PatientID list), probability CSVs per
study and per slice, paired comparison with an ichct run, usage errors.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from eval_helpers import FOLD, evaluate_predictions as _evaluate, read_metrics as _metrics, eval_setup, split_entries, write_label_predictions

from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.evaluate.report import OVERLAP_WARNING


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


def _binary(a):
    return (a > 0).astype(np.uint8)


def _training_keys(setup):
    return {e["patient_key"] for e in setup["doc"]["training"]}


def test_thresholds_given_in_a_file(setup, run_cli, tmp_path):
    entries = split_entries(setup)
    write_label_predictions(entries, tmp_path / "preds", values=_binary)
    # mL of the smallest bleed, a hair lower: the evaluator multiplies voxel count and voxel volume in
    # another order, and "positive = volume >= threshold" must not hinge on the last bit of a float
    smallest = min(_volume(e) for e in entries if e["ct_labels"]["any"]) * (1 - 1e-9)
    (tmp_path / "t.json").write_text(json.dumps({"seg_volume": smallest, "max": 0.3}))  # max: not for masks
    out = tmp_path / "eval"
    r = _evaluate(run_cli, setup, tmp_path / "preds", out, "--split", "all", "--trained-on", "unknown",
                  "--thresholds", tmp_path / "t.json")
    assert r.code == 0, r.err
    doc = _metrics(out)
    m = doc["ct_level"]["any"]["seg_volume"]
    assert m["threshold"]["value"] == pytest.approx(smallest)
    assert m["sensitivity"]["value"] == 1.0 and m["specificity"]["value"] == 1.0
    assert set(doc["model"]["rules"]) == {"seg_volume"}
    assert doc["model"]["external"]["thresholds"] == f"given in {tmp_path / 't.json'}"
    with open(out / "per_case.csv", newline="") as f:
        for row in csv.DictReader(f):
            assert int(row["call:seg_volume:any"]) == int(float(row["label:any"]))


def test_thresholds_chosen_on_validation_predictions_never_on_the_evaluated_split(setup, run_cli, tmp_path):
    training, test = split_entries(setup, "training"), split_entries(setup, "test")
    write_label_predictions(training, tmp_path / "val", values=_binary)
    write_label_predictions(test, tmp_path / "preds", values=_binary)
    out = tmp_path / "eval"
    r = _evaluate(run_cli, setup, tmp_path / "preds", out, "--trained-on", "unknown",
                  "--val-predictions", tmp_path / "val")
    assert r.code == 0, r.err
    doc = _metrics(out)
    rule = doc["model"]["rules"]["seg_volume"]
    assert rule["meta"]["chosen_on"] == f"validation predictions ({len(training)} studies)"
    volumes = sorted(e_vol for e_vol in (_volume(e) for e in training if e["ct_labels"]["any"]))
    # Youden: halfway between the negatives' 0 mL and the smallest positive's volume
    assert rule["threshold"]["any"] == pytest.approx(volumes[0] / 2)
    assert doc["ct_level"]["any"]["seg_volume"]["threshold"]["value"] == pytest.approx(volumes[0] / 2)
    assert "chosen on validation predictions" in doc["model"]["external"]["thresholds"]
    # validation predictions of an evaluated study are refused
    write_label_predictions(test[:1], tmp_path / "val", values=_binary)
    r = _evaluate(run_cli, setup, tmp_path / "preds", tmp_path / "eval2", "--trained-on", "unknown",
                  "--val-predictions", tmp_path / "val")
    assert r.code == 1 and "never chosen on the evaluated split" in r.err and test[0]["study_uid"] in r.err, r.err
    assert not (tmp_path / "eval2").exists()


def _volume(entry):
    import nibabel as nib

    img = nib.load(entry["label"])
    return float((np.asarray(img.dataobj) > 0).sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000.0)


def test_guard_with_the_training_manifest(setup, run_cli, tmp_path):
    """--trained-on a manifest: its training patients (all folds) are refused unless --allow-overlap."""
    write_label_predictions(split_entries(setup), tmp_path / "preds", values=_binary)
    out = tmp_path / "eval"
    r = _evaluate(run_cli, setup, tmp_path / "preds", out, "--split", "all", "--trained-on", setup["manifest"])
    assert r.code == 1 and "refusing" in r.err and all(k in r.err for k in _training_keys(setup)), r.err
    assert not out.exists()
    r = _evaluate(run_cli, setup, tmp_path / "preds", out, "--trained-on", setup["manifest"])  # the test split
    assert r.code == 0, r.err
    assert _metrics(out)["allow_overlap"] is False and "warnings" not in _metrics(out)
    out2 = tmp_path / "eval_overlap"
    r = _evaluate(run_cli, setup, tmp_path / "preds", out2, "--split", "all", "--trained-on", setup["manifest"],
                  "--allow-overlap")
    assert r.code == 0, r.err
    doc = _metrics(out2)
    assert doc["allow_overlap"] is True and set(doc["model"]["overlap_patients"]) == _training_keys(setup)
    assert (out2 / "report.md").read_text().splitlines()[0] == OVERLAP_WARNING


def test_guard_with_nnunet_splits_final(setup, run_cli, tmp_path):
    """--trained-on splits_final.json: every case it names (train and val), through the case map beside it."""
    entries = split_entries(setup)
    training = [e for e in entries if e.get("fold") is not None]
    cases = [{"case_id": f"ICH_{n:04d}", "study_uid": e["study_uid"], "patient_key": e["patient_key"],
              "split": "training" if e.get("fold") is not None else "test", "fold": e.get("fold")}
             for n, e in enumerate(entries, start=1)]
    case_map = {"format": "ichct-nnunet-case-map", "version": 1, "dataset_id": 7, "dataset_name": "Dataset007_ICH",
                "manifest": str(setup["manifest"]), "manifest_sha256": "0" * 64, "salt_id": setup["doc"]["salt_id"],
                "label_values": "binary", "labels": {"background": 0, "hemorrhage": 1}, "cases": cases}
    export = tmp_path / "Dataset007_ICH"
    export.mkdir()
    (export / "ichct_case_map.json").write_text(json.dumps(case_map))
    by_study = {c["study_uid"]: c["case_id"] for c in cases}
    folds = [{"train": [by_study[e["study_uid"]] for e in training if e["fold"] != k],
              "val": [by_study[e["study_uid"]] for e in training if e["fold"] == k]} for k in range(2)]
    (export / "splits_final.json").write_text(json.dumps(folds))
    write_label_predictions(entries, tmp_path / "nnunet", name=lambda e: by_study[e["study_uid"]], values=_binary)
    common = ["--map", export / "ichct_case_map.json", "--trained-on", export / "splits_final.json"]
    r = _evaluate(run_cli, setup, tmp_path / "nnunet", tmp_path / "all", "--split", "all", *common)
    assert r.code == 1 and "refusing" in r.err and all(k in r.err for k in _training_keys(setup)), r.err
    r = _evaluate(run_cli, setup, tmp_path / "nnunet", tmp_path / "test", *common)
    assert r.code == 0, r.err
    assert "splits_final.json" in _metrics(tmp_path / "test")["model"]["external"]["trained_on"]
    # a case ID the case map does not know
    (export / "splits_final.json").write_text(json.dumps([{"train": ["ICH_0999"], "val": []}]))
    r = _evaluate(run_cli, setup, tmp_path / "nnunet", tmp_path / "bad", *common)
    assert r.code == 1 and "ICH_0999" in r.err and "splits_final.json" in r.err, r.err


def test_guard_with_a_patient_id_list(setup, run_cli, tmp_path):
    """A plain PatientID list is salted like the manifest; IDs matching no patient are refused."""
    cohort = json.loads((setup["base"] / "cohort" / "cohort.json").read_text())
    pid_of = {s["study_uid"]: s["patient_id"] for s in cohort["studies"]}
    write_label_predictions(split_entries(setup), tmp_path / "preds", values=_binary)
    train_ids = sorted({pid_of[e["study_uid"]] for e in setup["doc"]["training"]})
    (tmp_path / "ids.txt").write_text("PatientID\n" + "\n".join(train_ids) + "\n")
    r = _evaluate(run_cli, setup, tmp_path / "preds", tmp_path / "all", "--split", "all",
                  "--trained-on", tmp_path / "ids.txt")
    assert r.code == 1 and "refusing" in r.err and all(k in r.err for k in _training_keys(setup)), r.err
    assert not any(pid in r.err for pid in train_ids)  # keys, never the identifiers
    r = _evaluate(run_cli, setup, tmp_path / "preds", tmp_path / "test", "--trained-on", tmp_path / "ids.txt")
    assert r.code == 0, r.err
    (tmp_path / "other.txt").write_text("MRN-001\nMRN-002\n")
    r = _evaluate(run_cli, setup, tmp_path / "preds", tmp_path / "x", "--trained-on", tmp_path / "other.txt")
    assert r.code == 1 and "none of its 2 PatientID(s)" in r.err and not (tmp_path / "x").exists(), r.err


def test_patient_id_list_needs_the_manifests_salt(setup, run_cli, tmp_path):
    """A manifest salted with a salt this machine does not have: its PatientIDs cannot be salted alike."""
    doc = json.loads(setup["manifest"].read_text())
    doc["salt_id"] = "0123456789ab"
    resalted = setup["manifest"].with_name("m_external_resalted.json")
    resalted.write_text(json.dumps(doc))
    write_label_predictions(split_entries(setup, "test"), tmp_path / "preds", values=_binary)
    (tmp_path / "ids.txt").write_text("SYN0001\n")
    r = run_cli("evaluate", "--predictions", tmp_path / "preds", "--manifest", resalted, "--out", tmp_path / "x",
                "--trained-on", tmp_path / "ids.txt", "--bootstrap", "5", "-q")
    assert r.code == 1 and "0123456789ab" in r.err and "cannot be salted" in r.err, r.err


def _stack_sops(entry):
    """The SOP instance UIDs of the entry's series in the reader's stack order."""
    from ichct.transforms.dicom import scan_folder, select_series, stack_geometry

    group, _, _ = select_series(scan_folder(entry["image"]))
    return [group.headers[i].sop_instance_uid for i in stack_geometry(group.headers).order]


def test_probability_csvs_per_study_and_per_slice(setup, run_cli, tmp_path):
    entries = split_entries(setup)
    study_dir, slice_dir = tmp_path / "study", tmp_path / "slice"
    study_dir.mkdir()
    slice_dir.mkdir()
    lines = ["study_uid," + ",".join(LABEL_NAMES)]
    lines += [e["study_uid"] + "," + ",".join(str(0.1 + 0.8 * e["ct_labels"][st]) for st in LABEL_NAMES)
              for e in entries]
    (study_dir / "probs.csv").write_text("\n".join(lines) + "\n")
    rows = ["ID,Label"]
    for e in entries:
        for sop, labels in zip(_stack_sops(e), e["slice_labels"]):
            rows += [f"ID_{sop}_{st},{0.05 + 0.9 * y}" for st, y in zip(LABEL_NAMES, labels)]
    (slice_dir / "submission.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "t.json").write_text(json.dumps({"max": 0.5}))
    r = _evaluate(run_cli, setup, study_dir, tmp_path / "ev_study", "--split", "all", "--trained-on", "unknown",
                  "--thresholds", tmp_path / "t.json")
    assert r.code == 0, r.err
    doc = _metrics(tmp_path / "ev_study")
    assert set(doc["model"]["rules"]) == {"max"} and doc["segmentation"] == {}
    m = doc["ct_level"]["any"]["max"]
    assert m["roc_auc"]["value"] == 1.0 and m["sensitivity"]["value"] == 1.0 and m["specificity"]["value"] == 1.0
    r = _evaluate(run_cli, setup, slice_dir, tmp_path / "ev_slice", "--split", "all", "--trained-on", "unknown")
    assert r.code == 0, r.err
    doc = _metrics(tmp_path / "ev_slice")
    assert set(doc["model"]["rules"]) == {"consecutive", "max", "topk_mean"}
    assert doc["ct_level"]["any"]["max"]["roc_auc"]["value"] == 1.0
    slice_loss = doc["ct_level"]["all"]["max"]["rsna_log_loss_slice"]["value"]
    assert slice_loss == pytest.approx(-np.log(0.95), rel=1e-6)  # every slice and label off by 0.05
    # a study without a row: an error naming it, or probability 0 with --missing negative
    (study_dir / "probs.csv").write_text("\n".join(lines[:-1]) + "\n")
    r = _evaluate(run_cli, setup, study_dir, tmp_path / "ev_missing", "--split", "all", "--trained-on", "unknown")
    assert r.code == 1 and entries[-1]["study_uid"] in r.err, r.err
    r = _evaluate(run_cli, setup, study_dir, tmp_path / "ev_missing", "--split", "all", "--trained-on", "unknown",
                  "--missing", "negative")
    assert r.code == 0, r.err
    with open(tmp_path / "ev_missing" / "per_case.csv", newline="") as f:
        row = {r["study_id"]: r for r in csv.DictReader(f)}[entries[-1]["study_uid"]]
    assert float(row["score:max:any"]) == 0.0 and _metrics(tmp_path / "ev_missing")["n_studies"] == len(entries)
    # a study the split does not hold: the file and line named
    (study_dir / "probs.csv").write_text("\n".join(lines + ["1.2.3.999," + ",".join(["0.5"] * 6)]) + "\n")
    r = _evaluate(run_cli, setup, study_dir, tmp_path / "ev_unknown", "--split", "all", "--trained-on", "unknown")
    assert r.code == 1 and "probs.csv: " in r.err and f"line {len(lines) + 1}" in r.err and "1.2.3.999" in r.err, r.err
    # a NaN: the file and line named, nothing written
    nan_row = lines[2].split(",")
    nan_row[1] = "nan"
    (study_dir / "probs.csv").write_text("\n".join(lines[:2] + [",".join(nan_row)]) + "\n")
    r = _evaluate(run_cli, setup, study_dir, tmp_path / "ev_nan", "--split", "all", "--trained-on", "unknown")
    assert r.code == 1 and "probs.csv: line 3" in r.err and "NaN" in r.err, r.err
    assert not (tmp_path / "ev_nan").exists()


def test_compare_with_an_ichct_run(setup, run_cli, tmp_path):
    """--compare PREDICTIONS RUN: paired bootstrap of AUC and Dice, either order; the run's own guard holds."""
    write_label_predictions(split_entries(setup), tmp_path / "preds", values=_binary)
    out = tmp_path / "cmp"
    r = run_cli("evaluate", "--compare", tmp_path / "preds", setup["seg"], "--manifest", setup["manifest"],
                "--out", out, "--bootstrap", "20", "--trained-on", "unknown", "-q")
    assert r.code == 0, r.err
    doc = _metrics(out)
    comp = doc["comparisons"]
    assert comp["a"] == str((tmp_path / "preds").resolve()) and comp["b"] == str(setup["seg"].resolve())
    assert {"any/seg_volume/roc_auc", "any/seg_volume/pr_auc", "segmentation/any/dice"} <= set(comp["metrics"])
    dice = comp["metrics"]["segmentation/any/dice"]
    assert dice["a"] == 1.0 and dice["value"] == pytest.approx(1.0 - dice["b"])
    assert doc["model"]["name"] == "external:preds"
    out2 = tmp_path / "cmp2"
    r = run_cli("evaluate", "--compare", setup["seg"], tmp_path / "preds", "--manifest", setup["manifest"],
                "--out", out2, "--bootstrap", "20", "--trained-on", "unknown", "-q")
    assert r.code == 0, r.err
    doc2 = _metrics(out2)
    assert doc2["comparisons"]["a"] == str(setup["seg"].resolve()) and "runs" in doc2["model"]
    assert doc2["comparisons"]["metrics"]["segmentation/any/dice"]["value"] == pytest.approx(-dice["value"])
    # the run's training patients are still refused
    r = run_cli("evaluate", "--compare", tmp_path / "preds", setup["seg"], "--manifest", setup["manifest"],
                "--split", "validation", "--fold", str(1 - FOLD), "--out", tmp_path / "x", "--trained-on", "unknown")
    assert r.code == 1 and "refusing" in r.err, r.err


def test_usage_errors(setup, run_cli, tmp_path):
    write_label_predictions(split_entries(setup, "test"), tmp_path / "preds", values=_binary)
    m, preds, out = setup["manifest"], tmp_path / "preds", tmp_path / "out"
    (tmp_path / "t.json").write_text("{}")
    bad = [
        ("--predictions", preds),  # no --trained-on
        ("--run", setup["seg"], "--label-map", "1=any"),  # an option of predictions without them
        ("--run", setup["seg"], "--missing", "negative"),
        ("--predictions", preds, "--trained-on", "unknown", "--run", setup["seg"]),
        ("--predictions", preds, "--trained-on", "unknown", "--thresholds", tmp_path / "t.json",
         "--val-predictions", preds),
        ("--compare", preds, preds, "--trained-on", "unknown"),
    ]
    for extra in bad:
        r = run_cli("evaluate", "--manifest", m, "--out", out, *extra)
        assert r.code == 2, (extra, r.err)
    r = run_cli("evaluate", "--manifest", m, "--out", out, "--predictions", preds, "--trained-on", "unknown",
                "--rules", "max")
    assert r.code == 1 and "cannot score these predictions" in r.err, r.err
    r = run_cli("evaluate", "--manifest", m, "--out", out, "--predictions", preds, "--trained-on", tmp_path / "none")
    assert r.code == 1 and "--trained-on" in r.err, r.err
    assert not out.exists()
