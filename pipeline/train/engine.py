"""The training stage: ``train(kind, manifest, fold, out_dir, ...)`` (``ichct train seg|cls``).

Built on MONAI/ignite engines: a :class:`~monai.engines.SupervisedTrainer`, a
:class:`~monai.engines.SupervisedEvaluator` run every ``val_interval`` epochs by a
:class:`~monai.handlers.ValidationHandler`, :class:`~monai.handlers.StatsHandler` logging of each
validation (``-v`` only), and an epoch handler of this module that writes ``metrics.csv``,
``last.pt``, ``best.pt`` and ``thresholds.json`` atomically (temporary file + ``os.replace``), so
a kill never leaves a partial file. Tracking (TensorBoard or MLflow) is
:mod:`ichct.pipeline.train.tracking`; the console's progress display
:mod:`ichct.pipeline.train.progress`.

``RUN_DIR`` contents:

* ``config.json`` - resolved config, kind, fold, seed, device, manifest path + sha256, versions;
* ``train_patients.json`` - patient keys of the training folds (evaluation refuses them);
* ``metrics.csv`` - one row per epoch;
* ``last.pt`` / ``best.pt`` - model, optimizer, scheduler, epoch, iteration, best metric, RNG
  states (torch, numpy, python, augmentation transforms) as tensors/ints/lists: load with
  ``torch.load(path, weights_only=True)``;
* ``thresholds.json`` - a :class:`ichct.pipeline.decision.DecisionRule` chosen on the validation
  fold with the best model (cls: ``consecutive`` on slice probabilities; seg: ``seg_volume``);
* ``training_curves.png`` - loss, validation metrics and learning rate per epoch, from
  ``metrics.csv`` (written when training ends);
* ``tensorboard/`` (the default ``tracking``) or ``mlruns/`` (``tracking="mlflow"`` with the local
  store) - see :mod:`ichct.pipeline.train.tracking`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ichct.errors import InputError, read_json
from ichct.pipeline.core.atomic import atomic_path, write_json_atomic
from ichct.pipeline.core.devices import torch_device
from ichct.pipeline.core.logging_setup import DETAIL_LOGGER
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.core.weights import load_checkpoint, save_checkpoint_atomic
from ichct.pipeline.models.losses import RSNAWeightedBCE, cls_prepare_batch
from ichct.pipeline.models.network_factory import build_network, mirror_kwargs
from ichct.pipeline.models.config import resolve_config, resolve_saved_config
from ichct.pipeline.train.curves import CURVES_NAME, plot_training_curves
from ichct.pipeline.train.distributed import World, distributed_run
from ichct.pipeline.train.init_weights import InitWeights, load_init_weights
from ichct.pipeline.train.progress import ProgressHandler, TrainingProgress
from ichct.pipeline.train.record import training_record
from ichct.pipeline.train.rng import reseed, rng_state, set_rng_state
from ichct.pipeline.train.tracking import MLFLOW_DIR, TENSORBOARD_DIR, check_tracking, track_run
from ichct.pipeline.train.validation import ValidationCollector

if TYPE_CHECKING:
    from ignite.engine import Engine
    from monai.engines import SupervisedEvaluator, SupervisedTrainer

logger = logging.getLogger("ichct.train")

METRIC_COLUMNS = {
    "seg": ("epoch", "iteration", "train_loss", "lr", "val_dice", "val_auc_any", "time_s"),
    "cls": ("epoch", "iteration", "train_loss", "lr", "val_auc_any", "val_auc_mean", "time_s"),
}
KEY_METRIC = {"seg": "val_dice", "cls": "val_auc_any"}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _write_metrics(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for r in rows:
                w.writerow([_fmt(r.get(c, "")) for c in columns])


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """Rows of ``metrics.csv`` as dicts of strings."""
    p = Path(path)
    if not p.exists():
        return []
    with open(p, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------
# Losses and batches: ichct.pipeline.models.losses (validation: ichct.pipeline.train.validation)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Run helpers: the segmentation loss, the run folder, the config check, the command, the loggers
# --------------------------------------------------------------------------------------------


def _seg_loss(cfg: Mapping[str, Any], weight: torch.Tensor) -> torch.nn.Module:
    """DiceCE (default) or DiceFocal; the class weights weight the CE / focal term."""
    from monai.losses import DiceCELoss, DiceFocalLoss

    name, batch = str(cfg["loss"]), bool(cfg["dice_batch"])
    if name == "dice_focal":
        return DiceFocalLoss(to_onehot_y=True, softmax=True, batch=batch, weight=weight)
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=batch, weight=weight)


#: Files and folders a run writes before its first ``last.pt`` (removed when it fails before that).
_RUN_FILES = ("config.json", "train_patients.json", "metrics.csv", "best.pt", "thresholds.json", CURVES_NAME,
              TENSORBOARD_DIR, MLFLOW_DIR)


def _first_missing_ancestor(path: Path) -> Path | None:
    """The topmost folder of ``path`` (itself included) that ``mkdir(parents=True)`` would create."""
    top = None
    for p in (path, *path.parents):
        if p.exists():
            break
        top = p
    return top


def _remove_partial_run(out: Path, created: Path | None) -> None:
    """Undo a run that failed before its first ``last.pt``: the folders it created, else its files."""
    import shutil

    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for name in _RUN_FILES:
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name, ignore_errors=True)
        else:
            (out / name).unlink(missing_ok=True)


def _check_network(kind: str, cfg: Mapping[str, Any], source: str) -> None:
    """Build the network of ``cfg`` once (RNG untouched): its open keyword arguments fail here, before
    anything is written, with the config named."""
    try:
        with torch.random.fork_rng(devices=[]):
            build_network(kind, cfg)
    except Exception as exc:  # a wrong keyword or value of the network: TypeError, ValueError, ...
        raise InputError(source, f"config key 'network' is not valid for the {kind} network "
                                 f"({type(exc).__name__}: {exc})") from None


def _command(kind: str, manifest: Path, fold: int, out: Path, epochs: int | None, max_minutes: float | None,
             config: Any, device: str, amp: bool, seed: int, tracking: str = "tensorboard",
             init_weights: str | Path | None = None) -> str:
    """The ``ichct train`` command line that trains this run again (a mapping config is only in config.json)."""
    import shlex

    argv = ["ichct", "train", kind, "--manifest", str(manifest), "--fold", str(int(fold)), "--out", str(out)]
    if epochs is not None:
        argv += ["--epochs", str(int(epochs))]
    if max_minutes is not None:
        argv += ["--max-minutes", repr(float(max_minutes))]
    if isinstance(config, (str, Path)):
        argv += ["--config", str(Path(config).resolve())]
    if init_weights is not None:
        argv += ["--init-weights", str(Path(init_weights).resolve())]
    argv += ["--device", str(device)] + (["--amp"] if amp else []) + ["--seed", str(int(seed))]
    if tracking != "tensorboard":
        argv += ["--tracking", tracking]
    return shlex.join(argv)


@contextlib.contextmanager
def _keep_logger_setup(*names: str):
    """Restore the handlers, level and propagation of the loggers ``names`` on exit."""
    loggers = [logging.getLogger(n) for n in names]
    saved = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved):
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate


# --------------------------------------------------------------------------------------------
# The steps of a run: resolve, split, write the run's record, build, train, summarise
# --------------------------------------------------------------------------------------------


@dataclass
class _RunSpec:
    """One run, resolved before anything is written: where it goes, its config and, on resume, the
    checkpoint it continues."""

    kind: str
    manifest: Path
    manifest_sha: str
    fold: int
    out: Path
    cfg: dict[str, Any]
    seed: int
    device: str
    amp: bool
    max_epochs: int
    budget_s: float | None  # the time budget of the training loop (max_minutes), seconds
    ckpt: dict[str, Any] | None  # last.pt of the resumed run
    tracking: str = "tensorboard"  # see ichct.pipeline.train.tracking
    init: InitWeights | None = None  # the weights a new run starts from (--init-weights)

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"


def _saved_run(kind: str, manifest: Path, manifest_sha: str, fold: int, out: Path,
               epochs: int | None) -> tuple[dict[str, Any], int, str]:
    """``(config, seed, config source)`` of the run in ``out`` to resume, once it is known to be a run
    of this kind, fold and manifest."""
    if not (out / "last.pt").exists() or not (out / "config.json").exists():
        raise InputError(out, "nothing to resume (no last.pt / config.json)")
    saved = read_json(out / "config.json", "run config")
    if saved["kind"] != kind or int(saved["fold"]) != int(fold):
        raise InputError(out, f"run is {saved['kind']} fold {saved['fold']}, not {kind} fold {fold}")
    if saved["manifest_sha256"] != manifest_sha:
        raise InputError(manifest, "changed since the run started (sha256 differs); refusing to resume")
    config_source = str(out / "config.json")
    cfg = resolve_saved_config(kind, saved["config"], epochs=epochs, source=config_source)
    return cfg, int(saved["seed"]), config_source


def _resolve_run(kind: str, manifest: str | Path, fold: int, out_dir: str | Path, epochs: int | None,
                 config: str | Path | Mapping[str, Any] | None, resume: bool, device: str, amp: bool, seed: int,
                 max_minutes: float | None, tracking: str = "tensorboard",
                 init_weights: str | Path | None = None) -> _RunSpec:
    """Check the arguments of :func:`train` and resolve its config (on resume: the saved one, the saved
    seed and ``last.pt``) and its initial weights. Nothing is written."""
    if kind not in ("seg", "cls"):
        raise ValueError(f"kind must be 'seg' or 'cls', got {kind!r}")
    if torch_device(device).type != "cuda" and amp:
        raise InputError("--amp needs --device cuda")
    if not 0 <= int(seed) < 2**32:
        raise InputError(f"seed (--seed) must be in 0..2**32-1, got {seed}")
    check_tracking(tracking)
    manifest = Path(manifest).resolve()
    out = Path(out_dir)
    manifest_sha = sha256_file(manifest)
    ckpt: dict[str, Any] | None = None
    if resume:
        cfg, seed, config_source = _saved_run(kind, manifest, manifest_sha, fold, out, epochs)
        ckpt = load_checkpoint(out / "last.pt")
    else:
        if (out / "last.pt").exists():
            raise InputError(out, "holds a run already (last.pt); pass --resume or choose another folder")
        config_source = str(config) if isinstance(config, (str, Path)) else "training config"
        cfg = resolve_config(kind, config, epochs=epochs)
    _check_network(kind, cfg, config_source)
    init = _checked_init(kind, cfg, init_weights, resume)
    if max_minutes is not None:
        cfg["max_minutes"] = float(max_minutes)
    budget_s = float(cfg["max_minutes"]) * 60.0 if cfg.get("max_minutes") else None
    if budget_s is not None and budget_s <= 0:
        raise InputError(f"max_minutes (--max-minutes) must be > 0, got {cfg['max_minutes']}")
    return _RunSpec(kind=kind, manifest=manifest, manifest_sha=manifest_sha, fold=int(fold), out=out, cfg=cfg,
                    seed=int(seed), device=device, amp=amp, max_epochs=int(cfg["epochs"]), budget_s=budget_s,
                    ckpt=ckpt, tracking=tracking, init=init)


def _checked_init(kind: str, cfg: Mapping[str, Any], init_weights: str | Path | None, resume: bool) -> InitWeights | None:
    """The initial weights of a new run, checked against its network (RNG untouched)."""
    if init_weights is None:
        return None
    if resume:
        raise InputError("--init-weights starts a new run; --resume continues from the run's own last.pt")
    init = load_init_weights(init_weights, kind)
    with torch.random.fork_rng(devices=[]):
        init.load_into(build_network(kind, cfg))
    return init


def _split_entries(manifest: Path, fold: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training and validation studies of ``fold``: both non-empty, no patient in both."""
    from ichct.pipeline.manifests import load_manifest

    train_entries = load_manifest(manifest, "training", fold=int(fold))
    val_entries = load_manifest(manifest, "validation", fold=int(fold), check=False)  # checked just above
    if not train_entries or not val_entries:
        raise InputError(manifest, f"fold {fold} leaves {len(train_entries)} training and "
                                   f"{len(val_entries)} validation studies; both must be non-empty")
    train_keys = sorted({e["patient_key"] for e in train_entries})
    leaked = set(train_keys) & {e["patient_key"] for e in val_entries}
    if leaked:  # load_manifest's checks make this impossible; never train on a leaking split
        raise InputError(manifest, f"{len(leaked)} patient(s) in both training and validation")
    return train_entries, val_entries


def _write_run_record(spec: _RunSpec, command: str, train_entries: list[dict[str, Any]],
                      val_entries: list[dict[str, Any]]) -> None:
    """``config.json`` and ``train_patients.json`` of a new run."""
    import ichct

    init = {} if spec.init is None else {"init_weights": spec.init.source}
    write_json_atomic(spec.out / "config.json", {
        "kind": spec.kind, "fold": spec.fold, "seed": spec.seed, "device": str(spec.device), "amp": bool(spec.amp),
        "manifest": str(spec.manifest), "manifest_sha256": spec.manifest_sha, "config": spec.cfg,
        "versions": {"ichct": ichct.__version__, "torch": torch.__version__,
                     "monai": __import__("monai").__version__},
        "command": command, **init,
    })
    record = training_record(spec.manifest, spec.manifest_sha, spec.fold, train_entries, val_entries)
    if spec.init is not None and spec.init.record is not None:  # evaluation refuses those patients too
        record["initial_weights"] = spec.init.record
    write_json_atomic(spec.out / "train_patients.json", record)


@dataclass
class _TrainingParts:
    """What the engines train and validate with."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR
    loss_fn: torch.nn.Module
    val_inferer: Any
    key_val: dict[str, Any] | None  # the evaluator's key metric (seg: val_dice; cls: the collector's AUCs)
    prep: dict[str, Any]  # the engines' prepare_batch, if not MONAI's default
    # what the trainer runs: the DistributedDataParallel wrapper of `model` under torchrun, else `model`
    train_network: torch.nn.Module | None = None


def _dice_output(output: Mapping[str, torch.Tensor], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluator's output as one-hot ``(prediction, label)`` for ``MeanDice``."""
    from monai.networks.utils import one_hot

    pred = one_hot(torch.argmax(output["pred"], dim=1, keepdim=True), num_classes)
    return pred, one_hot(output["label"].long(), num_classes)


def _seg_objective(cfg: Mapping[str, Any], dev: torch.device) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Segmentation: the loss, a sliding-window validation inferer and the validation Dice."""
    from monai.handlers import MeanDice
    from monai.inferers import SlidingWindowInferer

    k = int(cfg["num_classes"])
    cw = cfg["class_weights"] or [1.0] + [3.0] * (k - 1)
    loss_fn = _seg_loss(cfg, torch.as_tensor(cw, dtype=torch.float32).to(dev))
    patch = [int(p) for p in cfg["patch"]]
    val_inferer = SlidingWindowInferer(roi_size=patch, sw_batch_size=int(cfg["sw_batch_size"]),
                                       overlap=float(cfg["sw_overlap"]), mode="gaussian")
    dice = MeanDice(include_background=False, output_transform=functools.partial(_dice_output, num_classes=k))
    return loss_fn, _validation_inferer("seg", cfg, val_inferer), {"val_dice": dice}


def _validation_inferer(kind: str, cfg: Mapping[str, Any], inferer: Any) -> Any:
    """``inferer``, averaged over mirrored inputs when the config's ``tta_mirror_axes`` asks for it: the
    thresholds chosen on validation are then those of the predictions inference makes."""
    from ichct.networks import MirrorEnsembleInferer

    mirror = mirror_kwargs(kind, cfg)
    return inferer if mirror is None else MirrorEnsembleInferer(inferer, **mirror)


def _cls_loss(cfg: Mapping[str, Any], dev: torch.device, train_items: list[dict[str, Any]]) -> torch.nn.Module:
    """Classification: :class:`RSNAWeightedBCE` with the config's (or the training data's) ``pos_weight``."""
    from ichct.pipeline.models.data import pos_weight_auto

    pw = cfg["pos_weight"]
    if pw == "auto":
        pw = pos_weight_auto(train_items, float(cfg["pos_weight_max"]))
    cfg_pw = [float(v) for v in pw]
    logger.debug("pos_weight %s", [round(v, 3) for v in cfg_pw])
    aux_w = float(cfg["aux_seg_weight"]) if dict(cfg["network"]).get("aux_seg") else 0.0
    return RSNAWeightedBCE(cfg["class_weights"], cfg_pw, aux_w, float(cfg["focal_gamma"])).to(dev)


def _build_parts(spec: _RunSpec, dev: torch.device, train_items: list[dict[str, Any]]) -> _TrainingParts:
    """The network (seeded), AdamW with a cosine schedule over the epochs, the loss and validation."""
    from monai.inferers import SimpleInferer

    model = build_network(spec.kind, spec.cfg)
    if spec.init is not None:  # fine-tuning: the trained weights replace the random draw
        spec.init.load_into(model)
    model = model.to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(spec.cfg["lr"]),
                                  weight_decay=float(spec.cfg["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, spec.max_epochs), eta_min=0.0)
    if spec.kind == "seg":
        loss_fn, val_inferer, key_val = _seg_objective(spec.cfg, dev)
        return _TrainingParts(model, optimizer, scheduler, loss_fn, val_inferer, key_val, prep={})
    loss_fn = _cls_loss(spec.cfg, dev, train_items)
    val_inferer = _validation_inferer("cls", spec.cfg, SimpleInferer())
    return _TrainingParts(model, optimizer, scheduler, loss_fn, val_inferer, None,
                          prep={"prepare_batch": cls_prepare_batch})


def _build_engines(spec: _RunSpec, dev: torch.device, parts: _TrainingParts, train_loader: Any, val_loader: Any,
                   collector: ValidationCollector) -> tuple[SupervisedTrainer, SupervisedEvaluator]:
    """MONAI's trainer and evaluator: validation every ``val_interval`` epochs, StatsHandler logging of
    each validation (on a logger under ``ichct.detail``: ``-v`` only)."""
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import StatsHandler, ValidationHandler
    from monai.inferers import SimpleInferer

    # MONAI's StatsHandler takes over a named logger (its own stdout handler, level INFO, no
    # propagation): its lines would reach stdout past -q and beside the JSON summary. Its logger
    # is given back to ichct's logging setup (stderr, -v only) once the engines are built.
    val_logger = f"{DETAIL_LOGGER}.train.val"
    with _keep_logger_setup(val_logger):
        evaluator = SupervisedEvaluator(
            device=dev, val_data_loader=val_loader, network=parts.model, inferer=parts.val_inferer,
            key_val_metric=parts.key_val, amp=bool(spec.amp), decollate=False,
            # the collector first: its AUCs are in state.metrics when the StatsHandler logs them
            val_handlers=[collector, StatsHandler(name=val_logger, output_transform=lambda x: None,
                                                  iteration_log=False)],
            **parts.prep,
        )
    network = parts.model if parts.train_network is None else parts.train_network
    trainer = SupervisedTrainer(
        device=dev, max_epochs=spec.max_epochs, train_data_loader=train_loader, network=network,
        optimizer=parts.optimizer, loss_function=parts.loss_fn, inferer=SimpleInferer(), amp=bool(spec.amp),
        decollate=False,
        train_handlers=[ValidationHandler(validator=evaluator, interval=int(spec.cfg["val_interval"]),
                                          epoch_level=True)],
        **parts.prep,
    )
    return trainer, evaluator


class _RunRecorder:
    """The state of a run the trainer's handlers share, and those handlers.

    Per epoch: the mean training loss and the time; after it, the ``metrics.csv`` row, the best
    metric (the mean of the last ``best_window`` validations), ``last.pt``, and on a new best
    ``best.pt`` and ``thresholds.json``; the stop after the time budget or ``stop_after_epoch``.
    """

    def __init__(self, spec: _RunSpec, parts: _TrainingParts, evaluator: SupervisedEvaluator,
                 collector: ValidationCollector, transform: Any, epoch_started: Callable[[int], None] | None,
                 stop_after_epoch: int | None, world: World = World()) -> None:
        self.spec, self.parts, self.evaluator, self.collector = spec, parts, evaluator, collector
        self.world = world  # under torchrun rank 0 validates, decides and writes; the others follow
        self.transform = transform  # the training augmentations, whose RNG states the checkpoints keep
        self.epoch_started, self.stop_after_epoch = epoch_started, stop_after_epoch
        self.columns = METRIC_COLUMNS[spec.kind]
        self.metrics_path = spec.out / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch = 0
        self.loss_sum, self.loss_n = 0.0, 0
        self.t0 = time.perf_counter()
        self.t_run: float | None = None  # the start of this invocation's first epoch
        self.epoch_t0 = 0.0
        self.epoch_s: list[float] = []
        self.budget_stop = False

    def restore(self, trainer: SupervisedTrainer, ckpt: Mapping[str, Any]) -> None:
        """Continue from ``ckpt`` (``last.pt``): weights, optimizer, schedule, counters, rows, RNG states."""
        from ignite.engine import Events

        self.parts.model.load_state_dict(ckpt["model"])
        self.parts.optimizer.load_state_dict(ckpt["optimizer"])
        self.parts.scheduler.load_state_dict(ckpt["scheduler"])
        self.parts.scheduler.T_max = max(1, self.spec.max_epochs)  # --epochs may extend a resumed run
        trainer.state.epoch = int(ckpt["epoch"])
        trainer.state.iteration = int(ckpt["iteration"])
        self.best_metric = None if ckpt["best_metric"] is None else float(ckpt["best_metric"])
        self.best_epoch = int(ckpt["best_epoch"])
        if self.world.is_main:
            # rows of epochs after the checkpoint (a kill between the CSV and last.pt) are redone
            self.rows = [dict(r) for r in read_metrics(self.metrics_path) if int(r["epoch"]) <= int(ckpt["epoch"])]
            set_rng_state(ckpt["rng"], self.transform)
        else:  # last.pt holds rank 0's RNG streams: the other ranks start new ones of their own
            reseed(self.world.rank_seed(self.spec.seed, int(ckpt["epoch"])), self.transform)
        logger.info("resuming %s from epoch %d of %d", self.spec.out, ckpt["epoch"], self.spec.max_epochs)
        if ckpt.get("scaler") is not None:
            trainer.add_event_handler(Events.STARTED, lambda e: e.scaler.load_state_dict(ckpt["scaler"])
                                      if getattr(e, "scaler", None) is not None else None)

    def attach(self, trainer: SupervisedTrainer) -> None:
        """Add the handlers to ``trainer`` (after its validation and logging handlers)."""
        from ignite.engine import Events

        trainer.add_event_handler(Events.EPOCH_STARTED, self.on_epoch_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.on_iteration_completed)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.on_epoch_completed)
        trainer.add_event_handler(Events.COMPLETED, self.on_completed)

    def on_epoch_started(self, engine: Engine) -> None:
        """Reset the loss sums, start the epoch's clock (and the run's), call ``epoch_started``."""
        self.loss_sum, self.loss_n = 0.0, 0
        self.epoch_t0 = time.perf_counter()
        if self.t_run is None:
            self.t_run = time.perf_counter()
        if self.epoch_started is not None:
            self.epoch_started(int(engine.state.epoch))

    def on_iteration_completed(self, engine: Engine) -> None:
        """Add the iteration's loss to the epoch's sums."""
        self.loss_sum += float(engine.state.output["loss"].item())
        self.loss_n += 1

    def on_epoch_completed(self, engine: Engine) -> None:
        """Validate if due (the last epoch always), log the row, step the schedule, write the files.
        Under torchrun every rank validates its share of the fold, rank 0 writes; its stop decision and
        learning rates reach every rank."""
        epoch = int(engine.state.epoch)
        self.epoch_s.append(time.perf_counter() - self.epoch_t0)
        self.loss_sum, self.loss_n = self.world.sum_over_ranks(self.loss_sum, self.loss_n)  # the global mean
        elapsed = time.perf_counter() - self.t_run
        budget = self.spec.budget_s
        budget_stop = (budget is not None and epoch < self.spec.max_epochs
                       # a validating epoch may be the slow one
                       and elapsed + max(self.epoch_s[-3:]) > budget)
        budget_stop = bool(self.world.broadcast_floats([float(budget_stop)])[0])  # rank 0's decision
        validated = self._validate(epoch, budget_stop)
        row = self._row(engine, dict(self.evaluator.state.metrics) if validated else {})
        self.rows.append(row)
        engine.state.metrics.update(train_loss=row["train_loss"], lr=row["lr"])  # for the tracking handlers
        self.parts.scheduler.step()
        if budget is not None:
            self._anneal_to_budget(epoch, budget)
        self._share_learning_rates()
        if self.world.is_main:
            key = self._window_mean() if validated else float("nan")
            better = validated and self._improves(key)
            if better:
                self.best_metric, self.best_epoch = key, epoch
            self._write_files(engine, epoch, better)
        logger.debug("epoch %d/%d: loss %.4f lr %.3g%s", epoch, self.spec.max_epochs, row["train_loss"], row["lr"],
                     "".join(f" {c}={_fmt(row[c])}" for c in self.columns if c.startswith("val_") and validated))
        if self.stop_after_epoch is not None and epoch >= self.stop_after_epoch:
            engine.terminate()
        elif budget_stop:
            logger.debug("time budget %.1f min reached after epoch %d (%.0f s)", budget / 60, epoch, elapsed)
            self.budget_stop = True
            engine.terminate()

    def _validate(self, epoch: int, budget_stop: bool) -> bool:
        """Whether this epoch is validated: every ``val_interval`` epochs (the trainer's handler ran the
        evaluator), and the last one always (run here), so best.pt and thresholds.json exist."""
        if epoch % int(self.spec.cfg["val_interval"]) == 0:
            return True
        if epoch >= self.spec.max_epochs or budget_stop:
            self.evaluator.run(epoch)
            return True
        return False

    def _share_learning_rates(self) -> None:
        """Rank 0's learning rates on every rank (the time budget's annealing follows rank 0's clock)."""
        groups = self.parts.optimizer.param_groups
        for g, lr in zip(groups, self.world.broadcast_floats([float(g["lr"]) for g in groups])):
            g["lr"] = lr

    def on_completed(self, engine: Engine) -> None:
        """Draw ``training_curves.png`` from ``metrics.csv`` (also after a stop by the time budget)."""
        if not self.world.is_main:
            return
        plot_training_curves(self.metrics_path, self.spec.out / CURVES_NAME, best_epoch=self.best_epoch or None,
                             title=f"{self.spec.kind} fold {self.spec.fold}: {self.spec.out.name}")

    def _row(self, engine: Engine, val_metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The ``metrics.csv`` row of the epoch just done (``nan`` for metrics not validated)."""
        row = {"epoch": int(engine.state.epoch), "iteration": int(engine.state.iteration),
               "train_loss": self.loss_sum / max(1, self.loss_n),
               "lr": float(self.parts.optimizer.param_groups[0]["lr"]), "time_s": time.perf_counter() - self.t0}
        for c in self.columns:
            if c.startswith("val_"):
                row[c] = float(val_metrics.get(c, float("nan")))
        return row

    def _anneal_to_budget(self, epoch: int, budget_s: float) -> None:
        """Cosine over whichever runs out first, the epochs or the time budget (so the rate still
        anneals when the budget stops the run early)."""
        spent = (time.perf_counter() - self.t_run + float(np.median(self.epoch_s))) / budget_s
        progress = min(1.0, max(epoch / max(1, self.spec.max_epochs), spent))
        for g in self.parts.optimizer.param_groups:
            g["lr"] = float(g["initial_lr"]) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _window_mean(self) -> float:
        """The mean over the last ``best_window`` validations (this one included)."""
        metric = KEY_METRIC[self.spec.kind]
        history = [float(r[metric]) for r in self.rows if not math.isnan(float(r[metric]))]
        window = history[-int(self.spec.cfg["best_window"]):]
        return float(np.mean(window)) if window else float("nan")

    def _improves(self, key: float) -> bool:
        """Whether ``key`` is a new best. Ties go to the later epoch: a small validation fold saturates
        (AUC 1.0) early, and the later weights have seen more updates at a lower (cosine-annealed) rate."""
        return (self.best_metric is None
                or (not math.isnan(key) and (math.isnan(self.best_metric) or key >= self.best_metric)))

    def _write_files(self, engine: Engine, epoch: int, better: bool) -> None:
        """``metrics.csv``, then on a new best ``best.pt`` and ``thresholds.json``, then ``last.pt``."""
        parts = self.parts
        ck = {"kind": self.spec.kind, "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
              "scheduler": parts.scheduler.state_dict(), "epoch": epoch, "iteration": int(engine.state.iteration),
              "best_metric": self.best_metric, "best_epoch": self.best_epoch,
              "rng": rng_state(self.transform),
              "scaler": engine.scaler.state_dict() if getattr(engine, "scaler", None) is not None else None}
        _write_metrics(self.metrics_path, self.columns, self.rows)
        if better:
            save_checkpoint_atomic(ck, self.spec.best_path)
            write_json_atomic(self.spec.out / "thresholds.json",
                              self.collector.decision_rule(epoch, self.spec.fold).to_dict())
        save_checkpoint_atomic(ck, self.spec.last_path)

    def summary(self, epoch: int) -> dict[str, Any]:
        """The summary of a run at ``epoch`` (a resumed run already done)."""
        return {"kind": self.spec.kind, "out_dir": str(self.spec.out), "epochs": epoch,
                "best_metric": self.best_metric, "best_epoch": self.best_epoch, "key_metric": KEY_METRIC[self.spec.kind]}

    def final_summary(self, epoch: int) -> dict[str, Any]:
        """The summary of a run that trained, with its stop reason, window and timings."""
        summary = self.summary(epoch)
        summary["stopped_by_budget"] = bool(self.budget_stop)
        summary["best_window"] = int(self.spec.cfg["best_window"])
        summary["train_time_s"] = time.perf_counter() - (self.t_run if self.t_run is not None else self.t0)
        summary["epoch_time_s"] = float(np.mean(self.epoch_s)) if self.epoch_s else float("nan")
        return summary


def _fit(spec: _RunSpec, train_entries: list[dict[str, Any]], val_entries: list[dict[str, Any]],
         epoch_started: Callable[[int], None] | None, stop_after_epoch: int | None,
         progress: Callable[[TrainingProgress], None] | None = None, world: World = World()) -> dict[str, Any]:
    """Build loaders, network, loss and engines, restore a resumed run, train with tracking and
    progress reports; the summary. Under torchrun (``world``) each rank trains on its share of the
    training studies through DistributedDataParallel and validates every ``world_size``-th validation
    study (the metrics gathered over the ranks); the ranks other than 0 get no tracking and no progress."""
    from ichct.pipeline.models.data import make_loaders

    reporter = None
    if progress is not None:
        reporter = ProgressHandler(progress, spec.kind, KEY_METRIC[spec.kind], spec.max_epochs, spec.budget_s)
        reporter.starting(int(spec.ckpt["epoch"]) if spec.ckpt is not None else 0)
    if len(val_entries) < world.world_size:
        raise InputError(spec.manifest, f"fold {spec.fold} has {len(val_entries)} validation studies; training "
                                        f"with {world.world_size} processes needs at least one per process")
    train_ds, train_loader, val_loader, train_items = make_loaders(
        spec.kind, spec.cfg, train_entries, val_entries[world.rank::world.world_size])  # a shard per rank
    train_loader = world.shard_loader(train_loader, spec.seed)
    dev = torch.device(spec.device)
    parts = _build_parts(spec, dev, train_items)
    parts.train_network = world.wrap(parts.model, dev)
    collector = ValidationCollector(spec.kind, spec.cfg, gather=world.gather_objects if world.enabled else None)
    trainer, evaluator = _build_engines(spec, dev, parts, train_loader, val_loader, collector)
    world.attach_sampler_epoch(trainer, train_loader)
    recorder = _RunRecorder(spec, parts, evaluator, collector, train_ds.transform, epoch_started, stop_after_epoch,
                            world)
    if spec.ckpt is not None:
        recorder.restore(trainer, spec.ckpt)
        if int(spec.ckpt["epoch"]) >= spec.max_epochs:
            logger.info("%s: already trained for %d epochs", spec.out, spec.ckpt["epoch"])
            if reporter is not None:
                reporter.finished(recorder, int(spec.ckpt["epoch"]))
            return recorder.summary(int(spec.ckpt["epoch"]))
    recorder.attach(trainer)
    if reporter is not None:
        reporter.attach(trainer, recorder)
    with track_run(spec.tracking, trainer, evaluator, spec.out):
        trainer.run()
    return recorder.final_summary(int(trainer.state.epoch))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def train(
    kind: str,
    manifest: str | Path,
    fold: int,
    out_dir: str | Path,
    epochs: int | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    resume: bool = False,
    device: str = "cpu",
    amp: bool = False,
    seed: int = 0,
    max_minutes: float | None = None,
    *,
    tracking: str = "tensorboard",
    init_weights: str | Path | None = None,
    progress: Callable[[TrainingProgress], None] | None = None,
    epoch_started: Callable[[int], None] | None = None,
    _stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Train a segmentation (``"seg"``) or slice-classification (``"cls"``) model on one fold.

    Trains on the manifest's training folds other than ``fold`` and validates on ``fold`` every
    ``val_interval`` epochs (the last epoch always). A new run that fails before its first
    ``last.pt`` leaves nothing behind: the folders it created are removed (in a folder that
    existed, the files it wrote).

    Parameters
    ----------
    kind
        ``"seg"`` or ``"cls"``.
    manifest, fold
        The manifest and the fold validated on.
    out_dir
        The run folder (see the module docstring for its files).
    epochs, config
        The number of epochs and the config (a JSON file or a mapping) over the defaults of
        :mod:`ichct.pipeline.models.config`.
    resume
        Continue from ``out_dir/last.pt`` with the saved config and seed (``epochs`` may raise
        the total).
    device, amp, seed
        Torch device, mixed precision (CUDA only) and the seed of every RNG.
    max_minutes
        ``max_minutes`` (or config ``max_minutes``) is a time budget of the training loop (data
        caching excluded): after each epoch the run stops cleanly (metrics, ``last.pt``,
        ``best.pt`` written) when the next epoch would not fit, and the cosine learning-rate
        schedule follows whichever runs out first, epochs or time, so the rate still anneals to
        ~0 by the end. The budget counts per invocation (a ``--resume`` gets a fresh one).
    tracking
        ``"tensorboard"`` (event files in ``out_dir/tensorboard``), ``"mlflow"`` (the
        ``ichct[mlflow]`` extra; ``MLFLOW_TRACKING_URI`` or a file store in ``out_dir/mlruns``) or
        ``"none"``: see :mod:`ichct.pipeline.train.tracking`.
    init_weights
        Start a new run from a trained model's weights instead of a random draw (fine-tuning): a
        training run folder (``best.pt``), a bundle folder or a checkpoint file whose weights fit
        the run's network; see :mod:`ichct.pipeline.train.init_weights`. The source is recorded in
        ``config.json`` (``init_weights``) and its training record in ``train_patients.json``.
    progress
        Called with a :class:`~ichct.pipeline.train.progress.TrainingProgress` at the start,
        about once a second during each epoch, after each epoch and at the end, in the training
        thread (e.g. ``TrainingDisplay.reporter(name)`` of :mod:`ichct.pipeline.train.progress`).
    epoch_started
        Called with the epoch number at the start of every epoch, in the training thread (e.g.
        to give the run more torch threads once a run beside it has finished).
    _stop_after_epoch
        A test hook: stop right after that epoch's checkpoint, as if killed.

    Returns
    -------
    dict
        A summary: ``kind``, ``out_dir``, ``epochs``, ``best_metric``, ``best_epoch``,
        ``key_metric`` and, when it trained, ``stopped_by_budget``, ``best_window``,
        ``train_time_s`` and ``epoch_time_s``.

    Raises
    ------
    ichct.errors.IchctError
        (a ``ValueError``) for bad arguments, a config that fails its checks (naming the file and
        the key; before anything is written), a manifest that fails its checks
        (:class:`ManifestError`), a run directory that does not match ``resume``, or
        ``tracking="mlflow"`` without MLflow installed (before anything is written).

    Notes
    -----
    The steps: :func:`_resolve_run` (arguments, config, resume checks), :func:`_split_entries`
    (the fold's studies), :func:`_write_run_record` (``config.json``, ``train_patients.json``) and
    :func:`_fit` (loaders, network, loss, engines, the :class:`_RunRecorder` handlers, training).
    Started by ``torchrun`` (``WORLD_SIZE`` > 1) every process trains one model with
    DistributedDataParallel, ``batch_size`` studies per process and step, and rank 0 alone writes
    the run folder: see :mod:`ichct.pipeline.train.distributed`.
    """
    from monai.utils import set_determinism

    with distributed_run(device) as world:
        # rank 0 resolves and checks the run; under torchrun the other ranks receive it
        spec, train_entries, val_entries = world.from_main(_resolve_and_split, kind, manifest, fold, out_dir, epochs,
                                                           config, resume, device, amp, seed, max_minutes, tracking,
                                                           init_weights)
        set_determinism(seed=world.rank_seed(spec.seed))
        if not world.is_main:  # trains beside rank 0, never touches the run folder
            _fit(dataclasses.replace(spec, tracking="none"), train_entries, val_entries, epoch_started,
                 _stop_after_epoch, None, world)
            return world.from_main(dict)  # rank 0's summary
        command = _command(kind, spec.manifest, fold, spec.out, epochs, max_minutes, config, device, amp, seed,
                           tracking, init_weights)
        summary = _train_in_folder(spec, command if not resume else None, train_entries, val_entries,
                                   epoch_started, _stop_after_epoch, progress, world)
        return world.from_main(lambda: summary)


def _resolve_and_split(kind: str, manifest: str | Path, fold: int, out_dir: str | Path, epochs: int | None,
                       config: str | Path | Mapping[str, Any] | None, resume: bool, device: str, amp: bool, seed: int,
                       max_minutes: float | None, tracking: str, init_weights: str | Path | None = None
                       ) -> tuple[_RunSpec, list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`_resolve_run` and :func:`_split_entries`: the run and its studies (nothing is written)."""
    spec = _resolve_run(kind, manifest, fold, out_dir, epochs, config, resume, device, amp, seed, max_minutes,
                        tracking, init_weights)
    train_entries, val_entries = _split_entries(spec.manifest, fold)
    return spec, train_entries, val_entries


def _train_in_folder(spec: _RunSpec, command: str | None, train_entries: list[dict[str, Any]],
                     val_entries: list[dict[str, Any]], epoch_started: Callable[[int], None] | None,
                     stop_after_epoch: int | None, progress: Callable[[TrainingProgress], None] | None,
                     world: World) -> dict[str, Any]:
    """Create the run folder, write the run's record (a new run: ``command`` is given) and train; a
    new run that fails before its first ``last.pt`` leaves nothing behind."""
    resume = command is None
    created = _first_missing_ancestor(spec.out)  # the top folder this run creates (None: out exists)
    spec.out.mkdir(parents=True, exist_ok=True)
    try:
        if not resume:
            _write_run_record(spec, command, train_entries, val_entries)
        return _fit(spec, train_entries, val_entries, epoch_started, stop_after_epoch, progress, world)
    except BaseException:
        if not resume and not spec.last_path.exists():  # nothing to resume: leave nothing behind
            _remove_partial_run(spec.out, created)
        raise
