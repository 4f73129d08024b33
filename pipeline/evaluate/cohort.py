"""The per-study inference of ``ichct evaluate`` as Dask tasks: one task per manifest entry.

ichct's own models (``--run`` / ``--bundle``) predict each study on a Dask worker
(:func:`~ichct.pipeline.core.study_tasks.run_study_tasks`): the task carries the entry and
:class:`IchctStudyPredictor` records (model folders with their digests and the decision rules,
never loaded networks), the worker loads the models once
(:func:`~ichct.pipeline.predict.worker_models.load_sources`) and returns the JSON-able per-study
rows (:func:`ichct.pipeline.evaluate.run.study_row`), which it also keeps with a completion
record under ``EVAL_DIR/studies/<index>-<study>/`` so that a rerun of an interrupted evaluation
skips the finished studies. The client puts the rows back in manifest order, so the metrics do
not depend on the number of workers. Another tool's predictions (``--predictions``) are read in
the client process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ichct.errors import InputError
from ichct.pipeline.core.cluster import ClusterSpec, dask_client
from ichct.pipeline.core.study_tasks import StudyTask, run_study_tasks
from ichct.pipeline.decision import DecisionRule
from ichct.pipeline.evaluate.lesions import DEFAULT_LESIONS, LesionDefinition
from ichct.pipeline.predict.batch import cluster_for, study_inputs
from ichct.pipeline.predict.worker_models import ModelSource, load_sources, model_source, remember_loaded

__all__ = ["IchctStudyPredictor", "STUDIES_DIR", "MIN_CLUSTER_STUDIES", "evaluate_study_task", "rows_on_cluster",
           "jsonable_row"]

#: Folder of ``EVAL_DIR`` holding each study's rows while an evaluation runs (removed when it is written).
STUDIES_DIR = "studies"
#: From this many studies on, ichct's models predict on a Dask cluster (fewer: in this process,
#: where starting worker processes would cost more than it saves).
MIN_CLUSTER_STUDIES = 16


@dataclass(frozen=True)
class IchctStudyPredictor:
    """``predict(index, entry)`` of ichct models, picklable and JSON-able: the models by their
    :class:`~ichct.pipeline.predict.worker_models.ModelSource` (loaded once per process) and the rules.

    Examples
    --------
    >>> p = IchctStudyPredictor((), (("max", {"name": "max", "threshold": 0.5}),))
    >>> IchctStudyPredictor.from_json(json.loads(json.dumps(p.to_json()))) == p
    True
    """

    sources: tuple[ModelSource, ...]
    rules: tuple[tuple[str, Mapping[str, Any]], ...]

    @classmethod
    def of(cls, models: Mapping[str, Any], rules: Mapping[str, DecisionRule]) -> IchctStudyPredictor:
        """The predictor of loaded models ``{kind: LoadedModel}`` (remembered in this process's cache)."""
        loaded = [models[k] for k in sorted(models)]
        sources = tuple(model_source(m) for m in loaded)
        remember_loaded(sources, loaded)
        return cls(sources, tuple((name, rule.to_dict()) for name, rule in rules.items()))

    def __call__(self, index: int, entry: Mapping[str, Any]) -> Any:
        from ichct.pipeline.models.inference import predict_study

        models = {m.kind: m for m in load_sources(self.sources)}
        rules = {name: DecisionRule.from_dict(d) for name, d in self.rules}
        return predict_study(models, entry["image"], rules)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (part of each study's completion key)."""
        return {"sources": [s.to_json() for s in self.sources], "rules": [[n, dict(d)] for n, d in self.rules]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IchctStudyPredictor:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(ModelSource.from_json(s) for s in data["sources"]),
                   tuple((str(n), dict(d)) for n, d in data["rules"]))


def jsonable_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A per-study row with NumPy scalars made Python numbers (the row survives JSON unchanged).

    Examples
    --------
    >>> import numpy as np
    >>> jsonable_row({"n": np.int64(3), "x": np.float32(0.5)})
    {'n': 3, 'x': 0.5}
    """
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def evaluate_study_task(task: StudyTask, staging: Path) -> dict[str, Any]:
    """Dask work of one study: ``{"rows": [one row per predictor]}``, also kept in its completion record."""
    from ichct.pipeline.evaluate.run import study_row

    entry, surface = task.payload["entry"], bool(task.payload["surface"])
    given = task.payload.get("lesions")
    lesions = LesionDefinition.from_dict(given) if given else DEFAULT_LESIONS
    rows = []
    for spec in task.payload["predictors"]:
        pred = IchctStudyPredictor.from_json(spec)(int(task.payload["index"]), entry)
        rows.append(jsonable_row(study_row(entry, pred, surface=surface, lesions=lesions)))
    return {"rows": rows}


def _task_name(index: int, entry: Mapping[str, Any]) -> str:
    uid = re.sub(r"[^A-Za-z0-9._-]+", "_", str(entry.get("study_uid") or "study"))[-64:]
    return f"{index:06d}-{uid}"


def rows_on_cluster(entries: Sequence[Mapping[str, Any]], predictors: Sequence[IchctStudyPredictor], surface: bool,
                    out_root: Path, cluster: ClusterSpec | None = None, client: Any = None,
                    lesions: LesionDefinition | None = None) -> list[list[dict[str, Any]]]:
    """Each predictor's per-study rows (in ``entries`` order), computed as Dask tasks; the lesion
    counts by ``lesions`` (default :data:`~ichct.pipeline.evaluate.lesions.DEFAULT_LESIONS`), which is
    part of each study's completion key (a rerun with another definition redoes the studies).

    Raises
    ------
    ichct.errors.InputError
        A study failed (its reason named; the finished studies stay under ``out_root`` for a rerun).
    """
    lesion_spec = (lesions or DEFAULT_LESIONS).to_dict()
    tasks = []
    for i, entry in enumerate(entries):
        plain = json.loads(json.dumps(dict(entry), default=str))
        inputs = study_inputs(Path(entry["image"])) + ((str(entry["label"]),) if entry.get("label") else ())
        payload = {"index": i, "entry": plain, "surface": surface, "predictors": [p.to_json() for p in predictors],
                   "lesions": lesion_spec}
        tasks.append(StudyTask(_task_name(i, entry), inputs, payload))
    config = {"stage": "evaluate", "models": [[s.identity() for s in p.sources] for p in predictors],
              "lesions": lesion_spec}
    spec = cluster_for(cluster, len(tasks), progress=False)
    if client is None:
        with dask_client(spec) as own:  # connect before writing anything
            outcomes = run_study_tasks(evaluate_study_task, tasks, out_root=out_root, config=config, cluster=spec,
                                       client=own)
    else:
        outcomes = run_study_tasks(evaluate_study_task, tasks, out_root=out_root, config=config, cluster=spec,
                                   client=client)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        listed = "; ".join(f"{o.name}: {o.reason}" for o in failed[:10])
        raise InputError(out_root, f"{len(failed)} of {len(tasks)} studies failed ({listed}); rerun to redo only them")
    return [[dict(o.summary["rows"][k]) for o in outcomes] for k in range(len(predictors))]
