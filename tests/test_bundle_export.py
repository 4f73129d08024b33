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

from ichct.pipeline.bundle import load_bundle
from ichct.pipeline.inference import predict_study

PY = sys.executable


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def cls_bundle(setup, tmp_path_factory) -> Path:
    from ichct.pipeline.bundle import package_bundle

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
    assert (dest / "scripts" / "__init__.py").is_file() and (vendored / "pipeline" / "evaluate.py").is_file()
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
