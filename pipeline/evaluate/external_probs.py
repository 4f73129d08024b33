"""Probabilities written by another tool, read for ``ichct evaluate --predictions DIR``.

Two CSV forms, told apart by their header (UTF-8, a header line, one row per line):

per study
    A column ``study_uid`` (or ``id``) holding the study's identifier as the caller's
    ``id_of_entry`` gives it for a manifest entry, and one column per label: ``any`` is required,
    ``epidural``, ``intraparenchymal``, ``intraventricular``, ``subarachnoid`` and ``subdural``
    are optional (a label without a column is not scored)::

        study_uid,any,epidural,intraparenchymal,intraventricular,subarachnoid,subdural
        1.2.826.0.1.3680043.8.498.101,0.93,0.02,0.81,0.10,0.05,0.12

per slice (the RSNA 2019 submission format)
    The header ``ID,Label`` and one row per slice and label, the ID being
    ``ID_<SOPInstanceUID>_<label>``; all six labels of every slice of a study are needed. The
    SOP instance UID is the value in the slice's DICOM header; where that value already starts with
    ``ID_`` (the RSNA files' ``ID_1a2b3c4d5``), the ID may carry the prefix once
    (``ID_1a2b3c4d5_any``, the Kaggle form) or twice. The label is parsed from the right::

        ID,Label
        ID_1.2.826.0.1.3680043.8.498.7_any,0.91
        ID_1.2.826.0.1.3680043.8.498.7_epidural,0.01

Per-slice rows are placed along the stack from the DICOM headers of the entry's series folder
(headers only, no pixel data): the series ichct's reader chooses for the folder
(:func:`~ichct.transforms.dicom.select_series`) ordered along the slice normal by
:func:`~ichct.transforms.dicom.stack_geometry`, exactly as :func:`~ichct.transforms.dicom.read_dicom_series`
stacks the volume and as the manifest's ``slice_labels`` are ordered. Instances at one position
(duplicates the reader merges) share a row: their probabilities are averaged. A stack with gaps or
uneven spacing keeps its source slices (as ``slice_labels`` do), while the converted volume is
resampled.

Probabilities must be finite and lie in ``[0, 1]``. Any problem (a header of neither form, an
unknown column, a study or SOP instance UID of no evaluated study, a duplicate row, a value that is
not a probability, a study whose slices are only partly covered) raises
:class:`~ichct.errors.InputError` naming the file and line, before anything is written.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ichct.errors import InputError
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision import SLICE_RULES, DecisionRule, ct_scores, decide
from ichct.pipeline.models.config import DEFAULTS

if TYPE_CHECKING:
    from ichct.pipeline.models.inference import StudyPrediction

logger = logging.getLogger("ichct.evaluate")

__all__ = ["DEFAULT_RULE_K", "STUDY_RULE", "ExternalProbabilities", "fill_probability_fields",
           "find_probability_csvs", "probability_rule_names", "read_probabilities"]

#: Window / top-k size of ``consecutive`` and ``topk_mean`` when no rule gives one: ichct's default.
DEFAULT_RULE_K: int = int(DEFAULTS["cls"]["rule_k"])
#: The rule that scores per-study probabilities: ``max`` over the study's one value is that value.
STUDY_RULE = "max"
STUDY_ID_COLUMNS = ("study_uid", "id")
SLICE_COLUMNS = ("ID", "Label")
SHOWN = 5  # unknown identifiers listed in an error message


@dataclass
class ExternalProbabilities:
    """One study's probabilities as another tool wrote them.

    Attributes
    ----------
    slice_probs
        ``(n_slices, 6)`` per-slice probabilities (per-slice CSV), columns
        :data:`~ichct.pipeline.core.labels.LABEL_NAMES`, rows in the reader's stack order (that of
        the manifest's ``slice_labels``); None for a per-study CSV.
    study_probs
        ``{label: probability}`` (per-study CSV), the labels the file has columns for, in
        ``LABEL_NAMES`` order; None for a per-slice CSV.
    source
        The CSV file(s) the values came from.

    Examples
    --------
    >>> p = ExternalProbabilities(study_probs={"any": 0.9}, source="preds.csv")
    >>> p.kind, p.labels
    ('study', ('any',))
    """

    slice_probs: np.ndarray | None = None
    study_probs: dict[str, float] | None = None
    source: str = ""

    @property
    def kind(self) -> str:
        """``"slice"`` or ``"study"``."""
        return "slice" if self.slice_probs is not None else "study"

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels that have probabilities."""
        return LABEL_NAMES if self.slice_probs is not None else tuple(self.study_probs or {})


def find_probability_csvs(pred_dir: str | Path) -> list[Path]:
    """The probability CSV files of a predictions folder: its ``*.csv`` files (not in subfolders,
    hidden files left out), sorted by name.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / "b.csv").write_text("x"); _ = (d / "a.CSV").write_text("x")
    >>> [p.name for p in find_probability_csvs(d)]
    ['a.CSV', 'b.csv']
    """
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise InputError(folder, "not a folder of predictions")
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv"
                   and not p.name.startswith(".")), key=lambda p: p.name)


# --------------------------------------------------------------------------------------------
# Reading one CSV file
# --------------------------------------------------------------------------------------------


@dataclass
class _Table:
    """A CSV file's header and its rows, each with its line number."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]] = field(default_factory=list)

    def fail(self, line: int | None, reason: str) -> InputError:
        return InputError(self.path, f"line {line}: {reason}" if line is not None else reason)


def _read_table(path: Path) -> _Table:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InputError(path, "empty file: no header line")
            table = _Table(path, [c.strip() for c in header])
            for cells in reader:
                if cells and any(c.strip() for c in cells):
                    table.rows.append((reader.line_num, [c.strip() for c in cells]))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable CSV text file ({exc})") from None
    for line, cells in table.rows:
        if len(cells) != len(table.header):
            raise table.fail(line, f"{len(cells)} value(s) for the {len(table.header)} column(s) of the header")
    return table


def _form(table: _Table) -> str:
    """``"slice"`` or ``"study"`` from the header; InputError for anything else."""
    lower = [c.lower() for c in table.header]
    dup = sorted({c for c in table.header if lower.count(c.lower()) > 1})
    if dup:
        raise table.fail(1, f"duplicate column(s) {dup}")
    if "label" in lower:
        _require(table, [c.lower() for c in SLICE_COLUMNS], [c.lower() for c in SLICE_COLUMNS], "per-slice")
        return "slice"
    if any(c in lower for c in STUDY_ID_COLUMNS):
        if all(c in lower for c in STUDY_ID_COLUMNS):
            raise table.fail(1, f"both {STUDY_ID_COLUMNS[0]!r} and {STUDY_ID_COLUMNS[1]!r} columns; give one")
        _require(table, ["any"], [*STUDY_ID_COLUMNS, *LABEL_NAMES], "per-study")
        return "study"
    raise table.fail(1, f"not a probability CSV: header {table.header}; expected 'ID,Label' (per slice, "
                        f"RSNA submission format) or 'study_uid' (or 'id') and label columns "
                        f"{', '.join(LABEL_NAMES)} (per study, 'any' required)")


def _require(table: _Table, required: Sequence[str], allowed: Sequence[str], form: str) -> None:
    lower = [c.lower() for c in table.header]
    missing = [c for c in required if c not in lower]
    if missing:
        raise table.fail(1, f"{form} CSV without column(s) {missing}; columns found: {table.header}")
    unknown = [c for c, low in zip(table.header, lower) if low not in allowed]
    if unknown:
        raise table.fail(1, f"unknown column(s) {unknown} in a {form} CSV; allowed: {list(allowed)}")


def _probability(table: _Table, line: int, text: str, what: str) -> float:
    """A cell as a probability in [0, 1]; InputError naming file, line and ``what`` otherwise."""
    if text == "":
        raise table.fail(line, f"{what}: empty value")
    try:
        value = float(text)
    except ValueError:
        raise table.fail(line, f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise table.fail(line, f"{what}: {text!r} is not a finite probability (NaN or infinite)")
    if not 0.0 <= value <= 1.0:
        raise table.fail(line, f"{what}: {value} is outside [0, 1] (probabilities, not logits or percentages)")
    return value


def _study_rows(table: _Table) -> dict[str, tuple[int, dict[str, float]]]:
    """``{study id: (line, {label: probability})}`` of a per-study table."""
    lower = [c.lower() for c in table.header]
    id_col = next(i for i, c in enumerate(lower) if c in STUDY_ID_COLUMNS)
    label_cols = sorted(((LABEL_NAMES.index(c), i) for i, c in enumerate(lower) if c in LABEL_NAMES))
    out: dict[str, tuple[int, dict[str, float]]] = {}
    for line, cells in table.rows:
        ident = cells[id_col]
        if not ident:
            raise table.fail(line, f"empty {table.header[id_col]!r}")
        if ident in out:
            raise table.fail(line, f"study {ident!r} again (first on line {out[ident][0]})")
        out[ident] = (line, {LABEL_NAMES[j]: _probability(table, line, cells[i], f"{ident} {LABEL_NAMES[j]}")
                             for j, i in label_cols})
    return out


def _slice_rows(table: _Table) -> dict[str, dict[str, tuple[float, int]]]:
    """``{ID without its label: {label: (probability, line)}}`` of a per-slice table."""
    lower = [c.lower() for c in table.header]
    id_col, value_col = lower.index("id"), lower.index("label")
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for line, cells in table.rows:
        ident = cells[id_col]
        stem, _, label = ident.rpartition("_")
        if not stem or label not in LABEL_NAMES:
            raise table.fail(line, f"ID {ident!r} is not ID_<SOPInstanceUID>_<label> with a label of "
                                   f"{', '.join(LABEL_NAMES)}")
        per = out.setdefault(stem, {})
        if label in per:
            raise table.fail(line, f"{ident!r} again (first on line {per[label][1]})")
        per[label] = (_probability(table, line, cells[value_col], ident), line)
    return out


# --------------------------------------------------------------------------------------------
# Where each SOP instance lies along its stack
# --------------------------------------------------------------------------------------------


@dataclass
class _StackIndex:
    """SOP instance UID -> (entry index, stack positions) over the DICOM entries of the split."""

    where: dict[str, tuple[int, set[int]]] = field(default_factory=dict)
    n_slices: dict[int, int] = field(default_factory=dict)
    sop_at: dict[int, list[str]] = field(default_factory=dict)
    not_dicom: int = 0


def _stack_index(entries: Sequence[Mapping[str, Any]]) -> _StackIndex:
    """Read the headers of every entry's series as the DICOM reader chooses and orders it."""
    from ichct.transforms.dicom import scan_folder, select_series, stack_geometry
    from ichct.transforms.loading import is_dicom_path

    index = _StackIndex()
    for i, entry in enumerate(entries):
        image = str(entry["image"])
        if not is_dicom_path(image):
            index.not_dicom += 1
            continue
        group, _, _ = select_series(scan_folder(image))
        headers = group.headers
        geometry = stack_geometry(headers)
        position = {idx: p for p, idx in enumerate(geometry.order)}
        for kept, other in geometry.duplicates:
            position[other] = position[kept]
        for idx, p in position.items():
            sop = headers[idx].sop_instance_uid
            index.where.setdefault(sop, (i, set()))[1].add(p)
        index.n_slices[i] = geometry.n_slices
        index.sop_at[i] = [headers[idx].sop_instance_uid for idx in geometry.order]
    return index


def _resolve_sop(stem: str, index: _StackIndex) -> list[str]:
    """The SOP instance UIDs a per-slice ID stem may name: itself, or itself without one ``ID_``."""
    candidates = [stem] + ([stem[3:]] if stem.startswith("ID_") else [])
    return [c for c in candidates if c in index.where]


# --------------------------------------------------------------------------------------------
# Assembling studies
# --------------------------------------------------------------------------------------------


def _unknown_error(path: Path, what: str, unknown: Sequence[tuple[int, str]], hint: str = "") -> InputError:
    shown = "; ".join(f"line {line}: {ident!r}" for line, ident in unknown[:SHOWN])
    more = f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
    return InputError(path, f"{len(unknown)} {what} of no evaluated study: {shown}{more}{hint}")


def _slice_sums(table: _Table, rows: Mapping[str, Mapping[str, tuple[float, int]]], index: _StackIndex,
                sums: dict[int, np.ndarray], counts: dict[int, np.ndarray], seen: dict[str, tuple[Path, int]]) -> None:
    """Add one per-slice table's probabilities to the per-entry sums and counts per position."""
    unknown: list[tuple[int, str]] = []
    for stem, per in rows.items():
        first_line = min(line for _, line in per.values())
        found = _resolve_sop(stem, index)
        if not found:
            unknown.append((first_line, stem))
            continue
        if len(found) > 1:
            raise table.fail(first_line, f"{stem!r} names two SOP instances of the split: {found[0]!r} and "
                                         f"{found[1]!r}")
        sop = found[0]
        if sop in seen:
            raise table.fail(first_line, f"SOP instance {sop!r} again (first in {seen[sop][0]}, line {seen[sop][1]})")
        seen[sop] = (table.path, first_line)
        missing = [name for name in LABEL_NAMES if name not in per]
        if missing:
            raise table.fail(first_line, f"SOP instance {sop!r} has no row for label(s) {missing}; a per-slice CSV "
                                         "needs all six labels of every slice")
        i, positions = index.where[sop]
        if len(positions) > 1:
            raise table.fail(first_line, f"SOP instance {sop!r} is a multi-frame image of {len(positions)} slices; "
                                         "per-slice rows cannot tell its frames apart: write per-study probabilities")
        p = next(iter(positions))
        if i not in sums:
            sums[i], counts[i] = np.zeros((index.n_slices[i], len(LABEL_NAMES))), np.zeros(index.n_slices[i], int)
        sums[i][p] += [per[name][0] for name in LABEL_NAMES]
        counts[i][p] += 1
    if unknown:
        hint = (f" ({index.not_dicom} evaluated stud(ies) are not DICOM, which per-slice rows cannot address)"
                if index.not_dicom else "")
        raise _unknown_error(table.path, "SOP instance UID(s)", sorted(unknown), hint)


def _slice_probabilities(tables: Sequence[_Table], entries: Sequence[Mapping[str, Any]]
                         ) -> dict[int, ExternalProbabilities]:
    """Per-slice tables -> ``{entry index: ExternalProbabilities}``, every slice of each study covered."""
    if not tables:
        return {}
    index = _stack_index(entries)
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    seen: dict[str, tuple[Path, int]] = {}
    for table in tables:
        _slice_sums(table, _slice_rows(table), index, sums, counts, seen)
    out: dict[int, ExternalProbabilities] = {}
    for i, count in counts.items():
        files = sorted({str(path) for sop, (path, _) in seen.items() if index.where[sop][0] == i})
        missing = np.flatnonzero(count == 0)
        if missing.size:
            raise InputError(files[0], f"study {entries[i].get('study_uid')} ({entries[i]['image']}): "
                                       f"{missing.size} of its {count.size} slices have no rows (first missing: "
                                       f"slice {int(missing[0])}, SOP instance {index.sop_at[i][int(missing[0])]!r})")
        out[i] = ExternalProbabilities(slice_probs=sums[i] / count[:, None], source=", ".join(files))
    return out


def _study_probabilities(tables: Sequence[_Table], entries: Sequence[Mapping[str, Any]],
                         id_of_entry: Callable[[Mapping[str, Any]], str]) -> dict[int, ExternalProbabilities]:
    """Per-study tables -> ``{entry index: ExternalProbabilities}``."""
    by_id: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        by_id.setdefault(str(id_of_entry(entry)), []).append(i)
    out: dict[int, ExternalProbabilities] = {}
    first: dict[int, tuple[Path, int]] = {}
    for table in tables:
        unknown: list[tuple[int, str]] = []
        for ident, (line, probs) in _study_rows(table).items():
            matches = by_id.get(ident)
            if not matches:
                unknown.append((line, ident))
                continue
            if len(matches) > 1:
                raise table.fail(line, f"study {ident!r} names {len(matches)} entries of the split")
            i = matches[0]
            if i in out:
                raise table.fail(line, f"study {ident!r} again (first in {first[i][0]}, line {first[i][1]})")
            out[i], first[i] = ExternalProbabilities(study_probs=probs, source=str(table.path)), (table.path, line)
        if unknown:
            raise _unknown_error(table.path, "study id(s)", unknown)
    return out


def read_probabilities(csv_paths: Iterable[str | Path], entries: Sequence[Mapping[str, Any]],
                       id_of_entry: Callable[[Mapping[str, Any]], str]) -> dict[str, ExternalProbabilities]:
    """Read probability CSVs (per study or per slice, see the module) for the entries of a split.

    Parameters
    ----------
    csv_paths
        The CSV files (e.g. :func:`find_probability_csvs`); each is one form or the other.
    entries
        The evaluated manifest entries (``load_manifest``: ``image`` paths absolute), with
        ``study_uid``; per-slice rows are placed along each entry's DICOM series.
    id_of_entry
        The identifier a per-study CSV uses for an entry (e.g. ``lambda e: e["study_uid"]``).

    Returns
    -------
    dict
        ``{entry["study_uid"]: ExternalProbabilities}``; studies without rows are absent.

    Raises
    ------
    ichct.errors.InputError
        Naming the file and line: a header of neither form, a missing or unknown column, a value
        that is not a probability in [0, 1] (NaN, inf, text), a duplicate row, an identifier of no
        evaluated study (the first few listed), a study partly covered (how many slices missing),
        or rows of one study in both forms.

    Examples
    --------
    Needs the split's DICOM for per-slice files, so not run here::

        probs = read_probabilities(find_probability_csvs("preds/"), entries, lambda e: e["study_uid"])
        probs[entries[0]["study_uid"]].slice_probs.shape   # (n_slices, 6)
    """
    tables = [_read_table(Path(p)) for p in csv_paths]
    forms = [_form(t) for t in tables]
    for table in tables:
        if not table.rows:
            logger.warning("%s: a header and no rows: no probabilities", table.path)
    per_slice = _slice_probabilities([t for t, f in zip(tables, forms) if f == "slice"], entries)
    per_study = _study_probabilities([t for t, f in zip(tables, forms) if f == "study"], entries, id_of_entry)
    both = sorted(set(per_slice) & set(per_study))
    if both:
        i = both[0]
        raise InputError(per_study[i].source, f"study {entries[i].get('study_uid')} also has per-slice rows in "
                                              f"{per_slice[i].source}; give one form per study")
    out: dict[str, ExternalProbabilities] = {}
    for i, probs in sorted({**per_slice, **per_study}.items()):
        key = str(entries[i].get("study_uid"))
        if key in out:
            raise InputError(probs.source, f"study {key} has predictions for two of its series in the split; "
                                           "probabilities are kept per study")
        out[key] = probs
    logger.info("probabilities of %d studies read (%d per slice, %d per study)", len(out), len(per_slice),
                len(per_study))
    return out


# --------------------------------------------------------------------------------------------
# Into a StudyPrediction
# --------------------------------------------------------------------------------------------


def probability_rule_names(probs: ExternalProbabilities) -> tuple[str, ...]:
    """The decision rules that can score these probabilities: every slice rule for per-slice
    probabilities, :data:`STUDY_RULE` (``max``) for per-study ones.

    Examples
    --------
    >>> probability_rule_names(ExternalProbabilities(study_probs={"any": 0.2}))
    ('max',)
    """
    return tuple(SLICE_RULES) if probs.slice_probs is not None else (STUDY_RULE,)


def fill_probability_fields(pred: StudyPrediction, probs: ExternalProbabilities, rules: Mapping[str, DecisionRule],
                            *, score_only: Sequence[str] = (), k: int = DEFAULT_RULE_K) -> None:
    """Set ``pred.slice_probs``, ``pred.scores`` and ``pred.decisions`` as ichct's classifier would.

    Per-slice probabilities become ``pred.slice_probs`` and are scored by every slice rule of
    ``rules`` (``max``, ``topk_mean``, ``consecutive``); per-study probabilities are scored by a
    ``max`` rule only (the maximum of the study's one value is that value: score = the study's
    probability, call = probability >= threshold). Scores and calls come from
    :func:`~ichct.pipeline.decision.ct_scores` and :func:`~ichct.pipeline.decision.decide`:
    ``pred.scores[key][label]`` and ``pred.decisions[key][label] = {"score", "threshold",
    "positive"}`` for each key of ``rules`` the probabilities support. A label the rule has no
    threshold for is scored but not called. Rules of other kinds (``seg_volume``) are left alone.

    Parameters
    ----------
    score_only
        Rule names scored without a threshold (no calls), unless ``rules`` has them: for AUCs
        when no threshold is known. ``k``: their window / top-k size.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> pred = SimpleNamespace(slice_probs=None, scores={}, decisions={})
    >>> probs = ExternalProbabilities(study_probs={"any": 0.8, "subdural": 0.3})
    >>> fill_probability_fields(pred, probs, {"max": DecisionRule("max", threshold={"any": 0.5})})
    >>> pred.scores["max"], pred.decisions["max"]["any"]["positive"], "subdural" in pred.decisions["max"]
    ({'any': 0.8, 'subdural': 0.3}, True, False)
    """
    labels = probs.labels
    if probs.slice_probs is not None:
        values = np.asarray(probs.slice_probs, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(LABEL_NAMES):
            raise ValueError(f"slice_probs must be (n_slices, {len(LABEL_NAMES)}), got {values.shape}")
        pred.slice_probs = values
    else:
        values = np.asarray([[float(probs.study_probs[name]) for name in labels]])  # type: ignore[index]
    usable = probability_rule_names(probs)
    for key, rule in rules.items():
        if rule.name not in usable:
            continue
        pred.scores[key] = ct_scores(rule, slice_probs=values, subtypes=labels)
        called = [j for j, name in enumerate(labels) if _has_threshold(rule, name)]
        if called:
            pred.decisions[key] = decide(rule, slice_probs=values[:, called], subtypes=[labels[j] for j in called])
    for name in score_only:
        if name in usable and name not in rules:
            pred.scores[name] = ct_scores(DecisionRule(name, threshold=1.0, k=k), slice_probs=values, subtypes=labels)


def _has_threshold(rule: DecisionRule, label: str) -> bool:
    return not isinstance(rule.threshold, Mapping) or label in rule.threshold
