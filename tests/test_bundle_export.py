"""``ichct bundle export``: the exported zoo folder holds only the modules its configs import, and runs
for real with ``ichct`` not importable: ``inference.json`` on a DICOM folder, ``train.json`` (the
classifier's through ``torchrun`` with ``multi_gpu_train.json``) and ``evaluate.json`` on a
manifest; every exported module is imported when they run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from eval_helpers import eval_setup

from ichct.pipeline.bundle.package import load_bundle
from ichct.pipeline.models.inference import predict_study

PY = sys.executable
#: What an exported bundle never carries: the synthetic-data generator, manifest building and its
#: adapters, the CLI, packaging, prediction's report writers, the demo, ichct's own evaluation runner.
NOT_EXPORTED = ("ichct.pipeline.synth", "ichct.pipeline.manifests", "ichct.pipeline.cli", "ichct.pipeline.demo",
                "ichct.pipeline.predict", "ichct.pipeline.ingest", "ichct.pipeline.bundle.package",
                "ichct.pipeline.bundle.export", "ichct.pipeline.bundle.code", "ichct.pipeline.bundle.configs",
                "ichct.pipeline.bundle.docs", "ichct.pipeline.evaluate.run", "ichct.pipeline.models.inference",
                "ichct.pipeline.models.shipped_models")


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def bundles(setup, tmp_path_factory) -> dict[str, Path]:
    from ichct.pipeline.bundle.package import package_bundle

    base = tmp_path_factory.mktemp("export_src")
    out = {"seg": base / "ich_seg", "cls": base / "ich_cls"}
    for kind, path in out.items():
        package_bundle(setup[kind], path)
    return out


@pytest.fixture(scope="module")
def hidden_env(tmp_path_factory) -> dict[str, str]:
    """An environment whose Python cannot import ``ichct`` (``sys.modules['ichct'] = None`` at startup) and,
    when ``BUNDLE_MODULES_OUT`` is set, writes the ``scripts`` modules it imported to ``<that>.<pid>.json`` at exit."""
    d = tmp_path_factory.mktemp("hide_ichct")
    (d / "sitecustomize.py").write_text(
        "import atexit, json, os, sys\n"
        "sys.modules['ichct'] = None\n"
        "def _dump(out=os.environ.get('BUNDLE_MODULES_OUT')):\n"
        "    if out:\n"
        "        with open(f'{out}.{os.getpid()}.json', 'w') as f:\n"
        "            json.dump(sorted(m for m in sys.modules if m.split('.')[0] == 'scripts'), f)\n"
        "atexit.register(_dump)\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(d)
    env.setdefault("MPLBACKEND", "Agg")
    probe = subprocess.run([PY, "-c", "import ichct"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "ichct" in probe.stderr
    return env


def _monai(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-30000:]


def _slice_probs(path: Path) -> list[list[float]]:
    with open(path, newline="") as f:
        return [[float(v) for v in r[1:]] for r in list(csv.reader(f))[1:]]


def _export(bundle: Path, dest: Path, run_cli) -> dict:
    """Export and check what went into ``scripts/``: nothing of :data:`NOT_EXPORTED`, ichct names only there."""
    r = run_cli("bundle", "export", bundle, dest, "-q")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    files = [p for p in (dest / "scripts").rglob("*") if p.is_file()]
    assert summary["scripts_lines"] == sum(p.read_bytes().count(b"\n") for p in files)
    assert f"{summary['scripts_lines']:,} lines" in (dest / "docs" / "README.md").read_text()
    assert not [m for m in _exported_modules(dest) if m.removeprefix("scripts.").startswith(NOT_EXPORTED)]
    for f in (dest / "configs").glob("*.json"):
        text = f.read_text()
        assert '"ichct.' not in text and "$import ichct" not in text, f.name
    meta = json.loads((dest / "configs" / "metadata.json").read_text())
    assert "ichct" not in meta["required_packages_version"]
    assert {"pydicom", "nibabel", "tensorboard"} <= set(meta["required_packages_version"])
    return summary


def _exported_modules(dest: Path) -> set[str]:
    """The module names of the exported ``scripts/`` package."""
    out = set()
    for p in (dest / "scripts").rglob("*.py"):
        parts = list(p.relative_to(dest).with_suffix("").parts)
        out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _imported_modules(dumps: Path) -> set[str]:
    return set().union(*(json.loads(p.read_text()) for p in dumps.parent.glob(f"{dumps.name}.*.json")))


def test_seg_export_runs_without_ichct(setup, bundles, hidden_env, run_cli, tmp_path):
    from ichct.pipeline.manifests import load_manifest

    dest = tmp_path / "zoo" / "ich_seg"
    _export(bundles["seg"], dest, run_cli)
    env = {**hidden_env, "BUNDLE_MODULES_OUT": str(tmp_path / "modules")}
    study = next(e for e in load_manifest(setup["manifest"], "test", check=False) if e["ct_labels"]["any"] == 1)
    out = tmp_path / "pred"
    _ok(_monai(dest, env, "run", "--config_file", "configs/inference.json", "--input_path", study["image"],
               "--output_dir", str(out)))
    [mask] = out.glob("*_seg.nii.gz")
    ref = predict_study({"seg": load_bundle(bundles["seg"])}, study["image"])
    np.testing.assert_array_equal(np.asarray(nib.load(mask).dataobj), ref.seg_original)

    # evaluate.json scores its stored rule as `ichct evaluate --bundle` does (same bootstrap): the same numbers
    # (ichct evaluate scores the segmenter's seg_peak beside it unless told the rule)
    ev = tmp_path / "eval"
    _ok(_monai(dest, env, "run", "--config_file", "configs/evaluate.json", "--manifest", str(setup["manifest"]),
               "--bootstrap", "20", "--output_dir", str(ev)))
    ref_dir = tmp_path / "eval_cli"
    assert run_cli("evaluate", "--bundle", bundles["seg"], "--manifest", setup["manifest"], "--out", ref_dir,
                   "--bootstrap", "20", "--rules", "seg_volume", "-q").code == 0
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (ev, ref_dir))
    assert got["segmentation"] == want["segmentation"] and got["ct_level"] == want["ct_level"]
    assert got["n_studies"] == want["n_studies"] and got["model"]["runs"]["seg"]["weights_sha256"] == \
        want["model"]["runs"]["seg"]["weights_sha256"]
    assert {p.name for p in ev.iterdir()} == {p.name for p in ref_dir.iterdir()}

    before = (dest / "models" / "model.pt").read_bytes()
    _ok(_monai(dest, env, "run", "--config_file", "configs/train.json", "--epochs", "1", "--manifest",
               str(setup["manifest"])))
    assert (dest / "models" / "model.pt").read_bytes() != before and list((dest / "logs").glob("events.*"))
    assert _exported_modules(dest) == _imported_modules(tmp_path / "modules")


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_export_with_the_committed_inference_settings_predicts_as_ichct(setup, bundles, hidden_env, run_cli,
                                                                       tmp_path, kind):
    """Brain-referenced HU and test-time mirroring (the committed bundles' settings) run in the exported
    bundle without ichct, and predict what ``ichct predict`` does."""
    import shutil

    from ichct.pipeline.bundle.docs import COMMITTED_INFERENCE
    from ichct.pipeline.manifests import load_manifest

    bundle = tmp_path / "bundle"
    shutil.copytree(bundles[kind], bundle)
    axes = ",".join(map(str, COMMITTED_INFERENCE["tta_mirror_axes"]))
    level = str(COMMITTED_INFERENCE["brain_reference_hu"])
    assert run_cli("bundle", "refresh", bundle, "--tta-mirror-axes", axes, "--brain-reference-hu", level,
                   "-q").code == 0
    dest = tmp_path / "zoo"
    _export(bundle, dest, run_cli)
    assert {"scripts.ichct.networks.mirror", "scripts.ichct.transforms.brain_reference"} <= _exported_modules(dest)
    study = next(e for e in load_manifest(setup["manifest"], "test", check=False) if e["ct_labels"]["any"] == 1)
    out = tmp_path / "pred"
    _ok(_monai(dest, hidden_env, "run", "--config_file", "configs/inference.json", "--input_path", study["image"],
               "--output_dir", str(out)))
    ref = predict_study({kind: load_bundle(bundle)}, study["image"])
    plain = predict_study({kind: load_bundle(bundles[kind])}, study["image"])
    if kind == "seg":
        [mask] = out.glob("*_seg.nii.gz")
        np.testing.assert_array_equal(np.asarray(nib.load(mask).dataobj), ref.seg_original)
    else:
        [csv_exp] = out.glob("*_slices.csv")
        np.testing.assert_allclose(_slice_probs(csv_exp), ref.slice_probs, atol=1e-5)
        assert not np.array_equal(ref.slice_probs, plain.slice_probs)  # the settings change the output
    # training validates with the same settings (the mirrored classifier's logits out of its dict output)
    before = {f: (dest / "models" / f).read_bytes() for f in ("model.pt", "thresholds.json")}
    _ok(_monai(dest, hidden_env, "run", "--config_file", "configs/train.json", "--epochs", "1", "--manifest",
               str(setup["manifest"])))
    assert all((dest / "models" / f).read_bytes() != b for f, b in before.items())  # validated, thresholds chosen


def test_cls_export_runs_without_ichct(setup, bundles, hidden_env, run_cli, tmp_path):
    from ichct.pipeline.manifests import load_manifest

    dest = tmp_path / "zoo" / "ich_cls"
    _export(bundles["cls"], dest, run_cli)
    keys = "models/train_patients.json"
    assert (dest / keys).read_bytes() == (bundles["cls"] / keys).read_bytes()
    v = run_cli("bundle", "verify", dest)
    assert v.code == 0, v.out

    env = {**hidden_env, "BUNDLE_MODULES_OUT": str(tmp_path / "modules")}
    study = load_manifest(setup["manifest"], "test", check=False)[0]["image"]
    out = tmp_path / "pred"
    _ok(_monai(dest, env, "run", "--config_file", "configs/inference.json", "--input_path", study,
               "--output_dir", str(out)))
    [csv_exp] = out.glob("*_slices.csv")
    ref = predict_study({"cls": load_bundle(bundles["cls"])}, study)
    np.testing.assert_allclose(_slice_probs(csv_exp), ref.slice_probs, atol=1e-5)

    # evaluation in the exported bundle still refuses the training patients (the stored keys travel along)
    leak = tmp_path / "leak"
    p = _monai(dest, env, "run", "--config_file", "configs/evaluate.json", "--manifest", str(setup["manifest"]),
               "--eval_split", "training", "--output_dir", str(leak))
    assert p.returncode != 0 and "refusing to evaluate" in p.stderr and not leak.exists()
    ok = tmp_path / "eval"
    _ok(_monai(dest, env, "run", "--config_file", "configs/evaluate.json", "--manifest", str(setup["manifest"]),
               "--bootstrap", "10", "--output_dir", str(ok)))
    doc = json.loads((ok / "metrics.json").read_text())
    assert doc["split"] == "test" and doc["allow_overlap"] is False and "roc_auc" in doc["ct_level"]["any"]["consecutive"]

    # training through torchrun: 2 processes with gloo on the CPU
    (dest / "models" / "model.pt").unlink()
    env.update({"OMP_NUM_THREADS": "1", "MASTER_PORT": "29517"})
    cmd = [str(Path(PY).with_name("torchrun")), "--nproc_per_node=2", "--master_port=29517", "-m", "monai.bundle", "run",
           "--config_file", "['configs/train.json','configs/multi_gpu_train.json']", "--epochs", "1",
           "--manifest", str(setup["manifest"])]
    _ok(subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, timeout=300))
    assert (dest / "models" / "model.pt").is_file()
    assert load_bundle(dest).train_patient_keys == load_bundle(bundles["cls"]).train_patient_keys
    assert _exported_modules(dest) == _imported_modules(tmp_path / "modules")


def test_export_zip_and_weights(setup, bundles, run_cli, tmp_path):
    cls_bundle = bundles["cls"]
    r = run_cli("bundle", "export", cls_bundle, tmp_path / "z", "--zip", "-q")
    assert r.code == 0, r.err
    with zipfile.ZipFile(tmp_path / "z.zip") as zf:
        names = set(zf.namelist())
    assert {"ich_cls/configs/inference.json", "ich_cls/models/model.pt", "ich_cls/scripts/ichct/__init__.py"} <= names
    assert not [n for n in names if "/scripts/ichct/pipeline/manifests/" in n or "/scripts/ichct/pipeline/synth/" in n]
    assert run_cli("bundle", "export", cls_bundle, tmp_path / "z", "--zip").code == 1  # never overwritten

    # other weights of the same architecture (the last checkpoint) with their run's files
    run = tmp_path / "run"
    shutil.copytree(setup["cls"], run)
    ck = torch.load(run / "last.pt", weights_only=True)
    ck["model"] = {k: v + 1.0 if v.is_floating_point() else v for k, v in ck["model"].items()}
    torch.save(ck, run / "last.pt")
    (run / "train_patients.json").write_text(json.dumps({"patient_keys": ["k1", "k2"]}))
    dest = tmp_path / "w"
    r = run_cli("bundle", "export", cls_bundle, dest, "--weights", run / "last.pt", "-q")
    assert r.code == 0, r.err
    m = load_bundle(dest)
    for k, v in ck["model"].items():
        assert torch.equal(m.network.state_dict()[k], v), k
    assert m.train_patient_keys == {"k1", "k2"}

    # weights of another architecture are refused, and nothing is written
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"]["network"]["feature_dim"] = 64
    (run / "config.json").write_text(json.dumps(cfg))
    r = run_cli("bundle", "export", cls_bundle, tmp_path / "bad", "--weights", run / "last.pt")
    assert r.code == 1 and "network" in r.err and not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def _other_run(setup, dst: Path, fold: int = 1) -> Path:
    """A copy of the cls run made to look like another run of the same model: another fold, seed, epochs,
    budget and learning rate, with its own thresholds, training record and training log."""
    shutil.copytree(setup["cls"], dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["fold"], cfg["seed"] = fold, 7
    cfg["config"].update(epochs=9, max_minutes=0.5, lr=0.001)
    cfg["command"] = cfg["command"].replace("--fold 0", f"--fold {fold}")
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    rule = json.loads((dst / "thresholds.json").read_text())
    rule["meta"]["chosen_on"] = f"validation fold {fold}"
    (dst / "thresholds.json").write_text(json.dumps(rule))
    record = json.loads((dst / "train_patients.json").read_text())
    record.update(fold=fold, patient_keys=["k1", "k2"])
    (dst / "train_patients.json").write_text(json.dumps(record))
    with open(dst / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    rows = [{k: "0.5" for k in header} | {"epoch": str(e), "time_s": str(14.0 * e)} for e in (1, 2, 3)]
    with open(dst / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return dst


def test_export_weights_of_another_run_describe_that_run_only(setup, bundles, run_cli, tmp_path):
    cls_bundle = bundles["cls"]
    run = _other_run(setup, tmp_path / "run2")
    other = json.loads((run / "config.json").read_text())
    dest = tmp_path / "w"
    r = run_cli("bundle", "export", cls_bundle, dest, "--weights", run / "best.pt", "-q")
    assert r.code == 0, r.err
    rc = json.loads((dest / "models" / "run_config.json").read_text())
    # the run config is the weights' run's config.json, nothing of the bundle's run mixed in
    assert {k: v for k, v in rc.items() if k != "bundle"} == other
    assert rc["fold"] == 1 and rc["config"]["epochs"] == 9 and rc["config"]["max_minutes"] == 0.5
    for f in ("thresholds.json", "train_patients.json"):
        assert (dest / "models" / f).read_bytes() == (run / f).read_bytes(), f
    assert (dest / "docs" / "training" / "metrics.csv").read_bytes() == (run / "metrics.csv").read_bytes()
    info = rc["bundle"]
    assert info["source_run"] == "run2" and info["training"]["epochs"] == 3 and info["training"]["train_s"] == 42
    assert info["training_data"]["fold"] == 1 and info["training_data"]["sha256"] == other["manifest_sha256"]
    assert info["name"] == "ich_cls" and "exported with the weights of run `run2`" in info["changelog"]["0.1.0"]
    train_cfg = json.loads((dest / "configs" / "train.json").read_text())
    assert train_cfg["training_config"]["lr"] == 0.001 and train_cfg["optimizer"]["lr"] == 0.001
    assert train_cfg["epochs"] == 9
    readme = (dest / "docs" / "README.md").read_text()
    assert "on fold 1 of the manifest" in readme and "seed 7" in readme and "on fold 0 of the manifest" not in readme
    assert "3 epochs in 42 s under a 0.5-minute budget" in readme and "lr 0.001" in readme
    assert not (dest / "docs" / "evaluation").exists()
    m = load_bundle(dest)
    assert m.train_patient_keys == {"k1", "k2"} and m.rule.meta["chosen_on"] == "validation fold 1"

    # a run whose files are of different folds would make a mixed bundle: refused, nothing written
    record = json.loads((run / "train_patients.json").read_text())
    (run / "train_patients.json").write_text(json.dumps({**record, "fold": 0}))
    r = run_cli("bundle", "export", cls_bundle, tmp_path / "mixed", "--weights", run / "best.pt")
    assert r.code == 1 and "different runs" in r.err and "fold 0" in r.err and not (tmp_path / "mixed").exists()
    (run / "train_patients.json").write_text(json.dumps(record))
    rule = json.loads((run / "thresholds.json").read_text())
    rule["meta"]["chosen_on"] = "validation fold 0"
    (run / "thresholds.json").write_text(json.dumps(rule))
    r = run_cli("bundle", "export", cls_bundle, tmp_path / "mixed", "--weights", run / "best.pt")
    assert r.code == 1 and "thresholds.json" in r.err and not (tmp_path / "mixed").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
