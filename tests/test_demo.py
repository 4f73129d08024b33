"""`ichct demo --quick`: the README's main job, end to end on the embedded synthetic data."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

import contextlib
import io

import pytest

from ichct.pipeline.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`ichct demo --quick --seed 1` run once: (output folder, what it printed, its log and progress on stderr)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        assert main(["demo", "--quick", "--out", str(out), "--workers", "1", "--seed", "1"]) == 0
    return out, buf.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(demo_run):
    """(output folder, what the demo printed)."""
    return demo_run[:2]


def test_demo_quick_leaves_only_its_artefacts(demo):
    out, _ = demo
    assert sorted(p.name for p in out.iterdir()) == [
        ".ichct-demo", "bundles", "evaluation", "manifest.json", "predict", "runs", "synthetic", "volumes"]


def test_demo_quick_writes_cohort_and_reads_every_study(demo):
    out, printed = demo
    cohort = json.loads((out / "synthetic" / "cohort.json").read_text())
    studies = cohort["studies"]
    assert len(studies) >= 3
    assert f"{len(studies)} studies" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["training"]) + len(manifest["test"]) == len(studies)
    train_keys = {e["patient_key"] for e in manifest["training"]}
    assert train_keys.isdisjoint({e["patient_key"] for e in manifest["test"]})
    assert "manifest.json" in printed
    for study in studies:
        volume_path = out / "volumes" / f"{study['study_uid']}.nii.gz"
        volume = nib.load(volume_path)
        label = nib.load(out / "synthetic" / study["label"])
        assert volume.shape == label.shape
        np.testing.assert_allclose(volume.affine, label.affine, atol=1e-3)
        sidecar = json.loads(volume_path.with_name(volume_path.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["series_uid"] == study["series_uid"]
        hu = np.asarray(volume.dataobj)
        blood = np.asarray(label.dataobj) > 0
        if study["ct_labels"]["any"]:
            assert blood.any()
            assert 40 <= float(np.median(hu[blood])) <= 100  # acute blood, read back in HU
        else:
            assert not blood.any()
        assert study["study_uid"][-10:] in printed


def test_demo_quick_trains_evaluates_packages_and_predicts(demo):
    """The later stages of the demo: runs, held-out evaluation, verified bundles, a predict report."""
    from ichct.pipeline.bundle.verify import verify_bundle

    out, printed = demo
    manifest = json.loads((out / "manifest.json").read_text())
    test_keys = {e["patient_key"] for e in manifest["test"]}
    for kind in ("seg", "cls"):
        run = out / "runs" / kind
        assert (run / "best.pt").is_file() and (run / "thresholds.json").is_file()
        assert test_keys.isdisjoint(json.loads((run / "train_patients.json").read_text())["patient_keys"])
        assert json.loads((run / "config.json").read_text())["seed"] == 1  # --seed reaches both models' training
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_studies"] == len(manifest["test"])
    assert set(metrics["model"]["runs"]) == {"seg", "cls"}
    # both models' fused rule is scored beside each model's own, and printed with them
    assert {"consecutive", "seg_volume", "seg_peak", "fused"} <= set(metrics["ct_level"]["any"])
    assert "any / fused / roc_auc" in printed
    for name in ("ich_ct_segmentation", "ich_ct_classification"):
        bundle = out / "bundles" / name
        assert all(r.ok for r in verify_bundle(bundle)), name
        assert json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
        assert str(bundle) in printed
        # the committed bundles' inference settings, in the configs the evaluation and predict ran
        config = json.loads((bundle / "models" / "run_config.json").read_text())["config"]
        assert config["tta_mirror_axes"] == [0] and config["brain_reference_hu"] == 30.0
        inferer = json.loads((bundle / "configs" / "inference.json").read_text())["inferer"]
        assert inferer["_target_"] == "ichct.networks.MirrorEnsembleInferer" and inferer["mirror_axes"] == [0]
    predict_dirs = list((out / "predict").iterdir())
    assert len(predict_dirs) == 1
    report = json.loads((predict_dirs[0] / "report.json").read_text())
    assert report["findings"]["any"]["call"] in (True, False)
    for name in ("mask.nii.gz", "seg.dcm"):
        assert (predict_dirs[0] / name).is_file()
    assert any(p.suffix == ".png" for p in (predict_dirs[0] / "overlays").iterdir())
    assert "held-out evaluation" in printed and "roc_auc" in printed


def test_full_demo_trains_without_domain_randomisation_and_quick_keeps_it():
    """The full demo's two models train with every domain-randomisation effect off (its minutes go to
    epochs, its goals are on the default cohort's own test split); --quick runs the default chain."""
    from ichct.pipeline.demo import DemoSettings
    from ichct.pipeline.models.config import DEFAULTS, resolve_config

    full, quick = DemoSettings(), DemoSettings.quick()
    assert full.seed == 0 and full.seg_config is not full.cls_config
    for kind, overrides in (("seg", full.seg_config), ("cls", full.cls_config)):
        domain = resolve_config(kind, overrides)["domain"]
        assert set(domain) == set(DEFAULTS[kind]["domain"]) and all(e["prob"] == 0.0 for e in domain.values())
    quick_domain = resolve_config("seg", quick.seg_config)["domain"]
    assert quick_domain == DEFAULTS["seg"]["domain"] and any(e["prob"] > 0 for e in quick_domain.values())


# ---- an existing --out: refused before any work, or replaced with --overwrite when it holds a demo --------


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path, run_cli):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    before = _tree(out)
    for extra in ((), ("--overwrite",)):
        res = run_cli("demo", "--quick", "--out", out, *extra)
        assert res.code == 1
        assert str(out) in res.err and "holds no ichct demo" in res.err, res.err
        assert _tree(out) == before


@pytest.mark.parametrize("bad_seed", ["-1", "4294967296", "one"])
def test_demo_refuses_a_bad_seed_before_any_work(tmp_path, run_cli, bad_seed):
    out = tmp_path / "new"
    res = run_cli("demo", "--quick", "--out", out, "--seed", bad_seed)
    assert res.code == 2 and "--seed" in res.err, res.err
    assert not out.exists()


def test_demo_rerun_is_refused_before_any_work(demo, run_cli):
    """A finished demo is not regenerated and then refused at training: it is refused at once,
    pointing at --overwrite (it used to say "pass --resume", which demo does not take)."""
    out, _ = demo
    before = _tree(out)
    res = run_cli("demo", "--quick", "--out", out, "--workers", "1")
    assert res.code == 1
    assert str(out) in res.err and "--overwrite" in res.err and "--resume" not in res.err, res.err
    assert _tree(out) == before


def _fake_demo(out, marker=True):
    (out / "runs" / "seg").mkdir(parents=True)
    (out / "runs" / "seg" / "last.pt").write_bytes(b"old")
    (out / "manifest.json").write_text("{}")
    (out / "synthetic").mkdir()
    (out / "synthetic" / ".ichct-synth").write_text("ichct-synth\n")
    if marker:
        (out / ".ichct-demo").write_text("ichct demo\n")


def test_demo_overwrite_replaces_a_demo_and_a_failure_leaves_nothing(tmp_path, run_cli, monkeypatch):
    import ichct.pipeline.demo as demo_mod

    seen = []

    def broken_cohort(config, out_dir, **kwargs):
        seen.append(sorted(p.name for p in out_dir.parent.iterdir()))
        raise RuntimeError("synthetic cohort broke")  # a bug inside the demo: exit 70, nothing left behind

    monkeypatch.setattr(demo_mod, "generate_cohort", broken_cohort)
    old = tmp_path / "old_demo"
    old.mkdir()
    _fake_demo(old, marker=False)  # a demo written before the marker is recognised too
    res = run_cli("demo", "--quick", "--out", old)
    assert res.code == 1 and "previous ichct demo" in res.err and "--overwrite" in res.err, res.err
    assert not seen and (old / "runs" / "seg" / "last.pt").is_file()

    res = run_cli("demo", "--quick", "--out", old, "--overwrite")
    assert res.code == 70 and "synthetic cohort broke" in res.err and "Traceback" in res.err, res.err
    assert seen == [[".ichct-demo"]]  # the previous demo was removed before the new one started
    assert list(old.iterdir()) == []  # the failed demo left nothing behind

    new = tmp_path / "parent" / "new_demo"
    res = run_cli("demo", "--quick", "--out", new)
    assert res.code == 70 and len(seen) == 2
    assert not (tmp_path / "parent").exists()

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _fake_demo(mixed)
    (mixed / "notes.txt").write_text("keep me")
    before = _tree(mixed)
    res = run_cli("demo", "--quick", "--out", mixed, "--overwrite")
    assert res.code == 1 and "notes.txt" in res.err and len(seen) == 2, res.err
    assert _tree(mixed) == before


def test_demo_quick_console_shows_training_progress_not_epoch_logs(demo_run):
    """While the two models train side by side, the console (not a terminal here) gets one line per model
    at its start and end from the parent process, not MONAI's or ichct's per-epoch lines; each run folder
    has its training curves and TensorBoard events."""
    out, _, err = demo_run
    for kind, metric in (("seg", "val_dice"), ("cls", "val_auc_any")):
        assert f"[{kind}] caching data; then up to 1 epoch\n" in err, err
        done = [line for line in err.splitlines() if line.startswith(f"[{kind}] done: 1/1 epochs in ")]
        assert len(done) == 1 and f"best {metric} " in done[0], err
        run = out / "runs" / kind
        assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert "Epoch[" not in err and "=nan" not in err and "epoch 1/1: loss" not in err
