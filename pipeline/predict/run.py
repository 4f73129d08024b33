"""``predict(...)``: one study (DICOM folder or NIfTI) -> mask, DICOM SEG, report and overlays.

Inference goes through :func:`ichct.pipeline.models.inference.predict_study`, the code path that
``ichct evaluate`` uses, so a prediction is exactly what the evaluation measured. ``OUT_DIR`` gets:

* ``mask.nii.gz``: the label map on the ORIGINAL series grid (the grid and NIfTI conventions of
  ``ichct convert``: same shape and RAS affine, qform + sform, sform only for a sheared affine),
  so it overlays the source in any viewer (segmentation model only);
* ``seg.dcm``: a DICOM Segmentation referencing the source instances (:mod:`.seg_dicom`; DICOM
  input and a segmentation model only; the report says why when it is skipped);
* ``report.json``: findings per label under the chosen rule, volumes, ABC/2, models, thresholds,
  the series used and why, reader warnings, time per stage (:mod:`.report_schema`, validated
  before writing; no patient name, ID or birth date);
* ``overlays/``: key slices in the brain window with the mask outlined and the per-slice
  probability plot (:mod:`.overlays`).

Everything is written into a temporary folder beside ``OUT_DIR`` and renamed at the end: an error
(non-CT input, an empty folder, a corrupt series) leaves nothing behind. An existing non-empty
``OUT_DIR`` is refused unless ``overwrite=True``.

:func:`ichct.pipeline.predict.batch.predict_batch` runs a CSV list of studies as Dask tasks (one
sub-folder each and ``summary.csv``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ichct.errors import IchctError, InputError
from ichct.pipeline.core.atomic import replace_dir, temp_dir_beside, write_json_atomic
from ichct.pipeline.decision import RULES, SLICE_RULES, models_needed
from ichct.pipeline.core.labels import LABEL_NAMES

logger = logging.getLogger("ichct.predict")

__all__ = ["predict", "normalise_models", "choose_rule", "check_models_source", "load_default_models",
           "write_label_nifti", "series_section", "hu_reference_warnings", "DISCLAIMER"]

DISCLAIMER = "ichct is a research tool, not a medical device; do not use this report for diagnosis."


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def normalise_models(models: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """``{"seg": LoadedModel, "cls": LoadedModel}`` from a mapping or a list of loaded models.

    Raises ``ValueError`` for no model, two models of one kind, or a model under the wrong key.
    """
    if isinstance(models, Mapping):
        out = {k: m for k, m in models.items() if m is not None}
        for key, m in out.items():
            if key not in ("seg", "cls") or m.kind != key:
                raise ValueError(f"models[{key!r}] holds a {m.kind} model ({m.run_dir})")
    else:
        out = {}
        for m in models:
            if m.kind in out:
                raise InputError(f"two {m.kind} models given ({out[m.kind].run_dir}, {m.run_dir}); give at most one "
                    "segmentation and one classification model")
            out[m.kind] = m
    if not out:
        raise InputError(
            "predict needs a segmentation and/or a classification model (--run or --bundle)")
    return out


def check_models_source(models: Mapping[str, Any], models_source: str) -> str | None:
    """Check ``models_source`` (``"user"`` or ``"shipped"``) against the models; the warning that
    goes into the report for ``"shipped"`` (None for ``"user"``).

    Raises :class:`ichct.errors.IchctError` for another value, or ``"shipped"`` with a model that is
    not one of the shipped bundles.
    """
    from ichct.pipeline.models.shipped_models import MODELS_SOURCES, is_shipped_model, shipped_models_warning

    if models_source not in MODELS_SOURCES:
        raise IchctError(f"models_source must be one of {', '.join(MODELS_SOURCES)}, got {models_source!r}")
    if models_source == "user":
        return None
    other = [str(getattr(m, "bundle_dir", None) or m.run_dir) for m in models.values() if not is_shipped_model(m)]
    if other:
        raise IchctError(f"models_source='shipped' but {', '.join(other)} is not a shipped model bundle")
    return shipped_models_warning(tuple(k for k in ("seg", "cls") if k in models))


def load_default_models(device: str = "cpu") -> list[Any]:
    """The models ``ichct predict`` uses when none is given: both shipped demonstration bundles
    (:func:`ichct.pipeline.models.shipped_models.load_shipped_models`; logs their warning). Pass
    ``models_source="shipped"`` to :func:`predict` / ``predict_batch`` with them."""
    from ichct.pipeline.models.shipped_models import load_shipped_models

    return load_shipped_models(device)


def choose_rule(models: Mapping[str, Any], rule: str | None) -> tuple[str, Any]:
    """The decision rule ``(name, DecisionRule)``; default ``consecutive`` with a classifier, else
    ``seg_volume``. Thresholds come from the models (:func:`ichct.pipeline.models.inference.default_rules`)."""
    from ichct.pipeline.models.inference import default_rules

    name = rule or ("consecutive" if "cls" in models else "seg_volume")
    if name not in RULES:
        raise InputError(
            f"unknown rule {name!r}; choose from {', '.join(RULES)}")
    available = default_rules(models)
    if name not in available:
        raise InputError(
            f"rule {name!r} needs {models_needed(name)}, which was not given")
    return name, available[name]


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a path that is not a folder, or a non-empty folder unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise InputError(
            out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(
            out, "exists and is not empty; choose another output folder or pass --overwrite")


def _is_dicom_input(path: Path) -> bool:
    from ichct.transforms.loading import is_dicom_path

    return is_dicom_path(path)


def _input_format(path: Path, dicom: bool) -> str:
    """``dicom``, ``nifti`` or ``image`` (another format MONAI reads)."""
    if dicom:
        return "dicom"
    return "nifti" if path.name.lower().endswith((".nii", ".nii.gz")) else "image"


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def write_label_nifti(labels: np.ndarray, affine_ras: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 label map with the NIfTI conventions of ``ichct convert`` (qform and sform
    code 1; a sheared affine as sform only, qform code 0)."""
    import nibabel as nib

    from ichct.pipeline.ingest import set_nifti_geometry

    affine = np.asarray(affine_ras, dtype=np.float64)
    img = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), affine)
    img.header.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"ichct hemorrhage labels"
    img.header["intent_name"] = b"labels"
    set_nifti_geometry(img, affine)
    nib.save(img, str(path))
    return Path(path)


def series_section(info: Mapping[str, Any] | None, groups: Sequence[Any] | None,
                   chosen: Any | None) -> dict[str, Any] | None:
    """The ``series`` section of ``report.json``: the series read and the candidates it was chosen from.

    Parameters
    ----------
    info
        The reader's sidecar of the study (:attr:`~ichct.pipeline.models.inference.StudyPrediction.ingest_info`);
        None for NIfTI input.
    groups
        The series found in the DICOM folder (``summary()`` of each), or None.
    chosen
        The group that was read, or None.

    Returns
    -------
    dict or None
        UIDs, selection, acquisition and geometry fields, the HU check and ``candidates``; None
        without ``info``.
    """
    if info is None:
        return None
    candidates = []
    for g in groups or []:
        s = g.summary()
        candidates.append({"series_uid": s["series_uid"], "series_number": s["series_number"],
                           "description": s["description"], "modality": s["modality"], "plane": s["plane"],
                           "n_slices": s["n_slices"], "slice_thickness_mm": s["slice_thickness_mm"],
                           "kernel": s["kernel"], "kernel_class": s["kernel_class"],
                           "chosen": chosen is not None and g.group_id == chosen.group_id,
                           "excluded_reason": s["excluded_reason"]})
    keys = ("series_number", "modality", "manufacturer", "kernel", "slice_thickness_mm", "slice_spacing_mm",
            "pixel_spacing_mm", "slice_count", "source_file_count", "transfer_syntax", "tilt", "spacing_uniform",
            "gaps", "missing_slices", "resampled_to_uniform_spacing", "duplicates", "skipped_files", "hu_check")
    return {"series_uid": info["series_uid"], "study_uid": info.get("study_uid"),
            "description": info.get("series_description"), "selection": info.get("selection", ""),
            "patient_key": info.get("patient_key"), **{k: info.get(k) for k in keys}, "candidates": candidates}


def _model_id(model: Any) -> str:
    """A short name of a loaded model: its bundle's or run folder's name."""
    return Path(getattr(model, "bundle_dir", None) or model.run_dir).name


def _rule_section(name: str, rule: Any) -> dict[str, Any]:
    d = rule.to_dict()
    d["name"] = name
    return d


def _write_overlays(folder: Path, pred: Any, findings: Mapping[str, Any], rule_name: str, rule: Any,
                    models: Mapping[str, Any]) -> list[str]:
    from ichct.pipeline.predict.overlays import key_slices, write_key_slice, write_probability_plot
    from ichct.pipeline.predict.seg_dicom import segment_labels
    from ichct.transforms import voxel_spacing

    folder.mkdir()
    written: list[str] = []
    spacing = voxel_spacing(pred.original_affine)
    names: dict[int, str] = {}
    if pred.seg_original is not None:
        names = {i: n for i, n in enumerate(segment_labels(int(pred.num_seg_classes)), start=1)}
    if pred.hu_volume is not None:
        for k in key_slices(pred.seg_original, pred.slice_probs, pred.n_slices):
            title = f"slice {k} of {pred.n_slices} (brain window 40/80)"
            if pred.slice_probs is not None:
                title += f", p(any) = {pred.slice_probs[k, 0]:.2f}"
            p = write_key_slice(folder / f"slice_{k:03d}.png", pred.hu_volume, k, pred.seg_original, names, spacing,
                                title)
            written.append(f"overlays/{p.name}")
    if pred.slice_probs is not None:
        if rule.name in SLICE_RULES:
            th = rule.threshold_for("any")
        else:
            cls_rule = models["cls"].rule
            th = cls_rule.threshold_for("any") if cls_rule is not None and cls_rule.name in SLICE_RULES else None
        ranges = findings.get("any", {}).get("slice_ranges", []) if rule.name in SLICE_RULES else []
        p = write_probability_plot(folder / "slice_probabilities.png", pred.slice_probs, LABEL_NAMES, th, ranges,
                                   title=f"slice probabilities (rule {rule_name})")
        written.append(f"overlays/{p.name}")
    return written


def hu_reference_warnings(hu_reference: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warnings about brain-referenced HU (``hu_reference`` of a
    :class:`~ichct.pipeline.models.inference.StudyPrediction`): a brain too far off its reference for
    the shift to undo it (a calibration or rescale problem to look at), or no brain tissue to
    measure. One warning for the models that share a finding.

    Examples
    --------
    >>> hu_reference_warnings({"seg": {"reference_hu": 30.0, "brain_tissue_hu": 52.0, "shift_hu": -15.0,
    ...                                "clipped": True}})[0][:66]
    'brain-referenced HU (seg): the brain tissue reads 52.0 HU, 22.0 HU'
    >>> hu_reference_warnings({"cls": {"reference_hu": 30.0, "brain_tissue_hu": 31.0, "shift_hu": -1.0,
    ...                                "clipped": False}})
    []
    """
    by_message: dict[str, list[str]] = {}
    for kind, ref in hu_reference.items():
        level, reference = ref.get("brain_tissue_hu"), float(ref["reference_hu"])
        if level is None:
            message = ("too little brain tissue (15-45 HU inside the skull) to measure its level: the HU were not "
                       "referenced")
        elif ref.get("clipped"):
            message = (f"the brain tissue reads {level:.1f} HU, {abs(level - reference):.1f} HU from the reference "
                       f"{reference:g} HU; the shift was limited to {float(ref['shift_hu']):+g} HU. Check the "
                       "scanner's calibration and the rescale tags (RescaleSlope, RescaleIntercept)")
        else:
            continue
        by_message.setdefault(message, []).append(kind)
    return [f"brain-referenced HU ({', '.join(kinds)}): {message}" for message, kinds in by_message.items()]


def _warnings(pred: Any, extra: Sequence[str]) -> list[str]:
    info = pred.ingest_info or {}
    out = [str(w) for w in info.get("warnings", [])]
    out += hu_reference_warnings(pred.hu_reference)
    if info.get("skipped_files"):
        out.append(f"{info['skipped_files']} file(s) in the input folder were skipped (not DICOM or unreadable)")
    out += [w for w in extra if w not in out]
    return out


# --------------------------------------------------------------------------------------------
# One study
# --------------------------------------------------------------------------------------------


@dataclass
class _StudyRead:
    """One study read and predicted, with what its outputs need."""

    pred: Any  # the StudyPrediction
    findings: dict[str, Any]  # per label, under the chosen rule
    dicom: bool  # DICOM input (else NIfTI or another image format)
    headers: list[Any] | None = None  # the source instances of the series read (DICOM input)
    groups: list[Any] | None = None  # every series group of the DICOM folder
    chosen: Any | None = None  # the group that was read


def predict(input_path: str | Path, out_dir: str | Path, models: Mapping[str, Any] | Sequence[Any],
            rule: str | None = None, *, overwrite: bool = False, overlays: bool = True,
            seg_dicom: bool = True, models_source: str = "user") -> dict[str, Any]:
    """Predict one study and write ``mask.nii.gz``, ``seg.dcm``, ``report.json`` and ``overlays/``.

    Parameters
    ----------
    input_path
        A DICOM study/series folder (the default series is chosen as ``ichct convert`` does), a
        DICOMDIR, or a NIfTI CT volume in HU.
    out_dir
        Output folder; must not exist or be empty unless ``overwrite``.
    models
        Loaded models (:func:`ichct.pipeline.models.inference.load_run` or
        ``ichct.pipeline.bundle.package.load_bundle``): a mapping ``{"seg": ..., "cls": ...}`` or a list.
    rule
        ``consecutive``, ``max``, ``topk_mean`` (need a classifier), ``seg_volume`` or ``seg_peak``
        (need a segmenter), ``fused`` (needs both); default ``consecutive`` with a classifier, else
        ``seg_volume``.
    overwrite
        Replace a non-empty ``out_dir``.
    overlays, seg_dicom
        Write the PNG overlays / the DICOM SEG.
    models_source
        ``"user"`` (default) or ``"shipped"``: ``models`` are the demonstration bundles that ship
        with ichct (:func:`ichct.pipeline.models.shipped_models.load_shipped_models`); recorded as
        ``report.json["models_source"]``, and ``"shipped"`` adds their warning to ``warnings``.

    Returns
    -------
    dict
        The report (as written to ``report.json``).

    Raises
    ------
    ichct.transforms.dicom.DicomIngestError
        Not CT, an empty folder, no usable series, undecodable pixel data (names the folder).
    FileNotFoundError
        ``input_path`` does not exist.
    ValueError
        Bad arguments or an existing non-empty ``out_dir``.
    """
    t_start = time.perf_counter()
    src, out = Path(input_path), Path(out_dir)
    mods = normalise_models(models)
    shipped_warning = check_models_source(mods, models_source)
    rule_name, rule_obj = choose_rule(mods, rule)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    check_out_dir(out, overwrite)

    study = _read_study(src, mods, rule_name, rule_obj, keep_image=overlays)
    timings = dict(study.pred.timings_s)
    extra_warnings: list[str] = [shipped_warning] if shipped_warning else []

    t_write = time.perf_counter()
    tmp = temp_dir_beside(out)
    try:
        outputs = _write_outputs(tmp, study, mods, rule_name, rule_obj, overlays=overlays, seg_dicom=seg_dicom,
                                 warnings=extra_warnings)
        timings["write"] = time.perf_counter() - t_write
        timings["total"] = time.perf_counter() - t_start
        doc = _assemble_report(src, study, mods, models_source, rule_name, rule_obj, outputs=outputs,
                               warnings=extra_warnings, timings=timings)
        write_json_atomic(tmp / "report.json", doc)
        check_out_dir(out, overwrite)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    any_f = study.findings.get("any", {})
    logger.info("%s: rule %s, any: call %s, score %s; wrote %s", src, rule_name, any_f.get("call"),
                None if any_f.get("score") is None else round(any_f["score"], 4), out)
    return doc


def _read_study(src: Path, mods: Mapping[str, Any], rule_name: str, rule_obj: Any, keep_image: bool) -> _StudyRead:
    """Read and predict the study (:func:`ichct.pipeline.models.inference.predict_study`) and build its findings.

    A DICOM folder is scanned once: the prediction carries the series it read (whose headers the
    SEG references) and the candidate series it was chosen from.
    """
    from ichct.pipeline.models.inference import predict_study
    from ichct.pipeline.predict.findings import build_findings

    dicom = _is_dicom_input(src)
    pred = predict_study(mods, src, {rule_name: rule_obj}, keep_image=keep_image)
    study = _StudyRead(pred=pred, findings={}, dicom=dicom)
    if dicom:
        chosen = pred.dicom_series
        if chosen is None:
            raise RuntimeError(f"{src}: read as DICOM, but the prediction holds no series")
        if pred.ingest_info is not None and chosen.series_uid != pred.ingest_info.get("series_uid"):
            raise RuntimeError(f"{src}: the series read ({pred.ingest_info.get('series_uid')}) is not the series "
                               f"whose headers the SEG would reference ({chosen.series_uid})")
        study.chosen, study.groups, study.headers = chosen, pred.dicom_candidates, chosen.headers
    study.findings = build_findings(pred, rule_name, rule_obj)
    return study


def _write_outputs(tmp: Path, study: _StudyRead, mods: Mapping[str, Any], rule_name: str, rule_obj: Any, *,
                   overlays: bool, seg_dicom: bool, warnings: list[str]) -> dict[str, Any]:
    """Write the mask, the DICOM SEG and the overlays into ``tmp``; the report's ``outputs`` section.

    Warnings about the SEG (not written for NIfTI input, its sources) are appended to ``warnings``.
    """
    pred = study.pred
    outputs: dict[str, Any] = {"report": "report.json", "mask": None, "seg_dicom": None, "overlays": []}
    if pred.seg_original is not None:
        write_label_nifti(pred.seg_original, pred.original_affine, tmp / "mask.nii.gz")
        outputs["mask"] = "mask.nii.gz"
    else:
        outputs["mask_skipped"] = "no segmentation model given"
    _write_seg(tmp, study, mods.get("seg"), seg_dicom, outputs, warnings)
    if overlays:
        outputs["overlays"] = _write_overlays(tmp / "overlays", pred, study.findings, rule_name, rule_obj, mods)
    return outputs


def _write_seg(tmp: Path, study: _StudyRead, seg_model: Any, requested: bool, outputs: dict[str, Any],
               warnings: list[str]) -> None:
    """Write ``seg.dcm`` when asked for and possible, else record in ``outputs`` why not."""
    pred = study.pred
    if not requested:
        outputs["seg_dicom_skipped"] = "not requested"
    elif pred.seg_original is None:
        outputs["seg_dicom_skipped"] = "no segmentation model given"
    elif study.headers is None:
        outputs["seg_dicom_skipped"] = "NIfTI input: a DICOM SEG needs the source DICOM instances"
        warnings.append("NIfTI input: no DICOM SEG written (it needs the source DICOM instances)")
    else:
        from ichct.pipeline.predict.seg_dicom import seg_source_warnings, write_seg_dicom
        from ichct.pipeline.predict.seg_sources import SegSourceError

        # A SEG references its source instances by their UIDs. A source without them (bare archive
        # files) cannot be referenced, and ichct does not invent stand-in UIDs: a SEG pointing at
        # instances that exist nowhere would be wrong in any archive. Everything else is written;
        # the warning and outputs.seg_dicom_skipped say why there is no seg.dcm.
        try:
            seg_info = write_seg_dicom(pred.seg_original, pred.original_affine, study.headers, tmp / "seg.dcm",
                                       num_classes=int(pred.num_seg_classes),
                                       model_name=f"ichct seg {_model_id(seg_model)}")
        except SegSourceError as exc:
            (tmp / "seg.dcm").unlink(missing_ok=True)
            why = redact_patient(f"{Path(exc.path).name}: {exc.reason}", study.headers)
            outputs["seg_dicom_skipped"] = f"the source series cannot be referenced by a DICOM SEG: {why}"
            warnings.append(f"no DICOM SEG written: {why} (mask.nii.gz, report.json and overlays are written; "
                            "ichct does not invent UIDs for the source images)")
            logger.warning("%s: %s", redact_patient(str(exc.path), study.headers), warnings[-1])
            return
        outputs["seg_dicom"] = "seg.dcm"
        outputs["seg_dicom_source"] = seg_info["source_headers"]
        warnings += seg_source_warnings(seg_info["source_headers"])


def _assemble_report(src: Path, study: _StudyRead, mods: Mapping[str, Any], models_source: str, rule_name: str,
                     rule_obj: Any, *, outputs: Mapping[str, Any], warnings: Sequence[str],
                     timings: Mapping[str, float]) -> dict[str, Any]:
    """``report.json``'s document, validated (:func:`ichct.pipeline.predict.report_schema.validate_report`)."""
    from ichct import __version__
    from ichct.pipeline.predict.report_schema import REPORT_SCHEMA_VERSION, validate_report
    from ichct.transforms import voxel_spacing

    pred, findings = study.pred, study.findings
    sp = voxel_spacing(pred.original_affine)
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "ichct_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(next(iter(mods.values())).device),
        "input": {"path": redact_patient(str(src.resolve()), study.headers),
                  "format": _input_format(src, study.dicom),
                  "shape": list(pred.original_shape), "spacing_mm": [float(v) for v in sp],
                  "affine_ras": np.round(pred.original_affine, 6).tolist()},
        "series": series_section(pred.ingest_info, study.groups, study.chosen),
        "models": {k: m.describe() for k, m in mods.items()},
        "hu_reference": pred.hu_reference,
        "models_source": models_source,
        "rule": _rule_section(rule_name, rule_obj),
        "thresholds": {label: f["threshold"] for label, f in findings.items() if f["threshold"] is not None},
        "findings": findings,
        "warnings": _warnings(pred, warnings),
        "timings_s": {k: round(float(v), 4) for k, v in timings.items()},
        "outputs": outputs,
        "disclaimer": DISCLAIMER,
    }
    return validate_report(report)


REDACTED = "[patient]"


def redact_patient(text: str, headers: Sequence[Any] | None) -> str:
    """``text`` (a path) with the DICOM PatientID and the parts of PatientName replaced by ``[patient]``.

    Archives are often filed by patient (``/pacs/<PatientID>/<study>``); the report keeps where the
    study came from without naming the patient. Tokens of 3 or more characters are replaced
    wherever they occur (case-insensitive); shorter ones only as whole path components.
    """
    if not headers:
        return text
    first = headers[0]
    tokens = {str(first.patient_id).strip()} if getattr(first, "patient_id", None) else set()
    name = getattr(first, "patient_name", None)
    if name:
        tokens |= {t for t in re.split(r"[\^\s,]+", str(name)) if t}
        tokens.add(str(name).strip())
    tokens.discard("")
    for token in sorted(tokens, key=len, reverse=True):
        if len(token) >= 3:
            text = re.sub(re.escape(token), REDACTED, text, flags=re.IGNORECASE)
        else:
            text = re.sub(r"(?<=[/\\])" + re.escape(token) + r"(?=[/\\]|$)", REDACTED, text)
    return text
