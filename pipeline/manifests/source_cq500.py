"""Adapter for CQ500 (qure.ai head CT scans with three radiologists' reads).

Layout::

    <root>/reads.csv                              name,Category,R1:ICH,R1:IPH,R1:IVH,R1:SDH,R1:EDH,R1:SAH,
                                                  R1:BleedLocation-Left,...,R2:...,R3:...   (name = CQ500-CT-<N>)
    <root>/CQ500CT<N> CQ500CT<N>/Unknown Study/CT <description>/CT000000.dcm ...   several series per patient

Each patient folder is one study; the series is the one the reader would choose by default
(:func:`ichct.transforms.dicom.select_series`: original axial CT, soft kernel, thinnest). The
reference label per finding is the majority of the three readers (ICH -> any, IPH, IVH, SDH, EDH,
SAH -> the subtypes); all three readers' labels are kept in ``reader_labels`` and ``Category`` in
``source_info``. The patient identity is the DICOM PatientID (the ``name`` when the headers have
none). Patient folders are named after the patient, so the builder links the series folders.
All patient folders are read by one header scan (Dask tasks for a big archive, see :mod:`.scan`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ichct.errors import InputError
from ichct.pipeline.core.cluster import ClusterSpec
from ichct.transforms.dicom import DicomIngestError, FolderScan, select_series
from ichct.transforms.dicom.discovery import list_candidate_files

from .check import KnownImage, series_facts
from .hashing import HashCache
from .model import LABEL_NAMES, UNKNOWN, Record, private_tokens
from .scan import FileScan, scan_files
from .source_common import absolute, find_first, flag, is_under, read_csv_rows, series_image, series_pixel_hash

logger = logging.getLogger(__name__)
NAME = "cq500"
READERS = ("R1", "R2", "R3")
FINDINGS = {"ICH": "any", "EDH": "epidural", "IPH": "intraparenchymal", "IVH": "intraventricular", "SAH": "subarachnoid", "SDH": "subdural"}
CSV_COLUMNS = ("name",) + tuple(f"{r}:{code}" for r in READERS for code in FINDINGS)
_NUMBER = re.compile(r"CQ500[-_ ]?CT[-_ ]?(\d+)", re.IGNORECASE)


def reader_labels(row: dict[str, str]) -> dict[str, dict[str, int]]:
    """``{"R1": {label: flag}, ...}`` from one reads.csv row."""
    out = {}
    for r in READERS:
        if not any(f"{r}:{code}" in row for code in FINDINGS):
            continue
        out[r] = {name: flag(row.get(f"{r}:{code}")) for code, name in FINDINGS.items()}
    return out


def majority(readers: dict[str, dict[str, int]]) -> dict[str, int]:
    """Per label: 1 when more than half of the readers who answered say 1, 0 when more than half say 0."""
    out = {}
    for name in LABEL_NAMES:
        votes = [v[name] for v in readers.values() if v.get(name, UNKNOWN) != UNKNOWN]
        if not votes:
            out[name] = UNKNOWN
        elif 2 * sum(votes) > len(votes):
            out[name] = 1
        elif 2 * (len(votes) - sum(votes)) > len(votes):
            out[name] = 0
        else:
            out[name] = UNKNOWN  # a tie (a reader did not answer)
    return out


def collect(root: Path, *, workers: int | None = None, salt: str | None = None, cluster: ClusterSpec | None = None,
            client: Any = None, cache: HashCache | None = None,
            on_scan: Callable[[FileScan], None] | None = None) -> list[Record]:
    """One record per patient folder with a reads.csv row: its default series and the readers' labels.

    Every file of the patient folders is read once, by one header scan over all of them (Dask tasks
    for a big folder, see :mod:`.scan`; ``cluster``/``client``/``on_scan`` as for RSNA), which also
    hashes the pixel data: the build neither reads nor scans the series again.
    """
    root = Path(root)
    reads_path = find_first(root, ("reads.csv",))
    if reads_path is None:
        raise FileNotFoundError(f"{root}: no reads.csv")
    reads = _reads_by_number(reads_path)
    folders = _patient_folders(root)
    numbers = [n for n in sorted(folders) if n in reads]
    for number in sorted(set(folders) - set(reads)):
        logger.warning("cq500: patient folder #%d has no row in reads.csv: skipped", number)
    files = {n: [str(f) for f in list_candidate_files(folders[n])] for n in numbers}
    scan = scan_files([f for n in numbers for f in files[n]], cache=cache, client=client,
                      cluster=cluster, workers=workers)
    if on_scan is not None:
        on_scan(scan)
    records = []
    for number, patient_scan in zip(numbers, _per_patient(scan, numbers, files, folders)):
        record = _record(number, patient_scan, scan, reads[number], reads_path, folders[number])
        if record is not None:
            records.append(record)
    missing = sorted(set(reads) - set(folders))
    if missing:
        logger.warning("cq500: %d patient(s) in reads.csv have no folder under %s", len(missing), root)
    return records


def _reads_by_number(reads_path: Path) -> dict[int, dict[str, str]]:
    reads = {}
    for row in read_csv_rows(reads_path, required=CSV_COLUMNS):
        m = _NUMBER.search(row["name"])
        if m:
            reads[int(m.group(1))] = row
    return reads


def _patient_folders(root: Path) -> dict[int, Path]:
    """The outermost folder named after each patient."""
    folders: dict[int, Path] = {}
    for d in sorted(p for p in root.rglob("*") if p.is_dir()):
        m = _NUMBER.match(d.name)
        if m and int(m.group(1)) not in folders and not any(f in d.parents for f in folders.values()):
            folders[int(m.group(1))] = d
    return folders


def _per_patient(scan: FileScan, numbers: list[int], files: dict[int, list[str]],
                 folders: dict[int, Path]) -> list[FolderScan]:
    """The scan cut into one :class:`FolderScan` per patient folder (as ``scan_folder`` of it would give)."""
    owner = {path: number for number in numbers for path in files[number]}
    parts = {n: FolderScan(str(folders[n]), n_files_seen=len(files[n])) for n in numbers}
    for header in scan.headers:
        parts[owner[header.path]].headers.append(header)
    for skipped in scan.skipped:
        parts[owner[skipped.path]].skipped.append(skipped)
    return [parts[n] for n in numbers]


def _record(number: int, patient_scan: FolderScan, scan: FileScan, row: dict[str, str], reads_path: Path,
            folder: Path) -> Record | None:
    """The patient's record, or None (logged) when the folder holds no readable CT series."""
    try:
        if not patient_scan.n_files_seen:
            raise DicomIngestError(folder, "is empty: no files found")
        group, _groups, _why = select_series(patient_scan)
    except DicomIngestError as exc:
        logger.warning("cq500: patient #%d skipped: %s", number, exc.reason if hasattr(exc, "reason") else exc)
        return None
    image, link_files = series_image(group, patient_scan)
    try:
        readers = reader_labels(row)
    except InputError as exc:
        raise InputError(reads_path, f"row {row.get('name', number)!r}: {exc.reason}") from None
    linked = {str(f) for f in link_files or ()}
    in_image = [h for h in patient_scan.headers if (h.path in linked if link_files else is_under(h.path, image))]
    pixel_hash = series_pixel_hash(scan, [h for h in in_image if h.series_uid == group.series_uid])
    default, counts = series_facts(in_image, group.series_uid)
    first = group.first
    name = row.get("name", "")
    patient_id = first.patient_id or name
    info = {"category": row["Category"]} if row.get("Category") else None
    return Record(
        image=absolute(image), kind="dicom", patient_id=patient_id, study_uid=first.study_uid or group.series_uid,
        series_uid=group.series_uid, ct_labels=majority(readers), reader_labels=readers, source_info=info,
        private=private_tokens(patient_id, name, folder.name, *folder.name.split()),
        link_files=[absolute(f) for f in link_files] if link_files else None,
        pixel_hash=pixel_hash, known_image=KnownImage(pixel_hash, counts, default),
    )
