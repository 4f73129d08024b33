"""``ichct preprocess``: fill the persistent preprocessed cache of a manifest's studies, as Dask tasks.

Each study is one :class:`~ichct.pipeline.core.study_tasks.StudyTask` (its input files: the
image and label files) run by :func:`~ichct.pipeline.core.study_tasks.run_study_tasks` on a
``LocalCluster`` sized to the machine or the user's scheduler. A rerun skips the entries already
done (same files, same preprocessing config), a study that fails is recorded with its reason and
the others finish, and a worker killed mid-study has its task rerun by Dask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ichct.pipeline.core.cluster import ClusterSpec, dask_client
from ichct.pipeline.core.study_tasks import StudyTask, TaskOutcome, run_study_tasks
from ichct.pipeline.preprocess.cache import CachePlan, build_entry, entry_name, study_task
from ichct.pipeline.preprocess.plans import cache_items, cache_plans

SPLITS = ("training", "test", "all")


@dataclass
class PreprocessReport:
    """What ``preprocess`` did: the cache folders written and every study's outcome (manifest order)."""

    folders: list[str] = field(default_factory=list)
    outcomes: list[TaskOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Studies per status (``done``, ``skipped``, ``failed``)."""
        out = {"done": 0, "skipped": 0, "failed": 0}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary ``ichct preprocess`` prints (failed studies with their reasons)."""
        return {"cache_folders": self.folders, **self.counts(),
                "failed_studies": [{"study": o.name, "reason": o.reason} for o in self.outcomes if not o.ok]}


def preprocess_tasks(kind: str, cfg: Mapping[str, Any],
                     entries: list[dict[str, Any]]) -> list[tuple[CachePlan, StudyTask]]:
    """One ``(plan, task)`` per manifest entry (duplicate series are built once).

    Examples
    --------
    >>> from ichct.pipeline.models.config import resolve_config
    >>> preprocess_tasks("seg", resolve_config("seg"), [])
    []
    """
    plans = cache_plans(kind, cfg)
    seen: set[tuple[str, str]] = set()
    out = []
    for entry, item in zip(entries, cache_items(kind, cfg, entries)):
        plan = plans["label" in item]
        name = entry_name(entry)
        if (plan.digest, name) not in seen:
            seen.add((plan.digest, name))
            out.append((plan, study_task(name, item, plan)))
    return out


def preprocess(manifest: str | Path, kind: str, cache_dir: str | Path, *, split: str = "training",
               config: str | Path | Mapping[str, Any] | None = None, cluster: ClusterSpec | None = None,
               client: Any = None) -> PreprocessReport:
    """Build the disk cache entries of a manifest's studies (what ``ichct train --cache-dir`` reads).

    Parameters
    ----------
    manifest
        A split manifest (checked as training checks it).
    kind
        ``"seg"`` or ``"cls"``: whose preprocessing.
    cache_dir
        The cache root; entries go to ``cache_dir/<kind>-<digest>/<series UID>/``.
    split
        ``"training"`` (every training fold), ``"test"`` or ``"all"``.
    config
        The training config (a file or mapping over the defaults) whose preprocessing is cached:
        the same one ``ichct train --config`` gets.
    cluster, client
        Where the tasks run (see :func:`~ichct.pipeline.core.study_tasks.run_study_tasks`).

    Returns
    -------
    PreprocessReport
        The folders and each study's outcome.

    Examples
    --------
    >>> report = preprocess("m.json", "seg", "cache", cluster=ClusterSpec(workers=2))  # doctest: +SKIP
    >>> report.counts()  # doctest: +SKIP
    {'done': 60, 'skipped': 0, 'failed': 0}
    """
    from ichct.errors import InputError
    from ichct.pipeline.manifests import load_manifest
    from ichct.pipeline.models.config import resolve_config

    if kind not in ("seg", "cls"):
        raise ValueError(f"kind must be 'seg' or 'cls', got {kind!r}")
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    cfg = resolve_config(kind, config)
    entries = load_manifest(manifest, split, check=False)  # a broken study fails alone; train checks all
    report = PreprocessReport()
    by_plan: dict[str, tuple[CachePlan, list[StudyTask]]] = {}
    for plan, task in preprocess_tasks(kind, cfg, entries):
        by_plan.setdefault(plan.digest, (plan, []))[1].append(task)
    if by_plan and client is None:
        with dask_client(cluster) as own:
            return _run_plans(by_plan, cache_dir, cluster, own, report)
    return _run_plans(by_plan, cache_dir, cluster, client, report)


def _run_plans(by_plan: Mapping[str, tuple[CachePlan, list[StudyTask]]], cache_dir: str | Path,
               cluster: ClusterSpec | None, client: Any, report: PreprocessReport) -> PreprocessReport:
    for plan, tasks in by_plan.values():
        folder = plan.folder(cache_dir)
        report.folders.append(str(folder))
        report.outcomes += run_study_tasks(build_entry, tasks, out_root=folder, config=plan.config, cluster=cluster,
                                           client=client)
    return report
