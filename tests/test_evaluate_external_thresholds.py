"""Thresholds for another tool's predictions: loading a thresholds file, choosing on validation predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ichct.errors import InputError
from ichct.pipeline.decision import DecisionRule, choose_threshold, decide
from ichct.pipeline.evaluate.external_probs import (
    fill_probability_fields,
    read_probabilities,
)
from ichct.pipeline.evaluate.external_thresholds import (
    FALLBACK_PROBABILITY,
    MIN_THRESHOLD,
    choose_thresholds_on_validation,
    load_thresholds,
)

REPO = Path(__file__).resolve().parents[1]


def _json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


# ---------------------------------------------------------------------------------------------
# thresholds given by the user
# ---------------------------------------------------------------------------------------------


def test_ichct_classifier_thresholds_json_gives_every_slice_rule():
    path = REPO / "bundles" / "ich_ct_classification" / "models" / "thresholds.json"
    stored = json.loads(path.read_text())
    rules = load_thresholds(path)
    assert set(rules) == {"consecutive", "max", "topk_mean"}
    assert rules["consecutive"].threshold == stored["threshold"] and rules["consecutive"].k == stored["k"]
    for name in ("max", "topk_mean"):
        assert rules[name].name == name and rules[name].k == stored["k"]
        assert rules[name].threshold == stored["meta"]["other_rules"][name]
        assert rules[name].meta["chosen_on"] == stored["meta"]["chosen_on"]
    assert "other_rules" not in rules["consecutive"].meta and rules["consecutive"].meta["thresholds_file"] == str(path)


def test_ichct_segmentation_thresholds_json():
    path = REPO / "bundles" / "ich_ct_segmentation" / "models" / "thresholds.json"
    stored = DecisionRule.load(path)
    assert "seg_peak" in stored.meta["other_rules"]  # chosen by ichct postprocess; needs probability maps
    rules = load_thresholds(path)
    assert list(rules) == ["seg_volume"]  # label maps of another tool are scored by their volume only
    assert "other_rules_chosen_on" not in rules["seg_volume"].meta
    rule = rules["seg_volume"]
    assert (rule.threshold, rule.min_component_ml, rule.num_seg_classes) == (
        stored.threshold, stored.min_component_ml, stored.num_seg_classes)


def test_simple_thresholds_files(tmp_path):
    rules = load_thresholds(_json(tmp_path / "t.json", {"max": 0.5, "seg_volume": 0.25}))
    assert rules["max"].threshold == 0.5 and rules["max"].threshold_for("subdural") == 0.5
    assert rules["seg_volume"].threshold == 0.25 and rules["max"].meta["chosen_on"] == "given in t.json"
    rules = load_thresholds(_json(tmp_path / "u.json", {"consecutive": {"any": 0.4, "subdural": 0.3},
                                                        "topk_mean": {"threshold": 0.6, "k": 2}}))
    assert rules["consecutive"].threshold == {"any": 0.4, "subdural": 0.3} and rules["consecutive"].k == 3
    assert rules["topk_mean"].threshold == 0.6 and rules["topk_mean"].k == 2
    with pytest.raises(KeyError):
        rules["consecutive"].threshold_for("epidural")


BAD = {
    "not json": ("{max: 0.5", "not a valid thresholds file (JSON)"),
    "a list": ([0.5], "not a thresholds file"),
    "empty": ({}, "not a thresholds file"),
    "unknown rule": ({"mean": 0.5}, "key 'mean': unknown rule"),
    "zero": ({"max": 0}, "key 'max': max threshold must lie in (0, 1]"),
    "above one": ({"max": {"any": 0.5, "subdural": 1.5}}, "key 'max.subdural': max threshold must lie in (0, 1]"),
    "text": ({"consecutive": {"any": "high"}}, "key 'consecutive.any': threshold must be a number"),
    "bool": ({"max": True}, "key 'max': threshold must be a number"),
    "negative volume": ({"seg_volume": -1}, "key 'seg_volume': seg_volume threshold is a blood volume in mL"),
    "unknown label": ({"max": {"any": 0.5, "subdual": 0.5}}, "key 'max': expected a threshold per label"),
    "no labels": ({"max": {}}, "key 'max': expected a threshold per label"),
    "wrong name": ({"max": {"name": "consecutive", "threshold": 0.5}}, "key 'max': holds the rule 'consecutive'"),
    "bad field": ({"max": {"threshold": 0.5, "window": 3}}, "key 'max': unknown DecisionRule field(s)"),
    "bad ichct file": ({"name": "max", "threshold": 2.0}, "not a valid decision rule"),
    "bad other rules": ({"name": "consecutive", "threshold": 0.5, "meta": {"other_rules": {"max": {"any": 7}}}},
                        "key 'meta.other_rules.max.any'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_thresholds_file(tmp_path, case):
    content, what = BAD[case]
    path = _json(tmp_path / "thr.json", content)
    with pytest.raises(InputError) as err:
        load_thresholds(path)
    assert str(err.value).startswith(f"{path}: ") and what in str(err.value), str(err.value)


def test_missing_thresholds_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_thresholds(tmp_path / "none.json")


# ---------------------------------------------------------------------------------------------
# thresholds chosen on validation predictions
# ---------------------------------------------------------------------------------------------


def _entries(labels):
    return [{"study_uid": f"val{i}", "ct_labels": dict(y)} for i, y in enumerate(labels)]


def test_chosen_thresholds_are_those_of_choose_threshold_on_the_labelled_studies():
    rng = np.random.default_rng(1)
    n = 12
    any_y = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1]
    sdh_y = [1, 0, 0, 1, 0, 0, -1, 0, 1, 0, -1, 0]  # -1: unknown, left out
    entries = _entries({"any": a, "subdural": s} for a, s in zip(any_y, sdh_y))
    scores = [{"max": {"any": float(rng.random()), "subdural": float(rng.random())},
               "consecutive": {"any": float(rng.random())}} for _ in range(n)]
    rules = choose_thresholds_on_validation(scores, entries, ["max", "consecutive"], k=2)
    keep = np.asarray(sdh_y) >= 0
    sdh = np.asarray([s["max"]["subdural"] for s in scores])
    want = choose_threshold(sdh[keep], np.asarray(sdh_y)[keep] > 0, method="youden")
    assert rules["max"].threshold["subdural"] == want
    assert rules["max"].threshold["any"] == choose_threshold([s["max"]["any"] for s in scores], any_y)
    assert rules["consecutive"].threshold == {"any": choose_threshold([s["consecutive"]["any"] for s in scores], any_y)}
    assert rules["consecutive"].k == 2
    meta = rules["max"].meta
    assert meta["chosen_on"] == "validation predictions (12 studies)" and meta["method"] == "youden"
    assert meta["n_val"] == 12 and meta["n_labelled"] == {"any": 12, "subdural": 10}
    assert meta["n_positive"] == {"any": 6, "subdural": 3} and meta["fallback_0.5"] == []


def test_other_criteria():
    entries = _entries({"any": y} for y in [0, 0, 0, 1, 1, 1])
    scores = [{"max": {"any": s}} for s in (0.1, 0.2, 0.7, 0.3, 0.8, 0.9)]
    rule = choose_thresholds_on_validation(scores, entries, ["max"], method="sensitivity", target=1.0)["max"]
    # the lowest positive (0.3) is the highest threshold of sensitivity 1: halfway down to the 0.2 below it
    assert rule.threshold == {"any": pytest.approx(0.25)} and rule.meta["method"] == "sensitivity" and rule.meta["target"] == 1.0
    with pytest.raises(InputError, match="method must be one of"):
        choose_thresholds_on_validation(scores, entries, ["max"], method="f1")


def test_labels_without_positives_fall_back_as_training_does(caplog):
    entries = _entries({"any": y, "epidural": 0} for y in [0, 1, 0, 1])
    scores = [{"max": {"any": s, "epidural": s}, "seg_volume": {"any": v, "epidural": 0.0}}
              for s, v in ((0.2, 0.0), (0.9, 3.0), (0.3, 0.0), (0.8, 5.5))]
    rules = choose_thresholds_on_validation(scores, entries, ["max", "seg_volume"])
    assert rules["max"].threshold == {"any": pytest.approx(0.55), "epidural": FALLBACK_PROBABILITY}  # (0.3 + 0.8) / 2
    assert rules["max"].meta["fallback_0.5"] == ["epidural"]
    assert "positives and negatives" in rules["max"].meta["fallback_reasons"]["epidural"]
    seg = rules["seg_volume"]
    assert seg.threshold == {"any": 1.5, "epidural": MIN_THRESHOLD} and seg.meta["fallback_any_blood"] == ["epidural"]
    assert seg.meta["unit"] == "mL"
    assert "no threshold can be chosen" in caplog.text
    # the fallback calls "any predicted blood": one voxel of 0.1 mm^3 is positive, no blood is not
    blood = np.zeros((4, 4, 2), int)
    rule = DecisionRule("seg_volume", threshold=seg.threshold["epidural"], num_seg_classes=2)
    assert not decide(rule, segmentation=blood, voxel_volume_ml=1e-4)["any"]["positive"]
    blood[1, 1, 1] = 1
    assert decide(rule, segmentation=blood, voxel_volume_ml=1e-4)["any"]["positive"]


def test_a_zero_volume_threshold_falls_back_to_any_blood():
    entries = _entries({"any": y} for y in [1, 1, 0])
    rule = choose_thresholds_on_validation([{"seg_volume": {"any": v}} for v in (0.0, 2.0, 0.0)], entries,
                                           ["seg_volume"], method="sensitivity", target=1.0)["seg_volume"]
    assert rule.threshold == {"any": MIN_THRESHOLD} and rule.meta["fallback_any_blood"] == ["any"]


def test_validation_studies_without_scores_or_unknown_rules_are_refused():
    entries = _entries({"any": y} for y in [0, 1])
    with pytest.raises(InputError, match=r"rule max: 1 of 2 validation studies have no scores \(first: val1\)"):
        choose_thresholds_on_validation([{"max": {"any": 0.1}}, {}], entries, ["max"])
    with pytest.raises(InputError, match="unknown rule 'mean'"):
        choose_thresholds_on_validation([{"max": {"any": 0.1}}] * 2, entries, ["mean"])
    with pytest.raises(InputError, match="no validation predictions"):
        choose_thresholds_on_validation([], [], ["max"])


def test_from_a_validation_csv_to_calls_at_the_validation_operating_point(tmp_path):
    """Per-study validation CSV -> scores -> thresholds; applied to the same studies they give Youden's point."""
    from ichct.pipeline.models.inference import StudyPrediction

    y = [0, 1, 0, 1, 1, 0]
    p = [0.05, 0.6, 0.3, 0.9, 0.4, 0.1]
    entries = _entries({"any": v} for v in y)
    path = tmp_path / "val.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([["study_uid", "any"], *([e["study_uid"], v] for e, v in zip(entries, p))])
    probs = read_probabilities([path], entries, lambda e: e["study_uid"])
    preds = []
    for e in entries:
        pred = StudyPrediction(image="x", original_shape=(1, 1, 1), original_affine=np.eye(4), n_slices=1)
        fill_probability_fields(pred, probs[e["study_uid"]], {}, score_only=["max"])
        preds.append(pred)
    rules = choose_thresholds_on_validation([q.scores for q in preds], entries, ["max"])
    assert rules["max"].threshold == {"any": pytest.approx(0.35)}  # between the highest negative and the lowest positive
    for e, pred in zip(entries, preds):
        fill_probability_fields(pred, probs[e["study_uid"]], rules)
    calls = [int(q.decisions["max"]["any"]["positive"]) for q in preds]
    assert calls == y  # Youden's J 1 at 0.35: every validation study called right
