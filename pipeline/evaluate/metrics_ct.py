"""CT-level metrics: operating point, ROC/PR AUC, RSNA log loss, calibration; weighted for the bootstrap.

Every metric exists in two forms: a plain one on arrays (``binary_metrics``, ``roc_auc``, ...) and
a weighted one taking a ``(B, n)`` matrix of study multiplicities (see :mod:`.bootstrap`) that
computes all ``B`` resamples at once. The plain form is the weighted one with ``W = 1``.

Definitions (``positive = score >= threshold``, as in :mod:`.decision`):

* sensitivity TP/(TP+FN), specificity TN/(TN+FP), PPV TP/(TP+FP), NPV TN/(TN+FN), accuracy,
  F1 = 2TP/(2TP+FP+FN). A ratio with a zero denominator is NaN with a reason (e.g. sensitivity
  without positive cases), never an error.
* ROC AUC: rank-based (Mann-Whitney) with ties counted 1/2; equals MONAI's ``ROCAUCMetric``.
  NaN when only one class is present.
* PR AUC: average precision, step-wise (``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds,
  tied scores forming one step); NaN without positives. With all scores equal it is the
  prevalence and ROC AUC is 0.5.
* RSNA weighted multi-label log loss: ``sum_ij w_j bce_ij / sum_ij w_j`` with weights
  any = 2, subtypes = 1, probabilities clipped to ``[eps, 1 - eps]`` (``eps = 1e-15``).
* Calibration: equal-width bins on ``[0, 1]`` (a probability of exactly 1 goes into the last bin);
  Brier = mean (p - y)^2; ECE = sum_b n_b/N |mean(y)_b - mean(p)_b|.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ichct.pipeline.evaluate.bootstrap import resample_weights, summarize
from ichct.pipeline.decision import UNCALIBRATED_RULES, DecisionRule
from ichct.pipeline.core.labels import LABEL_NAMES

__all__ = [
    "RSNA_WEIGHTS",
    "LOG_LOSS_EPS",
    "binary_metrics",
    "weighted_binary_metrics",
    "roc_auc",
    "roc_auc_known_labels",
    "average_precision",
    "weighted_auc_ap",
    "roc_curve",
    "pr_curve",
    "curve_bands",
    "rsna_log_loss",
    "rsna_row_losses",
    "binary_log_loss",
    "reliability_curve",
    "brier_score",
    "expected_calibration_error",
    "weighted_calibration",
    "degenerate_reasons",
    "ct_metric_fn",
    "rsna_metric_fn",
    "ct_level_metrics",
    "rule_threshold",
    "reader_metrics",
    "reader_metric_fn",
]

RSNA_WEIGHTS: tuple[float, ...] = (2.0, 1.0, 1.0, 1.0, 1.0, 1.0)
LOG_LOSS_EPS = 1e-15
OPERATING_METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "f1")
#: Why the metrics at an operating point of a rule without a threshold are undefined.
NO_THRESHOLD_REASON = "no threshold was given or chosen on validation predictions for this rule (AUCs need none)"


def _xy(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.shape} and {y.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0/1 or bool")
    return s, y.astype(bool)


def _w(weights: Any, n: int) -> np.ndarray:
    if weights is None:
        return np.ones((1, n))
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if w.shape[1] != n:
        raise ValueError(f"weights have {w.shape[1]} columns for {n} studies")
    return w


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


# --------------------------------------------------------------------------------------------
# Operating point
# --------------------------------------------------------------------------------------------


def weighted_binary_metrics(labels: Any, calls: Any, weights: Any = None) -> dict[str, np.ndarray]:
    """Confusion counts and ratios for every row of ``weights`` (``(B,)`` arrays)."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    c = np.asarray(calls).reshape(-1).astype(bool)
    w = _w(weights, y.size)
    tp, fp = w @ (y & c), w @ (~y & c)
    fn, tn = w @ (y & ~c), w @ (~y & ~c)
    return {
        "sensitivity": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "ppv": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "accuracy": _div(tp + tn, tp + tn + fp + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def degenerate_reasons(labels: Any, calls: Any | None = None) -> dict[str, str]:
    """Why metrics are undefined on this data: ``{metric: reason}`` (empty when all are defined)."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    out: dict[str, str] = {}
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0:
        for m in ("sensitivity", "roc_auc", "pr_auc"):
            out[m] = "no positive cases"
    if n_neg == 0:
        out["specificity"] = "no negative cases"
        out["roc_auc"] = "no negative cases" if n_pos else "no cases"
    if calls is not None:
        c = np.asarray(calls).reshape(-1).astype(bool)
        if not c.any():
            out["ppv"] = "no positive calls"
        if c.all():
            out["npv"] = "no negative calls"
        if n_pos == 0 and not c.any():
            out["f1"] = "no positive cases and no positive calls"
    return out


def binary_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV, accuracy, F1 and counts at ``score >= threshold``."""
    s, y = _xy(scores, labels)
    m = weighted_binary_metrics(y, s >= threshold)
    return {k: float(v[0]) for k, v in m.items()}


# --------------------------------------------------------------------------------------------
# ROC / PR
# --------------------------------------------------------------------------------------------


def _grouped(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores ascending and the positive / negative weight at each: ``(U,)``, ``(B, U)`` x2."""
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    wy = w[:, order] * y[order]
    wn = w[:, order] * ~y[order]
    return ss[starts], np.add.reduceat(wy, starts, axis=1), np.add.reduceat(wn, starts, axis=1)


def weighted_auc_ap(scores: Any, labels: Any, weights: Any = None) -> dict[str, np.ndarray]:
    """ROC AUC (ties = 1/2) and average precision for every row of ``weights``."""
    s, y = _xy(scores, labels)
    w = _w(weights, s.size)
    if s.size == 0:
        nan = np.full(w.shape[0], np.nan)
        return {"roc_auc": nan, "pr_auc": nan.copy()}
    _, pg, ng = _grouped(s, y, w)
    n_pos, n_neg = pg.sum(axis=1), ng.sum(axis=1)
    neg_below = np.cumsum(ng, axis=1) - ng
    auc = _div((pg * (neg_below + 0.5 * ng)).sum(axis=1), n_pos * n_neg)
    pd, nd = pg[:, ::-1], ng[:, ::-1]
    tp, fp = np.cumsum(pd, axis=1), np.cumsum(nd, axis=1)
    prec = _div(tp, tp + fp)
    ap = _div(np.nansum(pd * prec, axis=1), n_pos)
    return {"roc_auc": auc, "pr_auc": ap}


def roc_auc(scores: Any, labels: Any) -> float:
    """Rank-based ROC AUC (ties count 1/2); NaN when only one class is present."""
    return float(weighted_auc_ap(scores, labels)["roc_auc"][0])


def roc_auc_known_labels(scores: Any, labels: Any) -> float:
    """:func:`roc_auc` over the cases whose label is known, as training validates.

    Parameters
    ----------
    scores
        One score per case.
    labels
        One label per case: ``< 0`` unknown (left out), ``0`` negative, ``> 0`` positive.

    Returns
    -------
    float
        The ROC AUC (ties count 1/2); NaN when a class is missing among the known labels or a
        kept score is NaN (a diverged network validates as NaN instead of failing the run).

    Examples
    --------
    >>> roc_auc_known_labels([0.9, 0.1, 0.3], [1, 0, -1])
    1.0
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    keep = y >= 0
    s, y = s[keep], y[keep] > 0
    if np.isnan(s).any():
        return float("nan")
    return roc_auc(s, y)


def average_precision(scores: Any, labels: Any) -> float:
    """Step-wise average precision (area under the PR curve); NaN without positives."""
    return float(weighted_auc_ap(scores, labels)["pr_auc"][0])


def roc_curve(scores: Any, labels: Any) -> dict[str, np.ndarray]:
    """``{"fpr", "tpr", "thresholds"}`` from (0, 0) (threshold +inf) over the distinct scores."""
    s, y = _xy(scores, labels)
    u, pg, ng = _grouped(s, y, np.ones((1, s.size)))
    tp, fp = np.cumsum(pg[0, ::-1]), np.cumsum(ng[0, ::-1])
    tpr = _div(np.r_[0.0, tp], np.full(tp.size + 1, tp[-1] if tp.size else 0.0))
    fpr = _div(np.r_[0.0, fp], np.full(fp.size + 1, fp[-1] if fp.size else 0.0))
    return {"fpr": fpr, "tpr": tpr, "thresholds": np.r_[np.inf, u[::-1]]}


def pr_curve(scores: Any, labels: Any) -> dict[str, np.ndarray]:
    """``{"recall", "precision", "thresholds"}`` over the distinct scores, highest first."""
    s, y = _xy(scores, labels)
    u, pg, ng = _grouped(s, y, np.ones((1, s.size)))
    tp, fp = np.cumsum(pg[0, ::-1]), np.cumsum(ng[0, ::-1])
    recall = _div(tp, np.full(tp.size, tp[-1] if tp.size else 0.0))
    return {"recall": recall, "precision": _div(tp, tp + fp), "thresholds": u[::-1]}


def curve_bands(
    scores: Any, labels: Any, weights: np.ndarray, grid_size: int = 101, alpha: float = 0.05
) -> dict[str, np.ndarray]:
    """Pointwise bootstrap bands: TPR at fixed FPR and precision at fixed recall, per resample.

    Returns ``{"grid", "tpr_low", "tpr_high", "precision_low", "precision_high"}`` (NaN rows of
    resamples lacking a class are ignored).
    """
    s, y = _xy(scores, labels)
    grid = np.linspace(0.0, 1.0, grid_size)
    _, pg, ng = _grouped(s, y, _w(weights, s.size))
    tp, fp = np.cumsum(pg[:, ::-1], axis=1), np.cumsum(ng[:, ::-1], axis=1)
    tprs, precs = [], []
    for b in range(tp.shape[0]):
        P, N = tp[b, -1], fp[b, -1]
        if P <= 0 or N <= 0:
            continue
        tprs.append(np.interp(grid, np.r_[0.0, fp[b] / N], np.r_[0.0, tp[b] / P]))
        rec = tp[b] / P
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.nan_to_num(tp[b] / (tp[b] + fp[b]), nan=0.0)  # groups absent from the resample
        # precision at recall r: best precision reachable at recall >= r (interpolated PR curve)
        env = np.maximum.accumulate(prec[::-1])[::-1]
        idx = np.searchsorted(rec, grid, side="left").clip(max=rec.size - 1)
        precs.append(env[idx])
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    nan = np.full(grid.size, np.nan)
    tl, th = np.percentile(np.array(tprs), q, axis=0) if tprs else (nan, nan)
    pl, ph = np.percentile(np.array(precs), q, axis=0) if precs else (nan, nan)
    return {"grid": grid, "tpr_low": tl, "tpr_high": th, "precision_low": pl, "precision_high": ph}


# --------------------------------------------------------------------------------------------
# Log loss and calibration
# --------------------------------------------------------------------------------------------


def _bce(p: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def rsna_row_losses(
    probs: Any, labels: Any, weights: Sequence[float] = RSNA_WEIGHTS, eps: float = LOG_LOSS_EPS
) -> np.ndarray:
    """Per-row weighted log loss ``sum_j w_j bce_ij / sum_j w_j`` of ``(N, 6)`` probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if p.ndim != 2 or p.shape != y.shape or p.shape[1] != w.size:
        raise ValueError(f"probs and labels must both be (N, {w.size}), got {p.shape} and {y.shape}")
    if np.isnan(p).any() or p.min(initial=0) < 0 or p.max(initial=0) > 1:
        raise ValueError("probabilities must lie in [0, 1] (no NaN)")
    return (_bce(p, y, eps) * w).sum(axis=1) / w.sum()


def rsna_log_loss(
    probs: Any, labels: Any, weights: Sequence[float] = RSNA_WEIGHTS, eps: float = LOG_LOSS_EPS
) -> float:
    """RSNA 2019 weighted multi-label log loss (any = 2, subtypes = 1) over rows (slices or studies)."""
    rows = rsna_row_losses(probs, labels, weights, eps)
    return float(rows.mean()) if rows.size else float("nan")


def binary_log_loss(probs: Any, labels: Any, eps: float = LOG_LOSS_EPS) -> float:
    """Mean binary cross-entropy with clipped probabilities."""
    b = _bce(np.asarray(probs).reshape(-1), np.asarray(labels).reshape(-1), eps)
    return float(b.mean()) if b.size else float("nan")


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    if np.isnan(p).any() or p.min(initial=0) < 0 or p.max(initial=0) > 1:
        raise ValueError("calibration needs probabilities in [0, 1]")
    return np.clip((p * n_bins).astype(int), 0, n_bins - 1)


def weighted_calibration(
    probs: Any, labels: Any, weights: Any = None, n_bins: int = 10, eps: float = LOG_LOSS_EPS
) -> dict[str, np.ndarray]:
    """Brier score, ECE and binary log loss for every row of ``weights``."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    w = _w(weights, p.size)
    onehot = np.eye(n_bins)[_bins(p, n_bins)]  # (n, n_bins)
    total = w.sum(axis=1)
    gap = np.abs(w @ (onehot * (y - p)[:, None])).sum(axis=1)
    return {
        "brier": _div(w @ (p - y) ** 2, total),
        "ece": _div(gap, total),
        "log_loss": _div(w @ _bce(p, y, eps), total),
    }


def brier_score(probs: Any, labels: Any) -> float:
    """Mean squared difference between probability and 0/1 outcome."""
    return float(weighted_calibration(probs, labels)["brier"][0])


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 10) -> float:
    """ECE over ``n_bins`` equal-width bins."""
    return float(weighted_calibration(probs, labels, n_bins=n_bins)["ece"][0])


def reliability_curve(probs: Any, labels: Any, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Per equal-width bin: ``{"bin_low", "bin_high", "mean_predicted", "fraction_positive", "count"}``.

    Empty bins have count 0 and NaN means.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    b = _bins(p, n_bins)
    count = np.bincount(b, minlength=n_bins).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    return {
        "bin_low": edges[:-1],
        "bin_high": edges[1:],
        "mean_predicted": _div(np.bincount(b, p, minlength=n_bins), count),
        "fraction_positive": _div(np.bincount(b, y, minlength=n_bins), count),
        "count": count,
    }


# --------------------------------------------------------------------------------------------
# Metric functions on the per-study table (for the bootstrap)
# --------------------------------------------------------------------------------------------


def ct_metric_fn(
    subtype: str, rule_key: str, threshold: float | None, probabilistic: bool | None = None, n_bins: int = 10
):
    """Metric function over the per-study table for one subtype and one rule.

    Reads columns ``label:<subtype>`` and ``score:<rule_key>:<subtype>``; returns the operating
    point metrics at ``threshold`` (none when it is None), ``roc_auc``, ``pr_auc`` and, for
    probability scores (``probabilistic``; default: all scores in [0, 1] and the rule not one of
    :data:`~ichct.pipeline.decision.UNCALIBRATED_RULES`: a volume, a peak voxel probability or its
    mean with a slice score, no probability of the study), ``brier``, ``ece`` and ``log_loss``.
    """

    def fn(table: Mapping[str, np.ndarray], w: np.ndarray) -> dict[str, np.ndarray]:
        y = np.asarray(table[f"label:{subtype}"]).astype(bool)
        s = np.asarray(table[f"score:{rule_key}:{subtype}"], dtype=np.float64)
        out: dict[str, np.ndarray] = {}
        if threshold is not None:
            out = {k: v for k, v in weighted_binary_metrics(y, s >= threshold, w).items() if k in OPERATING_METRICS}
        out.update(weighted_auc_ap(s, y, w))
        prob = probabilistic
        if prob is None:
            prob = rule_key not in UNCALIBRATED_RULES and bool(s.size) and s.min() >= 0 and s.max() <= 1
        if prob:
            out.update(weighted_calibration(s, y, w, n_bins=n_bins))
        return out

    return fn


def rsna_metric_fn(rule_key: str, subtypes: Sequence[str] = LABEL_NAMES):
    """Study-level RSNA log loss of ``score:<rule_key>:*`` and, when the table has the columns
    ``slice_ll_sum`` / ``n_slices`` (sum of per-slice RSNA row losses, slice count), the
    slice-level one (pooled over all slices of the resampled studies)."""

    def fn(table: Mapping[str, np.ndarray], w: np.ndarray) -> dict[str, np.ndarray]:
        p = np.stack([np.asarray(table[f"score:{rule_key}:{s}"], dtype=np.float64) for s in subtypes], axis=1)
        y = np.stack([np.asarray(table[f"label:{s}"], dtype=np.float64) for s in subtypes], axis=1)
        rows = rsna_row_losses(p, y)
        out = {"rsna_log_loss_study": _div(w @ rows, w.sum(axis=1))}
        if "slice_ll_sum" in table and "n_slices" in table:
            out["rsna_log_loss_slice"] = _div(
                w @ np.asarray(table["slice_ll_sum"], dtype=np.float64),
                w @ np.asarray(table["n_slices"], dtype=np.float64),
            )
        return out

    return fn


def reader_metric_fn(subtype: str, reader: str):
    """Sensitivity and specificity of column ``reader:<reader>:<subtype>`` (binary calls)."""

    def fn(table: Mapping[str, np.ndarray], w: np.ndarray) -> dict[str, np.ndarray]:
        y = np.asarray(table[f"label:{subtype}"]).astype(bool)
        c = np.asarray(table[f"reader:{reader}:{subtype}"]).astype(bool)
        m = weighted_binary_metrics(y, c, w)
        return {"sensitivity": m["sensitivity"], "specificity": m["specificity"]}

    return fn


def rule_threshold(rule: DecisionRule | None, subtype: str) -> float | None:
    """The rule's threshold for ``subtype``; None without a rule or a threshold for that subtype
    (its metrics at an operating point are then undefined).

    Examples
    --------
    >>> rule_threshold(DecisionRule("max", threshold={"any": 0.4}), "any"), rule_threshold(None, "any")
    (0.4, None)
    """
    if rule is None:
        return None
    try:
        return rule.threshold_for(subtype)
    except KeyError:
        return None


def _undefined(reason: str) -> dict[str, Any]:
    return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n_boot_valid": 0,
            "reason": reason}


def _subtype_rule_metrics(cols: Mapping[str, np.ndarray], st: str, key: str, thr: float | None, ones: np.ndarray,
                          weights: np.ndarray) -> dict[str, Any]:
    """Every CT-level metric of one subtype under one rule (point value, bootstrap CI, reasons)."""
    y, col = cols[f"label:{st}"], f"score:{key}:{st}"
    fn = ct_metric_fn(st, key, thr)
    point = fn(cols, ones)
    boot = fn(cols, weights)
    reasons = degenerate_reasons(y, None if thr is None else cols[col] >= thr)
    res: dict[str, Any] = {}
    for m in point:
        res[m] = summarize(float(point[m][0]), boot[m])
        if not np.isfinite(res[m]["value"]):
            res[m]["reason"] = reasons.get(m, "undefined on these data")
    if thr is None:
        for m in OPERATING_METRICS:
            res[m] = _undefined(NO_THRESHOLD_REASON)
        res["threshold"] = {"value": None, "ci_low": None, "ci_high": None, "reason": NO_THRESHOLD_REASON}
    else:
        res["threshold"] = {"value": float(thr), "ci_low": None, "ci_high": None}
    return res


def ct_level_metrics(
    table: Mapping[str, Any],
    patient_keys: Sequence[Any],
    rules: Mapping[str, DecisionRule | None],
    subtypes: Sequence[str] = LABEL_NAMES,
    n_boot: int = 2000,
    seed: int = 0,
    curves: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """All CT-level metrics with patient-bootstrap CIs, and the curves for the report.

    Parameters
    ----------
    table
        Per-study table with ``label:<subtype>`` and ``score:<rule_key>:<subtype>`` columns.
    rules
        ``{rule_key: DecisionRule}``; the rule's threshold for each subtype is the operating point.
        A rule of None, or one without a threshold for a subtype, has its threshold-free metrics
        (ROC/PR AUC, calibration) computed and the others undefined (:data:`NO_THRESHOLD_REASON`).

    Returns
    -------
    (ct_level, curves)
        ``ct_level[subtype][rule_key][metric] = {"value", "ci_low", "ci_high", ...}`` (plus
        ``ct_level["all"][rule_key]`` with the RSNA log losses when all six subtypes are scored);
        ``curves[subtype][rule_key] = {"roc", "pr", "roc_band", "reliability"}``.
    """
    cols = {k: np.asarray(v) for k, v in table.items()}
    n = len(patient_keys)
    weights = resample_weights(patient_keys, n_boot, seed)
    ones = np.ones((1, n))
    out: dict[str, Any] = {}
    crv: dict[str, Any] = {}
    for st in subtypes:
        y = cols.get(f"label:{st}")
        if y is None:
            continue
        for key, rule in rules.items():
            col = f"score:{key}:{st}"
            if col not in cols:
                continue
            res = _subtype_rule_metrics(cols, st, key, rule_threshold(rule, st), ones, weights)
            out.setdefault(st, {})[key] = res
            if curves:
                s = cols[col].astype(np.float64)
                entry = {"roc": roc_curve(s, y), "pr": pr_curve(s, y), "band": curve_bands(s, y, weights)}
                if key not in UNCALIBRATED_RULES and s.min() >= 0 and s.max() <= 1:
                    entry["reliability"] = reliability_curve(s, y)
                entry["auc"] = res["roc_auc"]
                entry["ap"] = res["pr_auc"]
                crv.setdefault(st, {})[key] = entry
    if all(f"label:{s}" in cols for s in LABEL_NAMES):
        for key in rules:
            if key in UNCALIBRATED_RULES or not all(f"score:{key}:{s}" in cols for s in LABEL_NAMES):
                continue
            fn = rsna_metric_fn(key)
            point, boot = fn(cols, ones), fn(cols, weights)
            out.setdefault("all", {})[key] = {m: summarize(float(point[m][0]), boot[m]) for m in point}
    return out, crv


def reader_metrics(
    table: Mapping[str, Any],
    patient_keys: Sequence[Any],
    readers: Sequence[str],
    subtypes: Sequence[str] = LABEL_NAMES,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Each reader's sensitivity and specificity with patient-bootstrap CIs.

    Reads ``reader:<reader>:<subtype>`` (0/1 calls) and ``label:<subtype>``; subtypes a reader
    did not grade are skipped. Returns ``{subtype: {reader: {"sensitivity": {...},
    "specificity": {...}}}}``, i.e. points (1 - specificity, sensitivity) for the model's ROC plot.
    """
    cols = {k: np.asarray(v) for k, v in table.items()}
    weights = resample_weights(patient_keys, n_boot, seed)
    ones = np.ones((1, len(patient_keys)))
    out: dict[str, Any] = {}
    for st in subtypes:
        for r in readers:
            if f"reader:{r}:{st}" not in cols or f"label:{st}" not in cols:
                continue
            fn = reader_metric_fn(st, r)
            point, boot = fn(cols, ones), fn(cols, weights)
            reasons = degenerate_reasons(cols[f"label:{st}"])
            res = {}
            for m in point:
                res[m] = summarize(float(point[m][0]), boot[m])
                if not np.isfinite(res[m]["value"]):
                    res[m]["reason"] = reasons.get(m, "undefined on these data")
            out.setdefault(st, {})[r] = res
    return out
