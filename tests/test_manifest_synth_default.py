"""The default synthetic cohort and its committed split manifest ``data_manifests/synth_default.json``.

The DICOM is not committed: ``ichct synth --default-cohort`` regenerates it byte for byte. These
tests prove that the committed manifest is what building it anew gives (on a machine with another
salt), that it passes ``ichct manifest check`` on regenerated data, and that the loader serves it.
The cheap tests compare it with the cohort plan (nothing rendered); the end-to-end ones regenerate
the whole default cohort once per module (about half a minute on two cores).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import TEST_SALT
from test_manifest_replicas import ichct_env, synth_manifest, synth_replica  # noqa: F401 - fixtures

from ichct.pipeline.manifests import check_documents, load_manifest, read_manifest
from ichct.pipeline.manifests.build import manifest_path
from ichct.pipeline.manifests.source_synth import SYNTH_SALT
from ichct.pipeline.synth import DEFAULT_COHORT, DEFAULT_COHORT_DIR, DEFAULT_COHORT_MANIFEST, DEFAULT_COHORT_NAME, planned_studies
from ichct.pipeline.synth.config import DEFAULT_MANIFEST_SPLIT
from ichct.transforms.dicom import salt_id

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / DEFAULT_COHORT_MANIFEST
# The documented command (data_manifests/README.md), run from the repository root.
BUILD_COMMAND = (f"manifest build --source synth --root {DEFAULT_COHORT_DIR} --out {DEFAULT_COHORT_MANIFEST} "
                 f"--folds {DEFAULT_MANIFEST_SPLIT['folds']} --test-fraction {DEFAULT_MANIFEST_SPLIT['test_fraction']:g} "
                 f"--seed {DEFAULT_MANIFEST_SPLIT['seed']} --name {DEFAULT_COHORT_NAME}")


def committed() -> dict:
    return json.loads(COMMITTED.read_text(encoding="utf-8"))


def entries(doc: dict) -> list[dict]:
    return doc["training"] + doc["test"]


def without_version(doc: dict) -> dict:
    """The manifest less ``created_by.ichct_version`` (a release does not change the data or split)."""
    out = json.loads(json.dumps(doc))
    out["created_by"].pop("ichct_version")
    return out


# ---------------------------------------------------------------------------------------------
# cheap: the committed manifest against the default config's plan (its studies:
# test_committed_cohorts.py, for every committed cohort)
# ---------------------------------------------------------------------------------------------


def test_committed_manifest_header_and_split():
    doc = committed()
    assert doc["name"] == DEFAULT_COHORT_NAME and doc["source"] == "synth"
    assert doc["salt_id"] == salt_id(SYNTH_SALT)  # the public salt of synthetic identifiers
    assert doc["created_by"]["command"] == "ichct " + BUILD_COMMAND
    assert doc["num_folds"] == DEFAULT_MANIFEST_SPLIT["folds"] and doc["seed"] == DEFAULT_MANIFEST_SPLIT["seed"]
    assert doc["test_fraction"] == DEFAULT_MANIFEST_SPLIT["test_fraction"]
    n = len(planned_studies(DEFAULT_COHORT))
    assert doc["numTraining"] + doc["numTest"] == n and doc["numTest"] == round(0.2 * n)
    assert {e["fold"] for e in doc["training"]} == set(range(doc["num_folds"]))
    for split in (doc["test"], *([e for e in doc["training"] if e["fold"] == k] for k in range(doc["num_folds"]))):
        assert any(e["ct_labels"]["any"] == 1 for e in split) and any(e["ct_labels"]["any"] == 0 for e in split)
    # schema and leakage (patients, series) without the files
    report = check_documents([read_manifest(COMMITTED)], verify_files=False, cache=False)
    assert report.ok, report.problems


def test_manifest_paths_are_relative_within_the_folder_above_the_manifest(tmp_path):
    base = tmp_path / "repo" / "data_manifests"
    assert manifest_path(base / "x.links" / "a", base) == "x.links/a"
    assert manifest_path(tmp_path / "repo" / "data" / "c" / "s", base) == "../data/c/s"
    assert manifest_path(tmp_path / "elsewhere" / "s", base) == str(tmp_path / "elsewhere" / "s")
    assert manifest_path(Path("/srv/data/s"), Path("/manifests")) == "/srv/data/s"  # not relative to "/"


def test_other_cohort_json_keeps_the_user_salt_and_links(synth_manifest):  # noqa: F811
    """Only `ichct synth` output counts as made-up identifiers; other cohort.json files are data."""
    doc = json.loads(synth_manifest.read_text(encoding="utf-8"))
    assert doc["salt_id"] == salt_id(TEST_SALT) != salt_id(SYNTH_SALT)
    assert all(e["image"].startswith("synth.links/") for e in entries(doc))


# ---------------------------------------------------------------------------------------------
# end to end: regenerate the default cohort, rebuild, check, load
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """A fresh "checkout": the committed manifest, the default cohort regenerated with the CLI, and
    the manifest rebuilt with the documented command (another salt than anyone's)."""
    from ichct.pipeline.cli import main

    repo = tmp_path_factory.mktemp("checkout")
    (repo / "data_manifests").mkdir()
    shutil.copy2(COMMITTED, repo / "data_manifests" / "committed.json")
    log = logging.getLogger("ichct")
    saved = (list(log.handlers), log.level, log.propagate)  # main() configures the ichct logger
    try:
        with ichct_env(repo), pytest.MonkeyPatch.context() as mp:
            mp.chdir(repo)
            assert main(["synth", "--default-cohort", "-q"]) == 0
            assert main(shlex.split(BUILD_COMMAND) + ["-q"]) == 0
    finally:
        log.handlers[:], log.level, log.propagate = saved
    return repo


@pytest.mark.slow
def test_rebuilding_reproduces_the_committed_manifest(regenerated):
    rebuilt = json.loads((regenerated / DEFAULT_COHORT_MANIFEST).read_text(encoding="utf-8"))
    assert without_version(rebuilt) == without_version(committed())
    assert not list((regenerated / "data_manifests").glob("*.links")), "a link folder was made"


@pytest.mark.slow
def test_committed_manifest_passes_the_check_under_another_salt(regenerated, run_cli, monkeypatch):
    monkeypatch.setenv("ICHCT_CACHE_DIR", str(regenerated / "hash-cache"))
    monkeypatch.setenv("ICHCT_SALT", "a-salt-that-built-nothing")
    monkeypatch.chdir(regenerated)
    result = run_cli("manifest", "check", "data_manifests/committed.json")
    assert result.code == 0, result.out + result.err
    assert "60 patient(s)" in result.out and "OK: no problems" in result.out


@pytest.mark.slow
def test_loader_serves_fold_0(regenerated, monkeypatch):
    monkeypatch.setenv("ICHCT_CACHE_DIR", str(regenerated / "hash-cache"))
    manifest = regenerated / "data_manifests" / "committed.json"
    # the checks load_manifest runs first are the CLI's (test above); skipped here to save time
    train = load_manifest(manifest, "training", fold=0, check=False)
    val = load_manifest(manifest, "validation", fold=0, check=False)
    test = load_manifest(manifest, "test", check=False)
    doc = committed()
    assert len(train) + len(val) == doc["numTraining"] and len(test) == doc["numTest"]
    assert val and {e["fold"] for e in val} == {0} and 0 not in {e["fold"] for e in train}
    assert not {e["patient_key"] for e in train} & {e["patient_key"] for e in val}
    cohort_root = (regenerated / DEFAULT_COHORT_DIR).resolve()
    for e in train + val + test:
        for key in ("image", "label"):
            p = Path(e[key])
            assert p.is_absolute() and p.exists() and os.path.normpath(p) == str(p)
            assert p.resolve().is_relative_to(cohort_root)
