"""Choosing the segmenter's minimum component volume (``min_component_ml``) on held-out studies.

Predicted blood components smaller than ``min_component_ml`` are dropped from the segmentation
(:class:`ichct.transforms.RemoveSmallComponents`). A smaller minimum keeps more of them: lesion-level
sensitivity can only rise and false-positive lesions can only grow, while Dice moves either way.
:func:`choose_min_component_ml` takes the **smallest value whose false-positive lesions per scan stay
within a budget and whose Dice costs no more than a tolerance** against the run's own value: the
most small bleeds kept at a stated false-positive rate. Values under the lesion definition's
minimum volume are not candidates: a speck too small to count as a false-positive lesion could
still count as finding one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ichct.errors import InputError
from ichct.pipeline.postprocess.confidence import check_tolerances

__all__ = ["DEFAULT_MIN_COMPONENTS_ML", "DEFAULT_MAX_FP_PER_SCAN", "check_fp_budget", "check_min_components",
           "choose_min_component_ml"]

#: Candidate values of ``min_component_ml`` (mL); the run's own value is added.
DEFAULT_MIN_COMPONENTS_ML: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
#: False-positive lesions per scan a chosen minimum may cost at most (issue 23's operating point).
DEFAULT_MAX_FP_PER_SCAN = 0.5


def check_fp_budget(max_fp_per_scan: float) -> float:
    """The false-positive budget as a float; :class:`~ichct.errors.InputError` unless it is >= 0.

    Example
    -------
    >>> check_fp_budget(0.5)
    0.5
    """
    if not float(max_fp_per_scan) >= 0.0:  # NaN fails too
        raise InputError(f"max_fp_per_scan must be >= 0, got {max_fp_per_scan}")
    return float(max_fp_per_scan)


def check_min_components(values: Sequence[float], lesion_min_ml: float) -> list[float]:
    """The candidate minima, sorted and unique; :class:`~ichct.errors.InputError` for one that is not a
    finite volume or lies under the lesion definition's minimum ``lesion_min_ml``.

    Examples
    --------
    >>> check_min_components([0.2, 0.05, 0.2], lesion_min_ml=0.05)
    [0.05, 0.2]
    >>> check_min_components([0.01], lesion_min_ml=0.05)
    Traceback (most recent call last):
    ...
    ichct.errors.InputError: minimum component volumes must be at least the lesion definition's 0.05 mL (a smaller speck would find lesions without ever counting as a false-positive one), got 0.01
    """
    out = sorted({float(v) for v in values})
    for v in out:
        if not math.isfinite(v) or v < lesion_min_ml - 1e-12:
            raise InputError(f"minimum component volumes must be at least the lesion definition's {lesion_min_ml:g} mL "
                             f"(a smaller speck would find lesions without ever counting as a false-positive one), got {v:g}")
    if not out:
        raise InputError("no minimum component volume to choose from")
    return out


def choose_min_component_ml(summary: Sequence[Mapping[str, float]], reference_ml: float, dice_tolerance: float = 0.01,
                            max_fp_per_scan: float = DEFAULT_MAX_FP_PER_SCAN) -> float:
    """The smallest minimum whose false-positive lesions and Dice stay within budget; else ``reference_ml``.

    Parameters
    ----------
    summary
        :func:`~ichct.pipeline.postprocess.confidence.sweep_summary` rows keyed by
        ``min_component_ml``; one must be ``reference_ml`` (the run's value).
    reference_ml
        The run's own minimum: the Dice reference, and the choice when no smaller value qualifies.
    dice_tolerance
        How much lower than at ``reference_ml`` the mean Dice on studies with blood may be.
    max_fp_per_scan
        The most false-positive lesions per scan a chosen value may have.

    Examples
    --------
    >>> rows = [{"min_component_ml": 0.05, "dice_with_blood": 0.70, "fp_lesions_per_scan": 0.6},
    ...         {"min_component_ml": 0.1, "dice_with_blood": 0.71, "fp_lesions_per_scan": 0.3},
    ...         {"min_component_ml": 0.2, "dice_with_blood": 0.71, "fp_lesions_per_scan": 0.2}]
    >>> choose_min_component_ml(rows, 0.2)
    0.1
    >>> choose_min_component_ml(rows, 0.2, max_fp_per_scan=0.1)
    0.2
    """
    dice_tolerance, _ = check_tolerances(dice_tolerance, 0.0)
    max_fp_per_scan = check_fp_budget(max_fp_per_scan)
    by_value = {float(r["min_component_ml"]): r for r in summary}
    if float(reference_ml) not in by_value:
        raise InputError(f"the sweep needs the run's own minimum ({reference_ml:g} mL) as its reference")
    base_dice = by_value[float(reference_ml)]["dice_with_blood"]
    for value in sorted(by_value):
        row = by_value[value]
        dice_ok = not math.isfinite(base_dice) or row["dice_with_blood"] >= base_dice - float(dice_tolerance) - 1e-12
        if dice_ok and row["fp_lesions_per_scan"] <= float(max_fp_per_scan) + 1e-12:
            return value
    return float(reference_ml)
