"""MONAI bundles: ``ichct bundle package|verify``, ``load_bundle``, ``ichct evaluate --bundle``, and every
config run through MONAI's own entry points (``python -m monai.bundle ...``, ``torchrun``).

Built on the shared tiny cohort and 1-epoch runs of :mod:`eval_helpers`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import FOLD, eval_setup

from ichct.pipeline.bundle.package import REQUIRED_FILES, load_bundle
from ichct.pipeline.bundle.configs import bundle_configs
from ichct.pipeline.models.inference import load_run, predict_study

REPO = Path(__file__).resolve().parents[1]
SHARED_SCHEMA = REPO.parent / "shared" / "schemas" / "bundle_metadata.schema.json"  # beside the checkout
TEST_SCHEMA = Path(__file__).resolve().parent / "data" / "bundle_metadata.schema.json"  # its copy in the test data
PY = sys.executable


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> Path:
    """The shared metadata schema from the test data (the package ships its own copy)."""
    dst = tmp_path_factory.mktemp("schema") / "bundle_metadata.schema.json"
    shutil.copyfile(TEST_SCHEMA, dst)
    return dst


@pytest.fixture(scope="module")
def bundles(setup, tmp_path_factory) -> dict[str, Path]:
    """The 1-epoch seg and cls runs packaged as bundles."""
    from ichct.pipeline.bundle.package import package_bundle

    base = tmp_path_factory.mktemp("bundles")
    out = {}
    for kind in ("seg", "cls"):
        out[kind] = base / f"b_{kind}"
        package_bundle(setup[kind], out[kind])
    return out


@pytest.fixture(scope="module")
def study(setup) -> dict:
    from ichct.pipeline.manifests import load_manifest

    return next(e for e in load_manifest(setup["manifest"], "test", check=False) if e["ct_labels"]["any"] == 1)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _monai(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return _run([PY, "-m", "monai.bundle", *args], cwd, env)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]


def _copy(bundle: Path, dst: Path) -> Path:
    shutil.copytree(bundle, dst)
    return dst


# --------------------------------------------------------------------------------------------
# package, load_bundle, metadata
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_package_layout_and_load_bundle(kind, setup, bundles, schema):
    from monai.bundle import verify_metadata

    b = bundles[kind]
    assert all((b / f).is_file() for f in REQUIRED_FILES)
    assert not [p for p in b.parent.iterdir() if "partial" in p.name]
    weights = torch.load(b / "models" / "model.pt", weights_only=True)
    best = torch.load(setup[kind] / "best.pt", weights_only=True)["model"]
    assert set(weights) == set(best) and all(torch.equal(weights[k], best[k]) for k in best)  # a plain state dict
    for f in ("thresholds.json", "train_patients.json"):
        assert (b / "models" / f).read_bytes() == (setup[kind] / f).read_bytes()
    rc = json.loads((b / "models" / "run_config.json").read_text())
    trained = json.loads((setup[kind] / "config.json").read_text())["config"]
    # where the run cached its data (a path on the training machine) does not travel with the model
    assert rc["config"] == {k: v for k, v in trained.items() if k not in ("cache", "cache_dir")}
    assert not os.path.isabs(rc["manifest"]) and (b / rc["manifest"]).resolve() == setup["manifest"].resolve()
    # the configs are exactly what the generator makes of the stored run config
    for name, cfg in bundle_configs(rc).items():
        assert json.loads((b / "configs" / f"{name}.json").read_text()) == cfg, name
    verify_metadata(meta_file=str(b / "configs" / "metadata.json"), filepath=str(schema))
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    assert meta["required_packages_version"]["ichct"] and "pydicom" in meta["required_packages_version"]
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == (2 if kind == "seg" else 6)
    assert "Apache License" in (b / "LICENSE").read_text() and "Version 2.0" in (b / "LICENSE").read_text()
    readme = (b / "docs" / "README.md").read_text()
    assert "not a medical device" in readme.lower()
    assert "python -m monai.bundle run --config_file configs/inference.json" in readme

    m, r = load_bundle(b), load_run(setup[kind])
    assert m.kind == r.kind == kind and m.bundle_dir == b.resolve() and m.run_dir == (b / "models").resolve()
    assert m.rule == r.rule and m.train_patient_keys == r.train_patient_keys
    assert m.train_patient_keys == {e["patient_key"] for e in setup["doc"]["training"] if e["fold"] != FOLD}
    for k, t in r.network.state_dict().items():
        assert torch.equal(m.network.state_dict()[k], t), k


def test_package_refuses_bad_input(setup, bundles, run_cli, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(setup["seg"], broken)
    (broken / "best.pt").unlink()
    r = run_cli("bundle", "package", broken, tmp_path / "b")
    assert r.code == 1 and "best.pt" in r.err and not (tmp_path / "b").exists()
    r = run_cli("bundle", "package", setup["seg"], bundles["seg"])  # exists, no --force
    assert r.code == 1 and "--force" in r.err
    r = run_cli("bundle", "package", setup["seg"], tmp_path / "b", "--version", "1.0")
    assert r.code == 1 and "semantic" in r.err and not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing partial left


def test_repackaging_keeps_the_changelog(setup, run_cli, tmp_path):
    def changelog() -> dict:
        return json.loads((tmp_path / "b" / "configs" / "metadata.json").read_text())["changelog"]

    assert run_cli("bundle", "package", setup["seg"], tmp_path / "b").code == 0
    assert list(changelog()) == ["0.1.0"] and changelog()["0.1.0"].startswith("initial release")
    r = run_cli("bundle", "package", setup["seg"], tmp_path / "b", "--force", "--version", "0.2.0",
                "--change", "one volume per training step")
    assert r.code == 0
    assert changelog() == {"0.2.0": "one volume per training step", "0.1.0": changelog()["0.1.0"]}
    assert list(changelog()) == ["0.2.0", "0.1.0"]  # newest first
    # the same version again (as build_bundles.sh does with --evaluation) replaces its own entry only
    assert run_cli("bundle", "package", setup["seg"], tmp_path / "b", "--force", "--version", "0.2.0").code == 0
    assert changelog()["0.2.0"] == "retrained" and changelog()["0.1.0"].startswith("initial release")


def test_package_shows_the_runs_training_curves(setup, tmp_path):
    """``RUN_DIR/training_curves.png`` (written by ``ichct train``) goes into the bundle's docs and its README;
    a run without it packages without it."""
    from ichct.pipeline.bundle.package import package_bundle

    run = tmp_path / "run"
    shutil.copytree(setup["seg"], run)
    (run / "training_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n curves")
    package_bundle(run, tmp_path / "with")
    assert (tmp_path / "with" / "docs" / "training_curves.png").read_bytes() == (run / "training_curves.png").read_bytes()
    assert "](training_curves.png)" in (tmp_path / "with" / "docs" / "README.md").read_text()
    (run / "training_curves.png").unlink()
    package_bundle(run, tmp_path / "without")
    assert not (tmp_path / "without" / "docs" / "training_curves.png").exists()
    assert "training_curves.png" not in (tmp_path / "without" / "docs" / "README.md").read_text()


def test_refresh_regenerates_configs_and_docs_and_keeps_the_weights(bundles, run_cli, tmp_path):
    b = _copy(bundles["seg"], tmp_path / "b")
    models = {f.name: f.read_bytes() for f in (b / "models").iterdir()}
    (b / "configs" / "inference.json").write_text("{}")
    (b / "docs" / "README.md").write_text("old")
    r = run_cli("bundle", "refresh", b, "--version", "0.2.0", "--change", "configs regenerated", "-q")
    assert r.code == 0, r.err
    rc = json.loads((b / "models" / "run_config.json").read_text())
    for name, cfg in bundle_configs(rc).items():
        assert json.loads((b / "configs" / f"{name}.json").read_text()) == cfg, name
    assert "## Preprocessing" in (b / "docs" / "README.md").read_text()
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.2.0" and list(meta["changelog"]) == ["0.2.0", "0.1.0"]
    assert rc["bundle"]["changelog"]["0.2.0"] == "configs regenerated"
    assert all((b / "models" / n).read_bytes() == data for n, data in models.items() if n != "run_config.json")
    # an evaluation of other weights would put wrong numbers into the docs: refused, nothing changed
    ev = b / "docs" / "evaluation"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"model": {"runs": {"seg": {"weights_sha256": "0" * 64}}}}))
    before = (b / "configs" / "metadata.json").read_bytes()
    r = run_cli("bundle", "refresh", b)
    assert r.code == 1 and "other weights" in r.err and (b / "configs" / "metadata.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_package_data_schema_is_the_shared_one():
    """The package's copy, the test data's copy and (where the checkout has it) ../shared agree."""
    from ichct.pipeline.bundle.verify import default_schema

    shipped = json.loads(default_schema().read_text())
    assert shipped == json.loads(TEST_SCHEMA.read_text())
    assert shipped["$schema"].startswith("http://json-schema.org/") and "required" in shipped
    if SHARED_SCHEMA.is_file():  # CI and developers' checkouts have ../shared; a bare clone may not
        assert shipped == json.loads(SHARED_SCHEMA.read_text())


# --------------------------------------------------------------------------------------------
# ichct bundle verify
# --------------------------------------------------------------------------------------------


def test_verify_passes_and_reports_failures(bundles, schema, run_cli, tmp_path):
    r = run_cli("bundle", "verify", bundles["cls"], "--schema", schema)
    assert r.code == 0, r.out
    assert "FAIL" not in r.out and "network in/out" in r.out and "metadata schema" in r.out
    assert r.out.count("PASS") >= 10

    b = _copy(bundles["seg"], tmp_path / "broken")
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    del meta["version"]
    (b / "configs" / "metadata.json").write_text(json.dumps(meta))
    train = json.loads((b / "configs" / "train.json").read_text())
    train["train"]["trainer"]["network"] = "@no_such_item"
    (b / "configs" / "train.json").write_text(json.dumps(train))
    (b / "models" / "thresholds.json").unlink()
    state = torch.load(b / "models" / "model.pt", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, b / "models" / "model.pt")
    r = run_cli("bundle", "verify", b, "--schema", schema, "--json")
    assert r.code == 1
    rows = {row["name"]: row for row in json.loads(r.out)}
    assert not rows["required files"]["ok"] and "models/thresholds.json" in rows["required files"]["detail"]
    assert not rows["metadata schema"]["ok"] and "version" in rows["metadata schema"]["detail"]
    assert not rows["config parse: train.json"]["ok"] and "no_such_item" in rows["config parse: train.json"]["detail"]
    assert not rows["weights (weights_only=True)"]["ok"] and not rows["large_files.yml"]["ok"]
    assert rows["config parse: inference.json"]["ok"] and rows["network in/out"]["ok"]
    assert run_cli("bundle", "verify", tmp_path / "nothing").code == 1


def test_verify_names_a_wrong_key_or_value_of_an_edited_config(bundles, run_cli, tmp_path):
    """A user edits a config: a misspelt argument or a value a transform refuses fails verify, naming the
    entry and the argument, before anything runs."""
    b = _copy(bundles["seg"], tmp_path / "edited")
    inference = json.loads((b / "configs" / "inference.json").read_text())
    steps = inference["preprocessing"]["transforms"]
    i = [t["_target_"] for t in steps].index("ichct.transforms.MultiWindowd")
    steps[i]["widnows"] = steps[i].pop("windows")
    (b / "configs" / "inference.json").write_text(json.dumps(inference))
    train = json.loads((b / "configs" / "train.json").read_text())
    j = [t["_target_"] for t in train["train"]["preprocessing"]["transforms"]].index("ichct.transforms.ResampleToSpacingd")
    train["train"]["preprocessing"]["transforms"][j]["spacing_mm"] = [2.0, -2.0, 3.0]
    (b / "configs" / "train.json").write_text(json.dumps(train))
    r = run_cli("bundle", "verify", b, "--json")
    assert r.code == 1
    rows = {row["name"]: row for row in json.loads(r.out)}
    detail = rows["config parse: inference.json"]["detail"]
    assert f"preprocessing#transforms#{i}" in detail and "'widnows'" in detail and "did you mean 'windows'" in detail
    detail = rows["config parse: train.json"]["detail"]
    assert f"train#preprocessing#transforms#{j}" in detail and "spacing_mm" in detail and "-2.0" in detail
    assert rows["config parse: evaluate.json"]["ok"] and rows["weights (weights_only=True)"]["ok"]


# --------------------------------------------------------------------------------------------
# configs through MONAI's entry points
# --------------------------------------------------------------------------------------------


def test_inference_configs_equal_predict_study(bundles, study, tmp_path):
    """seg on a DICOM folder (NIfTI on the input grid), cls on a folder of NIfTI (CSV + CT-level JSON).

    The reference runs on the device the bundle's configs pick (cuda when there is one): across
    devices, voxels whose classes tie to float precision may differ.
    """
    import nibabel as nib

    from ichct.transforms import read_dicom_series

    post = json.loads((bundles["seg"] / "configs" / "inference.json").read_text())["postprocessing"]["transforms"]
    drop = [t for t in post if t["_target_"].endswith("RemoveSmallComponentsd")]  # the run's min_component_ml
    assert len(drop) == 1 and drop[0]["min_volume_ml"] == pytest.approx(0.2)
    out = tmp_path / "seg_out"
    _ok(_monai(bundles["seg"], "run", "--config_file", "configs/inference.json", "--input_path", study["image"],
               "--output_dir", str(out)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seg = predict_study({"seg": load_bundle(bundles["seg"], device=device)}, study["image"])
    files = list(out.glob("*_seg.nii.gz"))
    assert len(files) == 1
    img = nib.load(files[0])
    np.testing.assert_array_equal(np.asarray(img.dataobj), seg.seg_original)
    np.testing.assert_allclose(img.affine, seg.original_affine, atol=1e-4)

    vol = read_dicom_series(study["image"])
    nifti_dir = tmp_path / "nifti"
    nifti_dir.mkdir()
    nib.save(nib.Nifti1Image(vol.hu_volume.astype(np.int16), vol.affine_ras), nifti_dir / "case1.nii.gz")
    out = tmp_path / "cls_out"
    _ok(_monai(bundles["cls"], "run", "--config_file", "configs/inference.json", "--input_path", str(nifti_dir),
               "--output_dir", str(out)))
    model = load_bundle(bundles["cls"], device=device)
    ref = predict_study({"cls": model}, study["image"])
    with open(out / "case1_slices.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["slice", "any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
    probs = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(probs, ref.slice_probs, atol=1e-5)
    calls = json.loads((out / "case1_ct.json").read_text())
    assert calls["rule"] == model.rule.to_dict() and calls["n_slices"] == ref.n_slices
    for st, d in calls["decisions"].items():
        assert d["positive"] == ref.decisions["consecutive"][st]["positive"]
        assert d["score"] == pytest.approx(ref.scores["consecutive"][st], abs=1e-5)

    bad = _monai(bundles["cls"], "run", "--config_file", "configs/inference.json")
    assert bad.returncode != 0 and "input_path" in bad.stderr



def test_confidence_filter_of_inference_json_equals_predict_study(setup, study, tmp_path):
    """A run with ``min_component_confidence``: its bundle's inference.json drops the same components."""
    import nibabel as nib

    from ichct.pipeline.bundle.package import package_bundle

    run = tmp_path / "run"
    shutil.copytree(setup["seg"], run)
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["min_component_confidence"] = 0.55
    (run / "config.json").write_text(json.dumps(saved))
    bundle = tmp_path / "bundle"
    package_bundle(run, bundle)
    post = json.loads((bundle / "configs" / "inference.json").read_text())["postprocessing"]["transforms"]
    assert [t["min_confidence"] for t in post if t["_target_"].endswith("SuppressUncertainComponentsd")] == [0.55]
    out = tmp_path / "out"
    _ok(_monai(bundle, "run", "--config_file", "configs/inference.json", "--input_path", study["image"],
               "--output_dir", str(out)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seg = predict_study({"seg": load_bundle(bundle, device=device)}, study["image"])
    unfiltered = predict_study({"seg": load_run(setup["seg"], device=device)}, study["image"])
    np.testing.assert_array_equal(np.asarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj), seg.seg_original)
    assert not ((seg.seg_original > 0) & (unfiltered.seg_original == 0)).any()

def test_window_edit_in_inference_json_changes_the_prediction(study, tmp_path):
    """A user changes the windows in the committed classifier's inference.json (the config, nothing
    else) and sees the change in its slice probabilities; unedited, they equal ichct predict's."""
    edited = _copy(REPO / "bundles" / "ich_ct_classification", tmp_path / "cls")
    cfg = json.loads((edited / "configs" / "inference.json").read_text())
    [window] = [t for t in cfg["preprocessing"]["transforms"] if t["_target_"].endswith(".MultiWindowd")]
    assert window["windows"]["brain"] == [40.0, 80.0]
    window["windows"] = {name: [1000.0, 10.0] for name in window["windows"]}  # a bone window: the brain goes black
    (edited / "configs" / "inference.json").write_text(json.dumps(cfg, indent=2))
    out = tmp_path / "out"
    _ok(_monai(edited, "run", "--config_file", "configs/inference.json", "--input_path", study["image"],
               "--output_dir", str(out)))
    [path] = out.glob("*_slices.csv")
    with open(path, newline="") as f:
        moved = np.array([[float(v) for v in r[1:]] for r in list(csv.reader(f))[1:]])
    ref = predict_study({"cls": load_bundle(REPO / "bundles" / "ich_ct_classification")}, study["image"]).slice_probs
    assert moved.shape == ref.shape and np.abs(moved - ref).max() > 0.05, np.abs(moved - ref).max()


def test_train_config_has_the_ids_of_monai_tracking(bundles, tmp_path, monkeypatch):
    """``--tracking mlflow`` (MONAI's DEFAULT_MLFLOW_SETTINGS) puts its handlers into the lists that
    train.json's trainer and validator attach: ``train#handlers`` and ``validate#handlers``."""
    from monai.bundle import ConfigWorkflow
    from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS

    ids = DEFAULT_MLFLOW_SETTINGS["handlers_id"]
    for kind in ("seg", "cls"):
        b = _copy(bundles[kind], tmp_path / kind)
        monkeypatch.chdir(b)  # bundle_root "." (the tracking patch writes the executed config into its logs/)
        wf = ConfigWorkflow(config_file=str(b / "configs" / "train.json"), meta_file=str(b / "configs" / "metadata.json"),
                            workflow_type="train", tracking="mlflow")
        for role in ("trainer", "validator"):
            assert wf.parser.get(ids[role]["id"]) is not None, (kind, role)
            handlers = wf.parser.get(ids[role]["handlers"])
            assert handlers[-1]["_target_"] == "MLFlowHandler", (kind, role, handlers)
        attached = {k: wf.parser.get(k).replace("::", "#") for k in ("train#trainer#train_handlers",
                                                                       "validate#evaluator#val_handlers")}
        assert "@train#handlers" in attached["train#trainer#train_handlers"]
        assert "@validate#handlers" in attached["validate#evaluator#val_handlers"]


def test_monai_bundle_run_tracks_to_mlflow(bundles, setup, tmp_path):
    """``python -m monai.bundle run ... --tracking mlflow`` with MONAI's default settings: the run's loss and
    validation metrics land in the local SQLite store ``logs/mlruns.db`` (the ``ichct[mlflow]`` extra)."""
    import mlflow

    b = _copy(bundles["seg"], tmp_path / "seg")
    _ok(_monai(b, "run", "--config_file", "configs/train.json", "--epochs", "1", "--manifest", str(setup["manifest"]),
               "--tracking", "mlflow"))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{b / 'logs' / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("monai_experiment")
    runs = client.search_runs([experiment.experiment_id])
    metrics = {key for run in runs for key in run.data.metrics}
    assert runs and "train_loss" in metrics and any(k.startswith("val_") for k in metrics), metrics


def test_train_and_evaluate_configs(bundles, setup, tmp_path):
    b = _copy(bundles["seg"], tmp_path / "seg")
    before = (b / "models" / "model.pt").read_bytes()
    (b / "models" / "train_patients.json").unlink()
    # MONAI's experiment tracking with settings of one's own: the handlers it patches in run with the engines
    tracking = {"handlers_id": {"trainer": {"id": "train#trainer", "handlers": "train#handlers"},
                                "validator": {"id": "validate#evaluator", "handlers": "validate#handlers"}},
                "configs": {"trainer": {"_target_": "TensorBoardStatsHandler", "log_dir": "$@bundle_root + '/tracked'",
                                        "tag_name": "tracked_loss", "iteration_log": False,
                                        "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"},
                            "validator": {"_target_": "TensorBoardStatsHandler", "iteration_log": False,
                                          "log_dir": "$@bundle_root + '/tracked_val'"}}}
    (tmp_path / "tracking.json").write_text(json.dumps(tracking))
    _ok(_monai(b, "run", "--config_file", "configs/train.json", "--epochs", "1", "--manifest", str(setup["manifest"]),
               "--tracking", str(tmp_path / "tracking.json")))
    assert (b / "models" / "model.pt").read_bytes() != before
    assert list((b / "logs").glob("events.out.tfevents.*"))  # TensorBoard, by default
    assert list((b / "tracked").glob("events.out.tfevents.*")) and list((b / "tracked_val").glob("events.*"))
    m = load_bundle(b)  # the retrained bundle is complete again: weights, thresholds, training patients
    assert m.train_patient_keys == load_run(setup["seg"]).train_patient_keys
    assert m.rule is not None and m.rule.name == "seg_volume" and m.rule.meta["chosen_on"] == f"validation fold {FOLD}"
    assert json.loads((b / "models" / "run_config.json").read_text())["config"]["epochs"] == 1

    out = tmp_path / "eval"
    _ok(_monai(b, "run", "--config_file", "configs/evaluate.json", "--bootstrap", "20", "--output_dir", str(out)))
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["split"] == "test" and doc["allow_overlap"] is False and "dice" in doc["segmentation"]["any"]
    assert doc["lesion_definition"]["connectivity"] == 26 and doc["lesion_definition"]["min_volume_ml"] == 0.05
    assert doc["model"]["runs"]["seg"]["bundle_dir"] == str(b.resolve())

    c = _copy(bundles["cls"], tmp_path / "cls")
    merged = "['configs/train.json','configs/evaluate.json']"
    out = tmp_path / "eval_cls"
    _ok(_monai(c, "run", "--config_file", merged, "--bootstrap", "20", "--output_dir", str(out)))
    assert json.loads((out / "metrics.json").read_text())["n_studies"] == len(setup["doc"]["test"])
    # evaluating the training patients is refused, and nothing is written
    out = tmp_path / "eval_leak"
    r = _monai(c, "run", "--config_file", merged, "--eval_split", "training", "--output_dir", str(out))
    assert r.returncode != 0 and "refusing to evaluate" in r.stderr and not out.exists()


def test_train_config_fine_tunes_the_bundles_own_weights(bundles, setup, tmp_path):
    """``--init_weights models/model.pt``: training starts from the shipped weights (a learning rate too
    small to move them keeps them), and the rewritten record names them and nests their patients."""
    b = _copy(bundles["seg"], tmp_path / "seg")
    before = torch.load(b / "models" / "model.pt", weights_only=True)
    record_before = json.loads((b / "models" / "train_patients.json").read_text())
    sha = hashlib.sha256((b / "models" / "model.pt").read_bytes()).hexdigest()
    _ok(_monai(b, "run", "--config_file", "configs/train.json", "--epochs", "1", "--manifest", str(setup["manifest"]),
               "--init_weights", "models/model.pt", "--optimizer#lr", "1e-12", "--optimizer#weight_decay", "0.0"))
    after = torch.load(b / "models" / "model.pt", weights_only=True)
    after = after.get("model", after)
    assert before.keys() == after.keys()
    assert max(float((before[k] - after[k]).abs().max()) for k in before if before[k].is_floating_point()
               and ".running_" not in k) < 1e-6
    run_config = json.loads((b / "models" / "run_config.json").read_text())
    assert run_config["init_weights"]["sha256"] == sha and "--init_weights" in run_config["command"]
    assert json.loads((b / "models" / "train_patients.json").read_text())["initial_weights"] == record_before


def test_torchscript_export(bundles, tmp_path):
    from ichct.pipeline.bundle.network import ChannelFirstSliceClassifier

    for kind in ("seg", "cls"):
        b = bundles[kind]  # verify_net_in_out runs inside `ichct bundle verify` (test_verify_passes_...)
        c = _in_channels(b)  # 3 windows (+ the classifier's skull-stripped channel)
        extra = ["--use_trace", "True", "--input_shape", f"[1, {c}, 32, 32, 16]"] if kind == "cls" else []
        ts = tmp_path / f"{kind}.ts"
        _ok(_monai(b, "ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", "models/model.pt",
                   "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", *extra))
        scripted = torch.jit.load(str(ts))
        eager = load_bundle(b).network
        torch.manual_seed(0)
        with torch.no_grad():
            if kind == "seg":
                x = torch.rand(1, c, 32, 32, 16)
                np.testing.assert_allclose(scripted(x).numpy(), eager(x).numpy(), atol=1e-5)
            else:
                cf = ChannelFirstSliceClassifier(**_cls_kwargs(b))
                cf.load_state_dict(eager.state_dict())
                cf.eval()
                for slices in (16, 11):  # the traced graph is not tied to the slice count it was traced with
                    x = torch.rand(1, c, 32, 32, slices)
                    np.testing.assert_allclose(scripted(x).numpy(), cf(x).numpy(), atol=1e-5)
                    np.testing.assert_allclose(cf(x).transpose(1, 2).numpy(), eager(x)["logits"].numpy(), atol=1e-6)


def _in_channels(b: Path) -> int:
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    return int(meta["network_data_format"]["inputs"]["image"]["num_channels"])


def _cls_kwargs(b: Path) -> dict:
    net = json.loads((b / "configs" / "inference.json").read_text())["network_def"]
    return {k: v for k, v in net.items() if k != "_target_"}


def test_onnx_export(bundles, tmp_path):
    """ONNX export needs the optional onnx/onnxruntime packages (not ichct dependencies)."""
    pytest.importorskip("onnx", reason="onnx is not installed (optional: pip install onnx onnxruntime onnxscript)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (optional)")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (optional)")
    for kind, kw in (
        ("seg", "{}"),
        ("cls", "{'dynamo': False, 'input_names': ['image'], 'output_names': ['pred'], "
                "'dynamic_axes': {'image': {4: 'slices'}, 'pred': {2: 'slices'}}}"),
    ):
        c = _in_channels(bundles[kind])
        shape = f"[1, {c}, 32, 32, 16]"
        path = tmp_path / f"{kind}.onnx"
        _ok(_monai(bundles[kind], "onnx_export", "network_def", "--filepath", str(path), "--ckpt_file",
                   "models/model.pt", "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json",
                   "--use_trace", "True", "--input_shape", shape, "--converter_kwargs", kw))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        net = load_bundle(bundles[kind]).network
        x = torch.rand(1, c, 32, 32, 16 if kind == "seg" else 13)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = net(x) if kind == "seg" else net(x)["logits"].transpose(1, 2)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


# --------------------------------------------------------------------------------------------
# ichct evaluate --bundle, package --evaluation
# --------------------------------------------------------------------------------------------


def test_evaluate_bundle_and_package_with_numbers(bundles, setup, run_cli, tmp_path):
    out = tmp_path / "eval"
    r = run_cli("evaluate", "--bundle", bundles["seg"], "--bundle", bundles["cls"], "--manifest", setup["manifest"],
                "--out", out, "--bootstrap", "30", "-q")
    assert r.code == 0, r.err
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["model"]["runs"]) == {"seg", "cls"} and doc["allow_overlap"] is False
    runs = doc["model"]["runs"]
    from ichct.pipeline.core.files import sha256_file

    assert runs["cls"]["weights_sha256"] == sha256_file(bundles["cls"] / "models" / "model.pt")
    assert runs["seg"]["bundle_dir"] == str(bundles["seg"].resolve())
    assert doc["model"]["name"] == f"cls:{bundles['cls'].name}+seg:{bundles['seg'].name}"

    # the bundle's stored training patients are refused
    leak = tmp_path / "leak"
    r = run_cli("evaluate", "--bundle", bundles["cls"], "--manifest", setup["manifest"], "--split", "training",
                "--out", leak, "--bootstrap", "5")
    train_keys = {e["patient_key"] for e in setup["doc"]["training"] if e["fold"] != FOLD}
    assert r.code == 1 and "refusing" in r.err and all(k in r.err for k in train_keys) and not leak.exists()
    assert run_cli("evaluate", "--bundle", bundles["cls"], "--bundle", bundles["cls"], "--bundle", bundles["seg"],
                   "--manifest", setup["manifest"], "--out", leak).code == 2

    # the numbers go into the bundle's metadata and README; evaluation files into docs/evaluation/
    b = tmp_path / "b_cls"
    r = run_cli("bundle", "package", setup["cls"], b, "--evaluation", out, "--version", "1.2.3", "-q")
    assert r.code == 0, r.err
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    auc = doc["ct_level"]["any"]["consecutive"]["roc_auc"]["value"]
    assert meta["version"] == "1.2.3" and meta["eval_metrics"]["roc_auc_any_consecutive"] == auc
    assert meta["eval_metrics"]["n_studies"] == doc["n_studies"]
    assert json.loads((b / "docs" / "evaluation" / "metrics.json").read_text()) == doc
    assert "| any |" in (b / "docs" / "README.md").read_text()
    # another evaluation of the same weights (here the same folder under a name) gets a folder and a table
    r = run_cli("bundle", "package", setup["cls"], b, "--evaluation", out, "--also-evaluated", f"shifted_domain={out}",
                "--version", "1.2.3", "--force", "-q")
    assert r.code == 0, r.err
    assert json.loads((b / "docs" / "evaluation_shifted_domain" / "metrics.json").read_text()) == doc
    readme = (b / "docs" / "README.md").read_text()
    assert "### Shifted domain" in readme and "evaluation_shifted_domain/report.md" in readme
    assert readme.count("| any |") == 2
    assert run_cli("bundle", "refresh", b, "-q").code == 0  # refresh keeps it
    assert "### Shifted domain" in (b / "docs" / "README.md").read_text()
    r = run_cli("bundle", "package", setup["cls"], tmp_path / "b2", "--also-evaluated", f"bad name={out}")
    assert r.code == 1 and "'bad name'" in r.err and not (tmp_path / "b2").exists()
    assert run_cli("bundle", "package", setup["cls"], tmp_path / "b2", "--also-evaluated", str(out)).code == 2
    # an evaluation of other weights is refused
    r = run_cli("bundle", "package", setup["seg"], tmp_path / "b_seg", "--evaluation", tmp_path / "nothing")
    assert r.code == 1 and "metrics.json" in r.err
    other = tmp_path / "other"
    shutil.copytree(out, other)
    d = json.loads((other / "metrics.json").read_text())
    d["model"]["runs"]["seg"]["weights_sha256"] = "0" * 64
    (other / "metrics.json").write_text(json.dumps(d))
    r = run_cli("bundle", "package", setup["seg"], tmp_path / "b_seg", "--evaluation", other)
    assert r.code == 1 and "other weights" in r.err and not (tmp_path / "b_seg").exists()
    r = run_cli("bundle", "package", setup["seg"], tmp_path / "b_seg", "--also-evaluated", f"shift={other}")
    assert r.code == 1 and "other weights" in r.err and not (tmp_path / "b_seg").exists()


# --------------------------------------------------------------------------------------------
# the committed bundles
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ich_ct_segmentation", "ich_ct_classification"])
def test_committed_bundle(name, schema):
    from ichct.pipeline.bundle.verify import verify_bundle

    b = REPO / "bundles" / name
    rc = json.loads((b / "models" / "run_config.json").read_text())
    # the configs are what the generator makes of the stored run config (`ichct bundle refresh`; the
    # configs published before keep resolving: test_bundle_targets.py)
    for cfg_name, cfg in bundle_configs(rc).items():
        assert json.loads((b / "configs" / f"{cfg_name}.json").read_text()) == cfg, cfg_name
    # what bundles/build_bundles.sh trains each on: the segmenter synth_large, the classifier the default cohort
    cohort, n_test = {"ich_ct_segmentation": ("synth_large", 45), "ich_ct_classification": ("synth_default", 15)}[name]
    assert rc["manifest"] == f"../../data_manifests/{cohort}.json"
    assert (b / "models" / "model.pt").stat().st_size < 20 * 2**20
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    metrics = json.loads((b / "docs" / "evaluation" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["allow_overlap"] is False and meta["eval_metrics"]["n_studies"] == n_test
    # also scored on the shifted domain and, when trained elsewhere, on the default cohort's test split
    others = {"shifted_domain": 200, **({"default_test": 15} if cohort != "synth_default" else {})}
    assert {p.name for p in (b / "docs").glob("evaluation_*")} == {f"evaluation_{k}" for k in others}
    for other, n in others.items():
        assert json.loads((b / "docs" / f"evaluation_{other}" / "metrics.json").read_text())["n_studies"] == n
    assert meta["intended_use"].startswith("Research only")
    results = verify_bundle(b, schema=schema)
    assert all(r.ok for r in results), [r for r in results if not r.ok]


def test_bundle_verify_stdout_is_the_table_only(tmp_path):
    """MONAI's bundle scripts log at INFO to stdout; `ichct bundle verify` keeps stdout for its check
    table (a separate process: MONAI binds its handler to the real stdout)."""
    code = "import sys; from ichct.pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "bundle", "verify", str(REPO / "bundles" / "ich_ct_classification")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["check", "result", "detail"], lines[:3]
    assert " - INFO - " not in r.stdout and lines[-1].startswith("bundle OK")
