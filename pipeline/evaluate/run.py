"""``evaluate(...)``: score a model on a manifest split and write the evaluation report.

The model is a :class:`~ichct.pipeline.evaluate.predictors.Predictor`: ichct's runs or bundles, one
study at a time through :func:`ichct.pipeline.models.inference.predict_study` (the inference path
``ichct predict`` uses too), or another tool's predictions read from a folder
(:mod:`ichct.pipeline.evaluate.external`). Both share everything after the predictions: the
per-study table in the convention of :mod:`.metrics_ct` / :mod:`.metrics_seg` (columns
``label:<subtype>``, ``score:<rule>:<subtype>``, ``seg:<class>:<field>``, ``slice_ll_sum`` /
``n_slices``), patient-level bootstrap CIs, paired comparisons (:mod:`.compare`) and
:func:`ichct.pipeline.evaluate.report.write_report` (``metrics.json``, ``per_case.csv``,
``report.md``, PNG plots).

Leakage guard: patients of a run's ``train_patients.json`` (by patient key under the same salt,
by study or series UID under any; :mod:`ichct.pipeline.train.record`), or of what ``--trained-on``
says another tool was trained on, are refused (:class:`EvaluationOverlapError`, naming them)
unless ``allow_overlap=True``, in which case ``metrics.json`` has ``allow_overlap: true`` and
``report.md`` starts with a warning. The run's own validation fold and a differently salted
manifest are flagged in ``warnings``.

The output folder is written as a whole: everything goes into a temporary folder beside it that
is renamed at the end, so an error never leaves a half-written ``EVAL_DIR``. From
:data:`~ichct.pipeline.evaluate.cohort.MIN_CLUSTER_STUDIES` studies on (or with a given Dask
client or scheduler), ichct's models predict the studies as Dask tasks
(:mod:`ichct.pipeline.evaluate.cohort`); their per-study rows are kept under
``EVAL_DIR/studies/`` until the report is written, so a rerun of an interrupted evaluation into the
same ``EVAL_DIR`` redoes only the unfinished studies.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ichct.errors import IchctError, InputError
from ichct.pipeline.core.atomic import replace_dir, temp_dir_beside
from ichct.pipeline.core.cluster import ClusterSpec
from ichct.pipeline.core.devices import torch_device
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision import RULES, affine_voxel_volume_ml, models_needed
from ichct.pipeline.evaluate.cohort import MIN_CLUSTER_STUDIES, STUDIES_DIR, IchctStudyPredictor, rows_on_cluster
from ichct.pipeline.evaluate.predictors import Predictor, ichct_predictor, model_folder, rules_info
from ichct.pipeline.train.record import check_split, manifest_salt_id

if TYPE_CHECKING:
    from ichct.pipeline.evaluate.external import ExternalOptions
    from ichct.pipeline.evaluate.lesions import LesionDefinition

logger = logging.getLogger("ichct.evaluate")

__all__ = ["EvaluationOverlapError", "evaluate", "study_row"]

SPLITS = ("test", "training", "validation", "all")
#: Segmentation metrics of "any" blood in the summary ``evaluate`` returns (and the CLI prints).
SUMMARY_SEG_METRICS = ("dice_positive", "dice", "lesion_sensitivity", "fp_per_scan")


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


def study_row(entry: Mapping[str, Any], pred: Any, surface: bool = True,
              lesions: LesionDefinition | None = None) -> dict[str, Any]:
    """One per-study row: ids, labels, rule scores, slice log loss, segmentation fields (lesion
    counts by ``lesions``, default :data:`~ichct.pipeline.evaluate.lesions.DEFAULT_LESIONS`; with
    brain-referenced HU, the brain tissue level ``brain_tissue_hu`` and each model's ``hu_shift:<kind>``)."""
    from ichct.pipeline.evaluate.metrics_ct import rsna_row_losses
    from ichct.pipeline.evaluate.metrics_seg import segmentation_case_metrics

    row: dict[str, Any] = {"study_id": entry.get("study_uid", ""), "patient_key": str(entry["patient_key"]),
                           "n_slices_image": pred.n_slices}
    for st in LABEL_NAMES:
        row[f"label:{st}"] = _ct_label(entry, st)
    for kind, ref in pred.hu_reference.items():  # brain-referenced HU: level and shift per model
        level = ref.get("brain_tissue_hu")
        row["brain_tissue_hu"] = math.nan if level is None else float(level)
        row[f"hu_shift:{kind}"] = float(ref["shift_hu"])
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
                                           voxel_volume_ml=affine_voxel_volume_ml(pred.original_affine),
                                           lesions=lesions)
            for cls, fields in cm.items():
                for f, v in fields.items():
                    row[f"seg:{cls}:{f}"] = v
    return row


def _table(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Columns present in every row (others dropped), as arrays."""
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: np.asarray([r[k] for r in rows]) for k in keys if k not in ("study_id", "patient_key")}


def _check_against_training(predictors: Sequence[Predictor], entries: Sequence[Mapping[str, Any]],
                            salt_id: str | None) -> tuple[set[str], list[str], list[str]]:
    """(training patients in the split, the models that saw them, warnings for the report).

    Uses each model's training record (:mod:`ichct.pipeline.train.record`; for another tool's
    predictions, what ``--trained-on`` says): patient keys when the salts agree, study and series
    UIDs whatever the salt; entries of a model's own validation fold are not refused but flagged,
    since that fold chose the checkpoint and the thresholds.
    """
    overlap: set[str] = set()
    runs: list[str] = []
    warnings: list[str] = []
    for predictor in predictors:
        for where, record in predictor.records:
            check = check_split(record(), entries, salt_id, where=where)
            if check.leaked:
                overlap |= check.leaked
                runs.append(where)
            if check.validation:
                warnings.append(f"{len(check.validation)} of the evaluated patients are in the validation fold of "
                                f"{where}, which chose its checkpoint and thresholds: the metrics are optimistic, "
                                "not a held-out estimate")
            warnings.extend(check.notes)
    return overlap, runs, warnings


def _prepare_out(out: Path) -> None:
    """Refuse an ``out`` that is not absent, empty, or an interrupted evaluation (only ``studies/``)."""
    if out.exists() and (not out.is_dir() or any(p.name != STUDIES_DIR for p in out.iterdir())):
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
    predictions: str | Path | None = None,
    external: ExternalOptions | None = None,
    cluster: ClusterSpec | None = None,
    client: Any = None,
    lesions: LesionDefinition | None = None,
) -> dict[str, Any]:
    """Evaluate one seg and/or one cls model (run directory or bundle), or another tool's
    predictions, on a manifest split.

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
        ``topk_mean`` with a classifier, ``seg_volume`` and ``seg_peak`` with a segmenter).
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
    predictions, external
        A folder of another tool's predictions (label maps and/or probability CSVs) and how to
        read and judge them (:class:`~ichct.pipeline.evaluate.external.ExternalOptions`, required
        with ``predictions``; see :mod:`ichct.pipeline.evaluate.external`). With ``runs`` or
        ``bundles`` too, the predictions and the ichct model are compared (paired bootstrap;
        ``external.first`` says which is ``a``).
    cluster, client
        Where ichct's models predict the studies as Dask tasks (a
        :class:`~ichct.pipeline.core.cluster.ClusterSpec`, default a local cluster; or a connected
        client). Used with a client or a scheduler address, or from
        :data:`~ichct.pipeline.evaluate.cohort.MIN_CLUSTER_STUDIES` studies on; the metrics do not
        depend on it.
    lesions
        What a lesion is for the lesion-level metrics (``lesion_sensitivity``, ``fp_per_scan``):
        a :class:`~ichct.pipeline.evaluate.lesions.LesionDefinition`, default 26-connected
        components of >= 0.05 mL in reference and prediction alike. Recorded as
        ``metrics.json["lesion_definition"]`` and printed in ``report.md``. The decision rules'
        own ``connectivity`` (``seg_volume``) is not affected.

    Raises
    ------
    EvaluationOverlapError
        The split holds training patients and ``allow_overlap`` is false.
    ichct.errors.IchctError
        Bad arguments, a manifest failing its checks, an existing output folder, a model that cannot
        be read, predictions that cannot be read or do not cover the split (all ``ValueError``).
    """
    from ichct.pipeline.evaluate.lesions import DEFAULT_LESIONS, LesionDefinition

    t0 = time.perf_counter()
    _check_arguments(split, n_boot, seed, rules, predictions, external)
    if lesions is None:
        lesions = DEFAULT_LESIONS
    elif not isinstance(lesions, LesionDefinition):
        raise InputError(f"lesions must be a LesionDefinition, got {type(lesions).__name__}")
    torch_device(device)
    out = Path(out_dir)
    _prepare_out(out)
    manifest = Path(manifest)
    loaded, shipped_warning = _load_models(runs, bundles, models_source, device, checkpoint,
                                           need_models=predictions is None)
    pair = None if predictions is not None else _ichct_predictors(loaded, rules, compare_rules)
    entries = _split_entries(manifest, split, fold)
    if pair is None:
        pair = _external_predictors(loaded, predictions, external, manifest, entries, rules, compare_rules)
    main, other = pair
    overlap, report_warnings = _guard(pair, entries, manifest, shipped_warning, allow_overlap)
    keys = [str(e["patient_key"]) for e in entries]
    rows, comp_rows = _predict_rows(entries, main, other, surface, out, cluster, client, lesions)
    ct_level, curves, seg, section = _score(rows, comp_rows, keys, main, other, compare_rules, n_boot, seed)
    model_info = {"name": main.name, **main.info, "rules": rules_info(main.rules), "device": device,
                  "overlap_patients": sorted(overlap)}
    manifest_info = {"path": str(manifest.resolve()), "sha256": sha256_file(manifest), "fold": fold}
    doc = _metrics_document(
        dict(model=model_info, manifest=manifest_info, split=split, patient_keys=keys, ct_level=ct_level,
             segmentation=seg, allow_overlap=bool(overlap), n_boot=n_boot, seed=seed, warnings=report_warnings,
             models_source=models_source, lesion_definition=lesions.to_dict()),
        section)
    written = _write_evaluation(doc, rows, curves, section, out)
    summary = {"out_dir": str(out), "split": split, "n_studies": len(entries), "n_patients": len(set(keys)),
               "rules": list(main.rules), "allow_overlap": bool(overlap),
               "overlap_patients": len(overlap), "files": sorted(written),
               "time_s": round(time.perf_counter() - t0, 2), "models_source": models_source}
    return _finish_summary(summary, doc, section, ct_level, main.rules)


def _check_arguments(split: str, n_boot: int, seed: int, rules: Sequence[str] | None,
                     predictions: str | Path | None = None, external: ExternalOptions | None = None) -> None:
    """Refuse an unknown split or rule, no bootstrap resample, a negative seed, predictions without
    their options."""
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
    if (predictions is None) != (external is None):
        raise InputError("predictions and their options (external=ExternalOptions(...)) go together")


def _load_models(runs: Sequence[str | Path], bundles: Sequence[str | Path], models_source: str, device: str,
                 checkpoint: str, need_models: bool = True) -> tuple[list[Any], str | None]:
    """The loaded models (runs, then bundles; the shipped bundles when ``models_source="shipped"``
    names none) and, for shipped models, their warning (logged here)."""
    from ichct.pipeline.models.inference import load_run
    from ichct.pipeline.models.shipped_models import MODELS_SOURCES, is_shipped_model, shipped_bundle_dirs

    if models_source not in MODELS_SOURCES:
        raise IchctError(f"models_source must be one of {', '.join(MODELS_SOURCES)}, got {models_source!r}")
    if models_source == "shipped" and not runs and not bundles:
        bundles = list(shipped_bundle_dirs().values())
    if need_models and not runs and not bundles:
        raise InputError("at least one --run or --bundle is needed")
    loaded = [load_run(r, device=device, checkpoint=checkpoint) for r in runs]
    if bundles:
        from ichct.pipeline.bundle.package import load_bundle

        loaded += [load_bundle(b, device=device) for b in bundles]
    shipped_warning = None
    if models_source == "shipped":
        from ichct.pipeline.models.shipped_models import shipped_models_warning

        other = [model_folder(m) for m in loaded if not is_shipped_model(m)]
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
                raise InputError(f"two {m.kind} models given ({model_folder(models[m.kind])}, {model_folder(m)}) "
                                 "together with another run; give one seg and one cls run, or two runs of one kind "
                                 "to compare")
            models[m.kind] = m
    return models, comparator


def _ichct_predictors(loaded: Sequence[Any], rules: Sequence[str] | None,
                      compare_rules: Sequence[str] | None) -> tuple[Predictor, Predictor | None]:
    """ichct's model(s) under the chosen rules, and the model they are compared with (if any)."""
    from ichct.pipeline.models.inference import default_rules

    models, comparator = _assign_models(loaded)
    chosen = default_rules(models, rules)
    if rules is not None:
        missing = [r for r in rules if r not in chosen]
        if missing:
            raise InputError(f"rule(s) {missing} need {models_needed(missing[0])} (a run or bundle), which was "
                             "not given")
    _check_rule_choice(chosen, compare_rules, comparator is not None)
    main = _ichct(models, chosen)
    if comparator is None:
        return main, None
    comp_models = {comparator.kind: comparator}
    return main, _ichct(comp_models, default_rules(comp_models, list(chosen)))


def _ichct(models: Mapping[str, Any], rules: Mapping[str, Any]) -> Predictor:
    """:func:`ichct_predictor` whose ``predict`` can run on a Dask worker (:class:`IchctStudyPredictor`)."""
    return dataclasses.replace(ichct_predictor(models, rules), predict=IchctStudyPredictor.of(models, rules))


def _check_rule_choice(chosen: Mapping[str, Any], compare_rules: Sequence[str] | None, two_models: bool) -> None:
    """Some rule is left, and ``compare_rules`` names two of them (and no second model is compared)."""
    if not chosen:
        raise InputError("no decision rule left to evaluate")
    if compare_rules is None:
        return
    if len(compare_rules) != 2:
        raise InputError(f"compare_rules needs two rule names, got {list(compare_rules)}")
    if two_models:
        raise InputError("compare either two models or two rules, not both at once")
    unavailable = [r for r in compare_rules if r not in chosen]
    if unavailable:
        raise InputError(f"cannot compare rule(s) {unavailable}: the evaluated rules are {list(chosen)} "
                         "(a slice rule needs a classifier, seg_volume and seg_peak a segmenter, fused both)")


def _external_predictors(loaded: Sequence[Any], predictions: str | Path | None, external: ExternalOptions | None,
                         manifest: Path, entries: Sequence[Mapping[str, Any]], rules: Sequence[str] | None,
                         compare_rules: Sequence[str] | None) -> tuple[Predictor, Predictor | None]:
    """Another tool's predictions, and the ichct model they are compared with (if any), in the
    order ``external.first`` says."""
    from ichct.pipeline.evaluate.external import external_predictor
    from ichct.pipeline.models.inference import default_rules

    assert predictions is not None and external is not None  # _check_arguments
    ext = external_predictor(predictions, external, manifest, entries, rules)
    _check_rule_choice(ext.rules, compare_rules, bool(loaded))
    if not loaded:
        return ext, None
    models, comparator = _assign_models(loaded)
    if comparator is not None:
        raise InputError("compare the predictions with one ichct model (a seg and/or a cls run or bundle), not two "
                         "of one kind")
    ichct = _ichct(models, default_rules(models, rules))
    return (ext, ichct) if external.first else (ichct, ext)


def _split_entries(manifest: Path, split: str, fold: int | None) -> list[Mapping[str, Any]]:
    """The split's entries (:func:`ichct.pipeline.manifests.load_manifest`: the manifest checked first)."""
    from ichct.pipeline.manifests import load_manifest

    entries = load_manifest(manifest, split, fold=fold)
    if not entries:
        raise InputError(manifest, f"split {split!r} is empty")
    return entries


def _guard(predictors: Sequence[Predictor | None], entries: Sequence[Mapping[str, Any]], manifest: Path,
           shipped_warning: str | None, allow_overlap: bool) -> tuple[set[str], list[str]]:
    """``(training patients among the entries, warnings for the report)`` after the leakage guard
    (:class:`EvaluationOverlapError` unless ``allow_overlap``); the predictors' own warnings
    (missing predictions counted negative, unknown training data) come first."""
    present = [p for p in predictors if p is not None]
    overlap, overlap_runs, guard_warnings = _check_against_training(present, entries, manifest_salt_id(manifest))
    for w in guard_warnings:
        logger.warning("%s", w)
    first = [w for p in present for w in p.warnings]
    report_warnings = first + ([shipped_warning] if shipped_warning is not None else []) + guard_warnings
    if overlap and not allow_overlap:
        raise EvaluationOverlapError(sorted(overlap), overlap_runs)
    if overlap:
        logger.warning("evaluating %d training patient(s) (--allow-overlap): metrics are optimistic", len(overlap))
    return overlap, report_warnings


def _use_cluster(n_studies: int, cluster: ClusterSpec | None, client: Any) -> bool:
    """Predict on Dask: with a client or a scheduler address given, or a cohort worth the workers' start."""
    return (client is not None or (cluster is not None and cluster.resolved_scheduler() is not None)
            or n_studies >= MIN_CLUSTER_STUDIES)


def _predict_rows(entries: Sequence[Mapping[str, Any]], main: Predictor, other: Predictor | None, surface: bool,
                  out: Path, cluster: ClusterSpec | None = None, client: Any = None,
                  lesions: LesionDefinition | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(rows, comparator rows)``: one :func:`study_row` per study and model, in manifest order.

    ichct's models predict on Dask (:func:`~ichct.pipeline.evaluate.cohort.rows_on_cluster`, rows
    kept under ``out/studies/``) when :func:`_use_cluster`; another tool's predictions, and small
    cohorts, are read here.
    """
    predictors = [p for p in (main, other) if p is not None]
    on_cluster = [p for p in predictors if isinstance(p.predict, IchctStudyPredictor)]
    by_predictor: dict[int, list[dict[str, Any]]] = {}
    if on_cluster and _use_cluster(len(entries), cluster, client):
        specs = [p.predict for p in on_cluster]
        p_rows_all = rows_on_cluster(entries, specs, surface, out / STUDIES_DIR, cluster, client, lesions=lesions)
        for p, p_rows in zip(on_cluster, p_rows_all):
            by_predictor[id(p)] = p_rows
    for p in predictors:
        if id(p) not in by_predictor:
            by_predictor[id(p)] = []
            for i, e in enumerate(entries):
                by_predictor[id(p)].append(study_row(e, p.predict(i, e), surface=surface, lesions=lesions))
                logger.info("study %d/%d done", i + 1, len(entries))
    return by_predictor[id(main)], (by_predictor[id(other)] if other is not None else [])


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


def _score(rows: Sequence[Mapping[str, Any]], comp_rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
           main: Predictor, other: Predictor | None, compare_rules: Sequence[str] | None, n_boot: int,
           seed: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """``(ct_level, curves, segmentation, comparison section or None)`` of the per-study rows."""
    from ichct.pipeline.evaluate.compare import compare_models
    from ichct.pipeline.evaluate.compare import compare_rules as compare_two_rules
    from ichct.pipeline.evaluate.metrics_ct import ct_level_metrics
    from ichct.pipeline.evaluate.metrics_seg import segmentation_summary

    table = _scored_table(rows)
    ct_level, curves = ct_level_metrics(table, keys, main.rules, n_boot=n_boot, seed=seed)
    seg_classes = [c for c in LABEL_NAMES if f"seg:{c}:dice" in table]
    seg = segmentation_summary(table, keys, classes=seg_classes, n_boot=n_boot, seed=seed) if seg_classes else {}
    if compare_rules is not None:
        a, b = f"rule {compare_rules[0]}", f"rule {compare_rules[1]}"
        metrics = compare_two_rules(table, keys, compare_rules[0], compare_rules[1], main.rules, n_boot, seed)
    elif other is not None:
        a, b = main.where, other.where
        metrics = compare_models(table, _table(comp_rows), keys, main.rules, other.rules, n_boot, seed)
    else:
        return ct_level, curves, seg, None
    section = {"a": a, "b": b, "difference": "a - b, paired patient-level bootstrap", "metrics": metrics}
    return ct_level, curves, seg, section


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
    from ichct.pipeline.evaluate.compare import comparison_markdown
    from ichct.pipeline.evaluate.report import write_report

    tmp = temp_dir_beside(out)
    try:
        written = write_report(doc, rows, curves, tmp)
        if section is not None:
            with open(tmp / "report.md", "a", encoding="utf-8") as f:
                f.write(comparison_markdown(section))
        _prepare_out(out)  # still absent or empty: nothing of anyone's is replaced
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _finish_summary(summary: dict[str, Any], doc: Mapping[str, Any], section: Mapping[str, Any] | None,
                    ct_level: Mapping[str, Any], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """``summary`` with the comparison's differences (if any), the ROC AUC of "any" under the
    first rule and, with a segmenter, Dice and the lesion-level metrics of "any" with their CIs."""
    seg_any = (doc.get("segmentation") or {}).get("any")
    if seg_any:
        summary["segmentation_any"] = {"lesions": doc["lesion_definition"]["description"]} | {
            m: {k: seg_any[m].get(k) for k in ("value", "ci_low", "ci_high")}
            for m in SUMMARY_SEG_METRICS if m in seg_any}
    if section is not None:
        summary["comparisons"] = {k: {"a_minus_b": v.get("value"), "p_value": v.get("p_value")}
                                  for k, v in doc["comparisons"]["metrics"].items()}
    main_rule = next(iter(chosen))
    auc = ((ct_level.get("any") or {}).get(main_rule) or {}).get("roc_auc", {}).get("value")
    summary["roc_auc_any"] = {main_rule: None if auc is None or not math.isfinite(auc) else float(auc)}
    return summary
