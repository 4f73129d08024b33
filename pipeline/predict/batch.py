"""``predict_batch(...)``: a CSV list of studies predicted as Dask tasks, resumable, one folder per study.

Every listed study is one :class:`~ichct.pipeline.core.study_tasks.StudyTask` run by
:func:`~ichct.pipeline.core.study_tasks.run_study_tasks` on a Dask cluster (a LocalCluster sized to
the machine, or the user's scheduler). On a worker, a study is predicted with
:func:`ichct.pipeline.predict.run.predict` into a staging folder that is renamed to
``OUT_DIR/<id>/`` with a completion record (``.ichct-done.json``) keyed by

* the content of the study's input (every file of the DICOM folder, or the NIfTI file; not its
  path), and
* the models (the digests of their checkpoint / bundle files) with the rule and the options
  (overlays, DICOM SEG, models source),

so a rerun into the same ``OUT_DIR`` skips every study already done with the same input and
models (``summary.csv``: ``done_before`` = ``yes``) and redoes a changed one. A failing study is
recorded with its reason and the others finish; a worker killed mid-study has its task rerun by
Dask, and the atomic rename means no study is ever half-written or written twice. The models are
not pickled from the client: each task carries :class:`~ichct.pipeline.predict.worker_models.ModelSource`
records and a worker loads them once (:func:`~ichct.pipeline.predict.worker_models.load_sources`).
``summary.csv`` lists the studies in list order and is written atomically by the client at the end.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ichct.errors import InputError
from ichct.pipeline.core.atomic import atomic_path
from ichct.pipeline.core.files import files_under
from ichct.pipeline.core.cluster import ClusterSpec, dask_client, usable_cores
from ichct.pipeline.core.study_tasks import RECORD_NAME, StudyTask, TaskOutcome, run_study_tasks
from ichct.pipeline.predict.run import check_models_source, check_out_dir, choose_rule, normalise_models, predict
from ichct.pipeline.predict.worker_models import ModelSource, load_sources, model_source

logger = logging.getLogger("ichct.predict")

__all__ = ["predict_batch", "read_batch_list", "study_inputs", "cluster_for", "seg_dicom_status",
           "SUMMARY_COLUMNS"]

#: Columns of ``summary.csv``; ``done_before`` is ``yes`` for a study an earlier run already predicted.
SUMMARY_COLUMNS = ("id", "path", "status", "error", "rule", "call_any", "score_any", "volume_ml_any", "series_uid",
                   "n_slices", "seg_dicom", "seconds", "out_dir", "models_source", "done_before")
SUMMARY_NAME = "summary.csv"


@dataclass(frozen=True)
class BatchStudy:
    """What a worker needs to predict one study (the task's payload; not JSON, so the completion key
    is the input's content, and the models and options key it through the batch config)."""

    path: str
    sources: tuple[ModelSource, ...]
    rule: str
    overlays: bool
    seg_dicom: bool
    models_source: str


def read_batch_list(list_csv: Path) -> list[tuple[str, Path]]:
    """``(id, path)`` rows of a batch list (column ``path``, optional ``id``); paths relative to the CSV.

    Ids are made file-name safe and unique (``x``, ``x_2``, ...); they name the output folders.
    """
    if not list_csv.is_file():
        raise FileNotFoundError(f"{list_csv}: no such batch list")
    with open(list_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in [c.strip() for c in reader.fieldnames]:
            raise InputError(list_csv, "needs a header row with a 'path' column (and optionally 'id')")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    rows = [r for r in rows if r.get("path")]
    if not rows:
        raise InputError(list_csv, "lists no studies")
    out: list[tuple[str, Path]] = []
    used: set[str] = set()
    for n, r in enumerate(rows, start=1):
        p = Path(r["path"]).expanduser()
        if not p.is_absolute():
            p = list_csv.parent / p
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", r.get("id") or p.name.removesuffix(".gz").removesuffix(".nii")).strip("._")
        base = base or f"study_{n:04d}"
        sid, i = base, 2
        while sid in used:
            sid, i = f"{base}_{i}", i + 1
        used.add(sid)
        out.append((sid, p))
    return out


def study_inputs(path: Path) -> tuple[str, ...]:
    """The files whose content keys a study's result: the NIfTI file, or every file under the DICOM
    folder (a DICOMDIR's folder); none for a path that does not exist (the study then fails).

    Examples
    --------
    >>> study_inputs(Path("/nonexistent"))
    ()
    """
    if not path.exists():
        return ()
    return files_under(path.parent if path.is_file() and path.name.upper() == "DICOMDIR" else path)


def predict_study_task(task: StudyTask, staging: Path) -> dict[str, Any]:
    """Dask work of one study: predict ``task.payload`` (a :class:`BatchStudy`) into ``staging``.

    Returns the study's summary (the ``summary.csv`` fields), kept in its completion record.
    """
    study: BatchStudy = task.payload
    t0 = time.perf_counter()
    models = load_sources(study.sources)
    doc = predict(Path(study.path), staging, models, study.rule, overlays=study.overlays, seg_dicom=study.seg_dicom,
                  models_source=study.models_source)
    f = doc["findings"].get("any", {})
    return {"call_any": f.get("call"), "score_any": f.get("score"), "volume_ml_any": f.get("volume_ml"),
            "n_slices": doc["input"]["shape"][-1], "series_uid": (doc.get("series") or {}).get("series_uid", ""),
            "seg_dicom": seg_dicom_status(doc["outputs"]), "seconds": round(time.perf_counter() - t0, 3)}


def seg_dicom_status(outputs: Mapping[str, Any]) -> str:
    """``summary.csv``'s ``seg_dicom`` field: ``seg.dcm``, or ``skipped: <why>`` (a report's ``outputs``).

    Examples
    --------
    >>> seg_dicom_status({"seg_dicom": "seg.dcm"})
    'seg.dcm'
    >>> seg_dicom_status({"seg_dicom": None, "seg_dicom_skipped": "not requested"})
    'skipped: not requested'
    """
    if outputs.get("seg_dicom"):
        return str(outputs["seg_dicom"])
    return f"skipped: {outputs.get('seg_dicom_skipped', 'no reason recorded')}"


def _is_batch_output(out: Path) -> bool:
    """True when every entry of ``out`` is what a batch writes: ``summary.csv``, a study folder with
    its completion record, or a hidden staging leftover of an interrupted run."""
    for entry in out.iterdir():
        if entry.name.startswith(".") or (entry.name == SUMMARY_NAME and entry.is_file()):
            continue
        if not (entry.is_dir() and (entry / RECORD_NAME).is_file()):
            return False
    return True


def _prepare_out(out: Path, studies: Sequence[tuple[str, Path]], overwrite: bool) -> None:
    """Refuse a foreign non-empty ``out`` unless ``overwrite``; with ``overwrite`` forget the listed
    studies' completion records, so that every study is predicted again."""
    check_out_dir(out, overwrite=overwrite or not out.is_dir() or _is_batch_output(out))
    if overwrite and out.is_dir():
        for sid, _ in studies:
            (out / sid / RECORD_NAME).unlink(missing_ok=True)


def _remove_leftovers(out: Path) -> None:
    """Staging folders of tasks whose worker was killed (their studies were redone elsewhere)."""
    for entry in out.iterdir():
        if entry.name.startswith(".") and entry.name.endswith((".partial", ".old")) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _summary_row(sid: str, path: Path, outcome: TaskOutcome, rule_name: str, models_source: str) -> dict[str, Any]:
    row: dict[str, Any] = {"id": sid, "path": str(path), "rule": rule_name, "models_source": models_source}
    if outcome.ok:
        row.update(outcome.summary, status="ok", error="", out_dir=sid,
                   done_before="yes" if outcome.status == "skipped" else "no")
    else:
        logger.error("%s: %s", path, outcome.reason)
        row.update(status="error", error=outcome.reason or "failed", out_dir="", done_before="no")
    return row


def _write_summary(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in SUMMARY_COLUMNS})


def batch_config(sources: Sequence[ModelSource], rule_name: str, *, overlays: bool, seg_dicom: bool,
                 models_source: str) -> dict[str, Any]:
    """The config that keys every study's completion record: the models' identities (digests, not
    paths), the rule and the output options.

    Examples
    --------
    >>> batch_config([], "max", overlays=False, seg_dicom=True, models_source="user")["rule"]
    'max'
    """
    return {"stage": "predict", "models": [s.identity() for s in sources], "rule": rule_name, "overlays": overlays,
            "seg_dicom": seg_dicom, "models_source": models_source}


def cluster_for(cluster: ClusterSpec | None, n_studies: int, progress: bool) -> ClusterSpec:
    """``cluster`` (default: a local cluster sized to the machine) with at most one local worker per
    study when the worker count is not given (no idle worker is started).

    Examples
    --------
    >>> cluster_for(None, 1, progress=False).workers
    1
    """
    spec = cluster if cluster is not None else ClusterSpec(progress=progress)
    if spec.workers is None and not spec.resolved_scheduler():
        spec = dataclasses.replace(spec, workers=max(1, min(usable_cores(), n_studies)))
    return spec


def predict_batch(list_csv: str | Path, out_dir: str | Path, models: Mapping[str, Any] | Sequence[Any],
                  rule: str | None = None, *, overwrite: bool = False, progress: bool = True,
                  overlays: bool = True, seg_dicom: bool = True, models_source: str = "user",
                  cluster: ClusterSpec | None = None, client: Any = None) -> dict[str, Any]:
    """Predict every study of a CSV list into ``out_dir/<id>/`` as Dask tasks and write ``out_dir/summary.csv``.

    A study that fails (bad input, not CT, ...) is listed in ``summary.csv`` with its reason; the
    others go on. A rerun into the same ``out_dir`` skips the studies already done with the same
    input content and models (``done_before`` = ``yes``). Returns ``{"n", "n_ok", "n_failed",
    "n_done_before", "summary", "rows", "models_source"}``.

    Parameters
    ----------
    list_csv
        CSV with a ``path`` column (DICOM folder or NIfTI, relative to the CSV's folder) and an
        optional ``id`` column (the sub-folder name; default the path's name).
    out_dir
        Output folder: absent, empty, or the output of an earlier batch (resumed). Another
        non-empty folder is refused unless ``overwrite``.
    models
        Loaded models (from run or bundle folders: workers load them again from there, once each).
    rule, overlays, seg_dicom, models_source
        As for :func:`ichct.pipeline.predict.run.predict` (``models_source`` is also a column of
        ``summary.csv``).
    overwrite
        Predict every listed study again (replacing its folder), and accept a foreign non-empty ``out_dir``.
    progress
        Show Dask's progress bar (stderr) when ``cluster`` is not given.
    cluster, client
        Where the tasks run (:class:`~ichct.pipeline.core.cluster.ClusterSpec`; default a local
        cluster with at most one worker per core and per study), or a connected client to reuse.

    Examples
    --------
    >>> predict_batch("studies.csv", "out", [load_run("runs/seg0")])["n_failed"]  # doctest: +SKIP
    0
    """
    mods = normalise_models(models)
    check_models_source(mods, models_source)
    rule_name, _ = choose_rule(mods, rule)
    studies = read_batch_list(Path(list_csv))
    out = Path(out_dir)
    _prepare_out(out, studies, overwrite)
    sources = tuple(model_source(m) for m in mods.values())
    config = batch_config(sources, rule_name, overlays=overlays, seg_dicom=seg_dicom, models_source=models_source)
    tasks = [StudyTask(sid, study_inputs(path), BatchStudy(str(path), sources, rule_name, overlays, seg_dicom,
                                                           models_source)) for sid, path in studies]
    spec = cluster_for(cluster, len(tasks), progress)
    if client is None:
        with dask_client(spec) as own:  # connect before writing anything: an unreachable scheduler leaves no trace
            outcomes = run_study_tasks(predict_study_task, tasks, out_root=out, config=config, cluster=spec, client=own)
    else:
        outcomes = run_study_tasks(predict_study_task, tasks, out_root=out, config=config, cluster=spec, client=client)
    _remove_leftovers(out)
    rows = [_summary_row(sid, path, o, rule_name, models_source) for (sid, path), o in zip(studies, outcomes)]
    summary = out / SUMMARY_NAME
    _write_summary(summary, rows)
    n_failed = sum(r["status"] != "ok" for r in rows)
    n_before = sum(r.get("done_before") == "yes" for r in rows)
    logger.info("batch: %d study(ies), %d ok (%d done before), %d failed; %s", len(rows), len(rows) - n_failed,
                n_before, n_failed, summary)
    return {"n": len(rows), "n_ok": len(rows) - n_failed, "n_failed": n_failed, "n_done_before": n_before,
            "summary": str(summary), "rows": rows, "models_source": models_source}
