"""JSON Schema (draft-07) of the ``report.json`` that ``ichct predict`` writes, and its validator.

One report per study. ``findings[<label>]`` for ``"any"`` and the five subtypes the models can
speak about (a binary segmenter alone: ``"any"`` only) holds the CT-level result under the chosen
decision rule and the segmentation measurements::

    {"probability", "score", "score_unit", "threshold", "call", "slice_ranges",
     "slice_ranges_source", "volume_ml", "volume_ml_model_grid", "abc2"}

Slice ranges are ``[first, last]`` (0-based, inclusive) indices along the image's last axis,
which is the reader's slice order (see :mod:`ichct.pipeline.models.inference`). The report carries no
patient name, ID or birth date (:data:`FORBIDDEN_KEYS` are refused anywhere in the document).

``models_source`` says where the models came from: ``"user"`` (``--run``/``--bundle``, or models
passed to :func:`ichct.pipeline.predict.run.predict`) or ``"shipped"`` (the demonstration bundles that
ship with ichct, :mod:`ichct.pipeline.models.shipped_models`, used when no model is given; ``warnings``
then says that they were trained on synthetic data only).

``hu_reference`` says, per model with brain-referenced HU (``brain_reference_hu``), the brain
tissue level measured in the study, the model's reference level, the shift its preprocessing added
and whether that shift was clipped (empty when no model references HU).

Schema versions (:data:`REPORT_SCHEMA_VERSION`): 1 first release; 2 adds the required
``models_source``; 3 the required ``hu_reference``; 4 admits the rule ``fused`` (both models' mean,
:mod:`ichct.pipeline.decision`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ichct.pipeline.evaluate.metrics_schema import to_jsonable

__all__ = ["REPORT_SCHEMA", "REPORT_SCHEMA_VERSION", "FORBIDDEN_KEYS", "validate_report"]

#: ``schema_version`` of the reports written now (see the module docstring for the changes).
REPORT_SCHEMA_VERSION = 4

#: Keys that would carry patient identity; never allowed in a report (any depth).
FORBIDDEN_KEYS = frozenset({"PatientName", "PatientID", "PatientBirthDate", "patient_name", "patient_id",
                            "patient_birth_date", "birth_date"})

_NUM = {"type": ["number", "null"]}
_RANGE = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2}

_ABC2 = {
    "type": ["object", "null"],
    "required": ["volume_ml", "a_mm", "b_mm", "c_mm", "slice_index", "n_slices", "component_volume_ml"],
    "properties": {
        "volume_ml": {"type": "number", "minimum": 0},
        "a_mm": {"type": "number", "minimum": 0},
        "b_mm": {"type": "number", "minimum": 0},
        "c_mm": {"type": "number", "minimum": 0},
        "slice_index": {"type": "integer", "minimum": 0},
        "n_slices": {"type": "integer", "minimum": 1},
        "component_volume_ml": {"type": "number", "minimum": 0},
        "slice_thickness_mm": {"type": "number", "exclusiveMinimum": 0},
    },
    "additionalProperties": False,
}

_FINDING = {
    "type": "object",
    "required": ["probability", "score", "score_unit", "threshold", "call", "slice_ranges", "slice_ranges_source",
                 "volume_ml", "abc2"],
    "properties": {
        "probability": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "score": _NUM,
        "score_unit": {"enum": ["probability", "mL", None]},
        "threshold": _NUM,
        "call": {"type": ["boolean", "null"]},
        "slice_ranges": {"type": "array", "items": _RANGE},
        "slice_ranges_source": {"type": ["string", "null"]},
        "volume_ml": {"type": ["number", "null"], "minimum": 0},
        "volume_ml_model_grid": {"type": ["number", "null"], "minimum": 0},
        "abc2": _ABC2,
    },
    "additionalProperties": False,
}

_TIMINGS = {
    "type": "object",
    "required": ["read", "preprocess", "seg", "cls", "write", "total"],
    "additionalProperties": {"type": "number", "minimum": 0},
}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "https://ichct.invalid/schemas/predict-report.json",
    "title": "ichct prediction report (one study)",
    "type": "object",
    "definitions": {"finding": _FINDING},
    "required": ["schema_version", "ichct_version", "created_utc", "input", "series", "models", "models_source",
                 "hu_reference", "rule", "findings", "warnings", "timings_s", "outputs", "disclaimer"],
    "properties": {
        "schema_version": {"const": REPORT_SCHEMA_VERSION},
        "ichct_version": {"type": "string"},
        "created_utc": {"type": "string"},
        "device": {"type": "string"},
        "input": {
            "type": "object",
            "required": ["path", "format", "shape", "spacing_mm", "affine_ras"],
            "properties": {
                "path": {"type": "string"},
                "format": {"enum": ["dicom", "nifti", "image"]},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3, "maxItems": 3},
                "spacing_mm": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
                "affine_ras": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            },
            "additionalProperties": False,
        },
        "series": {
            "type": ["object", "null"],
            "required": ["series_uid", "selection"],
            "properties": {
                "series_uid": {"type": "string"},
                "study_uid": {"type": ["string", "null"]},
                "description": {"type": ["string", "null"]},
                "selection": {"type": "string"},
                "patient_key": {"type": ["string", "null"]},
                "candidates": {"type": "array", "items": {"type": "object"}},
            },
            "additionalProperties": True,
        },
        "models": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"enum": ["seg", "cls"]},
            "additionalProperties": {"type": "object", "required": ["kind"]},
        },
        "models_source": {"enum": ["user", "shipped"]},
        "hu_reference": {
            "type": "object",
            "propertyNames": {"enum": ["seg", "cls"]},
            "additionalProperties": {
                "type": "object",
                "required": ["reference_hu", "brain_tissue_hu", "shift_hu", "clipped"],
                "properties": {"reference_hu": {"type": "number"}, "brain_tissue_hu": _NUM,
                               "shift_hu": {"type": "number"}, "clipped": {"type": "boolean"}},
                "additionalProperties": False,
            },
        },
        "rule": {
            "type": "object",
            "required": ["name", "k"],
            "properties": {"name": {"enum": ["consecutive", "max", "topk_mean", "seg_volume", "seg_peak", "fused"]}},
        },
        "findings": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"enum": ["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid",
                                       "subdural"]},
            "additionalProperties": {"$ref": "#/definitions/finding"},
        },
        "thresholds": {"type": "object"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "timings_s": _TIMINGS,
        "outputs": {
            "type": "object",
            "required": ["report", "mask", "seg_dicom", "overlays"],
            "properties": {
                "report": {"const": "report.json"},
                "mask": {"type": ["string", "null"]},
                "seg_dicom": {"type": ["string", "null"]},
                "seg_dicom_skipped": {"type": "string"},
                "seg_dicom_source": {
                    "type": "object",
                    "required": ["frame_of_reference_uid", "frame_of_reference_source"],
                    "properties": {"frame_of_reference_source": {"enum": ["source", "generated"]}},
                },
                "mask_skipped": {"type": "string"},
                "overlays": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "disclaimer": {"type": "string"},
    },
    "additionalProperties": False,
}


def _forbidden_keys(obj: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            where = f"{path}/{k}"
            if str(k) in FORBIDDEN_KEYS:
                found.append(where)
            found += _forbidden_keys(v, where)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _forbidden_keys(v, f"{path}/{i}")
    return found


def validate_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of ``report`` validated against :data:`REPORT_SCHEMA`.

    Raises
    ------
    jsonschema.ValidationError
        The report does not follow the schema.
    ValueError
        The report holds a patient-identity key (:data:`FORBIDDEN_KEYS`).
    """
    import jsonschema

    doc = to_jsonable(report)
    bad = _forbidden_keys(doc)
    if bad:
        raise ValueError(f"report would carry patient identifiers at {', '.join(bad)}")
    jsonschema.Draft7Validator.check_schema(REPORT_SCHEMA)
    jsonschema.Draft7Validator(REPORT_SCHEMA).validate(doc)
    return doc
