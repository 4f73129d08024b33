"""The persistent preprocessed cache: each study's deterministic preprocessing, computed once, on disk.

Training transforms (:func:`~ichct.pipeline.models.data.seg_preprocessing`,
:func:`~ichct.pipeline.models.data.cls_preprocessing`) are a deterministic prefix (load, RAS,
resample, crop, window, pad) followed by random augmentations, split where MONAI's
``CacheDataset`` splits them (the first ``Randomizable`` transform). The prefix's output for one
study is an *entry*::

    CACHE/<kind>-<digest>/<series UID>/data.pt            the prefix's tensors (torch.save)
    CACHE/<kind>-<digest>/<series UID>/.ichct-done.json   the completion record

``<digest>`` is :func:`~ichct.pipeline.core.study_tasks.config_digest` of the prefix's transform
specs (and the ichct and MONAI versions), so another spacing, crop or window gets its own folder.
The record keys the entry by the content of the study's input files (image and label files, not
their paths) through :func:`~ichct.pipeline.core.study_tasks.run_one`, which writes the entry into
a staging folder beside its final place and renames it there: a half-written entry is never
visible, a killed writer leaves only a ``.partial`` folder that nothing reads. A reader checks the
record (file sizes), the SHA-256 of ``data.pt`` and that ``torch.load(..., weights_only=True)``
succeeds; an entry failing any of these is removed and rebuilt, never fed to training.

Only what the prefix computes is stored (``image``, ``label``, crop coordinates, as plain tensors);
the manifest's own fields (slice labels, CT labels, patient key) come from the manifest at load
time, so relabelling a study does not invalidate its entry.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from ichct.errors import InputError
from ichct.pipeline.core.files import files_under
from ichct.pipeline.core.study_tasks import StudyTask, config_digest, read_record, run_one

#: The tensors of an entry, inside its folder.
DATA_NAME = "data.pt"
#: ``data.pt`` stores each image's affine under ``<key>_affine`` (MetaTensors are stored as plain tensors).
AFFINE_SUFFIX = "_affine"
#: Item keys that name files the prefix loads (their files key the entry).
LOADED_KEYS = ("image", "label")


@dataclass(frozen=True)
class CachePlan:
    """The deterministic prefix of one kind's training transforms, and the cache folder it writes to.

    Parameters
    ----------
    kind
        ``"seg"`` or ``"cls"``.
    specs
        The prefix's transform specs (MONAI config entries, see
        :func:`~ichct.pipeline.models.data.spec`).

    Examples
    --------
    >>> plan = CachePlan("seg", ({"_target_": "EnsureTyped", "keys": "image"},))
    >>> plan.folder("cache").name == "seg-" + plan.digest
    True
    """

    kind: str
    specs: tuple[Mapping[str, Any], ...]

    @cached_property
    def config(self) -> dict[str, Any]:
        """What the entries depend on besides the input files: the specs and the library versions."""
        import monai

        import ichct

        return {"kind": self.kind, "specs": [dict(s) for s in self.specs], "ichct": ichct.__version__,
                "monai": monai.__version__}

    @cached_property
    def digest(self) -> str:
        """:func:`~ichct.pipeline.core.study_tasks.config_digest` of :attr:`config`."""
        return config_digest(self.config)

    def folder(self, cache_dir: str | Path) -> Path:
        """``cache_dir/<kind>-<digest>``: where this plan's entries live."""
        return Path(cache_dir) / f"{self.kind}-{self.digest}"


@dataclass(frozen=True)
class CacheJob:
    """The payload of one entry's :class:`~ichct.pipeline.core.study_tasks.StudyTask`: the data
    item (paths, slice labels) and the plan. Not JSON: the entry is keyed by the input files'
    content and the plan's digest, never by paths."""

    item: Mapping[str, Any]
    plan: CachePlan


def first_random_index(transform: Any) -> int | None:
    """Index of the first random (or non-``Transform``) step of a ``Compose``, where MONAI's
    ``CacheDataset`` stops caching; None when every step is deterministic.

    Examples
    --------
    >>> from ichct.pipeline.models.data import compose, spec
    >>> first_random_index(compose([spec("EnsureTyped", keys="image"), spec("RandFlipd", keys="image")]))
    1
    """
    from monai.transforms import RandomizableTrait, Transform

    return transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))


def cache_plan(kind: str, specs: Sequence[Mapping[str, Any]], transform: Any = None) -> CachePlan:
    """The :class:`CachePlan` of a list of transform specs (``transform``: their ``Compose``, if built).

    Examples
    --------
    >>> from ichct.pipeline.models.data import spec
    >>> len(cache_plan("seg", [spec("EnsureTyped", keys="image"), spec("RandFlipd", keys="image")]).specs)
    1
    """
    from ichct.pipeline.models.data import compose

    first = first_random_index(transform if transform is not None else compose(specs))
    return CachePlan(kind, tuple(dict(s) for s in (specs if first is None else specs[:first])))


#: The prefix ``Compose`` of each plan this process has built entries for (by digest).
_PREFIXES: dict[str, Any] = {}


def _prefix_transform(plan: CachePlan) -> Any:
    from ichct.pipeline.models.data import compose

    digest = plan.digest
    if digest not in _PREFIXES:
        _PREFIXES[digest] = compose(plan.specs)
    return _PREFIXES[digest]


def input_files(item: Mapping[str, Any]) -> tuple[str, ...]:
    """Every file the prefix reads for ``item``: the files of its image and label (a DICOM folder: all
    files below it), sorted.

    Examples
    --------
    >>> input_files({"image": "/nonexistent.nii.gz"})
    ('/nonexistent.nii.gz',)
    """
    files: list[str] = []
    for key in LOADED_KEYS:
        path = item.get(key)
        if not isinstance(path, (str, os.PathLike)):
            continue
        files += files_under(path)
    return tuple(files)


def entry_name(entry: Mapping[str, Any]) -> str:
    """The folder name of a manifest entry's cache entry: its series UID (a file-name-safe one), else
    a digest of its image path.

    Examples
    --------
    >>> entry_name({"series_uid": "1.2.840.1", "image": "a"})
    '1.2.840.1'
    """
    uid = str(entry.get("series_uid") or "")
    if uid and re.fullmatch(r"[A-Za-z0-9._-]{1,128}", uid) and uid not in (".", ".."):
        return uid
    return "img-" + hashlib.sha256(os.path.abspath(str(entry["image"])).encode()).hexdigest()[:24]


def _storable(value: Any) -> Any:
    """A value as a plain tensor (MetaTensors lose their meta, arrays become tensors), as MONAI's
    ``PersistentDataset`` stores them, so that ``torch.load(..., weights_only=True)`` reads it."""
    from monai.utils import convert_to_tensor

    return convert_to_tensor(value, convert_numeric=False, track_meta=False)


def write_entry_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (in a staging folder) and flush it to disk before the folder is renamed."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def build_entry(task: StudyTask, staging: Path) -> dict[str, Any]:
    """Work function of :func:`~ichct.pipeline.core.study_tasks.run_study_tasks`: run the plan's
    prefix on the study and ``torch.save`` what it computed into ``staging/data.pt``.

    Returns the summary kept in the record: the shapes and the SHA-256 of ``data.pt``.
    """
    job: CacheJob = task.payload
    item = dict(job.item)
    out = _prefix_transform(job.plan)(item, threading=True)
    passthrough = set(item) - set(LOADED_KEYS)
    stored = {k: _storable(v) for k, v in out.items() if k not in passthrough}
    # the affine of each image (its voxel size): steps after the prefix may need it (kernel tails in mm)
    stored.update({k + AFFINE_SUFFIX: _storable(v.affine) for k, v in out.items()
                   if k not in passthrough and isinstance(v, MetaTensor)})
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    data = buffer.getvalue()
    write_entry_file(staging / DATA_NAME, data)
    return {"sha256": hashlib.sha256(data).hexdigest(),
            "shapes": {k: list(v.shape) for k, v in stored.items() if isinstance(v, torch.Tensor)}}


def load_entry(folder: str | Path) -> dict[str, Any] | None:
    """The tensors of a finished entry, or None when it is missing, truncated or corrupt.

    Checks the completion record (every file's size), the SHA-256 of ``data.pt`` recorded when it
    was written, and loads it with ``torch.load(..., weights_only=True)``.

    Examples
    --------
    >>> load_entry("/nonexistent") is None
    True
    """
    folder = Path(folder)
    record = read_record(folder)
    if record is None or DATA_NAME not in record.get("files", {}):
        return None
    try:
        data = (folder / DATA_NAME).read_bytes()
        if hashlib.sha256(data).hexdigest() != record.get("summary", {}).get("sha256"):
            return None
        loaded = torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable entry of any kind is rebuilt, never used
        return None
    return _with_affines(loaded) if isinstance(loaded, dict) else None


def _with_affines(loaded: dict[str, Any]) -> dict[str, Any]:
    """Entries stored with ``<key>_affine``: the key back as a ``MetaTensor`` with that affine."""
    out = {k: v for k, v in loaded.items() if not k.endswith(AFFINE_SUFFIX)}
    for key, value in loaded.items():
        base = key[: -len(AFFINE_SUFFIX)]
        if key.endswith(AFFINE_SUFFIX) and isinstance(out.get(base), torch.Tensor):
            out[base] = MetaTensor(out[base], affine=value)
    return out


def study_task(name: str, item: Mapping[str, Any], plan: CachePlan) -> StudyTask:
    """The :class:`~ichct.pipeline.core.study_tasks.StudyTask` that builds one study's entry."""
    return StudyTask(name, input_files(item), CacheJob(dict(item), plan))


def ensure_entry(name: str, item: Mapping[str, Any], plan: CachePlan, cache_dir: str | Path) -> dict[str, Any]:
    """The entry's tensors, built here first when missing, stale or corrupt (never a corrupt one).

    Raises
    ------
    ichct.errors.InputError
        When the study cannot be preprocessed (unreadable input, a full disk): the reason, naming the study.
    """
    root = plan.folder(cache_dir)
    task = study_task(name, item, plan)
    for _ in range(2):
        outcome = run_one(build_entry, task, str(root), plan.digest)
        if not outcome.ok:
            raise InputError(str(item.get("image")), f"cannot build its preprocessed cache entry in {root}: "
                                                     f"{outcome.reason}")
        loaded = load_entry(root / name)
        if loaded is not None:
            return loaded
        shutil.rmtree(root / name, ignore_errors=True)  # truncated or corrupt: rebuilt on the next pass
    raise InputError(str(root / name), "the cache entry was unreadable right after it was rebuilt")


def check_slice_count(data: Mapping[str, Any], image_path: Any) -> None:
    """Refuse a study whose cached slice count differs from the manifest's slice-label rows."""
    labels = data.get("slice_labels")
    if labels is not None and int(data["image"].shape[-1]) != len(labels):
        raise InputError(str(image_path), f"{int(data['image'].shape[-1])} slices but {len(labels)} slice-label rows "
                                          "in the manifest")


class DiskCacheDataset(torch.utils.data.Dataset):
    """A map-style dataset that streams studies from the disk cache: one entry is loaded per item
    (built on demand), merged with the manifest's fields, then the random transforms run.

    Memory holds one study per DataLoader worker, whatever the number of studies.

    Parameters
    ----------
    items
        The data items (:func:`~ichct.pipeline.models.data.seg_items` / ``cls_items``).
    names
        Each item's entry name (:func:`entry_name`).
    transform
        The full training (or validation) ``Compose``; the steps after the entry's cached prefix run here.
    plans
        The plan of items with a ``label`` path (``True``) and without one (``False``).
    cache_dir
        The cache root.
    drop_keys
        Keys of the entry the consumer does not want (the classifier's validation drops ``label``).

    Examples
    --------
    >>> ds = DiskCacheDataset([], [], transform, {True: plan}, "cache")  # doctest: +SKIP
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], names: Sequence[str], transform: Any,
                 plans: Mapping[bool, CachePlan], cache_dir: str | Path, drop_keys: Sequence[str] = ()) -> None:
        if len(items) != len(names):
            raise ValueError("one entry name per item")
        self.items, self.names = list(items), list(names)
        self.transform, self.plans = transform, dict(plans)
        self.cache_dir, self.drop_keys = Path(cache_dir), tuple(drop_keys)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        item = self.items[index]
        has_label = isinstance(item.get("label"), (str, os.PathLike))
        entry = ensure_entry(self.names[index], item, self.plans[has_label], self.cache_dir)
        data = {k: v for k, v in item.items() if k not in LOADED_KEYS}
        data.update(entry)
        for key in self.drop_keys:
            data.pop(key, None)
        check_slice_count(data, item.get("image"))
        if isinstance(data.get("slice_labels"), np.ndarray):
            data["slice_labels"] = data["slice_labels"].copy()
        # resume where the entry's cached prefix ends: the training chain's first random step, which
        # for a validation chain (no random step) is where its own windows begin when the image
        # formation is randomised on HU (the cache then holds HU)
        start = len(self.plans[has_label].specs)
        if start >= len(self.transform.transforms):
            return data
        return self.transform(data, start=start)
