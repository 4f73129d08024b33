"""The training stage: ``train(kind, manifest, fold, out_dir, ...)`` (``ichct train seg|cls``).

Built on MONAI/ignite engines: a :class:`~monai.engines.SupervisedTrainer`, a
:class:`~monai.engines.SupervisedEvaluator` run every ``val_interval`` epochs by a
:class:`~monai.handlers.ValidationHandler`, :class:`~monai.handlers.StatsHandler` logging, and an
epoch handler of this module that writes ``metrics.csv``, ``last.pt``, ``best.pt`` and
``thresholds.json`` atomically (temporary file + ``os.replace``), so a kill never leaves a
partial file.

``RUN_DIR`` contents:

* ``config.json`` - resolved config, kind, fold, seed, device, manifest path + sha256, versions;
* ``train_patients.json`` - patient keys of the training folds (evaluation refuses them);
* ``metrics.csv`` - one row per epoch;
* ``last.pt`` / ``best.pt`` - model, optimizer, scheduler, epoch, iteration, best metric, RNG
  states (torch, numpy, python, augmentation transforms) as tensors/ints/lists: load with
  ``torch.load(path, weights_only=True)``;
* ``thresholds.json`` - a :class:`ichct.pipeline.decision.DecisionRule` chosen on the validation
  fold with the best model (cls: ``consecutive`` on slice probabilities; seg: ``seg_volume``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ichct.errors import USER_PATH_ERRORS, InputError, read_json
from ichct.pipeline.atomic import atomic_path, write_json_atomic
from ichct.pipeline.devices import torch_device
from ichct.pipeline.files import sha256_file
from ichct.pipeline.network_factory import build_network
from ichct.pipeline.train_config import resolve_config, resolve_saved_config
from ichct.pipeline.train_validation import ValidationCollector
from ichct.pipeline.training_record import training_record

logger = logging.getLogger("ichct.train")

METRIC_COLUMNS = {
    "seg": ("epoch", "iteration", "train_loss", "lr", "val_dice", "val_auc_any", "time_s"),
    "cls": ("epoch", "iteration", "train_loss", "lr", "val_auc_any", "val_auc_mean", "time_s"),
}
KEY_METRIC = {"seg": "val_dice", "cls": "val_auc_any"}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def save_checkpoint_atomic(obj: Mapping[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace``."""
    buf = io.BytesIO()
    torch.save(dict(obj), buf)
    with atomic_path(path, suffix=".pt") as tmp:
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            import os

            os.fsync(f.fileno())


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by this module, or any ``torch.save`` file (``weights_only=True``).

    A file that torch cannot read (truncated, not a checkpoint, objects other than tensors and
    plain containers) raises :class:`~ichct.errors.InputError` naming it; a missing one
    ``FileNotFoundError``.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except USER_PATH_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - RuntimeError (not a zip), UnpicklingError, EOFError, ...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(path, f"not a readable PyTorch checkpoint ({type(exc).__name__}"
                               f"{': ' + detail if detail else ''})") from exc


def _randomizables(transform: Any) -> list[Any]:
    """Randomizable objects of a Compose in a fixed order (top level and their direct members)."""
    from monai.transforms import Compose, Randomizable

    out: list[Any] = []
    seen: set[int] = set()

    def visit(t: Any, depth: int) -> None:
        if id(t) in seen or depth > 3:
            return
        seen.add(id(t))
        if isinstance(t, Compose):
            for sub in t.transforms:
                visit(sub, depth + 1)
            return
        if isinstance(t, Randomizable):
            out.append(t)
        for value in vars(t).values() if hasattr(t, "__dict__") else ():
            if isinstance(value, Randomizable):
                visit(value, depth + 1)

    visit(transform, 0)
    return out


def _np_state_to_list(st: tuple) -> list[Any]:
    return [str(st[0]), torch.from_numpy(np.asarray(st[1], dtype=np.int64)), int(st[2]), int(st[3]), float(st[4])]


def _np_state_from_list(st: list[Any]) -> tuple:
    return (st[0], np.asarray(st[1].numpy(), dtype=np.uint32), int(st[2]), int(st[3]), float(st[4]))


def rng_state(transform: Any = None) -> dict[str, Any]:
    """Every RNG state as tensors / ints / floats / lists (``weights_only``-loadable)."""
    py = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _np_state_to_list(np.random.get_state()),
        "python": [int(py[0]), [int(v) for v in py[1]], py[2]],
        "transforms": [_np_state_to_list(t.R.get_state()) for t in _randomizables(transform)] if transform else [],
    }
    if torch.cuda.is_available():
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def set_rng_state(state: Mapping[str, Any], transform: Any = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_np_state_from_list(state["numpy"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if transform is not None and state.get("transforms"):
        objs = _randomizables(transform)
        if len(objs) != len(state["transforms"]):
            logger.warning("augmentation RNG states do not match the transforms; not restored")
            return
        for t, st in zip(objs, state["transforms"]):
            t.R.set_state(_np_state_from_list(st))


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
# Losses and batches (validation: ichct.pipeline.train_validation)
# --------------------------------------------------------------------------------------------


class RSNAWeightedBCE(torch.nn.Module):
    """Weighted BCE over slices and labels (``any`` weight 2), with ``pos_weight``; label < 0 ignored."""

    def __init__(self, class_weights, pos_weight, aux_seg_weight: float = 0.0, focal_gamma: float = 0.0) -> None:
        super().__init__()
        self.focal_gamma = float(focal_gamma)
        self.register_buffer("w", torch.as_tensor(class_weights, dtype=torch.float32))
        self.register_buffer("pw", torch.as_tensor(pos_weight, dtype=torch.float32))
        self.aux_seg_weight = float(aux_seg_weight)
        self.seg_loss = None
        if self.aux_seg_weight > 0:
            from monai.losses import DiceCELoss

            self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    def forward(self, logits: torch.Tensor | Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Slice BCE; with an aux-seg output dict, plus ``aux_seg_weight`` x DiceCE of the blood mask."""
        if isinstance(logits, Mapping):
            out = logits
            loss = self.forward(out["logits"], target)
            if self.seg_loss is not None and target.get("seg") is not None:
                seg_t = target["seg"].to(out["seg"].device, torch.float32)
                loss = loss + self.aux_seg_weight * self.seg_loss(out["seg"].float(), seg_t)
            return loss
        y = target["labels"].to(logits.device, torch.float32)
        mask = (y >= 0).to(torch.float32)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(), y.clamp(min=0), reduction="none", pos_weight=self.pw.to(logits.device))
        if self.focal_gamma > 0:  # focal modulation (1 - p_t)^gamma: easy slices count less
            p = torch.sigmoid(logits.float())
            p_t = torch.where(y > 0, p, 1.0 - p)
            loss = loss * (1.0 - p_t).pow(self.focal_gamma)
        wm = mask * self.w.to(logits.device)
        return (loss * wm).sum() / wm.sum().clamp(min=1.0)


def cls_prepare_batch(batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False,
                      **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any], tuple, dict[str, Any]]:
    """The ``prepare_batch`` of the classifier's MONAI engines (a :func:`~ichct.pipeline.train_data.cls_collate` batch).

    Parameters
    ----------
    batchdata
        ``image`` ``(B, C, H, W, S)``, ``lengths``, ``slice_labels`` and, with the auxiliary
        segmentation head, the blood mask ``label``.
    device, non_blocking
        Where the tensors go (as ``Tensor.to``).
    **kwargs
        Ignored (MONAI passes more).

    Returns
    -------
    tuple
        ``(image, target, (), {"lengths": lengths})``: the network gets ``lengths`` as a keyword,
        the loss (:class:`RSNAWeightedBCE`) ``target`` = ``{"labels", "lengths"[, "seg"]}``.
    """
    x = batchdata["image"].to(device=device, non_blocking=non_blocking)
    lengths = batchdata["lengths"]
    target = {"labels": batchdata["slice_labels"].to(device=device, non_blocking=non_blocking), "lengths": lengths}
    if batchdata.get("label") is not None:
        target["seg"] = batchdata["label"].to(device=device, non_blocking=non_blocking)
    return x, target, (), {"lengths": lengths}


# Deprecated alias: the published classification bundles 0.1.0 and 0.2.0 name
# ``ichct.pipeline.train._cls_prepare_batch`` in configs/train.json; new bundles name cls_prepare_batch.
_cls_prepare_batch = cls_prepare_batch


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _seg_loss(cfg: Mapping[str, Any], weight: torch.Tensor) -> torch.nn.Module:
    """DiceCE (default) or DiceFocal; the class weights weight the CE / focal term."""
    from monai.losses import DiceCELoss, DiceFocalLoss

    name, batch = str(cfg["loss"]), bool(cfg["dice_batch"])
    if name == "dice_focal":
        return DiceFocalLoss(to_onehot_y=True, softmax=True, batch=batch, weight=weight)
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=batch, weight=weight)


#: Files a run writes before its first ``last.pt`` (removed when it fails before that).
_RUN_FILES = ("config.json", "train_patients.json", "metrics.csv", "best.pt", "thresholds.json")


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
             config: Any, device: str, amp: bool, seed: int) -> str:
    """The ``ichct train`` command line that trains this run again (a mapping config is only in config.json)."""
    import shlex

    argv = ["ichct", "train", kind, "--manifest", str(manifest), "--fold", str(int(fold)), "--out", str(out)]
    if epochs is not None:
        argv += ["--epochs", str(int(epochs))]
    if max_minutes is not None:
        argv += ["--max-minutes", repr(float(max_minutes))]
    if isinstance(config, (str, Path)):
        argv += ["--config", str(Path(config).resolve())]
    argv += ["--device", str(device)] + (["--amp"] if amp else []) + ["--seed", str(int(seed))]
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
    epoch_started: Callable[[int], None] | None = None,
    _stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Train a segmentation (``"seg"``) or slice-classification (``"cls"``) model on one fold.

    Trains on the manifest's training folds other than ``fold`` and validates on ``fold`` every
    ``val_interval`` epochs. Returns a summary dict (epochs, best metric/epoch, paths).
    ``resume=True`` continues from ``out_dir/last.pt`` with the saved config (``epochs`` may
    raise the total). ``_stop_after_epoch`` is a test hook: stop right after that epoch's
    checkpoint, as if killed.

    ``max_minutes`` (or config ``max_minutes``) is a time budget of the training loop (data
    caching excluded): after each epoch the run stops cleanly (metrics, ``last.pt``, ``best.pt``
    written) when the next epoch would not fit, and the cosine learning-rate schedule follows
    whichever runs out first, epochs or time, so the rate still anneals to ~0 by the end. The
    budget counts per invocation (a ``--resume`` gets a fresh one).

    ``epoch_started`` is called with the epoch number at the start of every epoch, in the
    training thread (e.g. to give the run more torch threads once a run beside it has finished).

    Raises :class:`~ichct.errors.IchctError` (a ``ValueError``) for bad arguments, a config that
    fails its checks (naming the file and the key; before anything is written), a manifest that
    fails its checks (:class:`ManifestError`) or a run directory that does not match ``resume``. A new run that
    fails before its first ``last.pt`` leaves nothing behind: the folders it created are removed
    (in a folder that existed, the files it wrote).
    """
    from ignite.engine import Events
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import MeanDice, StatsHandler, ValidationHandler
    from monai.inferers import SimpleInferer, SlidingWindowInferer
    from monai.networks.utils import one_hot
    from monai.utils import set_determinism

    import ichct
    from ichct.pipeline.manifests import load_manifest

    if kind not in ("seg", "cls"):
        raise ValueError(f"kind must be 'seg' or 'cls', got {kind!r}")
    if torch_device(device).type != "cuda" and amp:
        raise InputError("--amp needs --device cuda")
    if not 0 <= int(seed) < 2**32:
        raise InputError(f"seed (--seed) must be in 0..2**32-1, got {seed}")
    manifest = Path(manifest).resolve()
    out = Path(out_dir)
    last_path, best_path = out / "last.pt", out / "best.pt"
    manifest_sha = sha256_file(manifest)

    ckpt: dict[str, Any] | None = None
    if resume:
        if not last_path.exists() or not (out / "config.json").exists():
            raise InputError(out, "nothing to resume (no last.pt / config.json)")
        saved = read_json(out / "config.json", "run config")
        if saved["kind"] != kind or int(saved["fold"]) != int(fold):
            raise InputError(out, f"run is {saved['kind']} fold {saved['fold']}, not {kind} fold {fold}")
        if saved["manifest_sha256"] != manifest_sha:
            raise InputError(manifest, "changed since the run started (sha256 differs); refusing to resume")
        config_source = str(out / "config.json")
        cfg = resolve_saved_config(kind, saved["config"], epochs=epochs, source=config_source)
        seed = int(saved["seed"])
        ckpt = load_checkpoint(last_path)
    else:
        if last_path.exists():
            raise InputError(out, "holds a run already (last.pt); pass --resume or choose another folder")
        config_source = str(config) if isinstance(config, (str, Path)) else "training config"
        cfg = resolve_config(kind, config, epochs=epochs)
    _check_network(kind, cfg, config_source)
    if max_minutes is not None:
        cfg["max_minutes"] = float(max_minutes)
    budget_s = float(cfg["max_minutes"]) * 60.0 if cfg.get("max_minutes") else None
    if budget_s is not None and budget_s <= 0:
        raise InputError(f"max_minutes (--max-minutes) must be > 0, got {cfg['max_minutes']}")
    max_epochs = int(cfg["epochs"])

    set_determinism(seed=int(seed))
    train_entries = load_manifest(manifest, "training", fold=int(fold))
    val_entries = load_manifest(manifest, "validation", fold=int(fold), check=False)  # checked just above
    if not train_entries or not val_entries:
        raise InputError(manifest, f"fold {fold} leaves {len(train_entries)} training and "
                                   f"{len(val_entries)} validation studies; both must be non-empty")
    train_keys = sorted({e["patient_key"] for e in train_entries})
    leaked = set(train_keys) & {e["patient_key"] for e in val_entries}
    if leaked:  # load_manifest's checks make this impossible; never train on a leaking split
        raise InputError(manifest, f"{len(leaked)} patient(s) in both training and validation")

    created = _first_missing_ancestor(out)  # the top folder this run creates (None: out exists)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if not resume:
            write_json_atomic(out / "config.json", {
                "kind": kind, "fold": int(fold), "seed": int(seed), "device": str(device), "amp": bool(amp),
                "manifest": str(manifest), "manifest_sha256": manifest_sha, "config": cfg,
                "versions": {"ichct": ichct.__version__, "torch": torch.__version__,
                             "monai": __import__("monai").__version__},
                "command": _command(kind, manifest, fold, out, epochs, max_minutes, config, device, amp, seed),
            })
            write_json_atomic(out / "train_patients.json",
                              training_record(manifest, manifest_sha, int(fold), train_entries, val_entries))

        from ichct.pipeline.train_data import make_loaders, pos_weight_auto

        train_ds, train_loader, val_loader, train_items = make_loaders(kind, cfg, train_entries, val_entries)
        dev = torch.device(device)
        model = build_network(kind, cfg).to(dev)
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs), eta_min=0.0)

        if kind == "seg":
            k = int(cfg["num_classes"])
            cw = cfg["class_weights"] or [1.0] + [3.0] * (k - 1)
            loss_fn = _seg_loss(cfg, torch.as_tensor(cw, dtype=torch.float32).to(dev))
            patch = [int(p) for p in cfg["patch"]]
            val_inferer = SlidingWindowInferer(roi_size=patch, sw_batch_size=int(cfg["sw_batch_size"]),
                                               overlap=float(cfg["sw_overlap"]), mode="gaussian")

            def dice_transform(o):
                pred = one_hot(torch.argmax(o["pred"], dim=1, keepdim=True), k)
                return pred, one_hot(o["label"].long(), k)

            key_val = {"val_dice": MeanDice(include_background=False, output_transform=dice_transform)}
            prep: dict[str, Any] = {}
        else:
            pw = cfg["pos_weight"]
            if pw == "auto":
                pw = pos_weight_auto(train_items, float(cfg["pos_weight_max"]))
            cfg_pw = [float(v) for v in pw]
            logger.info("pos_weight %s", [round(v, 3) for v in cfg_pw])
            aux_w = float(cfg["aux_seg_weight"]) if dict(cfg["network"]).get("aux_seg") else 0.0
            loss_fn = RSNAWeightedBCE(cfg["class_weights"], cfg_pw, aux_w, float(cfg["focal_gamma"])).to(dev)
            val_inferer = SimpleInferer()
            key_val = None
            prep = {"prepare_batch": cls_prepare_batch}

        collector = ValidationCollector(kind, cfg)
        # MONAI's StatsHandler takes over a named logger (its own stdout handler, level INFO, no
        # propagation): its lines would reach stdout past -q and beside the JSON summary. Its loggers
        # are given back to ichct's logging setup (stderr, -q/-v) once the engines are built.
        with _keep_logger_setup("ichct.train", "ichct.train.val"):
            evaluator = SupervisedEvaluator(
                device=dev, val_data_loader=val_loader, network=model, inferer=val_inferer, key_val_metric=key_val,
                amp=bool(amp), decollate=False,
                # the collector first: its AUCs are in state.metrics when the StatsHandler logs them
                val_handlers=[collector, StatsHandler(name="ichct.train.val", output_transform=lambda x: None,
                                                      iteration_log=False)],
                **prep,
            )
            trainer = SupervisedTrainer(
                device=dev, max_epochs=max_epochs, train_data_loader=train_loader, network=model, optimizer=optimizer,
                loss_function=loss_fn, inferer=SimpleInferer(), amp=bool(amp), decollate=False,
                train_handlers=[
                    ValidationHandler(validator=evaluator, interval=int(cfg["val_interval"]), epoch_level=True),
                    StatsHandler(name="ichct.train", tag_name="train_loss", output_transform=lambda o: o["loss"].item(),
                                 iteration_log=False),
                ],
                **prep,
            )

        state: dict[str, Any] = {"best_metric": None, "best_epoch": 0, "loss_sum": 0.0, "loss_n": 0,
                                 "t0": time.perf_counter(), "epoch_t0": 0.0, "epoch_s": [], "budget_stop": False,
                                 "first_epoch": None}
        columns = METRIC_COLUMNS[kind]
        metrics_path = out / "metrics.csv"
        rows: list[dict[str, Any]] = []
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scheduler.T_max = max(1, max_epochs)  # --epochs may extend a resumed run
            trainer.state.epoch = int(ckpt["epoch"])
            trainer.state.iteration = int(ckpt["iteration"])
            state["best_metric"] = None if ckpt["best_metric"] is None else float(ckpt["best_metric"])
            state["best_epoch"] = int(ckpt["best_epoch"])
            # rows of epochs after the checkpoint (a kill between the CSV and last.pt) are redone
            rows = [dict(r) for r in read_metrics(metrics_path) if int(r["epoch"]) <= int(ckpt["epoch"])]
            set_rng_state(ckpt["rng"], train_ds.transform)
            logger.info("resuming %s from epoch %d of %d", out, ckpt["epoch"], max_epochs)
            if ckpt.get("scaler") is not None:
                trainer.add_event_handler(Events.STARTED, lambda e: e.scaler.load_state_dict(ckpt["scaler"])
                                          if getattr(e, "scaler", None) is not None else None)
            if int(ckpt["epoch"]) >= max_epochs:
                logger.info("%s: already trained for %d epochs", out, ckpt["epoch"])
                return _summary(out, kind, int(ckpt["epoch"]), state)

        @trainer.on(Events.EPOCH_STARTED)
        def _reset_loss(engine) -> None:
            state["loss_sum"], state["loss_n"] = 0.0, 0
            state["epoch_t0"] = time.perf_counter()
            if state["first_epoch"] is None:
                state["first_epoch"], state["t_run"] = int(engine.state.epoch), time.perf_counter()
            if epoch_started is not None:
                epoch_started(int(engine.state.epoch))

        @trainer.on(Events.ITERATION_COMPLETED)
        def _acc_loss(engine) -> None:
            state["loss_sum"] += float(engine.state.output["loss"].item())
            state["loss_n"] += 1

        @trainer.on(Events.EPOCH_COMPLETED)
        def _epoch_done(engine) -> None:
            epoch = int(engine.state.epoch)
            validated = epoch % int(cfg["val_interval"]) == 0
            state["epoch_s"].append(time.perf_counter() - state["epoch_t0"])
            elapsed = time.perf_counter() - state["t_run"]
            budget_stop = (budget_s is not None and epoch < max_epochs
                           # a validating epoch may be the slow one
                           and elapsed + max(state["epoch_s"][-3:]) > budget_s)
            if not validated and (epoch >= max_epochs or budget_stop):
                evaluator.run(epoch)  # the last epoch is always validated: best.pt and thresholds.json exist
                validated = True
            vm = dict(evaluator.state.metrics) if validated else {}
            row = {"epoch": epoch, "iteration": int(engine.state.iteration),
                   "train_loss": state["loss_sum"] / max(1, state["loss_n"]),
                   "lr": float(optimizer.param_groups[0]["lr"]), "time_s": time.perf_counter() - state["t0"]}
            for c in columns:
                if c.startswith("val_"):
                    row[c] = float(vm.get(c, float("nan")))
            rows.append(row)
            scheduler.step()
            if budget_s is not None:
                # cosine over whichever runs out first, the epochs or the time budget (so the rate
                # still anneals when the budget stops the run early)
                spent = (time.perf_counter() - state["t_run"] + float(np.median(state["epoch_s"]))) / budget_s
                progress = min(1.0, max(epoch / max(1, max_epochs), spent))
                for g in optimizer.param_groups:
                    g["lr"] = float(g["initial_lr"]) * 0.5 * (1.0 + math.cos(math.pi * progress))
            key = float("nan")
            if validated:  # the mean over the last `best_window` validations (this one included)
                history = [float(r[KEY_METRIC[kind]]) for r in rows if not math.isnan(float(r[KEY_METRIC[kind]]))]
                window = history[-int(cfg["best_window"]):]
                key = float(np.mean(window)) if window else float("nan")
            # ties go to the later epoch: a small validation fold saturates (AUC 1.0) early, and the
            # later weights have seen more updates at a lower (cosine-annealed) learning rate
            better = validated and (state["best_metric"] is None
                                    or (not math.isnan(key) and (math.isnan(state["best_metric"])
                                                                 or key >= state["best_metric"])))
            if better:
                state["best_metric"], state["best_epoch"] = key, epoch
            ck = {"kind": kind, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "epoch": epoch, "iteration": int(engine.state.iteration),
                  "best_metric": state["best_metric"], "best_epoch": state["best_epoch"],
                  "rng": rng_state(train_ds.transform),
                  "scaler": engine.scaler.state_dict() if getattr(engine, "scaler", None) is not None else None}
            _write_metrics(metrics_path, columns, rows)
            if better:
                save_checkpoint_atomic(ck, best_path)
                write_json_atomic(out / "thresholds.json", collector.decision_rule(epoch, int(fold)).to_dict())
            save_checkpoint_atomic(ck, last_path)
            logger.info("epoch %d/%d: loss %.4f %s", epoch, max_epochs, row["train_loss"],
                        " ".join(f"{c}={_fmt(row[c])}" for c in columns if c.startswith("val_")))
            if _stop_after_epoch is not None and epoch >= _stop_after_epoch:
                engine.terminate()
            elif budget_stop:
                logger.info("time budget %.1f min reached after epoch %d (%.0f s)", budget_s / 60, epoch, elapsed)
                state["budget_stop"] = True
                engine.terminate()

        trainer.run()
        summary = _summary(out, kind, int(trainer.state.epoch), state)
        summary["stopped_by_budget"] = bool(state["budget_stop"])
        summary["best_window"] = int(cfg["best_window"])
        summary["train_time_s"] = time.perf_counter() - state.get("t_run", state["t0"])
        summary["epoch_time_s"] = float(np.mean(state["epoch_s"])) if state["epoch_s"] else float("nan")
        return summary
    except BaseException:
        if not resume and not last_path.exists():  # nothing to resume: leave nothing behind
            _remove_partial_run(out, created)
        raise


def _summary(out: Path, kind: str, epoch: int, state: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "out_dir": str(out), "epochs": epoch, "best_metric": state["best_metric"],
            "best_epoch": state["best_epoch"], "key_metric": KEY_METRIC[kind]}
