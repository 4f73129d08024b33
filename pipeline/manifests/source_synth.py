"""Adapter for the project's synthetic cohort (``ichct synth``).

Layout::

    <root>/cohort.json      {"generator": {...}, "studies": [{"patient_id", "study_uid", "series_uid",
                             "series_dir", "label", "slice_labels", "ct_labels", "volumes_ml"}, ...]}
    <root>/<series_dir>/    DICOM series folder (paths in cohort.json are relative to <root>)
    <root>/<label>          NIfTI label map on the convert grid (values: ichct subtype labels)

``patient_key`` hashes ``patient_id`` exactly as ingest hashes the DICOM PatientID, so keys match
the ingest sidecars.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .model import Record, private_tokens
from .source_common import absolute

logger = logging.getLogger(__name__)
NAME = "synth"


def collect(root: Path, *, workers: int | None = None, salt: str | None = None) -> list[Record]:
    cohort_path = Path(root) / "cohort.json"
    if not cohort_path.is_file():
        raise FileNotFoundError(f"{cohort_path}: no cohort.json (is {root} a synthetic cohort made by `ichct synth`?)")
    cohort = json.loads(cohort_path.read_text(encoding="utf-8"))
    studies = cohort.get("studies")
    if not isinstance(studies, list):
        raise ValueError(f"{cohort_path}: no 'studies' list")
    records = []
    for n, s in enumerate(studies):
        try:
            image = Path(root) / s["series_dir"]
            label = Path(root) / s["label"] if s.get("label") else None
            patient_id = str(s["patient_id"])
            study_uid, series_uid = str(s["study_uid"]), str(s["series_uid"])
            ct_labels = dict(s["ct_labels"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{cohort_path}: study #{n} lacks {exc}") from None
        if not image.is_dir():
            logger.warning("synth: study #%d skipped: series folder %s not found", n, s["series_dir"])
            continue
        if label is not None and not label.is_file():
            logger.warning("synth: study #%d skipped: label %s not found", n, s["label"])
            continue
        rows = s.get("slice_labels")
        records.append(Record(
            image=absolute(image), kind="dicom", patient_id=patient_id, study_uid=study_uid, series_uid=series_uid,
            ct_labels=ct_labels, label=absolute(label) if label else None, label_values="ichct" if label else None,
            slice_labels=[[int(v) for v in r] for r in rows] if isinstance(rows, list) else None,
            private=private_tokens(patient_id),
        ))
    return records
