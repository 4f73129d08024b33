"""Evaluation report: ``metrics.json``, ``per_case.csv``, ``report.md`` and PNG plots, written atomically.

:func:`assemble_metrics` builds the ``metrics.json`` dict (see :mod:`.metrics_schema`);
:func:`write_report` writes it with the per-case table, a Markdown report whose tables read
``value [95% CI]`` (ready to paste into a paper) and the plots: ROC and PR curves with bootstrap
bands per subtype (reader operating points on the ROC), reliability diagram, Bland-Altman and
volume scatter. When ``allow_overlap`` is true the first line of ``report.md`` says that the
evaluation includes training patients. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ichct.pipeline.core.atomic import atomic_path
from ichct.pipeline.evaluate.metrics_schema import validate_metrics

__all__ = ["OVERLAP_WARNING", "SHIPPED_MODELS_NOTE", "assemble_metrics", "format_metric", "render_markdown",
           "write_report"]

OVERLAP_WARNING = (
    "**WARNING: this evaluation includes training patients (allow_overlap=true); "
    "the metrics are optimistic and not a held-out estimate.**"
)

#: The line under the title of ``report.md`` when the shipped demonstration bundles were evaluated.
SHIPPED_MODELS_NOTE = (
    "Models: the demonstration bundles that ship with ichct (models_source: shipped), trained on synthetic "
    "data only and not validated on real scans."
)

_CT_COLUMNS = ("sensitivity", "specificity", "ppv", "npv", "f1", "roc_auc", "pr_auc", "brier", "ece")
_SEG_COLUMNS = (
    "dice_positive", "dice", "dice_nonempty", "hd95_mm", "abs_volume_error_ml", "bland_altman_bias_ml",
    "bland_altman_loa_low_ml", "bland_altman_loa_high_ml", "lesion_sensitivity", "fp_per_scan",
)


def assemble_metrics(
    *,
    model: Mapping[str, Any],
    manifest: Mapping[str, Any],
    split: str,
    patient_keys: Sequence[Any],
    ct_level: Mapping[str, Any],
    segmentation: Mapping[str, Any],
    allow_overlap: bool,
    readers: Mapping[str, Any] | None = None,
    n_boot: int | None = None,
    seed: int | None = None,
    warnings: Sequence[str] = (),
    models_source: str | None = None,
    lesion_definition: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``metrics.json`` dict (validated, NaN -> ``None``); ``warnings`` head the Markdown report.

    ``models_source`` (``"user"`` or ``"shipped"``, see :mod:`ichct.pipeline.models.shipped_models`) is
    written when given; with ``"shipped"`` the Markdown report says under its title that the shipped
    demonstration bundles were evaluated. ``lesion_definition``
    (:meth:`ichct.pipeline.evaluate.lesions.LesionDefinition.to_dict`), when given, is written and
    printed under the segmentation table."""
    doc: dict[str, Any] = {
        "model": dict(model),
        "manifest": dict(manifest),
        "split": str(split),
        "n_patients": len({str(k) for k in patient_keys}),
        "n_studies": len(patient_keys),
        "allow_overlap": bool(allow_overlap),
        "ct_level": dict(ct_level),
        "segmentation": dict(segmentation),
    }
    if readers:
        doc["readers"] = dict(readers)
    if n_boot is not None:
        doc["n_boot"] = int(n_boot)
        doc["seed"] = seed
    if warnings:
        doc["warnings"] = [str(w) for w in warnings]
    if models_source is not None:
        doc["models_source"] = str(models_source)
    if lesion_definition is not None:
        doc["lesion_definition"] = dict(lesion_definition)
    return validate_metrics(doc)


def _num(x: Any, digits: int) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{float(x):.{digits}f}"


def format_metric(entry: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``"0.912 [0.850, 0.961]"``; ``"n/a"`` when undefined; no interval for counts."""
    if not entry:
        return ""
    value = entry.get("value")
    if value is None:
        return "n/a"
    if entry.get("ci_low") is None and entry.get("ci_high") is None:
        return _num(value, digits)
    return f"{_num(value, digits)} [{_num(entry.get('ci_low'), digits)}, {_num(entry.get('ci_high'), digits)}]"


def _undefined_notes(entries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per reason why metrics are undefined (``n/a``), naming the metrics: ``{name: entry}``."""
    by_reason: dict[str, list[str]] = {}
    for name, entry in entries.items():
        if isinstance(entry, Mapping) and entry.get("value") is None and entry.get("reason"):
            by_reason.setdefault(str(entry["reason"]), []).append(name)
    return [f"n/a ({', '.join(names)}): {reason}." for reason, names in by_reason.items()]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _external_model_lines(external: Mapping[str, Any] | None) -> list[str]:
    """What the report says under its title about another tool's predictions (none for ichct models)."""
    if not external:
        return []
    return [f"Model: external predictions (written by another tool) in `{external.get('predictions')}`; matched "
            f"by {external.get('matching')}; thresholds: {external.get('thresholds')}; trained on: "
            f"{external.get('trained_on')}.", ""]


def _lesion_lines(definition: Mapping[str, Any] | None) -> list[str]:
    """What ``report.md`` says under the segmentation table about the lesion-level metrics."""
    if not definition:
        return []
    return [f"Lesions: {definition.get('description')}, in reference and prediction alike. lesion_sensitivity = "
            "reference lesions overlapped by any predicted voxel / reference lesions, pooled over studies; "
            "fp_per_scan = predicted lesions overlapping no reference voxel, per scan.", ""]


def render_markdown(metrics: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """The Markdown report of a (JSON-safe) metrics dict."""
    lines: list[str] = []
    if metrics.get("allow_overlap"):
        lines += [OVERLAP_WARNING, ""]
    lines += [f"**Warning: {w}.**" for w in metrics.get("warnings", [])]
    if metrics.get("warnings"):
        lines += [""]
    model = metrics.get("model", {})
    lines += [
        f"# Evaluation: {model.get('name', 'model')} on split `{metrics.get('split')}`",
        "",
        f"{metrics.get('n_patients')} patients, {metrics.get('n_studies')} studies. "
        f"Values are point estimates with 95% patient-level bootstrap percentile intervals "
        f"({metrics.get('n_boot', 'n/a')} resamples).",
        "",
    ]
    if metrics.get("models_source") == "shipped":
        lines += [SHIPPED_MODELS_NOTE, ""]
    lines += _external_model_lines(model.get("external"))
    ct = metrics.get("ct_level", {})
    rule_keys = sorted({r for st in ct.values() for r in st})
    for rule in rule_keys:
        rows = []
        undefined: dict[str, Mapping[str, Any]] = {}
        for st, per_rule in ct.items():
            if st == "all" or rule not in per_rule:
                continue
            m = per_rule[rule]
            thr = m.get("threshold", {}).get("value")
            rows.append([st, _num(thr, 3)] + [format_metric(m.get(c)) for c in _CT_COLUMNS])
            undefined.update({f"{st} {c}": m.get(c) for c in _CT_COLUMNS if m.get(c)})
        if rows:
            lines += [f"## CT level, rule `{rule}`", ""]
            lines += _table(["subtype", "threshold", *_CT_COLUMNS], rows) + [""]
            notes = _undefined_notes(undefined)
            lines += notes + ([""] if notes else [])
        if rule in ct.get("all", {}):
            extra = ct["all"][rule]
            lines += [f"RSNA weighted log loss ({rule}): " + ", ".join(
                f"{k.replace('rsna_log_loss_', '')} {format_metric(v, 4)}" for k, v in extra.items()), ""]
    seg = metrics.get("segmentation", {})
    if seg:
        lines += ["## Segmentation", ""]
        rows = [[c] + [format_metric(m.get(k)) for k in _SEG_COLUMNS] +
                [format_metric(m.get("n_empty_empty"), 0), format_metric(m.get("n_hd95_undefined"), 0)]
                for c, m in seg.items()]
        lines += _table(["class", *_SEG_COLUMNS, "n_empty_empty", "n_hd95_undefined"], rows)
        lines += ["", "Dice of a study whose reference and prediction are both empty is 1.0 (counted in "
                  "n_empty_empty); HD95 is undefined when either mask is empty and such studies are "
                  "excluded from its mean (n_hd95_undefined).", ""]
        lines += _lesion_lines(metrics.get("lesion_definition"))
    readers = metrics.get("readers") or {}
    if readers:
        lines += ["## Readers", ""]
        rows = [[st, r, format_metric(m.get("sensitivity")), format_metric(m.get("specificity"))]
                for st, per in readers.items() for r, m in per.items()]
        lines += _table(["subtype", "reader", "sensitivity", "specificity"], rows) + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _per_case_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return buf.getvalue()


def _plots(metrics: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], curves: Mapping[str, Any],
           out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    written: list[str] = []
    readers = metrics.get("readers") or {}
    for st, per_rule in curves.items():
        fig, ax = plt.subplots(figsize=(5, 5))
        fig2, ax2 = plt.subplots(figsize=(5, 5))
        for rule, c in per_rule.items():
            auc = format_metric(metrics.get("ct_level", {}).get(st, {}).get(rule, {}).get("roc_auc"))
            ap = format_metric(metrics.get("ct_level", {}).get(st, {}).get(rule, {}).get("pr_auc"))
            line, = ax.step(c["roc"]["fpr"], c["roc"]["tpr"], where="post", label=f"{rule} AUC {auc}")
            band = c.get("band")
            if band is not None and np.all(np.isfinite(band["tpr_low"])):
                ax.fill_between(band["grid"], band["tpr_low"], band["tpr_high"], color=line.get_color(), alpha=0.2)
            line2, = ax2.step(c["pr"]["recall"], c["pr"]["precision"], where="post", label=f"{rule} AP {ap}")
            if band is not None and np.all(np.isfinite(band["precision_low"])):
                ax2.fill_between(band["grid"], band["precision_low"], band["precision_high"],
                                 color=line2.get_color(), alpha=0.2)
        for r, m in (readers.get(st) or {}).items():
            se, sp = m["sensitivity"], m["specificity"]
            if se.get("value") is None or sp.get("value") is None:
                continue
            xerr = [[sp["value"] - (sp["ci_low"] if sp["ci_low"] is not None else sp["value"])],
                    [(sp["ci_high"] if sp["ci_high"] is not None else sp["value"]) - sp["value"]]]
            yerr = [[se["value"] - (se["ci_low"] if se["ci_low"] is not None else se["value"])],
                    [(se["ci_high"] if se["ci_high"] is not None else se["value"]) - se["value"]]]
            ax.errorbar([1 - sp["value"]], [se["value"]], xerr=xerr[::-1], yerr=yerr, fmt="o", label=f"reader {r}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC: {st}", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize=7)
        ax2.set(xlabel="recall", ylabel="precision", title=f"PR: {st}", xlim=(0, 1), ylim=(0, 1.01))
        ax2.legend(loc="lower left", fontsize=7)
        _save(fig, out / f"roc_{st}.png")
        _save(fig2, out / f"pr_{st}.png")
        written += [f"roc_{st}.png", f"pr_{st}.png"]

    rel = [(st, rule, c["reliability"]) for st, pr in curves.items() for rule, c in pr.items() if "reliability" in c]
    if rel:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        for st, rule, r in rel:
            ok = np.asarray(r["count"]) > 0
            ax.plot(np.asarray(r["mean_predicted"])[ok], np.asarray(r["fraction_positive"])[ok], "o-", ms=3,
                    label=f"{st} / {rule}")
        ax.set(xlabel="mean predicted probability", ylabel="observed fraction positive", title="Reliability",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=6)
        _save(fig, out / "calibration.png")
        written.append("calibration.png")

    vt = [r.get("seg:any:vol_true_ml") for r in rows]
    vp = [r.get("seg:any:vol_pred_ml") for r in rows]
    if rows and all(v is not None for v in vt + vp):
        vt_a, vp_a = np.asarray(vt, dtype=float), np.asarray(vp, dtype=float)
        mean, diff = (vt_a + vp_a) / 2, vp_a - vt_a
        ba = (metrics.get("segmentation", {}).get("any") or {})
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(mean, diff, s=10)
        for key, style in (("bland_altman_bias_ml", "-"), ("bland_altman_loa_low_ml", "--"),
                           ("bland_altman_loa_high_ml", "--")):
            v = (ba.get(key) or {}).get("value")
            if v is not None:
                ax.axhline(v, color="k", ls=style, lw=0.8)
        ax.set(xlabel="mean of reference and predicted volume (mL)", ylabel="predicted - reference (mL)",
               title="Bland-Altman, any blood")
        _save(fig, out / "bland_altman.png")
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(vt_a, vp_a, s=10)
        hi = float(max(vt_a.max(initial=0), vp_a.max(initial=0), 1.0))
        ax.plot([0, hi], [0, hi], "k:", lw=0.8)
        ax.set(xlabel="reference volume (mL)", ylabel="predicted volume (mL)", title="Volume, any blood")
        _save(fig, out / "volume_scatter.png")
        written += ["bland_altman.png", "volume_scatter.png"]
    return written


def write_report(
    metrics: Mapping[str, Any],
    per_case_rows: Sequence[Mapping[str, Any]],
    curves: Mapping[str, Any],
    out_dir: str | Path,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``per_case.csv``, ``report.md`` and the plots into ``out_dir``.

    Parameters
    ----------
    metrics
        The metrics dict (:func:`assemble_metrics`); validated again here.
    per_case_rows
        One dict per study (``study_id``, ``patient_key``, labels, scores, ``seg:any:vol_*_ml`` ...).
    curves
        ``curves[subtype][rule]`` from :func:`ichct.pipeline.evaluate.metrics_ct.ct_level_metrics`.
    out_dir
        Output folder (created).

    Returns
    -------
    dict
        ``{file name: path}`` of everything written.
    """
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = validate_metrics(metrics)
    plots = _plots(doc, per_case_rows, curves, out)
    _write_text(out / "metrics.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    _write_text(out / "per_case.csv", _per_case_csv(per_case_rows))
    _write_text(out / "report.md", render_markdown(doc, plots))
    names = ["metrics.json", "per_case.csv", "report.md", *plots]
    return {n: out / n for n in names}
