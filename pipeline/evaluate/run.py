"""``evaluate(...)``: run trained models on a manifest split and write the evaluation report.

One study at a time through :func:`ichct.pipeline.models.inference.predict_study` (the inference path
``ichct predict`` uses too), then the per-study table in the convention of
:mod:`.metrics_ct` / :mod:`.metrics_seg` (columns ``label:<subtype>``, ``score:<rule>:<subtype>``,
``seg:<class>:<field>``, ``slice_ll_sum`` / ``n_slices``), patient-level bootstrap CIs, and
:func:`ichct.pipeline.evaluate.report.write_report` (``metrics.json``, ``per_case.csv``, ``report.md``,
PNG plots).

Leakage guard: patients of a run's ``train_patients.json`` (by patient key under the same salt,
by study or series UID under any; :mod:`ichct.pipeline.train.record`) are refused
(:class:`EvaluationOverlapError`, naming them) unless ``allow_overlap=True``, in which case
``metrics.json`` has ``allow_overlap: true`` and ``report.md`` starts with a warning. The run's
own validation fold and a differently salted manifest are flagged in ``warnings``.

The output folder is written as a whole: everything goes into a temporary folder beside it that
is renamed at the end, so an error never leaves a half-written ``EVAL_DIR``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ichct.errors import IchctError, InputError
from ichct.pipeline.core.atomic import replace_dir, temp_dir_beside
from ichct.pipeline.decision import RULES, affine_voxel_volume_ml
from ichct.pipeline.core.devices import torch_device
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.train.record import check_split, manifest_salt_id

logger = logging.getLogger("ichct.evaluate")

__all__ = ["EvaluationOverlapError", "evaluate", "study_row"]

SPLITS = ("test", "training", "validation", "all")


class EvaluationOverlapError(IchctError):
    """The evaluated split holds patients the model was trained on."""

    def __init__(self, keys: Sequence[str], runs: Sequence[str]) -> None:
        self.keys = sorted(keys)
        self.runs = list(runs)
        shown = ", ".join(self.keys[:50]) + (" ..." if len(self.keys) > 50 else "")
        super().__init__(
            f"refusing to evaluate: {len(self.keys)} patient(s) of this split are in the training patients of "
            f"{', '.join(runs)}: {shown} (pass --allow-overlap to evaluate anyway; the report will say so)")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the constructor's arguments (the error may cross processes)."""
        return type(self), (self.keys, self.runs)


def _ct_label(entry: Mapping[str, Any], st: str) -> float:
    v = (entry.get("ct_labels") or {}).get(st)
    return float("nan") if v is None or float(v) < 0 else float(v)


def study_row(entry: Mapping[str, Any], pred: Any, surface: bool = True) -> dict[str, Any]:
    """One per-study row: ids, labels, rule scores, slice log loss, segmentation fields."""
    from ichct.pipeline.evaluate.metrics_ct import rsna_row_losses
    from ichct.pipeline.evaluate.metrics_seg import segmentation_case_metrics

    row: dict[str, Any] = {"study_id": entry.get("study_uid", ""), "patient_key": str(entry["patient_key"]),
                           "n_slices_image": pred.n_slices}
    for st in LABEL_NAMES:
        row[f"label:{st}"] = _ct_label(entry, st)
    for rule, per in pred.scores.items():
        for st, v in per.items():
            row[f"score:{rule}:{st}"] = float(v)
    for rule, per in pred.decisions.items():
        for st, d in per.items():
            row[f"call:{rule}:{st}"] = int(bool(d["positive"]))
    sl = entry.get("slice_labels")
    if pred.slice_probs is not None and sl:
        y = np.asarray(sl, dtype=np.float64)
        if y.shape == pred.slice_probs.shape:
            known = np.all(y >= 0, axis=1)
            if known.any():
                row["slice_ll_sum"] = float(rsna_row_losses(pred.slice_probs[known], y[known]).sum())
                row["n_slices"] = int(known.sum())
        else:
            logger.warning("%s: %d slice-label rows for %d slices; no slice-level log loss",
                           row["study_id"], y.shape[0], pred.slice_probs.shape[0])
    if pred.seg_original is not None:
        for cls, v in pred.volumes_ml.items():
            row[f"vol_ml:{cls}"] = float(v)
        if entry.get("label"):
            from ichct.pipeline.models.inference import load_image
            from ichct.transforms import voxel_spacing

            ref = np.asarray(load_image(entry["label"]))[0]
            if ref.shape != pred.seg_original.shape:
                raise InputError(entry["label"], f"label shape {ref.shape} differs from the image {pred.seg_original.shape}")
            k = int(pred.num_seg_classes)
            if k == 6 and entry.get("label_values", "ichct") != "ichct":
                k = 2  # the reference has no subtypes: score any blood only
            ref = np.rint(ref).astype(np.int64).clip(0, 5)
            spacing = voxel_spacing(pred.original_affine)
            cm = segmentation_case_metrics(pred.seg_original, ref, spacing, k, surface=surface,
                                           voxel_volume_ml=affine_voxel_volume_ml(pred.original_affine))
            for cls, fields in cm.items():
                for f, v in fields.items():
                    row[f"seg:{cls}:{f}"] = v
    return row


def _table(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Columns present in every row (others dropped), as arrays."""
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: np.asarray([r[k] for r in rows]) for k in keys if k not in ("study_id", "patient_key")}


def _compare(table_a: Mapping[str, Any], table_b: Mapping[str, Any], keys: Sequence[str],
             rules_a: Mapping[str, Any], rules_b: Mapping[str, Any], n_boot: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap of the main metrics (ROC/PR AUC of "any" per rule; Dice of any blood)."""
    from ichct.pipeline.evaluate.bootstrap import paired_bootstrap
    from ichct.pipeline.evaluate.metrics_ct import ct_metric_fn
    from ichct.pipeline.evaluate.metrics_seg import seg_metric_fn

    out: dict[str, Any] = {}
    ones = np.ones((1, len(keys)))
    for rule in rules_a:
        col = f"score:{rule}:any"
        if col not in table_a or col not in table_b or "label:any" not in table_a or rule not in rules_b:
            continue
        for m in ("roc_auc", "pr_auc"):
            fn = _only(ct_metric_fn("any", rule, rules_a[rule].threshold_for("any"), probabilistic=False), m)
            res = paired_bootstrap(fn, table_a, table_b, keys, n=n_boot, seed=seed)[m]
            res["a"], res["b"] = float(fn(table_a, ones)[m][0]), float(fn(table_b, ones)[m][0])
            out[f"any/{rule}/{m}"] = res
    if "seg:any:dice" in table_a and "seg:any:dice" in table_b:
        fn = _only(seg_metric_fn("any"), "dice")
        res = paired_bootstrap(fn, table_a, table_b, keys, n=n_boot, seed=seed)["dice"]
        res["a"], res["b"] = float(fn(table_a, ones)["dice"][0]), float(fn(table_b, ones)["dice"][0])
        out["segmentation/any/dice"] = res
    return out


def _compare_rules(table: Mapping[str, Any], keys: Sequence[str], rule_a: str, rule_b: str,
                   rules: Mapping[str, Any], n_boot: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap of two decision rules on the same studies: ROC/PR AUC, sensitivity and
    specificity (each rule at its own threshold) per subtype that both rules score."""
    from ichct.pipeline.evaluate.bootstrap import paired_bootstrap
    from ichct.pipeline.evaluate.metrics_ct import ct_metric_fn

    out: dict[str, Any] = {}
    ones = np.ones((1, len(keys)))
    for st in LABEL_NAMES:
        col_a, col_b = f"score:{rule_a}:{st}", f"score:{rule_b}:{st}"
        if col_a not in table or col_b not in table or f"label:{st}" not in table:
            continue
        th_a, th_b = float(rules[rule_a].threshold_for(st)), float(rules[rule_b].threshold_for(st))
        # rule b's scores shifted onto rule a's threshold: the ranking (AUCs) and the calls at b's
        # own threshold are unchanged, so one metric function serves both tables
        table_b = dict(table)
        table_b[col_a] = np.asarray(table[col_b], dtype=np.float64) - th_b + th_a
        fn = ct_metric_fn(st, rule_a, th_a, probabilistic=False)
        for m in ("roc_auc", "pr_auc", "sensitivity", "specificity"):
            f = _only(fn, m)
            res = paired_bootstrap(f, table, table_b, keys, n=n_boot, seed=seed)[m]
            res["a"], res["b"] = float(f(table, ones)[m][0]), float(f(table_b, ones)[m][0])
            out[f"{st}/{m}"] = res
    return out


def _only(fn: Any, metric: str) -> Any:
    return lambda table, w: {metric: fn(table, w)[metric]}


def _comparison_markdown(comp: Mapping[str, Any]) -> str:
    from ichct.pipeline.evaluate.metrics_schema import to_jsonable
    from ichct.pipeline.evaluate.report import format_metric

    lines = ["", "## Paired comparison", "", f"a = `{comp['a']}`, b = `{comp['b']}`; difference a - b with 95% "
             "paired patient-level bootstrap interval and two-sided p-value.", "",
             "| metric | a | b | a - b | p |", "|---|---|---|---|---|"]
    for k, v in to_jsonable(comp["metrics"]).items():
        p = v.get("p_value")
        lines.append(f"| {k} | {format_metric({'value': v.get('a'), 'ci_low': None, 'ci_high': None})} | "
                     f"{format_metric({'value': v.get('b'), 'ci_low': None, 'ci_high': None})} | "
                     f"{format_metric(v)} | {'n/a' if p is None else f'{p:.3f}'} |")
    return "\n".join(lines) + "\n"


def _check_against_training(models: Sequence[Any], entries: Sequence[Mapping[str, Any]],
                            salt_id: str | None) -> tuple[set[str], list[str], list[str]]:
    """(training patients in the split, the models that saw them, warnings for the report).

    Uses each model's training record (:mod:`ichct.pipeline.train.record`): patient keys when
    the salts agree, study and series UIDs whatever the salt; entries of a model's own validation
    fold are not refused but flagged, since that fold chose the checkpoint and the thresholds.
    """
    overlap: set[str] = set()
    runs: list[str] = []
    warnings: list[str] = []
    for m in models:
        check = check_split(m.training_record, entries, salt_id, where=_where(m))
        if check.leaked:
            overlap |= check.leaked
            runs.append(_where(m))
        if check.validation:
            warnings.append(f"{len(check.validation)} of the evaluated patients are in the validation fold of "
                            f"{_where(m)}, which chose its checkpoint and thresholds: the metrics are optimistic, "
                            "not a held-out estimate")
        warnings.extend(check.notes)
    return overlap, runs, warnings


def _where(model: Any) -> str:
    """The folder a loaded model came from: its bundle, else its run directory."""
    return str(model.bundle_dir if getattr(model, "bundle_dir", None) is not None else model.run_dir)


def _describe(model: Any) -> dict[str, Any]:
    """``LoadedModel.describe()`` plus, for a bundle, its folder, version and weights sha256."""
    out = model.describe()
    if getattr(model, "bundle_dir", None) is not None:
        from ichct.pipeline.bundle.package import WEIGHTS

        out["bundle_dir"] = str(model.bundle_dir)
        out["bundle_version"] = (model.run_config.get("bundle") or {}).get("version")
        out["weights_sha256"] = sha256_file(Path(model.bundle_dir) / WEIGHTS)
    return out


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "exists and is not an empty folder; choose another --out")


def evaluate(
    runs: Sequence[str | Path],
    manifest: str | Path,
    out_dir: str | Path,
    split: str = "test",
    fold: int | None = None,
    n_boot: int = 2000,
    rules: Sequence[str] | None = None,
    seed: int = 0,
    allow_overlap: bool = False,
    device: str = "cpu",
    checkpoint: str = "best",
    surface: bool = True,
    bundles: Sequence[str | Path] = (),
    compare_rules: Sequence[str] | None = None,
    models_source: str = "user",
) -> dict[str, Any]:
    """Evaluate one seg and/or one cls model (run directory or bundle) on a manifest split.

    Returns a summary dict.

    Parameters
    ----------
    runs
        Run directories: at most one per kind, or exactly two of one kind, which are compared
        (the report is that of the first; ``metrics.json["comparisons"]`` holds the paired
        bootstrap differences first - second of the ROC/PR AUC of "any" per rule and of the Dice).
    bundles
        Bundle folders (:func:`ichct.pipeline.bundle.package.load_bundle`), counted after ``runs`` under
        the same rules; the leakage guard uses each bundle's ``models/train_patients.json``.
    manifest, split, fold
        The split to evaluate (:func:`ichct.pipeline.manifests.load_manifest`, which refuses a
        manifest failing its checks); ``fold`` is needed for ``split="validation"``.
    out_dir
        Output folder; must not exist or be empty.
    n_boot, seed
        Patient-level bootstrap resamples and seed.
    rules
        Rule names (default: every rule the models support: ``consecutive``, ``max``,
        ``topk_mean`` with a classifier, ``seg_volume`` with a segmenter).
    allow_overlap
        Evaluate even when the split holds training patients of a run (flagged in the report).
    compare_rules
        Two rule names ``(a, b)``: a paired comparison of the two decision rules on the same
        model(s) and studies (``metrics.json["comparisons"]``, differences a - b).
    models_source
        ``"user"`` (default) or ``"shipped"``: the models are the demonstration bundles that ship
        with ichct (:mod:`ichct.pipeline.models.shipped_models`; both of them when ``runs`` and
        ``bundles`` are empty). Recorded as ``metrics.json["models_source"]``; ``"shipped"``
        adds their warning (logged, in ``metrics.json["warnings"]`` and heading ``report.md``).

    Raises
    ------
    EvaluationOverlapError
        The split holds training patients and ``allow_overlap`` is false.
    ichct.errors.IchctError
        Bad arguments, a manifest failing its checks, an existing output folder, a model that cannot
        be read (all ``ValueError``).
    """
    from ichct.pipeline.evaluate.metrics_ct import ct_level_metrics
    from ichct.pipeline.evaluate.metrics_seg import segmentation_summary

    t0 = time.perf_counter()
    _check_arguments(split, n_boot, seed, rules)
    torch_device(device)
    out = Path(out_dir)
    _prepare_out(out)
    loaded, shipped_warning = _load_models(runs, bundles, models_source, device, checkpoint)
    models, comparator = _assign_models(loaded)
    chosen = _choose_rules(models, rules, comparator, compare_rules)

    manifest = Path(manifest)
    entries, overlap, report_warnings = _load_split(manifest, split, fold, loaded, shipped_warning, allow_overlap)
    keys = [str(e["patient_key"]) for e in entries]
    rows, comp_rows, comp_rules = _predict_rows(entries, models, chosen, comparator, surface)
    table = _scored_table(rows)

    ct_level, curves = ct_level_metrics(table, keys, chosen, n_boot=n_boot, seed=seed)
    seg_classes = [c for c in LABEL_NAMES if f"seg:{c}:dice" in table]
    seg = segmentation_summary(table, keys, classes=seg_classes, n_boot=n_boot, seed=seed) if seg_classes else {}
    comparisons = _comparisons(table, comp_rows, keys, chosen, comp_rules, compare_rules, n_boot, seed)
    section = None if comparisons is None else _comparison_section(comparisons, models, comparator, compare_rules)

    model_info = {"name": "+".join(f"{k}:{Path(_where(m)).name}" for k, m in sorted(models.items())),
                  "runs": {k: _describe(m) for k, m in models.items()},
                  "rules": {k: r.to_dict() for k, r in chosen.items()},
                  "device": device, "overlap_patients": sorted(overlap)}
    manifest_info = {"path": str(manifest.resolve()), "sha256": sha256_file(manifest), "fold": fold}
    doc = _metrics_document(
        dict(model=model_info, manifest=manifest_info, split=split, patient_keys=keys, ct_level=ct_level,
             segmentation=seg, allow_overlap=bool(overlap), n_boot=n_boot, seed=seed, warnings=report_warnings,
             models_source=models_source),
        section)
    written = _write_evaluation(doc, rows, curves, section, out)
    summary = {"out_dir": str(out), "split": split, "n_studies": len(entries), "n_patients": len(set(keys)),
               "rules": list(chosen), "allow_overlap": bool(overlap),
               "overlap_patients": len(overlap), "files": sorted(written),
               "time_s": round(time.perf_counter() - t0, 2), "models_source": models_source}
    return _finish_summary(summary, doc, section, ct_level, chosen)


def _check_arguments(split: str, n_boot: int, seed: int, rules: Sequence[str] | None) -> None:
    """Refuse an unknown split or rule, no bootstrap resample, a negative seed."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if n_boot < 1:
        raise InputError(f"n_boot (--bootstrap) must be >= 1, got {n_boot}")
    if int(seed) < 0:
        raise InputError(f"seed (--seed) must be >= 0, got {seed}")
    if rules is not None:
        bad = [r for r in rules if r not in RULES]
        if bad:
            raise InputError(f"unknown rule(s) {bad}; choose from {RULES}")


def _load_models(runs: Sequence[str | Path], bundles: Sequence[str | Path], models_source: str, device: str,
                 checkpoint: str) -> tuple[list[Any], str | None]:
    """The loaded models (runs, then bundles; the shipped bundles when ``models_source="shipped"``
    names none) and, for shipped models, their warning (logged here)."""
    from ichct.pipeline.models.inference import load_run
    from ichct.pipeline.models.shipped_models import MODELS_SOURCES, is_shipped_model, shipped_bundle_dirs

    if models_source not in MODELS_SOURCES:
        raise IchctError(f"models_source must be one of {', '.join(MODELS_SOURCES)}, got {models_source!r}")
    if models_source == "shipped" and not runs and not bundles:
        bundles = list(shipped_bundle_dirs().values())
    if not runs and not bundles:
        raise InputError("at least one --run or --bundle is needed")
    loaded = [load_run(r, device=device, checkpoint=checkpoint) for r in runs]
    if bundles:
        from ichct.pipeline.bundle.package import load_bundle

        loaded += [load_bundle(b, device=device) for b in bundles]
    shipped_warning = None
    if models_source == "shipped":
        from ichct.pipeline.models.shipped_models import shipped_models_warning

        other = [_where(m) for m in loaded if not is_shipped_model(m)]
        if other:
            raise IchctError(f"models_source='shipped' but {', '.join(other)} is not a shipped model bundle")
        shipped_warning = shipped_models_warning(tuple(dict.fromkeys(m.kind for m in loaded)))
        logger.warning("%s", shipped_warning)
    return loaded, shipped_warning


def _assign_models(loaded: Sequence[Any]) -> tuple[dict[str, Any], Any | None]:
    """``({kind: model}, comparator)``: two models of one kind are compared (first vs second);
    otherwise at most one model per kind."""
    models: dict[str, Any] = {}
    comparator = None
    if len(loaded) == 2 and loaded[0].kind == loaded[1].kind:
        models[loaded[0].kind], comparator = loaded[0], loaded[1]  # paired comparison: first run vs second
    else:
        for m in loaded:
            if m.kind in models:
                raise InputError(f"two {m.kind} models given ({_where(models[m.kind])}, {_where(m)}) together with "
                                 "another run; give one seg and one cls run, or two runs of one kind to compare")
            models[m.kind] = m
    return models, comparator


def _choose_rules(models: Mapping[str, Any], rules: Sequence[str] | None, comparator: Any | None,
                  compare_rules: Sequence[str] | None) -> dict[str, Any]:
    """The decision rules to evaluate (``{name: DecisionRule}``), checked against the models and
    against ``compare_rules``."""
    from ichct.pipeline.models.inference import default_rules

    chosen = default_rules(models, rules)
    if rules is not None:
        missing = [r for r in rules if r not in chosen]
        if missing:
            raise InputError(f"rule(s) {missing} need a {'classifier' if missing[0] != 'seg_volume' else 'segmentation'} "
                             f"run, which was not given")
    if not chosen:
        raise InputError("no decision rule left to evaluate")
    if compare_rules is not None:
        if len(compare_rules) != 2:
            raise InputError(f"compare_rules needs two rule names, got {list(compare_rules)}")
        if comparator is not None:
            raise InputError("compare either two models or two rules, not both at once")
        unavailable = [r for r in compare_rules if r not in chosen]
        if unavailable:
            raise InputError(f"cannot compare rule(s) {unavailable}: the evaluated rules are {list(chosen)} "
                             "(a slice rule needs a classifier, seg_volume a segmenter)")
    return chosen


def _load_split(manifest: Path, split: str, fold: int | None, loaded: Sequence[Any], shipped_warning: str | None,
                allow_overlap: bool) -> tuple[list[Mapping[str, Any]], set[str], list[str]]:
    """``(entries, training patients among them, warnings for the report)`` of the split, after the
    leakage guard (:class:`EvaluationOverlapError` unless ``allow_overlap``)."""
    from ichct.pipeline.manifests import load_manifest

    entries = load_manifest(manifest, split, fold=fold)
    if not entries:
        raise InputError(manifest, f"split {split!r} is empty")
    overlap, overlap_runs, report_warnings = _check_against_training(loaded, entries, manifest_salt_id(manifest))
    if shipped_warning is not None:
        report_warnings.insert(0, shipped_warning)
    for w in report_warnings:
        if w is not shipped_warning:  # logged once already, before the models ran
            logger.warning("%s", w)
    if overlap and not allow_overlap:
        raise EvaluationOverlapError(sorted(overlap), overlap_runs)
    if overlap:
        logger.warning("evaluating %d training patient(s) (--allow-overlap): metrics are optimistic", len(overlap))
    return entries, overlap, report_warnings


def _predict_rows(entries: Sequence[Mapping[str, Any]], models: Mapping[str, Any], chosen: Mapping[str, Any],
                  comparator: Any | None, surface: bool
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """``(rows, comparator rows, comparator rules)``: one :func:`study_row` per study and model."""
    from ichct.pipeline.models.inference import default_rules, predict_study

    comp_models = {comparator.kind: comparator} if comparator is not None else {}
    comp_rules = default_rules(comp_models, list(chosen)) if comparator is not None else {}
    rows: list[dict[str, Any]] = []
    comp_rows: list[dict[str, Any]] = []
    for i, e in enumerate(entries, 1):
        pred = predict_study(models, e["image"], chosen)
        rows.append(study_row(e, pred, surface=surface))
        if comparator is not None:
            comp_rows.append(study_row(e, predict_study(comp_models, e["image"], comp_rules), surface=surface))
        logger.info("study %d/%d done", i, len(entries))
    return rows, comp_rows, comp_rules


def _scored_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The per-study table; subtypes with a missing CT-level label in some study are left out of
    the CT-level columns, the other labels made integers."""
    table = _table(rows)
    for st in LABEL_NAMES:
        col = table.get(f"label:{st}")
        if col is not None and np.isnan(col.astype(np.float64)).any():
            logger.warning("subtype %s: CT-level label missing in some studies; not scored", st)
            for k in [k for k in table if k.endswith(f":{st}") and (k.startswith("label:") or k.startswith("score:"))]:
                del table[k]
    for st in LABEL_NAMES:
        if f"label:{st}" in table:
            table[f"label:{st}"] = table[f"label:{st}"].astype(np.float64).astype(int)
    return table


def _comparisons(table: Mapping[str, Any], comp_rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
                 chosen: Mapping[str, Any], comp_rules: Mapping[str, Any], compare_rules: Sequence[str] | None,
                 n_boot: int, seed: int) -> dict[str, Any] | None:
    """The paired comparison's metrics (two models or two rules), or None without one."""
    if compare_rules is not None:
        return _compare_rules(table, keys, compare_rules[0], compare_rules[1], chosen, n_boot, seed)
    return _compare(table, _table(comp_rows), keys, chosen, comp_rules, n_boot, seed) if comp_rows else None


def _comparison_section(comparisons: Mapping[str, Any], models: Mapping[str, Any], comparator: Any | None,
                        compare_rules: Sequence[str] | None) -> dict[str, Any]:
    """``metrics.json["comparisons"]``: what a and b are (two rules, or the folders of two models)
    and the paired differences."""
    if compare_rules is not None:
        a, b = f"rule {compare_rules[0]}", f"rule {compare_rules[1]}"
    else:
        a, b = _where(next(iter(models.values()))), _where(comparator)
    return {"a": a, "b": b, "difference": "a - b, paired patient-level bootstrap", "metrics": comparisons}


def _metrics_document(fields: Mapping[str, Any], section: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metrics.json``'s document (:func:`ichct.pipeline.evaluate.report.assemble_metrics` of ``fields``),
    with the paired comparison's ``section``, if any, under ``comparisons``."""
    from ichct.pipeline.evaluate.metrics_schema import validate_metrics
    from ichct.pipeline.evaluate.report import assemble_metrics

    doc = assemble_metrics(**fields)
    if section is not None:
        doc = validate_metrics({**doc, "comparisons": section})
    return doc


def _write_evaluation(doc: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], curves: Any,
                      section: Mapping[str, Any] | None, out: Path) -> Any:
    """Write the report (:func:`ichct.pipeline.evaluate.report.write_report`, plus the comparison's section
    of ``report.md``) into a folder beside ``out`` renamed to ``out`` at the end; the files written."""
    from ichct.pipeline.evaluate.report import write_report

    tmp = temp_dir_beside(out)
    try:
        written = write_report(doc, rows, curves, tmp)
        if section is not None:
            with open(tmp / "report.md", "a", encoding="utf-8") as f:
                f.write(_comparison_markdown(section))
        _prepare_out(out)  # still absent or empty: nothing of anyone's is replaced
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _finish_summary(summary: dict[str, Any], doc: Mapping[str, Any], section: Mapping[str, Any] | None,
                    ct_level: Mapping[str, Any], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """``summary`` with the comparison's differences (if any) and the ROC AUC of "any" under the
    first rule."""
    if section is not None:
        summary["comparisons"] = {k: {"a_minus_b": v.get("value"), "p_value": v.get("p_value")}
                                  for k, v in doc["comparisons"]["metrics"].items()}
    main_rule = next(iter(chosen))
    auc = ((ct_level.get("any") or {}).get(main_rule) or {}).get("roc_auc", {}).get("value")
    summary["roc_auc_any"] = {main_rule: None if auc is None or not math.isfinite(auc) else float(auc)}
    return summary
