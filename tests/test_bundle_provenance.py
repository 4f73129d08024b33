"""What a bundle says its model was trained on: metadata.json, docs/README.md and docs/data_license.txt
describe the run's own manifest (name, source, sha256, fold), never the synthetic default cohort
unless it is that; the training-budget wording; ``package --evaluation`` of a run's evaluation.

Built on the shared tiny cohort and 1-epoch runs of :mod:`eval_helpers` (no training here).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from eval_helpers import eval_setup

from ichct.pipeline.bundle.docs import (BUILD_SCRIPT, COMMITTED_INFERENCE, COMMITTED_MAX_FALSE_BLOOD_ML,
                                        COMMITTED_SLICE_GATE, COMMITTED_SW_OVERLAP,
                                        DATA_LICENSE, DATA_SOURCE, INTENDED_USE, SEG_FINETUNES,
                                        committed_data_license, committed_data_source, data_license, data_source,
                                        describe_training_data)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = REPO / "data_manifests" / "synth_default.json"
SYNTH_WORDS = ("trained on the synthetic default cohort", "--default-cohort", "synth_default")


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_on(setup: dict, tmp: Path, manifest_changes: dict[str, Any] | None = None,
            config_changes: dict[str, Any] | None = None, name: str = "custom.json") -> Path:
    """A copy of the 1-epoch cls run that records a copy of its manifest with ``manifest_changes`` applied."""
    doc = json.loads(Path(setup["manifest"]).read_text())
    doc.update(manifest_changes or {})
    manifest = tmp / name
    manifest.write_text(json.dumps(doc, indent=1))
    run = tmp / "run"
    shutil.copytree(setup["cls"], run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["manifest"], cfg["manifest_sha256"] = str(manifest.resolve()), _sha(manifest)
    cfg["config"].update(config_changes or {})
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    return run


def _docs(bundle: Path) -> tuple[dict, str, str]:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    return meta, (bundle / "docs" / "README.md").read_text(), (bundle / "docs" / "data_license.txt").read_text()


# --------------------------------------------------------------------------------------------
# describe_training_data
# --------------------------------------------------------------------------------------------


def test_default_manifest_keeps_the_synthetic_wording():
    rc = {"kind": "cls", "fold": 0, "manifest": str(DEFAULT_MANIFEST), "manifest_sha256": _sha(DEFAULT_MANIFEST)}
    td = describe_training_data(rc)
    assert td["verified"] and td["synthetic"] and td["default"]
    assert td["source"] == "synth" and td["name"] == "synth_default" and td["manifest"] == "synth_default.json"
    assert td["committed"] == "synth_default"
    assert data_source(td) == DATA_SOURCE and data_license(td) == DATA_LICENSE
    assert "ichct synth --default-cohort" in DATA_SOURCE and "data_manifests/synth_default.json" in DATA_LICENSE
    # a description stored before `committed` existed still reads as the default cohort
    old = {k: v for k, v in td.items() if k != "committed"}
    assert data_source(old) == DATA_SOURCE


def test_committed_bundles_name_the_cohort_they_were_trained_on():
    """Each committed bundle names the cohort bundles/build_bundles.sh trains it on (the segmenter
    synth_large, the classifier the default cohort); the manifest path is relative to the bundle folder."""
    for kind, name in (("seg", "ich_ct_segmentation"), ("cls", "ich_ct_classification")):
        cohort = BUILD_SCRIPT[kind]["cohort"]
        b = REPO / "bundles" / name
        committed = json.loads((b / "models" / "run_config.json").read_text())
        td = describe_training_data(committed, base=b)
        assert td["verified"] and td["committed"] == cohort
        meta = json.loads((b / "configs" / "metadata.json").read_text())
        assert meta["data_source"] == committed_data_source(cohort) and meta["intended_use"] == INTENDED_USE
        assert (b / "docs" / "data_license.txt").read_text() == committed_data_license(cohort)
        readme = (b / "docs" / "README.md").read_text()
        assert "bash bundles/build_bundles.sh" in readme and f"--manifest data_manifests/{cohort}.json" in readme
        # only a model trained off the default cohort is scored on the default test split as well
        assert ("--also-evaluated default_test=" in readme) is (cohort != "synth_default")
        assert ("ichct postprocess" in readme) is (kind == "seg")
        # the segmenter is the script's three-network ensemble, and its README gives the whole recipe
        assert (len(committed.get("ensemble", {}).get("members", [])) == 1 + len(SEG_FINETUNES)) is (kind == "seg")
        assert all(step["manifest"] in readme for step in SEG_FINETUNES) is (kind == "seg")
    assert BUILD_SCRIPT["seg"]["cohort"] == "synth_large"


def test_synthetic_only_under_the_public_salt(setup, tmp_path):
    base = json.loads(Path(setup["manifest"]).read_text())

    def describe(changes: dict[str, Any], sha: str | None = None) -> dict:
        m = tmp_path / f"m{len(list(tmp_path.iterdir()))}.json"
        m.write_text(json.dumps({**base, **changes}))
        return describe_training_data({"fold": 0, "manifest": str(m), "manifest_sha256": sha or _sha(m)})

    own = describe({})  # the test cohort: `ichct synth`, public salt, not the default's name
    assert own["synthetic"] and not own["default"]
    assert describe({"name": "synth_default"})["default"]
    large = describe({"name": "synth_large"})
    assert large["committed"] == "synth_large" and not large["default"] and "synth_large" in data_license(large)
    assert "--cohort synth_large" in data_source(large) and "Not the synthetic default" not in data_source(large)
    # a synth manifest under another salt is a cohort.json not written by ichct synth: real data
    other_salt = describe({"name": "synth_default", "salt_id": "ffffffffffff"})
    assert other_salt["verified"] and not other_salt["synthetic"] and not other_salt["default"]
    assert "public synthetic salt" in data_source(other_salt)
    named_default = describe({"name": "synth_default", "source": "rsna"})
    assert not named_default["synthetic"] and not named_default["default"] and not named_default["committed"]
    # a manifest that changed since training (or is missing) is not trusted: source unknown
    changed = describe({}, sha="0" * 64)
    assert not changed["verified"] and changed["source"] is None and not changed["synthetic"]
    assert "source is unknown" in data_license(changed) and "no patient data" not in data_license(changed)
    missing = describe_training_data({"fold": 0, "manifest": str(tmp_path / "gone.json"), "manifest_sha256": "ab"})
    assert not missing["verified"] and missing["manifest"] == "gone.json"


# --------------------------------------------------------------------------------------------
# ichct bundle package
# --------------------------------------------------------------------------------------------


def test_package_describes_a_real_data_manifest(setup, run_cli, tmp_path):
    run = _run_on(setup, tmp_path, {"source": "rsna", "name": "rsna_split"}, name="rsna_split.json")
    sha = json.loads((run / "config.json").read_text())["manifest_sha256"]
    b = tmp_path / "b"
    r = run_cli("bundle", "package", run, b, "-q")
    assert r.code == 0, r.err
    meta, readme, lic = _docs(b)
    for text in (meta["data_source"], readme, lic):
        assert not any(w in text for w in SYNTH_WORDS), text
        assert "rsna_split.json" in text and "`rsna`" in text and sha in text
    assert "fold 0" in meta["data_source"]
    assert "No patient data is included or was used" not in readme and "build_bundles.sh" not in readme
    assert "Trained and tested on synthetic head CTs only" not in readme
    assert "must check the licence" in lic and "RSNA 2019" in lic
    assert "no patient data" not in lic.lower() and "synthetic head CT studies" not in lic
    assert "synthetic" not in meta["intended_use"] and meta["intended_use"].startswith("Research only")
    assert meta["changelog"] == {"0.1.0": "initial release: trained on manifest `rsna_split.json` (source `rsna`)"}
    rc = json.loads((b / "models" / "run_config.json").read_text())
    td = rc["bundle"]["training_data"]
    assert td["source"] == "rsna" and td["sha256"] == sha and td["fold"] == 0 and not td["synthetic"]

    # the stored description survives the manifest: an export made where it is gone says the same
    (tmp_path / "rsna_split.json").unlink()
    z = tmp_path / "zoo"
    assert run_cli("bundle", "export", b, z, "-q").code == 0
    meta_z, readme_z, lic_z = _docs(z)
    assert meta_z["data_source"] == meta["data_source"] and lic_z == lic and "RSNA 2019" in readme_z


def test_package_of_a_custom_synthetic_manifest(setup, run_cli, tmp_path):
    run = _run_on(setup, tmp_path, name="my_synth.json")
    b = tmp_path / "b"
    assert run_cli("bundle", "package", run, b, "-q").code == 0
    meta, readme, lic = _docs(b)
    assert "my_synth.json" in meta["data_source"] and "no patient data" in meta["data_source"]
    assert "--default-cohort" not in readme and "synth_default" not in readme and "build_bundles.sh" not in readme
    assert "synthetic head CT studies" in lic and "synth_default" not in lic
    assert "No patient data is included or was used" in readme


@pytest.mark.parametrize("budget", [None, 3.0])
def test_training_budget_wording(setup, run_cli, tmp_path, budget):
    run = _run_on(setup, tmp_path, config_changes={"max_minutes": budget})
    epochs = json.loads((run / "config.json").read_text())["config"]["epochs"]
    b = tmp_path / "b"
    assert run_cli("bundle", "package", run, b, "-q").code == 0
    readme = (b / "docs" / "README.md").read_text()
    assert "None-minute" not in readme
    if budget is None:
        assert "-minute budget" not in readme and "no time budget" in readme
        assert re.search(rf"\(trained for {epochs} epochs?( in \d+ s)?, no time budget; best validation", readme)
        assert f"--epochs {epochs}" in readme and "5-minute" not in readme
    else:
        assert "under a 3.0-minute budget" in readme and "under a 3-minute training budget" in readme
        assert "--max-minutes 3 " in readme and "no time budget" not in readme


# --------------------------------------------------------------------------------------------
# ichct bundle package --evaluation
# --------------------------------------------------------------------------------------------


def test_package_refuses_an_evaluation_of_a_run_saying_what_to_run(setup, run_cli, tmp_path):
    ev = tmp_path / "eval_run"
    r = run_cli("evaluate", "--run", setup["cls"], "--manifest", setup["manifest"], "--out", ev, "--bootstrap", "5",
                "-q")
    assert r.code == 0, r.err
    entry = json.loads((ev / "metrics.json").read_text())["model"]["runs"]["cls"]
    assert "weights_sha256" not in entry and entry["run_dir"]  # what an evaluation of a run records
    b = tmp_path / "b"
    r = run_cli("bundle", "package", setup["cls"], b, "--evaluation", ev)
    assert r.code == 1 and not b.exists()
    assert "sha256 None" not in r.err
    assert f"made from run {entry['run_dir']}" in r.err and f"ichct evaluate --bundle {b}" in r.err
    assert str(Path(setup["manifest"]).resolve()) in r.err
    # a metrics.json of a seg model only is named as such
    seg_only = tmp_path / "seg_only"
    shutil.copytree(ev, seg_only)
    doc = json.loads((seg_only / "metrics.json").read_text())
    doc["model"]["runs"] = {"seg": doc["model"]["runs"]["cls"]}
    (seg_only / "metrics.json").write_text(json.dumps(doc))
    r = run_cli("bundle", "package", setup["cls"], b, "--evaluation", seg_only)
    assert r.code == 1 and "evaluates no cls model" in r.err and not b.exists()


# --------------------------------------------------------------------------------------------
# bundles/build_bundles.sh
# --------------------------------------------------------------------------------------------


_COMMITTED_FLAGS = ("--tta-mirror-axes", ",".join(map(str, COMMITTED_INFERENCE["tta_mirror_axes"])),
                    "--brain-reference-hu", str(COMMITTED_INFERENCE["brain_reference_hu"]))


def _script_default(text: str, variable: str) -> str:
    match = re.search(rf"^{variable}=\$\{{{variable}:-([^}}]*)\}}$", text, flags=re.M)
    assert match, f"no default for {variable} in build_bundles.sh"
    return match.group(1)


def test_build_script_defaults_are_what_the_docs_call_the_build_script_run():
    text = (REPO / "bundles" / "build_bundles.sh").read_text()
    for kind, spec in BUILD_SCRIPT.items():
        prefix = kind.upper()
        assert _script_default(text, f"{prefix}_COHORT") == spec["cohort"]
        assert float(_script_default(text, f"{prefix}_MINUTES")) == spec["max_minutes"]
        epochs = _script_default(text, f"{prefix}_EPOCHS")
        assert (int(epochs) if epochs else None) == spec["epochs"]
        config = _script_default(text, f"{prefix}_CONFIG")
        assert (config or None) == spec["config"]
    # the segmenter's training overrides: brain-referenced HU at the committed level, as it is packaged
    assert json.loads((REPO / BUILD_SCRIPT["seg"]["config"]).read_text()) == {
        "brain_reference_hu": COMMITTED_INFERENCE["brain_reference_hu"]}
    assert '${config:+--config "$config"}' in text
    assert [int(a) for a in _script_default(text, "TTA").split(",")] == COMMITTED_INFERENCE["tta_mirror_axes"]
    assert float(_script_default(text, "BRAIN_HU")) == COMMITTED_INFERENCE["brain_reference_hu"]
    assert "--fold 0" in text and "--seed 0" in text and "postprocess" in text
    assert '--tta-mirror-axes "$TTA"' in text and '--brain-reference-hu "$BRAIN_HU"' in text
    # the segmenter's own inference settings
    assert float(_script_default(text, "SLICE_GATE")) == COMMITTED_SLICE_GATE
    assert float(_script_default(text, "SW_OVERLAP")) == COMMITTED_SW_OVERLAP
    assert '--classifier-slice-gate "$SLICE_GATE" --sw-overlap "$SW_OVERLAP"' in text
    # the confidence filter's false-blood budget, chosen on the tuning cohort
    assert float(_script_default(text, "MAX_FALSE_BLOOD_ML")) == COMMITTED_MAX_FALSE_BLOOD_ML
    assert '--max-false-blood-ml "$MAX_FALSE_BLOOD_ML"' in text
    # the segmenter's two fine-tuned copies, averaged with it (segmentation 0.10.0)
    assert _script_default(text, "SEG_ENSEMBLE") == "1"
    budgets = [float(_script_default(text, v)) for v in ("VARIETY_MINUTES", "UNION_MINUTES")]
    assert budgets == [step["max_minutes"] for step in SEG_FINETUNES]
    for step in SEG_FINETUNES:
        assert (REPO / step["manifest"]).is_file() and f"{step['config']} {step['seed']}" in text
        overrides = json.loads((REPO / step["config"]).read_text())
        assert overrides["brain_reference_hu"] == COMMITTED_INFERENCE["brain_reference_hu"] and overrides["lr"] > 0
        assert f'--member "$WORK/{step["out"]}"' in text


def test_readme_says_build_script_only_for_the_build_script_run(setup, run_cli, tmp_path):
    """A cls run of the default cohort with the script's budget is reproduced by the script; on
    synth_large, or with another budget, it is told to retrain by hand."""
    spec = BUILD_SCRIPT["cls"]
    cases = ((spec["cohort"], spec["max_minutes"], True, ""), ("synth_large", spec["max_minutes"], False, ""),
             (spec["cohort"], 3.0, False, ""),
             (spec["cohort"], spec["max_minutes"], False, " --config my.json"))  # trained with other overrides
    for i, (cohort, minutes, scripted, extra) in enumerate(cases):
        tmp = tmp_path / str(i)
        tmp.mkdir()
        run = _run_on(setup, tmp, config_changes={"max_minutes": minutes})
        manifest = REPO / "data_manifests" / f"{cohort}.json"
        cfg = json.loads((run / "config.json").read_text())
        cfg["manifest"], cfg["manifest_sha256"] = str(manifest), _sha(manifest)
        cfg["command"] = f"ichct train cls --manifest {manifest} --fold 0 --out run --max-minutes {minutes}{extra} --seed 0"
        (run / "config.json").write_text(json.dumps(cfg, indent=2))
        b = tmp / "b"
        assert run_cli("bundle", "package", run, b, "-q", *_COMMITTED_FLAGS).code == 0
        meta, readme, lic = _docs(b)
        assert ("bash bundles/build_bundles.sh" in readme) is scripted, (cohort, minutes)
        assert f"--manifest data_manifests/{cohort}.json" in readme
        assert meta["data_source"] == committed_data_source(cohort)
        assert ("default_test" in readme) is (scripted and cohort != "synth_default")
        if scripted:  # the same run packaged without the script's inference settings is not the script's bundle
            for flag in ("--tta-mirror-axes", "--brain-reference-hu"):
                plain = tmp / f"plain{flag}"
                assert run_cli("bundle", "package", run, plain, "-q", *_COMMITTED_FLAGS, flag, "none").code == 0
                assert "build_bundles.sh" not in _docs(plain)[1], flag
    assert meta["changelog"]["0.1.0"] == "initial release: trained on the synthetic default cohort"
