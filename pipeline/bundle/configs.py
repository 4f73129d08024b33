"""Generate a bundle's MONAI configs from a training run's resolved config.

:func:`bundle_configs` is the one source of every ``configs/*.json`` of an ichct bundle (the
committed ``bundles/`` and those ``ichct bundle package`` writes). Each config reuses the
pipeline's own functions through ``_target_`` / ``$`` expressions, so a bundle preprocesses
exactly as training and :mod:`ichct.pipeline.models.inference` do:

* ``inference.json`` - seg: :func:`~ichct.pipeline.models.inference.seg_eval_transforms`, sliding-window
  inference with the training patch (Gaussian blending), softmax, ``Invertd`` (linear) back to the input's
  grid, ``SaveImaged`` as NIfTI; cls: :func:`~ichct.pipeline.models.inference.cls_eval_transforms`, the
  slice probabilities of the 6 labels per study (CSV) and the CT-level calls of the stored rule
  (JSON).
* ``train.json`` - MONAI ``SupervisedTrainer`` / ``SupervisedEvaluator`` with the training stage's
  datasets and transforms (:mod:`ichct.pipeline.models.data`), losses, optimizer and schedule;
  ``CheckpointSaver`` keeps ``models/model.pt`` of the best validation epoch, with its thresholds.
* ``evaluate.json`` - :func:`ichct.pipeline.evaluate.run.evaluate` of this bundle on a manifest split.
* ``multi_gpu_train.json`` - ``torchrun`` overrides: ``DistributedDataParallel`` (nccl on GPUs,
  gloo on CPU), ``DistributedSampler``, rank-0-only saving and logging.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from ichct.pipeline.models.network_factory import network_kwargs
from ichct.pipeline.models.config import saved_run_config

__all__ = ["CONFIG_NAMES", "LOGGING_CONF", "bundle_configs", "manifest_expression"]

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


def manifest_expression(manifest: str) -> str:
    """Config value of the default manifest: relative paths are relative to ``bundle_root``."""
    m = str(manifest).replace(os.sep, "/")
    if os.path.isabs(m):
        return m
    return f"$@bundle_root + '/{m}'"


def _network_def(kind: str, cfg: Mapping[str, Any], for_training: bool) -> dict[str, Any]:
    if kind == "seg":
        target = "ichct.networks.ich_unet3d"
    elif for_training:  # training needs the raw outputs (dict with the auxiliary segmentation)
        target = "ichct.networks.SliceSequenceClassifier"
    else:
        target = "ichct.pipeline.bundle.network.ChannelFirstSliceClassifier"
    return {"_target_": target, **copy.deepcopy(network_kwargs(kind, cfg))}


def _seg_inferer(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {"_target_": "SlidingWindowInferer", "roi_size": [int(p) for p in cfg["patch"]],
            "sw_batch_size": int(cfg["sw_batch_size"]), "overlap": float(cfg["sw_overlap"]),
            "mode": "gaussian"}


def _common(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "imports": ["$import os", "$import torch", "$import monai"],
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "device": _DEVICE,
        "ichct_config": copy.deepcopy(dict(cfg)),
    }


# --------------------------------------------------------------------------------------------
# inference.json
# --------------------------------------------------------------------------------------------


def _inference(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    c = _common(kind, cfg)
    c.update({
        "input_path": None,
        "output_dir": "$@bundle_root + '/predictions'",
        "network_def": _network_def(kind, cfg, for_training=False),
        "network": "$@network_def.to(@device)",
        "datalist": {"_target_": "ichct.pipeline.bundle.components.study_items", "input_path": "@input_path"},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
    })
    if kind == "seg":
        c.update({
            "preprocessing": {"_target_": "ichct.pipeline.models.inference.seg_eval_transforms", "cfg": "@ichct_config"},
            "inferer": _seg_inferer(cfg),
            "postprocessing": {"_target_": "Compose", "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
                 "nearest_interp": False, "to_tensor": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                *([{"_target_": "ichct.transforms.RemoveSmallComponentsd", "keys": "pred",
                    "min_volume_ml": float(cfg["min_component_ml"])}] if float(cfg["min_component_ml"]) > 0 else []),
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False, "print_log": False},
            ]},
        })
        c["imports"].append("$import numpy")
    else:
        c.update({
            "preprocessing": {"_target_": "ichct.pipeline.models.inference.cls_eval_transforms", "cfg": "@ichct_config"},
            "decision_rule": {"_target_": "ichct.pipeline.decision.DecisionRule.load",
                              "path": "$@ckpt_dir + '/thresholds.json'"},
            "inferer": {"_target_": "SimpleInferer"},
            "postprocessing": {"_target_": "Compose", "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
                {"_target_": "ichct.pipeline.bundle.components.SaveSliceProbabilitiesd", "keys": "pred",
                 "output_dir": "@output_dir", "rule": "@decision_rule", "name_key": "name"},
            ]},
        })
    c.update({
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "$@ckpt_dir + '/model.pt'", "load_dict": {"model": "@network"},
             "map_location": "@device"},
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    })
    return c


# --------------------------------------------------------------------------------------------
# train.json
# --------------------------------------------------------------------------------------------


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
    return {"_target_": "ichct.pipeline.train.engine.RSNAWeightedBCE", "class_weights": [float(v) for v in cfg["class_weights"]],
            "pos_weight": pos_weight, "aux_seg_weight": aux}


def _split_section(kind: str, cfg: Mapping[str, Any], train: bool) -> dict[str, Any]:
    sec = "train" if train else "validate"
    entries = "@train_entries" if train else "@val_entries"
    if kind == "seg":
        datalist: dict[str, Any] = {"_target_": "ichct.pipeline.models.data.seg_items", "entries": entries,
                                    "num_classes": int(cfg["num_classes"])}
        pre = "ichct.pipeline.models.data.seg_transforms"
    else:
        aux = bool(dict(cfg["network"]).get("aux_seg", False)) and train
        datalist = {"_target_": "ichct.pipeline.models.data.cls_items", "entries": entries, "voxel_labels": aux}
        pre = "ichct.pipeline.models.data.cls_transforms"
    loader: dict[str, Any] = {"_target_": "DataLoader", "dataset": f"@{sec}#dataset",
                              "batch_size": int(cfg["batch_size"]) if train else 1, "shuffle": train,
                              "num_workers": int(cfg["num_workers"])}
    if kind == "cls":
        loader["collate_fn"] = {"_target_": "ichct.pipeline.models.data.cls_collate", "_mode_": "callable"}
    return {
        "datalist": datalist,
        "preprocessing": {"_target_": pre, "cfg": "@ichct_config", "train": train},
        "dataset": {"_target_": "CacheDataset", "data": f"@{sec}#datalist", "transform": f"@{sec}#preprocessing",
                    "cache_rate": float(cfg["cache_rate"]), "num_workers": None, "progress": False},
        "dataloader": loader,
    }


def _train(kind: str, cfg: Mapping[str, Any], manifest: str, fold: int, seed: int) -> dict[str, Any]:
    c = _common(kind, cfg)
    prep = ({"prepare_batch": {"_target_": "ichct.pipeline.train.engine.cls_prepare_batch", "_mode_": "callable"}}
            if kind == "cls" else {})
    train = _split_section(kind, cfg, train=True)
    train.update({
        "inferer": {"_target_": "SimpleInferer"},
        "handlers": [
            {"_target_": "ichct.pipeline.bundle.components.ValidationEveryAndLast", "validator": "@validate#evaluator",
             "interval": int(cfg["val_interval"])},
            {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": True},
        ],
        "rank0_handlers": [
            {"_target_": "StatsHandler", "tag_name": "train_loss", "iteration_log": False,
             "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"},
            {"_target_": "ichct.pipeline.bundle.components.RunFilesWriter", "ckpt_dir": "@ckpt_dir", "kind": kind,
             "cfg": "@ichct_config", "fold": "@fold", "seed": "@seed", "epochs": "@epochs", "manifest": "@manifest",
             "train_entries": "@train_entries", "val_entries": "@val_entries"},
        ],
        "trainer": {"_target_": "SupervisedTrainer", "max_epochs": "@epochs", "device": "@device",
                    "train_data_loader": "@train#dataloader", "network": "@network", "optimizer": "@optimizer",
                    "loss_function": "@loss", "inferer": "@train#inferer",
                    "train_handlers": "$@train#handlers + @train#rank0_handlers", "decollate": False, "amp": False,
                    **prep},
    })
    validate = _split_section(kind, cfg, train=False)
    scores = {"_target_": "ichct.pipeline.bundle.components.ValidationScores", "kind": kind, "cfg": "@ichct_config"}
    if kind == "seg":
        key_metric: dict[str, Any] = {"val_dice": {
            "_target_": "MeanDice", "include_background": False,
            "output_transform": {"_target_": "ichct.pipeline.bundle.components.dice_output_transform",
                                 "num_classes": int(cfg["num_classes"])}}}
        additional: Any = {"val_auc_any": "@validate#scores"}
        inferer = _seg_inferer(cfg)
    else:
        key_metric, additional, inferer = {"val_auc_any": "@validate#scores"}, None, {"_target_": "SimpleInferer"}
    validate.update({
        "inferer": inferer,
        "scores": scores,
        "key_metric": key_metric,
        "additional_metrics": additional,
        "handlers": [],
        "rank0_handlers": [
            {"_target_": "StatsHandler", "iteration_log": False},
            {"_target_": "CheckpointSaver", "save_dir": "@ckpt_dir", "save_dict": {"model": "@network"},
             "save_key_metric": True, "key_metric_filename": "model.pt"},
            {"_target_": "ichct.pipeline.bundle.components.ThresholdsSaver", "scores": "@validate#scores",
             "path": "$@ckpt_dir + '/thresholds.json'", "fold": "@fold"},
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@validate#dataloader",
                      "network": "@network", "inferer": "@validate#inferer", "key_val_metric": "@validate#key_metric",
                      "additional_metrics": "@validate#additional_metrics",
                      "val_handlers": "$@validate#handlers + @validate#rank0_handlers", "decollate": False,
                      "amp": False, **prep},
    })
    c.update({
        "manifest": manifest_expression(manifest),
        "fold": int(fold),
        "seed": int(seed),
        "epochs": int(cfg["epochs"]),
        "network_def": _network_def(kind, cfg, for_training=True),
        "network": "$@network_def.to(@device)",
        "loss": _loss(kind, cfg),
        "optimizer": {"_target_": "torch.optim.AdamW", "params": "$@network.parameters()", "lr": float(cfg["lr"]),
                      "weight_decay": float(cfg["weight_decay"])},
        "lr_scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "optimizer": "@optimizer",
                         "T_max": "@epochs", "eta_min": 0.0},
        "train_entries": {"_target_": "ichct.pipeline.manifests.load_manifest", "path": "@manifest",
                          "split": "training", "fold": "@fold"},
        "val_entries": {"_target_": "ichct.pipeline.manifests.load_manifest", "path": "@manifest",
                        "split": "validation", "fold": "@fold", "check": False},
        "train": train,
        "validate": validate,
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        "run": ["$@train#trainer.run()"],
    })
    return c


# --------------------------------------------------------------------------------------------
# evaluate.json and multi_gpu_train.json
# --------------------------------------------------------------------------------------------


def _evaluate(manifest: str) -> dict[str, Any]:
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "manifest": manifest_expression(manifest),
        "eval_split": "test",
        "eval_fold": None,
        "output_dir": "$@bundle_root + '/eval'",
        "bootstrap": 2000,
        "allow_overlap": False,
        "eval_device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "evaluation": {"_target_": "ichct.pipeline.evaluate.run.evaluate", "runs": [], "bundles": ["@bundle_root"],
                       "manifest": "@manifest", "out_dir": "@output_dir", "split": "@eval_split",
                       "fold": "@eval_fold", "n_boot": "@bootstrap", "allow_overlap": "@allow_overlap",
                       "device": "@eval_device"},
        "initialize": [],
        "run": ["@evaluation"],
    }


def _multi_gpu() -> dict[str, Any]:
    rank0 = "(torch.distributed.get_rank() == 0)"
    return {
        "device": "$torch.device('cuda:' + os.environ['LOCAL_RANK']) if torch.cuda.is_available() else torch.device('cpu')",
        "network": {"_target_": "torch.nn.parallel.DistributedDataParallel", "module": "$@network_def.to(@device)",
                    "device_ids": "$[@device] if torch.cuda.is_available() else None"},
        "train#sampler": {"_target_": "DistributedSampler", "dataset": "@train#dataset", "even_divisible": True,
                          "shuffle": True},
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "train#trainer#train_handlers": f"$@train#handlers + (@train#rank0_handlers if {rank0} else [])",
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
        "evaluate": _evaluate(manifest),
        "multi_gpu_train": _multi_gpu(),
    }
