"""Components that the bundle configs instantiate (``_target_``) besides MONAI's and the transforms'.

* :func:`study_items` - the inference datalist from ``--input_path`` (DICOM folder or NIfTI).
* :func:`manifest_split` - one split of an ichct manifest (a MONAI datalist with folds), the
  training and validation datalists of ``train.json``.
* :class:`SaveSliceProbabilitiesd` - per study: slice probabilities (CSV) and the CT-level calls of
  the stored decision rule (JSON).
* :class:`ValidationScores` - CT-level validation AUC of "any" as an ignite metric (the scores of
  the training stage's validation collector, so the bundle can choose thresholds the same way).
* :class:`RunFilesWriter` / :class:`ThresholdsSaver` - write ``models/run_config.json``,
  ``models/train_patients.json`` and ``models/thresholds.json`` like ``ichct train`` does, so that
  :func:`ichct.pipeline.bundle.package.load_bundle` reads a bundle retrained through ``train.json``.
* :class:`ValidationEveryAndLast` - MONAI's ``ValidationHandler`` that also validates the final
  epoch when ``interval`` would skip it.
* :func:`dice_output_transform` - argmax + one-hot of a batched seg output for ``MeanDice``.

What the configs of a bundle packaged now need is imported at the top of this module, because
``ichct bundle export`` copies into the bundle's ``scripts/`` the modules that the configs name
and what those import at module level (a function-local import is for another code path).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai import __version__ as monai_version
from monai.config import KeysCollection
from monai.handlers import ValidationHandler
from monai.transforms import MapTransform

import ichct
from ichct.errors import InputError, read_json
from ichct.pipeline.core.atomic import atomic_path, write_json_atomic
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision import DecisionRule, ct_scores, decide
from ichct.pipeline.train.init_weights import load_init_weights
from ichct.pipeline.train.record import training_record
from ichct.pipeline.train.validation import ValidationCollector

logger = logging.getLogger("ichct.bundle")

__all__ = ["study_items", "manifest_split", "SaveSliceProbabilitiesd", "ValidationScores", "RunFilesWriter",
           "ThresholdsSaver", "ValidationEveryAndLast", "dice_output_transform", "study_name", "MANIFEST_SPLITS",
           "VALIDATION_KEYS"]

#: The splits of :func:`manifest_split`.
MANIFEST_SPLITS = ("training", "validation", "test", "all")

#: The training-config keys that :class:`ValidationScores` reads, per model kind.
VALIDATION_KEYS = {"seg": ("min_component_ml", "num_classes", "spacing_mm"), "cls": ("rule_k", "threshold_method")}

_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def study_name(path: str | Path) -> str:
    """Output name of a study: the file name without ``.nii``/``.nii.gz``, or the folder name."""
    p = Path(path)
    return _NIFTI.sub("", p.name) or "study"


def study_items(input_path: str | Path | None) -> list[dict[str, str]]:
    """Inference datalist: ``[{"image": path, "name": output name}]``.

    Parameters
    ----------
    input_path
        A NIfTI file; a folder holding NIfTI files (one study each); or a DICOM study folder (the
        default series is read, see ``ichct info``).

    Raises
    ------
    ichct.errors.InputError
        ``input_path`` is not set (a ``ValueError``).
    FileNotFoundError
        It does not exist, or a folder holds neither NIfTI nor other files.
    """
    if input_path is None or str(input_path) == "":
        raise InputError("input_path is not set: pass --input_path DICOM_FOLDER_OR_NIFTI (and --output_dir OUT)")
    p = Path(input_path)
    if p.is_file():
        return [{"image": str(p), "name": study_name(p)}]
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: input_path does not exist")
    nifti = sorted(f for f in p.iterdir() if f.is_file() and _NIFTI.search(f.name))
    if nifti:
        return [{"image": str(f), "name": study_name(f)} for f in nifti]
    if not any(f.is_file() for f in p.rglob("*")):
        raise FileNotFoundError(f"{p}: empty folder (expected a DICOM study or NIfTI files)")
    return [{"image": str(p), "name": study_name(p)}]


def manifest_split(manifest: str | Path, split: str = "training", fold: int | None = None) -> list[dict[str, Any]]:
    """The entries of one split of an ichct manifest, with absolute ``image`` and ``label`` paths.

    A manifest (``ichct manifest build``) is a MONAI datalist: ``training`` entries with a ``fold``
    each, and ``test`` entries; paths are relative to the manifest's folder. Its checks (files,
    leaks between the splits) are ``ichct manifest check``'s, not repeated here.

    Parameters
    ----------
    manifest
        The manifest file.
    split
        ``"training"``: the training entries outside ``fold`` (all of them without a fold);
        ``"validation"``: those of ``fold``; ``"test"``; ``"all"``: training then test.
    fold
        Cross-validation fold, ``0 <= fold < num_folds`` (needed for ``"validation"``).

    Raises
    ------
    ichct.errors.InputError
        Not a manifest, an unknown split, a fold out of range (naming the manifest).

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> _ = path.write_text(json.dumps({"num_folds": 2, "test": [],
    ...     "training": [{"image": "a", "fold": 0}, {"image": "b", "fold": 1}]}))
    >>> [pathlib.Path(e["image"]).name for e in manifest_split(path, "validation", fold=1)]
    ['b']
    """
    doc = read_json(manifest, "manifest")
    if not isinstance(doc, Mapping) or not isinstance(doc.get("training"), list):
        raise InputError(manifest, "not an ichct manifest (a MONAI datalist with a 'training' list)")
    if split not in MANIFEST_SPLITS:
        raise InputError(manifest, f"split must be one of {', '.join(MANIFEST_SPLITS)}, got {split!r}")
    num_folds = int(doc.get("num_folds", 1))
    fold = None if fold is None else int(fold)
    if fold is not None and not 0 <= fold < num_folds:
        raise InputError(manifest, f"fold {fold} outside 0..{num_folds - 1}")
    if split == "validation" and fold is None:
        raise InputError(manifest, "split 'validation' needs a fold")
    training, test = list(doc["training"]), list(doc.get("test") or [])
    chosen = {"training": [e for e in training if fold is None or e.get("fold") != fold],
              "validation": [e for e in training if e.get("fold") == fold],
              "test": test, "all": training + test}[split]
    base = Path(os.path.abspath(manifest)).parent
    return [{**e, **{k: os.path.normpath(os.path.join(base, e[k])) for k in ("image", "label")
                     if isinstance(e.get(k), str)}} for e in chosen]


class SaveSliceProbabilitiesd(MapTransform):
    """Write one study's slice probabilities and CT-level calls.

    ``d[key]`` holds the classifier's ``(6, S)`` slice probabilities (after the sigmoid). Writes
    ``<output_dir>/<name>_slices.csv`` (one row per slice, in the reader's order, columns
    :data:`~ichct.pipeline.core.labels.LABEL_NAMES`) and ``<name>_ct.json`` (the rule, its score, threshold
    and call per subtype), each atomically.

    Parameters
    ----------
    keys
        The probability key (``"pred"``).
    output_dir
        Output folder (created).
    rule
        The decision rule stored with the model (``models/thresholds.json``).
    name_key
        Key holding the study's output name (see :func:`study_items`).
    """

    def __init__(self, keys: KeysCollection, output_dir: str | Path, rule: DecisionRule, name_key: str = "name") -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.rule = rule
        self.name_key = name_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        name = str(d.get(self.name_key) or "study")
        for key in self.key_iterator(d):
            probs = np.asarray(torch.as_tensor(d[key]).detach().float().cpu(), dtype=np.float64).T  # (S, 6)
            if probs.ndim != 2 or probs.shape[1] != len(LABEL_NAMES):
                raise ValueError(f"{name}: expected (6, S) slice probabilities, got {tuple(probs.shape[::-1])}")
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.output_dir / f"{name}_slices.csv") as tmp:
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    w.writerow(["slice", *LABEL_NAMES])
                    for i, row in enumerate(probs):
                        w.writerow([i, *(f"{v:.6g}" for v in row)])
            write_json_atomic(self.output_dir / f"{name}_ct.json", {
                "study": name, "n_slices": int(probs.shape[0]), "rule": self.rule.to_dict(),
                "scores": ct_scores(self.rule, slice_probs=probs), "decisions": decide(self.rule, slice_probs=probs)})
        return d


def dice_output_transform(num_classes: int) -> Callable[[Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]:
    """``output -> (one-hot argmax of pred, one-hot label)`` of a batched (not decollated) seg output."""
    from monai.networks.utils import one_hot

    def transform(output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = one_hot(torch.argmax(output["pred"], dim=1, keepdim=True), num_classes)
        return pred, one_hot(output["label"].long(), num_classes)

    return transform


class ValidationScores(Metric):
    """CT-level AUC of "any" on the validation fold, as the training stage computes it.

    Wraps the validation collector of ``ichct train``
    (:class:`~ichct.pipeline.train.validation.ValidationCollector`; seg: blood volume of the
    ``seg_volume`` rule; cls: ``consecutive`` rule on slice probabilities), so that the bundle's
    key metric and its thresholds (:meth:`decision_rule`) match ``ichct train``.

    Parameters
    ----------
    kind
        ``"seg"`` or ``"cls"``.
    cfg
        The training-config values it reads (:data:`VALIDATION_KEYS`: seg ``min_component_ml``,
        ``num_classes``, ``spacing_mm``; cls ``rule_k``, ``threshold_method``). A whole training
        config (the ``ichct_config`` of published bundles) works too; one that lacks these keys is
        completed as a saved run's config is (:func:`~ichct.pipeline.models.config.saved_run_config`).
    """

    def __init__(self, kind: str, cfg: Mapping[str, Any]) -> None:
        if kind not in VALIDATION_KEYS:
            raise ValueError(f"kind must be 'seg' or 'cls', got {kind!r}")
        if any(k not in cfg for k in VALIDATION_KEYS[kind]):  # an older published bundle's ichct_config
            from ichct.pipeline.models.config import saved_run_config

            cfg = saved_run_config(kind, cfg)
        self.collector = ValidationCollector(kind, cfg)
        super().__init__(output_transform=lambda x: x)

    def reset(self) -> None:
        self.collector.reset()

    def update(self, output: Any) -> None:  # the collector reads the engine state instead
        pass

    def iteration_completed(self, engine: Engine) -> None:
        self.collector.update(engine)

    def compute(self) -> float:
        return self.collector.metrics()["val_auc_any"]

    def decision_rule(self, epoch: int, fold: int) -> DecisionRule:
        """Thresholds chosen on the scores of the last validation epoch."""
        return self.collector.decision_rule(epoch, fold)


class ValidationEveryAndLast(ValidationHandler):
    """``ValidationHandler`` (epoch level) that also runs after the final epoch when ``interval``
    does not divide ``max_epochs``, so a run always ends validated: the key-metric checkpoint and
    ``thresholds.json`` exist even for ``--epochs 1`` with ``val_interval`` 2 (as ``ichct train``)."""

    def __init__(self, validator: Any, interval: int) -> None:
        super().__init__(validator=validator, interval=int(interval), epoch_level=True)

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._last_unvalidated), self)

    def _last_unvalidated(self, engine: Engine, epoch: int) -> bool:
        return epoch == engine.state.max_epochs and epoch % self.interval != 0


class ThresholdsSaver:
    """Evaluator handler: write ``thresholds.json`` whenever the key metric improves.

    Attach after MONAI's own metric comparison (any ``val_handlers`` entry is), so that
    ``engine.state.best_metric_epoch`` is up to date; the model saved by ``CheckpointSaver``
    (``save_key_metric``) and these thresholds then come from the same epoch.
    """

    def __init__(self, scores: ValidationScores, path: str | Path, fold: int) -> None:
        self.scores, self.path, self.fold = scores, Path(path), int(fold)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        if int(getattr(engine.state, "best_metric_epoch", -1)) != epoch:
            return
        write_json_atomic(self.path, self.scores.decision_rule(epoch, self.fold).to_dict())


class RunFilesWriter:
    """Trainer handler: at the start of training, write ``run_config.json`` and ``train_patients.json``.

    The same files as an ``ichct train`` run directory holds, in the bundle's ``models/`` folder
    (``ckpt_dir``), so :func:`ichct.pipeline.bundle.package.load_bundle` and evaluation's leakage guard
    work on a bundle retrained with ``configs/train.json``.

    Parameters
    ----------
    ckpt_dir
        Folder of ``model.pt``.
    kind, cfg, fold, seed, epochs
        The run's kind, resolved training config, validation fold, seed and epochs.
    manifest
        The manifest trained on.
    train_entries, val_entries
        Its training and validation entries (their patient keys, study and series UIDs are stored;
        see :mod:`ichct.pipeline.train.record`).
    init_weights
        The weights training starts from (``train.json``'s ``init_weights``; ``None``: a random
        draw): read here, before training overwrites anything, so ``run_config.json`` records the
        source and ``train_patients.json`` nests its training record, as ``ichct train
        --init-weights`` does.
    """

    def __init__(self, ckpt_dir: str | Path, kind: str, cfg: Mapping[str, Any], fold: int, seed: int, epochs: int,
                 manifest: str | Path, train_entries: Sequence[Mapping[str, Any]],
                 val_entries: Sequence[Mapping[str, Any]] | None = None, init_weights: str | Path | None = None) -> None:
        self.ckpt_dir, self.kind, self.cfg = Path(ckpt_dir), kind, dict(cfg)
        self.init = None if init_weights is None else load_init_weights(init_weights, kind)
        self.fold, self.seed, self.epochs = int(fold), int(seed), int(epochs)
        self.manifest = Path(manifest)
        self.train_entries = list(train_entries)
        self.val_entries = list(val_entries) if val_entries is not None else None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        sha = sha256_file(self.manifest)
        cfg = {**self.cfg, "epochs": self.epochs, "max_minutes": None}
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        old = self.ckpt_dir / "run_config.json"
        bundle = json.loads(old.read_text(encoding="utf-8")).get("bundle") or {} if old.is_file() else {}
        bundle = {**bundle, "source_run": "configs/train.json", "checkpoint": "model.pt", "epoch": None,
                  "weights_sha256": None, "training": {"epochs": self.epochs, "key_metric": "see the training log"}}
        record = training_record(self.manifest, sha, self.fold, self.train_entries, self.val_entries)
        if self.init is not None and self.init.record is not None:
            record["initial_weights"] = self.init.record
        write_json_atomic(self.ckpt_dir / "train_patients.json", record)
        write_json_atomic(self.ckpt_dir / "run_config.json", {
            "kind": self.kind, "fold": self.fold, "seed": self.seed,
            "device": str(getattr(engine.state, "device", "cpu")), "amp": False, "manifest": os.fspath(self.manifest),
            "manifest_sha256": sha, "config": cfg,
            "versions": {"ichct": ichct.__version__, "torch": torch.__version__, "monai": monai_version},
            "command": "python -m monai.bundle run --config_file configs/train.json"
                       + ("" if self.init is None else f" --init_weights {self.init.source['path']}"),
            "bundle": bundle, **({} if self.init is None else {"init_weights": self.init.source})})
