"""JSON Schema (draft-07) of ``metrics.json`` and helpers to make a metrics dict JSON-safe and check it.

Every metric is ``{"value", "ci_low", "ci_high"}`` (numbers, or ``null`` where undefined: NaN is
written as ``null``), optionally with ``n_boot_valid`` (resamples where the metric was defined),
``reason`` (why it is undefined) and ``p_value`` (paired comparisons).

``ct_level[<subtype>][<rule>][<metric>]``: subtypes of :data:`ichct.pipeline.decision.SUBTYPES`
plus ``"all"`` for the multi-label RSNA log loss; ``segmentation[<class>][<metric>]`` with class
``"any"`` or a subtype; ``readers[<subtype>][<reader>][<metric>]`` (optional). ``models_source``
(optional): ``"user"`` or ``"shipped"`` (the demonstration bundles of :mod:`ichct.pipeline.models.shipped_models`).
``lesion_definition`` (optional): what a lesion is for ``lesion_sensitivity`` and ``fp_per_scan``
(``connectivity`` 6/18/26, ``min_volume_ml``, ``description``; :mod:`ichct.pipeline.evaluate.lesions`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["METRICS_SCHEMA", "to_jsonable", "validate_metrics"]

_NUM = {"type": ["number", "null"]}

_METRIC = {
    "type": "object",
    "required": ["value", "ci_low", "ci_high"],
    "properties": {
        "value": _NUM,
        "ci_low": _NUM,
        "ci_high": _NUM,
        "n_boot_valid": {"type": "integer", "minimum": 0},
        "reason": {"type": "string"},
        "p_value": _NUM,
    },
    "additionalProperties": False,
}

_METRIC_MAP = {"type": "object", "additionalProperties": {"$ref": "#/definitions/metric"}}

METRICS_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "https://ichct.invalid/schemas/metrics.json",
    "title": "ichct evaluation metrics",
    "type": "object",
    "definitions": {"metric": _METRIC, "metric_map": _METRIC_MAP},
    "required": [
        "model", "manifest", "split", "n_patients", "n_studies", "allow_overlap", "ct_level", "segmentation",
    ],
    "properties": {
        "model": {"type": "object"},
        "manifest": {"type": "object"},
        "split": {"type": "string"},
        "n_patients": {"type": "integer", "minimum": 0},
        "n_studies": {"type": "integer", "minimum": 0},
        "allow_overlap": {"type": "boolean"},
        "n_boot": {"type": "integer", "minimum": 0},
        "seed": {"type": ["integer", "null"]},
        "ct_level": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": {"$ref": "#/definitions/metric_map"}},
        },
        "segmentation": {"type": "object", "additionalProperties": {"$ref": "#/definitions/metric_map"}},
        "readers": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": {"$ref": "#/definitions/metric_map"}},
        },
        "comparisons": {"type": "object"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "models_source": {"enum": ["user", "shipped"]},
        "lesion_definition": {
            "type": "object",
            "required": ["connectivity", "min_volume_ml", "description"],
            "properties": {
                "connectivity": {"enum": [6, 18, 26]},
                "min_volume_ml": {"type": "number", "minimum": 0},
                "description": {"type": "string"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": True,
}


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: NumPy scalars/arrays converted, NaN and +-inf -> ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def validate_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of ``metrics`` validated against :data:`METRICS_SCHEMA`.

    Raises
    ------
    jsonschema.ValidationError
        The dict does not follow the schema.
    """
    import jsonschema

    doc = to_jsonable(metrics)
    jsonschema.Draft7Validator.check_schema(METRICS_SCHEMA)
    jsonschema.Draft7Validator(METRICS_SCHEMA).validate(doc)
    return doc
