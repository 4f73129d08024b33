"""Which predicted label map belongs to which study (``ichct evaluate --predictions DIR [--map FILE]``).

A label map file (``.nii.gz``, ``.nii``, ``.dcm``) in ``DIR`` is tied to a manifest entry by its
name without the suffix (its *stem*), in one of three ways:

* by default, the stem is the entry's Study Instance UID (or its Series Instance UID, which is
  needed when the split holds two series of one study);
* ``--map ichct_case_map.json`` (the case map ``ichct manifest export-nnunet`` writes, format
  ``ichct-nnunet-case-map``): the stem is an nnU-Net case ID (``ICH_0001``), mapped to its
  study; its ``labels`` also say what the values mean;
* ``--map FILE.csv`` with the columns ``study_uid,prediction``: each row names the file (relative
  to ``DIR``, or absolute) of one study; files the CSV does not name are not read.

Files of studies of the manifest that are not in the evaluated split are left out (an nnU-Net
folder often holds every case); a file that names no study of the manifest at all, two files of
one study, a row of the CSV naming no study or a missing file, are errors naming the file (and
row).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ichct.errors import InputError
from ichct.pipeline.evaluate.external_labels import LabelMap, label_map_from_names
from ichct.pipeline.evaluate.external_masks import MASK_SUFFIXES, is_mask_file

logger = logging.getLogger("ichct.evaluate")

__all__ = ["CASE_MAP_FORMAT", "CaseMap", "Matching", "file_stem", "read_case_map"]

CASE_MAP_FORMAT = "ichct-nnunet-case-map"
MAP_COLUMNS = ("study_uid", "prediction")


def file_stem(path: Path) -> str:
    """The file's name without its label-map suffix.

    Examples
    --------
    >>> file_stem(Path("out/ICH_0001.nii.gz")), file_stem(Path("1.2.3.dcm"))
    ('ICH_0001', '1.2.3')
    """
    name = path.name
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@dataclass(frozen=True)
class CaseMap:
    """An ``ichct_case_map.json``: nnU-Net case IDs back to their studies."""

    path: Path
    cases: Mapping[str, Mapping[str, Any]]
    labels: Mapping[str, Any] | None
    salt_id: str | None
    manifest_sha256: str | None

    def label_map(self) -> LabelMap | None:
        """What the exported label values mean (from the case map's ``labels``), or None."""
        if not self.labels:
            return None
        try:
            return label_map_from_names(self.labels, f"{self.path.name}: labels")
        except InputError as exc:
            raise InputError(self.path, exc.reason) from None


def read_case_map(path: str | Path) -> CaseMap:
    """Read and check an ``ichct_case_map.json`` (errors name the file and the case)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(p, f"not a readable JSON case map ({exc})") from None
    if not isinstance(doc, Mapping) or doc.get("format") != CASE_MAP_FORMAT:
        raise InputError(p, f"not an ichct case map (its 'format' is not {CASE_MAP_FORMAT!r}; written by "
                            "`ichct manifest export-nnunet`)")
    if doc.get("version") != 1:
        raise InputError(p, f"case map version {doc.get('version')!r}; this ichct reads version 1")
    cases: dict[str, Mapping[str, Any]] = {}
    for i, case in enumerate(doc.get("cases") or []):
        if not isinstance(case, Mapping) or not case.get("case_id") or not case.get("study_uid"):
            raise InputError(p, f"cases[{i}]: needs 'case_id' and 'study_uid'")
        if str(case["case_id"]) in cases:
            raise InputError(p, f"cases[{i}]: case ID {case['case_id']!r} twice")
        cases[str(case["case_id"])] = case
    if not cases:
        raise InputError(p, "no cases")
    labels = doc.get("labels") if isinstance(doc.get("labels"), Mapping) else None
    return CaseMap(p, cases, labels, doc.get("salt_id"), doc.get("manifest_sha256"))


@dataclass
class _MapRow:
    line: int
    study_uid: str
    prediction: str


def _read_map_csv(path: Path) -> list[_MapRow]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in MAP_COLUMNS if c not in columns]
            if missing:
                raise InputError(path, f"line 1: no column(s) {missing}; a --map CSV has the columns "
                                       f"{','.join(MAP_COLUMNS)} (columns found: {columns})")
            rows = []
            for row in reader:
                values = {str(k).strip(): str(v or "").strip() for k, v in row.items() if k is not None}
                if not any(values.values()):
                    continue
                if not values["study_uid"] or not values["prediction"]:
                    raise InputError(path, f"line {reader.line_num}: empty study_uid or prediction")
                rows.append(_MapRow(reader.line_num, values["study_uid"], values["prediction"]))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable CSV file ({exc})") from None
    return rows


@dataclass
class Matching:
    """How prediction files are tied to manifest entries: by UID, a case map or a map CSV.

    Examples
    --------
    >>> m = Matching()
    >>> m.describe()
    'file names (study or series UIDs)'
    """

    case_map: CaseMap | None = None
    map_csv: Path | None = None
    _rows: list[_MapRow] = field(default_factory=list)

    @classmethod
    def from_option(cls, map_path: str | Path | None) -> Matching:
        """From ``--map``: a case map (``.json``), a ``study_uid,prediction`` CSV, or nothing."""
        if map_path is None:
            return cls()
        p = Path(map_path)
        if not p.is_file():
            raise InputError(p, "no such file (--map)")
        if p.suffix.lower() == ".json":
            return cls(case_map=read_case_map(p))
        return cls(map_csv=p, _rows=_read_map_csv(p))

    def describe(self) -> str:
        """How files were matched, in words (for the report)."""
        if self.case_map is not None:
            return f"nnU-Net case IDs through {self.case_map.path}"
        if self.map_csv is not None:
            return f"the rows of {self.map_csv}"
        return "file names (study or series UIDs)"

    def match(self, folder: Path, entries: Sequence[Mapping[str, Any]], manifest_uids: set[str],
              required_files: bool = True) -> dict[int, Path]:
        """``{entry index: label map file}`` of ``entries`` found in ``folder``.

        ``manifest_uids`` are the study and series UIDs of the whole manifest (files of its other
        studies are left out); ``required_files=False`` skips map-CSV rows whose file is not in
        ``folder`` (validation predictions) instead of refusing them.
        """
        index = _EntryIndex(entries)
        if self.map_csv is not None:
            pairs = self._rows_in(folder, index, manifest_uids, required_files)
        else:
            pairs = [(p, self._study_of(p, manifest_uids)) for p in sorted(folder.iterdir()) if is_mask_file(p)
                     and p.is_file()]
        found: dict[int, Path] = {}
        skipped = 0
        for path, uid in pairs:
            i = index.entry_of(uid, path)
            if i is None:
                skipped += 1
                continue
            if i in found:
                raise InputError(path, f"a second prediction of study {entries[i].get('study_uid')} (the first: "
                                       f"{found[i]})")
            found[i] = path
        if skipped:
            logger.info("%s: %d prediction file(s) of studies outside the evaluated split left out", folder, skipped)
        return found

    def _study_of(self, path: Path, manifest_uids: set[str]) -> str:
        stem = file_stem(path)
        if self.case_map is not None and stem in self.case_map.cases:
            return str(self.case_map.cases[stem]["study_uid"])
        if stem in manifest_uids:
            return stem
        how = f"a case ID of {self.case_map.path} or " if self.case_map is not None else ""
        raise InputError(path, f"its name {stem!r} is neither {how}a study or series UID of the manifest; name "
                               "files by study UID, or give --map")

    def _rows_in(self, folder: Path, index: _EntryIndex, manifest_uids: set[str],
                 required_files: bool) -> list[tuple[Path, str]]:
        out: list[tuple[Path, str]] = []
        for row in self._rows:
            if row.study_uid not in manifest_uids:
                raise InputError(self.map_csv, f"line {row.line}: study {row.study_uid!r} is not in the manifest")
            path = Path(row.prediction)
            path = path if path.is_absolute() else folder / path
            if not path.is_file():
                if not required_files or not index.has(row.study_uid):
                    continue
                raise InputError(self.map_csv, f"line {row.line}: {path} is not a file")
            if not is_mask_file(path):
                raise InputError(self.map_csv, f"line {row.line}: {path.name} is not a NIfTI or DICOM SEG file")
            out.append((path, row.study_uid))
        return out


class _EntryIndex:
    """Entries of the split by study and series UID."""

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self.by_study: dict[str, list[int]] = {}
        self.by_series: dict[str, int] = {}
        for i, e in enumerate(entries):
            self.by_study.setdefault(str(e.get("study_uid", "")), []).append(i)
            if e.get("series_uid"):
                self.by_series[str(e["series_uid"])] = i

    def has(self, uid: str) -> bool:
        return uid in self.by_study or uid in self.by_series

    def entry_of(self, uid: str, path: Path) -> int | None:
        if uid in self.by_series:
            return self.by_series[uid]
        matches = self.by_study.get(uid, [])
        if len(matches) > 1:
            raise InputError(path, f"study {uid} has {len(matches)} series in the split: name its prediction by "
                                   "series UID")
        return matches[0] if matches else None
