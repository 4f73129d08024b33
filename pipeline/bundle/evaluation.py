"""A bundle's evaluation by its own configs (``configs/evaluate.json``): MONAI runs the network, ichct scores it.

``evaluate.json`` runs the bundle's network over a manifest split with MONAI's
``SupervisedEvaluator`` and the preprocessing and postprocessing that ``inference.json`` lists;
this module supplies the rest of what ``ichct evaluate --bundle`` does, with the same metric code
(:mod:`ichct.pipeline.evaluate.metrics_ct`, :mod:`~ichct.pipeline.evaluate.metrics_seg`,
:mod:`~ichct.pipeline.evaluate.report`):

* :func:`evaluation_studies` - the split's entries, after the leakage guard (the patients, studies
  and series of ``models/train_patients.json`` are refused, :mod:`ichct.pipeline.train.record`)
  and the check that the output folder is free, so nothing runs on a refused split;
* :class:`EvaluationRecorder` - an evaluator handler: per study the row of ichct's per-case table
  (labels, the stored decision rule's score and call, slice log loss, blood volumes and
  segmentation metrics on the input's own grid), at the end the patient-level bootstrap metrics,
  ``metrics.json``, ``per_case.csv``, ``report.md`` and the plots, written into a temporary folder
  renamed to ``output_dir``.

The bundle's stored rule (``models/thresholds.json``) is the one evaluated; ``ichct evaluate
--bundle`` evaluates the other rules beside it (the other slice rules; the segmenter's ``seg_peak``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from ichct.errors import IchctError, InputError, read_json
from ichct.pipeline.bundle.components import manifest_split
from ichct.pipeline.core.atomic import replace_dir, temp_dir_beside
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision import DecisionRule, affine_voxel_volume_ml, ct_scores, decide, segmentation_volumes, \
    voxel_volume_ml
from ichct.pipeline.evaluate.metrics_ct import ct_level_metrics, rsna_row_losses
from ichct.pipeline.evaluate.lesions import DEFAULT_LESIONS
from ichct.pipeline.evaluate.metrics_seg import segmentation_case_metrics, segmentation_summary
from ichct.pipeline.evaluate.report import assemble_metrics, write_report
from ichct.pipeline.train.record import check_split, manifest_salt_id
from ichct.transforms.crop import voxel_spacing
from ichct.transforms.loading import LoadCT

logger = logging.getLogger("ichct.bundle")

__all__ = ["TrainingPatientsError", "evaluation_studies", "EvaluationRecorder", "study_row"]


class TrainingPatientsError(IchctError):
    """The evaluated split holds patients (or studies, series) the bundle's model was trained on."""


def _free_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "exists and is not an empty folder; choose another --output_dir")


def evaluation_studies(manifest: str | Path, split: str, fold: int | None, record: str | Path, output_dir: str | Path,
                       allow_overlap: bool = False) -> list[dict[str, Any]]:
    """The entries of the evaluated split, once they may be evaluated.

    Parameters
    ----------
    manifest, split, fold
        The split (:func:`~ichct.pipeline.bundle.components.manifest_split`).
    record
        The bundle's ``models/train_patients.json``.
    output_dir
        The evaluation's output folder: must not exist or be empty.
    allow_overlap
        Evaluate even when the split holds training patients (``metrics.json`` then says so).

    Raises
    ------
    TrainingPatientsError
        Training patients in the split and not ``allow_overlap`` ("refusing to evaluate ...").
    ichct.errors.InputError
        An empty split, an occupied output folder, an unreadable manifest or record.
    """
    _free_output(Path(output_dir))
    entries = manifest_split(manifest, split, fold)
    if not entries:
        raise InputError(manifest, f"split {split!r} is empty")
    check = check_split(read_json(record, "training record"), entries, manifest_salt_id(manifest),
                        where=str(Path(record).parent.parent))
    if check.leaked and not allow_overlap:
        keys = sorted(check.leaked)
        raise TrainingPatientsError(
            f"refusing to evaluate: {len(keys)} patient(s) of this split are in the training patients of "
            f"{record}: {', '.join(keys[:50])}{' ...' if len(keys) > 50 else ''} (set allow_overlap to true to "
            "evaluate anyway; the report will say so)")
    for note in check.notes:
        logger.warning("%s", note)
    return entries


def _ct_label(entry: Mapping[str, Any], subtype: str) -> float:
    value = (entry.get("ct_labels") or {}).get(subtype)
    return float("nan") if value is None or float(value) < 0 else float(value)


def _slice_log_loss(entry: Mapping[str, Any], slice_probs: np.ndarray) -> dict[str, Any]:
    """``slice_ll_sum`` and ``n_slices`` over the slices with known labels (none without labels)."""
    labels = np.asarray(entry.get("slice_labels") or [], dtype=np.float64)
    if labels.shape != slice_probs.shape:
        return {}
    known = np.all(labels >= 0, axis=1)
    if not known.any():
        return {}
    return {"slice_ll_sum": float(rsna_row_losses(slice_probs[known], labels[known]).sum()),
            "n_slices": int(known.sum())}


def _label_map(img: Any) -> np.ndarray:
    """``(X, Y, Z)`` uint8 labels of a ``(1, X, Y, Z)`` label map."""
    return np.asarray(torch.as_tensor(img).detach().cpu())[0].astype(np.uint8)


def _seg_fields(entry: Mapping[str, Any], labels: np.ndarray, voxel_ml: float, original: Any, num_classes: int,
                min_component_ml: float) -> dict[str, Any]:
    """Blood volumes on the model's grid (``labels``) and, with a reference label, the segmentation
    metrics on the input's grid (``original``)."""
    out: dict[str, Any] = {f"vol_ml:{c}": float(v) for c, v in segmentation_volumes(
        labels, voxel_ml, num_classes=num_classes, min_component_ml=min_component_ml).items()}
    if entry.get("label"):
        pred = _label_map(original)
        ref = np.asarray(LoadCT()(entry["label"]))[0]
        if ref.shape != pred.shape:
            raise InputError(entry["label"], f"label shape {ref.shape} differs from the image {pred.shape}")
        k = 2 if num_classes == 6 and entry.get("label_values", "ichct") != "ichct" else num_classes
        metrics = segmentation_case_metrics(pred, np.rint(ref).astype(np.int64).clip(0, 5),
                                            voxel_spacing(original.affine), k,
                                            voxel_volume_ml=affine_voxel_volume_ml(original.affine))
        out.update({f"seg:{c}:{f}": v for c, fields in metrics.items() for f, v in fields.items()})
    return out


def study_row(entry: Mapping[str, Any], rule: DecisionRule, output: Mapping[str, Any],
              num_classes: int | None = None) -> dict[str, Any]:
    """One study's row of the per-case table from the evaluator's postprocessed output.

    Parameters
    ----------
    entry
        The manifest entry (ids, ``ct_labels``, ``slice_labels``, ``label``).
    rule
        The decision rule scored and called.
    output
        The postprocessed output: cls ``pred`` = ``(6, S)`` slice probabilities; seg ``pred`` = the
        label map on the input's grid and ``pred_model_grid`` = the label map on the model's grid.
    num_classes
        The segmenter's classes (seg only).
    """
    row: dict[str, Any] = {"study_id": entry.get("study_uid", ""), "patient_key": str(entry["patient_key"])}
    row.update({f"label:{st}": _ct_label(entry, st) for st in LABEL_NAMES})
    if num_classes is None:
        probs = np.asarray(torch.as_tensor(output["pred"]).detach().float().cpu(), dtype=np.float64).T  # (S, 6)
        inputs: dict[str, Any] = {"slice_probs": probs}
        row.update(n_slices_image=int(probs.shape[0]), **_slice_log_loss(entry, probs))
    else:
        grid = output["pred_model_grid"]
        inputs = {"segmentation": _label_map(grid), "voxel_volume_ml": voxel_volume_ml(voxel_spacing(grid.affine))}
        row.update(n_slices_image=int(output["pred"].shape[-1]),
                   **_seg_fields(entry, inputs["segmentation"], inputs["voxel_volume_ml"], output["pred"], num_classes,
                                 float(rule.min_component_ml or 0.0)))
    for st, score in ct_scores(rule, **inputs).items():
        row[f"score:{rule.name}:{st}"] = float(score)
    for st, call in decide(rule, **inputs).items():
        row[f"call:{rule.name}:{st}"] = int(bool(call["positive"]))
    return row


def _table(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The columns every row has, as arrays; CT-level columns of a subtype unlabelled in some study left out."""
    shared = [k for k in rows[0] if k not in ("study_id", "patient_key") and all(k in r for r in rows)]
    table = {k: np.asarray([r[k] for r in rows]) for k in shared}
    for st in LABEL_NAMES:
        labels = table.get(f"label:{st}")
        if labels is None:
            continue
        if np.isnan(labels.astype(np.float64)).any():
            logger.warning("subtype %s: CT-level label missing in some studies; not scored", st)
            for k in [k for k in table if k.endswith(f":{st}") and k.split(":", 1)[0] in ("label", "score")]:
                del table[k]
        else:
            table[f"label:{st}"] = labels.astype(np.float64).astype(int)
    return table


class EvaluationRecorder:
    """Evaluator handler: a per-case row per study, and at the end the evaluation's files.

    Parameters
    ----------
    studies
        The evaluated entries (:func:`evaluation_studies`), in the data loader's order.
    rule
        The bundle's decision rule (``models/thresholds.json``).
    bundle_root
        The bundle (its ``models/`` describe the model in ``metrics.json``).
    manifest, split, fold
        The evaluated split (recorded).
    output_dir
        Where ``metrics.json``, ``per_case.csv``, ``report.md`` and the plots go (a new folder).
    n_boot, seed
        Patient-level bootstrap resamples and seed.
    num_classes
        The segmenter's classes; None for the classifier.

    ``metrics.json`` says ``allow_overlap: true`` when the studies hold training patients (which
    :func:`evaluation_studies` let through only when asked to), as ``ichct evaluate`` does.
    """

    def __init__(self, studies: Sequence[Mapping[str, Any]], rule: DecisionRule, bundle_root: str | Path,
                 manifest: str | Path, split: str, fold: int | None, output_dir: str | Path, n_boot: int = 2000,
                 seed: int = 0, num_classes: int | None = None) -> None:
        if int(n_boot) < 1:
            raise InputError(f"bootstrap must be >= 1, got {n_boot}")
        self.studies, self.rule, self.root = list(studies), rule, Path(bundle_root)
        self.manifest, self.split, self.fold = Path(manifest), split, fold
        self.out, self.n_boot, self.seed = Path(output_dir), int(n_boot), int(seed)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.add_rows)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def add_rows(self, engine: Engine) -> None:
        """The rows of the engine's current batch (its items carry ``study``, their index in ``studies``)."""
        for item, out in zip(engine.state.batch, engine.state.output):
            entry = self.studies[int(item["study"])]
            self.rows.append(study_row(entry, self.rule, out, self.num_classes))
            logger.info("study %d/%d done", len(self.rows), len(self.studies))

    def _model(self, overlap: Sequence[str], device: str) -> dict[str, Any]:
        """``metrics.json["model"]``: the bundle's run, version, weights and rule."""
        rc = read_json(self.root / "models" / "run_config.json", "bundle run config")
        kind, info = str(rc.get("kind")), dict(rc.get("bundle") or {})
        described = {"kind": kind, "run_dir": str((self.root / "models").resolve()), "checkpoint": "models/model.pt",
                     "epoch": info.get("epoch"), "fold": rc.get("fold"), "seed": rc.get("seed"),
                     "manifest_sha256": rc.get("manifest_sha256"), "versions": rc.get("versions", {}),
                     "rule": self.rule.to_dict(), "bundle_dir": str(self.root.resolve()),
                     "bundle_version": info.get("version"),
                     "weights_sha256": sha256_file(self.root / "models" / "model.pt")}
        return {"name": f"{kind}:{self.root.resolve().name}", "runs": {kind: described},
                "rules": {self.rule.name: self.rule.to_dict()}, "device": device,
                "overlap_patients": sorted(overlap)}

    def write(self, engine: Engine | None = None) -> None:
        """Bootstrap the metrics and write the evaluation folder (atomically)."""
        if len(self.rows) != len(self.studies):
            raise RuntimeError(f"{len(self.rows)} evaluated studies of {len(self.studies)}")
        keys = [r["patient_key"] for r in self.rows]
        record = read_json(self.root / "models" / "train_patients.json", "training record")
        overlap = check_split(record, self.studies, manifest_salt_id(self.manifest)).leaked
        table = _table(self.rows)
        ct_level, curves = ct_level_metrics(table, keys, {self.rule.name: self.rule}, n_boot=self.n_boot,
                                            seed=self.seed)
        classes = [c for c in LABEL_NAMES if f"seg:{c}:dice" in table]
        seg = segmentation_summary(table, keys, classes=classes, n_boot=self.n_boot, seed=self.seed) if classes else {}
        device = str(getattr(engine.state, "device", "cpu")) if engine is not None else "cpu"
        doc = assemble_metrics(model=self._model(sorted(overlap), device),
                               manifest={"path": str(self.manifest.resolve()), "sha256": sha256_file(self.manifest),
                                         "fold": self.fold},
                               split=self.split, patient_keys=keys, ct_level=ct_level, segmentation=seg,
                               allow_overlap=bool(overlap), n_boot=self.n_boot, seed=self.seed, models_source="user",
                               lesion_definition=DEFAULT_LESIONS.to_dict() if classes else None)
        tmp = temp_dir_beside(self.out)
        try:
            write_report(doc, self.rows, curves, tmp)
            _free_output(self.out)
            replace_dir(tmp, self.out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("evaluation of %d studies written to %s", len(self.rows), self.out)
