"""Which cache entries a model kind reads: its plans (the deterministic prefix of its training
transforms) and the data items they are built from.

The segmenter has one plan: its training and validation transforms share the prefix (load, RAS,
resample, crop, windows, pad, with the voxel label). The classifier has one plan per kind of item:
with the auxiliary segmentation head on (``network.aux_seg``) a study with a voxel label is cached
with its label (the training prefix); its validation reads the same entry and drops the label,
whose image steps are those of the validation transforms; a study without a voxel label (or with
the head off) is cached without one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ichct.pipeline.models.data import cls_items, cls_preprocessing, seg_items, seg_preprocessing
from ichct.pipeline.preprocess.cache import CachePlan, DiskCacheDataset, cache_plan, entry_name


def _aux(cfg: Mapping[str, Any]) -> bool:
    return bool(dict(cfg["network"]).get("aux_seg", False))


def cache_plans(kind: str, cfg: Mapping[str, Any]) -> dict[bool, CachePlan]:
    """The plan of items with a voxel ``label`` (``True``) and without one (``False``).

    Examples
    --------
    >>> from ichct.pipeline.models.config import resolve_config
    >>> plans = cache_plans("seg", resolve_config("seg"))  # the image formation is randomised on HU after the crop
    >>> plans[True] is plans[False], plans[True].specs[-1]["_target_"]
    (True, 'ichct.transforms.CropHeadd')
    """
    if kind == "seg":
        plan = cache_plan("seg", seg_preprocessing(cfg, train=True))
        return {True: plan, False: plan}
    training = cache_plan("cls", cls_preprocessing(cfg, train=True))
    evaluation = cls_preprocessing(cfg, train=False)
    # the validation chain's deterministic steps, cut where the training chain's random ones begin (when
    # earlier: the image formation randomised on HU), so both chains resume from the same entry
    plain = cache_plan("cls", evaluation[: len(training.specs)])
    return {True: training if _aux(cfg) else plain, False: plain}


def cache_items(kind: str, cfg: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Data items whose entries :func:`cache_plans` builds: the segmenter's (a voxel label each);
    the classifier's with the voxel label where the auxiliary head is on and the study has one.

    Examples
    --------
    >>> from ichct.pipeline.models.config import resolve_config
    >>> entry = {"image": "ct.nii.gz", "label": "lab.nii.gz", "slice_labels": [[0] * 6]}
    >>> sorted(cache_items("cls", resolve_config("cls"), [entry])[0])
    ['ct', 'image', 'label', 'patient_key', 'slice_labels']
    """
    if kind == "seg":
        return seg_items(entries, int(cfg["num_classes"]))
    items = cls_items(entries, False)
    if _aux(cfg):
        for item, entry in zip(items, entries):
            if entry.get("label"):
                item["label"] = entry["label"]
    return items


def disk_dataset(kind: str, cfg: Mapping[str, Any], entries: Sequence[Mapping[str, Any]],
                 items: Sequence[Mapping[str, Any]], transform: Any, cache_dir: str | Path,
                 drop_keys: Sequence[str] = ()) -> DiskCacheDataset:
    """A :class:`~ichct.pipeline.preprocess.cache.DiskCacheDataset` of ``items`` (made from ``entries``)."""
    return DiskCacheDataset(items, [entry_name(e) for e in entries], transform, cache_plans(kind, cfg), cache_dir,
                            drop_keys=drop_keys)
