"""The training stage: ``train(kind, manifest, fold, out_dir, ...)`` (``ichct train seg|cls``).

Modules:

* ``engine`` - the training loop, its run folder and ``train`` (checkpoint files:
  ``ichct.pipeline.core.weights``; losses: ``ichct.pipeline.models.losses``);
* ``rng`` - every RNG state of a run, saved in its checkpoints and restored on resume;
* ``validation`` - CT-level validation: scores, AUCs and the thresholds chosen on them;
* ``side_by_side`` - several training runs at once, each with a share of the CPU threads;
* ``record`` - which studies a model saw in training, and the split check of evaluation;
* ``tracking`` - TensorBoard (default) or MLflow tracking of loss, metrics, learning rate, config;
* ``curves`` - ``training_curves.png`` of a run folder, from its ``metrics.csv``;
* ``progress`` - the progress reports of a run and the console display of several runs.

``ichct.pipeline.train._cls_prepare_batch`` is a deprecated alias of ``cls_prepare_batch``, kept
because the published classification bundle (``bundles/ich_ct_classification/configs/train.json``,
0.1.0 and 0.2.0) names it; bundles packaged now name ``ichct.pipeline.train.engine.cls_prepare_batch``.
"""

from __future__ import annotations

from typing import Any

from ichct.pipeline.core.exports import load_export

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "train": "engine",
    "RSNAWeightedBCE": "engine",  # defined in ichct.pipeline.models.losses
    "cls_prepare_batch": "engine",
    "load_checkpoint": "engine",  # defined in ichct.pipeline.core.weights
    "KEY_METRIC": "engine",
    "read_metrics": "engine",
    "ValidationCollector": "validation",
    "train_side_by_side": "side_by_side",
    "training_record": "record",
    "check_split": "record",
    "SplitCheck": "record",
    "plot_training_curves": "curves",
    "TrainingProgress": "progress",
    "training_display": "progress",
    # Deprecated alias of cls_prepare_batch: the published classification bundles 0.1.0 and 0.2.0 name
    # ``ichct.pipeline.train._cls_prepare_batch`` in configs/train.json.
    "_cls_prepare_batch": "engine:cls_prepare_batch",
}

__all__ = sorted(name for name in _EXPORTS if not name.startswith("_"))


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name)
