"""Build a split manifest from a data set (``ichct manifest build``).

1. The source adapter (``source_<name>.collect``) lists the studies with their labels.
2. Each patient identifier becomes ``patient_key`` (salted HMAC under the user's salt, or under
   the public salt of a source with only made-up identifiers: ``public_salt(root)`` of the adapter,
   e.g. ``ichct synth`` cohorts); pixel data are hashed.
3. Studies are grouped so that one patient, one series UID and one set of identical pixel data
   never straddle a split (:mod:`.split`), then placed in the test set or a fold, stratified by
   CT-level labels, deterministically for a seed.
4. Paths that would name a patient (or series sharing a folder) are replaced by links, made in a
   staging folder (:mod:`.links`); every other path is written relative to the manifest's folder
   when inside it or inside the folder above it (``data_manifests/`` -> ``../data/...`` in a
   repository), else absolute.
5. The manifest is scanned for raw identifiers (:mod:`.leaks`) and checked (:mod:`.check`) against
   the staged links; only a clean manifest is written, atomically and together with its link folder.
   A failed build leaves an existing manifest and its links as they were.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ichct.errors import InputError
from ichct.pipeline.core.atomic import atomic_path
from ichct.pipeline.core.cluster import ClusterSpec
from ichct.transforms.dicom import load_salt, patient_key, salt_id, scan_folder

from .check import KnownImage, ManifestDoc, check_documents
from .errors import ManifestError
from .hashing import HashCache, dicom_series_digest, nifti_digest_cached
from .leaks import raw_identifier_places
from .links import Linker, check_replaceable
from .model import ICHCT_LABEL_VALUES, LABEL_NAMES, SOURCES, Record, contains_token
from .split import TEST, Group, assign_groups, study_strata

logger = logging.getLogger(__name__)


def adapter(source: str):
    """The adapter module of a source (``collect(root, workers=, salt=) -> list[Record]``; optional
    ``public_salt(root) -> str | None`` for data whose identifiers are made up)."""
    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    return importlib.import_module(f"ichct.pipeline.manifests.source_{source}")


def manifest_path(p: Path, base_dir: Path) -> str:
    """``p`` as written in a manifest: relative (POSIX) when inside ``base_dir`` or inside the folder
    above it (then starting with ``../``; not when that folder is the file system's root), else absolute.

    The second case lets a repository's ``data_manifests/NAME.json`` point at ``data/...`` next to
    it, so the manifest resolves in every checkout.
    """
    p = Path(os.path.abspath(p))
    base = Path(os.path.abspath(base_dir))
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        pass
    parent = base.parent
    if parent != base and parent != Path(parent.anchor):
        try:
            return "../" + p.relative_to(parent).as_posix()
        except ValueError:
            pass
    return str(p)


def _pixel_hash(rec: Record, cache: HashCache | None, workers: int | None) -> str:
    if rec.pixel_hash is not None:  # the adapter's scan hashed the pixel data already
        return rec.pixel_hash
    if rec.kind == "nifti":
        return nifti_digest_cached(rec.image, cache)
    if rec.link_files is not None:
        files = rec.link_files
    else:
        scan = scan_folder(rec.image, workers=workers)
        files = [h.path for h in scan.headers if h.series_uid == rec.series_uid]
        if not files:
            raise InputError(rec.image, f"no series {rec.series_uid}")
    return dicom_series_digest(files, cache, workers)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_records(keys: list[str], records: list[Record]) -> list[list[int]]:
    """Indices of records that must share a split: same patient, same series UID or same pixels."""
    uf = _UnionFind(len(records))
    for attr in ("patient", "series", "pixels"):
        first: dict[str, int] = {}
        for i, rec in enumerate(records):
            value = keys[i] if attr == "patient" else rec.series_uid if attr == "series" else rec.pixel_hash
            if value is None:
                continue
            if value in first:
                if attr != "patient" and uf.find(first[value]) != uf.find(i) and keys[first[value]] != keys[i]:
                    logger.warning("two patients share %s (%s): they are kept in one split",
                                   "a series UID" if attr == "series" else "identical pixel data", rec.series_uid)
                uf.union(first[value], i)
            else:
                first[value] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(records)):
        groups.setdefault(uf.find(i), []).append(i)
    return list(groups.values())


def build_manifest(
    source: str,
    root: str | Path,
    out: str | Path,
    *,
    folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    link_dir: str | Path | None = None,
    workers: int | None = None,
    cache: HashCache | None | bool = True,
    command: str | None = None,
    cluster: ClusterSpec | None = None,
    client: Any = None,
    on_scan: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Build, check and write a manifest (and its link folder); returns it.

    ``workers``: Dask worker processes of the header scan (sources that scan on Dask: ``rsna``),
    reader threads elsewhere; ``cluster``/``client``: where the scan's tasks run (see :mod:`.scan`;
    the manifest does not depend on it); ``on_scan``: given the scan's :class:`~.scan.FileScan`.

    Raises
    ------
    ManifestError
        The result fails the checks, or a data set file is unusable (e.g. a label CSV lacks a
        column). Nothing is written: an existing manifest and its links stay as they were.
    ichct.errors.InputError, FileNotFoundError
        Unusable input or arguments.
    """
    root = Path(root)
    out = Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root not found")
    if not str(out).endswith(".json"):
        raise InputError(out, "the manifest must be a .json file")
    base_dir = Path(os.path.abspath(out)).parent
    stem = out.name[: -len(".json")]
    name = name or stem
    linker = Linker(Path(link_dir) if link_dir else base_dir / f"{stem}.links")
    check_replaceable(linker.root)  # before the slow work; checked again when swapped in
    module = adapter(source)
    public = getattr(module, "public_salt", None)
    salt = (public(root) if public is not None else None) or load_salt()
    own_cache = cache is True
    hash_cache = HashCache.default() if cache is True else (cache or None)
    try:
        records = module.collect(root, workers=workers, salt=salt,
                                 **_scan_options(module, cluster=cluster, client=client, cache=hash_cache, on_scan=on_scan))
        if not records:
            raise InputError(root, f"no {source} studies found")
        keys = _patient_keys(source, records, salt, hash_cache, workers)
        groups_idx = group_records(keys, records)
        slots = assign_groups(_split_groups(groups_idx, keys, records), folds, test_fraction, seed)
        training, test = _entries_by_split(groups_idx, slots, keys, records, base_dir, linker)
        linker.make_folder_links()
        if command is None:
            command = shlex.join(["ichct", "manifest", "build", "--source", source, "--root", str(root), "--out", str(out),
                                  "--folds", str(folds), "--test-fraction", f"{test_fraction:g}", "--seed", str(seed)]
                                 + (["--name", name] if name != stem else []))
        doc = _document(name, source, command, salt, folds, seed, test_fraction, training, test)
        _refuse_raw_identifiers(doc, records)
        _check_staged(doc, out, base_dir, linker, hash_cache, workers, _known_images(records))
        _install(out, doc, linker)
        return doc
    finally:
        linker.discard()
        if own_cache and hash_cache is not None:
            hash_cache.close()


def _scan_options(module: Any, **options: Any) -> dict[str, Any]:
    """The options an adapter's ``collect`` accepts (the Dask scan's: ``cluster``, ``client``, ...)."""
    accepted = inspect.signature(module.collect).parameters
    return {name: value for name, value in options.items() if name in accepted}


def _patient_keys(source: str, records: list[Record], salt: str, cache: HashCache | None, workers: int | None) -> list[str]:
    """The salted patient key of each record; also fills in each record's pixel hash."""
    keys = []
    for rec in records:
        identity = rec.patient_id
        if not identity:
            identity = f"{source}:study:{rec.study_uid}"
            logger.warning("%s: study %s has no patient identifier: it is treated as a patient of its own", source, rec.study_uid)
        keys.append(patient_key(identity, salt))
        rec.pixel_hash = _pixel_hash(rec, cache, workers)
    return keys


def _split_groups(groups_idx: list[list[int]], keys: list[str], records: list[Record]) -> list[Group]:
    """One :class:`Group` (key, size, stratum counts) per group of record indices."""
    groups = []
    for members in groups_idx:
        counts: dict[str, int] = {}
        for i in members:
            for s, c in study_strata(records[i].ct_labels).items():
                counts[s] = counts.get(s, 0) + c
        groups.append(Group(key=min(keys[i] + records[i].series_uid for i in members), n_studies=len(members), counts=counts))
    return groups


def _entries_by_split(groups_idx: list[list[int]], slots: list[int], keys: list[str], records: list[Record],
                      base_dir: Path, linker: Linker) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sorted training and test entries (links are made in the linker's staging folder)."""
    training, test = [], []
    for members, slot in zip(groups_idx, slots):
        for i in members:
            entry = _entry(records[i], keys[i], base_dir, linker)
            if slot == TEST:
                test.append(entry)
            else:
                entry["fold"] = int(slot)
                training.append(entry)
    training.sort(key=lambda e: (e["fold"], e["patient_key"], e["study_uid"], e["series_uid"]))
    test.sort(key=lambda e: (e["patient_key"], e["study_uid"], e["series_uid"]))
    return training, test


def _document(name: str, source: str, command: str, salt: str, folds: int, seed: int, test_fraction: float,
              training: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest: header fields, then the entries."""
    from ichct import __version__

    return {
        "name": name,
        "description": f"ichct patient-level split of {source}: {len(training)} training studies in {folds} folds, {len(test)} test studies",
        "source": source,
        "created_by": {"ichct_version": __version__, "command": command},
        "salt_id": salt_id(salt),
        "num_folds": int(folds),
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in ICHCT_LABEL_VALUES.items()},
        "slice_label_order": list(LABEL_NAMES),
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }


def _known_images(records: list[Record]) -> dict[str, KnownImage]:
    """Series UID -> what the adapter's scan learnt of it (series listed once only)."""
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.series_uid] = counts.get(rec.series_uid, 0) + 1
    return {rec.series_uid: rec.known_image for rec in records
            if rec.known_image is not None and counts[rec.series_uid] == 1}


def _check_staged(doc: dict[str, Any], out: Path, base_dir: Path, linker: Linker, cache: HashCache | None,
                  workers: int | None, known_series: dict[str, KnownImage] | None = None) -> None:
    """Run every manifest check on ``doc`` as its links are now (staged); raise :class:`ManifestError`
    naming the paths the links will have once installed.

    ``known_series``: series the adapter scanned; their staged link folders (links to exactly the
    scanned files) are not scanned again.
    """
    view = ManifestDoc(str(out), _staged_view(doc, base_dir, linker), base_dir, out)
    known = {}
    for split in ("training", "test"):
        for entry in view.data[split]:
            fact = (known_series or {}).get(entry["series_uid"])
            if fact is not None:
                known[(str(view.resolve(entry["image"])), entry["series_uid"])] = fact
    report = check_documents([view], cache=cache, workers=workers, known=known)
    if not report.ok:
        raise ManifestError(out, [linker.unstaged_text(line) for line in report.problems])
    for note in report.notes:
        logger.warning("%s", linker.unstaged_text(note))
    logger.debug("%s", report.summaries[0])


def _staged_view(doc: dict[str, Any], base_dir: Path, linker: Linker) -> dict[str, Any]:
    """A shallow copy of ``doc`` whose link paths point into the linker's staging folder."""
    view = dict(doc)
    for split in ("training", "test"):
        view[split] = []
        for entry in doc[split]:
            staged = dict(entry)
            for field in ("image", "label"):
                if field in entry:
                    final = Path(os.path.normpath(os.path.join(base_dir, entry[field])))
                    where = linker.staged(final)
                    staged[field] = str(where) if where != final else entry[field]
            view[split].append(staged)
    return view


def _install(out: Path, doc: dict[str, Any], linker: Linker) -> None:
    """Put the manifest and its link folder in place together; on any failure both stay as they were."""
    try:
        with atomic_path(out, suffix=".json") as tmp:
            tmp.write_text(manifest_text(doc), encoding="utf-8")
            linker.swap_in()
    except BaseException:
        linker.roll_back()
        raise
    linker.finish()


# An indented array of integers: json.dumps puts each element on its own line; JSON strings never
# hold a raw newline, so this cannot match inside a string.
_INT_ARRAY = re.compile(r"\[\n\s*((?:-?\d+,\n\s*)*-?\d+)\n\s*\]")


def manifest_text(doc: dict[str, Any]) -> str:
    """A manifest as written: indented JSON with arrays of integers (slice label rows) on one line."""
    text = json.dumps(doc, indent=2)
    return _INT_ARRAY.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def _entry(rec: Record, key: str, base_dir: Path, linker: Linker) -> dict[str, Any]:
    image_text = manifest_path(rec.image, base_dir)
    label_text = manifest_path(rec.label, base_dir) if rec.label is not None else None
    needs_link = rec.link_files is not None or any(
        contains_token(t, rec.private) for t in (image_text, label_text) if t is not None)
    if needs_link:
        image, label = linker.link(rec, key)
        image_text = manifest_path(image, base_dir)
        label_text = manifest_path(label, base_dir) if label is not None else None
    entry: dict[str, Any] = {"image": image_text}
    if label_text is not None:
        entry["label"] = label_text
        entry["label_values"] = rec.label_values
    entry["ct_labels"] = dict(rec.ct_labels)
    if rec.slice_labels is not None:
        entry["slice_labels"] = [list(map(int, r)) for r in rec.slice_labels]
    if rec.reader_labels:
        entry["reader_labels"] = {r: dict(v) for r, v in rec.reader_labels.items()}
    if rec.source_info:
        entry["source_info"] = dict(rec.source_info)
    entry["patient_key"] = key
    entry["study_uid"] = rec.study_uid
    entry["series_uid"] = rec.series_uid
    return entry


def _refuse_raw_identifiers(doc: dict[str, Any], records: list[Record]) -> None:
    """Raise :class:`~ichct.errors.InputError` when any raw identifier of any record appears in the manifest (see :mod:`.leaks`)."""
    places = raw_identifier_places(doc, (t for rec in records for t in rec.private))
    if places:
        raise InputError("a raw patient identifier would be written into the manifest at " + ", ".join(places[:10])
                         + "; move the data to a folder whose path does not name a patient, or use --link-dir")
