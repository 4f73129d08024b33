"""``ichct train`` under ``torchrun``: 2 nodes x 1 process on loopback (c10d rendezvous, gloo).

With a deterministic configuration (the whole padded volume as the one "random" crop, no
augmentation, no normalisation layer, per-sample Dice) two ranks of ``batch_size`` 2 reach the
weights of one process with ``batch_size`` 4 (the same global batch), and the same validation
metrics and thresholds; only rank 0 writes a run folder; ``--resume`` continues a run under torchrun.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ichct.pipeline.models.config import DEFAULTS
from ichct.pipeline.train.distributed import World, world_from_env
from ichct.pipeline.core.weights import load_checkpoint
from ichct.pipeline.train.engine import read_metrics, train

#: The whole resampled volume (at most 33 x 33 x 16 voxels) padded to the patch: the crop is fixed.
DETERMINISTIC_SEG = {"spacing_mm": [8.0, 8.0, 8.0], "crop": None, "patch": [40, 40, 16], "samples_per_volume": 1,
                     "dice_batch": False, "lr": 1e-3, "val_interval": 1, "best_window": 1,
                     "network": {"channels": [4, 8], "strides": [2], "num_res_units": 0, "norm": None},
                     "augment": {"flip_prob": 0.0, "affine_prob": 0.0, "shift_prob": 0.0, "noise_prob": 0.0},
                     "domain": {name: {"prob": 0.0} for name in DEFAULTS["seg"]["domain"]}}
FOLD = 1
EPOCHS = 3
BIN = Path(sys.executable).parent


def _env(base: Path) -> dict[str, str]:
    return {"ICHCT_SALT": "ichct-test-salt-0123456789abcdef", "ICHCT_SALT_FILE": str(base / "salt"),
            "XDG_CONFIG_HOME": str(base), "ICHCT_CACHE_DIR": str(base / "cache"), "MPLBACKEND": "Agg"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, host_process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Until 127.0.0.1:``port`` accepts connections (or the process meant to open it has exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and host_process.poll() is None:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)


def _torchrun_two_nodes(base: Path, commands: tuple[list[str], list[str]], cwd: Path | None = None) -> list[str]:
    """Two torchrun "nodes" of one process each on loopback (c10d rendezvous), each running its
    command (after ``torchrun ... --``); their stdouts."""
    port = _free_port()
    env = {**os.environ, **_env(base / "env"), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    launcher = [str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"ichct-test-{port}"]
    # Each node writes to files, not pipes: waiting on one node while the other fills a 64 KiB pipe
    # (warnings of its training) blocks that node in a collective and both hang.
    logs = [(base / f"node{i}_{port}.out", base / f"node{i}_{port}.err") for i in range(len(commands))]
    procs = []
    for cmd, (out, err) in zip(commands, logs):
        if procs:  # the first node hosts the rendezvous store: the second starts once it answers
            _wait_for_port(port, procs[0])
        with open(out, "w") as out_fh, open(err, "w") as err_fh:
            procs.append(subprocess.Popen([*launcher, *cmd], cwd=cwd, env=env, stdout=out_fh, stderr=err_fh, text=True))
    deadline = time.monotonic() + 240
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
    for i, (p, (_, err)) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"node {i} exit {p.returncode}: " + "\n".join(
            f"node {j} stderr: {e.read_text()[-2000:]}" for j, (_, e) in enumerate(logs))
    return [out.read_text() for out, _ in logs]


def _two_nodes(base: Path, outs: tuple[Path, Path], *args: str) -> None:
    """``ichct train ARGS --out OUT`` as two torchrun nodes (``--no-python ichct``), one ``OUT`` each."""
    cmd = ["--no-python", str(BIN / "ichct"), "train", *args]
    stdouts = _torchrun_two_nodes(base, ([*cmd, "--out", str(outs[0])], [*cmd, "--out", str(outs[1])]))
    for out in stdouts:
        assert json.loads(out.strip().splitlines()[-1])["kind"] == args[0]  # rank 0's summary on every node


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process (global batch 4, and batch 2), and 2 ranks x batch 2: 2 epochs, then resumed to 3."""
    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    base = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _env(base / "env").items():
            mp.setenv(key, value)
        generate_cohort(SynthConfig(n_patients=8, seed=3, matrix=32, slices=8, follow_up_fraction=0.0,
                                    bone_fraction=0.0, scout_fraction=0.0, tilt_fraction=0.0), base / "cohort", workers=1)
        manifest = base / "m.json"
        build_manifest("synth", base / "cohort", manifest, folds=2, test_fraction=0.0, seed=0, cache=False)
        # as the torchrun run below: EPOCHS - 1 epochs, then resumed (the cosine schedule follows --epochs)
        for name, batch in (("single", 4), ("half_batch", 2)):
            train("seg", manifest, FOLD, base / name, epochs=EPOCHS - 1,
                  config={**DETERMINISTIC_SEG, "batch_size": batch}, tracking="none")
            train("seg", manifest, FOLD, base / name, epochs=EPOCHS, resume=True, tracking="none")
    config = base / "ddp.json"
    config.write_text(json.dumps({**DETERMINISTIC_SEG, "batch_size": 2}))
    args = ("seg", "--manifest", str(manifest), "--fold", str(FOLD), "--config", str(config), "-q")
    node_outs = (base / "node_a" / "run", base / "node_b" / "run")  # as if the nodes shared no file system
    _two_nodes(base, node_outs, *args, "--epochs", str(EPOCHS - 1))
    written = [out for out in node_outs if out.parent.exists()]
    _two_nodes(base, (written[0], written[0]), *args, "--epochs", str(EPOCHS), "--resume")
    return {"base": base, "manifest": manifest, "node_outs": node_outs, "written": written}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_only_rank0_writes(runs):
    [run] = runs["written"]  # one node holds the run folder; the other node's --out was never created
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.csv", "tensorboard",
                                                     "thresholds.json", "train_patients.json", "training_curves.png"]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # rank 0's: the run and its resume
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2, 3]  # one row per epoch, resumed


def test_two_ranks_match_one_process_with_the_same_global_batch(runs):
    base, [run] = runs["base"], runs["written"]
    ddp = load_checkpoint(run / "last.pt")
    single = load_checkpoint(base / "single" / "last.pt")
    half = load_checkpoint(base / "half_batch" / "last.pt")
    assert ddp["epoch"] == single["epoch"] == EPOCHS and ddp["iteration"] == single["iteration"] == EPOCHS
    assert _max_diff(ddp["model"], single["model"]) < 1e-5
    assert _max_diff(half["model"], single["model"]) > 1e-4  # the global batch matters: the test can fail
    ddp_rows, single_rows = read_metrics(run / "metrics.csv"), read_metrics(base / "single" / "metrics.csv")
    for a, b in zip(ddp_rows, single_rows, strict=True):
        for column in ("train_loss", "lr", "val_dice", "val_auc_any"):  # validation sharded over the ranks
            assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-5), column
    ddp_rule = json.loads((run / "thresholds.json").read_text())
    single_rule = json.loads((base / "single" / "thresholds.json").read_text())
    assert ddp_rule["threshold"] == pytest.approx(single_rule["threshold"])
    assert ddp_rule["meta"]["n_val"] == single_rule["meta"]["n_val"] == 4  # every validation study once


def test_world_from_env():
    assert world_from_env({}) == World()
    world = world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (world.enabled, world.is_main, world.local_rank) == (True, False, 1)
    assert world.rank_seed(5) != World().rank_seed(5) == 5
    with pytest.raises(ValueError, match="RANK"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2"})


def test_bundle_multi_gpu_train_on_two_nodes(runs, tmp_path):
    """The committed segmentation bundle's train.json + multi_gpu_train.json: DDP over 2 nodes x 1
    process with gloo, the studies streamed from the bundle's disk cache, rank 0 saving the model."""
    from ichct.pipeline.bundle.package import load_bundle
    from ichct.pipeline.manifests import load_manifest

    bundle = tmp_path / "ich_ct_segmentation"
    shutil.copytree(Path(__file__).resolve().parents[1] / "bundles" / "ich_ct_segmentation", bundle)
    (bundle / "models" / "model.pt").unlink()
    cmd = ["-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
           "--epochs", "1", "--manifest", str(runs["manifest"])]
    _torchrun_two_nodes(runs["base"], (cmd, cmd), cwd=bundle)
    assert load_bundle(bundle).network is not None  # models/model.pt written (by rank 0) and loadable
    n_train = len(load_manifest(runs["manifest"], "training", fold=0))  # the bundle trains with fold 0 validated
    assert len(list((bundle / "cache" / "train").glob("*.pt"))) == n_train  # each study cached once
    assert list((bundle / "cache" / "validate").glob("*.pt"))
