"""Generate a bundle's MONAI configs from a training run's resolved config.

:func:`bundle_configs` is the one source of every ``configs/*.json`` of an ichct bundle (the
committed ``bundles/`` and those ``ichct bundle package`` writes). Every step is its own
``_target_`` entry with its arguments in the JSON, as in MONAI's model zoo: the preprocessing is
the list of transform specs that training and ``ichct predict`` build their ``Compose`` from
(:func:`~ichct.pipeline.models.data.seg_preprocessing`,
:func:`~ichct.pipeline.models.data.cls_preprocessing`), so a bundle preprocesses exactly as its
model was trained, and a user changes a window or the spacing in the config.

* ``inference.json`` - seg: the preprocessing, sliding-window inference with the training patch
  (Gaussian blending), softmax, ``Invertd`` (linear) back to the input's grid, argmax, small
  blood components dropped, ``SaveImaged`` as NIfTI; cls: the preprocessing, the slice
  probabilities of the 6 labels per study (CSV) and the CT-level calls of the stored rule (JSON).
* ``train.json`` - MONAI ``SupervisedTrainer`` / ``SupervisedEvaluator`` with the training
  stage's transforms, losses, optimizer and schedule; ``CheckpointSaver`` keeps
  ``models/model.pt`` of the best validation epoch, with its thresholds; TensorBoard event files
  in ``logs/``; the ids MONAI's experiment tracking patches (``train#trainer``,
  ``train#handlers``, ``validate#evaluator``, ``validate#handlers``), so ``--tracking mlflow``
  works. ``training_config`` is the run's training config, written to ``models/run_config.json``
  by a retraining (what ``ichct predict --bundle`` reads).
* ``evaluate.json`` - the inference preprocessing and network over a manifest split, scored by
  :mod:`ichct.pipeline.bundle.evaluation` (leakage guard, bootstrap metrics, report).
* ``multi_gpu_train.json`` - ``torchrun`` overrides (one node or several): ``DistributedDataParallel``
  (nccl and ``SyncBatchNorm`` on GPUs, gloo on CPU), a ``DistributedSampler``, the studies
  streamed from a disk cache (``PersistentDataset`` in ``cache_dir``, default
  ``<bundle>/cache``, keyed by the study and the preprocessing), rank-0-only saving and logging.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from ichct.pipeline.bundle.components import VALIDATION_KEYS
from ichct.pipeline.models.config import saved_run_config
from ichct.pipeline.models.data import cls_preprocessing, seg_preprocessing
from ichct.pipeline.models.network_factory import is_ensemble, mirror_kwargs, network_kwargs, network_name
from ichct.pipeline.models.losses import RSNAWeightedBCE, cls_prepare_batch

__all__ = ["CONFIG_NAMES", "LOGGING_CONF", "bundle_configs", "manifest_expression", "preprocessing_specs"]

CONFIG_NAMES = ("inference", "train", "evaluate", "multi_gpu_train")

#: ``configs/logging.conf`` of every bundle (standard library ``logging.config.fileConfig``).
LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""

_DEVICE = "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"
_COMPONENTS = "ichct.pipeline.bundle.components"
_LOSS = "$monai.handlers.from_engine(['loss'], first=True)"


def manifest_expression(manifest: str) -> str:
    """Config value of the default manifest: relative paths are relative to ``bundle_root``."""
    m = str(manifest).replace(os.sep, "/")
    if os.path.isabs(m):
        return m
    return f"$@bundle_root + '/{m}'"


def preprocessing_specs(kind: str, cfg: Mapping[str, Any], *, train: bool = False,
                        labels: bool = False) -> list[dict[str, Any]]:
    """The transform specs of a bundle's preprocessing: inference (no labels) or training / validation."""
    if kind == "seg":
        return seg_preprocessing(cfg, train=train, labels=labels or train)
    return cls_preprocessing(cfg, train=train, slice_labels=labels or train)


def _compose(specs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"_target_": "Compose", "transforms": specs}


def _network_def(kind: str, cfg: Mapping[str, Any], for_training: bool) -> dict[str, Any]:
    if kind == "seg" or for_training:  # training needs the raw outputs (dict with the auxiliary segmentation)
        target = network_name(kind, cfg)
    else:  # the slice logits channel first, for MONAI's bundle tools
        wrapper = "ChannelFirstClassifierEnsemble" if is_ensemble(cfg) else "ChannelFirstSliceClassifier"
        target = f"ichct.pipeline.bundle.network.{wrapper}"
    return {"_target_": target, **copy.deepcopy(network_kwargs(kind, cfg))}


def _seg_inferer(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {"_target_": "SlidingWindowInferer", "roi_size": [int(p) for p in cfg["patch"]],
            "sw_batch_size": int(cfg["sw_batch_size"]), "overlap": float(cfg["sw_overlap"]),
            "mode": "gaussian"}


def _inferer(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The inferer of validation, inference and evaluation: the model's, averaged over mirrored inputs with
    ``tta_mirror_axes`` (so thresholds are chosen on the predictions they are applied to)."""
    inferer = _seg_inferer(cfg) if kind == "seg" else {"_target_": "SimpleInferer"}
    mirror = mirror_kwargs(kind, cfg)
    return inferer if mirror is None else {"_target_": "ichct.networks.MirrorEnsembleInferer", "inferer": inferer,
                                           **mirror}


def _common(kind: str, cfg: Mapping[str, Any], for_training: bool) -> dict[str, Any]:
    return {
        "imports": ["$import os", "$import torch", "$import monai"] + (["$import numpy"] if kind == "seg" else []),
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "device": _DEVICE,
        "network_def": _network_def(kind, cfg, for_training=for_training),
        "network": "$@network_def.to(@device)",
    }


def _model_run(kind: str, cfg: Mapping[str, Any], loader: str, postprocessing: list[dict[str, Any]],
               handlers: list[dict[str, Any]]) -> dict[str, Any]:
    """Preprocessing, data, inferer, postprocessing, handlers and ``evaluator`` of inference and evaluation."""
    return {
        "preprocessing": _compose(preprocessing_specs(kind, cfg)),
        "dataset": {"_target_": "Dataset", "data": loader, "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": _inferer(kind, cfg),
        "postprocessing": _compose(postprocessing),
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "$@ckpt_dir + '/model.pt'", "load_dict": {"model": "@network"},
             "map_location": "@device"},
            {"_target_": "StatsHandler", "iteration_log": False},
            *handlers,
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
    }


# --------------------------------------------------------------------------------------------
# inference.json and evaluate.json
# --------------------------------------------------------------------------------------------


def _seg_postprocessing(cfg: Mapping[str, Any], model_grid_key: str | None) -> list[dict[str, Any]]:
    """Softmax, [unsure components to background], [argmax on the model's grid into ``model_grid_key``],
    back to the input's grid, argmax, specks."""
    min_ml = float(cfg["min_component_ml"])
    min_confidence = float(cfg["min_component_confidence"])
    return [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        *([{"_target_": "ichct.transforms.SuppressUncertainComponentsd", "keys": "pred",
            "min_confidence": min_confidence}] if min_confidence > 0 else []),
        *([{"_target_": "CopyItemsd", "keys": "pred", "names": model_grid_key},
           {"_target_": "AsDiscreted", "keys": model_grid_key, "argmax": True}] if model_grid_key else []),
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        *([{"_target_": "ichct.transforms.RemoveSmallComponentsd", "keys": "pred", "min_volume_ml": min_ml}]
          if min_ml > 0 else []),
    ]


def _decision_rule() -> dict[str, Any]:
    return {"_target_": "ichct.pipeline.decision.DecisionRule.load", "path": "$@ckpt_dir + '/thresholds.json'"}


def _inference(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    c = _common(kind, cfg, for_training=False)
    c.update({"input_path": None, "output_dir": "$@bundle_root + '/predictions'",
              "datalist": {"_target_": f"{_COMPONENTS}.study_items", "input_path": "@input_path"}})
    if kind == "seg":
        post = [*_seg_postprocessing(cfg, None),
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False, "print_log": False}]
    else:
        c["decision_rule"] = _decision_rule()
        post = [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
                {"_target_": f"{_COMPONENTS}.SaveSliceProbabilitiesd", "keys": "pred", "output_dir": "@output_dir",
                 "rule": "@decision_rule", "name_key": "name"}]
    c.update(_model_run(kind, cfg, "@datalist", post, []))
    c.update({"initialize": ["$monai.utils.set_determinism(seed=0)"], "run": ["$@evaluator.run()"]})
    return c


def _evaluate(kind: str, cfg: Mapping[str, Any], manifest: str) -> dict[str, Any]:
    c = _common(kind, cfg, for_training=False)
    c.update({
        "manifest": manifest_expression(manifest),
        "eval_split": "test",
        "eval_fold": None,
        "output_dir": "$@bundle_root + '/eval'",
        "bootstrap": 2000,
        "seed": 0,
        "allow_overlap": False,
        "decision_rule": _decision_rule(),
        "studies": {"_target_": "ichct.pipeline.bundle.evaluation.evaluation_studies", "manifest": "@manifest",
                    "split": "@eval_split", "fold": "@eval_fold", "record": "$@ckpt_dir + '/train_patients.json'",
                    "output_dir": "@output_dir", "allow_overlap": "@allow_overlap"},
        "recorder": {"_target_": "ichct.pipeline.bundle.evaluation.EvaluationRecorder", "studies": "@studies",
                     "rule": "@decision_rule", "bundle_root": "@bundle_root", "manifest": "@manifest",
                     "split": "@eval_split", "fold": "@eval_fold", "output_dir": "@output_dir",
                     "n_boot": "@bootstrap", "seed": "@seed",
                     "num_classes": int(cfg["num_classes"]) if kind == "seg" else None},
    })
    post = (_seg_postprocessing(cfg, "pred_model_grid") if kind == "seg"
            else [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True}])
    loader = "$[{'image': e['image'], 'study': i} for i, e in enumerate(@studies)]"
    c.update(_model_run(kind, cfg, loader, post, ["@recorder"]))
    c.update({"initialize": ["$monai.utils.set_determinism(seed=@seed)"], "run": ["$@evaluator.run()"]})
    return c


# --------------------------------------------------------------------------------------------
# train.json
# --------------------------------------------------------------------------------------------


def _defined_at(obj: Any) -> str:
    """``module.name`` of the module that defines ``obj``: the lightest import path for ``bundle export``."""
    return f"{obj.__module__}.{obj.__qualname__}"


def _loss(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any] | str:
    if kind == "seg":
        k = int(cfg["num_classes"])
        weights = [float(w) for w in (cfg["class_weights"] or [1.0] + [3.0] * (k - 1))]
        name = "DiceFocalLoss" if cfg["loss"] == "dice_focal" else "DiceCELoss"
        return {"_target_": name, "to_onehot_y": True, "softmax": True, "batch": bool(cfg["dice_batch"]),
                "weight": f"$torch.tensor({weights}, device=@device)"}
    pw = cfg["pos_weight"]
    pos_weight: Any = ({"_target_": "ichct.pipeline.models.data.pos_weight_auto", "items": "@train#datalist",
                        "max_weight": float(cfg["pos_weight_max"])} if pw == "auto" else [float(v) for v in pw])
    aux = float(cfg["aux_seg_weight"]) if dict(cfg["network"]).get("aux_seg") else 0.0
    return {"_target_": _defined_at(RSNAWeightedBCE),
            "class_weights": [float(v) for v in cfg["class_weights"]], "pos_weight": pos_weight,
            "aux_seg_weight": aux, "focal_gamma": float(cfg["focal_gamma"])}


def _split_section(kind: str, cfg: Mapping[str, Any], train: bool) -> dict[str, Any]:
    sec = "train" if train else "validate"
    entries = "@train_entries" if train else "@val_entries"
    if kind == "seg":
        datalist: dict[str, Any] = {"_target_": "ichct.pipeline.models.data.seg_items", "entries": entries,
                                    "num_classes": int(cfg["num_classes"])}
    else:
        aux = bool(dict(cfg["network"]).get("aux_seg", False)) and train
        datalist = {"_target_": "ichct.pipeline.models.data.cls_items", "entries": entries, "voxel_labels": aux}
    loader: dict[str, Any] = {"_target_": "DataLoader", "dataset": f"@{sec}#dataset",
                              "batch_size": int(cfg["batch_size"]) if train else 1, "shuffle": train,
                              "num_workers": int(cfg["num_workers"])}
    if kind == "cls":
        loader["collate_fn"] = {"_target_": "ichct.pipeline.models.data.cls_collate", "_mode_": "callable"}
    return {
        "datalist": datalist,
        "preprocessing": _compose(preprocessing_specs(kind, cfg, train=train, labels=True)),
        "dataset": {"_target_": "CacheDataset", "data": f"@{sec}#datalist", "transform": f"@{sec}#preprocessing",
                    "cache_rate": float(cfg["cache_rate"]), "num_workers": None, "progress": False},
        "dataloader": loader,
    }


def _prepare_batch(kind: str) -> dict[str, Any]:
    if kind != "cls":
        return {}
    return {"prepare_batch": {"_target_": _defined_at(cls_prepare_batch), "_mode_": "callable"}}


def _train_section(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    train = _split_section(kind, cfg, train=True)
    train.update({
        "inferer": {"_target_": "SimpleInferer"},
        "handlers": [
            {"_target_": f"{_COMPONENTS}.ValidationEveryAndLast", "validator": "@validate#evaluator",
             "interval": int(cfg["val_interval"])},
            {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": True},
        ],
        "rank0_handlers": [
            {"_target_": "StatsHandler", "tag_name": "train_loss", "iteration_log": False, "output_transform": _LOSS},
            {"_target_": "TensorBoardStatsHandler", "log_dir": "@output_dir", "tag_name": "train_loss",
             "iteration_log": False, "output_transform": _LOSS},
            {"_target_": f"{_COMPONENTS}.RunFilesWriter", "ckpt_dir": "@ckpt_dir", "kind": kind,
             "cfg": "@training_config", "fold": "@fold", "seed": "@seed", "epochs": "@epochs", "manifest": "@manifest",
             "train_entries": "@train_entries", "val_entries": "@val_entries", "init_weights": "@init_weights"},
        ],
        # fine-tuning (--init_weights PATH): MONAI's loader puts the weights into the network before the first epoch
        "init_handlers": "$[monai.handlers.CheckpointLoader(load_path=@init_weights, load_dict={'model': @network}, "
                         "map_location='cpu')] if @init_weights else []",
        # decollated output (MONAI's default): the loss transform of MONAI's tracking settings
        # (`--tracking mlflow`: from_engine(['loss'], first=True), logged every iteration) reads its first item
        "trainer": {"_target_": "SupervisedTrainer", "max_epochs": "@epochs", "device": "@device",
                    "train_data_loader": "@train#dataloader", "network": "@network", "optimizer": "@optimizer",
                    "loss_function": "@loss", "inferer": "@train#inferer",
                    "train_handlers": "$@train#init_handlers + @train#handlers + @train#rank0_handlers",
                    "decollate": True, "amp": False,
                    **_prepare_batch(kind)},
    })
    return train


def _validate_section(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    validate = _split_section(kind, cfg, train=False)
    scores = {"_target_": f"{_COMPONENTS}.ValidationScores", "kind": kind,
              "cfg": {k: copy.deepcopy(cfg[k]) for k in VALIDATION_KEYS[kind]}}
    if kind == "seg":
        key_metric: dict[str, Any] = {"val_dice": {
            "_target_": "MeanDice", "include_background": False,
            "output_transform": {"_target_": f"{_COMPONENTS}.dice_output_transform",
                                 "num_classes": int(cfg["num_classes"])}}}
        additional: Any = {"val_auc_any": "@validate#scores"}
    else:
        key_metric, additional = {"val_auc_any": "@validate#scores"}, None
    validate.update({
        "inferer": _inferer(kind, cfg),
        "scores": scores,
        "key_metric": key_metric,
        "additional_metrics": additional,
        "handlers": [],
        "rank0_handlers": [
            {"_target_": "StatsHandler", "iteration_log": False},
            {"_target_": "TensorBoardStatsHandler", "log_dir": "@output_dir", "iteration_log": False},
            {"_target_": "CheckpointSaver", "save_dir": "@ckpt_dir", "save_dict": {"model": "@network"},
             "save_key_metric": True, "key_metric_filename": "model.pt"},
            {"_target_": f"{_COMPONENTS}.ThresholdsSaver", "scores": "@validate#scores",
             "path": "$@ckpt_dir + '/thresholds.json'", "fold": "@fold"},
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@validate#dataloader",
                      "network": "@network", "inferer": "@validate#inferer", "key_val_metric": "@validate#key_metric",
                      "additional_metrics": "@validate#additional_metrics",
                      "val_handlers": "$@validate#handlers + @validate#rank0_handlers", "decollate": False,
                      "amp": False, **_prepare_batch(kind)},
    })
    return validate


def _train(kind: str, cfg: Mapping[str, Any], manifest: str, fold: int, seed: int) -> dict[str, Any]:
    c = _common(kind, cfg, for_training=True)
    c.update({
        "output_dir": "$@bundle_root + '/logs'",
        "manifest": manifest_expression(manifest),
        "fold": int(fold),
        "seed": int(seed),
        "epochs": int(cfg["epochs"]),
        "init_weights": None,  # a trained model's weights to start from (fine-tuning); None: a random draw
        "training_config": copy.deepcopy(dict(cfg)),
        "loss": _loss(kind, cfg),
        "optimizer": {"_target_": "torch.optim.AdamW", "params": "$@network.parameters()", "lr": float(cfg["lr"]),
                      "weight_decay": float(cfg["weight_decay"])},
        "lr_scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "optimizer": "@optimizer",
                         "T_max": "@epochs", "eta_min": 0.0},
        "train_entries": {"_target_": f"{_COMPONENTS}.manifest_split", "manifest": "@manifest", "split": "training",
                          "fold": "@fold"},
        "val_entries": {"_target_": f"{_COMPONENTS}.manifest_split", "manifest": "@manifest", "split": "validation",
                        "fold": "@fold"},
        "train": _train_section(kind, cfg),
        "validate": _validate_section(kind, cfg),
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        "run": ["$@train#trainer.run()"],
    })
    return c


def _disk_cache(section: str) -> dict[str, Any]:
    """A ``PersistentDataset`` of ``section``'s datalist: the deterministic preprocessing of each study
    is computed once and read from ``@cache_dir/<section>`` after; the key hashes the study's item
    and the preprocessing's arguments (``hash_transform``), so a changed window or spacing never
    reads a stale entry; MONAI moves each entry into place from a temporary folder and recomputes
    one it cannot unpickle."""
    return {"_target_": "PersistentDataset", "data": f"@{section}#datalist", "transform": f"@{section}#preprocessing",
            "cache_dir": f"$@cache_dir + '/{section}'", "hash_transform": "$monai.data.utils.pickle_hashing"}


def _multi_gpu() -> dict[str, Any]:
    rank0 = "(torch.distributed.get_rank() == 0)"
    return {
        "device": "$torch.device('cuda:' + os.environ['LOCAL_RANK']) if torch.cuda.is_available() else torch.device('cpu')",
        # streamed from a disk cache (the RAM cache of train.json would hold the whole cohort on every rank)
        "cache_dir": "$@bundle_root + '/cache'",
        "train#dataset": _disk_cache("train"),
        "validate#dataset": _disk_cache("validate"),
        # BatchNorm statistics over the global batch on GPUs (PyTorch's SyncBatchNorm needs CUDA)
        "network": {"_target_": "torch.nn.parallel.DistributedDataParallel",
                    "module": "$torch.nn.SyncBatchNorm.convert_sync_batchnorm(@network_def.to(@device)) "
                              "if torch.cuda.is_available() else @network_def.to(@device)",
                    "device_ids": "$[@device] if torch.cuda.is_available() else None"},
        "train#sampler": {"_target_": "DistributedSampler", "dataset": "@train#dataset", "even_divisible": True,
                          "shuffle": True},
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "train#trainer#train_handlers": f"$@train#init_handlers + @train#handlers + (@train#rank0_handlers if {rank0} else [])",
        "validate#evaluator#network": "$@network.module",
        "validate#evaluator#val_handlers": f"$@validate#handlers + (@validate#rank0_handlers if {rank0} else [])",
        "initialize": [
            "$import torch.distributed",
            "$torch.distributed.is_initialized() or torch.distributed.init_process_group("
            "backend='nccl' if torch.cuda.is_available() else 'gloo')",
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$monai.utils.set_determinism(seed=@seed)",
        ],
        "run": ["$@train#trainer.run()"],
        "finalize": ["$torch.distributed.is_initialized() and torch.distributed.barrier()",
                     "$torch.distributed.is_initialized() and torch.distributed.destroy_process_group()"],
    }


def bundle_configs(run_config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every ``configs/<name>.json`` of a bundle from a run's ``config.json``.

    Parameters
    ----------
    run_config
        The run's ``config.json`` as stored in the bundle (``models/run_config.json``): ``kind``,
        ``fold``, ``seed``, ``manifest`` (relative paths are taken relative to the bundle root) and
        the resolved training ``config`` (completed by
        :func:`~ichct.pipeline.models.config.saved_run_config` when it lacks keys).

    Returns
    -------
    dict
        ``{"inference": ..., "train": ..., "evaluate": ..., "multi_gpu_train": ...}`` (JSON-ready).
    """
    kind = run_config.get("kind")
    if kind not in ("seg", "cls"):
        raise ValueError(f"run config: kind must be 'seg' or 'cls', got {kind!r}")
    cfg = saved_run_config(kind, run_config["config"])
    manifest = str(run_config.get("manifest") or "")
    fold, seed = int(run_config.get("fold", 0)), int(run_config.get("seed", 0))
    return {
        "inference": _inference(kind, cfg),
        "train": _train(kind, cfg, manifest, fold, seed),
        "evaluate": _evaluate(kind, cfg, manifest),
        "multi_gpu_train": _multi_gpu(),
    }
