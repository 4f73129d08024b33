"""Shifted image formation (SynthConfig.formation) and the shifted-domain benchmark's table functions."""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ichct.errors import InputError
from ichct.pipeline.synth import SynthConfig, generate_cohort
from ichct.pipeline.synth.config import FormationShift, default_cohort
from ichct.pipeline.synth.noise import BONE, SOFT, shifted_kernel
from ichct.transforms.dicom import read_dicom_series

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import domain_shift


def _config(formation=None) -> SynthConfig:
    return SynthConfig(n_patients=1, seed=5, matrix=64, slices=6, positive_fraction=0.0, follow_up_fraction=0.0,
                       tilt_fraction=0.0, bone_fraction=0.0, scout_fraction=0.0, motion_fraction=0.0,
                       compression_mix={"none": 1.0}, formation=formation)


def _render(tmp_path: Path, name: str, formation=None) -> tuple[dict, np.ndarray, bytes]:
    """(the study record, its HU volume, its label map's bytes) of a one-study cohort."""
    cohort = generate_cohort(_config(formation), tmp_path / name, workers=1)
    record = cohort["studies"][0]
    hu = np.asarray(read_dicom_series(tmp_path / name / record["series_dir"], workers=1).hu_volume, dtype=np.float64)
    return record, hu, (tmp_path / name / record["label"]).read_bytes()


@pytest.mark.parametrize(("values", "key"), [
    ({"dose_factor": 0.0}, "formation.dose_factor"),
    ({"soft_f_cut": -1}, "formation.soft_f_cut"),
    ({"hu_offset": "warm"}, "formation.hu_offset"),
    ({"ssp_blur_mm": float("nan")}, "formation.ssp_blur_mm"),
    ({"kernel_sharpness": 2.0}, "kernel_sharpness"),
])
def test_bad_shift_settings_raise_an_input_error_naming_the_key(values, key):
    with pytest.raises(InputError, match=key.replace(".", r"\.")):
        SynthConfig(n_patients=1, formation=values)


def test_default_config_has_no_shift_in_its_parameters_and_a_shift_is_recorded():
    assert default_cohort().formation is None
    assert "formation" not in default_cohort().parameters()
    shifted = SynthConfig(n_patients=1, formation={"dose_factor": 0.7, "hu_offset": 4})
    assert shifted.formation == FormationShift(dose_factor=0.7, hu_offset=4.0)
    assert shifted.parameters()["formation"]["dose_factor"] == 0.7
    assert json.loads(json.dumps(shifted.parameters()))["formation"]["hu_offset"] == 4.0


def test_shifted_kernel_changes_only_what_the_shift_names():
    shift = FormationShift(soft_f_cut=0.55, tail_fraction=0.12)
    assert shifted_kernel(SOFT, shift, soft=True).f_cut == 0.55
    assert shifted_kernel(BONE, shift, soft=False).f_cut == BONE.f_cut
    assert shifted_kernel(BONE, shift, soft=False).tail_fraction == 0.12
    assert shifted_kernel(SOFT, FormationShift(), soft=True) == SOFT


def test_hu_offset_shift_raises_brain_hu_by_its_value_with_the_same_labels(tmp_path):
    base_record, base_hu, base_label = _render(tmp_path, "base")
    record, hu, label = _render(tmp_path, "offset", {"hu_offset": 10.0})
    assert label == base_label
    brain = (base_hu > 0) & (base_hu < 80)
    assert brain.sum() > 1000
    assert float(np.mean(hu[brain] - base_hu[brain])) == pytest.approx(10.0, abs=0.5)
    assert record["acquisition"]["hu_offset"] == pytest.approx(base_record["acquisition"]["hu_offset"] + 10.0, abs=0.011)
    assert record["acquisition"]["formation_shift"]["hu_offset"] == 10.0
    assert "formation_shift" not in base_record["acquisition"]


def test_neutral_shift_keeps_pixels_and_other_shifts_change_them(tmp_path):
    _, base_hu, _ = _render(tmp_path, "base")
    _, neutral_hu, _ = _render(tmp_path, "neutral", {})
    np.testing.assert_array_equal(neutral_hu, base_hu)
    for name, shift in (("ssp", {"ssp_blur_mm": 2.5}), ("kernel", {"soft_f_cut": 0.7}), ("dose", {"dose_factor": 0.3})):
        _, hu, _ = _render(tmp_path, name, shift)
        assert float(np.mean(np.abs(hu - base_hu))) > 0.5, name


def test_noise_sd_of_the_record_follows_the_dose():
    from ichct.pipeline.synth.cohort import plan_cohort, plan_patient

    base = plan_patient(_config(), plan_cohort(_config())[0]).studies[0].protocol.sigma_soft_hu
    shifted_config = _config({"dose_factor": 0.25})
    shifted = plan_patient(shifted_config, plan_cohort(shifted_config)[0]).studies[0].protocol.sigma_soft_hu
    assert shifted == pytest.approx(2.0 * base)


def test_formation_ranges_vary_each_study_without_moving_anatomy_or_labels(tmp_path):
    from ichct.pipeline.synth.config import DEFAULT_FORMATION_VARIETY, FormationRanges

    base = SynthConfig(n_patients=3, seed=5, matrix=48, slices=6, follow_up_fraction=1.0, compression_mix={"none": 1.0})
    varied = replace(base, formation_ranges=DEFAULT_FORMATION_VARIETY)
    assert isinstance(varied.formation_ranges, FormationRanges)
    base_cohort = generate_cohort(base, tmp_path / "base", workers=1)
    cohort = generate_cohort(varied, tmp_path / "varied", workers=1)
    for before, after in zip(base_cohort["studies"], cohort["studies"]):
        assert (tmp_path / "varied" / after["label"]).read_bytes() == (tmp_path / "base" / before["label"]).read_bytes()
        shift = after["acquisition"]["formation_shift"]
        for key, (low, high) in DEFAULT_FORMATION_VARIETY.items():
            assert low <= shift[key] <= high, key
    shifts = [tuple(s["acquisition"]["formation_shift"].values()) for s in cohort["studies"]]
    assert len(shifts) == 6 and len(set(shifts)) == 6  # a patient's follow-up draws its own
    # the same seed draws the same formations; the pixels follow them
    again = generate_cohort(varied, tmp_path / "again", workers=2)
    assert [s["acquisition"] for s in again["studies"]] == [s["acquisition"] for s in cohort["studies"]]
    series = cohort["studies"][0]["series_dir"]
    hu = read_dicom_series(tmp_path / "varied" / series, workers=1).hu_volume
    base_hu = read_dicom_series(tmp_path / "base" / series, workers=1).hu_volume
    assert float(np.mean(np.abs(np.asarray(hu, dtype=float) - np.asarray(base_hu, dtype=float)))) > 0.5


def test_formation_ranges_keep_the_cohorts_own_shift_for_settings_they_do_not_name():
    from ichct.pipeline.synth.cohort import study_formation

    config = SynthConfig(n_patients=1, formation={"soft_f_cut": 0.6}, formation_ranges={"hu_offset": [1, 2]})
    shift = study_formation(config, 0, 1)
    assert shift.soft_f_cut == 0.6 and 1 <= shift.hu_offset <= 2
    assert config.parameters()["formation_ranges"] == {"hu_offset": [1.0, 2.0]}
    assert "formation_ranges" not in default_cohort().parameters()


@pytest.mark.parametrize(("values", "message"), [
    ({}, "non-empty mapping"),
    ({"tail_mm": [0.0, 1.0]}, "formation.tail_mm must be within"),
    ({"hu_offset": [float("nan"), 1]}, "formation_ranges.hu_offset"),
    ({"hu_offset": ["a", 1]}, "formation_ranges.hu_offset must be [low, high], two numbers"),
])
def test_bad_formation_ranges_raise_an_input_error_naming_the_key(values, message):
    with pytest.raises(InputError, match=re.escape(message)):
        SynthConfig(n_patients=1, formation_ranges=values)


# ----------------------------------------------------------------------------------------------
# the benchmark's table (the end-to-end run evaluates two bundles: minutes, so it lives in benchmarks/)


def _fake_metrics(specificity: float, auc: float, dice: float) -> dict:
    def ci(value):
        return {"value": value, "ci_low": value - 0.05, "ci_high": value + 0.05, "n_boot_valid": 2000}

    any_rule = {"specificity": ci(specificity), "roc_auc": ci(auc)}
    return {"model": {"runs": {"cls": {"rule": {"name": "consecutive"}}, "seg": {"rule": {"name": "seg_volume"}}}},
            "ct_level": {"any": {"consecutive": any_rule, "seg_volume": any_rule,
                                 "seg_peak": {"specificity": ci(0.93), "roc_auc": ci(0.96)},
                                 "fused": {"specificity": ci(0.99), "roc_auc": ci(0.97)}}},
            "segmentation": {"any": {"dice_positive": ci(dice), "lesion_sensitivity": ci(0.58), "fp_per_scan": ci(0.4)}}}


def test_benchmark_table_judges_each_goal_on_the_point_estimate():
    negatives = np.array([0.0] * 17 + [2.0, 2.5, 3.0])
    rows = domain_shift.collect_metrics(_fake_metrics(0.96, 0.90, 0.70), negatives)
    by_key = {}
    for row in rows:
        by_key.setdefault(row["key"], []).append(row)
    # each bundle's stored rule, the segmenter's peak probability beside its volume, the rule on both
    assert [r["rule"] for r in by_key["auc_any"]] == ["consecutive", "seg_volume", "seg_peak", "fused"]
    assert [r["goal"] for r in by_key["specificity"]] == ["PASS", "PASS", "FAIL", "PASS"]
    assert [r["goal"] for r in by_key["auc_any"]] == ["FAIL", "FAIL", "PASS", "PASS"]
    assert by_key["dice_with_blood"][0]["goal"] == "PASS"
    p95 = by_key["false_blood_p95_ml"][0]
    assert p95["value"] == pytest.approx(np.percentile(negatives, 95)) and p95["goal"] == "FAIL"
    assert p95["ci_low"] <= p95["value"] <= p95["ci_high"]
    assert by_key["false_blood_median_ml"][0]["goal"] is None and by_key["false_blood_median_ml"][0]["value"] == 0.0
    # the lesion goal: sensitivity >= 0.6 at <= 0.5 false-positive lesions per scan
    assert by_key["lesion_sensitivity"][0]["goal"] == "FAIL" and by_key["fp_per_scan"][0]["goal"] == "PASS"
    table = domain_shift.markdown_table(rows)
    assert table.count("\n") == len(rows) + 1
    assert "| Dice on studies with blood | 0.700 | 0.650 - 0.750 | >= 0.65 | PASS |" in table


def test_benchmark_reads_negative_volumes_from_per_case(tmp_path):
    path = tmp_path / "per_case.csv"
    path.write_text("study_id,label:any,seg:any:vol_pred_ml\na,0,1.5\nb,1,20\nc,0,0\n", encoding="utf-8")
    assert domain_shift.negative_volumes(path).tolist() == [1.5, 0.0]
    assert math.isnan(domain_shift.bootstrap_percentile(np.array([]), 95)["value"])


def test_benchmark_cohort_is_held_out_and_shifted():
    config = domain_shift.shifted_config(24, 2026)
    assert config.seed != default_cohort().seed and config.follow_up_fraction == 0.0
    assert not set(config.thickness_choices_mm) & set(default_cohort().thickness_choices_mm)
    assert config.formation.soft_f_cut != SOFT.f_cut and config.formation.hu_offset != 0.0
    control = domain_shift.shifted_config(24, 2026, shifted=False)
    assert control.formation is None and control.thickness_choices_mm == default_cohort().thickness_choices_mm
