"""The manifest JSON Schema (``schema.json``, shipped as package data) and its validation.

A manifest of a large cohort holds one ``slice_labels`` row per slice (RSNA: 752,803 rows);
jsonschema would check each flag of each row through its ``$ref``. Rows that are plainly valid (a
list of six ints in -1/0/1) are checked here in one pass and left out of what jsonschema sees, and
the schema's local ``$ref`` s are inlined once. Only a manifest found invalid that way is validated
again in full, so the problems reported (their messages may quote an entry) are the plain schema's.
"""

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


@functools.lru_cache(maxsize=2)
def _validator(inlined: bool = False):
    """The schema's validator; ``inlined``: the same schema with its local references inlined."""
    import jsonschema

    schema = manifest_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(_inline_refs(schema, schema.get("$defs", {})) if inlined else schema)


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with each ``{"$ref": "#/$defs/NAME"}`` replaced by that definition (the schema has no
    recursive definitions), so validation does not resolve a reference per value."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
            return _inline_refs(defs[ref[8:]], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


_FLAGS = frozenset({-1, 0, 1})
_ROW_LENGTH = 6


def _plainly_valid_rows(rows: Any) -> bool:
    """True when ``rows`` is a list of lists of six ints (not bools) each in -1/0/1: what the schema's
    ``slice_labels`` allows, so jsonschema need not look at it."""
    return type(rows) is list and all(
        type(row) is list and len(row) == _ROW_LENGTH and all(type(v) is int and v in _FLAGS for v in row)
        for row in rows)


def _without_valid_rows(doc: Any) -> Any:
    """``doc`` (shallow copies) with each entry's plainly valid ``slice_labels`` emptied; the rest untouched."""
    if not isinstance(doc, dict):
        return doc
    view = dict(doc)
    for split in ("training", "test"):
        entries = doc.get(split)
        if isinstance(entries, list):
            view[split] = [dict(e, slice_labels=[]) if isinstance(e, dict) and _plainly_valid_rows(e.get("slice_labels"))
                           else e for e in entries]
    return view


def schema_problems(doc: Any, limit: int = 20) -> list[str]:
    """One line per schema violation (at most ``limit``, then a count of the rest)."""
    errors: list[Any] = []
    if next(_validator(inlined=True).iter_errors(_without_valid_rows(doc)), None) is not None:
        # an invalid manifest: its problems as the plain schema words them (messages may quote an entry)
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
