"""The one way training and evaluation code reads a manifest: :func:`load_manifest`.

It runs every check of :mod:`.check` first and refuses a manifest that fails any of them, so a
leaking or broken split never reaches a model.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ichct.errors import InputError

from .check import check_documents, read_manifest
from .errors import ManifestError
from .hashing import HashCache

logger = logging.getLogger(__name__)

SPLITS = ("training", "validation", "test", "all")


def load_manifest(
    path: str | Path,
    split: str = "training",
    fold: int | None = None,
    *,
    check: bool = True,
    also_check: Sequence[str | Path] = (),
    verify_pixels: bool = True,
    cache: HashCache | None | bool = True,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Entries of one split as MONAI-style dicts with absolute ``image`` / ``label`` paths.

    Parameters
    ----------
    split
        ``"training"``: the training entries, without fold ``fold`` when one is given (the folds
        to train on); ``"validation"``: the entries of fold ``fold`` (required); ``"test"``: the
        held-out test entries; ``"all"``: training then test.
    fold
        Cross-validation fold, ``0 <= fold < num_folds``.
    check
        Run the manifest checks first (leakage, files, label grids) and raise
        :class:`ManifestError` when any fails. ``also_check``: other manifests used together with
        this one (e.g. an external test set); leakage between them fails the check too.
    verify_pixels, cache, workers
        Passed to :func:`ichct.pipeline.manifests.check.check_documents`.

    Raises
    ------
    ManifestError
        The manifest (or one given in ``also_check``) fails a check; the message names the
        manifest and lists the problems.
    ichct.errors.InputError
        Unknown split or fold out of range (a ``ValueError``).
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    doc = read_manifest(path)
    if doc.load_error:
        raise ManifestError(path, [f"{doc.name}: {doc.load_error}"])
    if check:
        docs = [doc] + [read_manifest(p) for p in also_check]
        report = check_documents(docs, verify_pixels=verify_pixels, cache=cache, workers=workers)
        if not report.ok:
            raise ManifestError(path, report.problems)
    data = doc.data
    num_folds = int(data.get("num_folds", 1))
    if fold is not None and not 0 <= int(fold) < num_folds:
        raise InputError(path, f"fold {fold} outside 0..{num_folds - 1}")
    if split == "validation" and fold is None:
        raise InputError("split 'validation' needs a fold (--fold)")
    training = data.get("training", [])
    if split == "training":
        items = [e for e in training if fold is None or e.get("fold") != fold]
    elif split == "validation":
        items = [e for e in training if e.get("fold") == fold]
    elif split == "test":
        items = list(data.get("test", []))
    else:
        items = list(training) + list(data.get("test", []))
    out = []
    for e in items:
        item = copy.deepcopy(e)
        for k in ("image", "label"):
            if isinstance(item.get(k), str):
                item[k] = str(doc.resolve(item[k]))
        out.append(item)
    return out
