"""Every committed synthetic cohort (``COMMITTED_COHORTS``): its manifest ``data_manifests/<name>.json``
holds exactly the studies ``ichct synth --cohort NAME`` plans, split as recorded, with paths into
``data/<name>/``. Planning only: nothing is rendered (the default cohort is regenerated end to end
in test_manifest_synth_default.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ichct.pipeline.manifests import check_documents, read_manifest
from ichct.pipeline.manifests.source_synth import SYNTH_SALT
from ichct.pipeline.synth import COMMITTED_COHORTS, committed_cohort, planned_studies
from ichct.transforms.dicom import patient_key, salt_id

REPO = Path(__file__).resolve().parents[1]


def _merged_manifests() -> list[Path]:
    """The committed manifests that merge committed cohorts' (``ichct manifest merge``)."""
    return [p for p in sorted((REPO / "data_manifests").glob("synth_*.json"))
            if "merged_from" in json.loads(p.read_text(encoding="utf-8"))]


def test_every_committed_manifest_is_a_committed_cohort():
    on_disk = {p.stem for p in (REPO / "data_manifests").glob("synth_*.json")}
    assert on_disk - {p.stem for p in _merged_manifests()} == set(COMMITTED_COHORTS)


@pytest.mark.parametrize("path", _merged_manifests(), ids=lambda p: p.stem)
def test_merged_manifest_is_its_inputs_merged_again(path, tmp_path):
    from ichct.pipeline.manifests import merge_manifests
    from ichct.pipeline.core.files import sha256_file

    doc = json.loads(path.read_text(encoding="utf-8"))
    inputs = [path.parent / m["manifest"] for m in doc["merged_from"]]
    assert [sha256_file(p) for p in inputs] == [m["sha256"] for m in doc["merged_from"]]  # merged from these
    assert {p.stem for p in inputs} <= set(COMMITTED_COHORTS)
    again = merge_manifests(inputs, tmp_path / path.name, verify_files=False, verify_pixels=False, cache=False,
                            command=doc["created_by"]["command"])
    assert again["test_fraction"] == doc["test_fraction"] and again["description"] == doc["description"]

    def where(base: Path, entry: dict) -> dict:
        return dict(entry, **{k: os.path.normpath(base / entry[k]) for k in ("image", "label")})

    for split in ("training", "test"):  # the same entries, whose paths lead to the same files
        assert [where(tmp_path, e) for e in again[split]] == [where(path.parent, e) for e in doc[split]]


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
