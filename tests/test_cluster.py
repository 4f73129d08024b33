"""The Dask cluster every cohort command runs on, and the study-task runner with its completion records.

One 2-worker LocalCluster serves the module (its start costs seconds on 2 cores); the tests that
need another cluster (a scheduler that does not answer, workers of another ichct) make their own.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from ichct.errors import InputError
from ichct.pipeline.core.cluster import ClusterError, ClusterSpec, dask_client, ichct_fingerprint
from ichct.pipeline.core.study_tasks import RECORD_NAME, StudyTask, read_record, run_one, run_study_tasks


def copy_work(task: StudyTask, staging: Path) -> dict:
    """Copy the input's text, upper-cased; an input reading 'corrupt' is a bad study."""
    text = Path(task.inputs[0]).read_text()
    if text == "corrupt":
        raise InputError(task.inputs[0], "not a CT image")
    (staging / "out.txt").write_text(text.upper())
    return {"chars": len(text), "pid": os.getpid()}


def dying_work(task: StudyTask, staging: Path) -> dict:
    """Kill this worker process the first time (a marker file remembers), then do the work."""
    marker = Path(task.payload)
    (staging / "started").write_text("x")
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return copy_work(task, staging)


def buggy_work(task: StudyTask, staging: Path) -> dict:
    raise KeyError("spacing")


@pytest.fixture(scope="module")
def client():
    with dask_client(ClusterSpec(workers=2)) as c:
        yield c


def _inputs(folder: Path, texts: list[str]) -> list[StudyTask]:
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for i, text in enumerate(texts):
        path = folder / f"in{i}.txt"
        path.write_text(text)
        tasks.append(StudyTask(f"study-{i:02d}", (str(path),)))
    return tasks


def _outputs(root: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(root.glob("*/out.txt"))}


def test_workers_run_this_ichct_with_pinned_threads(client):
    import torch

    fingerprints = client.run(ichct_fingerprint)
    assert len(fingerprints) == 2 and set(fingerprints.values()) == {ichct_fingerprint()}
    assert set(client.run(torch.get_num_threads).values()) == {1}
    assert set(client.run(os.environ.get, "OMP_NUM_THREADS").values()) == {"1"}


def _library_logging() -> tuple[int, int, bool]:
    import logging
    import warnings

    hidden = any(f[0] == "ignore" and f[1] is not None and f[1].pattern == "NvImgCodecPydicomReader"
                 for f in warnings.filters)
    return logging.getLogger("ichct").level, logging.getLogger("monai").level, hidden


def test_workers_log_at_the_clients_verbosity(monkeypatch):
    """As the CLI without -v: MONAI's chatter hidden in each worker, not a copy per worker on the terminal."""
    import logging

    monkeypatch.setattr(logging.getLogger("ichct"), "level", logging.INFO)
    with dask_client(ClusterSpec(workers=1)) as c:
        assert set(c.run(_library_logging).values()) == {(logging.INFO, logging.ERROR, True)}


def test_failed_study_is_recorded_and_the_rest_finish(client, tmp_path):
    tasks = _inputs(tmp_path / "in", ["a", "bb", "corrupt", "ddd"])
    outcomes = run_study_tasks(copy_work, tasks, out_root=tmp_path / "out", config={"v": 1}, client=client)
    assert [o.status for o in outcomes] == ["done", "done", "failed", "done"]
    assert outcomes[2].reason == f"{tasks[2].inputs[0]}: not a CT image"
    assert _outputs(tmp_path / "out") == {"study-00": "A", "study-01": "BB", "study-03": "DDD"}
    assert not (tmp_path / "out" / "study-02").exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_a_bug_is_recorded_as_an_internal_error(client, tmp_path):
    tasks = _inputs(tmp_path / "in", ["a"])
    (outcome,) = run_study_tasks(buggy_work, tasks, out_root=tmp_path / "out", config={}, client=client)
    assert outcome.status == "failed" and outcome.reason == "internal error: KeyError: 'spacing'"


def test_rerun_skips_done_studies_and_redoes_changed_or_truncated_ones(client, tmp_path):
    tasks = _inputs(tmp_path / "in", ["a", "b", "c"])
    out = tmp_path / "out"
    first = run_study_tasks(copy_work, tasks, out_root=out, config={"v": 1}, client=client)
    assert [o.status for o in first] == ["done"] * 3
    Path(tasks[1].inputs[0]).write_text("changed")
    (out / "study-02" / "out.txt").write_text("")  # truncated: the record lists another size
    second = run_study_tasks(copy_work, tasks, out_root=out, config={"v": 1}, client=client)
    assert [o.status for o in second] == ["skipped", "done", "done"]
    assert second[0].summary == first[0].summary
    assert _outputs(out) == {"study-00": "A", "study-01": "CHANGED", "study-02": "C"}
    third = run_study_tasks(copy_work, tasks, out_root=out, config={"v": 2}, client=client)
    assert [o.status for o in third] == ["done"] * 3, "another config redoes every study"


def test_content_key_ignores_paths_but_not_bytes(tmp_path):
    a = _inputs(tmp_path / "a", ["same"])[0]
    b = _inputs(tmp_path / "b", ["same"])[0]
    run_one(copy_work, a, str(tmp_path / "out"), "c")
    key_a = read_record(tmp_path / "out" / a.name)["input_key"]
    assert run_one(copy_work, b, str(tmp_path / "out"), "c").status == "skipped", "same bytes elsewhere"
    Path(b.inputs[0]).write_text("other")
    assert run_one(copy_work, b, str(tmp_path / "out"), "c").status == "done"
    assert read_record(tmp_path / "out" / a.name)["input_key"] != key_a


def test_results_do_not_depend_on_the_worker_count(client, tmp_path):
    tasks = _inputs(tmp_path / "in", [chr(97 + i) * (i + 1) for i in range(8)])
    two = run_study_tasks(copy_work, tasks, out_root=tmp_path / "two", config={}, client=client)
    one = run_study_tasks(copy_work, tasks, out_root=tmp_path / "one", config={},
                          cluster=ClusterSpec(workers=1))
    assert [(o.name, o.status, o.summary["chars"]) for o in one] == [(o.name, o.status, o.summary["chars"]) for o in two]
    assert _outputs(tmp_path / "one") == _outputs(tmp_path / "two")
    assert len({o.summary["pid"] for o in two}) == 2, "both workers took studies"


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(client, tmp_path):
    tasks = [StudyTask(t.name, t.inputs, str(tmp_path / f"killed-{t.name}"))
             for t in _inputs(tmp_path / "in", ["a", "b", "c", "d"])]
    for t in tasks[1:]:  # only the first study kills its worker
        Path(t.payload).write_text("no kill")
    outcomes = run_study_tasks(dying_work, tasks, out_root=tmp_path / "out", config={}, client=client)
    assert [o.status for o in outcomes] == ["done"] * 4
    assert (tmp_path / "killed-study-00").read_text() != str(outcomes[0].summary["pid"]), "rerun elsewhere"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [t.name for t in tasks]
    assert read_record(tmp_path / "out" / "study-00")["files"] == {"out.txt": 1, "started": 1}
    _wait_for_workers(client, 2)


def _wait_for_workers(client, n: int, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while len(client.scheduler_info()["workers"]) < n and time.time() < deadline:
        time.sleep(0.2)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_scheduler_that_does_not_answer_is_a_clear_error(tmp_path, monkeypatch):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.time()
    with pytest.raises(ClusterError, match=f"Dask scheduler {address} did not answer within 1 s"):
        with dask_client(ClusterSpec(scheduler=address, connect_timeout_s=1)):
            pass
    assert time.time() - start < 20
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    with pytest.raises(ClusterError, match="did not answer"):
        run_study_tasks(copy_work, _inputs(tmp_path / "in", ["a"]), out_root=tmp_path / "out", config={},
                        cluster=ClusterSpec(connect_timeout_s=1))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_workers_of_another_ichct_are_refused():
    import ichct
    from distributed import LocalCluster

    def other_version() -> None:
        import ichct as worker_ichct

        worker_ichct.__version__ = "0.0.0-other"

    with LocalCluster(n_workers=1, processes=True, host="127.0.0.1", dashboard_address=":0") as cluster:
        with dask_client(ClusterSpec(scheduler=cluster.scheduler_address, torch_threads=2)) as c:
            import torch

            assert set(c.run(torch.get_num_threads).values()) == {2}, "a user's workers get pinned too"
            c.run(other_version)
        with pytest.raises(ClusterError, match=r"run another ichct than this client \(" + ichct.__version__):
            with dask_client(ClusterSpec(scheduler=cluster.scheduler_address)):
                pass


def test_task_names_must_be_unique(tmp_path):
    task = _inputs(tmp_path / "in", ["a"])[0]
    with pytest.raises(ValueError, match="unique"):
        run_study_tasks(copy_work, [task, task], out_root=tmp_path / "out", config={})


def test_record_is_written_last_inside_the_result(tmp_path):
    task = _inputs(tmp_path / "in", ["abc"])[0]
    outcome = run_one(copy_work, task, str(tmp_path / "out"), "c")
    record = read_record(tmp_path / "out" / task.name)
    assert outcome.status == "done" and (tmp_path / "out" / task.name / RECORD_NAME).is_file()
    assert record["summary"] == outcome.summary and record["ichct"] == ichct_fingerprint()
    assert record["files"] == {"out.txt": 3}


def test_only_staging_of_dead_writers_is_removed(tmp_path):
    import subprocess
    import sys as _sys

    from ichct.pipeline.core.atomic import temp_dir_beside
    from ichct.pipeline.core.study_tasks import writer_tag

    task = _inputs(tmp_path / "in", ["abc"])[0]
    final = tmp_path / "out" / task.name
    host = writer_tag().rpartition("-")[0]
    dead = subprocess.run([_sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_dir = temp_dir_beside(final, tag=f"{host}-{int(dead.stdout)}")
    live_dir = temp_dir_beside(final, tag=writer_tag())  # another run sharing the output, still at work
    other_host = temp_dir_beside(final, tag="elsewhere-1")
    assert run_one(copy_work, task, str(tmp_path / "out"), "c").status == "done"
    assert not dead_dir.exists(), "a dead attempt's staging folder is dropped"
    assert live_dir.is_dir() and other_host.is_dir(), "a live or remote writer's staging folder is left alone"
