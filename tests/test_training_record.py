"""Training records (``train_patients.json``) and the split check evaluation runs against them."""

from __future__ import annotations

import json

from ichct.pipeline.train.record import check_split, manifest_salt_id, training_record


def _entry(patient: str, study: str, series: str) -> dict:
    return {"patient_key": patient, "study_uid": study, "series_uid": series}


TRAIN = [_entry("p1", "1.1", "1.1.1"), _entry("p1", "1.2", "1.2.1"), _entry("p2", "2.1", "2.1.1")]
VAL = [_entry("p3", "3.1", "3.1.1")]


def test_record_holds_keys_uids_salt_and_validation(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"salt_id": "aaaaaaaaaaaa", "training": [], "test": []}))
    rec = training_record(manifest, "sha", 0, TRAIN, VAL)
    assert rec["salt_id"] == "aaaaaaaaaaaa" == manifest_salt_id(manifest)
    assert rec["patient_keys"] == ["p1", "p2"] and rec["study_uids"] == ["1.1", "1.2", "2.1"]
    assert rec["series_uids"] == ["1.1.1", "1.2.1", "2.1.1"]
    assert rec["validation"] == {"patient_keys": ["p3"], "study_uids": ["3.1"], "series_uids": ["3.1.1"]}
    assert manifest_salt_id(tmp_path / "missing.json") is None


def test_same_salt_catches_another_study_of_a_training_patient():
    rec = training_record("m.json", "sha", 0, TRAIN, VAL) | {"salt_id": "s1"}
    follow_up = [_entry("p1", "1.9", "1.9.1"), _entry("p9", "9.1", "9.1.1"), _entry("p3", "3.1", "3.1.1")]
    check = check_split(rec, follow_up, "s1")
    assert check.leaked == {"p1"} and check.validation == {"p3"} and check.notes == []


def test_other_salt_recognises_studies_by_uid_and_says_what_it_cannot_see():
    rec = training_record("m.json", "sha", 0, TRAIN, VAL) | {"salt_id": "s1"}
    resalted = [_entry("x1", "1.1", "1.1.1"), _entry("x1b", "1.9", "1.9.1"), _entry("x3", "3.1", "3.1.1")]
    check = check_split(rec, resalted, "s2", where="runs/seg")
    assert check.leaked == {"x1"} and check.validation == {"x3"}  # x1b: a follow-up no salt-free field reveals
    assert len(check.notes) == 1 and "runs/seg" in check.notes[0] and "s1" in check.notes[0]
    assert "another study of a training patient cannot be" in check.notes[0]


def test_old_record_with_keys_only_still_guards_the_same_salt():
    old = {"manifest": "m.json", "fold": 0, "patient_keys": ["p1", "p2"]}
    assert check_split(old, [_entry("p2", "7", "7.1")], "s1").leaked == {"p2"}
    other = check_split(old | {"salt_id": "s1"}, [_entry("q2", "7", "7.1")], "s2")
    assert other.leaked == set() and "cannot be recognised at all" in other.notes[0]
