"""Training configuration: defaults per model kind and JSON/YAML overrides (deep merge).

``resolve_config(kind, config)`` returns a plain JSON-serialisable dict. ``config`` is a path
to a ``.json``/``.yaml``/``.yml`` file, a mapping, or None. Unknown keys are refused so that a
typo never silently trains with a default, and every value is checked (type and range) and coerced
to its type: a bad override fails with the file and the key named, before a run is written.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ichct.errors import InputError

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
    # where the deterministic preprocessing is kept: "ram" (a MONAI CacheDataset, cache_rate of the studies;
    # fastest for small cohorts) or "disk" (the persistent cache in cache_dir, `ichct preprocess`; memory
    # does not grow with the number of studies)
    "cache": "ram",
    "cache_dir": None,
    "num_workers": 0,
    "windows": None,  # None: ichct.transforms.DEFAULT_WINDOWS (brain, subdural, soft tissue)
    # brain-referenced HU (ichct.transforms.ReferenceBrainHU; null: off): every image is shifted so that the median
    # of its intracranial soft tissue (15-45 HU) sits at this level, before anything else, so a scanner's
    # calibration offset of a few HU reaches no model. 30 HU is the committed cohorts' median. At inference on the
    # shifted-domain benchmark (+4 HU) it took the committed classifier's specificity from 0.89 to 0.99; off in
    # training by default: two classifiers trained with it ranked no better than those weights with it at
    # inference (docs/benchmarks.md#brain-referenced-hu-2026-12-06)
    "brain_reference_hu": None,
    # test-time mirroring: spatial axes along which inference averages the mirrored input's prediction
    # (nnU-Net's mirroring; [] off). Axis 0 is the one training flips (augment.flip_prob): the patient's
    # left-right axis of the segmenter's RAS grid, the first in-plane axis of the classifier's slices
    "tta_mirror_axes": [],
    "augment": {"flip_prob": 0.5, "affine_prob": 0.3, "rotate_deg": 8.0, "scale": 0.05,
                "shift_prob": 0.3, "shift": 0.05, "noise_prob": 0.2, "noise_std": 0.02},
    # domain randomisation (docs/training.md#domain-randomisation): per effect a probability and its ranges
    # (prob 0: left out of the chain). On by default since 0.5.0: on the shifted-domain benchmark the
    # segmenter's false-positive lesions per scan fell from 1.67 to 1.32 and the classifier's specificity
    # rose from 0.76 to 0.91 over hard negatives alone (docs/benchmarks.md#remedies-ablation)
    "domain": {
        "hu_offset": {"prob": 0.5, "offset_hu": [-8.0, 8.0]},  # calibration offset, the same HU in every window
        "noise": {"prob": 0.5, "std_hu": [2.0, 10.0], "texture_sigma": [0.0, 1.0]},  # SD in HU; in-plane grain (voxels)
        # kernel tails in HU: (1 - f) x + f (exp(-r / length) * x), a brighter or wider halo next to bone
        "psf_tail": {"prob": 0.5, "fraction": [0.02, 0.2], "length_mm": [0.8, 2.5]},
        "slice_thickness": {"prob": 0.4, "factor": [1.0, 2.0]},  # thickness / slice spacing
        "blur": {"prob": 0.25, "sigma": [0.25, 1.0]},  # in-plane Gaussian sigma (voxels): a softer kernel
        "sharpen": {"prob": 0.4, "alpha": [0.2, 1.5], "sigma": [0.5, 1.0]},  # unsharp mask: a sharper kernel
        "bias_field": {"prob": 0.2, "coeff": [-0.02, 0.02]},  # smooth multiplicative field (degree 3): ~2 % SD
        "contrast": {"prob": 0.2, "gamma": [0.8, 1.25]},  # gamma of the windowed intensities
    },
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
        # predicted blood components whose mean foreground probability is below this become background in the
        # model's probabilities (0: off). Off by default until training chooses it on validation: at 0.8 the
        # committed segmenter's shifted-domain false-positive lesions fell 1.48 -> 0.17 per scan at the same
        # in-domain Dice, and its lesion sensitivity 0.57 -> 0.50 (docs/benchmarks.md#component-confidence-filter)
        "min_component_confidence": 0.0,
        # beside a classifier (ichct predict / evaluate with both models): predicted blood components on
        # source slices whose classifier p(any) all lie below this become background (0: off; see
        # ichct.transforms.SuppressQuietSliceComponents and
        # docs/benchmarks.md#the-classifiers-slice-gate-on-the-segmenter-2026-12-07)
        "classifier_slice_gate": 0.0,
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


#: What a run saved without a key did, per kind, where that differs from today's default: keys
#: added after release read as "off" (a run saved before ``stripped_brain_channel`` existed
#: trained without it, one saved before the classifier's ``crop`` did not crop, one saved before
#: ``best_window`` kept the best single validation); keys whose default changed keep the value
#: of the first release (``sw_overlap`` 0.25, and ``min_component_ml`` 0: every blood component
#: kept). :func:`saved_run_config` applies them wherever a saved run is read, never to a new run.
SAVED_RUN_FALLBACKS: dict[str, dict[str, Any]] = {
    "seg": {"sw_overlap": 0.25, "min_component_ml": 0.0, "best_window": 1},
    "cls": {"stripped_brain_channel": False, "crop": None, "best_window": 1},
}


#: Keys that say where a run reads its data from, not what it learns: :func:`saved_run_config` does
#: not add them to a saved run that lacks them (a run saved before them read its studies from RAM,
#: and a model bundle's configs stay what they were); :func:`resolve_saved_config` gives them their defaults.
DATA_ACCESS_KEYS = ("cache", "cache_dir")

#: Keys whose absence means "off" and that :func:`saved_run_config` leaves out of a saved run that lacks
#: them (a run saved before them did not use them, and its bundle's configs stay byte for byte what they
#: were); :func:`resolve_saved_config` gives them their defaults, which are off too.
OFF_WHEN_MISSING = ("domain", "tta_mirror_axes", "brain_reference_hu", "classifier_slice_gate")


def saved_run_config(kind: str, saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved run's training config with every key (but :data:`DATA_ACCESS_KEYS` and :data:`OFF_WHEN_MISSING`):
    the one migration of old runs.

    A key the run lacks takes its :data:`SAVED_RUN_FALLBACKS` value (what the run did without
    it), else its :data:`DEFAULTS` value (which then is what the run did). Code that reads a
    saved run (inference, bundles, ``--resume``) reads this dict instead of guessing fallbacks.
    Idempotent; a complete config comes back equal, in its own key order.

    Parameters
    ----------
    kind
        ``"seg"`` or ``"cls"``.
    saved
        The ``config`` section of a run's ``config.json``, a bundle's ``models/run_config.json``
        or a bundle config's ``ichct_config``.

    Returns
    -------
    dict
        A new dict: the saved keys (unchecked, in their order), then the missing ones.

    Examples
    --------
    >>> old = saved_run_config("seg", {"patch": [64, 64, 16]})
    >>> old["sw_overlap"], old["min_component_ml"], old["patch"]
    (0.25, 0.0, [64, 64, 16])
    >>> saved_run_config("seg", {"sw_overlap": 0.5})["sw_overlap"]
    0.5
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = copy.deepcopy(dict(saved))
    for key, value in {**DEFAULTS[kind], **SAVED_RUN_FALLBACKS[kind]}.items():
        if key not in out and key not in DATA_ACCESS_KEYS and key not in OFF_WHEN_MISSING:
            out[key] = copy.deepcopy(value)
    return out


def config_windows(cfg: Mapping[str, Any]) -> Mapping[str, tuple[float, float]]:
    """The HU windows of a training config, in channel order: name -> (level, width).

    Parameters
    ----------
    cfg
        A training config; ``windows`` null (or missing) means
        :data:`ichct.transforms.DEFAULT_WINDOWS` (brain, subdural, soft tissue).

    Returns
    -------
    Mapping
        ``DEFAULT_WINDOWS`` itself, or the config's windows as floats.

    Examples
    --------
    >>> list(config_windows({"windows": None}))
    ['brain', 'subdural', 'soft_tissue']
    >>> config_windows({"windows": {"bone": [600, 2800]}})
    {'bone': (600.0, 2800.0)}
    """
    from ichct.transforms.intensity import DEFAULT_WINDOWS

    w = cfg.get("windows")
    return DEFAULT_WINDOWS if not w else {str(k): (float(v[0]), float(v[1])) for k, v in dict(w).items()}


def input_channels(kind: str, cfg: Mapping[str, Any]) -> int:
    """Input channels of the network: one per HU window (:func:`config_windows`), plus the
    skull-stripped brain window of the classifier's ``stripped_brain_channel`` (a saved config
    without the key: see :func:`saved_run_config`)."""
    stripped = kind == "cls" and bool(saved_run_config(kind, cfg)["stripped_brain_channel"])
    return len(config_windows(cfg)) + int(stripped)


# --------------------------------------------------------------------------------------------
# Validation: every key of DEFAULTS has a check that refuses a wrong type or range and coerces
# the value to its type (an int for counts, a float for rates), so that a bad override fails
# here, before a run folder is written, with the file and the key named.
# --------------------------------------------------------------------------------------------


class _Invalid(ValueError):
    """A bad value of config key ``key`` (dotted path); :func:`resolve_config` adds the source."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key {key!r} {problem}")
        self.key, self.problem = key, problem


def _as_number(value: Any) -> float | None:
    """``value`` as a finite float (numbers, or strings such as YAML's ``1e-3``); None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
            integer: bool = False, optional: bool = False) -> Callable[[Any, str, Mapping[str, Any]], Any]:
    bounds = []
    if lo is not None:
        bounds.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        bounds.append(f"{'<' if hi_open else '<='} {hi:g}")
    want = ("an integer" if integer else "a number") + (" " + " and ".join(bounds) if bounds else "") \
        + (" or null" if optional else "")

    def check(value: Any, key: str, cfg: Mapping[str, Any]) -> Any:
        if value is None and optional:
            return None
        v = _as_number(value)
        ok = v is not None and (not integer or v == int(v))
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            raise _Invalid(key, f"must be {want}, got {value!r}")
        return int(v) if integer else float(v)

    return check


def _choice(*options: Any) -> Callable[[Any, str, Mapping[str, Any]], Any]:
    def check(value: Any, key: str, cfg: Mapping[str, Any]) -> Any:
        if isinstance(value, bool) or value not in options:
            raise _Invalid(key, f"must be one of {', '.join('null' if o is None else repr(o) for o in options)}, "
                                f"got {value!r}")
        return value

    return check


def _boolean(value: Any, key: str, cfg: Mapping[str, Any]) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(key, f"must be true or false, got {value!r}")
    return value


def _sequence(n: int | Callable[[Mapping[str, Any]], int], item: Callable[[Any, str, Mapping[str, Any]], Any],
              what: str, optional: bool = False) -> Callable[[Any, str, Mapping[str, Any]], Any]:
    def check(value: Any, key: str, cfg: Mapping[str, Any]) -> Any:
        if value is None and optional:
            return None
        count = n(cfg) if callable(n) else n
        if not isinstance(value, (list, tuple)) or len(value) != count:
            raise _Invalid(key, f"must be a list of {count} {what}{' or null' if optional else ''}, got {value!r}")
        return [item(v, f"{key}[{i}]", cfg) for i, v in enumerate(value)]

    return check


def _mirror_axes(n_axes: int) -> Callable[[Any, str, Mapping[str, Any]], Any]:
    def check(value: Any, key: str, cfg: Mapping[str, Any]) -> Any:
        ok = isinstance(value, (list, tuple)) and all(_as_number(a) is not None and float(a) == int(a)
                                                      and 0 <= int(a) < n_axes for a in value)
        if not ok or len({int(a) for a in value}) != len(value):
            raise _Invalid(key, f"must be a list of distinct spatial axes from 0 to {n_axes - 1} (may be empty), "
                                f"got {value!r}")
        return [int(a) for a in value]

    return check


def _mapping(value: Any, key: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The open keyword arguments of the network (checked by building it, see ``ichct.pipeline.train.engine``)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _Invalid(key, f"must be a mapping of keyword arguments, got {value!r}")
    return copy.deepcopy(dict(value))


def _windows_check(value: Any, key: str, cfg: Mapping[str, Any]) -> Any:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise _Invalid(key, f"must be null (the default windows) or a mapping name: [center, width], got {value!r}")
    center, width = _number(), _number(0, lo_open=True)
    out = {}
    for name, cw in value.items():
        if not isinstance(cw, (list, tuple)) or len(cw) != 2:
            raise _Invalid(f"{key}.{name}", f"must be [center, width] in HU, got {cw!r}")
        out[str(name)] = [center(cw[0], f"{key}.{name}[0]", cfg), width(cw[1], f"{key}.{name}[1]", cfg)]
    return out


def _pos_weight(value: Any, key: str, cfg: Mapping[str, Any]) -> Any:
    if value == "auto":
        return value
    if not isinstance(value, (list, tuple)) or len(value) != 6:
        raise _Invalid(key, f"must be 'auto' or a list of 6 numbers > 0, got {value!r}")
    return [_number(0, lo_open=True)(v, f"{key}[{i}]", cfg) for i, v in enumerate(value)]


def _cache_dir(value: Any, key: str, cfg: Mapping[str, Any]) -> Any:
    """A folder path (made absolute), required when ``cache`` (checked before) is ``"disk"``."""
    if value is None:
        if cfg.get("cache") == "disk":
            raise _Invalid(key, "must name a folder when cache is 'disk' (ichct train --cache-dir CACHE)")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(key, f"must be a folder path or null, got {value!r}")
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise _Invalid(key, f"must be a folder, but {str(path)!r} is a file")
    return str(path)


_PROB = _number(0, 1)
_AUGMENT: dict[str, Callable[[Any, str, Mapping[str, Any]], Any]] = {
    "flip_prob": _PROB, "affine_prob": _PROB, "rotate_deg": _number(0), "scale": _number(0), "shift_prob": _PROB,
    "shift": _number(0), "noise_prob": _PROB, "noise_std": _number(0),
}


def _augment(value: Any, key: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(key, f"must be a mapping of {', '.join(_AUGMENT)}, got {value!r}")
    unknown = [k for k in value if k not in _AUGMENT]
    if unknown:
        raise _Invalid(f"{key}.{unknown[0]}", f"is unknown (known: {', '.join(_AUGMENT)})")
    return {k: check(value[k], f"{key}.{k}", cfg) for k, check in _AUGMENT.items() if k in value}


def _range(lo: float | None = None, lo_open: bool = False,
           hi: float | None = None) -> Callable[[Any, str, Mapping[str, Any]], Any]:
    """A ``[low, high]`` pair of numbers (each ``>= lo``, or ``> lo``; each ``<= hi``) with ``low <= high``."""
    item = _number(lo, hi, lo_open=lo_open)

    def check(value: Any, key: str, cfg: Mapping[str, Any]) -> list[float]:
        bound = f" {'>' if lo_open else '>='} {lo:g}" if lo is not None else ""
        bound += f" and <= {hi:g}" if hi is not None else ""
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise _Invalid(key, f"must be a range [low, high] of numbers{bound}, got {value!r}")
        low, high = (item(v, f"{key}[{i}]", cfg) for i, v in enumerate(value))
        if low > high:
            raise _Invalid(key, f"must be a range [low, high] with low <= high, got {value!r}")
        return [low, high]

    return check


#: The checks of each domain randomisation effect's keys (``domain.<effect>.<key>``).
_DOMAIN: dict[str, dict[str, Callable[[Any, str, Mapping[str, Any]], Any]]] = {
    "hu_offset": {"prob": _PROB, "offset_hu": _range()},
    "noise": {"prob": _PROB, "std_hu": _range(0), "texture_sigma": _range(0)},
    "psf_tail": {"prob": _PROB, "fraction": _range(0, hi=1), "length_mm": _range(0, lo_open=True)},
    "slice_thickness": {"prob": _PROB, "factor": _range(1)},
    "blur": {"prob": _PROB, "sigma": _range(0)},
    "sharpen": {"prob": _PROB, "alpha": _range(0), "sigma": _range(0)},
    "bias_field": {"prob": _PROB, "coeff": _range()},
    "contrast": {"prob": _PROB, "gamma": _range(0, lo_open=True)},
}


def _domain(value: Any, key: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``domain``: a mapping effect -> {key: value}, each key checked (unknown effects and keys refused)."""
    if not isinstance(value, Mapping):
        raise _Invalid(key, f"must be a mapping of {', '.join(_DOMAIN)}, got {value!r}")
    out: dict[str, Any] = {}
    for effect, params in value.items():
        checks = _DOMAIN.get(effect)
        if checks is None:
            raise _Invalid(f"{key}.{effect}", f"is unknown (known: {', '.join(_DOMAIN)})")
        if not isinstance(params, Mapping):
            raise _Invalid(f"{key}.{effect}", f"must be a mapping of {', '.join(checks)}, got {params!r}")
        unknown = [k for k in params if k not in checks]
        if unknown:
            raise _Invalid(f"{key}.{effect}.{unknown[0]}", f"is unknown (known: {', '.join(checks)})")
        out[effect] = {k: check(params[k], f"{key}.{effect}.{k}", cfg) for k, check in checks.items() if k in params}
    return out


_COMMON_CHECKS: dict[str, Callable[[Any, str, Mapping[str, Any]], Any]] = {
    "epochs": _number(1, integer=True),
    "max_minutes": _number(0, lo_open=True, optional=True),
    "lr": _number(0, lo_open=True),
    "weight_decay": _number(0),
    "batch_size": _number(1, integer=True),
    "val_interval": _number(1, integer=True),
    "best_window": _number(1, integer=True),
    "cache_rate": _number(0, 1),
    "cache": _choice("ram", "disk"),
    "cache_dir": _cache_dir,
    "num_workers": _number(0, integer=True),
    "windows": _windows_check,
    "brain_reference_hu": _number(-100, 200, optional=True),
    "augment": _augment,
    "domain": _domain,
}

#: One check per key of :data:`DEFAULTS` (in an order where ``num_classes`` precedes what depends on it).
CHECKS: dict[str, dict[str, Callable[[Any, str, Mapping[str, Any]], Any]]] = {
    "seg": {
        **_COMMON_CHECKS,
        "num_classes": _choice(2, 6),
        "spacing_mm": _sequence(3, _number(0, lo_open=True), "numbers > 0"),
        "crop": _choice("brain", "head", None),
        "patch": _sequence(3, _number(1, integer=True), "integers >= 1"),
        "samples_per_volume": _number(1, integer=True),
        "pos_neg_ratio": _number(0),
        "loss": _choice("dice_ce", "dice_focal"),
        "dice_batch": _boolean,
        "class_weights": _sequence(lambda cfg: int(cfg["num_classes"]), _number(0), "numbers >= 0 (one per class)",
                                   optional=True),
        "network": _mapping,
        "sw_batch_size": _number(1, integer=True),
        "sw_overlap": _number(0, 1, hi_open=True),
        "tta_mirror_axes": _mirror_axes(3),
        "min_component_ml": _number(0),
        "min_component_confidence": _number(0, 1),
        "classifier_slice_gate": _number(0, 1),
    },
    "cls": {
        **_COMMON_CHECKS,
        "stripped_brain_channel": _boolean,
        "crop": _choice("brain", "head", None),
        "in_plane": _sequence(2, _number(1, integer=True), "integers >= 1"),
        "tta_mirror_axes": _mirror_axes(2),  # in-plane only: the slice axis is the sequence
        "network": _mapping,
        "aux_seg_weight": _number(0),
        "class_weights": _sequence(6, _number(0), "numbers >= 0 (any + five subtypes)"),
        "focal_gamma": _number(0),
        "pos_weight": _pos_weight,
        "pos_weight_max": _number(0, lo_open=True),
        "rule_k": _number(1, integer=True),
        "threshold_method": _choice("youden", "sensitivity", "specificity"),
    },
}


def _merge(base: dict[str, Any], over: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        where = f"{path}{key}"
        if key not in out:
            close = difflib.get_close_matches(str(key), [str(k) for k in out], n=1)
            hint = f"; did you mean {path + close[0]!r}?" if close else ""
            raise _Invalid(where, f"is unknown{hint}")
        if isinstance(out[key], dict) and isinstance(value, Mapping) and key != "network":
            out[key] = _merge(out[key], value, where + ".")
        elif isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = {**out[key], **copy.deepcopy(dict(value))}  # network kwargs are open
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML override file (a mapping); :class:`~ichct.errors.InputError` naming the file if it is not one."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(p, f"not a text file (a JSON or YAML training config): {exc}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise InputError(p, f"not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(p, f"not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise InputError(p, f"a training config must be a mapping, got {type(data).__name__}")
    return dict(data)


def resolve_config(kind: str, config: str | Path | Mapping[str, Any] | None = None,
                   epochs: int | None = None, *, source: str | None = None) -> dict[str, Any]:
    """Defaults of ``kind`` merged with ``config`` (path or mapping) and ``epochs``, checked and coerced.

    Raises :class:`~ichct.errors.InputError` (a ``ValueError``) naming the config file (or
    ``source``) and the key for an unknown key, or a value of the wrong type or out of range.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    name = source or (str(config) if isinstance(config, (str, Path)) else "training config")
    over: Any = {}
    if isinstance(config, (str, Path)):
        over = read_config_file(config)
    elif config is not None:
        over = config
    if not isinstance(over, Mapping):
        raise InputError(name, f"a training config must be a mapping, got {type(over).__name__}")
    try:
        cfg = _merge(DEFAULTS[kind], over)
    except _Invalid as exc:
        raise InputError(name, str(exc)) from None
    if epochs is not None:
        if isinstance(epochs, bool) or _as_number(epochs) is None or int(epochs) != epochs or int(epochs) < 1:
            raise InputError(f"epochs must be an integer >= 1, got {epochs!r}")
        cfg["epochs"] = int(epochs)
    return validate_config(kind, cfg, source=name)


def resolve_saved_config(kind: str, saved: Mapping[str, Any], epochs: int | None = None,
                         source: str | None = None) -> dict[str, Any]:
    """:func:`resolve_config` of a run's saved config (:func:`saved_run_config`): keys it lacks take
    the value the run was trained with, not their newer defaults, so that a resumed run trains the
    network it started with."""
    return resolve_config(kind, saved_run_config(kind, saved), epochs=epochs, source=source)


def validate_config(kind: str, cfg: Mapping[str, Any], source: str = "training config") -> dict[str, Any]:
    """``cfg`` (every key of :data:`DEFAULTS` ``[kind]``) checked and coerced: a new dict.

    Raises :class:`~ichct.errors.InputError` ("SOURCE: config key 'lr' must be a number > 0, got 'abc'").
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    checks = CHECKS[kind]
    unknown = [k for k in cfg if k not in checks]
    missing = [k for k in checks if k not in cfg]
    if unknown:
        raise InputError(source, f"config key {unknown[0]!r} is unknown")
    if missing:
        raise InputError(source, f"config key {missing[0]!r} is missing")
    out: dict[str, Any] = {}
    try:
        for key, check in checks.items():
            out[key] = check(cfg[key], key, out)
    except _Invalid as exc:
        raise InputError(source, str(exc)) from None
    return {k: out[k] for k in cfg}  # the order of cfg
