"""The one inference code path: load a training run, predict one study (``ichct evaluate`` / ``predict``).

* :func:`load_run` rebuilds the network of a run directory from its ``config.json``, loads the
  weights (``torch.load(..., weights_only=True)``) and the run's decision rule (``thresholds.json``).
* :func:`predict_study` runs a classification and/or a segmentation model on one study (DICOM
  series folder or NIfTI) and returns a :class:`StudyPrediction`;
  :func:`predict_confidence_variants` gives the segmenter's prediction at several settings of its
  confidence filter (:func:`predict_postprocessing_variants`: and of its minimum component volume)
  from one network pass (``ichct postprocess``).

A run's saved config is completed by :func:`~ichct.pipeline.models.config.saved_run_config` when it
is read (:func:`read_run_config`): a key an older run lacks takes the value that run was trained
with. Preprocessing is built from that config with the same building blocks as training
(:mod:`ichct.pipeline.models.data`), so inference always matches how the model was trained:

* cls: the evaluation transforms of :func:`~ichct.pipeline.models.data.cls_transforms` (``train=False``,
  ``slice_labels=False``: no labels at inference). Slice ``k`` of the output is slice ``k`` of the
  reader (``read_dicom_series`` / the NIfTI's last axis).
* seg: the evaluation transforms of :func:`~ichct.pipeline.models.data.seg_preprocessing` (load,
  RAS, resample to ``spacing_mm``, ``crop``, windows, ``SpatialPadd`` to the training patch)
  without labels; whole-volume sliding-window inference with
  the training patch; the class probabilities are resampled linearly onto the original grid and
  their argmax taken there (:func:`ichct.transforms.labels_on_grid`: the inverse of every
  preprocessing step in one affine map, slab by slab; what MONAI ``Invertd`` gives).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ichct.errors import InputError, read_json
from ichct.pipeline.decision import (
    PROBABILITY_MAP_RULES,
    SLICE_RULES,
    DecisionRule,
    affine_voxel_volume_ml,
    ct_scores,
    decide_scores,
    fused_threshold,
    peak_probability_scores,
    segmentation_volumes,
    voxel_volume_ml,
)
from ichct.pipeline.core.devices import torch_device
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.models.network_factory import build_network
from ichct.pipeline.models.config import saved_run_config

logger = logging.getLogger("ichct.inference")

__all__ = ["LoadedModel", "StudyPrediction", "load_run", "read_run_config", "predict_study", "default_rules",
           "predict_confidence_variants", "predict_postprocessing_variants", "hu_reference",
           "load_study_image",
           "cls_eval_transforms", "seg_eval_transforms", "DEFAULT_SLICE_THRESHOLD"]

#: Threshold of ``max`` / ``topk_mean`` when the run stores none (training chooses ``consecutive``).
DEFAULT_SLICE_THRESHOLD = 0.5


@dataclass
class LoadedModel:
    """A trained network ready for inference, with its run's config and decision rule."""

    kind: str  # "seg" or "cls"
    run_dir: Path
    run_config: dict[str, Any]  # config.json as written by training
    config: dict[str, Any]  # the resolved training config (run_config["config"])
    network: torch.nn.Module
    rule: DecisionRule | None
    device: torch.device
    checkpoint: str
    epoch: int | None = None
    bundle_dir: Path | None = None  # set by ichct.pipeline.bundle.package.load_bundle (run_dir is then its models/)
    _eval_chain: Any = field(default=None, init=False, repr=False, compare=False)

    def eval_transforms(self) -> Any:
        """The model's inference preprocessing (:func:`seg_eval_transforms` or :func:`cls_eval_transforms`
        of its config), built once: building it from its specs through MONAI's ``ConfigParser`` takes
        about 60 ms, a tenth of a study's prediction on 2 CPU cores."""
        if self._eval_chain is None:
            self._eval_chain = (seg_eval_transforms if self.kind == "seg" else cls_eval_transforms)(self.config)
        return self._eval_chain

    @property
    def training_record(self) -> dict[str, Any]:
        """``train_patients.json``: training patient keys, study/series UIDs, salt, validation fold."""
        p = self.run_dir / "train_patients.json"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; cannot tell which patients the model was trained on")
        record = read_json(p, "training record")
        if not isinstance(record, Mapping):
            raise InputError(p, "not a training record (a JSON object with 'patient_keys')")
        return dict(record)

    @property
    def train_patient_keys(self) -> set[str]:
        keys = self.training_record.get("patient_keys")
        if not isinstance(keys, list):
            raise InputError(self.run_dir / "train_patients.json", "not a training record: no 'patient_keys' list")
        return {str(k) for k in keys}

    def describe(self) -> dict[str, Any]:
        # how it reads and predicts beyond its training (report.json and metrics.json say so)
        inference = {"brain_reference_hu": self.config.get("brain_reference_hu"),
                     "tta_mirror_axes": list(self.config.get("tta_mirror_axes") or [])}
        if self.kind == "seg" and self.config.get("classifier_slice_gate"):  # acts beside a classifier
            inference["classifier_slice_gate"] = float(self.config["classifier_slice_gate"])
        if self.kind == "seg":  # the config saved_run_config completed: a seg run always has it
            inference["sw_overlap"] = float(self.config["sw_overlap"])
        return {"kind": self.kind, "run_dir": str(self.run_dir), "checkpoint": self.checkpoint, "epoch": self.epoch,
                "fold": self.run_config.get("fold"), "seed": self.run_config.get("seed"),
                "manifest_sha256": self.run_config.get("manifest_sha256"),
                "versions": self.run_config.get("versions", {}),
                "rule": self.rule.to_dict() if self.rule is not None else None,
                "inference": inference}


@dataclass
class StudyPrediction:
    """Everything predicted for one study.

    ``slice_probs`` is ``(N, 6)`` (columns :data:`~ichct.pipeline.core.labels.LABEL_NAMES`, rows in the
    reader's slice order);
    ``seg_preprocessed`` the label map on the preprocessed grid (``seg_preprocessed_affine``,
    spacing ``seg_spacing_mm``); ``seg_original`` the same map on the ingest grid
    (``original_shape`` / ``original_affine``, RAS). ``volumes_ml`` are blood volumes (mL) of
    the preprocessed map per class (``"any"`` and, for 6-class models, each subtype),
    ``volumes_ml_original`` those of the original-grid map. ``scores[rule][subtype]`` and
    ``decisions[rule][subtype] = {"score", "threshold", "positive"}`` per decision rule.
    ``ingest_info`` is the reader's sidecar for DICOM input (series, selection, tilt, gaps,
    warnings; ``None`` for NIfTI), ``timings_s`` the seconds spent per stage: ``read``,
    ``preprocess`` (both models' transforms), ``seg`` (sliding window + inversion), ``cls``
    and ``decide``. ``hu_volume`` is the loaded ``(X, Y, Z)`` HU image, kept only on request.
    For DICOM input, ``dicom_series`` is the :class:`~ichct.transforms.dicom.SeriesGroup` that was
    read (its ``headers`` are the source instances a DICOM SEG references) and
    ``dicom_candidates`` every series group of the folder's single scan (``None`` for NIfTI).
    ``hu_reference[kind]``, for each model with ``brain_reference_hu``: the brain tissue level
    measured (``brain_tissue_hu``, None without enough brain tissue), the model's ``reference_hu``,
    the ``shift_hu`` its preprocessing added and whether the shift was ``clipped``
    (:func:`hu_reference`).
    """

    image: str
    original_shape: tuple[int, ...]
    original_affine: np.ndarray
    n_slices: int
    slice_probs: np.ndarray | None = None
    seg_preprocessed: np.ndarray | None = None
    seg_preprocessed_affine: np.ndarray | None = None
    seg_spacing_mm: tuple[float, ...] | None = None
    seg_original: np.ndarray | None = None
    num_seg_classes: int | None = None
    volumes_ml: dict[str, float] = field(default_factory=dict)
    volumes_ml_original: dict[str, float] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    decisions: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    ingest_info: dict[str, Any] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    hu_volume: np.ndarray | None = None
    dicom_series: Any | None = None
    dicom_candidates: list[Any] | None = None
    hu_reference: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Loading a run
# --------------------------------------------------------------------------------------------


def read_run_config(path: Path, what: str = "run config") -> dict[str, Any]:
    """A run's ``config.json`` (or a bundle's ``models/run_config.json``): kind and training config checked.

    The training ``config`` comes back completed by
    :func:`~ichct.pipeline.models.config.saved_run_config` (the keys an older run lacks, at the
    values it was trained with). Raises :class:`~ichct.errors.InputError` naming the file when it
    is not JSON, or lacks kind ``"seg"``/``"cls"`` or the training ``config`` mapping.
    """
    run_config = read_json(path, what)
    kind = run_config.get("kind") if isinstance(run_config, Mapping) else None
    if kind not in ("seg", "cls") or not isinstance(run_config.get("config"), Mapping):
        raise InputError(path, f"not an ichct {what}: needs kind 'seg' or 'cls' (got {kind!r}) and the training "
                               "'config'")
    return {**run_config, "config": saved_run_config(kind, run_config["config"])}


def load_run(run_dir: str | Path, device: str = "cpu", checkpoint: str = "best") -> LoadedModel:
    """Load a training run directory (``config.json``, ``best.pt``/``last.pt``, ``thresholds.json``).

    Raises ``FileNotFoundError`` for a missing file and :class:`~ichct.errors.InputError` (a
    ``ValueError``) for a config or checkpoint that cannot be read or does not fit.
    """
    from ichct.pipeline.core.weights import load_checkpoint, model_state_dict

    run = Path(run_dir)
    if not run.is_dir():
        raise NotADirectoryError(f"{run}: not a run directory")
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing (not a training run directory?)")
    run_config = read_run_config(cfg_path)
    kind = run_config["kind"]
    if checkpoint not in ("best", "last"):
        raise InputError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    ck_path = run / f"{checkpoint}.pt"
    if not ck_path.is_file():
        raise FileNotFoundError(f"{ck_path}: missing")
    dev = torch_device(device)
    ck = load_checkpoint(ck_path, map_location=dev)
    state = model_state_dict(ck, ck_path)
    cfg = dict(run_config["config"])
    net, rule = network_and_rule(kind, cfg, state, dev, weights_path=ck_path, config_path=cfg_path,
                                 thresholds_path=run / "thresholds.json")
    epoch = int(ck["epoch"]) if isinstance(ck, Mapping) and "epoch" in ck else None
    return LoadedModel(kind=kind, run_dir=run.resolve(), run_config=run_config, config=cfg, network=net, rule=rule,
                       device=dev, checkpoint=checkpoint, epoch=epoch)


def network_and_rule(kind: str, cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor], device: torch.device, *,
                     weights_path: Path, config_path: Path, thresholds_path: Path
                     ) -> tuple[torch.nn.Module, DecisionRule | None]:
    """The run's network with ``state`` loaded (eval mode, on ``device``) and its stored decision
    rule (``None``, with a warning, when ``thresholds_path`` is missing). Shared by
    :func:`load_run` and ``ichct.pipeline.bundle.package.load_bundle``."""
    try:
        net = build_network(kind, cfg)
    except (TypeError, ValueError, KeyError) as exc:  # a config that ichct did not write, or an old one
        raise InputError(config_path, f"its training config does not build a {kind} network "
                                      f"({type(exc).__name__}: {exc})") from exc
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:  # other layers or shapes; not a state dict
        raise InputError(weights_path, f"weights do not fit the network of {config_path}: {exc}") from exc
    net.to(device).eval()
    rule = DecisionRule.load(thresholds_path) if thresholds_path.is_file() else None  # InputError if unreadable
    if rule is None:
        logger.warning("%s: missing; CT-level calls of %s use default thresholds", thresholds_path, weights_path)
    return net, rule


def default_rules(models: Mapping[str, LoadedModel | None],
                  names: Sequence[str] | None = None) -> dict[str, DecisionRule]:
    """Decision rules available for these models: ``{name: DecisionRule}``.

    ``consecutive`` and ``seg_volume`` use the thresholds chosen on the validation fold during
    training (``thresholds.json``); so do ``max``, ``topk_mean`` and ``seg_peak`` when the run stored
    theirs (``meta["other_rules"]``, written by training: slice rules since 0.1.0's rule update,
    ``seg_peak`` since its introduction; or by ``ichct postprocess``), else they use
    :data:`DEFAULT_SLICE_THRESHOLD` (with the run's ``k``). With both models, ``fused`` (the mean of
    ``consecutive`` and ``seg_peak``) at the mean of their thresholds
    (:func:`~ichct.pipeline.decision.fused_threshold`). ``names`` restricts (and orders) them; rules
    whose model is missing are left out.
    """
    out: dict[str, DecisionRule] = {}
    cls, seg = models.get("cls"), models.get("seg")
    if cls is not None:
        k = int(cls.config["rule_k"])
        stored = cls.rule
        chosen_other = dict((stored.meta or {}).get("other_rules") or {}) if stored is not None else {}
        for name in SLICE_RULES:
            if stored is not None and stored.name == name:
                out[name] = stored
            elif name in chosen_other:  # chosen on the validation fold with the stored rule
                out[name] = DecisionRule(name, threshold={str(a): float(b) for a, b in chosen_other[name].items()},
                                         k=stored.k, meta={"chosen_on": stored.meta.get("chosen_on"),
                                                           "method": stored.meta.get("method")})
            else:
                out[name] = DecisionRule(name, threshold=DEFAULT_SLICE_THRESHOLD, k=stored.k if stored else k,
                                         meta={"chosen_on": f"default {DEFAULT_SLICE_THRESHOLD} (not chosen on data)"})
    if seg is not None:
        out.update(_seg_rules(seg))
    if cls is not None and seg is not None:
        out["fused"] = fused_threshold(out["consecutive"], out["seg_peak"])
    if names is not None:
        out = {n: out[n] for n in names if n in out}
    return out


def _seg_rules(seg: LoadedModel) -> dict[str, DecisionRule]:
    """A segmenter's ``seg_volume`` rule (stored, else one voxel) and its ``seg_peak`` rule (the
    threshold stored in the rule's ``meta["other_rules"]["seg_peak"]["any"]``, else
    :data:`DEFAULT_SLICE_THRESHOLD`; one threshold for every label)."""
    stored = seg.rule if seg.rule is not None and seg.rule.name == "seg_volume" else None
    if stored is None:
        volume = DecisionRule("seg_volume", threshold=voxel_volume_ml(seg.config["spacing_mm"]),
                              min_component_ml=float(seg.config["min_component_ml"]),
                              num_seg_classes=int(seg.config["num_classes"]),
                              meta={"chosen_on": "default: one voxel (not chosen on data)"})
    else:
        volume = stored
    chosen = dict((stored.meta or {}).get("other_rules") or {}).get("seg_peak") if stored is not None else None
    if chosen and "any" in chosen:  # one threshold for every label, as seg_volume's
        where = dict(stored.meta.get("other_rules_chosen_on") or {}).get("seg_peak", stored.meta.get("chosen_on"))
        peak = DecisionRule("seg_peak", threshold=float(chosen["any"]),
                            meta={"chosen_on": where, "method": stored.meta.get("method")})
    else:
        peak = DecisionRule("seg_peak", threshold=DEFAULT_SLICE_THRESHOLD,
                            meta={"chosen_on": f"default {DEFAULT_SLICE_THRESHOLD} (not chosen on data)"})
    return {"seg_volume": volume, "seg_peak": peak}


# --------------------------------------------------------------------------------------------
# Preprocessing from a run's config
# --------------------------------------------------------------------------------------------


def cls_eval_transforms(cfg: Mapping[str, Any]):
    """Training's evaluation transforms of the classifier for a study without slice labels.

    The ``Compose`` of :func:`~ichct.pipeline.models.data.cls_preprocessing` with ``train=False,
    slice_labels=False``: what a classification bundle's ``inference.json`` lists.
    """
    from ichct.pipeline.models.data import cls_transforms

    return cls_transforms(cfg, train=False, slice_labels=False)


def seg_eval_transforms(cfg: Mapping[str, Any]):
    """Invertible seg preprocessing: load, RAS, the run's spacing, crop and windows, pad to the patch.

    The ``Compose`` of :func:`~ichct.pipeline.models.data.seg_preprocessing` without labels: what a
    segmentation bundle's ``inference.json`` lists.
    """
    from ichct.pipeline.models.data import compose, seg_preprocessing

    return compose(seg_preprocessing(cfg, train=False, labels=False))


def _fresh(img: Any) -> Any:
    """An independent copy of a loaded MetaTensor (array and meta, affine included)."""
    from monai.data import MetaTensor

    return MetaTensor(img.as_tensor().clone(), meta=copy.deepcopy(dict(img.meta)))


def load_image(image_path: str | Path):
    """The study as the training loader reads it: a channel-first HU MetaTensor (RAS affine).

    Raises :class:`~ichct.errors.InputError` naming the file for an image that is not one 3D
    volume on a voxel grid with a volume (a 2D or 4D NIfTI, a degenerate affine).
    """
    from ichct.transforms import LoadCT

    return _checked_volume(LoadCT()(str(image_path)), image_path)


def load_study_image(image_path: str | Path) -> tuple[Any, Any | None, list[Any] | None]:
    """The study as :func:`load_image` reads it, with the DICOM series read and its candidates.

    A DICOM folder is scanned once: the scan that chooses and reads the series also gives the
    series' headers and the folder's other series groups, so nothing needs to scan it again.

    Parameters
    ----------
    image_path
        A DICOM series/study folder, DICOMDIR or ``.dcm`` file, or an image file (NIfTI...).

    Returns
    -------
    tuple
        ``(image, series, candidates)``: the channel-first HU MetaTensor (as :func:`load_image`),
        the :class:`~ichct.transforms.dicom.SeriesGroup` read and every series group of the
        folder; ``series`` and ``candidates`` are None for input that is not DICOM.
    """
    from ichct.transforms import LoadDicomSeries
    from ichct.transforms.dicom import group_series
    from ichct.transforms.loading import is_dicom_path

    if not is_dicom_path(image_path):
        return load_image(image_path), None, None
    reader = _ScanOnceReader()
    img = _checked_volume(LoadDicomSeries()(str(image_path), reader=reader), image_path)
    return img, reader.volume.series, group_series(reader.scan.headers)


class _ScanOnceReader:
    """Runtime reader for ``LoadDicomSeries``: scans the folder, reads the series from that scan
    (:class:`~ichct.transforms.io.DicomSeriesReader`) and keeps the scan and the volume read."""

    def __init__(self) -> None:
        from ichct.transforms import DicomSeriesReader

        self.reader = DicomSeriesReader()
        self.scan: Any = None
        self.volume: Any = None

    def read(self, data: Any, **kwargs: Any) -> Any:
        from ichct.transforms.dicom import scan_folder

        names = [data] if isinstance(data, (str, Path)) else list(data)
        if len(names) == 1:  # else the reader refuses it, as without a scan
            self.scan = scan_folder(names[0])
            kwargs["scan"] = self.scan
        self.volume = self.reader.read(data, **kwargs)
        return self.volume

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        return self.reader.get_data(img)


def _checked_volume(img: Any, image_path: str | Path) -> Any:
    """``img`` after checking that it is one 3D volume on a voxel grid with a volume."""
    if img.ndim != 4 or img.shape[0] != 1:
        raise InputError(image_path, f"not one 3D CT volume (image of shape {tuple(img.shape)[1:]} with "
                                     f"{img.shape[0]} channel(s))")
    try:
        affine_voxel_volume_ml(img.affine)
    except ValueError as exc:
        raise InputError(image_path, f"unusable voxel grid: {exc}") from None
    return img


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


def _add_time(timings: dict[str, float] | None, key: str, t0: float) -> float:
    """Add the seconds since ``t0`` to ``timings[key]`` (when timings are collected); return now."""
    now = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + (now - t0)
    return now


def _cls_logits(out: Any) -> torch.Tensor:
    """The per-slice logits of a classifier's output (the training network's is a dict)."""
    return out["logits"] if isinstance(out, Mapping) else out


@torch.no_grad()
def _predict_cls(model: LoadedModel, img: Any, timings: dict[str, float] | None = None) -> np.ndarray:
    from ichct.networks import mirror_ensemble

    t0 = time.perf_counter()
    data = model.eval_transforms()({"image": _fresh(img)})
    x = torch.as_tensor(data["image"], dtype=torch.float32).to(model.device)[None]  # (1, C, H, W, S)
    _add_time(timings, "preprocess", t0)
    t0 = time.perf_counter()
    logits = mirror_ensemble(lambda batch: _cls_logits(model.network(batch)), x,
                             model.config.get("tta_mirror_axes") or (), spatial_output=False)
    probs = torch.sigmoid(logits.float())[0].cpu().numpy().astype(np.float64)  # (S, 6)
    _add_time(timings, "cls", t0)
    return probs


def _channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Index of the largest value along axis 0 (the first one on ties, as ``torch.argmax``).

    ``torch.max(...).indices``: on the CPU, ``torch.argmax`` over a few channels of a large volume
    takes several times as long (1.4 s against 0.16 s for 6 x 512 x 512 x 32 on 2 cores).
    """
    return torch.max(scores, dim=0).indices


@torch.no_grad()
def _seg_probabilities(model: LoadedModel, img: Any, timings: dict[str, float] | None = None) -> tuple[torch.Tensor, dict]:
    """Class probabilities ``(K, X', Y', Z')`` on the model's grid and the preprocessed data they belong to."""
    from ichct.networks import sliding_window_predict

    cfg = model.config
    t0 = time.perf_counter()
    data = model.eval_transforms()({"image": _fresh(img)})
    image = data["image"]
    t0 = _add_time(timings, "preprocess", t0)
    logits = sliding_window_predict(model.network, image.as_tensor().to(model.device),
                                    roi_size=[int(p) for p in cfg["patch"]], sw_batch_size=int(cfg["sw_batch_size"]),
                                    overlap=float(cfg["sw_overlap"]), mode="gaussian",
                                    mirror_axes=cfg.get("tta_mirror_axes") or ())
    probs = torch.softmax(logits.float(), dim=0).cpu()
    _add_time(timings, "seg", t0)
    return probs, data


def _labels_on_input_grid(model: LoadedModel, img: Any, probs: torch.Tensor, image: Any) -> np.ndarray:
    """The argmax of ``probs`` (on the model's grid) on the input's grid: what MONAI ``Invertd`` gives.

    The steps after the last resampling (brain crop, padding to the patch) are undone by MONAI on the
    small model grid, so predictions in padding are dropped as ``Invertd`` drops them; the
    resampling and reorientation, one affine map of voxel coordinates, by
    :func:`ichct.transforms.labels_on_grid` a slab at a time (``Invertd`` would hold a sampling grid
    and every class over the whole input grid at once: gigabytes for a thin-slice study).
    """
    import copy

    from monai.data import MetaTensor
    from monai.transforms import Compose, Orientationd, Spacingd

    from ichct.transforms import labels_on_grid

    steps = list(model.eval_transforms().transforms)
    last_resampling = max((i for i, t in enumerate(steps) if isinstance(t, (Orientationd, Spacingd))), default=-1)
    pred = MetaTensor(probs, affine=image.affine.clone(), applied_operations=copy.deepcopy(image.applied_operations))
    pred = Compose(steps[last_resampling + 1:]).inverse({"image": pred})["image"]
    return labels_on_grid(pred.as_tensor(), np.asarray(pred.affine, dtype=np.float64),
                          np.asarray(img.affine, dtype=np.float64), tuple(int(s) for s in img.shape[1:]))


def _seg_label_maps(model: LoadedModel, img: Any, probs: torch.Tensor, data: Mapping[str, Any],
                    min_confidence: float, slice_any: np.ndarray | None = None,
                    min_component_ml: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label map on the preprocessed grid, its affine, label map on the original grid) of ``probs``,
    after the confidence filter at ``min_confidence`` (0: off) and, given a classifier's p(any) per
    original slice (``slice_any``), the run's ``classifier_slice_gate``; the original grid's map
    without components under ``min_component_ml`` (default: the run's)."""
    cfg, image = model.config, data["image"]
    if min_confidence > 0:  # components the model is unsure of become background
        from ichct.transforms import SuppressUncertainComponents

        probs = SuppressUncertainComponents(min_confidence)(probs)
    affine_pre = np.asarray(image.affine, dtype=np.float64)
    gate = float(cfg.get("classifier_slice_gate") or 0.0)
    if slice_any is not None and gate > 0:  # components on slices the classifier calls quiet become background
        from ichct.transforms import SuppressQuietSliceComponents

        grid_to_source = np.linalg.inv(np.asarray(img.affine, dtype=np.float64)) @ affine_pre
        probs = SuppressQuietSliceComponents(gate)(probs, slice_any, grid_to_source)
    labels = _channel_argmax(probs).to(torch.float32)[None]  # (1, X', Y', Z')
    shape = tuple(int(s) for s in img.shape[1:])
    if not bool(labels.any()):  # nothing found: the inverse of an all-background map is all background
        orig = np.zeros(shape, dtype=np.uint8)
    else:
        # the class probabilities go back onto the original grid (linear), then argmax: smoother,
        # more faithful boundaries on a finer source grid than nearest-neighbour labels (on the
        # synthetic test split: Dice 0.674 vs 0.659 on the original grid)
        orig = _labels_on_input_grid(model, img, probs, image)
    if orig.shape != shape:
        raise RuntimeError(f"inverted segmentation has shape {orig.shape}, expected the original {shape}")
    min_ml = float(cfg["min_component_ml"]) if min_component_ml is None else float(min_component_ml)
    return labels[0].numpy().astype(np.uint8), affine_pre, _without_small_components(orig, min_ml, img.affine)


def _without_small_components(labels: np.ndarray, min_ml: float, affine: Any) -> np.ndarray:
    """``labels`` (on the grid of ``affine``) without the components smaller than ``min_ml`` (0: all kept)."""
    if min_ml <= 0 or not labels.any():
        return labels
    from ichct.transforms import RemoveSmallComponents

    return np.asarray(RemoveSmallComponents(min_ml, voxel_volume_ml=affine_voxel_volume_ml(affine))(labels[None]))[0]


def _set_seg_fields(pred: StudyPrediction, seg: LoadedModel, maps: tuple[np.ndarray, np.ndarray, np.ndarray],
                    min_component_ml: float | None = None) -> None:
    """Put a segmenter's label maps and their blood volumes into ``pred`` (``min_component_ml``: the
    minimum the original-grid map was made with, default the run's)."""
    k = int(seg.config["num_classes"])
    min_ml = float(seg.config["min_component_ml"]) if min_component_ml is None else float(min_component_ml)
    pred.seg_preprocessed, pred.seg_preprocessed_affine, pred.seg_original = maps
    pred.num_seg_classes = k
    pred.seg_spacing_mm = tuple(float(s) for s in seg.config["spacing_mm"])
    # the model-grid volumes drop the same small components as the original-grid mask
    pred.volumes_ml = segmentation_volumes(maps[0], voxel_volume_ml(pred.seg_spacing_mm), num_classes=k,
                                           min_component_ml=min_ml)
    pred.volumes_ml_original = segmentation_volumes(maps[2], affine_voxel_volume_ml(pred.original_affine), num_classes=k)


def _apply_rules(pred: StudyPrediction, rules: Mapping[str, DecisionRule], seg_probs: Any = None) -> None:
    """Scores and calls of every rule whose input ``pred`` has (slice probabilities, a segmentation,
    the segmenter's class probabilities ``seg_probs``; ``fused`` needs the first and the last). Each
    rule is scored once, and the probability map's peaks once for ``seg_peak`` and ``fused``."""
    peak: dict[str, float] | None = None
    for name, rule in rules.items():
        if rule.name in PROBABILITY_MAP_RULES:
            if seg_probs is None or (rule.name == "fused" and pred.slice_probs is None):
                continue
            if peak is None:
                peak = peak_probability_scores(seg_probs)
            kw: dict[str, Any] = {"peak_scores": peak, "slice_probs": pred.slice_probs}
        elif rule.name == "seg_volume":
            if pred.seg_preprocessed is None:
                continue
            kw = {"segmentation": pred.seg_preprocessed, "voxel_volume_ml": voxel_volume_ml(pred.seg_spacing_mm)}
        else:
            if pred.slice_probs is None:
                continue
            kw = {"slice_probs": pred.slice_probs}
        pred.scores[name] = ct_scores(rule, **kw)
        pred.decisions[name] = decide_scores(rule, pred.scores[name])


def hu_reference(models: Mapping[str, LoadedModel | None], img: Any,
                 measured: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """What brain-referenced HU does to ``img`` for each model that uses it (``brain_reference_hu``).

    The brain tissue level is measured once (:func:`~ichct.transforms.brain_tissue_level`, the
    step's own measurement; or taken from ``measured``) and each model's shift derived from it as
    its :class:`~ichct.transforms.ReferenceBrainHU` step does. A model without the setting is left out.

    Parameters
    ----------
    models
        ``{"seg": ..., "cls": ...}`` (either may be None).
    img
        The loaded ``(1, X, Y, Z)`` HU image.
    measured
        The meta of an image the step has already measured (its ``brain_tissue_hu``, NaN for no
        brain): the level is read there instead of measured again (a brain mask of a 512 x 512 x 32
        study takes about 0.5 s).

    Returns
    -------
    dict
        ``{kind: {"reference_hu", "brain_tissue_hu", "shift_hu", "clipped"}}``; ``brain_tissue_hu``
        is None (and the shift 0) when the image holds too little brain tissue to measure.

    Examples
    --------
    >>> import types, torch
    >>> hu = torch.full((1, 40, 40, 4), -1000.0)
    >>> hu[0, 2:38, 2:38] = 1000.0
    >>> hu[0, 3:37, 3:37] = 34.0
    >>> model = types.SimpleNamespace(config={"brain_reference_hu": 30.0})
    >>> hu_reference({"seg": model, "cls": None}, hu)
    {'seg': {'reference_hu': 30.0, 'brain_tissue_hu': 34.0, 'shift_hu': -4.0, 'clipped': False}}
    """
    from ichct.transforms import ReferenceBrainHU, brain_tissue_level

    out: dict[str, dict[str, Any]] = {}
    level: float | None = None
    for kind, model in models.items():
        reference = None if model is None else model.config.get("brain_reference_hu")
        if reference is None:
            continue
        step = ReferenceBrainHU(float(reference))
        if not out and measured is not None and "brain_tissue_hu" in measured:
            level = float(measured["brain_tissue_hu"])
            level = None if np.isnan(level) else level
        elif not out:
            level = brain_tissue_level(img[0], step.tissue_range_hu, step.min_voxels)
        shift = step.shift_for(level)
        out[kind] = {"reference_hu": float(reference), "brain_tissue_hu": None if level is None else round(level, 2),
                     "shift_hu": round(shift, 2),
                     "clipped": level is not None and abs(float(reference) - level) > step.max_shift_hu}
    return out


def predict_study(models: Mapping[str, LoadedModel | None], image_path: str | Path,
                  rules: Mapping[str, DecisionRule] | None = None, keep_image: bool = False) -> StudyPrediction:
    """Predict one study with a classifier (``models["cls"]``) and/or a segmenter (``models["seg"]``).

    ``rules`` (default :func:`default_rules`) are applied when their input exists: slice rules
    need the classifier, ``seg_volume`` and ``seg_peak`` the segmenter, ``fused`` both. With both
    models, a segmenter whose config sets ``classifier_slice_gate`` drops the blood components on
    slices the classifier scores below it (:class:`~ichct.transforms.SuppressQuietSliceComponents`).
    ``keep_image`` keeps the loaded HU volume in ``hu_volume`` (for overlays). A DICOM folder is scanned once (:func:`load_study_image`): the
    series read and the candidates it was chosen from come back in ``dicom_series`` /
    ``dicom_candidates``.
    """
    cls, seg = models.get("cls"), models.get("seg")
    if cls is None and seg is None:
        raise ValueError("predict_study needs at least one model (seg or cls)")
    for key, m in (("cls", cls), ("seg", seg)):
        if m is not None and m.kind != key:
            raise ValueError(f"models[{key!r}] is a {m.kind} run ({m.run_dir})")
    if rules is None:
        rules = default_rules(models)
    timings: dict[str, float] = {"read": 0.0, "preprocess": 0.0, "seg": 0.0, "cls": 0.0, "decide": 0.0}
    t0 = time.perf_counter()
    img, series, candidates = load_study_image(image_path)
    _add_time(timings, "read", t0)
    shape = tuple(int(s) for s in img.shape[1:])
    pred = StudyPrediction(image=str(image_path), original_shape=shape,
                           original_affine=np.asarray(img.affine, dtype=np.float64), n_slices=int(shape[-1]),
                           ingest_info=_ingest_info(img), timings_s=timings, dicom_series=series,
                           dicom_candidates=candidates)
    if keep_image:
        pred.hu_volume = np.asarray(img.as_tensor()[0].numpy(), dtype=np.float32)
    if cls is not None:
        probs = _predict_cls(cls, img, timings)
        if probs.shape != (pred.n_slices, len(LABEL_NAMES)):
            raise RuntimeError(f"classifier gave {probs.shape} slice probabilities for {pred.n_slices} slices")
        pred.slice_probs = probs
    seg_meta, seg_probs = None, None
    if seg is not None:
        seg_probs, data = _seg_probabilities(seg, img, timings)
        seg_meta = getattr(data["image"], "meta", None)
        t0 = time.perf_counter()
        slice_any = None if pred.slice_probs is None else pred.slice_probs[:, 0]
        _set_seg_fields(pred, seg, _seg_label_maps(seg, img, seg_probs, data,
                                                   float(seg.config["min_component_confidence"]), slice_any))
        _add_time(timings, "seg", t0)
    t0 = time.perf_counter()
    pred.hu_reference = hu_reference(models, img, seg_meta)  # the segmenter's step measured the level already
    _add_time(timings, "preprocess", t0)
    t0 = time.perf_counter()
    _apply_rules(pred, rules, None if seg_probs is None else seg_probs.numpy())
    _add_time(timings, "decide", t0)
    return pred


def predict_confidence_variants(seg: LoadedModel, image_path: str | Path, min_confidences: Sequence[float],
                                rules: Mapping[str, DecisionRule] | None = None) -> dict[float, StudyPrediction]:
    """The segmenter's prediction of one study at each confidence-filter setting, from one network pass.

    What :func:`predict_study` gives with ``min_component_confidence`` set to each value of
    ``min_confidences`` (0: no filter): the study is read and the sliding window run once, then
    every value filters the same class probabilities, inverts them onto the original grid and
    applies ``rules`` (default: the run's ``seg_volume`` and ``seg_peak`` rules).

    Examples
    --------
    >>> import numpy as np, nibabel as nib, tempfile, pathlib
    >>> from ichct.pipeline.models.config import resolve_config
    >>> from ichct.pipeline.models.network_factory import build_network
    >>> cfg = resolve_config("seg", {"patch": [16, 16, 16], "network": {"channels": [4, 8], "strides": [2]},
    ...                              "spacing_mm": [4.0, 4.0, 4.0], "crop": None})
    >>> model = LoadedModel("seg", pathlib.Path("."), {"kind": "seg", "config": cfg}, cfg,
    ...                     build_network("seg", cfg).eval(), None, torch.device("cpu"), "best")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ct.nii.gz"
    >>> nib.save(nib.Nifti1Image(np.full((24, 24, 12), 40, np.int16), np.diag([2.0, 2.0, 5.0, 1.0])), path)
    >>> preds = predict_confidence_variants(model, path, [0.0, 0.99])
    >>> sorted(preds), preds[0.99].seg_original.shape
    ([0.0, 0.99], (24, 24, 12))
    """
    run_min = float(seg.config["min_component_ml"])
    variants = predict_postprocessing_variants(seg, image_path, min_confidences, [run_min], rules)
    return {confidence: pred for (confidence, _), pred in variants.items()}


def predict_postprocessing_variants(seg: LoadedModel, image_path: str | Path, min_confidences: Sequence[float],
                                    min_components_ml: Sequence[float],
                                    rules: Mapping[str, DecisionRule] | None = None,
                                    ) -> dict[tuple[float, float], StudyPrediction]:
    """The segmenter's prediction of one study for each pair of a confidence filter and a minimum
    component volume, from one network pass.

    :func:`predict_confidence_variants` for every ``min_component_ml`` of ``min_components_ml``
    too (0: every component kept): each confidence value's original-grid map is made once, then
    its components under each minimum are dropped. ``rules`` are applied once per confidence
    value (the ``seg_volume`` rule keeps its own minimum), so the pairs of one value share them.

    Examples
    --------
    >>> import numpy as np, nibabel as nib, tempfile, pathlib
    >>> from ichct.pipeline.models.config import resolve_config
    >>> from ichct.pipeline.models.network_factory import build_network
    >>> cfg = resolve_config("seg", {"patch": [16, 16, 16], "network": {"channels": [4, 8], "strides": [2]},
    ...                              "spacing_mm": [4.0, 4.0, 4.0], "crop": None})
    >>> model = LoadedModel("seg", pathlib.Path("."), {"kind": "seg", "config": cfg}, cfg,
    ...                     build_network("seg", cfg).eval(), None, torch.device("cpu"), "best")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ct.nii.gz"
    >>> nib.save(nib.Nifti1Image(np.full((24, 24, 12), 40, np.int16), np.diag([2.0, 2.0, 5.0, 1.0])), path)
    >>> sorted(predict_postprocessing_variants(model, path, [0.0, 0.9], [0.05, 0.2]))
    [(0.0, 0.05), (0.0, 0.2), (0.9, 0.05), (0.9, 0.2)]
    """
    values, minima = [float(v) for v in min_confidences], [float(m) for m in min_components_ml]
    if seg.kind != "seg":
        raise ValueError(f"a segmenter is needed, got a {seg.kind} run ({seg.run_dir})")
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"min_confidences must be values within [0, 1], got {values}")
    if not minima or any(not (math.isfinite(m) and m >= 0) for m in minima):
        raise ValueError(f"min_components_ml must be volumes >= 0 mL, got {minima}")
    rules = default_rules({"seg": seg}) if rules is None else rules
    img, _series, _candidates = load_study_image(image_path)
    probs, data = _seg_probabilities(seg, img)
    shape = tuple(int(s) for s in img.shape[1:])
    affine = np.asarray(img.affine, dtype=np.float64)
    out: dict[tuple[float, float], StudyPrediction] = {}
    for value in values:
        pre, pre_affine, orig = _seg_label_maps(seg, img, probs, data, value, min_component_ml=0.0)
        base = StudyPrediction(image=str(image_path), original_shape=shape, original_affine=affine.copy(),
                               n_slices=int(shape[-1]))
        _set_seg_fields(base, seg, (pre, pre_affine, orig))
        _apply_rules(base, rules, probs.numpy())
        for min_ml in minima:
            pred = copy.copy(base)
            _set_seg_fields(pred, seg, (pre, pre_affine, _without_small_components(orig, min_ml, affine)), min_ml)
            out[(value, min_ml)] = pred
    return out


def _ingest_info(img: Any) -> dict[str, Any] | None:
    """The DICOM reader's sidecar carried in the loaded image's meta (``None`` for NIfTI input)."""
    raw = getattr(img, "meta", {}).get("ichct_ingest")
    if not raw:
        return None
    return json.loads(raw) if isinstance(raw, str) else dict(raw)
