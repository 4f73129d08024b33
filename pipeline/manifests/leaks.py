"""The last guard before a manifest is written: no raw identifier of the data set may appear in it.

Each adapter lists the raw strings of a study that name its patient (:attr:`Record.private`). A
textual identifier (``ID_5ca7ed00``, ``CQ500-CT-12``) is searched for as a whole word in every string
of the manifest, keys included. A purely numeric one (an INSTANCE case or PhysioNet patient number
such as ``100``) would also match counts, seeds and free text (``numTest`` 100, ``--seed 100``), so
it counts only where it names something: as a whole string, or as a path component with or without
its extensions (``ct_scans/100.nii``). JSON numbers are never searched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from .model import TokenFinder

_SEPARATORS = re.compile(r"[/\\]")
_QUOTES = "'\""


def raw_identifier_places(doc: dict[str, Any], tokens: Iterable[str]) -> list[str]:
    """Where the manifest ``doc`` holds a raw identifier.

    Parameters
    ----------
    doc
        A manifest (``training`` and ``test`` lists of entries plus header fields).
    tokens
        The raw identifier strings of every study.

    Returns
    -------
    list of str
        The fields that hold one, e.g. ``training[3].image`` or ``created_by``; empty when clean.
    """
    tokens = sorted(set(tokens), key=len, reverse=True)
    numeric = {t for t in tokens if t.isdigit()}
    textual = TokenFinder(t for t in tokens if not t.isdigit())
    return [where for where, value in _fields(doc)
            if any(_leaks(text, textual, numeric) for text in _strings(value))]


def _fields(doc: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(place, value)`` of each field of each entry, then of each header field."""
    for split in ("training", "test"):
        for i, entry in enumerate(doc.get(split, [])):
            for field, value in entry.items():
                yield f"{split}[{i}].{field}", value
    for field, value in doc.items():
        if field not in ("training", "test"):
            yield field, value


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value: string values and object keys (numbers are left out)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _leaks(text: str, textual: TokenFinder, numeric: set[str]) -> bool:
    if textual.find(text):
        return True
    return bool(numeric) and not numeric.isdisjoint(path_names(text))


def path_names(text: str) -> set[str]:
    """The names a purely numeric identifier could leak as in ``text``.

    A string without whitespace is a path (or an id): each of its components counts, with and
    without extensions. In a string with whitespace (a command line, a description) only the words
    holding a path separator count that way.
    """
    if any(c.isspace() for c in text):
        words = [w for w in text.split() if _SEPARATORS.search(w)]
    else:
        words = [text]
    names = set()
    for word in words:
        for part in _SEPARATORS.split(word):
            part = part.strip(_QUOTES)
            names.update((part, part.split(".", 1)[0]))
    return names
