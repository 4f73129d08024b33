"""Adapter for INSTANCE 2022 (Intracranial Hemorrhage Segmentation Challenge on non-contrast head CT).

Layout (the root may also be the folder above, e.g. holding ``train_2/``)::

    <root>/data/<id>.nii.gz     CT volume (512 x 512 x 20-70, 5 mm slices)
    <root>/label/<id>.nii.gz    voxel mask: 0 background, 1 hemorrhage (subtype not given)

One study per patient. ``any`` (CT-level and per slice along the third axis) is read from the mask;
the subtypes are unknown: their flags are -1 everywhere and ``label_values`` is "binary". Identity:
``instance2022:<id>``; UIDs are salted pseudonyms; file names carry the case number, so the builder
links them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .model import Record, is_nifti, nifti_stem, private_tokens
from .source_common import absolute, find_first, mask_labels, pseudo_uid

logger = logging.getLogger(__name__)
NAME = "instance"
IMAGE_DIRS = ("data", "image", "images")
LABEL_DIRS = ("label", "labels")


def collect(root: Path, *, workers: int | None = None, salt: str | None = None) -> list[Record]:
    import nibabel as nib

    image_dir = None
    for candidate in IMAGE_DIRS:
        found = find_first(Path(root), (candidate,), want_dir=True)
        if found is not None and any((found.parent / n).is_dir() for n in LABEL_DIRS):
            image_dir = found
            break
    if image_dir is None:
        raise FileNotFoundError(f"{root}: no data/ and label/ folders")
    label_dir = next(image_dir.parent / n for n in LABEL_DIRS if (image_dir.parent / n).is_dir())
    labels = {nifti_stem(p): p for p in label_dir.iterdir() if is_nifti(p)}
    records = []
    for image in sorted(p for p in image_dir.iterdir() if is_nifti(p)):
        case = nifti_stem(image)
        label = labels.get(case)
        if label is None:
            logger.warning("instance: %s has no label: skipped", case)
            continue
        try:
            ct, rows = mask_labels(np.asanyarray(nib.load(str(label)).dataobj), "binary")
        except Exception as exc:  # noqa: BLE001
            logger.warning("instance: %s skipped: label unreadable (%s)", case, exc)
            continue
        records.append(Record(
            image=absolute(image), kind="nifti", patient_id=f"instance2022:{case}",
            study_uid=pseudo_uid(NAME, "study", case, salt), series_uid=pseudo_uid(NAME, "series", case, salt),
            ct_labels=ct, slice_labels=rows, label=absolute(label), label_values="binary",
            private=private_tokens(case, f"instance2022:{case}", case.lstrip("0") if len(case.lstrip("0")) >= 3 else None),
        ))
    return records
