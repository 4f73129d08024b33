"""Which studies a model saw in training, and how evaluation checks a split against them.

``train_patients.json`` (in a run folder, or a bundle's ``models/``) holds the salted patient keys
of the training folds, plus what does not depend on the salt: the training studies' Study and
Series Instance UIDs, and the same for the validation fold that chose the checkpoint and the
thresholds. Evaluation then catches

* a training patient in the evaluated split (same salt: by patient key);
* a training study or series, whatever salt the evaluated manifest was built with (by UID); a
  different salt is reported, because another study of a training patient cannot be recognised
  then;
* an evaluation on the run's own validation fold (optimistic: it picked the checkpoint).

A fine-tuned model's record (``ichct train --init-weights``) nests the record of the model its
weights started from as ``initial_weights``; those patients count as training patients too. An
ensemble's record (``ichct ensemble``) is its first member's, with the other members' records
nested as ``ensemble_members``; their training patients count as well.

Older records hold only the patient keys; they are still used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD_NAME = "train_patients.json"


def manifest_salt_id(manifest: str | Path) -> str | None:
    """The ``salt_id`` a manifest's patient keys were made with (None when it does not say)."""
    try:
        doc = json.loads(Path(manifest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    salt = doc.get("salt_id") if isinstance(doc, Mapping) else None
    return str(salt) if salt else None


def _uids(entries: Iterable[Mapping[str, Any]], key: str) -> list[str]:
    return sorted({str(e[key]) for e in entries if e.get(key)})


def training_record(manifest: str | Path, manifest_sha256: str, fold: int,
                    train_entries: Sequence[Mapping[str, Any]],
                    val_entries: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The ``train_patients.json`` document of a run trained on ``train_entries`` (fold ``fold``)."""
    doc: dict[str, Any] = {
        "manifest": str(manifest), "manifest_sha256": manifest_sha256, "fold": int(fold),
        "salt_id": manifest_salt_id(manifest),
        "patient_keys": sorted({str(e["patient_key"]) for e in train_entries}),
        "study_uids": _uids(train_entries, "study_uid"),
        "series_uids": _uids(train_entries, "series_uid"),
    }
    if val_entries is not None:
        doc["validation"] = {
            "patient_keys": sorted({str(e["patient_key"]) for e in val_entries}),
            "study_uids": _uids(val_entries, "study_uid"),
            "series_uids": _uids(val_entries, "series_uid"),
        }
    return doc


@dataclass
class SplitCheck:
    """What a split shares with a model's training record.

    ``leaked``: patient keys of evaluated entries that were trained on (same patient key, or a
    training study/series); ``validation``: those of entries from the run's validation fold;
    ``notes``: what could not be checked, in words.
    """

    leaked: set[str] = field(default_factory=set)
    validation: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _index(part: Mapping[str, Any]) -> dict[str, set[str]]:
    """The record part's patient keys, study and series UIDs as sets (empty when not recorded)."""
    return {field: {str(v) for v in part.get(field, [])} for field in ("patient_keys", "study_uids", "series_uids")}


def _seen(entry: Mapping[str, Any], index: Mapping[str, set[str]], same_salt: bool) -> bool:
    if same_salt and str(entry.get("patient_key")) in index["patient_keys"]:
        return True
    return (str(entry.get("study_uid", "")) in index["study_uids"]
            or str(entry.get("series_uid", "")) in index["series_uids"])


def check_split(record: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], salt_id: str | None,
                where: str = "the model") -> SplitCheck:
    """Compare evaluated manifest ``entries`` (built with ``salt_id``) with a training ``record`` (and,
    for a fine-tuned model, with the record of its initial weights, ``initial_weights``)."""
    out = SplitCheck()
    run_salt = record.get("salt_id")
    same_salt = not (run_salt and salt_id and run_salt != salt_id)
    train = _index(record)
    has_uids = bool(train["study_uids"] or train["series_uids"])
    if not same_salt:
        out.notes.append(
            f"{where} was trained on a manifest salted {run_salt}, the evaluated one is salted {salt_id}: "
            + ("training studies and series are recognised by UID, but another study of a training patient "
               "cannot be" if has_uids else "its training patients cannot be recognised at all"))
    validation = _index(record.get("validation") or {})
    for e in entries:
        key = str(e.get("patient_key"))
        if _seen(e, train, same_salt):
            out.leaked.add(key)
        elif _seen(e, validation, same_salt):
            out.validation.add(key)
    nested = [(record.get("initial_weights"), f"the initial weights of {where}")]  # a fine-tuned model
    nested += [(member, f"member {i} of {where}")  # an ensemble (ichct ensemble): its other members
               for i, member in enumerate(record.get("ensemble_members") or (), start=2)]
    for part, what in nested:
        if isinstance(part, Mapping):
            before = check_split(part, entries, salt_id, where=what)
            out.leaked |= before.leaked
            out.validation = (out.validation | before.validation) - out.leaked
            out.notes += before.notes
    return out
