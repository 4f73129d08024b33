"""Adapter for the project's synthetic cohort (``ichct synth``).

Layout::

    <root>/cohort.json      {"generator": {...}, "studies": [{"patient_id", "study_uid", "series_uid",
                             "series_dir", "label", "slice_labels", "ct_labels", "volumes_ml"}, ...]}
    <root>/<series_dir>/    DICOM series folder (paths in cohort.json are relative to <root>)
    <root>/<label>          NIfTI label map on the convert grid (values: ichct subtype labels)

A cohort written by ``ichct synth`` (``generator.name`` "ichct-synth") holds no patient data: its
identifiers (``SYN0001`` ...) are made up and public. For such a cohort

* ``patient_key`` is hashed under the public salt :data:`SYNTH_SALT` (recorded as ``salt_id``), not
  the user's secret salt, so that a manifest of it is the same on every machine (the committed
  ``data_manifests/synth_default.json``); and
* its paths (``dicom/SYN0001/...``) are written as they are, with no link folder, so that such a
  manifest resolves in any checkout that regenerated the cohort.

Any other ``cohort.json`` is treated like real data: keys under the user's salt (then they match
the ingest sidecars' ``patient_key`` of the same PatientID), and paths naming a patient linked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ichct.errors import InputError, read_json

from .model import Record, private_tokens
from .source_common import absolute

logger = logging.getLogger(__name__)
NAME = "synth"

# The salt of patient keys of `ichct synth` cohorts. Public on purpose: it protects nothing because
# synthetic identifiers are not patient data; it makes their keys and splits machine-independent.
SYNTH_SALT = "ichct-synth-public-salt:synthetic-identifiers-are-not-patient-data"


def _read_cohort(root: Path) -> dict[str, Any]:
    cohort_path = Path(root) / "cohort.json"
    if not cohort_path.is_file():
        raise FileNotFoundError(f"{cohort_path}: no cohort.json (is {root} a synthetic cohort made by `ichct synth`?)")
    cohort = read_json(cohort_path, "cohort.json")
    if not isinstance(cohort, dict):
        raise InputError(cohort_path, "not a cohort.json object")
    return cohort


def is_generated(cohort: dict[str, Any]) -> bool:
    """True for a cohort written by ``ichct synth`` (made-up identifiers)."""
    from ichct.pipeline.synth.cohort import GENERATOR_NAME

    generator = cohort.get("generator")
    return isinstance(generator, dict) and generator.get("name") == GENERATOR_NAME


def public_salt(root: Path) -> str | None:
    """The salt for this data set's patient keys when it needs none secret (see the module docstring)."""
    return SYNTH_SALT if is_generated(_read_cohort(root)) else None


def collect(root: Path, *, workers: int | None = None, salt: str | None = None) -> list[Record]:
    cohort_path = Path(root) / "cohort.json"
    cohort = _read_cohort(root)
    generated = is_generated(cohort)
    studies = cohort.get("studies")
    if not isinstance(studies, list):
        raise InputError(cohort_path, "no 'studies' list")
    records = []
    for n, s in enumerate(studies):
        try:
            image = Path(root) / s["series_dir"]
            label = Path(root) / s["label"] if s.get("label") else None
            patient_id = str(s["patient_id"])
            study_uid, series_uid = str(s["study_uid"]), str(s["series_uid"])
            ct_labels = dict(s["ct_labels"])
        except (KeyError, TypeError) as exc:
            raise InputError(cohort_path, f"study #{n} lacks {exc}") from None
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
            private=() if generated else private_tokens(patient_id),
        ))
    return records
