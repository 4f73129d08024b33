"""Another tool's predictions for the studies of a split, as ichct's :class:`StudyPrediction`.

A predictions folder holds label maps (NIfTI or DICOM SEG, :mod:`.external_masks`, matched to
studies by :mod:`.external_matching`) and/or probability CSVs (:mod:`.external_probs`). For each
study :meth:`ExternalPredictions.predict` builds the
:class:`~ichct.pipeline.models.inference.StudyPrediction` ichct's own models would give, so the
same per-study rows, metrics and report follow:

* a label map, read onto the study's grid, is both ``seg_original`` and ``seg_preprocessed``
  (the tool's own grid is not ichct's model grid); its blood volumes in mL are the ``seg_volume``
  scores (no component is removed unless a given rule says so);
* probabilities fill ``slice_probs`` and the slice-rule scores (per-slice CSV), or the ``max``
  rule's scores (per-study CSV: the study's probability).

A study with no prediction is either an error listing the studies (``missing="error"``) or
counted negative (``missing="negative"``): an empty mask and probability 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ichct.errors import InputError
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision import DecisionRule, affine_voxel_volume_ml, decide_scores, segmentation_volumes
from ichct.pipeline.evaluate.external_labels import BINARY, LabelMap
from ichct.pipeline.evaluate.external_masks import MASK_SUFFIXES, Grid, labels_on_grid, read_mask, study_grid
from ichct.pipeline.evaluate.external_matching import Matching
from ichct.pipeline.evaluate.external_probs import (
    ExternalProbabilities,
    fill_probability_fields,
    find_probability_csvs,
    probability_rule_names,
    read_probabilities,
)

logger = logging.getLogger("ichct.evaluate")

__all__ = ["MISSING_POLICIES", "ExternalPredictions", "missing_note"]

MISSING_POLICIES = ("error", "negative")
SHOWN = 20  # studies listed in an error message


def missing_note(n_missing: int, n_studies: int, folder: Path) -> str:
    """The report's first line when studies without a prediction were counted negative.

    Examples
    --------
    >>> missing_note(2, 10, Path("preds"))
    '2 of 10 studies have no prediction in preds and are counted negative (empty mask, probability 0; --missing negative)'
    """
    return (f"{n_missing} of {n_studies} studies have no prediction in {folder} and are counted negative "
            "(empty mask, probability 0; --missing negative)")


class ExternalPredictions:
    """The label maps and probabilities in ``folder`` for ``entries`` (one split, or validation studies).

    Parameters
    ----------
    folder
        The predictions folder.
    entries
        Manifest entries (``load_manifest``: absolute paths).
    manifest_uids
        Study and series UIDs of the whole manifest (files of other studies are left out).
    matching, label_map
        How files are tied to studies, and what their values mean (None: the case map's labels,
        a SEG's segment labels, else binary).
    required
        False for validation predictions: rows of a ``--map`` CSV whose file is not in ``folder``
        are skipped rather than refused.

    Examples
    --------
    Needs a predictions folder and a manifest, so not run here::

        preds = ExternalPredictions(Path("nnunet_out"), entries, uids, Matching.from_option("case_map.json"), None)
        preds.rule_names(), preds.missing()
    """

    def __init__(self, folder: Path, entries: Sequence[Mapping[str, Any]], manifest_uids: set[str],
                 matching: Matching, label_map: LabelMap | None, required: bool = True) -> None:
        if not folder.is_dir():
            raise InputError(folder, "not a folder of predictions")
        self.folder, self.entries, self.matching = folder, list(entries), matching
        self.label_map = label_map or (matching.case_map.label_map() if matching.case_map is not None else None)
        self.masks = matching.match(folder, self.entries, manifest_uids, required_files=required)
        csvs = [p for p in find_probability_csvs(folder) if matching.map_csv is None
                or p.resolve() != matching.map_csv.resolve()]
        self.csvs = csvs
        self.probs = read_probabilities(csvs, self.entries, lambda e: str(e["study_uid"])) if csvs else {}
        if not self.masks and not self.probs:
            raise InputError(folder, f"no prediction of any of the {len(self.entries)} studies: no label map "
                                     f"({', '.join(MASK_SUFFIXES)}) matched ({matching.describe()}) "
                                     "and no probability CSV")
        self._num_classes: int | None = None

    def rule_names(self) -> tuple[str, ...]:
        """The rules these predictions can be scored by: ``seg_volume`` for label maps, the
        probabilities' rules (:func:`~.external_probs.probability_rule_names`)."""
        names: list[str] = ["seg_volume"] if self.masks else []
        kinds = {p.kind for p in self.probs.values()}
        if len(kinds) > 1:
            raise InputError(self.folder, "per-slice and per-study probability CSVs for different studies: give "
                                          "one form for the whole split")
        if self.probs:
            names += probability_rule_names(next(iter(self.probs.values())))
        return tuple(names)

    def has_prediction(self, i: int) -> bool:
        """The entry has every kind of prediction the folder holds."""
        e = self.entries[i]
        return (not self.masks or i in self.masks) and (not self.probs or str(e["study_uid"]) in self.probs)

    def missing(self) -> list[int]:
        """Indices of the entries without a prediction (of a kind the folder holds)."""
        return [i for i in range(len(self.entries)) if not self.has_prediction(i)]

    def refuse_missing(self) -> None:
        """:class:`~ichct.errors.InputError` listing the studies without a prediction, if any."""
        missing = self.missing()
        if missing:
            shown = ", ".join(str(self.entries[i].get("study_uid")) for i in missing[:SHOWN])
            more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
            raise InputError(self.folder, f"no prediction for {len(missing)} of the {len(self.entries)} evaluated "
                                          f"studies ({self.matching.describe()}): {shown}{more}; predict them, or "
                                          "count them negative with --missing negative")

    def predict(self, i: int, rules: Mapping[str, DecisionRule | None]) -> Any:
        """The :class:`~ichct.pipeline.models.inference.StudyPrediction` of entry ``i`` (empty
        mask / probability 0 where it has none)."""
        from ichct.pipeline.models.inference import StudyPrediction

        entry = self.entries[i]
        grid = study_grid(entry) if self.masks else None
        probs = self._probabilities(i, grid)
        n_slices = grid.shape[2] if grid is not None else (len(probs.slice_probs) if probs is not None and
                                                           probs.slice_probs is not None else 0)
        pred = StudyPrediction(image=str(entry["image"]), original_shape=grid.shape if grid else (0, 0, n_slices),
                               original_affine=grid.affine if grid else np.eye(4), n_slices=n_slices)
        if grid is not None:
            self._fill_mask(pred, i, grid, rules.get("seg_volume"))
        if probs is not None:
            given = {k: r for k, r in rules.items() if r is not None}
            fill_probability_fields(pred, probs, given, score_only=[k for k, r in rules.items() if r is None])
        return pred

    def _probabilities(self, i: int, grid: Grid | None) -> ExternalProbabilities | None:
        if not self.probs:
            return None
        entry = self.entries[i]
        found = self.probs.get(str(entry["study_uid"]))
        if found is not None:
            return found
        first = next(iter(self.probs.values()))
        if first.slice_probs is not None:
            n = len(entry.get("slice_labels") or []) or (grid.shape[2] if grid is not None else 0)
            if not n:
                raise InputError(self.folder, f"study {entry.get('study_uid')} has no prediction and no slice count "
                                              "to count it negative by (no slice_labels in the manifest)")
            return ExternalProbabilities(slice_probs=np.zeros((n, len(LABEL_NAMES))), source="missing: negative")
        return ExternalProbabilities(study_probs={k: 0.0 for k in first.labels}, source="missing: negative")

    def _mask(self, i: int, grid: Grid) -> np.ndarray:
        """The entry's predicted label map on ``grid``, in ichct's values (zeros when it has none)."""
        path = self.masks.get(i)
        if path is None:
            self.num_classes()
            return np.zeros(grid.shape, dtype=np.uint8)
        mask = read_mask(path)
        label_map = self.label_map or mask.default_map
        if label_map is None:
            raise InputError(path, "its segments do not say which subtype each is: give --label-map SEGMENT=NAME,...")
        if self._num_classes is not None and label_map.num_classes != self._num_classes:
            raise InputError(path, f"{label_map.num_classes}-class labels ({label_map.source}), other predictions "
                                   f"have {self._num_classes}; give one --label-map for all")
        self._num_classes = label_map.num_classes
        values = label_map.apply(mask.values, path)
        return labels_on_grid(values, mask.affine, grid, path, outside_is_background=mask.outside_is_background)

    def num_classes(self) -> int:
        """2 or 6: from the label map, else from the first prediction file's own map (SEG), else 2."""
        if self._num_classes is None:
            label_map = self.label_map
            if label_map is None and self.masks:
                label_map = read_mask(next(iter(self.masks.values()))).default_map
            self._num_classes = (label_map or BINARY).num_classes
        return self._num_classes

    def _fill_mask(self, pred: Any, i: int, grid: Grid, rule: DecisionRule | None) -> None:
        """Segmentation fields and ``seg_volume`` scores (and calls, with thresholds) of ``pred``."""
        from ichct.transforms import voxel_spacing

        mask = self._mask(i, grid)
        k = self.num_classes()
        voxel_ml = affine_voxel_volume_ml(grid.affine)
        pred.seg_original = pred.seg_preprocessed = mask
        pred.seg_preprocessed_affine = grid.affine
        pred.seg_spacing_mm = tuple(float(s) for s in voxel_spacing(grid.affine))
        pred.num_seg_classes = k
        pred.volumes_ml = pred.volumes_ml_original = segmentation_volumes(mask, voxel_ml, num_classes=k)
        if rule is None:
            pred.scores["seg_volume"] = dict(pred.volumes_ml)
            return
        scores = segmentation_volumes(mask, voxel_ml, rule.min_component_ml, num_classes=k,
                                      connectivity=rule.connectivity)
        pred.scores["seg_volume"] = scores
        pred.decisions["seg_volume"] = decide_scores(rule, scores, skip_unthresholded=True)

