"""Build a split manifest from a data set (``ichct manifest build``).

1. The source adapter (``source_<name>.collect``) lists the studies with their labels.
2. Each patient identifier becomes ``patient_key`` (salted HMAC under the user's salt, or under
   the public salt of a source with only made-up identifiers: ``public_salt(root)`` of the adapter,
   e.g. ``ichct synth`` cohorts); pixel data are hashed.
3. Studies are grouped so that one patient, one series UID and one set of identical pixel data
   never straddle a split (:mod:`.split`), then placed in the test set or a fold, stratified by
   CT-level labels, deterministically for a seed.
4. Paths that would name a patient (or series sharing a folder) are replaced by links
   (:mod:`.links`); every other path is written relative to the manifest's folder when inside it or
   inside the folder above it (``data_manifests/`` -> ``../data/...`` in a repository), else absolute.
5. The manifest is checked (:mod:`.check`) and scanned for raw identifiers; only a clean manifest
   is written (atomically).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any

from ichct.pipeline.atomic import atomic_path
from ichct.transforms.dicom import load_salt, patient_key, salt_id, scan_folder

from .check import ManifestDoc, check_documents
from .errors import ManifestError
from .hashing import HashCache, dicom_series_digest, nifti_digest_cached, quiet_invalid_uids
from .links import Linker
from .model import ICHCT_LABEL_VALUES, LABEL_NAMES, SOURCES, Record, contains_token
from .split import TEST, Group, assign_groups, study_strata

logger = logging.getLogger(__name__)


def adapter(source: str):
    """The adapter module of a source (``collect(root, workers=, salt=) -> list[Record]``; optional
    ``public_salt(root) -> str | None`` for data whose identifiers are made up)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
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
    if rec.kind == "nifti":
        return nifti_digest_cached(rec.image, cache)
    if rec.link_files is not None:
        files = rec.link_files
    else:
        with quiet_invalid_uids():
            scan = scan_folder(rec.image, workers=workers)
        files = [h.path for h in scan.headers if h.series_uid == rec.series_uid]
        if not files:
            raise ValueError(f"{rec.image}: no series {rec.series_uid}")
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
) -> dict[str, Any]:
    """Build, check and write a manifest; returns it. Raises :class:`ManifestError` when the result
    fails the checks (nothing is written), ``ValueError``/``FileNotFoundError`` on unusable input."""
    root = Path(root)
    out = Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root not found")
    if not str(out).endswith(".json"):
        raise ValueError(f"{out}: the manifest must be a .json file")
    base_dir = Path(os.path.abspath(out)).parent
    name = name or out.name[: -len(".json")]
    links = Path(link_dir) if link_dir else base_dir / f"{out.name[: -len('.json')]}.links"
    module = adapter(source)
    public = getattr(module, "public_salt", None)
    salt = (public(root) if public is not None else None) or load_salt()
    own_cache = cache is True
    hash_cache = HashCache.default() if cache is True else (cache or None)
    try:
        records = module.collect(root, workers=workers, salt=salt)
        if not records:
            raise ValueError(f"{root}: no {source} studies found")
        keys = []
        for rec in records:
            identity = rec.patient_id
            if not identity:
                identity = f"{source}:study:{rec.study_uid}"
                logger.warning("%s: study %s has no patient identifier: it is treated as a patient of its own", source, rec.study_uid)
            keys.append(patient_key(identity, salt))
            rec.pixel_hash = _pixel_hash(rec, hash_cache, workers)
        groups_idx = group_records(keys, records)
        groups = []
        for members in groups_idx:
            counts: dict[str, int] = {}
            for i in members:
                for s, c in study_strata(records[i].ct_labels).items():
                    counts[s] = counts.get(s, 0) + c
            groups.append(Group(key=min(keys[i] + records[i].series_uid for i in members), n_studies=len(members), counts=counts))
        slots = assign_groups(groups, folds, test_fraction, seed)

        linker = Linker(links)
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
        from ichct import __version__

        if command is None:
            command = shlex.join(["ichct", "manifest", "build", "--source", source, "--root", str(root), "--out", str(out),
                                  "--folds", str(folds), "--test-fraction", f"{test_fraction:g}", "--seed", str(seed)]
                                 + (["--name", name] if name != out.name[: -len(".json")] else []))
        doc: dict[str, Any] = {
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
        _refuse_raw_identifiers(doc, records)
        report = check_documents([ManifestDoc(str(out), doc, base_dir, out)], cache=hash_cache, workers=workers)
        if not report.ok:
            raise ManifestError(out, report.problems)
        for note in report.notes:
            logger.warning("%s", note)
        write_manifest(out, doc)
        linker.prune()
        logger.debug("%s", report.summaries[0])
        return doc
    finally:
        if own_cache and hash_cache is not None:
            hash_cache.close()


# An indented array of integers: json.dumps puts each element on its own line; JSON strings never
# hold a raw newline, so this cannot match inside a string.
_INT_ARRAY = re.compile(r"\[\n\s*((?:-?\d+,\n\s*)*-?\d+)\n\s*\]")


def write_manifest(path: str | Path, doc: dict[str, Any]) -> None:
    """Write a manifest atomically: indented JSON with arrays of integers (slice label rows) on one line."""
    text = json.dumps(doc, indent=2)
    text = _INT_ARRAY.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


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
    """Raise when any raw identifier string of any record appears in the manifest."""
    tokens = sorted({t for rec in records for t in rec.private}, key=len, reverse=True)
    if not tokens:
        return
    places = []
    for split in ("training", "test"):
        for i, entry in enumerate(doc[split]):
            for field, value in entry.items():
                if contains_token(json.dumps(value), tokens):
                    places.append(f"{split}[{i}].{field}")
    rest = {k: v for k, v in doc.items() if k not in ("training", "test")}
    for field, value in rest.items():
        if contains_token(json.dumps(value), tokens):
            places.append(field)
    if places:
        raise ValueError("a raw patient identifier would be written into the manifest at " + ", ".join(places[:10])
                         + "; move the data to a folder whose path does not name a patient, or use --link-dir")
