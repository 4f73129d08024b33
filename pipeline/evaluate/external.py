"""Another tool's predictions as a model under evaluation (``ichct evaluate --predictions DIR``).

:func:`external_predictor` reads a predictions folder for the evaluated split
(:class:`~.external_predictions.ExternalPredictions`), settles the thresholds of its CT-level
calls and its leakage guard, and returns a :class:`~.predictors.Predictor` that ``evaluate``
scores exactly as it scores ichct's models:

* thresholds come from the user (:attr:`ExternalOptions.thresholds`, :func:`~.external_thresholds.load_thresholds`)
  or are chosen on the tool's predictions for validation studies
  (:attr:`ExternalOptions.val_predictions`, :func:`~.external_thresholds.choose_thresholds_on_validation`),
  which must not include an evaluated study; without either, rules have no threshold and only
  ROC/PR AUC, calibration and Dice are reported;
* the training record comes from :attr:`ExternalOptions.trained_on`
  (:func:`~.external_guard.trained_on_record`): required, ``"unknown"`` allowed (the report says so
  first).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ichct.errors import InputError, read_json
from ichct.pipeline.decision import DecisionRule
from ichct.pipeline.evaluate.external_guard import UNKNOWN_TRAINING_WARNING, trained_on_record
from ichct.pipeline.evaluate.external_labels import LabelMap, parse_label_map
from ichct.pipeline.evaluate.external_matching import Matching
from ichct.pipeline.evaluate.external_predictions import MISSING_POLICIES, ExternalPredictions, missing_note
from ichct.pipeline.evaluate.predictors import Predictor

logger = logging.getLogger("ichct.evaluate")

__all__ = ["ExternalOptions", "external_predictor"]


@dataclass(frozen=True)
class ExternalOptions:
    """How to read and judge another tool's predictions (the CLI's options of the same names).

    Attributes
    ----------
    trained_on
        What the tool was trained on: a manifest, nnU-Net's ``splits_final.json``, a PatientID
        list, or ``"unknown"`` (:mod:`.external_guard`). Required.
    label_map
        ``--label-map``: what the label values mean (:func:`~.external_labels.parse_label_map`).
    map_path
        ``--map``: an nnU-Net export's ``ichct_case_map.json`` or a ``study_uid,prediction`` CSV.
    missing
        ``"error"`` (default) or ``"negative"``: a study without a prediction counts as an empty
        mask and probability 0, said first in the report.
    thresholds, val_predictions
        A thresholds file, or validation prediction folders to choose thresholds on (not both).
    first
        In a comparison with an ichct model: True when these predictions are ``a`` (the report's model).

    Examples
    --------
    >>> ExternalOptions(trained_on="unknown", missing="negative").missing
    'negative'
    """

    trained_on: str | Path
    label_map: str | None = None
    map_path: str | Path | None = None
    missing: str = "error"
    thresholds: str | Path | None = None
    val_predictions: Sequence[str | Path] = ()
    first: bool = True

    def __post_init__(self) -> None:
        if self.missing not in MISSING_POLICIES:
            raise InputError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {self.missing!r}")
        if self.thresholds is not None and self.val_predictions:
            raise InputError("give thresholds (--thresholds) or validation predictions to choose them on "
                             "(--val-predictions), not both")
        if self.trained_on is None or not str(self.trained_on).strip():
            raise InputError("--trained-on is required with --predictions: the external model's training manifest, "
                             "nnU-Net splits_final.json or PatientID list, or 'unknown'")


def external_predictor(folder: str | Path, options: ExternalOptions, manifest: str | Path,
                       entries: Sequence[Mapping[str, Any]], rule_names: Sequence[str] | None = None) -> Predictor:
    """The predictions in ``folder`` for the evaluated ``entries`` of ``manifest`` as a :class:`Predictor`.

    Raises :class:`~ichct.errors.InputError` for anything wrong with the predictions (naming the
    file and row), studies without a prediction (unless ``options.missing == "negative"``), rules
    these predictions cannot give, or validation predictions of evaluated studies.

    Examples
    --------
    Needs a predictions folder and a manifest, so not run here::

        p = external_predictor("nnunet_out", ExternalOptions("splits_final.json", map_path="case_map.json"),
                               "m.json", load_manifest("m.json", "test"))
        p.predict(0, entries[0]).volumes_ml
    """
    from ichct.pipeline.manifests import load_manifest

    folder = Path(folder)
    manifest_doc = read_json(manifest, "manifest")
    all_entries = load_manifest(manifest, "all", check=False)
    uids = {str(e[k]) for e in all_entries for k in ("study_uid", "series_uid") if e.get(k)}
    matching = Matching.from_option(options.map_path)
    label_map = parse_label_map(options.label_map) if options.label_map else None
    record = trained_on_record(options.trained_on, manifest_doc, matching.case_map)
    preds = ExternalPredictions(folder, entries, uids, matching, label_map)
    warnings = _missing_warnings(preds, options, folder)
    names = _rule_names(preds, rule_names)
    val_source, rules = _thresholds(options, names, (all_entries, entries, uids, matching, label_map))
    if rules.get("seg_volume") is not None:  # the class count the volumes are scored with, for the record
        rules["seg_volume"] = dataclasses.replace(rules["seg_volume"], num_seg_classes=preds.num_classes())
    if record is None:
        warnings.append(UNKNOWN_TRAINING_WARNING)
    info = {"predictions": str(folder.resolve()), "matching": matching.describe(),
            "label_map": (preds.label_map.describe() if preds.label_map else None) if preds.masks else None,
            "n_label_maps": len(preds.masks), "probability_csvs": [str(p) for p in preds.csvs],
            "missing": options.missing, "missing_studies": [str(entries[i].get("study_uid")) for i in preds.missing()],
            "thresholds": val_source, "trained_on": record["source"] if record else "unknown"}
    records = [] if record is None else [(f"the external model ({options.trained_on})", lambda: record)]
    return Predictor(name=f"external:{folder.resolve().name}", where=str(folder.resolve()), rules=rules,
                     predict=lambda i, e: preds.predict(i, rules), info={"external": info}, records=records,
                     warnings=warnings)


def _missing_warnings(preds: ExternalPredictions, options: ExternalOptions, folder: Path) -> list[str]:
    """The missing-prediction policy: refuse, or the report's first line."""
    if options.missing == "error":
        preds.refuse_missing()
        return []
    missing = preds.missing()
    if not missing:
        return []
    note = missing_note(len(missing), len(preds.entries), folder)
    logger.warning("%s", note)
    return [note]


def _rule_names(preds: ExternalPredictions, wanted: Sequence[str] | None) -> list[str]:
    available = list(preds.rule_names())
    if wanted is None:
        return available
    unavailable = [r for r in wanted if r not in available]
    if unavailable:
        raise InputError(preds.folder, f"rule(s) {unavailable} cannot score these predictions; they give "
                                       f"{', '.join(available)} (label maps: seg_volume; per-slice probabilities: "
                                       "consecutive, max, topk_mean; per-study probabilities: max)")
    return [r for r in wanted if r in available]


def _thresholds(options: ExternalOptions, names: Sequence[str], context: tuple[Any, ...]
                ) -> tuple[str, dict[str, DecisionRule | None]]:
    """``(where the thresholds come from, {rule: DecisionRule or None})``."""
    from ichct.pipeline.evaluate.external_thresholds import load_thresholds

    if options.thresholds is not None:
        given = load_thresholds(options.thresholds)
        ignored = sorted(set(given) - set(names))
        if ignored:
            logger.warning("%s: rule(s) %s do not apply to these predictions; ignored", options.thresholds, ignored)
        return f"given in {options.thresholds}", {n: given.get(n) for n in names}
    if options.val_predictions:
        return _chosen_on_validation(options, names, *context)
    return "none (no --thresholds or --val-predictions): AUCs and Dice only", {n: None for n in names}


def _chosen_on_validation(options: ExternalOptions, names: Sequence[str], all_entries: Sequence[Mapping[str, Any]],
                          entries: Sequence[Mapping[str, Any]], uids: set[str], matching: Matching,
                          label_map: LabelMap | None) -> tuple[str, dict[str, DecisionRule | None]]:
    """Thresholds chosen on the tool's predictions in the validation folders (never on evaluated studies)."""
    from ichct.pipeline.evaluate.external_thresholds import choose_thresholds_on_validation

    evaluated = {str(e.get("study_uid")) for e in entries}
    scores: list[Mapping[str, Any]] = []
    val_entries: list[Mapping[str, Any]] = []
    for folder in (Path(f) for f in options.val_predictions):
        val = ExternalPredictions(folder, all_entries, uids, matching, label_map, required=False)
        have = [i for i in range(len(all_entries)) if val.has_prediction(i)]
        leaked = sorted({str(all_entries[i].get("study_uid")) for i in have} & evaluated)
        if leaked:
            raise InputError(folder, f"validation predictions of {len(leaked)} evaluated stud(ies) ({', '.join(leaked[:5])}"
                                     f"{' ...' if len(leaked) > 5 else ''}): thresholds are never chosen on the "
                                     "evaluated split")
        unscored = [n for n in names if n not in val.rule_names()]
        if unscored:
            raise InputError(folder, f"these validation predictions cannot give the rule(s) {unscored} of the "
                                     "evaluated predictions (give the same kind of predictions)")
        free = {n: None for n in names}
        scores += [val.predict(i, free).scores for i in have]
        val_entries += [all_entries[i] for i in have]
    rules = choose_thresholds_on_validation(scores, val_entries, names)
    dirs = ", ".join(str(f) for f in options.val_predictions)
    return f"chosen on validation predictions in {dirs} ({len(val_entries)} studies)", dict(rules)

