"""What a dataset adapter hands to the manifest builder: one :class:`Record` per study.

Records live in memory only. They carry the raw patient identifier (needed to compute the salted
``patient_key``) and the raw strings that must never reach a manifest (``private``); the builder
writes neither.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# CT-level and per-slice label names; slice_labels rows use this order ("any" first, then the
# subtypes in RSNA order). Voxel label maps with label_values "ichct" use subtype index + 1.
from ichct.errors import InputError
from ichct.pipeline.core.labels import LABEL_NAMES, SUBTYPES  # noqa: F401 - re-exported
ICHCT_LABEL_VALUES: dict[int, str] = {0: "background", **{i + 1: name for i, name in enumerate(SUBTYPES)}}
UNKNOWN = -1  # a label the source does not provide

SOURCES: tuple[str, ...] = ("synth", "rsna", "cq500", "physionet", "bhsd", "instance")
LABEL_VALUE_KINDS: tuple[str, ...] = ("ichct", "binary")

# Raw strings shorter than this are not searched for in manifests (too many false hits).
MIN_PRIVATE_TOKEN = 3


@dataclass
class Record:
    """One study as an adapter found it (absolute paths, raw identifiers)."""

    image: Path
    patient_id: str
    study_uid: str
    series_uid: str
    ct_labels: dict[str, int]
    kind: str = "nifti"  # "dicom" (a series folder) or "nifti"
    label: Path | None = None
    label_values: str | None = None
    slice_labels: list[list[int]] | None = None
    reader_labels: dict[str, dict[str, int]] | None = None
    source_info: dict[str, Any] | None = None
    private: tuple[str, ...] = ()
    # DICOM series whose files share a folder with other series (RSNA's flat folder): the
    # builder links exactly these files into a folder of their own.
    link_files: list[Path] | None = None
    pixel_hash: str | None = field(default=None, repr=False)
    # What the adapter's scan already learnt of the series (a check.KnownImage): the build's check
    # does not scan its folder again.
    known_image: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.ct_labels = normalise_labels(self.ct_labels)
        if self.label is not None and self.label_values not in LABEL_VALUE_KINDS:
            raise ValueError(f"label_values must be one of {LABEL_VALUE_KINDS}, got {self.label_values!r}")


def normalise_labels(labels: dict[str, Any]) -> dict[str, int]:
    """Six CT-level flags as ints in {-1, 0, 1}; a missing key is unknown (-1)."""
    out: dict[str, int] = {}
    for name in LABEL_NAMES:
        value = labels.get(name, UNKNOWN)
        value = UNKNOWN if value is None else int(value)
        if value not in (-1, 0, 1):
            raise InputError(f"label {name!r} must be -1, 0 or 1, got {value}")
        out[name] = value
    extra = set(labels) - set(LABEL_NAMES)
    if extra:
        raise InputError(f"unknown label name(s): {', '.join(sorted(extra))}")
    return out


def labels_from_slices(rows: list[list[int]]) -> dict[str, int]:
    """CT-level flags from per-slice rows: positive if any slice is, else unknown if any slice is."""
    out: dict[str, int] = {}
    for i, name in enumerate(LABEL_NAMES):
        values = [int(r[i]) for r in rows]
        if 1 in values:
            out[name] = 1
        elif UNKNOWN in values:
            out[name] = UNKNOWN  # no positive slice, but some slices are not labelled
        else:
            out[name] = 0
    return out


def private_tokens(*values: str | None) -> tuple[str, ...]:
    """The distinct non-empty strings, long enough to be searched for."""
    seen: list[str] = []
    for v in values:
        if v is None:
            continue
        s = str(v).strip()
        if len(s) >= MIN_PRIVATE_TOKEN and s not in seen:
            seen.append(s)
    return tuple(seen)


def contains_token(text: str, tokens: tuple[str, ...] | list[str]) -> str | None:
    """The first token found in ``text`` as a whole word (not inside a longer name or hex string)."""
    for token in tokens:
        if len(token) < MIN_PRIVATE_TOKEN:
            continue
        if whole_word_pattern(token).search(text):
            return token
    return None


@functools.lru_cache(maxsize=4096)
def whole_word_pattern(token: str) -> re.Pattern[str]:
    """``token`` as a whole word, case-insensitive: not preceded or followed by a letter or digit."""
    return re.compile(r"(?<![A-Za-z0-9])" + re.escape(token) + r"(?![A-Za-z0-9])", flags=re.IGNORECASE)


_WORD = re.compile(r"[A-Za-z0-9]+")


class TokenFinder:
    """:func:`contains_token` over many tokens (every patient of a cohort), without a pass per token.

    Where a token occurs as a whole word, each of its runs of ASCII letters and digits is a whole
    run of ``text`` too: only the tokens whose longest run is one of ``text``'s runs are searched
    for. Non-ASCII tokens (or texts) are searched for as :func:`contains_token` does.

    Examples
    --------
    >>> finder = TokenFinder(["ID_5ca7ed00", "CQ500-CT-12", "ab"])
    >>> finder.find("../rsna/ID_5CA7ED00.dcm"), finder.find("cq500-ct-123/x"), finder.find("ab/cd")
    ('ID_5ca7ed00', None, None)
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = [t for t in tokens if len(t) >= MIN_PRIVATE_TOKEN]
        self._by_run: dict[str, list[int]] = {}
        self._always: list[int] = []
        for i, token in enumerate(self.tokens):
            runs = _WORD.findall(token) if token.isascii() else []
            if runs:
                self._by_run.setdefault(max(runs, key=len).lower(), []).append(i)
            else:
                self._always.append(i)

    def find(self, text: str) -> str | None:
        """The first token (in the order given) found in ``text`` as a whole word, or None."""
        if text.isascii():
            runs = {run.lower() for run in _WORD.findall(text)}
            candidates: Iterable[int] = sorted(self._always + [i for run in runs for i in self._by_run.get(run, ())])
        else:
            candidates = range(len(self.tokens))
        for i in candidates:
            if whole_word_pattern(self.tokens[i]).search(text):
                return self.tokens[i]
        return None


def nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def nifti_suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")
