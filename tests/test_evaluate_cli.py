"""``ichct evaluate``: report files, schema, leakage refusal / --allow-overlap, usage errors."""

from __future__ import annotations

import csv
import json

import pytest
from eval_helpers import FOLD, eval_setup

from ichct.pipeline.evaluate.metrics_schema import validate_metrics
from ichct.pipeline.evaluate.report import OVERLAP_WARNING


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


def _train_keys(setup):
    return {e["patient_key"] for e in setup["doc"]["training"] if e["fold"] != FOLD}


def test_evaluate_test_split_writes_report(setup, run_cli, tmp_path):
    out = tmp_path / "eval"
    r = run_cli("evaluate", "--run", setup["seg"], "--run", setup["cls"], "--manifest", setup["manifest"],
                "--out", out, "--bootstrap", "50", "--seed", "1", "-q")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["n_studies"] == len(setup["doc"]["test"]) and not summary["allow_overlap"]
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "per_case.csv", "report.md", "roc_any.png", "pr_any.png", "calibration.png",
            "bland_altman.png", "volume_scatter.png"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name != "eval"]  # no temporary folder left
    doc = json.loads((out / "metrics.json").read_text())
    assert validate_metrics(doc) == doc
    assert doc["split"] == "test" and doc["n_boot"] == 50 and doc["seed"] == 1 and doc["allow_overlap"] is False
    assert doc["n_studies"] == 2 and doc["n_patients"] == 2
    assert set(doc["ct_level"]["any"]) == {"consecutive", "max", "topk_mean", "seg_volume", "seg_peak", "fused"}
    assert set(doc["ct_level"]["subdural"]) == {"consecutive", "max", "topk_mean"}  # binary seg: any only
    # the segmenter's peak probability is ranked and called, but it is no probability of the study: no
    # calibration; nor is its mean with the classifier's window (fused)
    peak, fused = doc["ct_level"]["any"]["seg_peak"], doc["ct_level"]["any"]["fused"]
    assert "roc_auc" in peak and "sensitivity" in peak and "brier" not in peak and "brier" in doc["ct_level"]["any"]["max"]
    assert "roc_auc" in fused and "sensitivity" in fused and "brier" not in fused
    seg_rule = json.loads((setup["seg"] / "thresholds.json").read_text())
    assert peak["threshold"]["value"] == pytest.approx(seg_rule["meta"]["other_rules"]["seg_peak"]["any"])
    auc = doc["ct_level"]["any"]["consecutive"]["roc_auc"]
    assert auc["value"] is None or 0.0 <= auc["value"] <= 1.0
    assert doc["ct_level"]["any"]["seg_volume"]["threshold"]["value"] == pytest.approx(
        json.loads((setup["seg"] / "thresholds.json").read_text())["threshold"])
    assert "rsna_log_loss_slice" in doc["ct_level"]["all"]["consecutive"]
    assert set(doc["segmentation"]) == {"any"} and "dice" in doc["segmentation"]["any"]
    assert set(doc["model"]["runs"]) == {"seg", "cls"}
    with open(out / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["patient_key"] for r in rows} == {e["patient_key"] for e in setup["doc"]["test"]}
    for r in rows:  # fused: the mean of the two models' scores, at the mean of their thresholds
        mean = (float(r["score:consecutive:any"]) + float(r["score:seg_peak:any"])) / 2
        assert float(r["score:fused:any"]) == pytest.approx(mean, abs=1e-6)
    assert fused["threshold"]["value"] == pytest.approx(
        (doc["ct_level"]["any"]["consecutive"]["threshold"]["value"] + peak["threshold"]["value"]) / 2)
    for col in ("label:any", "score:consecutive:any", "score:seg_volume:any", "score:seg_peak:any", "seg:any:dice",
                "seg:any:vol_true_ml",
                "slice_ll_sum", "n_slices"):
        assert all(r[col] != "" for r in rows), col
    report = (out / "report.md").read_text()
    assert report.splitlines()[0].startswith("# Evaluation") and "## Segmentation" in report
    # the output folder is never overwritten
    again = run_cli("evaluate", "--run", setup["cls"], "--manifest", setup["manifest"], "--out", out, "-q")
    assert again.code == 1 and "exists" in again.err


def test_training_patients_refused_unless_allow_overlap(setup, run_cli, tmp_path):
    out = tmp_path / "eval_train"
    r = run_cli("evaluate", "--run", setup["seg"], "--manifest", setup["manifest"], "--split", "training",
                "--out", out, "--bootstrap", "10")
    assert r.code == 1
    assert "refusing" in r.err and all(k in r.err for k in _train_keys(setup))
    assert not out.exists() and not list(tmp_path.iterdir())

    r = run_cli("evaluate", "--run", setup["seg"], "--manifest", setup["manifest"], "--split", "training",
                "--out", out, "--bootstrap", "10", "--rules", "seg_volume", "--allow-overlap", "-q")
    assert r.code == 0, r.err
    assert (out / "report.md").read_text().splitlines()[0] == OVERLAP_WARNING
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["allow_overlap"] is True and set(doc["model"]["overlap_patients"]) == _train_keys(setup)
    assert doc["split"] == "training" and doc["n_studies"] == len(setup["doc"]["training"])
    assert set(doc["ct_level"]["any"]) == {"seg_volume"}


def test_usage_errors(setup, run_cli, tmp_path):
    m, out = setup["manifest"], tmp_path / "x"
    # (neither --run nor --bundle evaluates the shipped bundles: tests/test_shipped_models.py)
    assert run_cli("evaluate", "--manifest", m, "--out", out, "--compare", "max", setup["cls"]).code == 2  # a mix
    assert run_cli("evaluate", "--run", setup["cls"], "--out", out).code == 2  # no --manifest
    assert run_cli("evaluate", "--run", setup["cls"], "--bundle", out, "--manifest", m, "--out", out).code == 2
    r = run_cli("evaluate", "--bundle", tmp_path, "--manifest", m, "--out", out)  # --bundle: tests/test_bundle.py
    assert r.code == 1 and "run_config.json" in r.err
    assert run_cli("evaluate", "--run", setup["cls"], "--manifest", m, "--out", out, "--rules", "vote").code == 2
    assert run_cli("evaluate", "--run", setup["cls"], "--manifest", m, "--out", out, "--bootstrap", "-1").code == 2
    r = run_cli("evaluate", "--run", setup["cls"], "--manifest", m, "--out", out, "--bootstrap", "0")
    assert r.code == 2 and "--bootstrap" in r.err  # the bootstrap needs at least one resample
    assert run_cli("evaluate", "--run", setup["cls"], "--manifest", m, "--out", out, "--split", "validation").code == 2
    assert run_cli("evaluate", "--run", setup["cls"], "--manifest", m, "--out", out, "--split", "dev").code == 2
    assert "model bundle" in " ".join(run_cli("evaluate", "--help").out.split()).lower()
    assert run_cli("evaluate", "--run", setup["cls"], "--run", setup["cls"], "--run", setup["seg"],
                   "--manifest", m, "--out", out).code == 2
    # data errors: a rule whose model is missing, a folder that is not a run
    assert run_cli("evaluate", "--run", setup["cls"], "--manifest", m, "--out", out, "--rules", "seg_volume").code == 1
    r = run_cli("evaluate", "--run", setup["seg"], "--manifest", m, "--out", out, "--rules", "fused")
    assert r.code == 1 and "both a classification and a segmentation model" in r.err
    assert run_cli("evaluate", "--run", tmp_path, "--manifest", m, "--out", out).code == 1
    assert not out.exists()


def test_error_while_writing_leaves_nothing(setup, tmp_path, monkeypatch):
    """A failure after some report files were written leaves neither EVAL_DIR nor a temporary folder."""
    import ichct.pipeline.evaluate.report as report
    from ichct.pipeline.evaluate.run import evaluate

    def broken_plots(metrics, rows, curves, out):
        (out / "half.png").write_bytes(b"x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_plots", broken_plots)
    out = tmp_path / "eval"
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate([setup["cls"]], setup["manifest"], out, n_boot=5, rules=["max"])
    assert not list(tmp_path.iterdir())


def test_two_runs_of_one_kind_are_compared(setup, run_cli, tmp_path):
    """The same run twice: every paired difference is exactly 0 with p = 1."""
    out = tmp_path / "cmp"
    r = run_cli("evaluate", "--run", setup["cls"], "--run", setup["cls"], "--manifest", setup["manifest"],
                "--out", out, "--bootstrap", "30", "--rules", "consecutive,max", "-q")
    assert r.code == 0, r.err
    doc = json.loads((out / "metrics.json").read_text())
    comp = doc["comparisons"]
    assert comp["a"] == comp["b"] == str(setup["cls"].resolve())
    assert set(comp["metrics"]) == {f"any/{rule}/{m}" for rule in ("consecutive", "max") for m in ("roc_auc", "pr_auc")}
    for v in comp["metrics"].values():
        assert v["a"] == v["b"] and v["value"] == 0.0 and v["ci_low"] == v["ci_high"] == 0.0 and v["p_value"] == 1.0
    assert "## Paired comparison" in (out / "report.md").read_text()


def test_two_rules_are_compared(setup, run_cli, tmp_path):
    """--compare consecutive max: a and b are each rule's own metrics, the value their difference."""
    out = tmp_path / "rules"
    r = run_cli("evaluate", "--run", setup["seg"], "--run", setup["cls"], "--manifest", setup["manifest"],
                "--out", out, "--bootstrap", "40", "--compare", "consecutive", "max", "-q")
    assert r.code == 0, r.err
    doc = json.loads((out / "metrics.json").read_text())
    comp = doc["comparisons"]
    assert comp["a"] == "rule consecutive" and comp["b"] == "rule max"
    assert {"any/roc_auc", "any/sensitivity", "subdural/pr_auc"} <= set(comp["metrics"])
    for m in ("roc_auc", "pr_auc", "sensitivity", "specificity"):
        v = comp["metrics"][f"any/{m}"]
        assert v["a"] == pytest.approx(doc["ct_level"]["any"]["consecutive"][m]["value"])
        assert v["b"] == pytest.approx(doc["ct_level"]["any"]["max"][m]["value"])
        assert v["value"] == pytest.approx(v["a"] - v["b"])
        assert v["ci_low"] <= v["value"] <= v["ci_high"] and 0.0 <= v["p_value"] <= 1.0
    # a rule against itself: no difference
    out2 = tmp_path / "same"
    r = run_cli("evaluate", "--run", setup["cls"], "--manifest", setup["manifest"], "--out", out2,
                "--bootstrap", "20", "--compare", "max", "max", "-q")
    assert r.code == 0, r.err
    same = json.loads((out2 / "metrics.json").read_text())["comparisons"]["metrics"]
    assert same["any/roc_auc"]["value"] is not None
    for v in same.values():  # a subtype without positives in the split has no AUC (null)
        assert v["value"] is None or (v["value"] == 0.0 and v["p_value"] == 1.0)


def test_compare_two_model_folders_and_usage_errors(setup, run_cli, tmp_path):
    out = tmp_path / "models"
    r = run_cli("evaluate", "--compare", setup["cls"], setup["cls"], "--manifest", setup["manifest"],
                "--out", out, "--bootstrap", "20", "--rules", "max", "-q")
    assert r.code == 0, r.err
    assert json.loads((out / "metrics.json").read_text())["comparisons"]["a"] == str(setup["cls"].resolve())
    bad = [
        ("--compare", "consecutive", str(setup["cls"])),  # a rule and a folder
        ("--compare", str(tmp_path), str(setup["cls"])),  # not a model folder
        ("--compare", str(setup["cls"]), str(setup["cls"]), "--run", str(setup["cls"])),
    ]
    for extra in bad:
        r = run_cli("evaluate", *extra, "--manifest", setup["manifest"], "--out", tmp_path / "x", "-q")
        assert r.code == 2, extra
    # seg_volume needs a segmenter: a data error naming the available rules
    r = run_cli("evaluate", "--run", setup["cls"], "--manifest", setup["manifest"], "--out", tmp_path / "y",
                "--compare", "consecutive", "seg_volume", "-q")
    assert r.code == 1 and "seg_volume" in r.err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_validation_fold_is_flagged_in_the_report(setup, run_cli, tmp_path):
    """The run's own validation fold chose its checkpoint and thresholds: evaluating on it is allowed
    but the report and metrics.json say the numbers are optimistic."""
    out = tmp_path / "eval_val"
    r = run_cli("evaluate", "--run", setup["seg"], "--manifest", setup["manifest"], "--split", "validation",
                "--fold", str(FOLD), "--out", out, "--bootstrap", "10", "--rules", "seg_volume", "-q")
    assert r.code == 0, r.err
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["allow_overlap"] is False
    assert len(doc["warnings"]) == 1 and "validation fold" in doc["warnings"][0]
    n_val = len({e["patient_key"] for e in setup["doc"]["training"] if e["fold"] == FOLD})
    assert doc["warnings"][0].startswith(f"{n_val} of the evaluated patients")
    assert "validation fold" in (out / "report.md").read_text().splitlines()[0]
    # the held-out test split raises no such warning
    out_test = tmp_path / "eval_test"
    assert run_cli("evaluate", "--run", setup["seg"], "--manifest", setup["manifest"], "--out", out_test,
                   "--bootstrap", "10", "--rules", "seg_volume", "-q").code == 0
    assert "warnings" not in json.loads((out_test / "metrics.json").read_text())


def test_training_studies_are_recognised_under_another_salt(setup, run_cli, tmp_path):
    """The same data split again under another salt: patient keys no longer match the run's, but
    its training studies are recognised by their UIDs and refused; the report notes the salt."""
    import hashlib

    doc = json.loads(setup["manifest"].read_text())
    doc["salt_id"] = "0123456789ab"
    for split in ("training", "test"):
        for e in doc[split]:
            e["patient_key"] = hashlib.sha256(("other salt " + e["patient_key"]).encode()).hexdigest()[:16]
    resalted = setup["manifest"].with_name("m_resalted.json")
    resalted.write_text(json.dumps(doc))
    out = tmp_path / "eval_resalted"
    r = run_cli("evaluate", "--run", setup["seg"], "--manifest", resalted, "--split", "training",
                "--out", out, "--bootstrap", "10", "--rules", "seg_volume")
    assert r.code == 1 and "refusing" in r.err, r.err
    assert "salted" in r.err and not out.exists()
    trained = {e["patient_key"] for e in doc["training"] if e["fold"] != FOLD}
    assert all(k in r.err for k in trained)
    r = run_cli("evaluate", "--run", setup["seg"], "--manifest", resalted, "--out", out,
                "--bootstrap", "10", "--rules", "seg_volume", "-q")
    assert r.code == 0, r.err
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert any("another study of a training patient cannot be" in w for w in warnings)
