"""``ichct train``: run outputs, checkpoints, thresholds, leakage guard, resume and the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from ichct.pipeline.decision import DecisionRule
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.models.network_factory import build_network
from ichct.pipeline.train.engine import load_checkpoint, read_metrics, train

SEG_CFG = {"spacing_mm": [3.0, 3.0, 5.0], "patch": [32, 32, 16], "samples_per_volume": 2, "batch_size": 1,
           "network": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}}
CLS_CFG = {"in_plane": [48, 48], "network": {"feature_dim": 32, "rnn_hidden": 16}}
FOLD = 0


def _env(mp: pytest.MonkeyPatch, base: Path) -> None:
    mp.setenv("ICHCT_SALT", "ichct-test-salt-0123456789abcdef")
    mp.setenv("ICHCT_SALT_FILE", str(base / "salt"))
    mp.setenv("XDG_CONFIG_HOME", str(base))
    mp.setenv("ICHCT_CACHE_DIR", str(base / "cache"))
    mp.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """8 synthetic patients (64 x 64 x 16), manifest with 2 folds and a test set."""
    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    base = tmp_path_factory.mktemp("train_cohort")
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, base / "env")
        cfg = SynthConfig(n_patients=8, seed=3, matrix=64, slices=16, follow_up_fraction=0.0,
                          bone_fraction=0.0, scout_fraction=0.0, tilt_fraction=0.0)
        generate_cohort(cfg, base / "cohort", workers=1)
        manifest = base / "m.json"
        doc = build_manifest("synth", base / "cohort", manifest, folds=2, test_fraction=0.25, seed=0, cache=False)
    return {"base": base, "manifest": manifest, "doc": doc}


@pytest.fixture(scope="module")
def runs(cohort):
    """A 2-epoch seg run and a 2-epoch cls run on fold 0."""
    base = cohort["base"]
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, base / "env")
        seg = train("seg", cohort["manifest"], FOLD, base / "seg", epochs=2, config=SEG_CFG, seed=0)
        cls = train("cls", cohort["manifest"], FOLD, base / "cls", epochs=2, config=CLS_CFG, seed=0)
    return {"seg": (base / "seg", seg), "cls": (base / "cls", cls)}


def _keys(doc, fold=None, split="training"):
    if split == "test":
        return {e["patient_key"] for e in doc["test"]}
    return {e["patient_key"] for e in doc["training"] if (e["fold"] != fold if split == "training" else e["fold"] == fold)}


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_run_dir_contents(kind, runs, cohort):
    run, summary = runs[kind]
    for name in ("config.json", "metrics.csv", "best.pt", "last.pt", "thresholds.json", "train_patients.json"):
        assert (run / name).is_file(), name
    assert not [p for p in run.iterdir() if "partial" in p.name]
    assert summary["epochs"] == 2

    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kind"] == kind and cfg["fold"] == FOLD and cfg["seed"] == 0
    assert cfg["manifest_sha256"] == sha256_file(cohort["manifest"])
    assert Path(cfg["manifest"]) == cohort["manifest"].resolve()
    assert cfg["config"]["epochs"] == 2

    rows = read_metrics(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert int(rows[1]["iteration"]) > int(rows[0]["iteration"]) > 0
    for r in rows:
        assert math.isfinite(float(r["train_loss"])) and float(r["train_loss"]) > 0
    key = "val_dice" if kind == "seg" else "val_auc_any"
    vals = [float(r[key]) for r in rows]
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in vals)
    if kind == "cls":  # the validation fold holds positives and negatives: AUC is defined
        assert all(math.isfinite(v) for v in vals)

    last = load_checkpoint(run / "last.pt")
    best = load_checkpoint(run / "best.pt")
    assert last["epoch"] == 2 and last["iteration"] == int(rows[1]["iteration"])
    assert 1 <= best["epoch"] <= 2 and best["epoch"] == last["best_epoch"]
    for k in ("model", "optimizer", "scheduler", "rng"):
        assert k in last
    assert isinstance(last["rng"]["torch"], torch.Tensor) and last["rng"]["transforms"]
    model = build_network(kind, cfg["config"])
    model.load_state_dict(best["model"])  # strict: the architecture is reproducible from config.json

    rule = DecisionRule.load(run / "thresholds.json")
    if kind == "cls":
        assert rule.name == "consecutive" and set(rule.threshold) == set(LABEL_NAMES)
        assert all(0 < v <= 1 for v in rule.threshold.values())
    else:
        assert rule.name == "seg_volume" and rule.num_seg_classes == 2 and float(rule.threshold) > 0
    assert rule.meta["epoch"] == best["epoch"]


def test_train_patients_are_training_fold_keys(runs, cohort):
    doc = cohort["doc"]
    for kind in ("seg", "cls"):
        tp = json.loads((runs[kind][0] / "train_patients.json").read_text())
        keys = set(tp["patient_keys"])
        assert keys == _keys(doc, FOLD, "training") and len(keys) == len(tp["patient_keys"])
        assert not keys & _keys(doc, FOLD, "validation")
        assert not keys & _keys(doc, split="test")
        assert tp["manifest_sha256"] == sha256_file(cohort["manifest"])


def test_resume_after_kill_matches_uninterrupted_run(runs, cohort, tmp_path):
    """Stop after epoch 1 (as if killed after its checkpoint); --resume ends at epoch 2 like a full run."""
    run = tmp_path / "seg_resume"
    first = train("seg", cohort["manifest"], FOLD, run, epochs=2, config=SEG_CFG, seed=0, _stop_after_epoch=1)
    assert first["epochs"] == 1
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert len(read_metrics(run / "metrics.csv")) == 1
    with pytest.raises(ValueError, match="resume"):
        train("seg", cohort["manifest"], FOLD, run, epochs=2, config=SEG_CFG)
    second = train("seg", cohort["manifest"], FOLD, run, resume=True)
    assert second["epochs"] == 2
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    resumed, full = load_checkpoint(run / "last.pt"), load_checkpoint(runs["seg"][0] / "last.pt")
    assert resumed["epoch"] == 2 and resumed["iteration"] == full["iteration"]
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    # resuming a finished run does nothing and keeps the rows
    train("seg", cohort["manifest"], FOLD, run, resume=True)
    assert len(read_metrics(run / "metrics.csv")) == 2


def test_cli_exit_codes(run_cli, cohort, tmp_path):
    m = cohort["manifest"]
    assert run_cli("train").code == 2
    assert run_cli("train", "det", "--manifest", m, "--fold", "0", "--out", tmp_path / "x").code == 2
    assert run_cli("train", "seg", "--manifest", m, "--out", tmp_path / "x").code == 2  # no --fold
    assert run_cli("train", "seg", "--manifest", m, "--fold", "0", "--out", tmp_path / "x", "--amp").code == 2
    assert run_cli("train", "seg", "--manifest", m, "--fold", "0", "--out", tmp_path / "x", "--epochs", "0").code == 2
    assert run_cli("train", "seg", "--manifest", m, "--fold", "0", "--out", tmp_path / "x", "--max-minutes", "0").code == 2
    # a manifest that fails its checks (moved away from the data: every path is missing)
    moved = tmp_path / "elsewhere" / "m.json"
    moved.parent.mkdir()
    shutil.copy(m, moved)
    r = run_cli("train", "seg", "--manifest", moved, "--fold", "0", "--out", tmp_path / "bad")
    assert r.code == 1 and not (tmp_path / "bad" / "last.pt").exists()
    # fold out of range, missing manifest, nothing to resume, unknown config key
    assert run_cli("train", "seg", "--manifest", m, "--fold", "7", "--out", tmp_path / "y").code == 1
    assert run_cli("train", "seg", "--manifest", tmp_path / "nope.json", "--fold", "0", "--out", tmp_path / "y").code == 1
    assert run_cli("train", "cls", "--manifest", m, "--fold", "0", "--out", tmp_path / "z", "--resume").code == 1
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text(json.dumps({"learning_rate": 1.0}))
    assert run_cli("train", "cls", "--manifest", m, "--fold", "0", "--out", tmp_path / "z", "--config", bad_cfg).code == 1
    assert not os.path.exists(tmp_path / "z" / "last.pt")


def test_sigkill_leaves_loadable_checkpoint_and_resume_completes(cohort, tmp_path):
    """A real ``ichct train`` process killed with SIGKILL once last.pt exists; --resume finishes the run."""
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "seg.json"
    cfg.write_text(json.dumps(SEG_CFG))
    run = tmp_path / "killed"
    args = ["train", "seg", "--manifest", str(cohort["manifest"]), "--fold", str(FOLD), "--out", str(run),
            "--config", str(cfg), "--epochs", "4", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "ichct", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (run / "last.pt").exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    ck = load_checkpoint(run / "last.pt")  # never a partial file
    assert 1 <= ck["epoch"] <= 4
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")][: ck["epoch"]] == list(range(1, ck["epoch"] + 1))
    from ichct.pipeline.cli import main

    assert main(["train", "seg", "--manifest", str(cohort["manifest"]), "--fold", str(FOLD), "--out", str(run),
                 "--resume", "-q"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 4
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2, 3, 4]
    assert not [p for p in run.iterdir() if "partial" in p.name]


def test_max_minutes_stops_cleanly_at_an_epoch_boundary(cohort, tmp_path):
    """A time budget that one epoch already exceeds: stop after epoch 1 with every output written."""
    run = tmp_path / "budget"
    s = train("cls", cohort["manifest"], FOLD, run, epochs=50, config=CLS_CFG, seed=0, max_minutes=1e-4)
    assert s["epochs"] == 1 and s["stopped_by_budget"] and s["train_time_s"] > 0
    for name in ("config.json", "metrics.csv", "best.pt", "last.pt", "thresholds.json"):
        assert (run / name).is_file(), name
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and load_checkpoint(run / "best.pt")["epoch"] == 1
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1]
    assert json.loads((run / "config.json").read_text())["config"]["max_minutes"] == 1e-4
    # a budget that is not reached changes nothing
    s2 = train("cls", cohort["manifest"], FOLD, tmp_path / "roomy", epochs=2, config={**CLS_CFG, "max_minutes": 60},
               seed=0)
    assert s2["epochs"] == 2 and not s2["stopped_by_budget"]


def test_the_last_epoch_is_validated_even_off_the_validation_interval(cohort, tmp_path):
    """val_interval 2: epochs 2, 4, ... validate, and so does the final epoch, whether the epoch
    count or the time budget ends the run (best.pt and thresholds.json always exist)."""
    cfg = {**SEG_CFG, "val_interval": 2, "network": {"channels": [8, 16], "strides": [2], "num_res_units": 0}}
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, cohort["base"] / "env")
        train("seg", cohort["manifest"], FOLD, tmp_path / "three", epochs=3, config=cfg, seed=0)
        rows = read_metrics(tmp_path / "three" / "metrics.csv")
        assert [math.isfinite(float(r["val_auc_any"])) for r in rows] == [False, True, True]
        assert load_checkpoint(tmp_path / "three" / "best.pt")["epoch"] in (2, 3)

        s = train("seg", cohort["manifest"], FOLD, tmp_path / "budget", epochs=50, config=cfg, seed=0,
                  max_minutes=1e-4)
        assert s["epochs"] == 1 and s["stopped_by_budget"]
        rows = read_metrics(tmp_path / "budget" / "metrics.csv")
        assert len(rows) == 1 and math.isfinite(float(rows[0]["val_auc_any"]))
        assert load_checkpoint(tmp_path / "budget" / "best.pt")["epoch"] == 1
        assert DecisionRule.load(tmp_path / "budget" / "thresholds.json").meta["epoch"] == 1


def test_cls_inputs_align_with_slice_labels(cohort):
    """Training items of the classifier: the in-plane crop keeps every slice, and the blood mask of the
    aux-seg target lies on exactly the slices labelled positive (a misaligned stack would fail)."""
    from ichct.pipeline.manifests import load_manifest
    from ichct.pipeline.models.config import resolve_config
    from ichct.pipeline.models.data import cls_items, cls_transforms

    cfg = resolve_config("cls", {**CLS_CFG, "in_plane": [64, 64],
                                 "augment": {"flip_prob": 0.0, "affine_prob": 0.0, "shift_prob": 0.0, "noise_prob": 0.0}})
    assert cfg["network"]["aux_seg"] and cfg["crop"] == "brain"
    tf = cls_transforms(cfg, train=True)
    entries = load_manifest(cohort["manifest"], "training", fold=FOLD, check=False)
    n_pos = 0
    for item in cls_items(entries, voxel_labels=True):
        d = tf(item)
        img, lab, sl = d["image"], d["label"], item["slice_labels"]
        assert img.shape[1:3] == (64, 64) and img.shape[-1] == len(sl) == lab.shape[-1]
        # channel 3: the brain window with the skull stripped (air, 0, outside the intracranial space)
        assert cfg["stripped_brain_channel"] and img.shape[0] == 4
        assert bool((img[3] <= img[0] + 1e-4).all())  # stripping only darkens (resizing mixes edge pixels)
        if (lab[0] > 0).any():  # blood lies inside the skull and is kept
            assert float(img[3][lab[0] > 0].mean()) > 0.8 * float(img[0][lab[0] > 0].mean())
        bone = (img[0] > 0.99) & (img[2] > 0.99)  # white in the brain and soft-tissue windows: mostly skull
        assert float((img[3][bone] < 0.5).float().mean()) > 0.5
        on = (lab[0] > 0).flatten(0, 1).any(0).numpy()
        assert not (on & (sl[:, 0] == 0)).any()  # blood only on positive slices
        n_pos += int(on.sum())
        assert on.sum() >= 0.8 * (sl[:, 0] == 1).sum()  # resizing may drop a sliver, not a slice run
        if on.any():  # blood is brighter than the rest of the brain window
            b = img[0]
            assert float(b[lab[0] > 0].mean()) > float(b[(lab[0] == 0) & (b > 0.1) & (b < 0.99)].mean())
    assert n_pos > 0


def test_resume_of_a_run_saved_before_the_stripped_channel_existed(cohort, tmp_path):
    """A config.json without ``stripped_brain_channel`` (an older run) resumes as trained: 3 channels."""
    run = tmp_path / "old_cls"
    train("cls", cohort["manifest"], FOLD, run, epochs=2, config={**CLS_CFG, "stripped_brain_channel": False},
          seed=0, _stop_after_epoch=1)
    doc = json.loads((run / "config.json").read_text())
    del doc["config"]["stripped_brain_channel"]
    (run / "config.json").write_text(json.dumps(doc))
    assert train("cls", cohort["manifest"], FOLD, run, resume=True)["epochs"] == 2
    from ichct.pipeline.models.config import resolve_config

    weights = load_checkpoint(run / "last.pt")["model"]
    for stripped, same in ((False, True), (True, False)):
        net = build_network("cls", resolve_config("cls", {**CLS_CFG, "stripped_brain_channel": stripped}))
        assert all(v.shape == weights[k].shape for k, v in net.state_dict().items()) is same


def _side_by_side_with_cli_logging(jobs, num_threads):
    """train_side_by_side with ichct's logging set up as the CLI does (restored afterwards)."""
    import logging

    from ichct.pipeline.core.logging_setup import configure_logging
    from ichct.pipeline.train.side_by_side import train_side_by_side

    ichct_logger = logging.getLogger("ichct")
    saved = (list(ichct_logger.handlers), ichct_logger.level, ichct_logger.propagate)
    configure_logging(0)
    try:
        return train_side_by_side(jobs, num_threads=num_threads)
    finally:
        ichct_logger.handlers[:], ichct_logger.level, ichct_logger.propagate = saved


def test_side_by_side_runs_match_runs_trained_alone(cohort, tmp_path, capfd):
    """Two runs in their own processes (one thread each) give the weights of the same runs trained
    alone on one thread, and their log lines carry the run's name."""
    jobs = {kind: {"kind": kind, "manifest": cohort["manifest"], "fold": FOLD, "out_dir": tmp_path / f"par_{kind}",
                   "epochs": 1, "config": cfg, "seed": 3}
            for kind, cfg in (("seg", SEG_CFG), ("cls", CLS_CFG))}
    summaries = _side_by_side_with_cli_logging(jobs, num_threads=1)
    assert set(summaries) == {"seg", "cls"} and all(s["epochs"] == 1 for s in summaries.values())
    assert "INFO: [cls] pos_weight" in capfd.readouterr().err

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = train(**{**jobs["cls"], "out_dir": tmp_path / "alone_cls"})
    finally:
        torch.set_num_threads(threads)
    assert alone["best_metric"] == summaries["cls"]["best_metric"]
    side = load_checkpoint(tmp_path / "par_cls" / "last.pt")["model"]
    for name, tensor in load_checkpoint(tmp_path / "alone_cls" / "last.pt")["model"].items():
        assert torch.equal(tensor, side[name]), name
    assert (tmp_path / "par_seg" / "best.pt").is_file() and (tmp_path / "par_seg" / "thresholds.json").is_file()


def test_side_by_side_failure_stops_the_other_runs(cohort, tmp_path):
    """A run that fails is raised with its own error, and the run beside it is stopped, not left running."""
    import multiprocessing

    from ichct.pipeline.train.side_by_side import train_side_by_side

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "last.pt").write_bytes(b"")  # train() refuses a folder that holds a run
    jobs = {"slow": {"kind": "seg", "manifest": cohort["manifest"], "fold": FOLD, "out_dir": tmp_path / "slow",
                     "epochs": 500, "config": SEG_CFG},
            "bad": {"kind": "cls", "manifest": cohort["manifest"], "fold": FOLD, "out_dir": taken,
                    "epochs": 1, "config": CLS_CFG}}
    with pytest.raises(ValueError, match="holds a run already"):
        train_side_by_side(jobs, num_threads=1)
    assert not multiprocessing.active_children()
    done = read_metrics(tmp_path / "slow" / "metrics.csv") if (tmp_path / "slow" / "metrics.csv").exists() else []
    assert len(done) < 500


def test_cls_inference_transforms_are_the_evaluation_ones_without_the_label_check():
    """Inference preprocesses as validation does, minus the slice-label count check (no labels)."""
    from ichct.pipeline.models.inference import cls_eval_transforms
    from ichct.pipeline.models.config import resolve_config
    from ichct.pipeline.models.data import CheckSliceCountd, cls_transforms

    cfg = resolve_config("cls", CLS_CFG)
    val = [type(t) for t in cls_transforms(cfg, train=False).transforms]
    infer = [type(t) for t in cls_eval_transforms(cfg).transforms]
    assert CheckSliceCountd in val and infer == [t for t in val if t is not CheckSliceCountd]


def test_side_by_side_hands_a_finished_runs_threads_to_the_others():
    """A run's thread count follows the shared count of finished runs at each epoch start
    (in-process, with a fake train(): the hand-over without the timing of real runs)."""
    import multiprocessing

    from ichct.pipeline.train.side_by_side import threads_for, train_sharing_threads

    assert [threads_for(4, 2, k) for k in range(3)] == [2, 4, 4] and threads_for(1, 2, 0) == 1
    finished = multiprocessing.get_context("spawn").Value("i", 0)
    seen = []

    def fake_train(epoch_started, **kwargs):
        for epoch in (1, 2, 3):
            epoch_started(epoch)
            seen.append(torch.get_num_threads())
            if epoch == 1:
                finished.value += 1  # the run beside this one ends during epoch 1
        return {"epochs": 3, **kwargs}

    threads = torch.get_num_threads()
    try:
        summary = train_sharing_threads({"kind": "seg"}, n_runs=2, total_threads=2, finished=finished,
                                        train=fake_train)
        assert summary == {"epochs": 3, "kind": "seg"}
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 2, 2]
    assert finished.value == 2  # this run counted itself as finished too


def test_best_checkpoint_is_chosen_on_a_running_mean_of_validations(cohort, tmp_path):
    """best.pt is the epoch whose validation Dice, averaged with the validation before it
    (best_window 2), is highest (ties to the later epoch); the summary reports that mean."""
    import numpy as np

    cfg = {**SEG_CFG, "val_interval": 1, "best_window": 2}
    summary = train("seg", cohort["manifest"], FOLD, tmp_path / "run", epochs=5, config=cfg, seed=1)
    dice = [float(r["val_dice"]) for r in read_metrics(tmp_path / "run" / "metrics.csv")]
    means = [float(np.mean(dice[max(0, i - 1):i + 1])) for i in range(len(dice))]
    expected = max(range(len(means)), key=lambda i: (means[i], i)) + 1
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == summary["best_epoch"] == expected
    assert summary["best_metric"] == pytest.approx(means[expected - 1], abs=1e-5)
    assert DecisionRule.load(tmp_path / "run" / "thresholds.json").meta["epoch"] == expected
    with pytest.raises(ValueError, match="best_window"):
        train("seg", cohort["manifest"], FOLD, tmp_path / "bad", epochs=1, config={**cfg, "best_window": 0})
