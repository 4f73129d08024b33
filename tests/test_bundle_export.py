"""``ichct bundle export``: the exported zoo folder runs for real with ``ichct`` not importable."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import eval_setup

from ichct.pipeline.bundle.package import load_bundle
from ichct.pipeline.models.inference import predict_study

PY = sys.executable


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def cls_bundle(setup, tmp_path_factory) -> Path:
    from ichct.pipeline.bundle.package import package_bundle

    b = tmp_path_factory.mktemp("export_src") / "ich_cls"
    package_bundle(setup["cls"], b)
    return b


@pytest.fixture(scope="module")
def hidden_env(tmp_path_factory) -> dict[str, str]:
    """An environment whose Python cannot import ``ichct`` (``sys.modules['ichct'] = None`` at startup)."""
    d = tmp_path_factory.mktemp("hide_ichct")
    (d / "sitecustomize.py").write_text("import sys\nsys.modules['ichct'] = None\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(d)
    env.setdefault("MPLBACKEND", "Agg")
    probe = subprocess.run([PY, "-c", "import ichct"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "ichct" in probe.stderr
    return env


def _monai(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def _slice_probs(path: Path) -> list[list[float]]:
    with open(path, newline="") as f:
        return [[float(v) for v in r[1:]] for r in list(csv.reader(f))[1:]]


def test_export_runs_without_ichct(setup, cls_bundle, hidden_env, run_cli, tmp_path):
    from ichct.pipeline.manifests import load_manifest

    dest = tmp_path / "zoo" / "ich_cls"
    r = run_cli("bundle", "export", cls_bundle, dest, "-q")
    assert r.code == 0, r.err
    vendored = dest / "scripts" / "ichct"
    assert (dest / "scripts" / "__init__.py").is_file() and (vendored / "pipeline" / "evaluate" / "run.py").is_file()
    assert (vendored / "pipeline" / "manifests" / "schema.json").is_file()
    for f in (dest / "configs").glob("*.json"):
        text = f.read_text()
        assert '"ichct.' not in text and "$import ichct" not in text, f.name
    meta = json.loads((dest / "configs" / "metadata.json").read_text())
    assert "ichct" not in meta["required_packages_version"] and "pydicom" in meta["required_packages_version"]
    keys = "models/train_patients.json"
    assert (dest / keys).read_bytes() == (cls_bundle / keys).read_bytes()

    study = load_manifest(setup["manifest"], "test", check=False)[0]["image"]
    out = tmp_path / "pred"
    p = _monai(dest, hidden_env, "run", "--config_file", "configs/inference.json", "--input_path", study,
               "--output_dir", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    [csv_exp] = out.glob("*_slices.csv")
    ref = predict_study({"cls": load_bundle(cls_bundle)}, study)
    np.testing.assert_allclose(_slice_probs(csv_exp), ref.slice_probs, atol=1e-5)

    # evaluation in the exported bundle still refuses the training patients (the stored keys travel along)
    leak = tmp_path / "leak"
    p = _monai(dest, hidden_env, "run", "--config_file", "configs/evaluate.json", "--manifest", str(setup["manifest"]),
               "--eval_split", "training", "--output_dir", str(leak))
    assert p.returncode != 0 and "refusing to evaluate" in p.stderr and not leak.exists()
    ok = tmp_path / "eval"
    p = _monai(dest, hidden_env, "run", "--config_file", "configs/evaluate.json", "--manifest", str(setup["manifest"]),
               "--bootstrap", "10", "--output_dir", str(ok))
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((ok / "metrics.json").read_text())["split"] == "test"

    v = run_cli("bundle", "verify", dest)
    assert v.code == 0, v.out


def test_export_zip_and_weights(setup, cls_bundle, run_cli, tmp_path):
    r = run_cli("bundle", "export", cls_bundle, tmp_path / "z", "--zip", "-q")
    assert r.code == 0, r.err
    with zipfile.ZipFile(tmp_path / "z.zip") as zf:
        names = set(zf.namelist())
    assert {"ich_cls/configs/inference.json", "ich_cls/models/model.pt", "ich_cls/scripts/ichct/__init__.py"} <= names
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


def test_export_weights_of_another_run_describe_that_run_only(setup, cls_bundle, run_cli, tmp_path):
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
    assert train_cfg["ichct_config"]["lr"] == 0.001 and train_cfg["ichct_config"]["epochs"] == 9
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
