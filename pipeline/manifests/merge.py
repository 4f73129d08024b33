"""Several split manifests as one (``ichct manifest merge``): every study keeps its split and fold.

Training on two data sets together (a public archive and a hospital's own, or two synthetic
cohorts) needs one manifest whose folds and test set still share no patient. Merging does not
split again: fold ``k`` of the result is fold ``k`` of every input, and each input's test studies
stay test studies, so a model trained on one input's fold 0 is validated on the same studies after
the merge. The result is checked as one manifest before it is written
(:func:`~ichct.pipeline.manifests.check.check_documents`): a patient, series or identical pixel
data in two splits or folds, now of one manifest, refuses the merge, as does the same series in two
inputs, and inputs with different fold counts, label sets or salts (their patient keys could not be
compared). Paths are rewritten relative to the output's folder; nothing
is written unless the merge succeeds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ichct.pipeline.core.atomic import atomic_path
from ichct.pipeline.core.files import sha256_file

from .build import manifest_text
from .check import ManifestDoc, check_documents, read_manifest
from .errors import ManifestError
from .hashing import HashCache

# header fields every input must agree on, with what a difference means
_SHARED_FIELDS: dict[str, str] = {
    "num_folds": "fold k of one would not be fold k of the other",
    "salt_id": "their patient keys are salted differently, so a patient in both could not be recognised",
    "labels": "their label maps name other classes",
    "slice_label_order": "their slice labels are in another order",
}


def merge_manifests(paths: Sequence[str | Path], out: str | Path, *, name: str | None = None,
                    command: str | None = None, verify_files: bool = True, verify_pixels: bool = True,
                    cache: HashCache | None | bool = True, workers: int | None = None) -> dict[str, Any]:
    """Merge the manifests ``paths`` into ``out``, each study in its own split and fold.

    Parameters
    ----------
    paths
        Two or more manifest files, all with the same ``num_folds``, ``salt_id``, ``labels`` and
        ``slice_label_order``.
    out
        The manifest to write (atomically; its paths are relative to its folder).
    name, command
        The result's ``name`` (default: ``out``'s file name without ``.json``) and the command
        recorded in ``created_by``.
    verify_files, verify_pixels, cache, workers
        Passed to :func:`~ichct.pipeline.manifests.check.check_documents`, which checks the merged
        manifest before anything is written.

    Returns
    -------
    dict
        The merged manifest as written.

    Raises
    ------
    ManifestError
        An input is unreadable, the merged manifest fails a check (a patient, series or identical
        pixel data in two splits or folds; missing files), two inputs hold the same series, or the
        inputs differ in a field they must share; nothing is written.

    Examples
    --------
    >>> merge_manifests(["a.json"], "ab.json")
    Traceback (most recent call last):
    ...
    ichct.pipeline.manifests.errors.ManifestError: manifest ab.json failed 1 check(s):
      a merge needs at least two manifests, got 1
    """
    out = Path(out)
    if len(paths) < 2:
        raise ManifestError(out, [f"a merge needs at least two manifests, got {len(paths)}"])
    docs = [read_manifest(p) for p in paths]
    problems = _header_problems(docs)
    if problems:
        raise ManifestError(out, problems)
    problems = _shared_series(docs)
    if problems:
        raise ManifestError(out, problems)
    out_dir = Path(os.path.abspath(out)).parent
    doc = _merged_document(docs, out_dir, name or out.name.removesuffix(".json"), command or "")
    # checked as the one manifest it becomes: a patient of two inputs in two folds is a leak there
    # (across separate manifests, folds are not comparable and only split leaks count)
    merged = ManifestDoc(str(out), doc, out_dir, out)
    report = check_documents([merged], verify_files=verify_files, verify_pixels=verify_pixels, cache=cache,
                             workers=workers)
    if not report.ok:
        raise ManifestError(out, report.problems)
    with atomic_path(out, suffix=".json") as tmp:
        tmp.write_text(manifest_text(doc), encoding="utf-8")
    return doc


def _header_problems(docs: Sequence[ManifestDoc]) -> list[str]:
    """Unreadable inputs, then every shared header field that differs from the first input's."""
    problems = [f"{doc.name}: {doc.load_error}" for doc in docs if doc.load_error]
    problems += [f"{doc.name}: not a manifest (a JSON object with training and test lists)" for doc in docs
                 if not doc.load_error and not isinstance(doc.data, dict)]
    if problems:
        return problems
    first = docs[0]
    for field, why in _SHARED_FIELDS.items():
        for doc in docs[1:]:
            if doc.data.get(field) != first.data.get(field):
                problems.append(f"{doc.name}: {field} {doc.data.get(field)!r} differs from {first.name}'s "
                                f"{first.data.get(field)!r}: {why}")
    return problems


def _shared_series(docs: Sequence[ManifestDoc]) -> list[str]:
    """A line for each series UID listed in more than one input (a study would be counted twice)."""
    seen: dict[str, str] = {}
    problems = []
    for doc in docs:
        for entry in [*doc.data.get("training", []), *doc.data.get("test", [])]:
            uid = entry.get("series_uid")
            if uid is None:
                continue
            if uid in seen and seen[uid] != doc.name:
                problems.append(f"series {uid} is in both {seen[uid]} and {doc.name}: merge each study once")
            seen.setdefault(uid, doc.name)
    return problems


def _moved(doc: ManifestDoc, entry: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """``entry`` with its relative paths rewritten from ``doc``'s folder to ``out_dir`` (absolute ones kept)."""
    moved = dict(entry)
    for field in ("image", "label"):
        value = entry.get(field)
        if isinstance(value, str) and not os.path.isabs(value):
            moved[field] = os.path.relpath(doc.resolve(value), out_dir)
    return moved


def _merged_document(docs: Sequence[ManifestDoc], out_dir: Path, name: str, command: str) -> dict[str, Any]:
    """The merged manifest for the folder ``out_dir``: the first input's shared header, every input's
    entries, where they came from."""
    from ichct import __version__

    first = docs[0].data
    training = [_moved(doc, e, out_dir) for doc in docs for e in doc.data.get("training", [])]
    test = [_moved(doc, e, out_dir) for doc in docs for e in doc.data.get("test", [])]
    sources = {doc.data.get("source") for doc in docs}
    parts = ", ".join(f"{doc.data.get('name', doc.name)} ({len(doc.data.get('training', []))} + "
                      f"{len(doc.data.get('test', []))})" for doc in docs)
    merged: dict[str, Any] = {
        "name": name,
        "description": f"merge of {parts}: {len(training)} training studies in {first['num_folds']} folds, "
                       f"{len(test)} test studies; each study in its own manifest's split and fold",
        "source": sources.pop() if len(sources) == 1 else "mixed",
        "created_by": {"ichct_version": __version__, "command": command},
        "salt_id": first["salt_id"],
        "num_folds": first["num_folds"],
        "test_fraction": round(len(test) / max(1, len(training) + len(test)), 4),
        "merged_from": [{"manifest": os.path.relpath(os.path.abspath(doc.path), out_dir) if doc.path else doc.name,
                         "sha256": sha256_file(doc.path) if doc.path else None} for doc in docs],
    }
    for field in ("modality", "labels", "slice_label_order"):
        if field in first:
            merged[field] = first[field]
    merged.update(numTraining=len(training), numTest=len(test), training=training, test=test)
    return merged
