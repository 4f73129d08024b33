"""``predict --batch`` and ``evaluate``'s per-study inference as Dask tasks: faults, reruns, worker counts.

One 2-worker LocalCluster serves the module (the CLI reaches it through ``--scheduler``); a
1-worker one is started for the worker-count comparisons. Studies are tiny NIfTI volumes and the
model a randomly initialised seg run (``predict_helpers.write_run``).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import threading
import time

import nibabel as nib
import numpy as np
import pytest

import predict_helpers as ph
from ichct.pipeline.core.cluster import ClusterSpec, dask_client

N_STUDIES = 20
CORRUPT = "s07"


@pytest.fixture(scope="module")
def client():
    with dask_client(ClusterSpec(workers=2)) as c:
        yield c


@pytest.fixture(scope="module")
def client1():
    with dask_client(ClusterSpec(workers=1)) as c:
        yield c


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("cohort_dask")


@pytest.fixture(scope="module")
def seg_run(base):
    run = ph.write_run(base / "runs" / "seg", "seg")
    (run / "train_patients.json").write_text(json.dumps({"patient_keys": []}), encoding="utf-8")  # for evaluate
    return run


def _write_study(path, seed: int) -> None:
    """A 40 x 40 x 10 head (3 x 3 x 5 mm) with a blood blob whose place depends on ``seed``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in (40, 40, 10)], indexing="ij"), -1)
    mm = grid * np.array([3.0, 3.0, 5.0])
    hu = np.full((40, 40, 10), -1000.0, dtype=np.float32)
    hu[np.linalg.norm(mm - [60, 60, 25], axis=-1) < 50] = 35.0
    center = [60 + rng.uniform(-15, 15), 60 + rng.uniform(-15, 15), 25]
    hu[np.linalg.norm(mm - center, axis=-1) < 14] = 65.0
    nib.save(nib.Nifti1Image(hu, np.diag([3.0, 3.0, 5.0, 1.0])), str(path))


@pytest.fixture(scope="module")
def cohort(base):
    folder = base / "studies"
    folder.mkdir()
    lines = ["id,path"]
    for n in range(N_STUDIES):
        sid = f"s{n:02d}"
        path = folder / f"{sid}.nii.gz"
        if sid == CORRUPT:
            path.write_bytes(b"this is not a NIfTI file\n")
        else:
            _write_study(path, n)
        lines.append(f"{sid},studies/{path.name}")
    (base / "list.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return base / "list.csv"


def _summary(out):
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _batch_cli(run_cli, client, cohort, out, seg_run, *extra):
    return run_cli("predict", "--batch", cohort, out, "--run", seg_run, "--no-overlays", "-q",
                   "--scheduler", client.scheduler.address, *extra)


def test_corrupt_study_is_recorded_and_reruns_skip_what_is_done(run_cli, client, cohort, seg_run, base):
    out = base / "out_cli"
    r = _batch_cli(run_cli, client, cohort, out, seg_run)
    assert r.code == 1, r.err
    rows = _summary(out)
    assert [row["id"] for row in rows] == [f"s{n:02d}" for n in range(N_STUDIES)]  # list order
    bad = [row for row in rows if row["status"] != "ok"]
    assert [row["id"] for row in bad] == [CORRUPT] and f"{CORRUPT}.nii.gz" in bad[0]["error"]
    assert {row["done_before"] for row in rows if row["status"] == "ok"} == {"no"}
    assert sorted(p.name for p in out.iterdir()) == sorted([row["id"] for row in rows if row["status"] == "ok"]
                                                           + ["summary.csv"])  # no staging leftovers
    assert json.loads(r.out)["n_ok"] == N_STUDIES - 1

    reports = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    _write_study(base / "studies" / "s03.nii.gz", 1000)  # a changed study is redone, the rest skipped
    r = _batch_cli(run_cli, client, cohort, out, seg_run)
    assert r.code == 1 and json.loads(r.out)["n_done_before"] == N_STUDIES - 2
    rows = {row["id"]: row for row in _summary(out)}
    assert rows["s03"]["done_before"] == "no" and rows["s04"]["done_before"] == "yes"
    assert rows[CORRUPT]["status"] == "error"
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    assert {k for k in after if after[k] != reports[k]} == {"s03"}

    r = _batch_cli(run_cli, client, cohort, out, seg_run, "--overwrite")  # --overwrite redoes every study
    assert r.code == 1 and json.loads(r.out)["n_done_before"] == 0


def test_a_foreign_output_folder_is_refused(run_cli, client, cohort, seg_run, base):
    out = base / "foreign"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    r = _batch_cli(run_cli, client, cohort, out, seg_run)
    assert r.code == 1 and "--overwrite" in r.err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def _outputs(out):
    """Each study's mask voxels and findings (no times)."""
    result = {}
    for row in _summary(out):
        if row["status"] == "ok":
            doc = json.loads((out / row["id"] / "report.json").read_text(encoding="utf-8"))
            mask = np.asarray(nib.load(out / row["id"] / "mask.nii.gz").dataobj)
            result[row["id"]] = (mask.tobytes(), json.dumps(doc["findings"], sort_keys=True))
        else:
            result[row["id"]] = row["error"]
    return result


def test_same_outputs_with_1_and_2_workers(client, client1, cohort, seg_run, base):
    from ichct.pipeline.models.inference import load_run
    from ichct.pipeline.predict.batch import predict_batch

    models = [load_run(seg_run)]
    one = predict_batch(cohort, base / "w1", models, overlays=False, client=client1)
    two = predict_batch(cohort, base / "w2", models, overlays=False, client=client)
    assert one["n_failed"] == two["n_failed"] == 1
    assert _outputs(base / "w1") == _outputs(base / "w2")


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(client, cohort, seg_run, base):
    from ichct.pipeline.models.inference import load_run
    from ichct.pipeline.predict.batch import predict_batch

    pids = client.run(os.getpid)
    result: dict = {}
    out = base / "killed"
    worker = threading.Thread(target=lambda: result.update(predict_batch(
        cohort, out, [load_run(seg_run)], overlays=False, client=client)))
    worker.start()
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and worker.is_alive():
        busy = [addr for addr, keys in client.processing().items() if keys]
        victim = busy[0] if busy and out.is_dir() and any(out.iterdir()) else None
        time.sleep(0.05)
    assert victim is not None, "no study ran"
    os.kill(pids[victim], signal.SIGKILL)
    worker.join(300)
    assert not worker.is_alive()
    rows = _summary(out)
    assert [row["status"] for row in rows].count("ok") == N_STUDIES - 1 == result["n_ok"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted({row["id"] for row in rows if row["status"] == "ok"} | {"summary.csv"})
    for row in rows:
        if row["status"] == "ok":
            files = sorted(p.name for p in (out / row["id"]).iterdir())
            assert files == [".ichct-done.json", "mask.nii.gz", "report.json"]


def test_an_unreachable_scheduler_is_a_clear_error(run_cli, cohort, seg_run, base):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = base / "never"
    r = run_cli("predict", "--batch", cohort, out, "--run", seg_run, "--scheduler", f"tcp://127.0.0.1:{port}",
                "--connect-timeout", "1")
    assert r.code == 1 and f"tcp://127.0.0.1:{port}" in r.err and "did not answer" in r.err
    assert "Traceback" not in r.err and not out.exists()


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    folder = tmp_path_factory.mktemp("cohort_eval")
    cfg = SynthConfig(n_patients=6, seed=5, matrix=64, slices=16, follow_up_fraction=0.0, bone_fraction=0.0,
                      scout_fraction=0.0, tilt_fraction=0.0)
    generate_cohort(cfg, folder / "cohort", workers=1)
    build_manifest("synth", folder / "cohort", folder / "m.json", folds=2, test_fraction=0.34, seed=0, cache=False)
    return folder / "m.json"


def _evaluate(seg_run, manifest, out, client):
    from ichct.pipeline.evaluate.run import evaluate

    return evaluate([seg_run], manifest, out, split="all", n_boot=20, client=client)


def test_evaluate_metrics_do_not_depend_on_the_workers_and_reruns_resume(client, client1, seg_run, manifest, base,
                                                                          monkeypatch):
    _evaluate(seg_run, manifest, base / "eval1", client1)
    _evaluate(seg_run, manifest, base / "eval2", client)
    assert (base / "eval1" / "metrics.json").read_bytes() == (base / "eval2" / "metrics.json").read_bytes()
    assert not (base / "eval2" / "studies").exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ichct.pipeline.evaluate.report.write_report", interrupted)
    out = base / "eval3"
    with pytest.raises(KeyboardInterrupt):
        _evaluate(seg_run, manifest, out, client)
    records = {p: p.stat().st_mtime_ns for p in (out / "studies").glob("*/.ichct-done.json")}
    assert len(records) == 6
    with pytest.raises(KeyboardInterrupt):
        _evaluate(seg_run, manifest, out, client)  # the finished studies are not predicted again
    assert {p: p.stat().st_mtime_ns for p in (out / "studies").glob("*/.ichct-done.json")} == records
    monkeypatch.undo()
    _evaluate(seg_run, manifest, out, client)
    assert (out / "metrics.json").read_bytes() == (base / "eval2" / "metrics.json").read_bytes()
