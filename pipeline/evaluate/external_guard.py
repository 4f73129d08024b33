"""What an external model was trained on (``ichct evaluate --predictions DIR --trained-on WHAT``).

``--trained-on`` turns what a user knows about another tool's training data into a training record
of the form ichct's own runs store (:mod:`ichct.pipeline.train.record`), so the same leakage guard
(:func:`~ichct.pipeline.train.record.check_split`) refuses evaluated studies of those patients:

* a split **manifest** (JSON with ``training``): every training entry, all folds (the validation
  folds chose the checkpoint), by patient key under its ``salt_id`` and by study/series UID;
* nnU-Net's **splits_final.json** with the export's case map (``--map ichct_case_map.json``, or the
  ``ichct_case_map.json`` beside it): every case named anywhere in it, ``train`` or ``val``, by the
  case map's study UID and patient key;
* a plain **list of PatientIDs** (one per line; ``#`` comments and a ``PatientID`` header line
  skipped): salted with the evaluated manifest's salt into patient keys, exactly as the manifest
  was built (:func:`ichct.transforms.dicom.patient_key`). A list none of whose IDs is a patient of
  the manifest is refused as probably not the same IDs; one that cannot be salted like the
  manifest (its ``salt_id`` is neither this machine's salt nor the public salt of synthetic cohorts)
  is refused too;
* ``unknown``: nothing can be checked; every report says so first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ichct.errors import InputError
from ichct.pipeline.evaluate.external_matching import CaseMap, read_case_map

__all__ = ["UNKNOWN", "UNKNOWN_TRAINING_WARNING", "trained_on_record"]

UNKNOWN = "unknown"
CASE_MAP_NAME = "ichct_case_map.json"
UNKNOWN_TRAINING_WARNING = (
    "the external model's training data is unknown (--trained-on unknown): ichct could not check that none of "
    "the evaluated patients was trained on")
ID_HEADERS = {"patientid", "patient_id", "patient id", "id"}


def trained_on_record(spec: str | Path, manifest_doc: Mapping[str, Any], case_map: CaseMap | None = None
                      ) -> dict[str, Any] | None:
    """The training record (``salt_id``, ``patient_keys``, ``study_uids``, ``series_uids``,
    ``source``) that ``--trained-on spec`` describes, or None for ``unknown``.

    Parameters
    ----------
    spec
        ``unknown``, a manifest, a ``splits_final.json`` or a PatientID list (see the module).
    manifest_doc
        The evaluated manifest's JSON (its ``salt_id`` and patient keys).
    case_map
        The case map of the nnU-Net export (for ``splits_final.json``).

    Examples
    --------
    >>> trained_on_record("unknown", {}) is None
    True
    """
    if str(spec).strip().lower() == UNKNOWN:
        return None
    path = Path(spec)
    if not path.is_file():
        raise InputError(path, "no such file (--trained-on: a manifest, nnU-Net's splits_final.json, a list of "
                               f"PatientIDs, or '{UNKNOWN}')")
    doc = _json_or_none(path)
    if isinstance(doc, Mapping) and isinstance(doc.get("training"), list):
        return _manifest_record(path, doc)
    if isinstance(doc, list):
        return _splits_record(path, doc, case_map)
    if doc is not None:
        raise InputError(path, "a JSON file that is neither a split manifest (with 'training') nor nnU-Net's "
                               "splits_final.json (a list of {'train', 'val'})")
    return _patient_list_record(path, manifest_doc)


def _json_or_none(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not a text file") from None
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None


def _uids(entries: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    return sorted({str(e[key]) for e in entries if isinstance(e, Mapping) and e.get(key)})


def _manifest_record(path: Path, doc: Mapping[str, Any]) -> dict[str, Any]:
    entries = [e for e in doc["training"] if isinstance(e, Mapping)]
    return {"source": f"training entries of the manifest {path} (all folds)", "salt_id": doc.get("salt_id"),
            "patient_keys": _uids(entries, "patient_key"), "study_uids": _uids(entries, "study_uid"),
            "series_uids": _uids(entries, "series_uid")}


def _splits_record(path: Path, splits: list[Any], case_map: CaseMap | None) -> dict[str, Any]:
    if case_map is None:
        beside = path.parent / CASE_MAP_NAME
        if not beside.is_file():
            raise InputError(path, f"nnU-Net's splits_final.json names case IDs: give the export's case map with "
                                   f"--map {CASE_MAP_NAME} (none beside it)")
        case_map = read_case_map(beside)
    named: set[str] = set()
    for k, fold in enumerate(splits):
        if not isinstance(fold, Mapping) or not all(isinstance(fold.get(s, []), list) for s in ("train", "val")):
            raise InputError(path, f"fold {k}: not a {{'train': [...], 'val': [...]}} object (nnU-Net's splits_final.json)")
        named |= {str(c) for s in ("train", "val") for c in fold.get(s, [])}
    unknown = sorted(named - set(case_map.cases))
    if unknown:
        raise InputError(path, f"{len(unknown)} case ID(s) not in the case map {case_map.path}: "
                               f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
    cases = [case_map.cases[c] for c in sorted(named)]
    return {"source": f"every case of {path} (train and val of all folds) through {case_map.path}",
            "salt_id": case_map.salt_id, "patient_keys": _uids(cases, "patient_key"),
            "study_uids": _uids(cases, "study_uid"), "series_uids": []}


def _patient_list_record(path: Path, manifest_doc: Mapping[str, Any]) -> dict[str, Any]:
    from ichct.transforms.dicom import patient_key

    ids = _patient_ids(path)
    salt = _manifest_salt(path, manifest_doc)
    keys = sorted({k for k in (patient_key(pid, salt) for pid in ids) if k})
    known = {str(e.get("patient_key")) for split in ("training", "test") for e in manifest_doc.get(split) or []
             if isinstance(e, Mapping)}
    if not set(keys) & known:
        raise InputError(path, f"none of its {len(ids)} PatientID(s) is a patient of the evaluated manifest: probably "
                               "not the IDs the manifest was built from (the DICOM PatientID, or the source's patient "
                               "identifier); refusing rather than checking nothing")
    return {"source": f"{len(ids)} PatientID(s) of {path}, salted like the manifest",
            "salt_id": manifest_doc.get("salt_id"), "patient_keys": keys, "study_uids": [], "series_uids": []}


def _patient_ids(path: Path) -> list[str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    ids = [ln.split(",")[0].strip() for ln in lines if ln and not ln.startswith("#")]
    if ids and ids[0].lower() in ID_HEADERS:
        ids = ids[1:]
    if not ids:
        raise InputError(path, "no PatientID in the list")
    return ids


def _manifest_salt(path: Path, manifest_doc: Mapping[str, Any]) -> str:
    """The salt whose ``salt_id`` the manifest records: the synthetic cohorts' public one or this machine's."""
    from ichct.pipeline.manifests.source_synth import SYNTH_SALT
    from ichct.transforms.dicom import load_salt, salt_id

    wanted = manifest_doc.get("salt_id")
    if salt_id(SYNTH_SALT) == wanted:
        return SYNTH_SALT
    salt = load_salt()
    if salt_id(salt) == wanted:
        return salt
    raise InputError(path, f"the evaluated manifest's patient keys were made with salt {wanted}, not this machine's "
                           f"salt ({salt_id(salt)}): its PatientIDs cannot be salted the same way here (set ICHCT_SALT or "
                           "ICHCT_SALT_FILE to that salt, or give the training manifest)")
