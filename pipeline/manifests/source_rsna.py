"""Adapter for the RSNA Intracranial Hemorrhage Detection challenge (Kaggle, 2019).

Layout::

    <root>/stage_2_train.csv     ID,Label with IDs ``ID_<SOPInstanceUID>_<subtype>`` (subtypes epidural,
                                 intraparenchymal, intraventricular, subarachnoid, subdural, any)
    <root>/stage_2_train/        one DICOM file per slice, ``ID_<SOPInstanceUID>.dcm``, all series in one folder

(``stage_1_train.csv`` / ``stage_2_train_images`` / ``stage_1_train_images`` are accepted too.)
A file without SOPInstanceUID is labelled by its file name (:func:`label_key`). Files without
SeriesInstanceUID are grouped as the reader groups them (study, series number, kernel, slice
thickness); a group that is not one acquisition (two series of one study the headers cannot tell
apart) is skipped with a warning naming it, never read as one mixed volume.
Series are assembled from the headers (PatientID, StudyInstanceUID, SeriesInstanceUID), read once
per file together with its pixel hash, as Dask tasks (:mod:`.scan`). ``slice_labels`` follow the slice normal as the reader orders the
slices (slices at one position merged); CT-level labels are positive when any slice is. Slices
missing from the CSV get -1 flags; series without any labelled slice (test images) are left out.
Because every series shares one folder, the builder links each series' files into a folder of its
own (see :mod:`.links`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ichct.errors import InputError
from ichct.pipeline.core.cluster import ClusterSpec
from ichct.transforms.dicom import DicomIngestError, check_stand_in_stack, group_series, stack_geometry
from ichct.transforms.dicom.discovery import list_candidate_files
from ichct.transforms.dicom.validation import STAND_IN_SERIES_PREFIX

from .check import KnownImage, series_facts
from .hashing import HashCache
from .model import LABEL_NAMES, UNKNOWN, Record, labels_from_slices, private_tokens
from .scan import FileScan, scan_files
from .source_common import absolute, find_first, iter_csv_columns, number, series_pixel_hash

logger = logging.getLogger(__name__)
NAME = "rsna"
CSV_NAMES = ("stage_2_train.csv", "stage_1_train.csv")
CSV_COLUMNS = ("ID", "Label")
IMAGE_DIRS = ("stage_2_train", "stage_2_train_images", "stage_1_train_images", "stage_1_train")


def label_key(header: Any) -> str:
    """The CSV's key of a slice: its SOPInstanceUID, else its file name without ``.dcm``.

    The challenge names every file ``ID_<SOPInstanceUID>.dcm``; a re-export that drops the
    attribute (public archives drop even Type 1 ones) keeps the name.

    Examples
    --------
    >>> from types import SimpleNamespace as H
    >>> label_key(H(sop_instance_uid="ID_1a2b", path="x/ID_ffff.dcm"))
    'ID_1a2b'
    >>> label_key(H(sop_instance_uid="", path="x/ID_ffff.dcm"))  # the attribute dropped
    'ID_ffff'
    """
    return header.sop_instance_uid or Path(header.path).name.removesuffix(".dcm")


def read_labels(csv_path: Path) -> dict[str, tuple[int, ...]]:
    """``{SOPInstanceUID: flags}`` from the challenge CSV (duplicate rows merged), read row by row.

    ``flags`` holds one 0/1 per label name in :data:`LABEL_NAMES` order, -1 for a name the CSV does
    not give; equal rows are one shared tuple (the RSNA training CSV has 752,803 slices).
    """
    rows: dict[str, list[int]] = {}
    column = {name: i for i, name in enumerate(LABEL_NAMES)}
    for ident, label in iter_csv_columns(csv_path, CSV_COLUMNS):
        sop, _, subtype = ident.rpartition("_")
        if not sop or subtype not in column:
            continue
        try:
            value = int(number(label or 0) >= 0.5)
        except InputError as exc:
            raise InputError(csv_path, f"{ident}: {exc.reason}") from None
        flags = rows.get(sop)
        if flags is None:
            rows[sop] = flags = [UNKNOWN] * len(LABEL_NAMES)
        flags[column[subtype]] = max(flags[column[subtype]], value)
    shared: dict[tuple[int, ...], tuple[int, ...]] = {}
    return {sop: shared.setdefault(tuple(flags), tuple(flags)) for sop, flags in rows.items()}


def collect(root: Path, *, workers: int | None = None, salt: str | None = None, cluster: ClusterSpec | None = None,
            client: Any = None, cache: HashCache | None = None,
            on_scan: Callable[[FileScan], None] | None = None) -> list[Record]:
    """The labelled series of an RSNA folder; each file read once (header and pixel hash, see :mod:`.scan`).

    ``cluster``/``client``: where the scan's Dask tasks run (default: a LocalCluster of ``workers``
    processes for a big folder, this process for a few files); ``cache`` receives the pixel hashes;
    ``on_scan`` is given the scan (its files/s).
    """
    root = Path(root)
    csv_path = find_first(root, CSV_NAMES)
    image_dir = find_first(root, IMAGE_DIRS, want_dir=True)
    if csv_path is None:
        raise FileNotFoundError(f"{root}: no {' or '.join(CSV_NAMES)}")
    if image_dir is None:
        raise FileNotFoundError(f"{root}: no image folder ({', '.join(IMAGE_DIRS)})")
    files = list_candidate_files(image_dir)
    if not files:
        raise DicomIngestError(image_dir, "is empty: no files found")
    next(iter_csv_columns(csv_path, CSV_COLUMNS), None)  # a CSV without its columns fails before the scan
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ichct-rsna-labels") as pool:
        pending = pool.submit(read_labels, csv_path)  # parsed here while the workers read the headers
        scan = scan_files(files, cache=cache, client=client, cluster=cluster, workers=workers)
        labels = pending.result()
    if on_scan is not None:
        on_scan(scan)
    by_series = defaultdict(list)
    for h in scan.headers:
        by_series[h.series_uid].append(h)
    records = []
    for series_uid in sorted(by_series):
        headers = by_series[series_uid]
        labelled = [h for h in headers if label_key(h) in labels]
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
        mixed = _mixed_stand_in(image_dir, series_uid, geometry, group.headers)
        if mixed:
            logger.warning("rsna: series %s skipped: %s", series_uid, mixed)
            continue
        rows_by_index = [_row(labels.get(label_key(h))) for h in group.headers]
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
        pixel_hash = series_pixel_hash(scan, group.headers)
        default, counts = series_facts(group.headers, series_uid, groups=[group], geometry=geometry)
        records.append(Record(
            image=absolute(image_dir), kind="dicom", patient_id=patient_id, study_uid=first.study_uid or series_uid,
            series_uid=series_uid, ct_labels=labels_from_slices(rows_by_index), slice_labels=rows,
            private=private_tokens(patient_id), link_files=sorted({absolute(h.path) for h in group.headers}),
            pixel_hash=pixel_hash, known_image=KnownImage(pixel_hash, counts, default),
        ))
    if not records:
        logger.warning("rsna: no labelled series found in %s", image_dir)
    return records


def _mixed_stand_in(image_dir: Path, series_uid: str, geometry: Any, headers: list[Any]) -> str | None:
    """Why a stand-in series (files without SeriesInstanceUID, grouped by study, series number, kernel
    and thickness in the flat folder) is not one acquisition, or None: slices off one line, uneven
    steps, or two files at one position (two series of one study that the headers cannot tell apart)."""
    if not series_uid.startswith(STAND_IN_SERIES_PREFIX):
        return None
    if geometry.duplicates:
        return (f"its files have no SeriesInstanceUID and {len(geometry.duplicates)} slice position(s) hold two "
                "files: several series of one study seem mixed")
    try:  # without the reader's advice (a folder per series), which this flat layout cannot follow
        check_stand_in_stack(image_dir, series_uid, geometry, headers, advice="")
    except DicomIngestError as exc:
        return exc.reason.removeprefix(f"series {series_uid}: ")
    return None


def _row(flags: tuple[int, ...] | None) -> list[int]:
    return list(flags) if flags else [UNKNOWN] * len(LABEL_NAMES)


def _merge(a: int, b: int) -> int:
    """Two slices at one position: positive if either is, negative if either says so, else unknown."""
    if 1 in (a, b):
        return 1
    if 0 in (a, b):
        return 0
    return UNKNOWN
