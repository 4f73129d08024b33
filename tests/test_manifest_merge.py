"""``ichct manifest merge``: several manifests as one, each study in its own split and fold; leaks across
the inputs, mismatched headers and a study in two inputs refused with nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_manifest_replicas import hash_cache_env, synth_manifest, synth_replica  # noqa: F401

from ichct.pipeline.manifests import load_manifest, merge_manifests, validate_manifest
from ichct.pipeline.manifests.errors import ManifestError


def halves(src: Path, folder: Path) -> tuple[Path, Path]:
    """The manifest ``src`` cut in two by patient (every other patient key), written under ``folder``
    with paths rewritten to stay valid there (the merge must rewrite them again). Paths are not
    resolved: they lead through the manifest's pseudonymous link folder, which hides patient names."""
    doc = json.loads(src.read_text())
    keys = sorted({e["patient_key"] for e in doc["training"] + doc["test"]})
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for part, chosen in (("a", set(keys[::2])), ("b", set(keys[1::2]))):
        half = dict(doc, name=f"half_{part}")
        for split in ("training", "test"):
            half[split] = [dict(e, image=os.path.relpath(os.path.normpath(src.parent / e["image"]), folder),
                                label=os.path.relpath(os.path.normpath(src.parent / e["label"]), folder))
                           for e in doc[split] if e["patient_key"] in chosen]
        half["numTraining"], half["numTest"] = len(half["training"]), len(half["test"])
        path = folder / f"half_{part}.json"
        path.write_text(json.dumps(half, indent=1))
        out.append(path)
    return out[0], out[1]


def places(doc: dict) -> dict[str, object]:
    return {e["series_uid"]: e.get("fold", "test") for e in doc["training"] + doc["test"]}


def test_merge_keeps_every_study_in_its_split_and_fold(run_cli, tmp_path, synth_manifest):
    a, b = halves(synth_manifest, tmp_path / "in")
    out = tmp_path / "elsewhere" / "merged.json"
    result = run_cli("manifest", "merge", a, b, "--out", out, "--name", "both")
    assert result.code == 0, (result.out, result.err)
    assert "from 2 manifests" in result.out
    merged, original = json.loads(out.read_text()), json.loads(synth_manifest.read_text())
    validate_manifest(merged)
    assert places(merged) == places(original)  # the halves' folds and test sets, unchanged
    assert merged["name"] == "both" and merged["num_folds"] == original["num_folds"]
    assert merged["numTraining"] == len(original["training"]) and merged["numTest"] == len(original["test"])
    assert [m["manifest"] for m in merged["merged_from"]] == ["../in/half_a.json", "../in/half_b.json"]
    assert "ichct manifest merge" in merged["created_by"]["command"]
    # relative paths, rewritten for the new folder, reach the same files
    assert all(not e["image"].startswith("/") for e in merged["training"])
    got = {e["series_uid"]: e["image"] for e in load_manifest(out, "all")}  # the same links, not resolved
    want = {e["series_uid"]: e["image"] for e in load_manifest(synth_manifest, "all")}
    assert got == want
    fold0 = {e["series_uid"] for e in load_manifest(out, "validation", fold=0)}
    assert fold0 == {e["series_uid"] for e in load_manifest(synth_manifest, "validation", fold=0)}


def test_a_patient_in_two_splits_across_the_inputs_is_refused(run_cli, tmp_path, synth_manifest):
    a, b = halves(synth_manifest, tmp_path)
    doc_a, doc_b = json.loads(a.read_text()), json.loads(b.read_text())
    entry_a = doc_a["training"][0]
    moved = next(e for e in doc_b["training"] if e["fold"] != entry_a["fold"])
    moved["patient_key"] = entry_a["patient_key"]  # a patient of a, in another fold of b
    b.write_text(json.dumps(doc_b))
    out = tmp_path / "merged.json"
    result = run_cli("manifest", "merge", a, b, "--out", out, "--no-pixels")
    assert result.code == 1
    assert moved["patient_key"] in result.out and "not written" in result.err
    assert all("holds" not in line for line in result.out.splitlines())  # the leak, not a broken entry
    assert not out.exists() and not list(tmp_path.glob(".merged.json*"))


def test_the_same_series_in_two_inputs_is_refused(tmp_path, synth_manifest):
    a, _ = halves(synth_manifest, tmp_path)
    copy = tmp_path / "copy.json"
    copy.write_text(a.read_text())
    try:
        merge_manifests([a, copy], tmp_path / "merged.json", verify_pixels=False)
    except ManifestError as exc:
        lines = exc.problems
    else:
        raise AssertionError("merging a manifest with its copy was accepted")
    uid = json.loads(a.read_text())["training"][0]["series_uid"]
    assert any(uid in line and "both" in line for line in lines), lines
    assert not (tmp_path / "merged.json").exists()


def test_inputs_that_differ_in_folds_salt_or_labels_are_refused(run_cli, tmp_path, synth_manifest):
    a, b = halves(synth_manifest, tmp_path)
    doc_b = json.loads(b.read_text())
    doc_b["num_folds"] = doc_b["num_folds"] + 1
    doc_b["salt_id"] = "0123456789ab"
    b.write_text(json.dumps(doc_b))
    result = run_cli("manifest", "merge", a, b, "--out", tmp_path / "merged.json")
    assert result.code == 1
    assert "num_folds" in result.out and "fold k of one" in result.out
    assert "salt_id" in result.out and "could not be recognised" in result.out
    assert not (tmp_path / "merged.json").exists()


def test_bad_merge_arguments(run_cli, tmp_path, synth_manifest):
    a, _ = halves(synth_manifest, tmp_path)
    assert run_cli("manifest", "merge", a, "--out", tmp_path / "m.json").code == 2  # one input
    assert run_cli("manifest", "merge", a, a, "--out", tmp_path / "m.txt").code == 2  # not .json
    missing = run_cli("manifest", "merge", a, tmp_path / "nope.json", "--out", tmp_path / "m.json")
    assert missing.code == 1 and "nope.json" in missing.out and "not found" in missing.out
