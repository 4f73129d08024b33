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
from ichct.pipeline.core.weights import load_checkpoint
from ichct.pipeline.train.engine import read_metrics, train

SEG_CFG = {"spacing_mm": [3.0, 3.0, 5.0], "patch": [32, 32, 16], "samples_per_volume": 2, "batch_size": 1,
           "network": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}}
CLS_CFG = {"in_plane": [48, 48], "network": {"feature_dim": 32, "rnn_hidden": 16}}
#: the smallest segmenter, for tests of what surrounds training (tracking, console)
TINY_SEG_CFG = {**SEG_CFG, "network": {"channels": [8, 16], "strides": [2], "num_res_units": 0}}
FOLD = 0


def set_test_env(mp: pytest.MonkeyPatch, base: Path) -> None:
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
        set_test_env(mp, base / "env")
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
        set_test_env(mp, base / "env")
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
    for name in ("config.json", "metrics.csv", "best.pt", "last.pt", "thresholds.json", "train_patients.json",
                 "training_curves.png"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))  # the default tracking
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


def test_the_last_epoch_is_validated_even_off_the_validation_interval(cohort, tmp_path, caplog):
    """val_interval 2: epochs 2, 4, ... validate, and so does the final epoch, whether the epoch
    count or the time budget ends the run (best.pt and thresholds.json always exist). The detail log
    (-v) has a line per epoch, with validation metrics only on validated epochs (never ``nan``), and
    MONAI's line of each validation."""
    import logging

    cfg = {**TINY_SEG_CFG, "val_interval": 2}
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.DEBUG, logger="ichct"), \
            caplog.at_level(logging.DEBUG, logger="ichct.detail"):
        set_test_env(mp, cohort["base"] / "env")
        train("seg", cohort["manifest"], FOLD, tmp_path / "three", epochs=3, config=cfg, seed=0)
        rows = read_metrics(tmp_path / "three" / "metrics.csv")
        assert [math.isfinite(float(r["val_auc_any"])) for r in rows] == [False, True, True]
        messages = [r.getMessage() for r in caplog.records]
        epoch_lines = [m for m in messages if m.startswith("epoch ")]
        assert len(epoch_lines) == 3 and "val_" not in epoch_lines[0] and "nan" not in " ".join(epoch_lines)
        assert all("val_dice=" in m and "val_auc_any=" in m for m in epoch_lines[1:]), epoch_lines
        assert [m.split(" ")[0] for m in messages if "Metrics --" in m] == ["Epoch[2]", "Epoch[3]"]
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
                                 "augment": {"flip_prob": 0.0, "affine_prob": 0.0, "shift_prob": 0.0, "noise_prob": 0.0},
                                 "domain": {name: {"prob": 0.0} for name in ("psf_tail", "slice_thickness")}})
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


def _side_by_side_with_cli_logging(jobs, num_threads, verbosity=0, progress=None):
    """train_side_by_side with ichct's logging set up as the CLI does (restored afterwards)."""
    import logging

    from ichct.pipeline.core.logging_setup import DETAIL_LOGGER, configure_logging
    from ichct.pipeline.train.side_by_side import train_side_by_side

    ichct_logger, detail = logging.getLogger("ichct"), logging.getLogger(DETAIL_LOGGER)
    saved = (list(ichct_logger.handlers), ichct_logger.level, ichct_logger.propagate, detail.level)
    configure_logging(verbosity)
    try:
        return train_side_by_side(jobs, num_threads=num_threads, progress=progress)
    finally:
        ichct_logger.handlers[:], ichct_logger.level, ichct_logger.propagate = saved[:3]
        detail.setLevel(saved[3])


def test_side_by_side_runs_match_runs_trained_alone(cohort, tmp_path, capfd):
    """Two runs in their own processes (one thread each) give the weights of the same runs trained
    alone on one thread; their log lines reach the parent's log tagged with the run's name (-v: every
    epoch's line and MONAI's validation line), and their progress reports reach the parent."""
    jobs = {kind: {"kind": kind, "manifest": cohort["manifest"], "fold": FOLD, "out_dir": tmp_path / f"par_{kind}",
                   "epochs": 1, "config": cfg, "seed": 3}
            for kind, cfg in (("seg", SEG_CFG), ("cls", CLS_CFG))}
    reports = []
    summaries = _side_by_side_with_cli_logging(jobs, num_threads=1, verbosity=1,
                                               progress=lambda name, p: reports.append((name, p)))
    assert set(summaries) == {"seg", "cls"} and all(s["epochs"] == 1 for s in summaries.values())
    err = capfd.readouterr().err
    assert "DEBUG ichct.train: [cls] pos_weight" in err and "DEBUG ichct.train: [seg] epoch 1/1: loss" in err
    assert "INFO ichct.detail.train.val: [cls] Epoch[1] Metrics -- val_auc_any" in err
    for name in ("seg", "cls"):
        states = [p.state for n, p in reports if n == name]
        assert states[0] == "starting" and states[-1] == "done" and "training" in states, states
        assert [p for n, p in reports if n == name][-1].best_metric == summaries[name]["best_metric"]

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


def test_tensorboard_tracks_loss_rate_validation_and_config(runs):
    """The default tracking: the event files hold metrics.csv's loss, learning rate and validation
    metrics at their epochs, each iteration's loss, and config.json."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for kind, (run, _) in runs.items():
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
        rows = read_metrics(run / "metrics.csv")
        val_columns = [c for c in rows[0] if c.startswith("val_")]
        assert set(scalars) == {"train_loss", "lr", "iteration_loss", *val_columns}
        for column in ("train_loss", "lr", *val_columns):
            expected = [(int(r["epoch"]), float(r[column])) for r in rows if math.isfinite(float(r[column]))]
            assert [step for step, _ in scalars[column]] == [epoch for epoch, _ in expected], (kind, column)
            assert [v for _, v in scalars[column]] == pytest.approx([v for _, v in expected], rel=1e-4, abs=1e-7)
        assert [step for step, _ in scalars["iteration_loss"]] == list(range(1, int(rows[-1]["iteration"]) + 1))
        (config,) = events.Tensors("config/text_summary")
        assert json.loads(config.tensor_proto.string_val[0].decode()) == json.loads((run / "config.json").read_text())


def test_mlflow_tracking_logs_a_run_into_the_run_folder(cohort, tmp_path, monkeypatch):
    """--tracking mlflow without MLFLOW_TRACKING_URI: a local file store in RUN_DIR/mlruns with the epoch
    metrics, the config as parameters and the run's files as artifacts; no TensorBoard files."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run = tmp_path / "ml_seg"
    train("seg", cohort["manifest"], FOLD, run, epochs=1, config=TINY_SEG_CFG, seed=0, tracking="mlflow")
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # set only while ichct opens its own store
    assert (run / "mlruns").is_dir() and not (run / "tensorboard").exists()
    assert "--tracking mlflow" in json.loads((run / "config.json").read_text())["command"]

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient((run / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("ichct").experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "ml_seg"
    (row,) = read_metrics(run / "metrics.csv")
    for column in ("train_loss", "lr", "val_dice", "val_auc_any"):
        (point,) = client.get_metric_history(found.info.run_id, column)
        assert point.step == 1 and point.value == pytest.approx(float(row[column]), rel=1e-4), column
    assert found.data.params["kind"] == "seg" and found.data.params["config.patch"] == "[32, 32, 16]"
    assert {a.path for a in client.list_artifacts(found.info.run_id)} == {
        "config.json", "metrics.csv", "thresholds.json", "training_curves.png"}


def test_tracking_mlflow_without_mlflow_is_a_clear_error_that_writes_nothing(run_cli, cohort, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails as if the extra were not installed
    args = ("train", "seg", "--manifest", cohort["manifest"], "--fold", FOLD, "--tracking", "mlflow", "--out")
    res = run_cli(*args, tmp_path / "new" / "run")
    assert res.code == 1 and "pip install 'ichct[mlflow]'" in res.err and "Traceback" not in res.err, res.err
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert run_cli(*args, tmp_path / "empty").code == 1
    assert list((tmp_path / "empty").iterdir()) == []
    assert run_cli(*args[:-2], "wandb", "--out", tmp_path / "x").code == 2


def test_cli_console_shows_a_progress_line_not_the_epoch_logs(run_cli, cohort, tmp_path):
    """Off a terminal, `ichct train` writes a line when the run starts and one when it ends (every 30 s
    in between): no per-epoch log lines, no MONAI metrics lines, no `nan` of unvalidated epochs."""
    cfg = tmp_path / "seg.json"
    cfg.write_text(json.dumps({**TINY_SEG_CFG, "val_interval": 2}))
    res = run_cli("train", "seg", "--manifest", cohort["manifest"], "--fold", FOLD, "--out", tmp_path / "run",
                  "--config", cfg, "--epochs", "2", "--tracking", "none")  # epoch 1 is not validated
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    first, last = res.err.splitlines()
    assert first == "[seg] caching data; then up to 2 epochs"
    assert last.startswith("[seg] done: 2/2 epochs in ") and last.endswith(
        f"best val_dice {summary['best_metric']:.3f} (epoch {summary['best_epoch']})"), last
    assert not (tmp_path / "run" / "tensorboard").exists() and (tmp_path / "run" / "training_curves.png").is_file()
