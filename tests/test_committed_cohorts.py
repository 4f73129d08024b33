"""Every committed synthetic cohort (``COMMITTED_COHORTS``): its manifest ``data_manifests/<name>.json``
holds exactly the studies ``ichct synth --cohort NAME`` plans, split as recorded, with paths into
``data/<name>/``. Planning only: nothing is rendered (the default cohort is regenerated end to end
in test_manifest_synth_default.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ichct.pipeline.manifests import check_documents, read_manifest
from ichct.pipeline.manifests.source_synth import SYNTH_SALT
from ichct.pipeline.synth import COMMITTED_COHORTS, committed_cohort, planned_studies
from ichct.transforms.dicom import patient_key, salt_id

REPO = Path(__file__).resolve().parents[1]


def test_every_committed_manifest_is_a_committed_cohort():
    on_disk = {p.stem for p in (REPO / "data_manifests").glob("synth_*.json")}
    assert on_disk == set(COMMITTED_COHORTS)


@pytest.mark.parametrize("name", sorted(COMMITTED_COHORTS))
def test_manifest_holds_exactly_the_planned_studies(name):
    cohort = committed_cohort(name)
    doc = json.loads((REPO / cohort.manifest).read_text(encoding="utf-8"))
    planned = {p["study_uid"]: p for p in planned_studies(cohort.config)}
    got = doc["training"] + doc["test"]
    assert sorted(e["study_uid"] for e in got) == sorted(planned)
    for e in got:
        p = planned[e["study_uid"]]
        assert e["series_uid"] == p["series_uid"] and e["ct_labels"]["any"] == int(p["positive"])
        assert e["patient_key"] == patient_key(p["patient_id"], SYNTH_SALT)
        assert e["image"] == f"../{cohort.directory}/{p['series_dir']}"
        assert e["label"] == f"../{cohort.directory}/{p['label']}" and e["label_values"] == "ichct"
        assert len(e["slice_labels"]) == cohort.config.slices


@pytest.mark.parametrize("name", sorted(COMMITTED_COHORTS))
def test_manifest_header_matches_the_recorded_split(name):
    cohort = committed_cohort(name)
    doc = json.loads((REPO / cohort.manifest).read_text(encoding="utf-8"))
    assert doc["name"] == name and doc["source"] == "synth" and doc["salt_id"] == salt_id(SYNTH_SALT)
    assert doc["num_folds"] == cohort.split["folds"] and doc["seed"] == cohort.split["seed"]
    assert doc["test_fraction"] == cohort.split["test_fraction"]
    command = doc["created_by"]["command"]
    assert f"--root {cohort.directory} --out {cohort.manifest}" in command
    report = check_documents([read_manifest(REPO / cohort.manifest)], verify_files=False, cache=False)
    assert report.ok, report.problems


def test_committed_cohorts_share_no_patient():
    keys = {}
    for name, cohort in COMMITTED_COHORTS.items():
        doc = json.loads((REPO / cohort.manifest).read_text(encoding="utf-8"))
        keys[name] = {e["patient_key"] for e in doc["training"] + doc["test"]}
    names = sorted(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not keys[a] & keys[b], (a, b)


def test_committed_cohort_is_a_copy_and_names_the_choices():
    a = committed_cohort("synth_large")
    a.config.n_patients = 1
    assert COMMITTED_COHORTS["synth_large"].config.n_patients == 180
    with pytest.raises(KeyError, match="synth_default"):
        committed_cohort("nope")
