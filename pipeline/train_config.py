"""Training configuration: defaults per model kind and JSON/YAML overrides (deep merge).

``resolve_config(kind, config)`` returns a plain JSON-serialisable dict. ``config`` is a path
to a ``.json``/``.yaml``/``.yml`` file, a mapping, or None. Unknown top-level keys are refused so
that a typo never silently trains with a default.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KINDS = ("seg", "cls")

_COMMON: dict[str, Any] = {
    "epochs": 20,
    "max_minutes": None,  # time budget of the training loop: stop at the last epoch boundary that fits
    "lr": 1e-3,
    "weight_decay": 1e-5,
    "batch_size": 2,
    "val_interval": 1,
    # best.pt: the validation whose key metric, averaged with the validations just before it
    # (this many in all), is highest; 1 = the raw metric. A 12-study validation fold is noisy:
    # a raw peak halfway through training chose seg weights with test Dice 0.682, the
    # (cosine-annealed) last epoch of the same run 0.701
    "best_window": 3,
    "cache_rate": 1.0,
    "num_workers": 0,
    "windows": None,  # None: ichct.transforms.DEFAULT_WINDOWS (brain, subdural, soft tissue)
    "augment": {"flip_prob": 0.5, "affine_prob": 0.3, "rotate_deg": 8.0, "scale": 0.05,
                "shift_prob": 0.3, "shift": 0.05, "noise_prob": 0.2, "noise_std": 0.02},
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "seg": {
        **_COMMON,
        "num_classes": 2,  # 2: background vs blood (label > 0); 6: background + five subtypes
        "epochs": 120,  # with max_minutes=5 on a 2-core CPU the budget ends the run first (~70 epochs)
        "val_interval": 2,  # sliding-window validation costs about a third of an epoch on CPU
        "lr": 3e-3,
        # one volume (samples_per_volume patches) per step: twice the optimizer steps of 2 volumes in
        # the same time. The demo's 6.5 min (1 CPU thread), seed 0/1: test Dice on studies with blood
        # 0.694 (batch_size 2) -> 0.734/0.729, on 40 independent synthetic studies with blood 0.680 -> 0.725/0.734
        "batch_size": 1,
        "spacing_mm": [2.0, 2.0, 3.0],  # about the native in-plane pixel of head CT at 128-256 matrix
        "crop": "brain",
        "patch": [64, 64, 16],
        "samples_per_volume": 4,  # patches per volume (batch_size volumes per step -> 4 patches)
        "pos_neg_ratio": 2.0,  # foreground-centred : background-centred patches (mimics need negatives)
        "loss": "dice_ce",  # or "dice_focal"
        "dice_batch": True,  # Dice over the whole batch (patches without blood do not blow it up)
        "class_weights": None,  # None: [1, 3, ...] (background 1, foreground 3)
        # plain conv blocks (no residual units): ~3x the steps per minute of num_res_units=1 on CPU,
        # which in a 5-minute budget matters more than the extra layers (synthetic test Dice
        # 0.670 -> 0.713 in benchmarks/train.py, with validation every second epoch)
        "network": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 0},
        "sw_batch_size": 2,
        "sw_overlap": 0.5,
        # predicted blood components below this volume (mL) are dropped: from the mask on the original grid
        # (predict, evaluate, the bundle's inference.json) and from the seg_volume CT rule's volume. The demo's
        # segmenter leaves specks of a few voxels: on 80 independent synthetic studies (40 with blood)
        # 0 -> 0.2 mL took false-positive components per scan from 3.8 to 0.47 and Dice on studies with blood
        # from 0.719 to 0.724; 0.3 mL began to drop small true bleeds (Dice 0.678 -> 0.647 for another model)
        "min_component_ml": 0.2,
    },
    "cls": {
        **_COMMON,
        # a 4th input channel: the brain window of the skull-stripped image (ichct.transforms.StripSkull),
        # where a one-pixel subdural rim is a white line against black instead of a thicker white skull.
        # The demo's training (7.5 min, 1 CPU thread per model), seed 0: test AUC(any) 0.929 -> 0.982, the
        # test split's thin subdural haematoma 0.04 -> 0.26; stripping the image itself instead reached
        # 1.000 on the test split but 0.964 on 140 independent synthetic studies (more false positives)
        "stripped_brain_channel": True,
        "crop": "brain",  # in-plane crop to the brain box before resizing (slices kept): "brain", "head" or null
        "epochs": 100,  # with max_minutes=5 on a 2-core CPU the budget ends the run first (~55 epochs)
        "lr": 3e-3,
        # the brain box (about 160-200 mm) at 2-2.5 mm pixels: at 64x64 (~3 mm) a thin subdural rim
        # vanishes; 96x96 sees it but trains too few epochs in 5 CPU minutes (benchmarks/train.py,
        # test AUC(any) over seeds 0/1 with aux_seg_weight 1: 64 -> 0.93/-, 80 -> 0.98/0.95, 96 -> 0.96/0.93)
        "in_plane": [80, 80],
        # aux_seg_fusion "add": the aux head sums its deep and detail branches instead of concatenating
        # them (~20 % less per step; 4-minute runs, seeds 0/1: 54/53 epochs instead of ~46, test
        # AUC(any) 0.982/1.000, AUC on an independent 80-study synthetic cohort 0.982/0.964).
        # avg+max pooling keeps a few-pixel bleed visible; seg_to_head feeds the auxiliary blood
        # map's statistics to the RNN (CT-level AUC(any) on the synthetic test split, 30 epochs:
        # ~0.6 with average pooling alone, 0.84-0.95 over seeds with both; benchmarks/train.py)
        "network": {"encoder": "small", "feature_dim": 128, "rnn_hidden": 64, "dropout": 0.2,
                    "neighbour_slices": True, "aux_seg": True, "pooling": "avgmax", "seg_to_head": True,
                    "aux_seg_stride": 2, "aux_seg_fusion": "add"},
        # weight of the blood-mask DiceCE of the auxiliary 2D seg head (network.aux_seg); 2 rather than 1
        # teaches the blood map thin subdural rims within the budget (test AUC(any) seeds 0/1: 0.98/0.95 -> 1.0/1.0)
        "aux_seg_weight": 2.0,
        "class_weights": [2.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # RSNA: "any" weighted 2
        "focal_gamma": 0.0,  # > 0: focal modulation of the slice BCE
        "pos_weight": "auto",  # "auto": neg/pos per class on the training slices (clipped), or a list of 6
        "pos_weight_max": 10.0,
        "rule_k": 3,
        "threshold_method": "youden",
    },
}


#: Switches added after release, with the value that means "off": a run saved before a switch
#: existed trained without it (inference reads a missing switch as off, too).
ADDED_SWITCHES_OFF: dict[str, dict[str, Any]] = {"seg": {}, "cls": {"stripped_brain_channel": False}}


def input_channels(kind: str, cfg: Mapping[str, Any]) -> int:
    """Input channels of the network: one per HU window (3 by default), plus the skull-stripped
    brain window of the classifier's ``stripped_brain_channel``."""
    n = len(cfg["windows"]) if cfg.get("windows") else 3
    return n + int(kind == "cls" and bool(cfg.get("stripped_brain_channel", False)))


def _merge(base: dict[str, Any], over: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        where = f"{path}{key}"
        if key not in out:
            raise ValueError(f"unknown config key {where!r}")
        if isinstance(out[key], dict) and isinstance(value, Mapping) and key != "network":
            out[key] = _merge(out[key], value, where + ".")
        elif isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = {**out[key], **copy.deepcopy(dict(value))}  # network kwargs are open
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML override file (a mapping)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, Mapping):
        raise ValueError(f"{p}: a training config must be a mapping, got {type(data).__name__}")
    return dict(data)


def resolve_config(kind: str, config: str | Path | Mapping[str, Any] | None = None,
                   epochs: int | None = None) -> dict[str, Any]:
    """Defaults of ``kind`` merged with ``config`` (path or mapping) and ``epochs``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    over: Mapping[str, Any] = {}
    if isinstance(config, (str, Path)):
        over = read_config_file(config)
    elif config is not None:
        over = config
    cfg = _merge(DEFAULTS[kind], over)
    if epochs is not None:
        cfg["epochs"] = int(epochs)
    validate_config(kind, cfg)
    return cfg


def resolve_saved_config(kind: str, saved: Mapping[str, Any], epochs: int | None = None) -> dict[str, Any]:
    """:func:`resolve_config` of a run's saved config, with switches added since it was saved off
    (not at their newer defaults), so that a resumed run trains the network it started with."""
    return resolve_config(kind, {**ADDED_SWITCHES_OFF[kind], **saved}, epochs=epochs)


def validate_config(kind: str, cfg: Mapping[str, Any]) -> None:
    if int(cfg["epochs"]) < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg['epochs']}")
    if int(cfg["batch_size"]) < 1:
        raise ValueError("batch_size must be >= 1")
    if int(cfg["best_window"]) < 1:
        raise ValueError(f"best_window must be >= 1, got {cfg['best_window']}")
    mm = cfg.get("max_minutes")
    if mm is not None and not float(mm) > 0:
        raise ValueError(f"max_minutes must be > 0 or null, got {mm}")
    if kind == "seg":
        if cfg["num_classes"] not in (2, 6):
            raise ValueError(f"num_classes must be 2 or 6, got {cfg['num_classes']}")
        if len(cfg["patch"]) != 3 or len(cfg["spacing_mm"]) != 3:
            raise ValueError("patch and spacing_mm need 3 values")
        if cfg["loss"] not in ("dice_ce", "dice_focal"):
            raise ValueError(f"loss must be 'dice_ce' or 'dice_focal', got {cfg['loss']!r}")
        cw = cfg["class_weights"]
        if cw is not None and len(cw) != cfg["num_classes"]:
            raise ValueError(f"class_weights needs {cfg['num_classes']} values")
    else:
        if len(cfg["in_plane"]) != 2:
            raise ValueError("in_plane needs 2 values")
        if len(cfg["class_weights"]) != 6:
            raise ValueError("class_weights needs 6 values")
        if not float(cfg["focal_gamma"]) >= 0:
            raise ValueError(f"focal_gamma must be >= 0, got {cfg['focal_gamma']}")
        pw = cfg["pos_weight"]
        if pw != "auto" and (not isinstance(pw, list) or len(pw) != 6):
            raise ValueError("pos_weight must be 'auto' or a list of 6 values")
