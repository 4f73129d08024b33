"""Helpers shared by the dataset adapters (``source_*.py``)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import numpy as np

from ichct.errors import InputError
from ichct.transforms.dicom import SliceHeader, patient_key

from .errors import ManifestError
from .hashing import combine
from .model import LABEL_NAMES, SUBTYPES, UNKNOWN
from .scan import FAILED, FileScan

logger = logging.getLogger(__name__)


def absolute(p: str | Path) -> Path:
    """Absolute, normalised path (symbolic links kept)."""
    return Path(os.path.abspath(p))


def pseudo_uid(source: str, kind: str, raw: str, salt: str | None = None) -> str:
    """A stable identifier for sources without DICOM UIDs that reveals nothing of ``raw``.

    Salted like ``patient_key`` (a bare hash of a 3-digit patient number would be reversible).
    """
    return f"{source}.{kind}.{patient_key(f'{source}/{kind}/{raw}', salt)}"


def find_first(root: Path, names: Iterable[str], depth: int = 2, want_dir: bool = False) -> Path | None:
    """The first ``root/<...>/<name>`` (up to ``depth`` folders down) that exists."""
    names = list(names)
    level = [root]
    for _ in range(depth + 1):
        for folder in level:
            for name in names:
                p = folder / name
                if (p.is_dir() if want_dir else p.is_file()):
                    return p
        level = sorted(d for f in level if f.is_dir() for d in f.iterdir() if d.is_dir() and not d.name.startswith("."))
    return None


def read_csv_rows(path: Path, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts (names and values stripped).

    Parameters
    ----------
    path
        The CSV file; its first line is the header.
    required
        Columns the caller needs.

    Raises
    ------
    ManifestError
        The header lacks a ``required`` column (the message names the file, the missing columns and
        the columns found).
    """
    return list(iter_csv_rows(path, required))


def iter_csv_rows(path: Path, required: Sequence[str] = ()) -> Iterator[dict[str, str]]:
    """:func:`read_csv_rows` one row at a time (RSNA's label CSV has 4.5 million rows: never all in memory)."""
    with _csv_text(path) as fh:
        reader = csv.DictReader(fh)
        require_columns(path, [(k or "").strip() for k in reader.fieldnames or []], required)
        # a row longer than the header puts its extra cells under the key None: they are dropped
        for row in reader:
            yield {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}


@contextmanager
def _csv_text(path: Path) -> Iterator[TextIO]:
    """``path`` open as CSV text; a file that is not (bad encoding, CSV syntax) is a :class:`ManifestError`."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            yield fh
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(path, [f"{path}: not a readable CSV text file ({exc})"], subject="label CSV") from None


def iter_csv_columns(path: Path, columns: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """The cells of ``columns`` in each row of a CSV file, stripped, one row at a time.

    What :func:`iter_csv_rows` gives for those columns (a missing cell reads as ``""``, blank lines
    are skipped, a repeated column name means its last column), without a dict per row: RSNA's
    label CSV has 4.5 million rows.

    Raises
    ------
    ManifestError
        The header lacks one of ``columns``, or the file is not CSV text (naming the file).

    Examples
    --------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = f.write_text("ID,Label\\nID_1_any, 1\\n\\nID_2_any\\n")
    >>> list(iter_csv_columns(f, ("Label", "ID")))
    [('1', 'ID_1_any'), ('', 'ID_2_any')]
    """
    with _csv_text(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        require_columns(path, header, columns)
        index = [len(header) - 1 - header[::-1].index(c) for c in columns]
        last = max(index, default=-1)
        for row in reader:
            if not row:
                continue
            if len(row) > last:
                yield tuple(row[i].strip() for i in index)
            else:
                yield tuple(row[i].strip() if i < len(row) else "" for i in index)


def require_columns(path: Path, header: Sequence[str], required: Sequence[str]) -> None:
    """Raise :class:`ManifestError` naming ``path`` when ``header`` lacks any ``required`` column."""
    missing = [c for c in required if c not in header]
    if not missing:
        return
    found = ", ".join(repr(c) for c in header) if header else "none (empty file)"
    raise ManifestError(path, [f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; columns found: {found}"],
                        subject="label CSV")


def flag(value: str | int | float | None) -> int:
    """A CSV cell as 0/1 (blank -> unknown); :class:`~ichct.errors.InputError` for a cell that is not a number."""
    if value is None or str(value).strip() == "":
        return UNKNOWN
    return 1 if number(value) >= 0.5 else 0


def number(value: str | int | float) -> float:
    """A CSV cell as a float; :class:`~ichct.errors.InputError` (without the file: callers add it) if it is not one."""
    try:
        return float(value)
    except ValueError:
        raise InputError(f"label {value!r} is not a number") from None


def series_image(group, scan) -> tuple[Path, list[Path] | None]:
    """Where a DICOM series can be read on its own: its common folder when that folder holds no other
    series, else the common folder plus the file list to link into a folder of its own."""
    files = sorted({Path(h.path) for h in group.headers})
    common = Path(os.path.commonpath([str(f.parent) for f in files]))
    others = [h for h in scan.headers if h.series_uid != group.series_uid and is_under(h.path, common)]
    return (common, None) if not others else (common, files)


def is_under(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` lies in ``folder`` or below it (by name; nothing is resolved).

    Examples
    --------
    >>> is_under("/data/p1/s2/f.dcm", "/data/p1"), is_under("/data/p10/f.dcm", "/data/p1")
    (True, False)
    """
    try:
        Path(path).relative_to(folder)
        return True
    except ValueError:
        return False


def series_pixel_hash(scan: FileScan, headers: Sequence[SliceHeader]) -> str:
    """A series' pixel hash from the scan's per-file hashes: :func:`.hashing.dicom_series_digest`'s value
    for the files of ``headers``, without reading them again.

    Raises
    ------
    ichct.errors.InputError
        A file's pixel data could not be read (the scan's reason, naming the file).

    Examples
    --------
    >>> from ichct.pipeline.manifests.scan import FileScan
    >>> len(series_pixel_hash(FileScan(), []))
    64
    """
    digests = {}
    for h in headers:
        digest = scan.digests[h.path]
        if digest.startswith(FAILED):
            raise InputError(h.path, digest[len(FAILED):])
        digests[h.path] = digest
    return combine(list(digests.values()))


def mask_labels(data: np.ndarray, label_values: str,
                path: str | os.PathLike[str] = "label map") -> tuple[dict[str, int], list[list[int]]]:
    """CT-level flags and per-slice rows (along the third axis) from a voxel label map.

    ``label_values`` "ichct": values 1-5 are the subtypes; "binary": non-zero is hemorrhage of
    unknown subtype (subtype flags -1). A map that is not 3D raises
    :class:`~ichct.errors.InputError` naming ``path``.
    """
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"label map has {data.ndim} dimensions, expected 3")
    n = data.shape[2]
    rows: list[list[int]] = []
    if label_values == "ichct":
        present = np.zeros((n, len(SUBTYPES) + 1), dtype=bool)
        rounded = np.rint(data).astype(np.int64)
        for v in range(len(SUBTYPES) + 1):
            present[:, v] = (rounded == v).any(axis=(0, 1))
        for k in range(n):
            subtypes = [int(present[k, v + 1]) for v in range(len(SUBTYPES))]
            rows.append([int(any(subtypes))] + subtypes)
    elif label_values == "binary":
        positive = (data != 0).any(axis=(0, 1))
        rows = [[int(positive[k])] + [UNKNOWN] * len(SUBTYPES) for k in range(n)]
    else:
        raise ValueError(label_values)
    ct = {name: (max(r[i] for r in rows) if rows else 0) for i, name in enumerate(LABEL_NAMES)}
    if label_values == "binary":
        ct.update({s: UNKNOWN for s in SUBTYPES})
    return ct, rows
