"""``ichct postprocess``: the confidence filter chosen on held-out studies and stored with the model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from eval_helpers import eval_setup
from ichct.errors import InputError
from ichct.pipeline.postprocess import (
    choose_confidence,
    choose_min_component_ml,
    sweep_summary,
    within_false_blood_budget,
)


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


def _summary(value: float, dice: float, sens: float) -> dict[str, float]:
    return {"min_component_confidence": value, "dice_with_blood": dice, "lesion_sensitivity": sens}


def test_choice_stops_at_the_first_value_that_costs_too_much():
    rows = [_summary(0.0, 0.70, 0.60), _summary(0.6, 0.705, 0.60), _summary(0.7, 0.69, 0.55),
            _summary(0.8, 0.70, 0.60)]  # 0.8 would pass again, but 0.7 already cost sensitivity
    assert choose_confidence(rows) == 0.6
    assert choose_confidence(rows, sensitivity_tolerance=0.05) == 0.8
    assert choose_confidence(rows[:1] + [_summary(0.5, 0.5, 0.6)]) == 0.0


@pytest.mark.parametrize("rows, kwargs, match", [
    ([_summary(0.5, 0.7, 0.6)], {}, "value 0"),
    ([_summary(0.0, float("nan"), float("nan"))], {}, "no reference blood"),
    ([_summary(0.0, 0.7, 0.6)], {"dice_tolerance": -0.1}, "dice_tolerance"),
    ([_summary(0.0, 0.7, 0.6)], {"sensitivity_tolerance": 1.5}, "sensitivity_tolerance"),
])
def test_choice_refuses_what_it_cannot_weigh(rows, kwargs, match):
    with pytest.raises(InputError, match=match):
        choose_confidence(rows, **kwargs)


def _false_blood(value: float, p95_ml: float) -> dict[str, float]:
    return {"min_component_confidence": value, "false_blood_ml_p95": p95_ml}


def test_false_blood_budget_raises_the_choice_to_the_smallest_value_within_it():
    rows = [_false_blood(0.0, 2.2), _false_blood(0.65, 1.69), _false_blood(0.7, 1.57), _false_blood(0.75, 1.13),
            _false_blood(0.8, 0.41), _false_blood(0.85, 0.0)]
    assert within_false_blood_budget(rows, 0.65, 1.0) == 0.8  # the smallest within 1 mL, not the largest
    assert within_false_blood_budget(rows, 0.65, 1.2) == 0.75
    assert within_false_blood_budget(rows, 0.65, 1.69) == 0.65  # the choice itself within it: kept
    assert within_false_blood_budget(rows, 0.85, 5.0) == 0.85  # never lowered
    assert within_false_blood_budget(list(reversed(rows)), 0.0, 1.0) == 0.8  # any row order


@pytest.mark.parametrize("rows, budget, match", [
    ([_false_blood(0.0, 2.0), _false_blood(0.9, 0.3)], 0.1, r"within 0.1 mL: the least is 0.30 mL at 0.9"),
    ([_false_blood(0.0, float("nan"))], 1.0, "none without reference blood"),
    ([_false_blood(0.0, 2.0)], -1.0, "max_false_blood_ml"),
    ([_false_blood(0.0, 2.0)], float("nan"), "max_false_blood_ml"),
])
def test_false_blood_budget_refuses_what_it_cannot_meet_or_check(rows, budget, match):
    with pytest.raises(InputError, match=match):
        within_false_blood_budget(rows, 0.0, budget)


def test_summary_pools_lesions_and_reads_false_blood_on_negatives_only():
    def row(vol_true, dice, n_true, n_found, n_fp, vol_pred, call):
        return {"seg:any:vol_true_ml": vol_true, "seg:any:dice": dice, "seg:any:n_true_lesions": n_true,
                "seg:any:n_detected_lesions": n_found, "seg:any:n_fp_lesions": n_fp, "vol_ml:any": vol_pred,
                "call:seg_volume:any": call}

    rows = [row(5.0, 0.6, 3, 2, 0, 40.0, 1), row(1.0, 0.8, 1, 1, 1, 3.0, 1),
            row(0.0, float("nan"), 0, 0, 2, 2.0, 1)] + [row(0.0, float("nan"), 0, 0, 0, 0.0, 0)] * 3
    [s] = sweep_summary({0.5: rows})
    assert s["n_with_blood"] == 2 and s["n_without_blood"] == 4 and s["n_studies"] == 6
    assert s["dice_with_blood"] == pytest.approx(0.7)
    assert s["lesion_sensitivity"] == pytest.approx(3 / 4)
    assert s["fp_lesions_per_scan"] == pytest.approx(3 / 6)
    assert s["false_blood_ml_median"] == 0.0 and s["false_blood_ml_p95"] == pytest.approx(np.percentile([2, 0, 0, 0], 95))
    assert s["seg_volume_specificity"] == pytest.approx(3 / 4)


def test_variants_are_what_predict_study_gives_at_each_value(setup):
    import dataclasses

    from ichct.pipeline.models.inference import load_run, predict_confidence_variants, predict_study
    from ichct.pipeline.manifests import load_manifest

    model = load_run(setup["seg"])
    entry = next(e for e in load_manifest(setup["manifest"], "test", check=False) if e["ct_labels"]["any"] == 1)
    variants = predict_confidence_variants(model, entry["image"], [0.0, 0.55, 0.7])
    assert sorted(variants) == [0.0, 0.55, 0.7]
    for value, got in variants.items():
        cfg = {**model.config, "min_component_confidence": value}
        want = predict_study({"seg": dataclasses.replace(model, config=cfg)}, entry["image"])
        np.testing.assert_array_equal(got.seg_original, want.seg_original)
        np.testing.assert_array_equal(got.seg_preprocessed, want.seg_preprocessed)
        assert got.volumes_ml == want.volumes_ml and got.scores == want.scores
    sizes = [int(variants[v].seg_preprocessed.astype(bool).sum()) for v in (0.0, 0.55, 0.7)]
    assert sizes == sorted(sizes, reverse=True)  # a stricter filter only removes blood


def test_pair_variants_are_what_predict_study_gives_with_each_pair(setup):
    """A confidence value and a minimum component volume: as predict_study with both in the config."""
    import dataclasses

    from ichct.pipeline.manifests import load_manifest
    from ichct.pipeline.models.inference import load_run, predict_postprocessing_variants, predict_study

    model = load_run(setup["seg"])
    entry = next(e for e in load_manifest(setup["manifest"], "test", check=False) if e["ct_labels"]["any"] == 1)
    variants = predict_postprocessing_variants(model, entry["image"], [0.0, 0.6], [0.0, 0.05, 2.0])
    assert sorted(variants) == [(c, m) for c in (0.0, 0.6) for m in (0.0, 0.05, 2.0)]
    for (value, min_ml), got in variants.items():
        cfg = {**model.config, "min_component_confidence": value, "min_component_ml": min_ml}
        want = predict_study({"seg": dataclasses.replace(model, config=cfg)}, entry["image"])
        np.testing.assert_array_equal(got.seg_original, want.seg_original)
        assert got.volumes_ml == want.volumes_ml and got.scores == want.scores
    blood = [int(variants[(0.0, m)].seg_original.astype(bool).sum()) for m in (0.0, 0.05, 2.0)]
    assert blood == sorted(blood, reverse=True) and blood[0] > 0  # a larger minimum only removes blood
    with pytest.raises(ValueError, match="min_components_ml"):
        predict_postprocessing_variants(model, entry["image"], [0.0], [-0.1])


def _minimum(value: float, dice: float, fp: float) -> dict[str, float]:
    return {"min_component_ml": value, "dice_with_blood": dice, "fp_lesions_per_scan": fp}


def test_minimum_choice_is_the_smallest_within_the_budgets():
    rows = [_minimum(0.05, 0.60, 0.9), _minimum(0.1, 0.64, 0.45), _minimum(0.2, 0.65, 0.2), _minimum(0.5, 0.66, 0.1)]
    assert choose_min_component_ml(rows, 0.2) == 0.1  # 0.05 costs too many false positives
    assert choose_min_component_ml(rows, 0.2, max_fp_per_scan=1.0) == 0.1  # 0.05 costs 0.05 of Dice
    assert choose_min_component_ml(rows, 0.2, dice_tolerance=0.05, max_fp_per_scan=1.0) == 0.05
    assert choose_min_component_ml(rows, 0.2, dice_tolerance=0.0) == 0.2  # 0.1 loses 0.01 Dice
    assert choose_min_component_ml(rows, 0.2, max_fp_per_scan=0.05) == 0.2  # nothing qualifies: the run's own
    with pytest.raises(InputError, match="reference"):
        choose_min_component_ml(rows, 0.3)
    with pytest.raises(InputError, match="max_fp_per_scan"):
        choose_min_component_ml(rows, 0.2, max_fp_per_scan=-1)


def test_cli_chooses_stores_and_inference_uses_it(setup, run_cli, tmp_path):
    from ichct.pipeline.models.inference import load_run

    run = tmp_path / "seg"
    shutil.copytree(setup["seg"], run)
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--split", "test", "--values", "0.6,0.9",
                "--dice-tolerance", "1", "--sensitivity-tolerance", "1", "-q")
    assert r.code == 0, r.err
    record = json.loads(r.out)
    assert record["min_component_confidence"] == 0.9  # the tolerances allow every value: the largest
    assert [s["min_component_confidence"] for s in record["sweep"]] == [0.0, 0.6, 0.9]
    assert record["studies"]["split"] == "test" and record["studies"]["n"] >= 1
    assert json.loads((run / "postprocessing.json").read_text()) == {k: v for k, v in record.items() if k != "written"}
    assert record["written"] == str(run / "config.json")
    assert load_run(run).config["min_component_confidence"] == 0.9
    config = json.loads((run / "config.json").read_text())
    original = json.loads((setup["seg"] / "config.json").read_text())
    # the minimum component volume, chosen at 0.9 on the same studies, is the second key that changes
    minimum = record["min_component_ml"]
    assert minimum["previous"] == original["config"]["min_component_ml"] == 0.2
    assert [s["min_component_ml"] for s in minimum["sweep"]] == [0.05, 0.1, 0.15, 0.2, 0.3, 0.5]
    assert minimum["min_component_ml"] == choose_min_component_ml(minimum["sweep"], 0.2, 1.0, 0.5)
    assert minimum["rule"]["max_fp_lesions_per_scan"] == 0.5 and minimum["rule"]["dice_tolerance"] == 1.0
    fp = [s["fp_lesions_per_scan"] for s in minimum["sweep"]]
    found = [s["lesion_sensitivity"] for s in minimum["sweep"]]
    assert fp == sorted(fp, reverse=True) and found == sorted(found, reverse=True)  # a smaller minimum only adds
    assert config["config"] == {**original["config"], "min_component_confidence": 0.9,
                                "min_component_ml": minimum["min_component_ml"]}  # only those keys changed
    assert load_run(run).config["min_component_ml"] == minimum["min_component_ml"]
    assert {k: v for k, v in config.items() if k != "config"} == {k: v for k, v in original.items() if k != "config"}
    # the seg_peak threshold, chosen on the same studies, goes into the stored rule's meta and from there into
    # the rules predict and evaluate use; the rest of the rule is as training wrote it
    from ichct.pipeline.models.inference import default_rules

    peak = record["seg_peak"]
    assert 0.0 < peak["threshold"] <= 1.0 and peak["method"] == "youden"
    assert str(setup["manifest"]) in peak["chosen_on"] and " test (" in peak["chosen_on"]
    rule, before = (json.loads((d / "thresholds.json").read_text()) for d in (run, setup["seg"]))
    assert rule["meta"]["other_rules"]["seg_peak"] == {"any": peak["threshold"]}
    assert rule["meta"]["other_rules_chosen_on"] == {"seg_peak": peak["chosen_on"]}
    assert {k: v for k, v in rule.items() if k != "meta"} == {k: v for k, v in before.items() if k != "meta"}
    rules = default_rules({"seg": load_run(run)})
    assert rules["seg_peak"].threshold == peak["threshold"] and rules["seg_peak"].meta["chosen_on"] == peak["chosen_on"]


def test_dry_run_writes_nothing_and_defaults_to_the_validation_fold(setup, run_cli, tmp_path):
    run = tmp_path / "seg"
    shutil.copytree(setup["seg"], run)
    before = (run / "config.json").read_bytes()
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--values", "0.7", "--dry-run", "-q")
    assert r.code == 0, r.err
    record = json.loads(r.out)
    assert record["studies"]["split"] == "validation" and record["studies"]["fold"] == 0
    assert record["min_component_ml"]["min_component_ml"] in (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--values", "0.7", "--min-component-ml", "none",
                "--dry-run", "-q")
    assert r.code == 0, r.err
    assert json.loads(r.out)["min_component_ml"] is None  # the run's own minimum is kept
    assert "written" not in record and not (run / "postprocessing.json").exists()
    assert (run / "config.json").read_bytes() == before


def test_cli_false_blood_budget_is_applied_and_recorded(setup, run_cli, tmp_path):
    run = tmp_path / "seg"
    shutil.copytree(setup["seg"], run)
    args = ("postprocess", run, "--manifest", setup["manifest"], "--split", "test", "--values", "0.6,0.9",
            "--dice-tolerance", "0", "--sensitivity-tolerance", "0", "--min-component-ml", "none", "--dry-run", "-q")
    r = run_cli(*args)
    assert r.code == 0, r.err
    plain = json.loads(r.out)
    assert "max_false_blood_ml" not in plain["rule"]  # without a budget the record is as before
    sweep = {s["min_component_confidence"]: s["false_blood_ml_p95"] for s in plain["sweep"]}
    budget = min(sweep.values())
    assert sweep[plain["min_component_confidence"]] > budget  # the fixture's model leaves false blood unfiltered
    r = run_cli(*args, "--max-false-blood-ml", str(budget))
    assert r.code == 0, r.err
    record = json.loads(r.out)
    expected = min(v for v, p95 in sweep.items() if v >= plain["min_component_confidence"] and p95 <= budget)
    assert record["min_component_confidence"] == expected > plain["min_component_confidence"]
    assert record["rule"]["max_false_blood_ml"] == budget and f"within {budget:g} mL" in record["rule"]["text"]
    r = run_cli(*args[:-2], "--max-false-blood-ml", "-0.5")
    assert r.code == 2 and "--max-false-blood-ml" in r.err
    assert not (run / "postprocessing.json").exists()


def test_training_patients_and_bad_values_are_refused(setup, run_cli, tmp_path):
    run = tmp_path / "seg"
    shutil.copytree(setup["seg"], run)
    before = (run / "config.json").read_bytes()
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--split", "training")
    assert r.code == 1 and "trained the model" in r.err and "held-out" in r.err
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--values", "0.5,1.2")
    assert r.code == 2 and "1.2" in r.err
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--max-fp-per-scan", "-1")
    assert r.code == 2 and "--max-fp-per-scan" in r.err
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--min-component-ml", "0.01,0.2")
    assert r.code == 1 and "0.05 mL" in r.err and "0.01" in r.err
    assert (run / "config.json").read_bytes() == before and not (run / "postprocessing.json").exists()


def test_classifier_thresholds_are_chosen_again_on_held_out_studies(setup, run_cli, tmp_path):
    """A classifier's slice-rule thresholds, chosen on the studies' predictions as training chooses them."""
    from ichct.pipeline.manifests import load_manifest
    from ichct.pipeline.models.inference import load_run, predict_study
    from ichct.pipeline.postprocess import ct_label_vector
    from ichct.pipeline.train.validation import ValidationCollector

    run = tmp_path / "cls"
    shutil.copytree(setup["cls"], run)
    before = (run / "thresholds.json").read_bytes()
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--split", "test", "--dry-run", "-q")
    assert r.code == 0, r.err
    assert "written" not in json.loads(r.out) and (run / "thresholds.json").read_bytes() == before
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--split", "test", "-q")
    assert r.code == 0, r.err
    record = json.loads(r.out)
    stored = json.loads((run / "thresholds.json").read_text())
    assert record["kind"] == "cls" and record["thresholds"] == stored
    assert record["previous"]["threshold"] == json.loads(before)["threshold"]
    assert json.loads((run / "postprocessing.json").read_text())["thresholds"] == stored
    assert stored["name"] == "consecutive" and set(stored["meta"]["other_rules"]) == {"max", "topk_mean"}
    assert "test" in stored["meta"]["chosen_on"] and str(setup["manifest"]) in stored["meta"]["chosen_on"]
    # the same choice from the studies' own predictions
    model = load_run(setup["cls"])
    collector = ValidationCollector("cls", model.config)
    for entry in load_manifest(setup["manifest"], "test"):
        collector.add_study(predict_study({"cls": model}, entry["image"]).slice_probs, ct_label_vector(entry))
    expected = collector.decision_rule(epoch=None, fold=None, chosen_on="x")
    assert stored["threshold"] == pytest.approx(expected.threshold)
    r = run_cli("postprocess", run, "--manifest", setup["manifest"], "--split", "training")
    assert r.code == 1 and "trained the model" in r.err


def test_bundle_gets_the_filter_in_its_configs(setup, run_cli, tmp_path):
    from ichct.pipeline.bundle.package import load_bundle, package_bundle

    bundle = tmp_path / "ich_seg"
    package_bundle(setup["seg"], bundle)
    assert "SuppressUncertainComponentsd" not in (bundle / "configs" / "inference.json").read_text()
    r = run_cli("postprocess", bundle, "--manifest", setup["manifest"], "--split", "test", "--values", "0.8",
                "--dice-tolerance", "1", "--sensitivity-tolerance", "1", "-q")
    assert r.code == 0, r.err
    assert (bundle / "models" / "postprocessing.json").is_file()
    assert load_bundle(bundle).config["min_component_confidence"] == 0.8
    for name in ("inference.json", "evaluate.json"):
        text = (bundle / "configs" / name).read_text()
        assert "SuppressUncertainComponentsd" in text and '"min_confidence": 0.8' in text
    assert run_cli("bundle", "verify", bundle, "-q").code == 0

    # the bundle's numbers are measured again with the filter and put into its docs
    ev = tmp_path / "eval"
    assert run_cli("evaluate", "--bundle", bundle, "--manifest", setup["manifest"], "--out", ev, "--bootstrap", "20",
                   "-q").code == 0
    r = run_cli("bundle", "refresh", bundle, "--evaluation", ev, "--version", "0.2.0", "--change", "filter 0.8", "-q")
    assert r.code == 0, r.err
    assert json.loads((bundle / "docs" / "evaluation" / "metrics.json").read_text()) == \
        json.loads((ev / "metrics.json").read_text())
    assert json.loads((bundle / "configs" / "metadata.json").read_text())["changelog"]["0.2.0"] == "filter 0.8"
    other = tmp_path / "other_eval"
    shutil.copytree(ev, other)
    doc = json.loads((other / "metrics.json").read_text())
    doc["model"]["runs"]["seg"]["weights_sha256"] = "0" * 64
    (other / "metrics.json").write_text(json.dumps(doc))
    before = (bundle / "docs" / "README.md").read_bytes()
    r = run_cli("bundle", "refresh", bundle, "--also-evaluated", f"shifted={other}")
    assert r.code == 1 and "other weights" in r.err
    assert (bundle / "docs" / "README.md").read_bytes() == before and not (bundle / "docs" / "evaluation_shifted").exists()



def test_a_bundle_that_cannot_be_refreshed_is_left_as_it_was(setup, run_cli, tmp_path):
    from ichct.pipeline.bundle.package import package_bundle

    bundle = tmp_path / "ich_seg"
    package_bundle(setup["seg"], bundle)
    ev = bundle / "docs" / "evaluation"
    ev.mkdir(parents=True)
    (ev / "metrics.json").write_text(json.dumps({"model": {"runs": {"seg": {"weights_sha256": "0" * 64}}}}))
    files = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    r = run_cli("postprocess", bundle, "--manifest", setup["manifest"], "--split", "test", "--values", "0.8",
                "--dice-tolerance", "1", "--sensitivity-tolerance", "1")
    assert r.code == 1 and "other weights" in r.err
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == files
    assert not [p for p in tmp_path.rglob("*partial*")]
