"""Volume-level decisions: from per-slice probabilities or a segmentation to one call per CT.

Every rule gives a CT-level **score** per subtype and calls the CT positive for that subtype when
``score >= threshold``. The scores are therefore directly usable for ROC analysis, and a threshold
chosen on validation scores (:func:`choose_threshold`) reproduces its operating point exactly.

Rules on slice probabilities ``(N, 6)`` (columns in :data:`LABEL_NAMES` order, ``N`` slices in
anatomical order):

``max``
    Score = highest slice probability.
``topk_mean``
    Score = mean of the ``k`` highest slice probabilities (all slices when ``N < k``).
``consecutive``
    Positive when at least ``k`` *adjacent* slices have ``p >= threshold``. Score = the maximum,
    over all windows of ``k`` adjacent slices, of the minimum probability in the window. For every
    threshold ``t > 0``: ``score >= t`` if and only if some ``k`` adjacent slices all pass ``t``
    (a run of >= k passing slices contains such a window; conversely a window whose minimum is
    >= t is such a run). A CT with fewer than ``k`` slices has no such window: its score is 0 and it
    is negative at every valid threshold.

Rule on a segmentation:

``seg_volume``
    Connected components (:func:`scipy.ndimage.label`) smaller than ``min_component_ml`` are
    removed, per subtype label and for any blood (the union of all labels > 0, whose components
    are formed across subtypes); score = remaining blood volume in mL; positive when the volume
    reaches the threshold (``>=``, threshold in mL, > 0).

``seg_peak``
    Score = the segmenter's highest probability of the label, each voxel's probability first
    averaged over its 3 x 3 x 3 neighbourhood of the model grid (:func:`peak_probability_scores`;
    ``any``: 1 - p(background)). Unlike the volume it does not tie every study without a kept
    component at 0 mL, so it ranks the studies the segmenter is unsure of.

Rule on both models at once:

``fused``
    Score = the mean of the classifier's ``consecutive`` score (with the rule's ``k``) and the
    segmenter's ``seg_peak`` score, per label both score (``any`` only with a binary segmenter;
    :func:`fused_scores`). The two models miss different studies (the classifier thin collections
    against the bone, the segmenter faint small ones), so the mean ranks studies better than
    either alone. Its threshold, unless chosen on data, is the mean of the two rules' thresholds
    (:func:`fused_threshold`).

Thresholds of the slice rules, ``seg_peak`` and ``fused`` lie in ``(0, 1]`` (0 would call every CT positive), those of
``seg_volume`` are > 0 mL; probabilities must lie in ``[0, 1]`` and NaN is rejected with a
``ValueError``. The :class:`DecisionRule` holds the rule name, its parameters and its
threshold(s) (one for all subtypes or one per subtype) and round-trips through JSON so it can
be stored next to a model.

Pure NumPy/SciPy; nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ichct.pipeline.core.labels import LABEL_NAMES

__all__ = [
    "LABEL_NAMES",
    "RULES",
    "SLICE_RULES",
    "SEG_RULES",
    "PROBABILITY_MAP_RULES",
    "DecisionRule",
    "max_score",
    "topk_mean_score",
    "consecutive_score",
    "consecutive_call",
    "slice_scores",
    "voxel_volume_ml",
    "remove_small_components",
    "segmentation_volumes",
    "peak_probability_scores",
    "PAIR_RULES",
    "UNCALIBRATED_RULES",
    "fused_scores",
    "fused_threshold",
    "models_needed",
    "ct_scores",
    "decide",
    "decide_scores",
    "choose_threshold",
    "choose_thresholds",
    "probability_threshold",
]

# LABEL_NAMES (from ichct.pipeline.core.labels) is the column order of slice probabilities: "any" + the
# five subtypes; segmentation label i (1..5) of a 6-class map is LABEL_NAMES[i], label 1 of a
# binary map "any".

#: Deprecated: the six labels, importable here as before; use :data:`LABEL_NAMES`
#: (``SUBTYPES`` of :mod:`ichct.pipeline.core.labels` is the five subtypes without ``"any"``).
SUBTYPES: tuple[str, ...] = LABEL_NAMES

SLICE_RULES: tuple[str, ...] = ("consecutive", "max", "topk_mean")
#: Rules on a segmenter's output: its blood volume (label map) and its peak probability (probability map).
SEG_RULES: tuple[str, ...] = ("seg_volume", "seg_peak")
#: Rules on a classifier's slice probabilities and a segmenter's probabilities together.
PAIR_RULES: tuple[str, ...] = ("fused",)
RULES: tuple[str, ...] = (*SLICE_RULES, *SEG_RULES, *PAIR_RULES)
#: Rules whose score is no probability of the study (a volume, a voxel's peak, the mean of a slice
#: window and a voxel's peak): ``ichct evaluate`` gives them no calibration metrics.
UNCALIBRATED_RULES: tuple[str, ...] = (*SEG_RULES, *PAIR_RULES)
#: Rules that score a model's probability maps, which predictions as files (label maps, slice or
#: study probabilities) do not carry.
PROBABILITY_MAP_RULES: tuple[str, ...] = ("seg_peak", "fused")


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _as_probs(probs: Any) -> tuple[np.ndarray, bool]:
    """Validate slice probabilities; return a float64 ``(N, C)`` array and whether input was 1-D."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"slice probabilities must be (N,) or (N, C), got shape {arr.shape}")
    one_d = arr.ndim == 1
    if one_d:
        arr = arr[:, None]
    if arr.shape[0] == 0:
        raise ValueError("slice probabilities are empty (a CT needs at least one slice)")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(f"slice probabilities contain {n_nan} NaN value(s); refusing to decide on them")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(
            f"slice probabilities must lie in [0, 1] (got min {arr.min()}, max {arr.max()}); "
            "apply a sigmoid to logits first"
        )
    return arr, one_d


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _out(values: np.ndarray, one_d: bool) -> np.ndarray | float:
    return float(values[0]) if one_d else values


# --------------------------------------------------------------------------------------------
# Slice-probability rules
# --------------------------------------------------------------------------------------------


def max_score(probs: Any) -> np.ndarray | float:
    """Highest slice probability.

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities.

    Returns
    -------
    numpy.ndarray or float
        ``(C,)`` scores, or a float for 1-D input.
    """
    arr, one_d = _as_probs(probs)
    return _out(arr.max(axis=0), one_d)


def topk_mean_score(probs: Any, k: int = 3) -> np.ndarray | float:
    """Mean of the ``k`` highest slice probabilities (of all slices when there are fewer than k).

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities.
    k
        Number of slices averaged.

    Returns
    -------
    numpy.ndarray or float
        ``(C,)`` scores, or a float for 1-D input.
    """
    arr, one_d = _as_probs(probs)
    k = min(_check_k(k), arr.shape[0])
    top = -np.partition(-arr, k - 1, axis=0)[:k]
    return _out(top.mean(axis=0), one_d)


def consecutive_score(probs: Any, k: int = 3) -> np.ndarray | float:
    """Max over windows of ``k`` adjacent slices of the minimum probability in the window.

    ``consecutive_score(p, k) >= t`` exactly when at least ``k`` adjacent slices have
    ``p >= t`` (for any ``t > 0``); see :func:`consecutive_call`. With fewer than ``k`` slices the
    score is 0.

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities in slice order.
    k
        Window length (number of adjacent slices).

    Returns
    -------
    numpy.ndarray or float
        ``(C,)`` scores, or a float for 1-D input.
    """
    arr, one_d = _as_probs(probs)
    k = _check_k(k)
    if arr.shape[0] < k:
        return _out(np.zeros(arr.shape[1]), one_d)
    windows = np.lib.stride_tricks.sliding_window_view(arr, k, axis=0)  # (N-k+1, C, k)
    return _out(windows.min(axis=-1).max(axis=0), one_d)


def consecutive_call(probs: Any, threshold: float, k: int = 3) -> np.ndarray | bool:
    """Direct form of the ``consecutive`` rule: is there a run of >= ``k`` adjacent passing slices?

    A slice passes when ``p >= threshold``. Passing slices separated by a failing one are
    separate runs. This is the reference definition; :func:`decide` uses the equivalent
    ``consecutive_score(probs, k) >= threshold``.

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities in slice order.
    threshold
        Slice threshold in ``(0, 1]``.
    k
        Minimum run length.

    Returns
    -------
    numpy.ndarray or bool
        ``(C,)`` booleans, or a bool for 1-D input.
    """
    arr, one_d = _as_probs(probs)
    k = _check_k(k)
    _check_threshold(threshold, "consecutive")
    longest = np.zeros(arr.shape[1], dtype=int)
    run = np.zeros(arr.shape[1], dtype=int)
    for row in arr >= threshold:
        run = np.where(row, run + 1, 0)
        longest = np.maximum(longest, run)
    calls = longest >= k
    return bool(calls[0]) if one_d else calls


def slice_scores(probs: Any, rule: str | DecisionRule, k: int = 3) -> np.ndarray | float:
    """CT-level scores of a slice-probability rule.

    Parameters
    ----------
    probs
        ``(N,)`` or ``(N, C)`` slice probabilities.
    rule
        A rule name from :data:`SLICE_RULES` or a :class:`DecisionRule` (whose ``k`` is used).
    k
        Window / top-k size when ``rule`` is a name.

    Returns
    -------
    numpy.ndarray or float
        ``(C,)`` scores, or a float for 1-D input.
    """
    if isinstance(rule, DecisionRule):
        name, k = rule.name, rule.k
    else:
        name = rule
    if name == "max":
        return max_score(probs)
    if name == "topk_mean":
        return topk_mean_score(probs, k)
    if name == "consecutive":
        return consecutive_score(probs, k)
    raise ValueError(f"slice rule must be one of {SLICE_RULES}, got {name!r}")


# --------------------------------------------------------------------------------------------
# Segmentation volumes
# --------------------------------------------------------------------------------------------


def voxel_volume_ml(spacing_mm: Sequence[float]) -> float:
    """Volume of one voxel in mL from its spacing in mm (1 mL = 1000 mm^3)."""
    sp = np.asarray(spacing_mm, dtype=np.float64)
    if sp.ndim != 1 or sp.size == 0 or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be positive finite values in mm, got {spacing_mm!r}")
    return float(np.prod(sp) / 1000.0)


def affine_voxel_volume_ml(affine: Any) -> float:
    """Volume of one voxel in mL from a voxel-to-world affine: ``|det|`` of its 3x3 part.

    Unlike the product of the column norms (the spacing), this is right for a sheared grid too
    (a gantry-tilted stack kept as acquired, whose voxels are parallelepipeds).
    """
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    volume = float(abs(np.linalg.det(m)))
    if not np.isfinite(volume) or volume <= 0:
        raise ValueError(f"affine has no positive voxel volume: {m.tolist()!r}")
    return volume / 1000.0


def _check_volume_args(voxel_ml: float, min_component_ml: float) -> None:
    if not (math.isfinite(voxel_ml) and voxel_ml > 0):
        raise ValueError(f"voxel_volume_ml must be a positive number, got {voxel_ml!r}")
    if not (math.isfinite(min_component_ml) and min_component_ml >= 0):
        raise ValueError(f"min_component_ml must be >= 0, got {min_component_ml!r}")


def remove_small_components(
    mask: Any, voxel_volume_ml: float, min_component_ml: float, connectivity: int = 1
) -> np.ndarray:
    """Drop connected components smaller than ``min_component_ml`` from a binary mask.

    Parameters
    ----------
    mask
        Boolean (or 0/1) array, e.g. ``(X, Y, Z)``.
    voxel_volume_ml
        Volume of one voxel in mL (see :func:`voxel_volume_ml`).
    min_component_ml
        Components with a volume below this are removed; a component of exactly this volume is
        kept. 0 keeps everything.
    connectivity
        1 = face neighbours (6-connectivity in 3D) ... ``mask.ndim`` = all neighbours (26 in 3D).

    Returns
    -------
    numpy.ndarray
        Boolean mask of the kept components.
    """
    from ichct.transforms.components import large_component_mask

    _check_volume_args(float(voxel_volume_ml), float(min_component_ml))
    return large_component_mask(np.asarray(mask), float(voxel_volume_ml), float(min_component_ml), connectivity)


def _as_label_map(segmentation: Any, num_classes: int | None) -> tuple[np.ndarray, int]:
    """Label map ``(X, Y, Z)`` and class count from a label map or a ``(C, X, Y, Z)`` probability map."""
    arr = np.asarray(segmentation)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"segmentation must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError("segmentation contains NaN values")
    if arr.ndim == 4 and arr.shape[0] >= 2:  # per-class probabilities (or logits)
        c = arr.shape[0]
        if num_classes is not None and num_classes != c:
            raise ValueError(f"probability map has {c} channels but num_classes={num_classes}")
        if c not in (2, len(LABEL_NAMES)):
            raise ValueError(f"probability map must have 2 or {len(LABEL_NAMES)} channels, got {c}")
        return np.argmax(arr, axis=0), c
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(
            f"segmentation must be a label map (X, Y, Z) / (1, X, Y, Z) or a probability map "
            f"(C, X, Y, Z), got shape {arr.shape}"
        )
    if num_classes is None:
        raise ValueError(
            "num_classes is required for a label map (2: background/blood, 6: background + subtypes); "
            "label 1 means 'any blood' in one and 'epidural' in the other"
        )
    if num_classes not in (2, len(LABEL_NAMES)):
        raise ValueError(f"num_classes must be 2 or {len(LABEL_NAMES)}, got {num_classes}")
    if arr.size and (np.any(arr != np.round(arr)) or arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"label map values must be integers in [0, {num_classes - 1}]")
    return arr.astype(np.int64), num_classes


def segmentation_volumes(
    segmentation: Any,
    voxel_volume_ml: float,
    min_component_ml: float = 0.0,
    num_classes: int | None = None,
    connectivity: int = 1,
) -> dict[str, float]:
    """Blood volume in mL per subtype and for any blood, after removing small components.

    Parameters
    ----------
    segmentation
        A label map ``(X, Y, Z)`` or ``(1, X, Y, Z)`` (0 = background; binary: 1 = blood;
        6 classes: label i = ``LABEL_NAMES[i]``), or a per-class probability/logit map
        ``(C, X, Y, Z)`` with C = 2 or 6, turned into labels by argmax.
    voxel_volume_ml
        Volume of one voxel in mL.
    min_component_ml
        Components below this volume are discarded (see :func:`remove_small_components`).
    num_classes
        2 or 6; required for label maps, checked against C for probability maps.
    connectivity
        Neighbourhood of the connected components (1: faces ... 3: faces, edges and corners).

    Returns
    -------
    dict
        ``{"any": mL}`` for a binary segmentation; ``{subtype: mL}`` for all :data:`LABEL_NAMES`
        for a 6-class one. ``"any"`` uses the components of the union of all blood labels.
    """
    labels, c = _as_label_map(segmentation, num_classes)
    _check_volume_args(float(voxel_volume_ml), float(min_component_ml))

    def volume(mask: np.ndarray) -> float:
        kept = remove_small_components(mask, voxel_volume_ml, min_component_ml, connectivity)
        return float(np.count_nonzero(kept) * voxel_volume_ml)

    out = {"any": volume(labels > 0)}
    if c == len(LABEL_NAMES):
        for i, name in enumerate(LABEL_NAMES[1:], start=1):
            out[name] = volume(labels == i)
    return out


def peak_probability_scores(probabilities: Any, size: int = 3) -> dict[str, float]:
    """Highest neighbourhood-averaged probability per label of a segmenter's class probabilities.

    Parameters
    ----------
    probabilities
        ``(C, X, Y, Z)`` class probabilities (softmax; C = 2: background, blood; C = 6: background
        and the subtypes in :data:`LABEL_NAMES` order).
    size
        Edge of the cube each voxel's probability is averaged over first (1: the raw maximum).

    Returns
    -------
    dict
        ``{"any": score}`` (any: 1 - p(background)) and, for 6 classes, one score per subtype.

    Examples
    --------
    >>> p = np.zeros((2, 6, 6, 6)); p[0] = 1.0
    >>> p[:, 2:5, 2:5, 2:5] = [[[[0.1]]], [[[0.9]]]]       # a 3 x 3 x 3 blob at 0.9
    >>> p[:, 0, 0, 0] = [0.0, 1.0]                          # one voxel at 1.0: averaged away
    >>> round(peak_probability_scores(p)["any"], 3)
    0.9
    """
    from scipy.ndimage import uniform_filter

    arr = np.asarray(probabilities, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] not in (2, len(LABEL_NAMES)):
        raise ValueError(f"probabilities must be (C, X, Y, Z) with C = 2 or {len(LABEL_NAMES)}, got {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise ValueError("probabilities must be finite values within [0, 1] (softmax the logits first)")
    size = _check_k(size)

    def peak(channel: np.ndarray) -> float:
        return float(np.clip(uniform_filter(channel, size=size, mode="nearest").max(), 0.0, 1.0))

    out = {"any": peak(1.0 - arr[0])}
    if arr.shape[0] == len(LABEL_NAMES):
        out.update({name: peak(arr[i]) for i, name in enumerate(LABEL_NAMES[1:], start=1)})
    return out


# --------------------------------------------------------------------------------------------
# Rule object
# --------------------------------------------------------------------------------------------


def models_needed(rule_name: str) -> str:
    """What a rule needs, in words: a classifier, a segmenter, or both.

    Examples
    --------
    >>> models_needed("consecutive"), models_needed("fused")
    ('a classification model', 'both a classification and a segmentation model')
    """
    if rule_name in PAIR_RULES:
        return "both a classification and a segmentation model"
    return "a segmentation model" if rule_name in SEG_RULES else "a classification model"


def fused_scores(consecutive: Mapping[str, float], peak: Mapping[str, float]) -> dict[str, float]:
    """The ``fused`` rule's scores: the mean of a classifier's ``consecutive`` and a segmenter's
    ``seg_peak`` score, for each label both scored.

    Examples
    --------
    >>> fused_scores({"any": 0.4, "subdural": 0.3}, {"any": 0.9})
    {'any': 0.65}
    """
    return {label: 0.5 * (float(consecutive[label]) + float(peak[label])) for label in consecutive if label in peak}


def fused_threshold(consecutive: DecisionRule, peak: DecisionRule, labels: Sequence[str] = LABEL_NAMES) -> DecisionRule:
    """The ``fused`` rule whose threshold of each label is the mean of the two rules' thresholds
    (a study on both models' thresholds lies on the fused one), with the ``consecutive`` rule's ``k``.

    Examples
    --------
    >>> cons = DecisionRule("consecutive", threshold={"any": 0.7, "subdural": 0.5}, k=3)
    >>> rule = fused_threshold(cons, DecisionRule("seg_peak", threshold=0.9), labels=("any", "subdural"))
    >>> rule.name, rule.k, {s: round(t, 3) for s, t in rule.threshold.items()}
    ('fused', 3, {'any': 0.8, 'subdural': 0.7})
    """
    if consecutive.name != "consecutive" or peak.name != "seg_peak":
        raise ValueError(f"fused_threshold needs a consecutive and a seg_peak rule, got {consecutive.name} and "
                         f"{peak.name}")
    threshold = {s: 0.5 * (consecutive.threshold_for(s) + peak.threshold_for(s)) for s in labels}
    return DecisionRule("fused", threshold=threshold, k=consecutive.k,
                        meta={"chosen_on": "the mean of the classifier's consecutive and the segmenter's seg_peak "
                                           "thresholds",
                              "consecutive_chosen_on": consecutive.meta.get("chosen_on"),
                              "seg_peak_chosen_on": peak.meta.get("chosen_on")})


def _check_threshold(t: Any, rule: str) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)):
        raise ValueError(f"threshold must be a number, got {t!r}")
    t = float(t)
    if rule == "seg_volume":
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"seg_volume threshold is a blood volume in mL and must be > 0, got {t}")
    elif not 0.0 < t <= 1.0:
        raise ValueError(f"{rule} threshold must lie in (0, 1] (0 would call every CT positive), got {t}")
    return t


@dataclass(frozen=True)
class DecisionRule:
    """A volume-level decision rule with its threshold(s), serialisable to JSON.

    Parameters
    ----------
    name
        One of :data:`RULES`.
    threshold
        One threshold for every subtype, or a mapping subtype -> threshold. Probability in
        ``(0, 1]`` for the slice rules, ``seg_peak`` and ``fused``, mL (> 0) for ``seg_volume``. A CT
        is positive for a subtype when its score is ``>=`` the threshold.
    k
        Adjacent slices (``consecutive``, ``fused``) or slices averaged (``topk_mean``).
    min_component_ml
        ``seg_volume``: components smaller than this (mL) are ignored.
    num_seg_classes
        ``seg_volume`` with label maps: 2 or 6 (see :func:`segmentation_volumes`).
    connectivity
        ``seg_volume``: connectivity of the components (1 = 6-neighbourhood in 3D).
    meta
        Free JSON-serialisable metadata, e.g. how the threshold was chosen.

    Examples
    --------
    >>> rule = DecisionRule("consecutive", threshold=0.4, k=3)
    >>> DecisionRule.from_json(rule.to_json()) == rule
    True
    """

    name: str
    threshold: float | Mapping[str, float]
    k: int = 3
    min_component_ml: float = 0.0
    num_seg_classes: int | None = None
    connectivity: int = 1
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"rule name must be one of {RULES}, got {self.name!r}")
        object.__setattr__(self, "k", _check_k(self.k))
        if isinstance(self.threshold, Mapping):
            if not self.threshold:
                raise ValueError("threshold mapping is empty")
            th = {str(s): _check_threshold(v, self.name) for s, v in self.threshold.items()}
        else:
            th = _check_threshold(self.threshold, self.name)
        object.__setattr__(self, "threshold", th)
        mc = float(self.min_component_ml)
        if not (math.isfinite(mc) and mc >= 0):
            raise ValueError(f"min_component_ml must be >= 0, got {self.min_component_ml!r}")
        object.__setattr__(self, "min_component_ml", mc)
        if self.num_seg_classes is not None and self.num_seg_classes not in (2, len(LABEL_NAMES)):
            raise ValueError(f"num_seg_classes must be 2, {len(LABEL_NAMES)} or None, got {self.num_seg_classes}")
        if self.connectivity not in (1, 2, 3):
            raise ValueError(f"connectivity must be 1, 2 or 3, got {self.connectivity}")
        try:
            meta = json.loads(json.dumps(dict(self.meta)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta must be JSON-serialisable: {exc}") from exc
        object.__setattr__(self, "meta", meta)

    def threshold_for(self, subtype: str) -> float:
        """Threshold of one subtype (``KeyError`` when a per-subtype mapping lacks it)."""
        if isinstance(self.threshold, Mapping):
            if subtype not in self.threshold:
                raise KeyError(f"rule {self.name!r} has no threshold for subtype {subtype!r}")
            return float(self.threshold[subtype])
        return float(self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON types only)."""
        d = dataclasses.asdict(self)
        d["threshold"] = dict(self.threshold) if isinstance(self.threshold, Mapping) else self.threshold
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionRule:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DecisionRule field(s): {sorted(unknown)}")
        return cls(**dict(data))

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DecisionRule:
        """Rule from JSON text written by :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        """Write the rule as JSON to ``path``."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> DecisionRule:
        """Read a rule saved by :meth:`save`; :class:`~ichct.errors.InputError` naming the file when it is not one."""
        from ichct.errors import InputError  # here: this module imports nothing of ichct but its labels

        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (ValueError, TypeError) as exc:  # not JSON, not a mapping, a field unknown, missing or out of range
            raise InputError(path, f"not a valid decision rule: {exc}") from exc


# --------------------------------------------------------------------------------------------
# One call per CT
# --------------------------------------------------------------------------------------------


def ct_scores(
    rule: DecisionRule,
    *,
    slice_probs: Any = None,
    segmentation: Any = None,
    voxel_volume_ml: float | None = None,
    subtypes: Sequence[str] = LABEL_NAMES,
    probabilities: Any = None,
    peak_scores: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """CT-level score per subtype under ``rule``.

    Parameters
    ----------
    rule
        The decision rule.
    slice_probs
        ``(N, len(subtypes))`` slice probabilities (slice rules, ``fused``).
    segmentation
        Label or probability map (``seg_volume``), see :func:`segmentation_volumes`.
    voxel_volume_ml
        Voxel volume in mL (``seg_volume``).
    subtypes
        Column names of ``slice_probs``.
    probabilities
        ``(C, X, Y, Z)`` class probabilities of a segmenter (``seg_peak``, ``fused``).
    peak_scores
        Their :func:`peak_probability_scores`, when already computed (then ``probabilities`` may be
        left out): one pass over the map serves ``seg_peak`` and ``fused``.

    Returns
    -------
    dict
        ``{subtype: score}``; for a binary segmentation only ``"any"``.
    """
    if rule.name in PROBABILITY_MAP_RULES:
        if (probabilities is None and peak_scores is None) or (rule.name == "fused" and slice_probs is None):
            needs = "slice_probs= and probabilities=" if rule.name == "fused" else "probabilities="
            raise ValueError(f"the {rule.name} rule needs {needs}")
        peak = dict(peak_scores) if peak_scores is not None else peak_probability_scores(probabilities)
        if rule.name == "seg_peak":
            return peak
        return fused_scores(ct_scores(dataclasses.replace(rule, name="consecutive"), slice_probs=slice_probs,
                                      subtypes=subtypes), peak)
    if rule.name == "seg_volume":
        if segmentation is None or voxel_volume_ml is None:
            raise ValueError("the seg_volume rule needs segmentation= and voxel_volume_ml=")
        return segmentation_volumes(
            segmentation,
            float(voxel_volume_ml),
            rule.min_component_ml,
            num_classes=rule.num_seg_classes,
            connectivity=rule.connectivity,
        )
    if slice_probs is None:
        raise ValueError(f"the {rule.name} rule needs slice_probs=")
    arr, _ = _as_probs(slice_probs)
    if arr.shape[1] != len(subtypes):
        raise ValueError(f"slice_probs has {arr.shape[1]} columns, expected {len(subtypes)} ({tuple(subtypes)})")
    scores = np.atleast_1d(slice_scores(arr, rule))
    return {s: float(v) for s, v in zip(subtypes, scores)}


def decide(
    rule: DecisionRule,
    *,
    slice_probs: Any = None,
    segmentation: Any = None,
    voxel_volume_ml: float | None = None,
    subtypes: Sequence[str] = LABEL_NAMES,
    probabilities: Any = None,
) -> dict[str, dict[str, Any]]:
    """One call per subtype for one CT.

    Parameters are those of :func:`ct_scores`.

    Returns
    -------
    dict
        ``{subtype: {"score": float, "threshold": float, "positive": bool}}`` with
        ``positive = score >= threshold``.
    """
    return decide_scores(rule, ct_scores(rule, slice_probs=slice_probs, segmentation=segmentation,
                                         voxel_volume_ml=voxel_volume_ml, subtypes=subtypes,
                                         probabilities=probabilities))


def decide_scores(rule: DecisionRule, scores: Mapping[str, float],
                  skip_unthresholded: bool = False) -> dict[str, dict[str, Any]]:
    """The calls of :func:`decide` from CT-level scores :func:`ct_scores` already gave.

    A label the rule has no threshold for raises ``KeyError``, or is left out with
    ``skip_unthresholded`` (scores from another tool, whose labels the rule may not all cover).

    Examples
    --------
    >>> decide_scores(DecisionRule("max", threshold=0.5), {"any": 0.7})
    {'any': {'score': 0.7, 'threshold': 0.5, 'positive': True}}
    >>> decide_scores(DecisionRule("max", threshold={"any": 0.5}), {"any": 0.2, "subdural": 0.9}, skip_unthresholded=True)
    {'any': {'score': 0.2, 'threshold': 0.5, 'positive': False}}
    """
    out: dict[str, dict[str, Any]] = {}
    for s, score in scores.items():
        try:
            t = rule.threshold_for(s)
        except KeyError:
            if skip_unthresholded:
                continue
            raise
        out[s] = {"score": score, "threshold": t, "positive": bool(score >= t)}
    return out


# --------------------------------------------------------------------------------------------
# Threshold selection
# --------------------------------------------------------------------------------------------


def _operating_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) with sensitivity and specificity of ``score >= t``."""
    thresholds = np.unique(scores)[::-1]
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    sens = tp / pos.size if pos.size else np.full(thresholds.shape, np.nan)
    spec = 1.0 - fp / neg.size if neg.size else np.full(thresholds.shape, np.nan)
    return thresholds, sens, spec


def _gap_midpoint(thresholds: np.ndarray, index: int) -> float:
    """Midpoint between ``thresholds[index]`` and the next lower observed score (descending
    ``thresholds``); the score itself when it is the lowest."""
    if index + 1 >= thresholds.size:
        return float(thresholds[index])
    return float(0.5 * (thresholds[index] + thresholds[index + 1]))


def probability_threshold(threshold: float) -> float:
    """A chosen threshold as a probability rule's threshold: within ``[1e-6, 1]`` (0 would call every CT).

    Examples
    --------
    >>> probability_threshold(0.0), probability_threshold(0.4), probability_threshold(1.2)
    (1e-06, 0.4, 1.0)
    """
    return float(min(max(float(threshold), 1e-6), 1.0))


def choose_threshold(
    scores: Any, labels: Any, method: str = "youden", target: float = 0.95
) -> float:
    """Pick an operating threshold on validation scores (``positive = score >= threshold``).

    Every threshold in the gap between the chosen observed score and the next lower one gives the
    same validation operating point; the midpoint of that gap is returned (the largest margin on
    both sides), so applying it to the same scores reproduces the operating point exactly while a
    new score just below the lowest called positive is not missed. On perfectly separated
    validation scores, Youden's J thus lands halfway between the highest negative and the lowest
    positive, not on the lowest positive (a fragile edge: a validation fold whose positives all
    scored 0.998 gave a threshold that missed most test positives).

    Parameters
    ----------
    scores
        ``(M,)`` CT-level scores (any scale: probabilities, mL, ...).
    labels
        ``(M,)`` ground truth, 0/1 or bool.
    method
        ``"youden"``: maximise sensitivity + specificity - 1 (ties between operating points: the
        one of the highest threshold);
        ``"sensitivity"``: the operating point of the highest threshold whose sensitivity is >= ``target``;
        ``"specificity"``: the operating point of the lowest threshold whose specificity is >= ``target``.
    target
        Required sensitivity or specificity in ``(0, 1]``.

    Returns
    -------
    float
        The threshold.

    Raises
    ------
    ValueError
        On NaN/inf scores, non-binary labels, mismatched lengths, or when the data lack the class
        the method needs (both classes for Youden; positives for sensitivity; negatives for
        specificity).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels)
    if y.ndim != 1 or s.size != y.size:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if s.size == 0:
        raise ValueError("no scores")
    if np.isnan(s).any() or not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0/1 or bool")
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    thresholds, sens, spec = _operating_points(s, y)

    if method == "youden":
        if n_pos == 0 or n_neg == 0:
            raise ValueError(f"Youden's J needs positives and negatives (got {n_pos} and {n_neg})")
        j = sens + spec - 1.0
        return _gap_midpoint(thresholds, int(np.argmax(j)))  # thresholds descending: first max = highest
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    if method == "sensitivity":
        if n_pos == 0:
            raise ValueError("a sensitivity target needs at least one positive case")
        ok = np.flatnonzero(sens >= target - 1e-12)
        return _gap_midpoint(thresholds, int(ok[0]))  # sensitivity grows as the threshold falls
    if method == "specificity":
        if n_neg == 0:
            raise ValueError("a specificity target needs at least one negative case")
        ok = np.flatnonzero(spec >= target - 1e-12)
        if ok.size == 0:
            raise ValueError(
                f"no observed score reaches specificity {target}: a negative case holds the highest score"
            )
        return _gap_midpoint(thresholds, int(ok[-1]))
    raise ValueError(f"method must be 'youden', 'sensitivity' or 'specificity', got {method!r}")


def choose_thresholds(
    scores: Any,
    labels: Any,
    method: str = "youden",
    target: float = 0.95,
    subtypes: Sequence[str] = LABEL_NAMES,
) -> dict[str, float]:
    """:func:`choose_threshold` per column of ``(M, C)`` scores and labels.

    Returns
    -------
    dict
        ``{subtype: threshold}``, usable as ``DecisionRule(threshold=...)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 2 or s.shape != y.shape or s.shape[1] != len(subtypes):
        raise ValueError(
            f"scores and labels must both be (M, {len(subtypes)}), got {s.shape} and {y.shape}"
        )
    out: dict[str, float] = {}
    for j, name in enumerate(subtypes):
        try:
            out[name] = choose_threshold(s[:, j], y[:, j], method=method, target=target)
        except ValueError as exc:
            raise ValueError(f"subtype {name!r}: {exc}") from exc
    return out
