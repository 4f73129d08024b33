"""Segmentation metrics per study (Dice, HD95, ASSD, volumes, lesion detection) and their summaries.

Per study and per class (``"any"`` = all blood labels > 0; with a 6-class label map also each
subtype, label ``i`` = ``LABEL_NAMES[i]``):

``dice``
    Equal to MONAI ``DiceMetric(ignore_empty=False)`` (computed with NumPy for speed).
    **Convention:** reference and prediction both empty -> 1.0 (flagged ``dice_empty_empty = 1``
    and counted in the summary); exactly one empty -> 0.0. The summary reports the mean with this convention, ``dice_nonempty``, the
    mean over studies where at least one of the two masks is non-empty, and ``dice_positive``,
    the mean over studies whose reference has blood (the usual "Dice on positive cases"; false
    positives on negative studies are counted by ``fp_per_scan`` and the CT-level metrics).
``hd95_mm`` / ``assd_mm``
    MONAI ``compute_hausdorff_distance(percentile=95)`` (symmetric: max of both directed 95th
    percentiles) and ``compute_average_surface_distance(symmetric=True)`` in mm using the voxel
    spacing. Undefined (NaN) when either mask is empty; NaN studies are excluded from the means
    and counted (``n_hd95_undefined``).
``vol_true_ml`` / ``vol_pred_ml``
    Voxel count x voxel volume. Volume error = pred - true (mL); relative error = error / true
    (only where true > 0). Bland-Altman: bias = mean error, 95 % limits = bias +- 1.96 SD
    (SD with n - 1) over studies.
lesions
    Connected components of at least a minimum volume, the same definition for reference and
    prediction (:class:`~ichct.pipeline.evaluate.lesions.LesionDefinition`; default 26-connected
    components of >= 0.05 mL). A reference lesion is detected when any predicted voxel overlaps
    it; a predicted lesion that overlaps no reference voxel is a false positive (overlap judged on
    the whole masks, see :mod:`.lesions`). Lesion sensitivity = detected / reference lesions pooled
    over studies (a ratio of sums, also in each bootstrap resample); false positives per scan =
    mean over studies.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ichct.pipeline.evaluate.bootstrap import resample_weights, summarize
from ichct.pipeline.evaluate.lesions import DEFAULT_LESIONS, LesionDefinition, lesion_counts
from ichct.pipeline.core.labels import LABEL_NAMES

__all__ = [
    "SEG_CASE_FIELDS",
    "class_masks",
    "dice",
    "surface_distances",
    "lesion_detection",
    "segmentation_case_metrics",
    "seg_metric_fn",
    "bland_altman",
    "segmentation_summary",
]

SEG_CASE_FIELDS: tuple[str, ...] = (
    "dice", "dice_empty_empty", "hd95_mm", "assd_mm", "vol_true_ml", "vol_pred_ml",
    "vol_err_ml", "vol_rel_err", "n_true_lesions", "n_detected_lesions", "n_pred_lesions", "n_fp_lesions",
)


def class_masks(labels: Any, num_classes: int) -> dict[str, np.ndarray]:
    """Boolean masks ``{"any": labels > 0, subtype: labels == i ...}`` of a label map."""
    arr = np.asarray(labels)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if num_classes not in (2, len(LABEL_NAMES)):
        raise ValueError(f"num_classes must be 2 or {len(LABEL_NAMES)}, got {num_classes}")
    out = {"any": arr > 0}
    if num_classes == len(LABEL_NAMES):
        for i, name in enumerate(LABEL_NAMES[1:], start=1):
            out[name] = arr == i
    return out


def _t(mask: np.ndarray):
    import torch

    return torch.as_tensor(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def dice(pred: Any, true: Any) -> tuple[float, bool]:
    """Dice ``2|P & T| / (|P| + |T|)`` of two binary masks; ``(1.0, True)`` when both are empty.

    Computed with NumPy (MONAI's ``compute_dice`` on CPU tensors is ~100x slower on these sizes);
    equal to MONAI ``DiceMetric(include_background=True, ignore_empty=False)``, including the
    empty conventions (tested).
    """
    p, t = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {t.shape}")
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if denom == 0:
        return 1.0, True
    return 2.0 * int(np.count_nonzero(p & t)) / denom, False


def surface_distances(pred: Any, true: Any, spacing: Sequence[float]) -> tuple[float, float]:
    """``(hd95_mm, assd_mm)`` (MONAI, with spacing); NaN when either mask is empty."""
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    p, t = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if not p.any() or not t.any():
        return float("nan"), float("nan")
    sp = [float(s) for s in spacing]
    # crop to the bounding box of both masks plus one empty voxel: the surfaces and their distances
    # are unchanged, the distance transforms much smaller
    idx = np.argwhere(p | t)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = idx.max(axis=0) + 2
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    p, t = np.pad(p[box], 1), np.pad(t[box], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(_t(p), _t(t), include_background=True, percentile=95, spacing=sp)
        asd = compute_average_surface_distance(_t(p), _t(t), include_background=True, symmetric=True, spacing=sp)
    return float(hd.reshape(-1)[0]), float(asd.reshape(-1)[0])


def lesion_detection(pred: Any, true: Any, connectivity: int = 1, *, lesions: LesionDefinition | None = None,
                     voxel_volume_ml: float | None = None) -> dict[str, int]:
    """``{"n_true_lesions", "n_detected_lesions", "n_pred_lesions", "n_fp_lesions"}`` (overlap = hit).

    With ``lesions`` (and ``voxel_volume_ml`` for a minimum volume): that lesion definition
    (:func:`~ichct.pipeline.evaluate.lesions.lesion_counts`). Without: every component of
    ``connectivity`` (the rank of :func:`scipy.ndimage.generate_binary_structure`: 1 = 6
    neighbours in 3D ... 3 = 26), of any size, as before the lesion definition existed.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((3, 3, 3), bool)
    >>> m[0, 0, 0] = m[1, 1, 1] = True
    >>> lesion_detection(m, m)["n_true_lesions"], lesion_detection(m, m, 3)["n_true_lesions"]
    (2, 1)
    """
    if lesions is None:
        if connectivity not in (1, 2, 3):
            raise ValueError(f"connectivity must be 1, 2 or 3, got {connectivity}")
        lesions = LesionDefinition((6, 18, 26)[connectivity - 1], 0.0)
    return lesion_counts(pred, true, lesions, voxel_volume_ml)


def segmentation_case_metrics(
    pred_labels: Any,
    true_labels: Any,
    spacing: Sequence[float],
    num_classes: int,
    connectivity: int | None = None,
    surface: bool = True,
    voxel_volume_ml: float | None = None,
    lesions: LesionDefinition | None = None,
) -> dict[str, dict[str, float]]:
    """All per-study segmentation metrics: ``{class: {field: value}}`` (fields :data:`SEG_CASE_FIELDS`).

    ``pred_labels`` and ``true_labels`` are label maps on the same grid, ``spacing`` the voxel
    size in mm along the same axes. ``surface=False`` skips HD95/ASSD (NaN). ``voxel_volume_ml``
    overrides the voxel volume (default the product of ``spacing``; pass ``|det(affine)|`` / 1000
    for a sheared grid). ``lesions`` is what the lesion counts count (default
    :data:`~ichct.pipeline.evaluate.lesions.DEFAULT_LESIONS`, 26-connected components of >= 0.05
    mL); the older ``connectivity`` (scipy rank 1-3, instead of ``lesions``) counts every component.
    """
    if connectivity is not None and lesions is not None:
        raise ValueError("give lesions or connectivity, not both")
    pm, tm = class_masks(pred_labels, num_classes), class_masks(true_labels, num_classes)
    if pm["any"].shape != tm["any"].shape:
        raise ValueError(f"prediction {pm['any'].shape} and reference {tm['any'].shape} differ in shape")
    voxel_ml = (float(voxel_volume_ml) if voxel_volume_ml is not None
                else float(np.prod(np.asarray(spacing, dtype=np.float64)) / 1000.0))
    if connectivity is None and lesions is None:
        lesions = DEFAULT_LESIONS
    out: dict[str, dict[str, float]] = {}
    for name in pm:
        p, t = pm[name], tm[name]
        d, ee = dice(p, t)
        hd, asd = surface_distances(p, t, spacing) if surface else (float("nan"), float("nan"))
        vt, vp = float(t.sum() * voxel_ml), float(p.sum() * voxel_ml)
        row = {
            "dice": d, "dice_empty_empty": float(ee), "hd95_mm": hd, "assd_mm": asd,
            "vol_true_ml": vt, "vol_pred_ml": vp, "vol_err_ml": vp - vt,
            "vol_rel_err": (vp - vt) / vt if vt > 0 else float("nan"),
        }
        counts = lesion_detection(p, t, connectivity or 1, lesions=lesions, voxel_volume_ml=voxel_ml)
        row.update({k: float(v) for k, v in counts.items()})
        out[name] = row
    return out


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _wmean(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    return _div(w @ np.where(ok, x, 0.0), w @ ok)


def seg_metric_fn(cls: str):
    """Metric function (see :mod:`.bootstrap`) over ``seg:<cls>:<field>`` columns of the table."""

    def fn(table: Mapping[str, np.ndarray], w: np.ndarray) -> dict[str, np.ndarray]:
        col = {f: np.asarray(table[f"seg:{cls}:{f}"], dtype=np.float64) for f in SEG_CASE_FIELDS}
        total = w.sum(axis=1)
        ee = col["dice_empty_empty"] > 0
        pos = col["vol_true_ml"] > 0
        err = col["vol_err_ml"]
        bias = _div(w @ err, total)
        var = _div(w @ err**2 - total * bias**2, total - 1)
        sd = np.sqrt(np.clip(var, 0, None))
        return {
            "dice": _div(w @ col["dice"], total),
            "dice_nonempty": _div(w @ (col["dice"] * ~ee), w @ ~ee),
            "dice_positive": _div(w @ (col["dice"] * pos), w @ pos),
            "hd95_mm": _wmean(w, col["hd95_mm"]),
            "assd_mm": _wmean(w, col["assd_mm"]),
            "abs_volume_error_ml": _div(w @ np.abs(err), total),
            "relative_volume_error": _wmean(w, col["vol_rel_err"]),
            "bland_altman_bias_ml": bias,
            "bland_altman_loa_low_ml": bias - 1.96 * sd,
            "bland_altman_loa_high_ml": bias + 1.96 * sd,
            "lesion_sensitivity": _div(w @ col["n_detected_lesions"], w @ col["n_true_lesions"]),
            "fp_per_scan": _div(w @ col["n_fp_lesions"], total),
        }

    return fn


def bland_altman(vol_true: Any, vol_pred: Any) -> dict[str, float]:
    """``{"bias", "sd", "loa_low", "loa_high"}`` of ``pred - true`` (SD with n - 1)."""
    d = np.asarray(vol_pred, dtype=np.float64) - np.asarray(vol_true, dtype=np.float64)
    bias = float(d.mean()) if d.size else float("nan")
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def segmentation_summary(
    table: Mapping[str, Any],
    patient_keys: Sequence[Any],
    classes: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """``{class: {metric: {"value", "ci_low", "ci_high", ...}}}`` with patient-bootstrap CIs.

    Also reports the counts ``n_studies``, ``n_empty_empty`` (Dice 1.0 by convention) and
    ``n_hd95_undefined`` (excluded from the HD95/ASSD means) without intervals.
    """
    cols = {k: np.asarray(v) for k, v in table.items()}
    if classes is None:
        classes = [c for c in LABEL_NAMES if f"seg:{c}:dice" in cols]
    weights = resample_weights(patient_keys, n_boot, seed)
    ones = np.ones((1, len(patient_keys)))
    out: dict[str, Any] = {}
    for c in classes:
        fn = seg_metric_fn(c)
        point, boot = fn(cols, ones), fn(cols, weights)
        res: dict[str, Any] = {m: summarize(float(point[m][0]), boot[m]) for m in point}
        for m, v in res.items():
            if not np.isfinite(v["value"]):
                v["reason"] = {
                    "hd95_mm": "every study has an empty reference or prediction",
                    "assd_mm": "every study has an empty reference or prediction",
                    "lesion_sensitivity": "no reference lesions",
                    "relative_volume_error": "no study with reference blood",
                    "dice_nonempty": "all studies empty in reference and prediction",
                    "dice_positive": "no study with reference blood",
                }.get(m, "undefined on these data")
        hd = np.asarray(cols[f"seg:{c}:hd95_mm"], dtype=np.float64)
        counts = {
            "n_studies": len(patient_keys),
            "n_empty_empty": int((np.asarray(cols[f"seg:{c}:dice_empty_empty"]) > 0).sum()),
            "n_hd95_undefined": int((~np.isfinite(hd)).sum()),
        }
        for k, v in counts.items():
            res[k] = {"value": float(v), "ci_low": None, "ci_high": None}
        out[c] = res
    return out
