"""Choosing the segmenter's confidence filter (``min_component_confidence``) on held-out studies.

The filter (:class:`ichct.transforms.SuppressUncertainComponents`) turns predicted blood components
whose mean blood probability is below a value into background. Raising the value only ever
removes components, so false-positive lesions and false blood can only fall, while small or faint
true bleeds start to go too. :func:`sweep_summary` scores each candidate value on the same studies
and :func:`choose_confidence` takes the **largest value that costs no more than a tolerance** of
Dice on studies with blood and of lesion-level sensitivity, compared with no filter: the most
false positives removed at no material cost to what the model finds. This is the non-inferiority
choice nnU-Net makes for its post-processing, with tolerances instead of strict improvement.
That choice weighs only what the filter costs; :func:`within_false_blood_budget` raises it, when
asked, to the smallest value whose false blood on the studies without blood stays within a budget
(a model that finds a few more lesions without the filter moves the tolerance choice down, and
its false positives with it: docs/benchmarks.md#tried-a-fourth-network-u-trained-55-minutes-longer-2026-12-07-not-published).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ichct.errors import InputError

__all__ = ["DEFAULT_CONFIDENCES", "SWEEP_FIELDS", "check_tolerances", "choose_confidence", "sweep_summary",
           "check_false_blood_budget", "within_false_blood_budget"]

#: Candidate values of ``min_component_confidence`` (0: no filter).
DEFAULT_CONFIDENCES: tuple[float, ...] = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
#: What :func:`sweep_summary` reports per value.
SWEEP_FIELDS: tuple[str, ...] = (
    "min_component_confidence", "n_studies", "n_with_blood", "n_without_blood", "dice_with_blood",
    "lesion_sensitivity", "fp_lesions_per_scan", "false_blood_ml_median", "false_blood_ml_p95",
    "seg_volume_specificity")


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.asarray([float(r.get(key, math.nan)) for r in rows], dtype=np.float64)


def _finite_mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def _value_summary(value: float, rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """One value's row of :func:`sweep_summary`."""
    blood = _column(rows, "seg:any:vol_true_ml") > 0
    true_lesions = _column(rows, "seg:any:n_true_lesions")
    negatives = ~blood
    false_ml = _column(rows, "vol_ml:any")[negatives]
    calls = _column(rows, "call:seg_volume:any")[negatives]
    n_true = float(np.nansum(true_lesions))
    return {
        key: value, "n_studies": len(rows), "n_with_blood": int(blood.sum()),
        "n_without_blood": int(negatives.sum()),
        "dice_with_blood": _finite_mean(_column(rows, "seg:any:dice")[blood]),
        "lesion_sensitivity": float(np.nansum(_column(rows, "seg:any:n_detected_lesions")) / n_true) if n_true else math.nan,
        "fp_lesions_per_scan": float(np.nansum(_column(rows, "seg:any:n_fp_lesions")) / len(rows)),
        "false_blood_ml_median": float(np.median(false_ml)) if false_ml.size else math.nan,
        "false_blood_ml_p95": float(np.percentile(false_ml, 95)) if false_ml.size else math.nan,
        "seg_volume_specificity": _finite_mean(1.0 - calls),
    }


def sweep_summary(rows_by_value: Mapping[float, Sequence[Mapping[str, Any]]],
                  key: str = "min_component_confidence") -> list[dict[str, float]]:
    """Per candidate value, the numbers the choice weighs, from ``ichct evaluate``'s per-study rows.

    Parameters
    ----------
    rows_by_value
        ``{value: rows}``, each row as :func:`ichct.pipeline.evaluate.run.study_row` makes it for
        the study predicted at that value (the reference mask gives ``seg:any:*``).
    key
        The setting the values are of (the first field of each row; the other fields are
        :data:`SWEEP_FIELDS`' after the first).

    Returns
    -------
    list of dict
        Sorted by value, with :data:`SWEEP_FIELDS`: Dice on studies whose reference has blood
        (mean), pooled lesion-level sensitivity, false-positive lesions per scan, the blood volume
        predicted on studies without reference blood (median and 95th percentile, mL) and the
        specificity of the ``seg_volume`` rule on them.

    Examples
    --------
    >>> rows = [{"seg:any:vol_true_ml": 2.0, "seg:any:dice": 0.8, "seg:any:n_true_lesions": 2,
    ...          "seg:any:n_detected_lesions": 1, "seg:any:n_fp_lesions": 1, "vol_ml:any": 2.1,
    ...          "call:seg_volume:any": 1},
    ...         {"seg:any:vol_true_ml": 0.0, "seg:any:dice": float("nan"), "seg:any:n_true_lesions": 0,
    ...          "seg:any:n_detected_lesions": 0, "seg:any:n_fp_lesions": 0, "vol_ml:any": 0.0,
    ...          "call:seg_volume:any": 0}]
    >>> s = sweep_summary({0.0: rows})[0]
    >>> s["dice_with_blood"], s["lesion_sensitivity"], s["fp_lesions_per_scan"], s["seg_volume_specificity"]
    (0.8, 0.5, 0.5, 1.0)
    """
    return [_value_summary(float(v), rows_by_value[v], key) for v in sorted(rows_by_value)]


def check_tolerances(dice_tolerance: float, sensitivity_tolerance: float) -> tuple[float, float]:
    """Both tolerances of :func:`choose_confidence` as floats; :class:`~ichct.errors.InputError` naming
    the one outside [0, 1].

    Examples
    --------
    >>> check_tolerances(0.01, 0.02)
    (0.01, 0.02)
    """
    out = []
    for name, value in (("dice_tolerance", dice_tolerance), ("sensitivity_tolerance", sensitivity_tolerance)):
        value = float(value)
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise InputError(f"{name} must be within [0, 1], got {value}")
        out.append(value)
    return out[0], out[1]


def choose_confidence(summary: Sequence[Mapping[str, float]], dice_tolerance: float = 0.01,
                      sensitivity_tolerance: float = 0.02) -> float:
    """The largest value up to which Dice and lesion sensitivity stay within the tolerances of no filter.

    Values are tried in increasing order; the choice is the last one before the first that costs
    more than a tolerance (0 when the first filtered value already does).

    Parameters
    ----------
    summary
        :func:`sweep_summary` rows; one must be value 0 (the reference: no filter).
    dice_tolerance, sensitivity_tolerance
        How much lower than without the filter the mean Dice on studies with blood and the
        lesion-level sensitivity may be (absolute, within [0, 1]).

    Raises
    ------
    ichct.errors.InputError
        No row for value 0, a tolerance outside [0, 1], or studies without reference blood or
        lesions only (nothing to weigh the cost against).

    Examples
    --------
    >>> rows = [{"min_component_confidence": 0.0, "dice_with_blood": 0.70, "lesion_sensitivity": 0.60},
    ...         {"min_component_confidence": 0.7, "dice_with_blood": 0.71, "lesion_sensitivity": 0.59},
    ...         {"min_component_confidence": 0.8, "dice_with_blood": 0.70, "lesion_sensitivity": 0.50}]
    >>> choose_confidence(rows)
    0.7
    >>> choose_confidence(rows, sensitivity_tolerance=0.1)
    0.8
    """
    dice_tolerance, sensitivity_tolerance = check_tolerances(dice_tolerance, sensitivity_tolerance)
    by_value = {float(r["min_component_confidence"]): r for r in summary}
    if 0.0 not in by_value:
        raise InputError("the sweep needs value 0 (no filter) as its reference")
    base = by_value[0.0]
    if not (math.isfinite(base["dice_with_blood"]) and math.isfinite(base["lesion_sensitivity"])):
        raise InputError("the studies have no reference blood (or no lesion of the lesion definition): the cost of "
                         "the filter cannot be weighed; choose on studies with blood")
    chosen = 0.0
    for value in sorted(by_value):  # up to the first value that costs too much
        row = by_value[value]
        if not (row["dice_with_blood"] >= base["dice_with_blood"] - dice_tolerance - 1e-12
                and row["lesion_sensitivity"] >= base["lesion_sensitivity"] - sensitivity_tolerance - 1e-12):
            break
        chosen = value
    return chosen


def check_false_blood_budget(max_false_blood_ml: float) -> float:
    """The budget of :func:`within_false_blood_budget` as a float; :class:`~ichct.errors.InputError`
    for a negative or non-finite one.

    Examples
    --------
    >>> check_false_blood_budget(1)
    1.0
    """
    budget = float(max_false_blood_ml)
    if not (math.isfinite(budget) and budget >= 0.0):
        raise InputError(f"max_false_blood_ml must be a volume >= 0 mL, got {max_false_blood_ml}")
    return budget


def within_false_blood_budget(summary: Sequence[Mapping[str, float]], chosen: float, max_false_blood_ml: float) -> float:
    """The smallest value, at least ``chosen``, whose false blood stays within ``max_false_blood_ml``.

    False blood is the 95th percentile, over the studies without reference blood, of the blood
    volume predicted on them (``false_blood_ml_p95`` of :func:`sweep_summary`): the measure of the
    shifted-domain benchmark's goal. Raising the filter only ever removes components, so the
    values above ``chosen`` are tried in increasing order.

    Parameters
    ----------
    summary
        :func:`sweep_summary` rows.
    chosen
        The value chosen so far (:func:`choose_confidence`); kept when it is within the budget.
    max_false_blood_ml
        The budget in mL (>= 0).

    Raises
    ------
    ichct.errors.InputError
        A negative or non-finite budget, studies of which none is free of reference blood, or no
        candidate value within the budget (the message gives the least false blood reached).

    Examples
    --------
    >>> rows = [{"min_component_confidence": 0.0, "false_blood_ml_p95": 2.2},
    ...         {"min_component_confidence": 0.7, "false_blood_ml_p95": 1.6},
    ...         {"min_component_confidence": 0.8, "false_blood_ml_p95": 0.4}]
    >>> within_false_blood_budget(rows, 0.7, 1.0)
    0.8
    >>> within_false_blood_budget(rows, 0.7, 2.0)
    0.7
    """
    budget = check_false_blood_budget(max_false_blood_ml)
    rows = sorted(summary, key=lambda r: float(r["min_component_confidence"]))
    if not any(math.isfinite(float(r["false_blood_ml_p95"])) for r in rows):
        raise InputError("the studies have none without reference blood: the false-blood budget cannot be checked; "
                         "choose on studies with and without blood")
    for row in rows:
        value = float(row["min_component_confidence"])
        if value >= chosen and float(row["false_blood_ml_p95"]) <= budget + 1e-12:
            return value
    least = min(rows, key=lambda r: float(r["false_blood_ml_p95"]))
    raise InputError(f"no candidate value keeps the false blood (95th percentile on studies without blood) within "
                     f"{budget:g} mL: the least is {float(least['false_blood_ml_p95']):.2f} mL at "
                     f"{float(least['min_component_confidence']):g}; raise the budget or add larger values")
