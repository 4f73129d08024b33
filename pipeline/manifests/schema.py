"""The manifest JSON Schema (``schema.json``, shipped as package data) and its validation."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from ichct.errors import IchctError


@functools.lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema every manifest must satisfy."""
    text = resources.files("ichct.pipeline.manifests").joinpath("schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = manifest_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_problems(doc: Any, limit: int = 20) -> list[str]:
    """One line per schema violation (at most ``limit``, then a count of the rest)."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    lines = []
    for err in errors[:limit]:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message if len(err.message) <= 200 else err.message[:197] + "..."
        lines.append(f"schema: {where}: {message}")
    if len(errors) > limit:
        lines.append(f"schema: ... and {len(errors) - limit} more violation(s)")
    return lines


def validate_manifest(doc: Any) -> None:
    """Raise :class:`~ichct.errors.IchctError` (a ``ValueError``) listing the schema violations of ``doc``
    (nothing when valid)."""
    problems = schema_problems(doc)
    if problems:
        raise IchctError("manifest does not follow the schema:\n  " + "\n  ".join(problems))
