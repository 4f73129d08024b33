"""The demonstration bundles that ship with ichct: the default models of ``ichct predict`` and
``ichct evaluate``, and their place in the wheel (:mod:`ichct.pipeline.models.shipped_models`)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import resources
from pathlib import Path

import pytest

import predict_helpers as ph

REPO = Path(__file__).resolve().parents[1]
BUNDLE_FILES = ("configs/metadata.json", "configs/inference.json", "configs/logging.conf", "models/model.pt",
                "models/run_config.json", "models/thresholds.json", "models/train_patients.json", "docs/README.md",
                "LICENSE", "large_files.yml")
DEMO_WORDS = ("demonstration weights", "synthetic data only", "not validated on real scans")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("shipped")


@pytest.fixture(scope="module")
def study(base):
    ph.write_study(base / "study" / "dcm", key="shipped", n_slices=12)
    return base / "study"


def _has_demo_warning(text: str) -> bool:
    flat = " ".join(text.split())
    return all(w in flat for w in DEMO_WORDS)


def test_shipped_bundle_dirs_lie_in_the_package():
    from ichct.pipeline.models.shipped_models import SHIPPED_BUNDLES, shipped_bundle_dirs

    dirs = shipped_bundle_dirs()
    root = Path(str(resources.files("ichct"))).resolve()
    assert set(dirs) == {"seg", "cls"}
    for kind, folder in dirs.items():
        assert folder.name == SHIPPED_BUNDLES[kind] and folder.resolve().parent == root / "bundles"
        assert all((folder / f).is_file() for f in BUNDLE_FILES)


def test_missing_bundles_raise_an_ichct_error(tmp_path, monkeypatch):
    import ichct.pipeline.models.shipped_models as sm
    from ichct.errors import IchctError

    (tmp_path / "bundles" / "ich_ct_segmentation" / "configs").mkdir(parents=True)
    monkeypatch.setattr(sm, "_package_root", lambda: tmp_path)
    with pytest.raises(IchctError, match="ich_ct_segmentation.*missing or incomplete.*--run or --bundle"):
        sm.shipped_bundle_dirs()


def test_models_source_is_checked(base, study):
    from ichct.errors import IchctError
    from ichct.pipeline.models.inference import load_run
    from ichct.pipeline.predict.run import predict

    run = load_run(ph.write_run(base / "user_seg", "seg"))
    with pytest.raises(IchctError, match="not a shipped model bundle"):
        predict(study, base / "never", [run], models_source="shipped")
    with pytest.raises(IchctError, match="models_source must be one of"):
        predict(study, base / "never", [run], models_source="mine")
    assert not (base / "never").exists()


@pytest.mark.slow
def test_predict_without_a_model_uses_the_shipped_bundles(run_cli, base, study):
    from ichct.pipeline.predict.report_schema import REPORT_SCHEMA_VERSION, validate_report
    from ichct.pipeline.models.shipped_models import shipped_bundle_dirs

    out = base / "out"
    r = run_cli("predict", study, out, "--no-overlays")
    assert r.code == 0, r.err
    assert _has_demo_warning(r.err) and "ich_ct_segmentation" in r.err and "ich_ct_classification" in r.err
    assert r.err.count("demonstration weights") == 1  # said once
    assert json.loads(r.out)["models_source"] == "shipped"
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert validate_report(doc) == doc and doc["schema_version"] == REPORT_SCHEMA_VERSION
    assert doc["models_source"] == "shipped"
    assert any(_has_demo_warning(w) for w in doc["warnings"])
    dirs = shipped_bundle_dirs()
    assert set(doc["models"]) == {"seg", "cls"} and doc["rule"]["name"] == "consecutive"
    for kind in ("seg", "cls"):
        assert Path(doc["models"][kind]["run_dir"]) == (dirs[kind] / "models").resolve()
    assert (out / "mask.nii.gz").is_file() and (out / "seg.dcm").is_file()

    # models given: "user", no demonstration warning
    user = base / "out_user"
    r = run_cli("predict", study, user, "--run", ph.write_run(base / "seg_run", "seg"), "--no-overlays")
    assert r.code == 0, r.err
    doc = json.loads((user / "report.json").read_text(encoding="utf-8"))
    assert doc["models_source"] == "user" and not any(_has_demo_warning(w) for w in doc["warnings"])
    assert "demonstration weights" not in r.err


@pytest.mark.slow
def test_batch_without_a_model_uses_the_shipped_bundles(run_cli, base, study):
    lst = base / "list.csv"
    lst.write_text(f"id,path\none,{study}\n", encoding="utf-8")
    out = base / "batch"
    r = run_cli("predict", "--batch", lst, out, "--no-overlays")
    assert r.code == 0, r.err
    assert _has_demo_warning(r.err)
    summary = json.loads(r.out)
    assert summary["models_source"] == "shipped" and summary["n_ok"] == 1
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["models_source"] for row in rows] == ["shipped"]
    doc = json.loads((out / "one" / "report.json").read_text(encoding="utf-8"))
    assert doc["models_source"] == "shipped" and any(_has_demo_warning(w) for w in doc["warnings"])


@pytest.fixture(scope="module")
def manifest(base):
    """A 4-patient synthetic cohort (64 x 64 x 12) and its manifest; no training."""
    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    cfg = SynthConfig(n_patients=4, seed=11, matrix=64, slices=12, follow_up_fraction=0.0, bone_fraction=0.0,
                      scout_fraction=0.0, tilt_fraction=0.0)
    generate_cohort(cfg, base / "cohort", workers=1)
    out = base / "m.json"
    build_manifest("synth", base / "cohort", out, folds=2, test_fraction=0.25, seed=0, cache=False)
    return out


@pytest.mark.slow
def test_evaluate_without_a_model_uses_the_shipped_bundles(run_cli, base, manifest):
    from ichct.pipeline.evaluate.metrics_schema import validate_metrics
    from ichct.pipeline.evaluate.report import SHIPPED_MODELS_NOTE

    out = base / "eval"
    # synthetic patients share their keys across cohorts (public salt): some are training patients of the
    # shipped bundles, whose leakage guard works like any bundle's
    r = run_cli("evaluate", "--manifest", manifest, "--split", "all", "--out", out, "--bootstrap", "5",
                "--compare", "consecutive", "max", "--allow-overlap")
    assert r.code == 0, r.err
    assert _has_demo_warning(r.err)
    assert json.loads(r.out)["models_source"] == "shipped"
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert validate_metrics(doc) == doc
    assert doc["models_source"] == "shipped" and set(doc["model"]["runs"]) == {"seg", "cls"}
    assert any(_has_demo_warning(w) for w in doc["warnings"])
    assert doc["comparisons"]["a"] == "rule consecutive"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert SHIPPED_MODELS_NOTE in report and _has_demo_warning(report.split("# Evaluation")[0])


def _source_copy(dest: Path) -> Path:
    """The project's files (no VCS, virtualenv, build or data folders) in ``dest``: the wheel is
    built there, so the shared working tree gets no ``build/`` folder."""
    skip_top = {".git", ".venv", "build", "dist", "data", "runs", "demo_out", "ichct_demo", ".whl", ".gl",
                ".pytest_cache", "tests", "benchmarks", "docs"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        out = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        if Path(folder).resolve() == REPO:
            out |= skip_top & set(names)
        return out

    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


_CHECK_INSTALLED = """
import json, sys
from pathlib import Path
import ichct
from ichct.pipeline.bundle.package import load_bundle
from ichct.pipeline.models.shipped_models import shipped_bundle_dirs
root = Path(sys.argv[1]).resolve()
dirs = shipped_bundle_dirs()
kinds = {k: load_bundle(d).kind for k, d in dirs.items()}
print(json.dumps({"ichct": str(Path(ichct.__file__).resolve()), "dirs": {k: str(d.resolve()) for k, d in dirs.items()},
                  "kinds": kinds}))
"""


@pytest.mark.slow
def test_wheel_and_sdist_carry_the_bundles(tmp_path):
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    dist.mkdir()
    # the PEP 517 hooks of the build backend (what `pip wheel --no-build-isolation` and `python -m build`
    # call), offline and without pip's build isolation; one process per hook, as a frontend does
    built = []
    for hook in ("build_wheel", "build_sdist"):
        code = f"import sys\nfrom setuptools import build_meta as b\nprint('BUILT', b.{hook}(sys.argv[1]))\n"
        res = subprocess.run([sys.executable, "-c", code, str(dist)], cwd=src, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-4000:]
        built.append(dist / [ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("BUILT ")][-1])
    wheel, sdist = built
    assert wheel.name.endswith(".whl") and sdist.name.endswith(".tar.gz")

    bundle_files = [f"bundles/{b}/{f}" for b in ("ich_ct_segmentation", "ich_ct_classification") for f in BUNDLE_FILES]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    package_data = ["ichct/pipeline/bundle/schema/bundle_metadata.schema.json",  # the stage packages' data
                    "ichct/pipeline/bundle/templates/bundle_README.md", "ichct/pipeline/manifests/schema.json"]
    missing = [f for f in ["ichct/pipeline/models/shipped_models.py", *package_data] + [f"ichct/{f}" for f in bundle_files]
               if f not in names]
    assert not missing, missing
    # every package of the source tree is in the wheel (pyproject.toml lists them one by one)
    packages = [p.parent.relative_to(REPO) for d in ("pipeline", "transforms", "networks")
                for p in (REPO / d).rglob("__init__.py")]
    assert packages and not [str(p) for p in packages if f"ichct/{p.as_posix()}/__init__.py" not in names]
    assert not [n for n in names if "build_bundles" in n or n.endswith((".onnx", ".ts"))]
    assert wheel.stat().st_size < 10 * 2**20  # the weights are small demonstration models
    with tarfile.open(sdist) as tf:
        snames = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert not [f for f in bundle_files if f not in snames]

    # the unpacked wheel, first on sys.path, from another folder: the package and its bundles come
    # from there (not from the editable install of this checkout), and the bundles load
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", _CHECK_INSTALLED, str(site)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    root = site.resolve()
    assert Path(got["ichct"]).is_relative_to(root / "ichct"), got
    assert all(Path(d).is_relative_to(root / "ichct" / "bundles") for d in got["dirs"].values()), got
    assert got["kinds"] == {"seg": "seg", "cls": "cls"}
