"""Cohort planning (cheap mode, nothing rendered): prevalence, follow-ups, settings validation."""

from __future__ import annotations

import pytest

from ichct.pipeline.synth import SUBTYPES, SynthConfig, expected_prevalence, plan_cohort, plan_patient
from ichct.pipeline.synth.cohort import in_stack


def test_subtype_prevalence_follows_the_request():
    config = SynthConfig(n_patients=400, seed=3)
    plan = plan_cohort(config)
    expected = expected_prevalence(config)
    n = len(plan)
    assert sum(a.positive for a in plan) / n == pytest.approx(expected["any"], abs=0.01)
    assert sum(a.positive for a in plan) / n == pytest.approx(0.5, abs=0.01)
    for name in SUBTYPES:
        share = sum(name in a.subtypes for a in plan) / n
        assert share == pytest.approx(expected[name], abs=0.04), name
    assert all(a.subtypes for a in plan if a.positive)
    assert not any(a.subtypes for a in plan if not a.positive)
    assert sum(len(a.subtypes) > 1 for a in plan) > 0.25 * sum(a.positive for a in plan), "mixtures of subtypes"


def test_custom_prevalence():
    config = SynthConfig(n_patients=300, seed=5, positive_fraction=0.3, subtype_prob={"epidural": 0.5, "subdural": 0.0})
    plan = plan_cohort(config)
    assert sum(a.positive for a in plan) == 90
    assert not any("subdural" in a.subtypes for a in plan)
    share = sum("epidural" in a.subtypes for a in plan) / len(plan)
    assert share == pytest.approx(expected_prevalence(config)["epidural"], abs=0.04)


def test_follow_up_studies_make_patient_level_splitting_matter():
    plan = plan_cohort(SynthConfig(n_patients=8, seed=1))
    assert sum(a.follow_up for a in plan) == 2
    a = next(a for a in plan if a.follow_up)
    patient = plan_patient(SynthConfig(n_patients=8, seed=1), a)
    assert len(patient.studies) == 2
    first, second = patient.studies
    assert first.study_uid != second.study_uid and first.date < second.date
    assert [les.subtype for les in first.lesions] == [les.subtype for les in second.lesions]


def test_small_cohorts_still_hold_every_case():
    plan = plan_cohort(SynthConfig(n_patients=5, seed=0, tilt_fraction=0.2, bone_fraction=0.2, scout_fraction=0.2))
    assert sum(a.positive for a in plan) in (2, 3)
    assert sum(a.tilt for a in plan) == 1 and sum(a.bone for a in plan) == 1 and sum(a.scout for a in plan) == 1
    assert sum(a.follow_up for a in plan) >= 1


def test_lesions_are_placed_inside_the_stack():
    config = SynthConfig(n_patients=40, seed=9, slices=16)
    for a in plan_cohort(config):
        patient = plan_patient(config, a)
        study = patient.studies[0]
        for lesion in study.lesions:
            assert in_stack(study.pose, study.layout, lesion.geometry["anchor"]), (a.index, lesion.summary())


def test_plan_is_deterministic():
    config = SynthConfig(n_patients=20, seed=4)
    assert plan_cohort(config) == plan_cohort(SynthConfig(n_patients=20, seed=4))
    assert plan_cohort(config) != plan_cohort(SynthConfig(n_patients=20, seed=5))


def test_patient_identifiers_carry_the_seed():
    """Two cohorts of other seeds never share a made-up patient ID (the leakage guard would see one person)."""
    default = [a.patient_id for a in plan_cohort(SynthConfig(n_patients=3, seed=0))]
    other = [a.patient_id for a in plan_cohort(SynthConfig(n_patients=3, seed=2026))]
    assert default == ["SYN0001", "SYN0002", "SYN0003"]  # the default cohort's, as the docs show them
    assert other == ["SYN2026-0001", "SYN2026-0002", "SYN2026-0003"]
    assert plan_cohort(SynthConfig(n_patients=1, seed=7))[0].patient_name == "SYNTH^7-0001"


@pytest.mark.parametrize("kwargs", [
    {"n_patients": 0}, {"matrix": 16}, {"slices": 2}, {"positive_fraction": 1.5}, {"seed": -1},
    {"subtype_prob": {"bogus": 0.1}}, {"subtype_prob": {"epidural": 2.0}}, {"compression_mix": {"zip": 1.0}},
    {"thickness_choices_mm": ()},
])
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)
