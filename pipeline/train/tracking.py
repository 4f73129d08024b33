"""Experiment tracking of ``ichct train``: TensorBoard event files (the default) or an MLflow run.

What is tracked, per epoch (the step is the epoch): ``train_loss`` (the epoch's mean) and ``lr``
(the rate the epoch trained with); after each validation its metrics (seg ``val_dice`` and
``val_auc_any``; cls ``val_auc_any`` and ``val_auc_mean``); and the run's ``config.json``.

* ``tensorboard``: MONAI's :class:`~monai.handlers.TensorBoardStatsHandler` on the trainer and the
  evaluator write ``RUN_DIR/tensorboard/events.out.tfevents.*`` (also ``iteration_loss``, the loss
  of each iteration); ``config.json`` is a text entry. View with
  ``tensorboard --logdir RUN_DIR`` (or the folder of several runs).
* ``mlflow`` (the ``ichct[mlflow]`` extra): an MLflow run named after the run folder in the
  experiment ``ichct``, with ``config.json`` flattened into parameters and, at the end,
  ``config.json``, ``metrics.csv``, ``thresholds.json`` and ``training_curves.png`` as artifacts.
  The store is ``MLFLOW_TRACKING_URI`` when that is set, else a local file store in
  ``RUN_DIR/mlruns`` (MLflow 3.13+ wants ``MLFLOW_ALLOW_FILE_STORE=true`` for file stores: ichct
  sets it for this store only). MONAI's ``MLFlowHandler`` (1.6) refuses file stores, so the
  handler here talks to an ``mlflow.MlflowClient`` directly.
* ``none``: neither (``metrics.csv`` and ``training_curves.png`` are always written).

:func:`check_tracking` runs before anything is written: ``mlflow`` without the extra is an
:class:`~ichct.errors.IchctError` that names it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ichct.errors import IchctError

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["TRACKING_CHOICES", "MLFLOW_EXTRA", "TENSORBOARD_DIR", "MLFLOW_DIR", "MLFLOW_EXPERIMENT",
           "check_tracking", "mlflow_tracking_uri", "flat_params", "track_run"]

TRACKING_CHOICES = ("tensorboard", "mlflow", "none")
#: The pip extra that installs MLflow.
MLFLOW_EXTRA = "ichct[mlflow]"
#: Folders of the run folder that tracking writes.
TENSORBOARD_DIR, MLFLOW_DIR = "tensorboard", "mlruns"
MLFLOW_EXPERIMENT = "ichct"
#: Files of the run folder logged as MLflow artifacts at the end (those that exist).
MLFLOW_ARTIFACTS = ("config.json", "metrics.csv", "thresholds.json", "training_curves.png")


def check_tracking(tracking: str) -> None:
    """Raise :class:`~ichct.errors.IchctError` for an unknown ``tracking``, or ``"mlflow"`` without MLflow.

    Examples
    --------
    >>> check_tracking("tensorboard")
    >>> check_tracking("wandb")
    Traceback (most recent call last):
    ...
    ichct.errors.IchctError: --tracking must be one of tensorboard, mlflow, none; got 'wandb'
    """
    if tracking not in TRACKING_CHOICES:
        raise IchctError(f"--tracking must be one of {', '.join(TRACKING_CHOICES)}; got {tracking!r}")
    if tracking == "mlflow":
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise IchctError(f"--tracking mlflow needs MLflow, which is not installed: "
                             f"pip install '{MLFLOW_EXTRA}' (or use --tracking tensorboard)") from None


def mlflow_tracking_uri(run_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` when it is set, else the file store ``RUN_DIR/mlruns`` as a ``file:`` URI.

    Examples
    --------
    >>> import os
    >>> if "MLFLOW_TRACKING_URI" not in os.environ:
    ...     assert mlflow_tracking_uri("/runs/seg0") == "file:///runs/seg0/mlruns"
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_dir).resolve() / MLFLOW_DIR).as_uri()


def flat_params(doc: Mapping[str, Any], prefix: str = "", max_len: int = 500) -> dict[str, str]:
    """A nested mapping as flat ``a.b.c`` -> text parameters (values cut to ``max_len`` characters).

    Examples
    --------
    >>> flat_params({"kind": "seg", "config": {"lr": 0.001, "patch": [32, 32, 16]}})
    {'kind': 'seg', 'config.lr': '0.001', 'config.patch': '[32, 32, 16]'}
    """
    out: dict[str, str] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{prefix}{key}.", max_len))
        else:
            out[f"{prefix}{key}"] = str(value)[:max_len]
    return out


def _read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@contextlib.contextmanager
def track_run(tracking: str, trainer: Engine, evaluator: Engine, run_dir: str | Path) -> Iterator[None]:
    """Track the training of ``trainer`` (validated by ``evaluator``) while the block runs.

    Attach it after the handlers that put ``train_loss`` and ``lr`` into ``trainer.state.metrics``
    at each epoch's end; ``run_dir/config.json`` is read as the config.
    """
    run_dir = Path(run_dir)
    if tracking == "tensorboard":
        with _tensorboard(trainer, evaluator, run_dir):
            yield
    elif tracking == "mlflow":
        with _MLflowRun(run_dir).tracking(trainer, evaluator):
            yield
    else:
        yield


@contextlib.contextmanager
def _tensorboard(trainer: Engine, evaluator: Engine, run_dir: Path) -> Iterator[None]:
    """MONAI's TensorBoard handlers on both engines, one writer in ``run_dir/tensorboard``."""
    from monai.handlers import TensorBoardStatsHandler
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
    try:
        config = json.dumps(_read_record(run_dir), indent=2)
        writer.add_text("config", "    " + config.replace("\n", "\n    "), global_step=int(trainer.state.epoch))
        TensorBoardStatsHandler(summary_writer=writer, tag_name="iteration_loss",
                                output_transform=lambda output: output["loss"].item()).attach(trainer)
        TensorBoardStatsHandler(summary_writer=writer, iteration_log=False, output_transform=lambda output: None,
                                global_epoch_transform=lambda _: int(trainer.state.epoch)).attach(evaluator)
        yield
    finally:
        writer.close()


class _MLflowRun:
    """One MLflow run of a training run: parameters at the start, epoch metrics, artifacts at the end."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.uri = mlflow_tracking_uri(run_dir)
        self.client: Any = None
        self.run_id = ""

    def start(self) -> None:
        """Create the run (the experiment too, if new) and log the config as parameters."""
        import mlflow

        record = _read_record(self.run_dir)
        # a file store only when ichct chose it; a user's MLFLOW_TRACKING_URI is used as it is
        own_store = "MLFLOW_TRACKING_URI" not in os.environ
        with _env(MLFLOW_ALLOW_FILE_STORE="true") if own_store else contextlib.nullcontext():
            self.client = mlflow.MlflowClient(tracking_uri=self.uri)
            experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self.client.create_experiment(MLFLOW_EXPERIMENT))
        run = self.client.create_run(experiment_id, run_name=self.run_dir.name,
                                     tags={"ichct.run_dir": str(self.run_dir.resolve()),
                                           "ichct.kind": str(record.get("kind", ""))})
        self.run_id = run.info.run_id
        self._log(params=[mlflow.entities.Param(k, v) for k, v in flat_params(record).items()])

    def _log(self, metrics: Mapping[str, Any] | None = None, step: int = 0, params: list[Any] | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, step) for k, v in (metrics or {}).items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v))]
        self.client.log_batch(self.run_id, metrics=batch, params=params or [])

    def end(self, status: str) -> None:
        """Log the run folder's artifacts (those that exist) and close the run with ``status``."""
        for name in MLFLOW_ARTIFACTS if status == "FINISHED" else ():
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, status)

    @contextlib.contextmanager
    def tracking(self, trainer: Engine, evaluator: Engine) -> Iterator[None]:
        """The run while the block runs: FINISHED when it ends, FAILED (KILLED on Ctrl-C) when it raises."""
        from ignite.engine import Events

        self.start()
        trainer.add_event_handler(Events.EPOCH_COMPLETED,
                                  lambda e: self._log(e.state.metrics, step=int(e.state.epoch)))
        evaluator.add_event_handler(Events.EPOCH_COMPLETED,
                                    lambda e: self._log(e.state.metrics, step=int(trainer.state.epoch)))
        try:
            yield
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the training's error is the one to report
                self.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        self.end("FINISHED")


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables while the block runs (those already set are left as they are)."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
