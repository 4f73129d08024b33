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
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ichct.errors import InputError
from ichct.transforms.dicom import DicomIngestError, scan_folder, select_series

from .model import LABEL_NAMES, UNKNOWN, Record, private_tokens
from .source_common import absolute, find_first, flag, read_csv_rows, series_image

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


def collect(root: Path, *, workers: int | None = None, salt: str | None = None) -> list[Record]:
    root = Path(root)
    reads_path = find_first(root, ("reads.csv",))
    if reads_path is None:
        raise FileNotFoundError(f"{root}: no reads.csv")
    reads = {}
    for row in read_csv_rows(reads_path, required=CSV_COLUMNS):
        m = _NUMBER.search(row["name"])
        if m:
            reads[int(m.group(1))] = row
    folders: dict[int, Path] = {}  # the outermost folder named after each patient
    for d in sorted(p for p in root.rglob("*") if p.is_dir()):
        m = _NUMBER.match(d.name)
        if m and int(m.group(1)) not in folders and not any(f in d.parents for f in folders.values()):
            folders[int(m.group(1))] = d
    records = []
    for number in sorted(folders):
        folder = folders[number]
        row = reads.get(number)
        if row is None:
            logger.warning("cq500: patient folder #%d has no row in reads.csv: skipped", number)
            continue
        try:
            scan = scan_folder(folder, workers=workers)
            group, _groups, _why = select_series(scan)
        except DicomIngestError as exc:
            logger.warning("cq500: patient #%d skipped: %s", number, exc.reason if hasattr(exc, "reason") else exc)
            continue
        image, link_files = series_image(group, scan)
        try:
            readers = reader_labels(row)
        except InputError as exc:
            raise InputError(reads_path, f"row {row.get('name', number)!r}: {exc.reason}") from None
        first = group.first
        name = row.get("name", "")
        patient_id = first.patient_id or name
        info = {"category": row["Category"]} if row.get("Category") else None
        records.append(Record(
            image=absolute(image), kind="dicom", patient_id=patient_id, study_uid=first.study_uid or group.series_uid,
            series_uid=group.series_uid, ct_labels=majority(readers), reader_labels=readers, source_info=info,
            private=private_tokens(patient_id, name, folder.name, *folder.name.split()),
            link_files=[absolute(f) for f in link_files] if link_files else None,
        ))
    missing = sorted(set(reads) - set(folders))
    if missing:
        logger.warning("cq500: %d patient(s) in reads.csv have no folder under %s", len(missing), root)
    return records
