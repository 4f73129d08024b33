"""Adapter for PhysioNet CT-ICH ("Computed Tomography Images for Intracranial Hemorrhage Detection
and Segmentation", Hssayeni et al., v1.3.1).

Layout (the root may also be the folder above the versioned release folder)::

    <root>/hemorrhage_diagnosis_raw_ct.csv   PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,
                                             Subarachnoid,Epidural,Subdural,No_Hemorrhage,Fracture_Yes_No
    <root>/ct_scans/<NNN>.nii                one NIfTI volume per patient (NNN = PatientNumber, 3 digits)
    <root>/masks/<NNN>.nii                   hemorrhage mask (non-zero = hemorrhage, subtype not given)

One study per patient. ``slice_labels`` come from the CSV in SliceNumber order (1 = the volume's
first slice along its third axis); ``any`` = 1 - No_Hemorrhage; CT-level flags are positive when any
slice is. The mask becomes ``label`` with ``label_values`` "binary". Patients whose volume is
missing (the release lacks 59-65) are left out. Identity: ``ct-ich:<PatientNumber>``; study and
series UIDs are salted pseudonyms; file names carry the patient number, so the builder links them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from ichct.errors import InputError

from .model import Record, labels_from_slices, private_tokens
from .source_common import absolute, find_first, flag, pseudo_uid, read_csv_rows

logger = logging.getLogger(__name__)
NAME = "physionet"
CSV_NAME = "hemorrhage_diagnosis_raw_ct.csv"
SUBTYPE_COLUMNS = ("Epidural", "Intraparenchymal", "Intraventricular", "Subarachnoid", "Subdural")
CSV_COLUMNS = ("PatientNumber", "SliceNumber", "No_Hemorrhage") + SUBTYPE_COLUMNS


def _volume(folder: Path, number: int) -> Path | None:
    for name in (f"{number:03d}.nii", f"{number:03d}.nii.gz", f"{number}.nii", f"{number}.nii.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def collect(root: Path, *, workers: int | None = None, salt: str | None = None) -> list[Record]:
    import nibabel as nib

    csv_path = find_first(Path(root), (CSV_NAME,))
    if csv_path is None:
        raise FileNotFoundError(f"{root}: no {CSV_NAME}")
    base = csv_path.parent
    slices: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
    for row in read_csv_rows(csv_path, required=CSV_COLUMNS):
        try:
            number, slice_number = int(float(row["PatientNumber"])), int(float(row["SliceNumber"]))
        except ValueError:
            continue
        try:
            no_hem = flag(row["No_Hemorrhage"])
            subtypes = [flag(row[c]) for c in SUBTYPE_COLUMNS]
        except InputError as exc:
            raise InputError(csv_path, f"patient {number} slice {slice_number}: {exc.reason}") from None
        any_flag = -1 if no_hem == -1 else 1 - no_hem
        if 1 in subtypes:
            any_flag = 1
        slices[number].append((slice_number, [any_flag] + subtypes))
    records = []
    for number in sorted(slices):
        image = _volume(base / "ct_scans", number)
        if image is None:
            logger.warning("physionet: patient %d has no volume in ct_scans/: skipped", number)
            continue
        mask = _volume(base / "masks", number)
        rows = [r for _, r in sorted(slices[number], key=lambda t: t[0])]
        try:
            depth = int(nib.load(str(image)).shape[2])
        except Exception as exc:  # noqa: BLE001
            logger.warning("physionet: patient %d skipped: volume unreadable (%s)", number, exc)
            continue
        if len(rows) != depth:
            logger.warning("physionet: patient %d: the CSV lists %d slice(s), the volume has %d: slice_labels left out",
                           number, len(rows), depth)
        raw = f"{number:03d}"
        records.append(Record(
            image=absolute(image), kind="nifti", patient_id=f"ct-ich:{number}",
            study_uid=pseudo_uid(NAME, "study", raw, salt), series_uid=pseudo_uid(NAME, "series", raw, salt),
            ct_labels=labels_from_slices(rows), slice_labels=rows if len(rows) == depth else None,
            label=absolute(mask) if mask else None, label_values="binary" if mask else None,
            private=private_tokens(raw, str(number), f"ct-ich:{number}"),
        ))
    return records
