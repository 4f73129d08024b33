"""Thresholds for CT-level calls on another tool's predictions: given, or chosen on validation.

``ichct evaluate --predictions DIR`` calls a study positive when its score reaches a threshold
(:mod:`ichct.pipeline.decision`). The thresholds are never chosen on the evaluated split; they come

* from the user, :func:`load_thresholds` (``--thresholds FILE``), in one of three JSON forms::

      {"max": 0.5, "seg_volume": 1.0}                              one threshold per rule
      {"max": {"any": 0.42, "subdural": 0.3}, "consecutive": {"any": 0.5}}   per rule and label
      {"name": "consecutive", "threshold": {...}, "k": 3, "meta": {...}}     ichct's thresholds.json

  (in the first two forms a rule's value may also be an object of
  :class:`~ichct.pipeline.decision.DecisionRule` fields: ``{"consecutive": {"threshold": 0.5,
  "k": 2}}``); an ichct ``thresholds.json`` also yields the other slice rules training chose
  thresholds for (``meta["other_rules"]``);
* or from the tool's predictions on validation studies, :func:`choose_thresholds_on_validation`
  (``--val-predictions DIR``), with ichct's criterion (Youden's J by default, as training does),
  per rule and label, on the labelled studies.

Slice-rule thresholds are probabilities in ``(0, 1]``; ``seg_volume`` thresholds are predicted
blood volumes in mL (> 0). AUCs and Dice need no threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ichct.errors import InputError, read_json
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision import PROBABILITY_MAP_RULES, RULES, DecisionRule, choose_threshold
from ichct.pipeline.evaluate.external_probs import DEFAULT_RULE_K
from ichct.pipeline.models.config import DEFAULTS

logger = logging.getLogger("ichct.evaluate")

__all__ = ["DEFAULT_METHOD", "FALLBACK_PROBABILITY", "METHODS", "MIN_THRESHOLD", "choose_thresholds_on_validation",
           "load_thresholds"]

#: ichct's criterion for choosing a threshold on validation scores (the training default).
DEFAULT_METHOD: str = str(DEFAULTS["cls"]["threshold_method"])
#: The criteria :func:`~ichct.pipeline.decision.choose_threshold` knows.
METHODS = ("youden", "sensitivity", "specificity")
#: Threshold of a slice rule for a label whose validation studies lack positives or negatives (as training).
FALLBACK_PROBABILITY = 0.5
#: The smallest threshold: 0 would call every study positive (a ``seg_volume`` threshold this low
#: calls a study positive on any predicted blood).
MIN_THRESHOLD = 1e-6


# --------------------------------------------------------------------------------------------
# Thresholds given by the user
# --------------------------------------------------------------------------------------------


def load_thresholds(path: str | Path) -> dict[str, DecisionRule]:
    """Decision rules with their thresholds from a JSON file (the forms of the module docstring).

    Returns
    -------
    dict
        ``{rule name: DecisionRule}``; ``meta["thresholds_file"]`` names the file.

    Raises
    ------
    ichct.errors.InputError
        Naming the file and the key: not JSON, not an object, an unknown rule or label, a threshold
        out of range (probabilities in (0, 1], mL > 0) or not a number.

    Examples
    --------
    >>> import json, tempfile
    >>> f = Path(tempfile.mkdtemp()) / "t.json"
    >>> _ = f.write_text(json.dumps({"max": {"any": 0.4}, "seg_volume": 2.0}))
    >>> rules = load_thresholds(f)
    >>> rules["max"].threshold_for("any"), rules["seg_volume"].threshold_for("subdural")
    (0.4, 2.0)
    """
    path = Path(path)
    data = read_json(path, "thresholds file")
    if not isinstance(data, Mapping) or not data:
        raise InputError(path, "not a thresholds file: expected a JSON object such as {\"max\": 0.5}, "
                               "{\"max\": {\"any\": 0.5}} or ichct's thresholds.json")
    if "name" in data and "threshold" in data:
        return _ichct_rules(path)
    return {str(name): _user_rule(path, str(name), value) for name, value in data.items()}


def _ichct_rules(path: Path) -> dict[str, DecisionRule]:
    """The rule of an ichct ``thresholds.json`` and the other slice rules stored beside it (not those of
    :data:`~ichct.pipeline.decision.PROBABILITY_MAP_RULES`, a segmenter's ``seg_peak``: they score
    probability maps, which other tools' predictions do not carry)."""
    stored = DecisionRule.load(path)  # InputError naming the file
    meta = {**stored.meta, "thresholds_file": str(path)}
    meta.pop("other_rules", None)
    meta.pop("other_rules_chosen_on", None)
    rules = {stored.name: DecisionRule.from_dict({**stored.to_dict(), "meta": meta})}
    other = stored.meta.get("other_rules") or {}
    if not isinstance(other, Mapping):
        raise InputError(path, "key 'meta.other_rules': not an object of {rule: {label: threshold}}")
    for name, thresholds in other.items():
        where = f"meta.other_rules.{name}"
        if name in rules or name in PROBABILITY_MAP_RULES:
            continue
        rule = _user_rule(path, str(name), thresholds, where)
        rules[str(name)] = DecisionRule(rule.name, threshold=rule.threshold, k=stored.k,
                                        meta={"chosen_on": stored.meta.get("chosen_on"), "method":
                                              stored.meta.get("method"), "thresholds_file": str(path)})
    return rules


def _user_rule(path: Path, name: str, value: Any, where: str | None = None) -> DecisionRule:
    """One rule of a user's thresholds file: a number, ``{label: number}`` or DecisionRule fields."""
    where = where or name
    if name not in RULES:
        raise InputError(path, f"key {where!r}: unknown rule; rules are {', '.join(RULES)}")
    meta = {"chosen_on": f"given in {path.name}", "thresholds_file": str(path)}
    if isinstance(value, Mapping) and "threshold" in value:
        fields = {"k": DEFAULT_RULE_K, **value, "meta": {**meta, **dict(value.get("meta") or {})}}
        if fields.setdefault("name", name) != name:
            raise InputError(path, f"key {where!r}: holds the rule {fields['name']!r}")
        try:
            return DecisionRule.from_dict(fields)
        except (TypeError, ValueError) as exc:
            raise InputError(path, f"key {where!r}: {exc}") from None
    if isinstance(value, Mapping):
        unknown = [s for s in value if s not in LABEL_NAMES]
        if unknown or not value:
            raise InputError(path, f"key {where!r}: expected a threshold per label of {', '.join(LABEL_NAMES)}"
                                   f"{f', got {unknown}' if unknown else ', got none'}")
        for label, threshold in value.items():
            _checked(path, name, threshold, f"{where}.{label}")
        return DecisionRule(name, threshold={str(s): float(t) for s, t in value.items()}, k=DEFAULT_RULE_K, meta=meta)
    return DecisionRule(name, threshold=_checked(path, name, value, where), k=DEFAULT_RULE_K, meta=meta)


def _checked(path: Path, rule: str, value: Any, where: str) -> float:
    """``value`` as a valid threshold of ``rule``; InputError naming the file and key otherwise."""
    try:
        return float(DecisionRule(rule, threshold=value).threshold)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"key {where!r}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Thresholds chosen on validation predictions
# --------------------------------------------------------------------------------------------


def _label(entry: Mapping[str, Any], label: str) -> int:
    """The study's CT-level flag (1, 0) or -1 when unknown."""
    value = (entry.get("ct_labels") or {}).get(label)
    return -1 if value is None or float(value) < 0 else int(float(value) > 0)


def _scored_labels(name: str, val_scores: Sequence[Mapping[str, Mapping[str, float]]],
                   val_entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The labels every validation study has a ``name`` score for; InputError when a study has none."""
    lacking = [str(e.get("study_uid")) for s, e in zip(val_scores, val_entries) if name not in s]
    if lacking:
        raise InputError(f"rule {name}: {len(lacking)} of {len(val_entries)} validation studies have no scores "
                         f"(first: {lacking[0]}); every validation study needs predictions")
    labels = [label for label in LABEL_NAMES if all(label in s[name] for s in val_scores)]
    if not labels:
        raise InputError(f"rule {name}: no label is scored in every validation study")
    return labels


def choose_thresholds_on_validation(val_scores: Sequence[Mapping[str, Mapping[str, float]]],
                                    val_entries: Sequence[Mapping[str, Any]], rule_names: Sequence[str], *,
                                    method: str = DEFAULT_METHOD, target: float = 0.95,
                                    k: int = DEFAULT_RULE_K) -> dict[str, DecisionRule]:
    """Choose each rule's thresholds on a tool's predictions for validation studies.

    Per rule and label (those scored in every validation study), on the studies whose CT-level
    label is known, :func:`~ichct.pipeline.decision.choose_threshold` with ``method`` (ichct's
    default, Youden's J, as training). Where the labelled studies lack positives or negatives
    (or the method finds no threshold) none is chosen: like training, a slice rule falls back to
    :data:`FALLBACK_PROBABILITY` (``meta["fallback_0.5"]``), ``seg_volume`` to "any predicted
    blood" (:data:`MIN_THRESHOLD` mL, ``meta["fallback_any_blood"]``), with the reason in
    ``meta["fallback_reasons"]`` and a warning.

    Parameters
    ----------
    val_scores
        Per validation study, ``{rule: {label: score}}`` (``StudyPrediction.scores``): probabilities
        for the slice rules, predicted blood volume in mL for ``seg_volume``.
    val_entries
        The validation manifest entries, in the same order (``ct_labels``, ``study_uid``).
    rule_names
        The rules to choose thresholds for.
    method, target
        :func:`~ichct.pipeline.decision.choose_threshold`'s criterion and its target.
    k
        Window / top-k size the slice scores were computed with.

    Returns
    -------
    dict
        ``{rule: DecisionRule}`` with a threshold per label; ``meta`` records ``chosen_on``
        ("validation predictions (N studies)"), ``method``, ``n_val`` and the labelled, positive
        counts per label.

    Examples
    --------
    >>> entries = [{"study_uid": str(i), "ct_labels": {"any": y}} for i, y in enumerate([0, 0, 1, 1])]
    >>> scores = [{"max": {"any": s}} for s in (0.1, 0.4, 0.35, 0.9)]
    >>> rule = choose_thresholds_on_validation(scores, entries, ["max"])["max"]
    >>> rule.threshold, rule.meta["chosen_on"], rule.meta["method"]
    ({'any': 0.65}, 'validation predictions (4 studies)', 'youden')
    """
    if len(val_scores) != len(val_entries):
        raise ValueError(f"{len(val_scores)} score sets for {len(val_entries)} validation entries")
    if not val_entries:
        raise InputError("no validation predictions to choose thresholds on")
    if method not in METHODS:
        raise InputError(f"threshold method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0.0 < float(target) <= 1.0:
        raise InputError(f"threshold target must lie in (0, 1], got {target}")
    out: dict[str, DecisionRule] = {}
    for name in rule_names:
        if name not in RULES:
            raise InputError(f"unknown rule {name!r}; rules are {', '.join(RULES)}")
        out[name] = _chosen_rule(name, val_scores, val_entries, method, target, k)
    return out


def _chosen_rule(name: str, val_scores: Sequence[Mapping[str, Mapping[str, float]]],
                 val_entries: Sequence[Mapping[str, Any]], method: str, target: float, k: int) -> DecisionRule:
    fallback_key = "fallback_any_blood" if name == "seg_volume" else "fallback_0.5"
    thresholds: dict[str, float] = {}
    reasons: dict[str, str] = {}
    n_labelled: dict[str, int] = {}
    n_positive: dict[str, int] = {}
    for label in _scored_labels(name, val_scores, val_entries):
        scores = np.asarray([float(s[name][label]) for s in val_scores], dtype=np.float64)
        y = np.asarray([_label(e, label) for e in val_entries])
        keep = y >= 0
        n_labelled[label], n_positive[label] = int(keep.sum()), int((y > 0).sum())
        try:
            t = choose_threshold(scores[keep], y[keep] > 0, method=method, target=target) if keep.any() else None
        except ValueError as exc:  # no positives or no negatives (the method and target are checked)
            t, reasons[label] = None, str(exc)
        if t is None:
            reasons.setdefault(label, "no study with a known label")
        elif name == "seg_volume" and t <= 0:
            t, reasons[label] = None, "the chosen volume is 0 mL (every study positive)"
        if t is None:
            t = MIN_THRESHOLD if name == "seg_volume" else FALLBACK_PROBABILITY
            logger.warning("rule %s, %s: no threshold can be chosen on the validation predictions (%s); using %g",
                           name, label, reasons[label], t)
        thresholds[label] = t if name == "seg_volume" else float(min(max(t, MIN_THRESHOLD), 1.0))
    meta = {"chosen_on": f"validation predictions ({len(val_entries)} studies)", "method": method,
            "n_val": len(val_entries), "n_labelled": n_labelled, "n_positive": n_positive,
            fallback_key: sorted(reasons, key=LABEL_NAMES.index), "fallback_reasons": reasons}
    if method != "youden":
        meta["target"] = target
    if name == "seg_volume":
        meta["unit"] = "mL"
    return DecisionRule(name, threshold=thresholds, k=k, meta=meta)
