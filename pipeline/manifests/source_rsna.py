"""Adapter for the RSNA Intracranial Hemorrhage Detection challenge (Kaggle, 2019).

Layout::

    <root>/stage_2_train.csv     ID,Label with IDs ``ID_<SOPInstanceUID>_<subtype>`` (subtypes epidural,
                                 intraparenchymal, intraventricular, subarachnoid, subdural, any)
    <root>/stage_2_train/        one DICOM file per slice, ``ID_<SOPInstanceUID>.dcm``, all series in one folder

(``stage_1_train.csv`` / ``stage_2_train_images`` / ``stage_1_train_images`` are accepted too.)
Series are assembled from the headers (PatientID, StudyInstanceUID, SeriesInstanceUID), read with
ingest's parallel header scan. ``slice_labels`` follow the slice normal as the reader orders the
slices (slices at one position merged); CT-level labels are positive when any slice is. Slices
missing from the CSV get -1 flags; series without any labelled slice (test images) are left out.
Because every series shares one folder, the builder links each series' files into a folder of its
own (see :mod:`.links`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from ichct.errors import InputError
from ichct.transforms.dicom import group_series, scan_folder, stack_geometry

from .model import LABEL_NAMES, UNKNOWN, Record, labels_from_slices, private_tokens
from .source_common import absolute, find_first, number, read_csv_rows

logger = logging.getLogger(__name__)
NAME = "rsna"
CSV_NAMES = ("stage_2_train.csv", "stage_1_train.csv")
CSV_COLUMNS = ("ID", "Label")
IMAGE_DIRS = ("stage_2_train", "stage_2_train_images", "stage_1_train_images", "stage_1_train")


def read_labels(csv_path: Path) -> dict[str, dict[str, int]]:
    """``{SOPInstanceUID: {label name: 0/1}}`` from the challenge CSV (duplicate rows merged)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for row in read_csv_rows(csv_path, required=CSV_COLUMNS):
        ident = row["ID"]
        sop, _, subtype = ident.rpartition("_")
        if not sop or subtype not in LABEL_NAMES:
            continue
        try:
            value = int(number(row["Label"] or 0) >= 0.5)
        except InputError as exc:
            raise InputError(csv_path, f"{ident}: {exc.reason}") from None
        out[sop][subtype] = max(out[sop].get(subtype, 0), value)
    return out


def collect(root: Path, *, workers: int | None = None, salt: str | None = None) -> list[Record]:
    root = Path(root)
    csv_path = find_first(root, CSV_NAMES)
    image_dir = find_first(root, IMAGE_DIRS, want_dir=True)
    if csv_path is None:
        raise FileNotFoundError(f"{root}: no {' or '.join(CSV_NAMES)}")
    if image_dir is None:
        raise FileNotFoundError(f"{root}: no image folder ({', '.join(IMAGE_DIRS)})")
    labels = read_labels(csv_path)
    scan = scan_folder(image_dir, workers=workers)
    by_series = defaultdict(list)
    for h in scan.headers:
        by_series[h.series_uid].append(h)
    records = []
    for series_uid in sorted(by_series):
        headers = by_series[series_uid]
        labelled = [h for h in headers if h.sop_instance_uid in labels]
        if not labelled:
            continue
        groups = [g for g in group_series(headers) if g.group_id == series_uid]
        if not groups or groups[0].excluded_reason:
            logger.warning("rsna: series %s skipped: %s", series_uid, groups[0].excluded_reason if groups else "no slices")
            continue
        group = groups[0]
        if len(group.headers) != len(headers):
            logger.warning("rsna: series %s: %d slice(s) of another orientation left out", series_uid, len(headers) - len(group.headers))
        geometry = stack_geometry(group.headers)
        rows_by_index = [_row(labels.get(h.sop_instance_uid)) for h in group.headers]
        merged = {i: list(rows_by_index[i]) for i in geometry.order}
        for kept, other in geometry.duplicates:
            merged[kept] = [_merge(a, b) for a, b in zip(merged[kept], rows_by_index[other])]
        rows = [merged[i] for i in geometry.order]
        if len(labelled) < len(group.headers):
            logger.warning("rsna: series %s: %d slice(s) without labels (flags -1)", series_uid, len(group.headers) - len(labelled))
        if not geometry.uniform:
            logger.warning("rsna: series %s has gaps or uneven spacing: slice_labels follow its %d source slices, "
                           "the reader resamples it", series_uid, len(rows))
        first = group.first
        patient_id = first.patient_id or ""
        records.append(Record(
            image=absolute(image_dir), kind="dicom", patient_id=patient_id, study_uid=first.study_uid or series_uid,
            series_uid=series_uid, ct_labels=labels_from_slices(rows_by_index), slice_labels=rows,
            private=private_tokens(patient_id), link_files=sorted({absolute(h.path) for h in group.headers}),
        ))
    if not records:
        logger.warning("rsna: no labelled series found in %s", image_dir)
    return records


def _row(flags: dict[str, int] | None) -> list[int]:
    if not flags:
        return [UNKNOWN] * len(LABEL_NAMES)
    return [int(flags.get(name, UNKNOWN)) for name in LABEL_NAMES]


def _merge(a: int, b: int) -> int:
    """Two slices at one position: positive if either is, negative if either says so, else unknown."""
    if 1 in (a, b):
        return 1
    if 0 in (a, b):
        return 0
    return UNKNOWN
