"""A bundle's ``configs/metadata.json``: the model zoo's fields from the run's config, its training data
and, when given, the numbers of the ``metrics.json`` that ``ichct evaluate --bundle`` wrote."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ichct.pipeline.bundle.docs.phrases import (brain_reference_text, encoders_text, mirroring_text,
                                                seg_postprocessing_text)
from ichct.pipeline.bundle.docs.provenance import data_source, describe_training_data, intended_use
from ichct.pipeline.bundle.steps import REFERENCES
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.models.config import config_windows, input_channels, saved_run_config
from ichct.pipeline.models.network_factory import is_ensemble

__all__ = ["ZOO_SCHEMA_URL", "NAMES", "TASKS", "key_numbers", "bundle_metadata"]


#: The model zoo's published metadata schema (the ``schema`` key of every zoo bundle).
ZOO_SCHEMA_URL = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20240725.json")


NAMES = {"seg": "ICH CT segmentation", "cls": "ICH CT slice classification"}


TASKS = {"seg": "Intracranial hemorrhage segmentation in head CT",
         "cls": "Intracranial hemorrhage detection and subtyping in head CT (per slice and per CT)"}


def _windows(cfg: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """``(name, level, width)`` of each HU window channel (:func:`~ichct.pipeline.models.config.config_windows`)."""
    return [(str(name), float(level), float(width)) for name, (level, width) in config_windows(cfg).items()]


def _value(entry: Any) -> float | None:
    if isinstance(entry, Mapping):
        v = entry.get("value")
        return float(v) if v is not None and math.isfinite(float(v)) else None
    return None


def key_numbers(kind: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluation (``metrics.json``) for ``metadata.json["eval_metrics"]``."""
    out: dict[str, Any] = {"split": metrics.get("split"), "n_studies": metrics.get("n_studies"),
                           "n_patients": metrics.get("n_patients")}
    any_ct = (metrics.get("ct_level") or {}).get("any") or {}
    rule = "seg_volume" if kind == "seg" else "consecutive"
    ct = any_ct.get(rule) or {}
    for m in ("roc_auc", "pr_auc", "sensitivity", "specificity"):
        out[f"{m}_any_{rule}"] = _value(ct.get(m))
    if kind == "seg":
        seg = (metrics.get("segmentation") or {}).get("any") or {}
        for m in ("dice_positive", "dice", "hd95_mm"):
            out[f"{m}_any"] = _value(seg.get(m))
        if "seg_peak" in any_ct:
            out["roc_auc_any_seg_peak"] = _value(any_ct["seg_peak"].get("roc_auc"))
    else:
        for st in LABEL_NAMES[1:]:
            per_rule = ((metrics.get("ct_level") or {}).get(st) or {}).get(rule) or {}
            out[f"roc_auc_{st}_{rule}"] = _value(per_rule.get("roc_auc"))
    return out


def _input_format(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    windows = _windows(cfg)
    channel_def = {str(i): f"{n} window (level {lv:g} HU, width {wd:g} HU) scaled to [0, 1]"
                   for i, (n, lv, wd) in enumerate(windows)}
    if input_channels(kind, cfg) > len(windows):  # the classifier's skull-stripped channel
        from ichct.pipeline.models.data import STRIPPED_CHANNEL_WINDOW

        lv, wd = STRIPPED_CHANNEL_WINDOW
        channel_def[str(len(windows))] = (f"brain window (level {lv:g} HU, width {wd:g} HU) of the image with everything "
                                          f"outside the intracranial space set to air, scaled to [0, 1]")
    if kind == "seg":
        spatial: list[Any] = [int(p) for p in cfg["patch"]]
        patch = True
    else:
        spatial = [int(v) for v in cfg["in_plane"]] + ["*"]
        patch = False
    return {"type": "image", "format": "hounsfield-windows", "modality": "CT", "num_channels": len(channel_def),
            "spatial_shape": spatial, "dtype": "float32", "value_range": [0, 1], "is_patch_data": patch,
            "channel_def": channel_def}


def _output_format(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "seg":
        k = int(cfg["num_classes"])
        names = ["background", "blood (any subtype)"] if k == 2 else ["background", *LABEL_NAMES[1:]]
        return {"type": "image", "format": "segmentation", "num_channels": k,
                "spatial_shape": [int(p) for p in cfg["patch"]], "dtype": "float32", "value_range": [0, k - 1],
                "is_patch_data": True, "channel_def": {str(i): n for i, n in enumerate(names)}}
    return {"type": "probabilities", "format": "classes", "num_channels": len(LABEL_NAMES), "spatial_shape": ["*"],
            "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
            "channel_def": {str(i): f"{n} (slice logit; sigmoid -> probability)" for i, n in enumerate(LABEL_NAMES)}}


def bundle_metadata(run_config: Mapping[str, Any], *, version: str, changelog: Mapping[str, str],
                    versions: Mapping[str, str], required_packages: Mapping[str, str],
                    name: str | None = None, evaluation: Mapping[str, Any] | None = None,
                    training_data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``configs/metadata.json`` of a bundle.

    Parameters
    ----------
    run_config
        The run's ``config.json`` (kind and resolved training config).
    version, changelog
        Semantic version of the bundle and ``{version: change}``.
    versions
        ``{"monai": ..., "torch": ..., "numpy": ...}`` the bundle was made with.
    required_packages
        ``{distribution: version}`` the configs need besides monai, torch and numpy.
    name
        Display name (default by kind).
    evaluation
        ``metrics.json`` of ``ichct evaluate --bundle`` on held-out data (its numbers go into
        ``eval_metrics``).
    training_data
        :func:`describe_training_data` of the run (default: derived from ``run_config`` here); it
        words ``data_source`` and ``intended_use``.
    """
    kind = str(run_config["kind"])
    cfg = saved_run_config(kind, run_config["config"])
    td = describe_training_data(run_config) if training_data is None else training_data
    if kind == "seg":
        k = int(cfg["num_classes"])
        post = seg_postprocessing_text(cfg)
        what = (f"Ensemble segmentation (the mean class probabilities of {len(cfg['network']['members'])} 3D U-Nets)"
                if is_ensemble(cfg) else f"3D {cfg['network'].get('variant', 'unet').upper()} segmentation")
        desc = (f"{what} of intracranial blood in head CT "
                f"({'any blood' if k == 2 else 'five subtypes'}): a DICOM series or NIfTI volume in HU is reoriented "
                f"to RAS, resampled to {cfg['spacing_mm']} mm, cropped to the brain and windowed into 3 channels; "
                f"sliding-window inference with {list(cfg['patch'])} patches (overlap {float(cfg['sw_overlap']):g})"
                f"{mirroring_text(cfg, kind)}; the label map is "
                "written on the input's grid" + (f", {post}." if post else "."))
        label_classes = "0 background, 1 blood" if k == 2 else "0 background, 1-5 the subtypes"
    else:
        what = (f"Ensemble of {len(cfg['network']['members'])} slice-sequence classifiers (the mean slice probabilities "
                f"of {encoders_text(cfg)} 2D encoders per axial slice + bidirectional RNNs over the slices)"
                if is_ensemble(cfg) else f"Slice-sequence classifier ({cfg['network'].get('encoder', 'densenet121')} 2D "
                                         "encoder per axial slice + bidirectional RNN over the slices)")
        desc = (f"{what}: probabilities of any hemorrhage and the five subtypes per "
                f"slice{mirroring_text(cfg, kind)}, and one call per CT and subtype by the stored decision rule "
                "(models/thresholds.json).")
        label_classes = "per slice: " + ", ".join(LABEL_NAMES)
    desc += brain_reference_text(cfg)
    meta: dict[str, Any] = {
        "schema": ZOO_SCHEMA_URL,
        "version": version,
        "changelog": dict(changelog),
        "monai_version": versions["monai"],
        "pytorch_version": versions["torch"],
        "numpy_version": versions["numpy"],
        "required_packages_version": dict(required_packages),
        "name": name or NAMES[kind],
        "task": TASKS[kind],
        "description": desc,
        "authors": "ichct developers",
        "copyright": "Copyright (c) ichct developers",
        "data_source": data_source(td),
        "data_type": "dicom",
        "image_classes": "; ".join([f"channel {i}: {n} window {lv:g}/{wd:g} HU -> [0, 1]"
                                    for i, (n, lv, wd) in enumerate(_windows(cfg))]
                                   + ([f"channel {len(_windows(cfg))}: brain window of the skull-stripped image -> [0, 1]"]
                                      if input_channels(kind, cfg) > len(_windows(cfg)) else [])),
        "label_classes": label_classes,
        "pred_classes": label_classes,
        "eval_metrics": key_numbers(kind, evaluation) if evaluation else {},
        "intended_use": intended_use(td),
        "references": list(REFERENCES if kind == "seg" else REFERENCES[:3]),
        "network_data_format": {"inputs": {"image": _input_format(kind, cfg)},
                                "outputs": {"pred": _output_format(kind, cfg)}},
    }
    return meta
