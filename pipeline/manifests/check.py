"""Leakage and integrity checks of one or several split manifests (``ichct manifest check``).

A problem is reported, one line each, when:

* a manifest does not follow the schema, or a fold number is out of range;
* a patient (``patient_key``) is in two splits or two folds, within one manifest or across the
  manifests checked together (which must then share one ``salt_id``);
* the same series UID, the same image file, or identical pixel data (see :mod:`.hashing`: copies
  under new UIDs are caught) is in two splits or folds (twice in one split or fold is only noted:
  ``CheckReport.notes``);
* an image or label file is missing or unreadable, a DICOM folder does not hold the entry's series
  or would make the reader load another series;
* a label map is not on its image's grid (shape, and affine within :data:`AFFINE_TOL_MM`), as
  ``read_dicom_series`` (DICOM) or nibabel (NIfTI) gives that grid; label values outside the
  declared ``label_values``; ``slice_labels`` with another slice count than the image.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .hashing import HashCache, dicom_series_digest, files_signature, nifti_digest_cached
from .model import is_nifti
from .schema import schema_problems

logger = logging.getLogger(__name__)

AFFINE_TOL_MM = 0.01  # per affine element (mm); NIfTI stores the affine in float32
_IGNORED_SKIP_REASONS = ("not a DICOM file", "DICOMDIR")


@dataclass
class ManifestDoc:
    """A manifest as read from disk (or built in memory), with the folder its paths are relative to."""

    name: str
    data: Any
    base_dir: Path
    path: Path | None = None
    load_error: str | None = None

    def resolve(self, p: str) -> Path:
        """Absolute path of a manifest path (MONAI's rule: joined onto the manifest's folder)."""
        return Path(os.path.normpath(os.path.join(str(self.base_dir), p)))


def read_manifest(path: str | Path) -> ManifestDoc:
    """Read a manifest file; an unreadable or non-JSON file gives a doc with ``load_error``."""
    path = Path(path)
    base = Path(os.path.abspath(path)).parent
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ManifestDoc(str(path), None, base, path, "manifest file not found")
    except (OSError, UnicodeDecodeError) as exc:
        return ManifestDoc(str(path), None, base, path, f"manifest unreadable ({exc})")
    except json.JSONDecodeError as exc:
        return ManifestDoc(str(path), None, base, path, f"not valid JSON ({exc})")
    return ManifestDoc(str(path), data, base, path)


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not leakage: duplicates within one split or fold

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _ImageFacts:
    problems: list[str] = field(default_factory=list)
    pixel_hash: str | None = None
    grid: tuple[tuple[int, ...], np.ndarray] | None = None
    slice_counts: set[int] = field(default_factory=set)
    real: str | None = None


@dataclass(frozen=True)
class KnownImage:
    """What a build already knows of a DICOM series it scanned, so its check need not scan it again.

    ``pixel_hash``: the series' pixel hash; ``slice_counts``: the slice counts its stack may have
    (:func:`series_facts`); ``default_series``: the series the reader picks from the folder.
    """

    pixel_hash: str | None
    slice_counts: frozenset[int]
    default_series: str | None


def series_facts(headers: list, series_uid: str, *, groups: list | None = None,
                 geometry: Any = None) -> tuple[str | None, frozenset[int]]:
    """The series the reader would pick among ``headers`` and the slice counts of ``series_uid``'s stack.

    ``groups`` (``group_series(headers)``) and ``geometry`` (the stack geometry of ``series_uid``'s
    group) when the caller has them already: a build of RSNA's 21,700 series computes them once.

    Examples
    --------
    >>> series_facts([], "1.2.3")
    (None, frozenset())
    """
    from ichct.transforms.dicom import choose_default, group_series, stack_geometry

    groups = group_series(headers) if groups is None else groups
    default = choose_default(groups)
    counts: frozenset[int] = frozenset()
    main = next((g for g in groups if g.group_id == series_uid), None)
    if main is not None and main.excluded_reason is None:
        try:
            geometry = stack_geometry(main.headers) if geometry is None else geometry
            counts = frozenset({geometry.n_slices, len(geometry.grid_positions_mm())})
        except Exception:  # noqa: BLE001 - geometry problems surface when the series is read
            pass
    return (default.series_uid if default is not None else None), counts


@dataclass
class _Use:
    doc: str
    split: str
    fold: int | None
    index: int
    study_uid: str
    series_uid: str

    @property
    def slot(self) -> tuple[str, int | None]:
        return (self.split, self.fold)

    def where(self, with_doc: bool, extra: str = "") -> str:
        place = "test" if self.split == "test" else f"training fold {self.fold}"
        doc = f"{self.doc}: " if with_doc else ""
        return f"{place} ({doc}{self.split}[{self.index}]{extra})"


def _slot_text(slot: tuple[str, int | None]) -> str:
    return "test" if slot[0] == "test" else f"training fold {slot[1]}"


class _Inspector:
    """Reads images and labels once per path (several entries may point at one file)."""

    def __init__(self, verify_pixels: bool, cache: HashCache | None, workers: int | None,
                 known: dict[tuple[str, str], KnownImage] | None = None) -> None:
        self.verify_pixels = verify_pixels
        self.cache = cache
        self.workers = workers
        self.known = known or {}
        self._images: dict[tuple[str, str, bool], _ImageFacts] = {}

    def image(self, path: Path, series_uid: str, need_grid: bool) -> _ImageFacts:
        key = (str(path), series_uid, need_grid)
        if key not in self._images:
            self._images[key] = self._inspect(path, series_uid, need_grid)
        return self._images[key]

    def _inspect(self, path: Path, series_uid: str, need_grid: bool) -> _ImageFacts:
        facts = _ImageFacts()
        if not os.path.exists(path):
            facts.problems.append(f"image not found: {path}" + (" (broken link)" if os.path.islink(path) else ""))
            return facts
        facts.real = os.path.realpath(path)
        known = self.known.get((str(path), series_uid))
        if known is not None and not need_grid:
            self._known_dicom(path, series_uid, known, facts)
        elif path.is_dir() or not is_nifti(path):
            self._inspect_dicom(path, series_uid, need_grid, facts)
        else:
            self._inspect_nifti(path, facts)
        return facts

    def _known_dicom(self, path: Path, series_uid: str, known: KnownImage, facts: _ImageFacts) -> None:
        """The facts of a series the build has just scanned (its folder holds links to exactly its files)."""
        if known.default_series != series_uid:
            facts.problems.append(_default_problem(path, known.default_series, series_uid))
        facts.slice_counts = set(known.slice_counts)
        if self.verify_pixels:
            facts.pixel_hash = known.pixel_hash

    def _inspect_nifti(self, path: Path, facts: _ImageFacts) -> None:
        import nibabel as nib

        try:
            img = nib.load(str(path))
            shape = tuple(int(v) for v in img.shape)
            facts.grid = (_spatial(shape), np.asarray(img.affine, dtype=float))
            if len(shape) >= 3:
                facts.slice_counts = {shape[2]}
            if self.verify_pixels:
                facts.pixel_hash = nifti_digest_cached(path, self.cache)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the problem reported
            facts.problems.append(f"image unreadable: {path} ({type(exc).__name__}: {exc})")

    def _inspect_dicom(self, path: Path, series_uid: str, need_grid: bool, facts: _ImageFacts) -> None:
        from ichct.transforms.dicom import DicomIngestError, scan_folder

        try:
            scan = scan_folder(path, workers=self.workers)
        except DicomIngestError as exc:
            facts.problems.append(f"image unreadable: {exc}")
            return
        missing = [s.path for s in scan.skipped if not os.path.exists(s.path)]
        broken = [s for s in scan.skipped if os.path.exists(s.path) and not any(r in s.reason for r in _IGNORED_SKIP_REASONS)]
        if missing:
            facts.problems.append(f"{len(missing)} file(s) of image folder {path} missing (e.g. {missing[0]})")
        if broken:
            facts.problems.append(f"{len(broken)} unreadable file(s) in image folder {path} (e.g. {broken[0].path}: {broken[0].reason})")
        headers = [h for h in scan.headers if h.series_uid == series_uid]
        if not headers:
            found = sorted({h.series_uid for h in scan.headers})
            facts.problems.append(f"image folder {path} holds no series {series_uid}"
                                  + (f" (it holds {', '.join(found[:3])}{' ...' if len(found) > 3 else ''})" if found else " (no DICOM images)"))
            return
        default, counts = series_facts(scan.headers, series_uid)
        if default != series_uid:
            facts.problems.append(_default_problem(path, default, series_uid))
        facts.slice_counts = set(counts)
        if self.verify_pixels:
            try:
                facts.pixel_hash = dicom_series_digest([h.path for h in headers], self.cache, self.workers)
            except Exception as exc:  # noqa: BLE001
                facts.problems.append(f"pixel data of series {series_uid} in {path} unreadable ({type(exc).__name__}: {exc})")
        if need_grid:
            facts.grid = self._dicom_grid(path, series_uid, scan, [h.path for h in headers], facts)

    def _dicom_grid(self, path, series_uid, scan, files, facts):
        """The voxel grid ``read_dicom_series`` gives the series (cached per file set and ichct version)."""
        from ichct import __version__
        from ichct.transforms.dicom import DicomIngestError, read_dicom_series

        key = None
        if self.cache is not None:
            try:
                key = f"grid:{__version__}:{series_uid}:{files_signature(files)}"
                cached = self.cache.get_fact(key)
                if cached:
                    value = json.loads(cached)
                    return tuple(value["shape"]), np.asarray(value["affine"], dtype=float)
            except (OSError, ValueError, KeyError):
                key = None
        try:
            volume = read_dicom_series(path, series_uid=series_uid, workers=self.workers, scan=scan)
        except DicomIngestError as exc:
            facts.problems.append(f"image unreadable: {exc}")
            return None
        shape = tuple(int(v) for v in volume.hu_volume.shape)
        affine = np.asarray(volume.affine_ras, dtype=float)
        if key is not None:
            self.cache.put_fact(key, json.dumps({"shape": shape, "affine": affine.tolist()}))
        return shape, affine

    def label(self, path: Path, label_values: str | None) -> tuple[list[str], tuple[tuple[int, ...], np.ndarray] | None]:
        import nibabel as nib

        if not os.path.exists(path):
            return [f"label not found: {path}" + (" (broken link)" if os.path.islink(path) else "")], None
        try:
            img = nib.load(str(path))
            grid = (_spatial(tuple(int(v) for v in img.shape)), np.asarray(img.affine, dtype=float))
            problems = []
            if self.verify_pixels:
                data = np.asanyarray(img.dataobj)
                values = np.unique(data)
                if label_values == "ichct" and not np.all(np.isin(values, np.arange(6))):
                    bad = [v for v in values.tolist() if v not in range(6)]
                    problems.append(f"label {path} holds values {bad[:5]} outside 0-5 (label_values 'ichct')")
            return problems, grid
        except Exception as exc:  # noqa: BLE001
            return [f"label unreadable: {path} ({type(exc).__name__}: {exc})"], None


def _default_problem(path: Path, default: str | None, series_uid: str) -> str:
    return (f"image folder {path}: the reader's default series is {default or 'none'}, "
            f"not the entry's series {series_uid}")


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton axes beyond the third (a (X, Y, Z, 1) label is on an (X, Y, Z) grid)."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def grid_mismatch(image_grid: tuple[tuple[int, ...], np.ndarray], label_grid: tuple[tuple[int, ...], np.ndarray]) -> str | None:
    """Why a label is not on the image's grid, or None."""
    (ishape, iaff), (lshape, laff) = image_grid, label_grid
    if tuple(ishape) != tuple(lshape):
        return f"label shape {'x'.join(map(str, lshape))} differs from image grid {'x'.join(map(str, ishape))}"
    diff = float(np.max(np.abs(np.asarray(iaff) - np.asarray(laff))))
    if diff > AFFINE_TOL_MM:
        return f"label affine differs from the image's by up to {diff:.3g} mm"
    return None


def _entries(doc: ManifestDoc) -> list[tuple[str, int, dict]]:
    out = []
    data = doc.data if isinstance(doc.data, dict) else {}
    for split in ("training", "test"):
        items = data.get(split)
        if not isinstance(items, list):
            continue
        for i, e in enumerate(items):
            if isinstance(e, dict):
                out.append((split, i, e))
    return out


def check_documents(
    docs: list[ManifestDoc],
    *,
    verify_files: bool = True,
    verify_pixels: bool = True,
    cache: HashCache | None | bool = True,
    workers: int | None = None,
    known: dict[tuple[str, str], KnownImage] | None = None,
) -> CheckReport:
    """Check manifests alone and against each other; see the module docstring for what is checked.

    ``cache``: True for the default pixel-hash cache, False/None for none, or a :class:`HashCache`.
    ``verify_pixels`` False skips pixel hashing and label-value checks (files are still opened).
    ``known``: (image path, series UID) -> :class:`KnownImage` of DICOM series a build has just
    scanned: their folders are not scanned again (images with a label still are, for the grid).
    """
    report = CheckReport()
    own_cache = cache is True
    hash_cache = HashCache.default() if cache is True else (cache or None)
    try:
        _check(docs, report, verify_files, verify_pixels, _Inspector(verify_pixels, hash_cache, workers, known))
    finally:
        if own_cache and hash_cache is not None:
            hash_cache.close()
    return report


@dataclass
class _Index:
    """Every entry's use of a patient, series, pixel content and image file, across the manifests checked."""

    by_patient: dict[str, list[_Use]] = field(default_factory=lambda: defaultdict(list))
    by_series: dict[str, list[_Use]] = field(default_factory=lambda: defaultdict(list))
    by_pixels: dict[str, list[_Use]] = field(default_factory=lambda: defaultdict(list))
    by_file: dict[str, list[_Use]] = field(default_factory=lambda: defaultdict(list))  # keyed by real path, never printed
    file_names: dict[str, Path] = field(default_factory=dict)  # real path -> the first manifest path (link) to it
    salts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class _Tally:
    """What one manifest's summary line counts."""

    patients: set[str] = field(default_factory=set)
    n_pos: int = 0
    fold_sizes: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    n_test: int = 0


def _check(docs: list[ManifestDoc], report: CheckReport, verify_files: bool, verify_pixels: bool,
           inspector: _Inspector) -> None:
    """Each manifest on its own (schema, folds, files), then the leaks between splits, folds and manifests."""
    index = _Index()
    for doc in docs:
        _check_document(doc, report, index, inspector, verify_files)
    _check_leaks(report, index, multi=len(docs) > 1)


def _check_document(doc: ManifestDoc, report: CheckReport, index: _Index, inspector: _Inspector,
                    verify_files: bool) -> None:
    """Load error or schema problems, each entry's checks, and the manifest's summary line."""
    if doc.load_error:
        report.problems.append(f"{doc.name}: {doc.load_error}")
        return
    for line in schema_problems(doc.data):
        report.problems.append(f"{doc.name}: {line}")
    if not isinstance(doc.data, dict):
        return
    salt = doc.data.get("salt_id")
    if isinstance(salt, str):
        index.salts[salt].append(doc.name)
    num_folds = doc.data.get("num_folds")
    tally = _Tally()
    for split, i, e in _entries(doc):
        use = _index_entry(doc, split, i, e, num_folds, report, index, tally)
        if verify_files and isinstance(e.get("image"), str):
            _check_entry_files(doc, f"{doc.name}: {split}[{i}]", e, use, report, index, inspector)
    n_train = sum(tally.fold_sizes.values())
    sizes = "/".join(str(tally.fold_sizes.get(k, 0)) for k in range(num_folds)) if isinstance(num_folds, int) else "?"
    report.summaries.append(
        f"{doc.name}: {n_train} training stud{'y' if n_train == 1 else 'ies'} in {num_folds} fold(s) ({sizes}), "
        f"{tally.n_test} test, {len(tally.patients)} patient(s), {tally.n_pos} with hemorrhage; salt {salt}"
    )


def _index_entry(doc: ManifestDoc, split: str, i: int, e: dict, num_folds: Any, report: CheckReport, index: _Index,
                 tally: _Tally) -> _Use:
    """Check an entry's fold number, count it and index its patient and series; its :class:`_Use`."""
    fold = e.get("fold") if split == "training" else None
    if split == "training":
        if isinstance(fold, int) and isinstance(num_folds, int) and not 0 <= fold < num_folds:
            report.problems.append(f"{doc.name}: {split}[{i}]: fold {fold} outside 0..{num_folds - 1}")
        if isinstance(fold, int):
            tally.fold_sizes[fold] += 1
    else:
        tally.n_test += 1
    use = _Use(doc.name, split, fold if isinstance(fold, int) else None, i,
               str(e.get("study_uid", "?")), str(e.get("series_uid", "?")))
    key = e.get("patient_key")
    if isinstance(key, str):
        index.by_patient[key].append(use)
        tally.patients.add(key)
    if isinstance(e.get("series_uid"), str):
        index.by_series[e["series_uid"]].append(use)
    ct = e.get("ct_labels")
    if isinstance(ct, dict) and ct.get("any") == 1:
        tally.n_pos += 1
    return use


def _check_entry_files(doc: ManifestDoc, ref: str, e: dict, use: _Use, report: CheckReport, index: _Index,
                       inspector: _Inspector) -> None:
    """An entry's image (readable, its series, slice count) and label (readable, values, on the image's grid)."""
    image = doc.resolve(e["image"])
    label = doc.resolve(e["label"]) if isinstance(e.get("label"), str) else None
    facts = inspector.image(image, str(e.get("series_uid", "")), need_grid=label is not None)
    for p in facts.problems:
        report.problems.append(f"{ref}: {p}")
    if facts.real:
        index.by_file[facts.real].append(use)
        index.file_names.setdefault(facts.real, image)
    if facts.pixel_hash:
        index.by_pixels[facts.pixel_hash].append(use)
    rows = e.get("slice_labels")
    if isinstance(rows, list) and facts.slice_counts and len(rows) not in facts.slice_counts:
        report.problems.append(f"{ref}: slice_labels has {len(rows)} row(s) but the image has "
                               f"{' or '.join(str(n) for n in sorted(facts.slice_counts))} slice(s)")
    if label is not None:
        _check_label(ref, label, e, facts, report, inspector)


def _check_label(ref: str, label: Path, e: dict, facts: _ImageFacts, report: CheckReport,
                 inspector: _Inspector) -> None:
    """A label map: readable, values within ``label_values``, on its image's grid."""
    label_problems, label_grid = inspector.label(label, e.get("label_values"))
    for p in label_problems:
        report.problems.append(f"{ref}: {p}")
    if label_grid is not None and facts.grid is not None:
        why = grid_mismatch(facts.grid, label_grid)
        if why:
            report.problems.append(f"{ref}: label not on the image grid: {why} ({label})")


def _check_leaks(report: CheckReport, index: _Index, multi: bool) -> None:
    """A patient, series, pixel content or image file in two splits or folds (patients only under one salt)."""
    comparable = len(index.salts) <= 1
    if not comparable:
        report.problems.append("salt_id differs between manifests ("
                               + "; ".join(f"{s}: {', '.join(n)}" for s, n in index.salts.items())
                               + "): their patient keys cannot be compared; rebuild them with one salt")
    for key, uses in index.by_patient.items():
        if not comparable:
            for doc_name in {u.doc for u in uses}:
                _report_conflict(report, f"patient {key}", [u for u in uses if u.doc == doc_name], False,
                                 duplicates_ok=True)
        else:
            _report_conflict(report, f"patient {key}", uses, multi, duplicates_ok=True)
    for uid, uses in index.by_series.items():
        _report_conflict(report, f"series {uid}", uses, multi)
    for digest, uses in index.by_pixels.items():
        _report_conflict(report, f"identical pixel data (sha256 {digest[:12]}) of series", uses, multi,
                         show_series=True)
    for real, uses in index.by_file.items():
        if len({u.series_uid for u in uses}) > 1:
            continue  # several series of one DICOM folder: told apart by their own checks
        # the manifest's own path: the real one may name the patient (BHSD, RSNA file names)
        _report_conflict(report, f"image file {index.file_names[real]}", uses, multi, only_splits=True)


def _report_conflict(report: CheckReport, what: str, uses: list[_Use], with_doc: bool, duplicates_ok: bool = False,
                     show_series: bool = False, only_splits: bool = False) -> None:
    slots = sorted({u.slot for u in uses}, key=lambda s: (s[0] != "training", s[1] if s[1] is not None else -1))
    if len(slots) > 1:
        seen_slots: dict[tuple, list[_Use]] = defaultdict(list)
        for u in uses:
            seen_slots[u.slot].append(u)
        parts = []
        for slot in slots:
            sample = seen_slots[slot][0]
            extra = f", series {sample.series_uid}" if show_series else f", study {sample.study_uid}"
            more = f" +{len(seen_slots[slot]) - 1}" if len(seen_slots[slot]) > 1 else ""
            parts.append(sample.where(with_doc, extra) + more)
        docs = sorted({u.doc for u in uses})
        prefix = " + ".join(docs)
        report.problems.append(f"{prefix}: leak: {what} is in {len(slots)} splits: " + "; ".join(parts))
    elif not duplicates_ok and not only_splits and len(uses) > 1:
        docs = sorted({u.doc for u in uses})
        report.notes.append(f"{' + '.join(docs)}: {what} is listed {len(uses)} times in {_slot_text(slots[0])}: "
                               + ", ".join(u.where(with_doc) for u in uses))
