"""metrics.json schema, report files (markdown numbers, PNG plots, CSV), overlap warning."""

from __future__ import annotations

import csv
import json
import math

import jsonschema
import numpy as np
import pytest

from ichct.pipeline.decision import DecisionRule
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.evaluate.metrics_ct import ct_level_metrics, reader_metrics
from ichct.pipeline.evaluate.metrics_schema import METRICS_SCHEMA, to_jsonable, validate_metrics
from ichct.pipeline.evaluate.metrics_seg import segmentation_case_metrics, segmentation_summary
from ichct.pipeline.evaluate.report import OVERLAP_WARNING, assemble_metrics, format_metric, write_report


def _cohort(n=16, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = {"study_id": f"S{i}", "patient_key": f"P{i // 2}"}
        true = np.zeros((12, 12, 6), np.uint8)
        if rng.random() < 0.5:
            true[3:7, 3:8, 1:4] = rng.integers(1, 6)
        pred = np.roll(true, int(rng.integers(0, 2)), axis=0)
        for st in LABEL_NAMES:
            lab = int(true.any()) if st == "any" else int((true == LABEL_NAMES.index(st)).any())
            row[f"label:{st}"] = lab
            row[f"score:max:{st}"] = float(np.clip(0.5 * lab + 0.5 * rng.random(), 0, 1))
        for cls, vals in segmentation_case_metrics(pred, true, (1.0, 1.0, 5.0), 6).items():
            row.update({f"seg:{cls}:{k}": v for k, v in vals.items()})
        row["reader:R1:any"] = row["label:any"] if i % 5 else 1 - row["label:any"]
        rows.append(row)
    table = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    return rows, table, [r["patient_key"] for r in rows]


@pytest.fixture(scope="module")
def evaluated():
    rows, table, keys = _cohort()
    ct, curves = ct_level_metrics(table, keys, {"max": DecisionRule("max", threshold=0.5)}, n_boot=200)
    seg = segmentation_summary(table, keys, n_boot=200)
    readers = reader_metrics(table, keys, ["R1"], n_boot=200)
    return rows, keys, ct, curves, seg, readers


def _metrics(evaluated, allow_overlap=False):
    rows, keys, ct, curves, seg, readers = evaluated
    return assemble_metrics(model={"name": "unit-model", "sha256": "0" * 8}, manifest={"path": "m.json"},
                            split="test", patient_keys=keys, ct_level=ct, segmentation=seg,
                            allow_overlap=allow_overlap, readers=readers, n_boot=200, seed=0)


def test_schema_is_valid_draft7_and_metrics_validate(evaluated):
    jsonschema.Draft7Validator.check_schema(METRICS_SCHEMA)
    doc = _metrics(evaluated)
    assert doc["n_patients"] == 8 and doc["n_studies"] == 16 and doc["allow_overlap"] is False
    text = json.dumps(doc, allow_nan=False)  # no NaN left
    jsonschema.validate(json.loads(text), METRICS_SCHEMA)
    # a subtype without positives: NaN -> null with a reason
    missing = [st for st in LABEL_NAMES if st != "any" and doc["ct_level"][st]["max"]["sensitivity"]["value"] is None]
    for st in missing:
        assert doc["ct_level"][st]["max"]["sensitivity"]["reason"] == "no positive cases"


def test_schema_rejects_bad_documents(evaluated):
    doc = _metrics(evaluated)
    bad = json.loads(json.dumps(doc))
    del bad["allow_overlap"]
    with pytest.raises(jsonschema.ValidationError):
        validate_metrics(bad)
    bad = json.loads(json.dumps(doc))
    bad["ct_level"]["any"]["max"]["roc_auc"] = {"value": "high"}
    with pytest.raises(jsonschema.ValidationError):
        validate_metrics(bad)
    converted = to_jsonable({"a": float("nan"), "b": np.float32(0.5), "c": np.arange(2)})
    assert converted == {"a": None, "b": 0.5, "c": [0, 1]}


def test_report_renders(evaluated, tmp_path):
    rows, keys, ct, curves, seg, readers = evaluated
    doc = _metrics(evaluated)
    files = write_report(doc, rows, curves, tmp_path / "out")
    names = set(files)
    assert {"metrics.json", "per_case.csv", "report.md", "roc_any.png", "pr_any.png", "calibration.png",
            "bland_altman.png", "volume_scatter.png"} <= names
    for n, p in files.items():
        assert p.is_file() and p.stat().st_size > 0, n
        if n.endswith(".png"):
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
    assert not [p for p in (tmp_path / "out").iterdir() if ".partial" in p.name]
    md = files["report.md"].read_text()
    assert not md.startswith(OVERLAP_WARNING)
    auc = doc["ct_level"]["any"]["max"]["roc_auc"]
    assert format_metric(auc) in md and f"{auc['value']:.3f} [" in md
    assert format_metric(doc["segmentation"]["any"]["dice"]) in md
    assert "R1" in md
    assert json.loads(files["metrics.json"].read_text()) == doc
    with files["per_case.csv"].open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 16 and table[0]["study_id"] == "S0"
    assert math.isclose(float(table[0]["score:max:any"]), rows[0]["score:max:any"])


def test_report_first_line_warns_on_overlap(evaluated, tmp_path):
    rows, keys, ct, curves, seg, readers = evaluated
    files = write_report(_metrics(evaluated, allow_overlap=True), rows, curves, tmp_path)
    first = files["report.md"].read_text().splitlines()[0]
    assert first == OVERLAP_WARNING and "training patients" in first


def test_format_metric():
    assert format_metric({"value": 0.91234, "ci_low": 0.85, "ci_high": 0.96}) == "0.912 [0.850, 0.960]"
    assert format_metric({"value": None, "ci_low": None, "ci_high": None}) == "n/a"
    assert format_metric({"value": 3.0, "ci_low": None, "ci_high": None}, 0) == "3"


def test_report_says_why_a_metric_is_undefined():
    """A subtype with no positive study has no AUC or sensitivity: the markdown report says n/a and
    gives the reason from metrics.json, naming the metrics it applies to."""
    rows, table, keys = _cohort()
    table = dict(table)
    table["label:epidural"] = np.zeros_like(table["label:epidural"])
    ct, _ = ct_level_metrics(table, keys, {"max": DecisionRule("max", threshold=0.5)}, n_boot=50)
    epi = ct["epidural"]["max"]
    assert epi["roc_auc"]["value"] is None or not math.isfinite(epi["roc_auc"]["value"])
    reason = epi["roc_auc"]["reason"]
    doc = assemble_metrics(model={"name": "m", "sha256": "0" * 8}, manifest={"path": "m.json"}, split="test",
                           patient_keys=keys, ct_level=ct, segmentation={}, allow_overlap=False, n_boot=50, seed=0)
    from ichct.pipeline.evaluate.report import render_markdown

    text = render_markdown(to_jsonable(doc))
    note = next(line for line in text.splitlines() if line.startswith("n/a (") and reason in line)
    assert "epidural roc_auc" in note and "epidural sensitivity" in note
    assert "any roc_auc" not in note
