"""Adapter for BHSD, the Brain Hemorrhage Segmentation Dataset (Wu et al., MLMI 2023; ``label_192``).

Layout (``label_192.zip`` extracted; the root may be its parent)::

    <root>/images/ID_<PatientID>_ID_<StudyInstanceUID>.nii.gz          CT volume (from the RSNA challenge)
    <root>/ground truths/ID_<PatientID>_ID_<StudyInstanceUID>.nii.gz   voxel labels
                                                                       (also accepted: ground_truths, labels, masks)

BHSD voxel labels: 0 background, 1 EDH (epidural), 2 IPH (intraparenchymal), 3 IVH
(intraventricular), 4 SAH (subarachnoid), 5 SDH (subdural): the same values as ichct's
(:data:`BHSD_TO_ICHCT` is the identity), so masks are used as they are (``label_values`` "ichct").
CT-level and per-slice flags (along the third axis) are read from the mask. Images without a mask
(the unlabelled set) are left out.

The file names carry RSNA's PatientID and StudyInstanceUID: the identity is the RSNA PatientID
(unprefixed, so that ``manifest check`` catches a patient shared by a BHSD and an RSNA manifest)
and ``study_uid`` the RSNA study UID. File names reveal the patient, so the builder links them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from .model import Record, is_nifti, nifti_stem, private_tokens
from .source_common import absolute, find_first, mask_labels, pseudo_uid

logger = logging.getLogger(__name__)
NAME = "bhsd"
BHSD_TO_ICHCT: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
MASK_DIRS = ("ground truths", "ground_truths", "ground truth", "labels", "masks")
_NAME = re.compile(r"^(ID_[0-9A-Za-z]+)_(ID_[0-9A-Za-z]+)$")


def collect(root: Path, *, workers: int | None = None, salt: str | None = None) -> list[Record]:
    import nibabel as nib

    image_dir = find_first(Path(root), ("images",), want_dir=True)
    if image_dir is None:
        raise FileNotFoundError(f"{root}: no images/ folder")
    mask_dir = next((image_dir.parent / n for n in MASK_DIRS if (image_dir.parent / n).is_dir()), None)
    if mask_dir is None:
        raise FileNotFoundError(f"{image_dir.parent}: no mask folder ({', '.join(MASK_DIRS)})")
    masks = {nifti_stem(p): p for p in mask_dir.iterdir() if is_nifti(p)}
    records = []
    unlabelled = 0
    for image in sorted(p for p in image_dir.iterdir() if is_nifti(p)):
        stem = nifti_stem(image)
        mask = masks.get(stem)
        if mask is None:
            unlabelled += 1
            continue
        try:
            data = np.asanyarray(nib.load(str(mask)).dataobj)
        except Exception as exc:  # noqa: BLE001
            logger.warning("bhsd: %s skipped: mask unreadable (%s)", stem, exc)
            continue
        values = set(np.unique(np.rint(data)).astype(int).tolist())
        if not values <= set(BHSD_TO_ICHCT):
            logger.warning("bhsd: %s skipped: mask values %s outside 0-5", stem, sorted(values - set(BHSD_TO_ICHCT)))
            continue
        ct, rows = mask_labels(data, "ichct", path=mask)
        m = _NAME.match(stem)
        patient_id, study_uid = (m.group(1), m.group(2)) if m else (f"bhsd:{stem}", pseudo_uid(NAME, "study", stem, salt))
        records.append(Record(
            image=absolute(image), kind="nifti", patient_id=patient_id, study_uid=study_uid,
            series_uid=pseudo_uid(NAME, "series", stem, salt), ct_labels=ct, slice_labels=rows,
            label=absolute(mask), label_values="ichct", private=private_tokens(patient_id, stem),
        ))
    if unlabelled:
        logger.info("bhsd: %d image(s) without a mask left out", unlabelled)
    return records
