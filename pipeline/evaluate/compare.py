"""Paired comparisons of ``ichct evaluate --compare``: two models, or two decision rules, on the same studies.

Differences a - b with a paired patient-level bootstrap interval and p-value
(:func:`~ichct.pipeline.evaluate.bootstrap.paired_bootstrap`):

* :func:`compare_models`: ROC/PR AUC of ``any`` per rule both models score, and the Dice of any
  blood when both segment (ichct runs or bundles, or another tool's predictions);
* :func:`compare_rules`: ROC/PR AUC, and sensitivity and specificity at each rule's own threshold,
  per subtype both rules score.

A rule without a threshold (None, or no threshold for a subtype) still has its AUCs compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision import DecisionRule
from ichct.pipeline.evaluate.metrics_ct import rule_threshold

__all__ = ["comparison_markdown", "compare_models", "compare_rules"]


def _only(fn: Any, metric: str) -> Any:
    return lambda table, w: {metric: fn(table, w)[metric]}


def _paired(fn: Any, table_a: Mapping[str, Any], table_b: Mapping[str, Any], keys: Sequence[str], metric: str,
            n_boot: int, seed: int) -> dict[str, Any]:
    """One metric's paired difference, with each side's own value as ``a`` and ``b``."""
    from ichct.pipeline.evaluate.bootstrap import paired_bootstrap

    f = _only(fn, metric)
    ones = np.ones((1, len(keys)))
    res = paired_bootstrap(f, table_a, table_b, keys, n=n_boot, seed=seed)[metric]
    res["a"], res["b"] = float(f(table_a, ones)[metric][0]), float(f(table_b, ones)[metric][0])
    return res


def compare_models(table_a: Mapping[str, Any], table_b: Mapping[str, Any], keys: Sequence[str],
                   rules_a: Mapping[str, DecisionRule | None], rules_b: Mapping[str, DecisionRule | None],
                   n_boot: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap of two models' main metrics (ROC/PR AUC of "any" per rule both score; Dice
    of any blood), keyed ``any/<rule>/<metric>`` and ``segmentation/any/dice``."""
    from ichct.pipeline.evaluate.metrics_ct import ct_metric_fn
    from ichct.pipeline.evaluate.metrics_seg import seg_metric_fn

    out: dict[str, Any] = {}
    for rule in rules_a:
        col = f"score:{rule}:any"
        if col not in table_a or col not in table_b or "label:any" not in table_a or rule not in rules_b:
            continue
        fn = ct_metric_fn("any", rule, None, probabilistic=False)
        for m in ("roc_auc", "pr_auc"):
            out[f"any/{rule}/{m}"] = _paired(fn, table_a, table_b, keys, m, n_boot, seed)
    if "seg:any:dice" in table_a and "seg:any:dice" in table_b:
        out["segmentation/any/dice"] = _paired(seg_metric_fn("any"), table_a, table_b, keys, "dice", n_boot, seed)
    return out


def compare_rules(table: Mapping[str, Any], keys: Sequence[str], rule_a: str, rule_b: str,
                  rules: Mapping[str, DecisionRule | None], n_boot: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap of two decision rules on the same studies: ROC/PR AUC and, where both have a
    threshold, sensitivity and specificity (each rule at its own threshold), per subtype both score."""
    from ichct.pipeline.evaluate.metrics_ct import ct_metric_fn

    out: dict[str, Any] = {}
    for st in LABEL_NAMES:
        col_a, col_b = f"score:{rule_a}:{st}", f"score:{rule_b}:{st}"
        if col_a not in table or col_b not in table or f"label:{st}" not in table:
            continue
        th_a, th_b = rule_threshold(rules[rule_a], st), rule_threshold(rules[rule_b], st)
        both = th_a is not None and th_b is not None
        # rule b's scores shifted onto rule a's threshold: the ranking (AUCs) and the calls at b's
        # own threshold are unchanged, so one metric function serves both tables
        table_b = dict(table)
        table_b[col_a] = np.asarray(table[col_b], dtype=np.float64) - (th_b - th_a if both else 0.0)
        fn = ct_metric_fn(st, rule_a, th_a if both else None, probabilistic=False)
        metrics = ("roc_auc", "pr_auc", "sensitivity", "specificity") if both else ("roc_auc", "pr_auc")
        for m in metrics:
            out[f"{st}/{m}"] = _paired(fn, table, table_b, keys, m, n_boot, seed)
    return out


def comparison_markdown(comp: Mapping[str, Any]) -> str:
    """The ``## Paired comparison`` section of ``report.md`` for ``metrics.json["comparisons"]``."""
    from ichct.pipeline.evaluate.metrics_schema import to_jsonable
    from ichct.pipeline.evaluate.report import format_metric

    lines = ["", "## Paired comparison", "", f"a = `{comp['a']}`, b = `{comp['b']}`; difference a - b with 95% "
             "paired patient-level bootstrap interval and two-sided p-value.", "",
             "| metric | a | b | a - b | p |", "|---|---|---|---|---|"]
    for k, v in to_jsonable(comp["metrics"]).items():
        p = v.get("p_value")
        lines.append(f"| {k} | {format_metric({'value': v.get('a'), 'ci_low': None, 'ci_high': None})} | "
                     f"{format_metric({'value': v.get('b'), 'ci_low': None, 'ci_high': None})} | "
                     f"{format_metric(v)} | {'n/a' if p is None or not math.isfinite(p) else f'{p:.3f}'} |")
    return "\n".join(lines) + "\n"
