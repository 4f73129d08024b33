"""Study-by-study cohort work as Dask tasks, each result written atomically with a completion record.

A stage (``preprocess``, ``predict --batch``, ``evaluate``) describes its work as one
:class:`StudyTask` per study and a function ``work(task, staging_dir) -> summary`` that writes the
study's files into ``staging_dir``. :func:`run_study_tasks` runs the function as Dask tasks and, on
the worker, for each study:

1. keys the study by its inputs' content (a digest of the files' SHA-256, independent of paths and
   order; a stat fingerprint avoids re-reading unchanged files) and the stage's config;
2. skips it when ``OUT/<name>/`` already holds a valid completion record with that key (a rerun
   after a kill or a failure redoes only what is missing);
3. otherwise runs ``work`` into a staging folder beside ``OUT/<name>`` and renames it into place
   with the record (``.ichct-done.json``: key, config digest, ichct fingerprint, file sizes, the
   summary) inside, so a half-written result is never seen and a task Dask reruns after a worker
   died replaces rather than duplicates;
4. records a failing study (an input error, or a bug) with its reason; the other studies finish.

Outcomes come back in task order, so results never depend on the worker count or the scheduler.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ichct.errors import data_error
from ichct.pipeline.core.atomic import replace_dir, temp_dir_beside
from ichct.pipeline.core.cluster import ClusterSpec, dask_client, ichct_fingerprint
from ichct.pipeline.core.files import sha256_file

#: The completion record inside every finished study folder; written last, inside the staged folder.
RECORD_NAME = ".ichct-done.json"


@dataclass(frozen=True)
class StudyTask:
    """One study's work.

    Parameters
    ----------
    name
        Output folder name under the stage's output root (unique within a run).
    inputs
        The input files whose content keys the result (e.g. every DICOM file of the study).
    payload
        Whatever else the work function needs (picklable; part of the key when JSON-able).

    Examples
    --------
    >>> StudyTask("study-001", ("a.dcm", "b.dcm")).name
    'study-001'
    """

    name: str
    inputs: tuple[str, ...]
    payload: Any = None


@dataclass(frozen=True)
class TaskOutcome:
    """What became of one :class:`StudyTask`: ``done`` (run now), ``skipped`` (done before) or ``failed``."""

    name: str
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the study's result exists (done now or before)."""
        return self.status in ("done", "skipped")


def config_digest(config: Mapping[str, Any]) -> str:
    """A short digest of a stage's JSON-able config (keys sorted), part of every completion key.

    Examples
    --------
    >>> config_digest({"b": 1, "a": [2]}) == config_digest({"a": [2], "b": 1})
    True
    """
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stats(paths: Sequence[str]) -> dict[str, list[int]]:
    out = {}
    for p in paths:
        st = os.stat(p)
        out[os.path.abspath(p)] = [st.st_size, st.st_mtime_ns]
    return out


def content_key(paths: Sequence[str], known: Mapping[str, Any] | None = None) -> tuple[str, dict[str, list[int]]]:
    """The content digest of a study's input files and their stat fingerprint.

    The digest hashes the sorted SHA-256 of each file, so it does not depend on where the files
    lie or in which order they are listed. When ``known`` (an earlier completion record) holds
    the same stat fingerprint, its digest is reused without reading the files again.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a").write_bytes(b"1"); _ = (d / "b").write_bytes(b"2")
    >>> content_key([str(d / "a"), str(d / "b")])[0] == content_key([str(d / "b"), str(d / "a")])[0]
    True
    """
    stats = _stats(paths)
    if known and known.get("input_stats") == stats and known.get("content_key"):
        return str(known["content_key"]), stats
    digests = sorted(sha256_file(p) for p in paths)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest(), stats


def _with_payload(key: str, payload: Any) -> str:
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON-able: the caller keys it through the config instead
        return key
    return hashlib.sha256(f"{key}\n{text}".encode()).hexdigest()


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The completion record of a finished study folder, or None when absent, unreadable or when a
    file it lists is missing or has another size (a truncated or tampered result).

    Examples
    --------
    >>> read_record("/nonexistent") is None
    True
    """
    folder = Path(folder)
    try:
        record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
        for rel, size in record.get("files", {}).items():
            if (folder / rel).stat().st_size != size:
                return None
    except (OSError, ValueError, AttributeError):
        return None
    return record


def _file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _finish(staging: Path, final: Path, record: dict[str, Any]) -> None:
    record["files"] = _file_sizes(staging)
    (staging / RECORD_NAME).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    replace_dir(staging, final)


def writer_tag() -> str:
    """``<host>-<pid>`` of this process, dots left out: the owner written into a staging folder's name.

    Examples
    --------
    >>> writer_tag().endswith(f"-{os.getpid()}")
    True
    """
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_stale_staging(final: Path) -> None:
    """Drop staging folders that an earlier, dead attempt at this study left (a killed worker whose
    task Dask reran). A folder of a live process, or of another machine, is another writer's at work
    (two runs sharing a cache) and is left alone."""
    host = writer_tag().rpartition("-")[0]
    prefix = f".{final.name}."
    for stale in final.parent.glob(f"{glob.escape(prefix)}*.partial"):
        owner_host, _, pid = stale.name[len(prefix):].split(".", 1)[0].rpartition("-")
        if owner_host == host and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def run_one(work: Callable[[StudyTask, Path], Mapping[str, Any]], task: StudyTask, out_root: str,
            config_sha: str) -> TaskOutcome:
    """Run one study's work (on a Dask worker, or here): skip, do and record, or record the failure.

    Parameters
    ----------
    work
        ``work(task, staging_dir) -> summary``: writes the study's files into ``staging_dir``.
    task
        The study.
    out_root
        The stage's output root; the result goes to ``out_root/task.name``.
    config_sha
        :func:`config_digest` of the stage's config.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "in.dcm").write_bytes(b"x")
    >>> def work(task, staging):
    ...     (staging / "out.txt").write_text("ok")
    ...     return {"n": 1}
    >>> t = StudyTask("s1", (str(root / "in.dcm"),))
    >>> run_one(work, t, str(root / "out"), "c1").status, run_one(work, t, str(root / "out"), "c1").status
    ('done', 'skipped')
    """
    final = Path(out_root) / task.name
    staging: Path | None = None
    try:
        previous = read_record(final)
        content, stats = content_key(task.inputs, previous)
        key = _with_payload(content, task.payload)
        if previous and previous.get("input_key") == key and previous.get("config_sha") == config_sha:
            return TaskOutcome(task.name, "skipped", dict(previous.get("summary", {})))
        _remove_stale_staging(final)
        staging = temp_dir_beside(final, tag=writer_tag())
        summary = dict(work(task, staging) or {})
        _finish(staging, final, {"input_key": key, "content_key": content, "input_stats": stats, "config_sha": config_sha,
                                 "ichct": ichct_fingerprint(), "summary": summary})
        return TaskOutcome(task.name, "done", summary)
    except Exception as exc:  # a failing study is recorded; the rest of the cohort goes on
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        known = data_error(exc)
        reason = str(known) if known is not None else f"internal error: {type(exc).__name__}: {exc}"
        return TaskOutcome(task.name, "failed", {}, reason)


def _outcome_of(future: Any, task: StudyTask) -> TaskOutcome:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        return TaskOutcome(task.name, "failed", {}, "the Dask workers running this study died repeatedly "
                                                    "(killed, or past their memory limit)")


def _show_progress(client: Any, futures: list[Any]) -> None:
    from distributed import progress

    with contextlib.redirect_stdout(sys.stderr):
        progress(futures, notebook=False, scheduler=client.scheduler.address)
        print()


def run_study_tasks(work: Callable[[StudyTask, Path], Mapping[str, Any]], tasks: Sequence[StudyTask], *,
                    out_root: str | Path, config: Mapping[str, Any], cluster: ClusterSpec | None = None,
                    client: Any = None) -> list[TaskOutcome]:
    """Run every study's ``work`` as a Dask task; outcomes in task order.

    Parameters
    ----------
    work
        Module-level function ``work(task, staging_dir) -> summary`` (it is pickled to the workers).
    tasks
        The studies; names must be unique.
    out_root
        Output root; each result is ``out_root/<name>/`` with its completion record.
    config
        The stage's JSON-able config; a result made under another config is redone.
    cluster
        Where to run (default: a LocalCluster sized to the machine); ignored when ``client`` is given.
    client
        An already connected ``distributed.Client`` to reuse.

    Examples
    --------
    >>> outcomes = run_study_tasks(work, tasks, out_root="out", config={"model": "sha"})  # doctest: +SKIP
    >>> [o.status for o in outcomes]  # doctest: +SKIP
    ['done', 'skipped', 'failed']
    """
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError("study task names must be unique")
    if not tasks:
        return []
    Path(out_root).mkdir(parents=True, exist_ok=True)
    config_sha = config_digest(config)
    if client is None:
        with dask_client(cluster) as own:
            return _run_on(own, work, tasks, str(out_root), config_sha, bool(cluster and cluster.progress))
    return _run_on(client, work, tasks, str(out_root), config_sha, bool(cluster and cluster.progress))


def _run_on(client: Any, work: Callable[..., Any], tasks: Sequence[StudyTask], out_root: str, config_sha: str,
            progress: bool) -> list[TaskOutcome]:
    run_id = uuid.uuid4().hex[:8]  # keys unique per call: Dask hands back a finished key's old result
    futures = [client.submit(run_one, work, task, out_root, config_sha,
                             key=f"ichct-{config_sha}-{run_id}-{i}-{task.name}", pure=False)
               for i, task in enumerate(tasks)]
    if progress:
        _show_progress(client, futures)
    return [_outcome_of(f, t) for f, t in zip(futures, tasks)]
