"""``ichct postprocess``: choose a segmenter's confidence filter, its minimum component volume and its
``seg_peak`` threshold (or a classifier's thresholds) on held-out studies and store them.

:func:`determine_postprocessing` predicts every study of a manifest split once
(:func:`~ichct.pipeline.models.inference.predict_postprocessing_variants`), scores each candidate
``min_component_confidence`` against the reference masks with ``ichct evaluate``'s per-study
metrics, chooses a value (:func:`~ichct.pipeline.postprocess.confidence.choose_confidence`), then at
that value the ``min_component_ml`` (:func:`~ichct.pipeline.postprocess.min_volume.choose_min_component_ml`:
the smallest minimum within a false-positive budget) and writes ``postprocessing.json`` (the sweeps,
the rules, the studies) beside the model's config:

* a training run: ``RUN/postprocessing.json``, and the values into ``RUN/config.json``;
* a bundle: ``models/postprocessing.json``, the values into ``models/run_config.json``, then the
  configs regenerated (:func:`~ichct.pipeline.bundle.package.refresh_bundle`), so the bundle's
  ``inference.json`` and ``evaluate.json`` list the filter.

The same studies choose the threshold of the segmenter's ``seg_peak`` rule (its peak blood
probability, :func:`~ichct.pipeline.decision.peak_probability_scores`; Youden's J, as training
chooses its thresholds): it goes into the stored decision rule's ``meta["other_rules"]``
(``thresholds.json``), with where it was chosen, and into ``postprocessing.json`` (``seg_peak``).

A classifier (a run or bundle of ``kind`` cls, an ensemble of classifiers above all) gets the
thresholds of its slice rules chosen again on the studies, as training chose them on its
validation fold (:mod:`ichct.pipeline.postprocess.thresholds`): ``thresholds.json`` is replaced and
``postprocessing.json`` keeps the previous rule.

The studies must be held out from the model's training (its validation fold, or another cohort):
training patients are refused, as in ``ichct evaluate``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ichct import __version__
from ichct.errors import InputError, read_json
from ichct.pipeline.core.atomic import atomic_path, write_json_atomic
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.evaluate.lesions import DEFAULT_LESIONS
from ichct.pipeline.postprocess.confidence import (
    DEFAULT_CONFIDENCES,
    check_false_blood_budget,
    check_tolerances,
    choose_confidence,
    sweep_summary,
    within_false_blood_budget,
)
from ichct.pipeline.postprocess.min_volume import (
    DEFAULT_MAX_FP_PER_SCAN,
    DEFAULT_MIN_COMPONENTS_ML,
    check_fp_budget,
    check_min_components,
    choose_min_component_ml,
)

logger = logging.getLogger("ichct.postprocess")

__all__ = ["POSTPROCESSING_FILE", "determine_postprocessing", "peak_threshold"]

POSTPROCESSING_FILE = "postprocessing.json"


def _entries(model: Any, manifest: Path, split: str, fold: int | None) -> tuple[list[Mapping[str, Any]], int | None]:
    """The split's studies with a reference (a segmenter's masks, a classifier's CT-level labels), none
    of the model's training patients, and the fold."""
    from ichct.pipeline.manifests import load_manifest
    from ichct.pipeline.train.record import check_split, manifest_salt_id

    if split == "validation" and fold is None:
        fold = model.run_config.get("fold")
        if fold is None:
            raise InputError(model.run_dir, "records no validation fold; give --fold or another --split")
    key, what = ("label", "a reference mask") if model.kind == "seg" else ("ct_labels", "CT-level labels")
    entries = [e for e in load_manifest(manifest, split, fold=fold) if e.get(key)]
    if not entries:
        raise InputError(manifest, f"split {split!r} has no study with {what} ({key!r})")
    check = check_split(model.training_record, entries, manifest_salt_id(manifest), where=str(model.run_dir))
    if check.leaked:
        raise InputError(manifest, f"{len(check.leaked)} patient(s) of split {split!r} trained the model: "
                                   "post-processing must be chosen on held-out studies (its validation fold or "
                                   "another cohort)")
    return entries, fold


def _sweep_rows(model: Any, entries: Sequence[Mapping[str, Any]], values: Sequence[float],
                minima: Sequence[float]) -> dict[tuple[float, float], list[dict[str, Any]]]:
    """Per (confidence value, minimum component volume), ``ichct evaluate``'s per-study rows of every
    entry predicted with that pair."""
    from ichct.pipeline.evaluate.run import study_row
    from ichct.pipeline.models.inference import predict_postprocessing_variants

    rows: dict[tuple[float, float], list[dict[str, Any]]] = {(float(v), float(m)): [] for v in values for m in minima}
    for n, entry in enumerate(entries, 1):
        for pair, pred in predict_postprocessing_variants(model, entry["image"], values, minima).items():
            rows[pair].append(study_row(entry, pred, surface=False, lesions=DEFAULT_LESIONS))
        logger.info("postprocess: %d/%d studies predicted", n, len(entries))
    return rows


def _choose_minimum(sweep_rows: Mapping[tuple[float, float], list[dict[str, Any]]], confidence: float,
                    run_min: float, dice_tolerance: float, max_fp_per_scan: float) -> dict[str, Any]:
    """The ``min_component_ml`` record at the chosen confidence value (see :mod:`.min_volume`)."""
    summary = sweep_summary({m: rows for (c, m), rows in sweep_rows.items() if c == confidence}, key="min_component_ml")
    return {
        "min_component_ml": choose_min_component_ml(summary, run_min, dice_tolerance, max_fp_per_scan),
        "previous": run_min, "sweep": summary,
        "rule": {"dice_tolerance": float(dice_tolerance), "max_fp_lesions_per_scan": float(max_fp_per_scan),
                 "text": "at the chosen confidence filter, the smallest value (at least the lesion definition's "
                         "minimum) whose false-positive lesions per scan stay within the budget and whose mean Dice "
                         "on studies with blood stays within the tolerance of the run's own value; else the run's"},
    }


def peak_threshold(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The ``seg_peak`` threshold Youden's J chooses on per-study rows (``label:any``,
    ``score:seg_peak:any``); None without rows of both classes.

    Examples
    --------
    >>> rows = [{"label:any": 1, "score:seg_peak:any": 0.9}, {"label:any": 0, "score:seg_peak:any": 0.3},
    ...         {"label:any": 1, "score:seg_peak:any": 0.7}, {"label:any": 0, "score:seg_peak:any": 0.5}]
    >>> round(peak_threshold(rows), 3)
    0.6
    """
    import numpy as np

    from ichct.pipeline.decision import choose_threshold, probability_threshold

    known = [r for r in rows if r.get("score:seg_peak:any") is not None and r.get("label:any") in (0, 1)]
    labels = np.asarray([r["label:any"] for r in known], dtype=bool)
    if not known or labels.all() or not labels.any():
        return None
    scores = np.asarray([r["score:seg_peak:any"] for r in known], dtype=np.float64)
    return probability_threshold(choose_threshold(scores, labels, method="youden"))


def _with_peak_threshold(rule: dict[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored ``seg_volume`` rule (``thresholds.json``) with the record's ``seg_peak`` threshold in its meta."""
    peak = record.get("seg_peak") or {}
    if peak.get("threshold") is None:
        return rule
    meta = dict(rule.get("meta") or {})
    meta["other_rules"] = {**dict(meta.get("other_rules") or {}), "seg_peak": {"any": peak["threshold"]}}
    meta["other_rules_chosen_on"] = {**dict(meta.get("other_rules_chosen_on") or {}), "seg_peak": peak["chosen_on"]}
    return {**rule, "meta": meta}


def _store(model: Any, record: Mapping[str, Any]) -> str:
    """Write ``postprocessing.json``, the chosen values into the model's config and the ``seg_peak``
    threshold into its ``thresholds.json`` (a bundle's configs regenerated); the config's path. A
    failure leaves the files as they were."""
    config_path = model.run_dir / ("run_config.json" if model.bundle_dir is not None else "config.json")
    rule_path = model.run_dir / "thresholds.json"
    run_config = read_json(config_path, "run config")  # as written: only the chosen keys change
    chosen = {"min_component_confidence": record["min_component_confidence"]}
    if record.get("min_component_ml") is not None:
        chosen["min_component_ml"] = record["min_component_ml"]["min_component_ml"]
    run_config["config"] = {**run_config["config"], **chosen}
    documents = {config_path: run_config}
    if rule_path.is_file():
        documents[rule_path] = _with_peak_threshold(read_json(rule_path, "decision rule"), record)
    _write_all(model, record, documents)
    return str(config_path)


def _write_all(model: Any, record: Mapping[str, Any], documents: Mapping[Path, Any]) -> None:
    """Write ``postprocessing.json`` and ``documents`` beside the model's config, then regenerate a
    bundle's configs (and warn when its docs hold an evaluation measured before); a failure puts every
    file back as it was."""
    paths = [model.run_dir / POSTPROCESSING_FILE, *documents]
    before = {p: p.read_bytes() if p.is_file() else None for p in paths}
    try:
        write_json_atomic(paths[0], record)
        for path, doc in documents.items():
            write_json_atomic(path, doc)
        if model.bundle_dir is not None:
            from ichct.pipeline.bundle.package import refresh_bundle

            refresh_bundle(model.bundle_dir)
    except BaseException:
        for path, data in before.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                with atomic_path(path) as tmp:
                    tmp.write_bytes(data)
        raise
    if model.bundle_dir is not None and (model.bundle_dir / "docs" / "evaluation" / "metrics.json").is_file():
        logger.warning("%s: docs/evaluation was measured before this post-processing; run `ichct evaluate --bundle "
                       "%s ... --out EVAL_DIR`, then `ichct bundle refresh %s --evaluation EVAL_DIR`",
                       model.bundle_dir, model.bundle_dir, model.bundle_dir)


def _classifier_thresholds(model: Any, manifest: Path, split: str, fold: int | None, apply: bool) -> dict[str, Any]:
    """:func:`determine_postprocessing` of a classifier: its slice rules' thresholds chosen again."""
    from ichct.pipeline.postprocess.thresholds import choose_slice_thresholds

    entries, fold = _entries(model, manifest, split, fold)
    chosen_on = f"{manifest} {split}{'' if fold is None else f' fold {fold}'} ({len(entries)} studies)"
    rule = choose_slice_thresholds(model, entries, chosen_on)
    record: dict[str, Any] = {
        "kind": "cls", "thresholds": rule.to_dict(),
        "previous": model.rule.to_dict() if model.rule is not None else None,
        "studies": {"manifest": str(manifest), "manifest_sha256": sha256_file(manifest), "split": split,
                    "fold": fold, "n": len(entries)}, "ichct_version": __version__,
    }
    if apply:
        rule_path = model.run_dir / "thresholds.json"
        _write_all(model, record, {rule_path: rule.to_dict()})
        record["written"] = str(rule_path)
    return record


def _confidence_rule(dice_tolerance: float, sensitivity_tolerance: float,
                     max_false_blood_ml: float | None) -> dict[str, Any]:
    """The ``rule`` entry of the record: the tolerances, the false-blood budget when one was given, in words."""
    rule: dict[str, Any] = {
        "dice_tolerance": float(dice_tolerance), "sensitivity_tolerance": float(sensitivity_tolerance),
        "text": "the largest value, in increasing order up to the first that costs more, whose mean Dice on studies "
                "with blood and lesion-level sensitivity stay within the tolerances of no filter"}
    if max_false_blood_ml is not None:  # absent otherwise: records of runs chosen without it stay as they were
        rule["max_false_blood_ml"] = float(max_false_blood_ml)
        rule["text"] += (f"; then raised to the smallest value whose 95th percentile of predicted blood on the studies "
                         f"without blood is within {float(max_false_blood_ml):g} mL")
    return rule


def determine_postprocessing(model_dir: str | Path, manifest: str | Path, *, split: str = "validation",
                             fold: int | None = None, values: Sequence[float] = DEFAULT_CONFIDENCES,
                             dice_tolerance: float = 0.01, sensitivity_tolerance: float = 0.02,
                             min_components_ml: Sequence[float] | None = DEFAULT_MIN_COMPONENTS_ML,
                             max_fp_per_scan: float = DEFAULT_MAX_FP_PER_SCAN,
                             max_false_blood_ml: float | None = None,
                             apply: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Choose a segmenter's ``min_component_confidence`` and ``min_component_ml`` (or a classifier's
    thresholds) on held-out studies; store them unless ``apply`` is False.

    Parameters
    ----------
    model_dir
        A training run or bundle. A segmenter gets its confidence filter and ``seg_peak`` threshold;
        a classifier the thresholds of its slice rules, chosen as training chooses them
        (:func:`~ichct.pipeline.postprocess.thresholds.choose_slice_thresholds`; ``values`` and the
        tolerances are the segmenter's and not used).
    manifest, split, fold
        The studies: a manifest split with reference masks (a classifier: CT-level labels). The default is the model's own
        validation fold (``fold`` from its config), which chose its checkpoint and thresholds
        too; a second cohort of the same kind (``split="all"`` of its manifest) gives a larger,
        independent choice. The model's training patients are refused.
    values
        Candidate values within [0, 1]; 0 (no filter, the reference) is added when missing.
    dice_tolerance, sensitivity_tolerance
        See :func:`~ichct.pipeline.postprocess.confidence.choose_confidence`.
    min_components_ml, max_fp_per_scan
        Candidate minimum component volumes (mL, at least the lesion definition's minimum; the
        run's own value is added), weighed at the chosen confidence value by
        :func:`~ichct.pipeline.postprocess.min_volume.choose_min_component_ml` with ``dice_tolerance``
        and the false-positive lesions per scan it may cost. None or empty: the run's value is kept.
    max_false_blood_ml
        A false-blood budget (mL; None: none): the confidence value is then raised to the smallest
        whose 95th percentile of predicted blood on the studies without reference blood is within it
        (:func:`~ichct.pipeline.postprocess.confidence.within_false_blood_budget`); the studies must
        include some without blood.
    apply
        Write ``postprocessing.json`` and the values into the model's config (and regenerate a
        bundle's configs); False only reports.

    Returns
    -------
    dict
        The ``postprocessing.json`` record: ``min_component_confidence`` (chosen), ``previous``,
        ``rule``, ``studies``, ``lesions``, ``sweep``, ``min_component_ml`` (its chosen
        ``min_component_ml``, ``previous``, ``rule`` and ``sweep``; None when not swept),
        ``seg_peak`` (its ``threshold``, None without
        studies of both classes, and where it was chosen) and, when applied, ``written``. A
        classifier's: ``kind`` ("cls"), ``thresholds`` (the new ``thresholds.json``), ``previous``,
        ``studies`` and ``written``.

    Examples
    --------
    >>> determine_postprocessing("no_such_run", "manifest.json")
    Traceback (most recent call last):
    ...
    ichct.errors.InputError: no_such_run: not a training run (config.json) or a bundle (models/run_config.json)
    """
    from ichct.pipeline.bundle.package import load_model_dir

    root = Path(model_dir)
    candidates = sorted({0.0, *(float(v) for v in values)})
    if any(not 0.0 <= v <= 1.0 for v in candidates):
        raise InputError(f"confidence values must lie within [0, 1], got {candidates}")
    check_tolerances(dice_tolerance, sensitivity_tolerance)  # before any prediction
    minima = check_min_components(min_components_ml, DEFAULT_LESIONS.min_volume_ml) if min_components_ml else []
    check_fp_budget(max_fp_per_scan)
    if max_false_blood_ml is not None:
        check_false_blood_budget(max_false_blood_ml)
    model = load_model_dir(root, device=device)
    if model.kind == "cls":
        return _classifier_thresholds(model, Path(manifest), split, fold, apply)
    entries, fold = _entries(model, Path(manifest), split, fold)
    run_min = float(model.config["min_component_ml"])
    sweep_rows = _sweep_rows(model, entries, candidates, sorted({run_min, *minima}))
    summary = sweep_summary({c: rows for (c, m), rows in sweep_rows.items() if m == run_min})
    chosen = choose_confidence(summary, dice_tolerance, sensitivity_tolerance)
    if max_false_blood_ml is not None:
        chosen = within_false_blood_budget(summary, chosen, max_false_blood_ml)
    minimum = _choose_minimum(sweep_rows, chosen, run_min, dice_tolerance, max_fp_per_scan) if minima else None
    rows = sweep_rows[(chosen, minimum["min_component_ml"] if minimum else run_min)]
    record: dict[str, Any] = {
        "min_component_confidence": chosen, "previous": float(model.config["min_component_confidence"]),
        "rule": _confidence_rule(dice_tolerance, sensitivity_tolerance, max_false_blood_ml),
        "studies": {"manifest": str(manifest), "manifest_sha256": sha256_file(manifest), "split": split,
                    "fold": fold, "n": len(entries)},
        "lesions": DEFAULT_LESIONS.to_dict(), "sweep": summary, "min_component_ml": minimum,
        "ichct_version": __version__,
        "seg_peak": {"threshold": peak_threshold(rows), "method": "youden",
                     "chosen_on": f"{manifest} {split}{'' if fold is None else f' fold {fold}'} ({len(rows)} studies)"},
    }
    if apply:
        record["written"] = _store(model, record)
    return record
