"""Datasets and MONAI transforms of the training stage (segmentation and slice classification).

Deterministic steps (DICOM decoding, RAS, resampling, brain crop, windowing) run once per study
inside a :class:`monai.data.CacheDataset`; the random augmentations after them run every epoch:
flips across the mid-sagittal plane (RAS axis 0 for seg; the in-plane column axis for cls, which
is left-right for axial head CT), a small affine, an intensity shift and Gaussian noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import (
    Compose,
    ConcatItemsd,
    CopyItemsd,
    DeleteItemsd,
    EnsureTyped,
    Lambdad,
    MapTransform,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandShiftIntensityd,
    Resized,
    SpatialPadd,
)

from ichct.errors import InputError
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.models.config import config_windows, saved_run_config
from ichct.transforms import HUWindowd, LoadCTd, MultiWindowd, StripSkulld, ct_preprocess


def _ct_vector(entry: Mapping[str, Any]) -> np.ndarray:
    flags = entry.get("ct_labels") or {}
    return np.array([float(flags.get(s, -1)) for s in LABEL_NAMES], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------


def seg_items(entries: Sequence[Mapping[str, Any]], num_classes: int) -> list[dict[str, Any]]:
    """Manifest entries -> seg data dicts (entries need a voxel ``label``)."""
    items = []
    for e in entries:
        if not e.get("label"):
            raise InputError(f"seg training needs a voxel label for every study; {e.get('study_uid')} has none")
        if num_classes == 6 and e.get("label_values", "ichct") != "ichct":
            raise InputError(f"6-class training needs subtype labels; {e.get('study_uid')} has {e.get('label_values')!r}")
        items.append({"image": e["image"], "label": e["label"], "ct": _ct_vector(e),
                      "patient_key": e.get("patient_key", "")})
    return items


def _label_map(num_classes: int):
    if num_classes == 2:
        return lambda x: (x > 0).to(torch.float32)
    return lambda x: x.clamp(0, 5).to(torch.float32)


def _augmentations(aug: Mapping[str, Any], keys: Sequence[str]) -> list:
    """Training augmentations shared by both models: left-right flip (axis 0 is the patient's
    left-right axis after RAS), small in-plane rotation and scaling, intensity shift, noise.
    The first key is the image (bilinear), a second one a label (nearest)."""
    rot = math.radians(float(aug["rotate_deg"]))
    s = float(aug["scale"])
    return [
        RandFlipd(keys, prob=float(aug["flip_prob"]), spatial_axis=0),
        RandAffined(keys, prob=float(aug["affine_prob"]), rotate_range=(0.0, 0.0, rot),
                    scale_range=(s, s, 0.0), mode=("bilinear", "nearest")[: len(keys)], padding_mode="zeros"),
        RandShiftIntensityd("image", offsets=float(aug["shift"]), prob=float(aug["shift_prob"])),
        RandGaussianNoised("image", std=float(aug["noise_std"]), prob=float(aug["noise_prob"])),
    ]


def seg_transforms(cfg: Mapping[str, Any], train: bool) -> Compose:
    keys = ("image", "label")
    patch = [int(p) for p in cfg["patch"]]
    steps: list[Any] = [
        *ct_preprocess(("image",), ("label",), spacing_mm=cfg["spacing_mm"], windows=config_windows(cfg),
                       crop=cfg["crop"], allow_missing_keys=False).transforms,
        Lambdad("label", _label_map(int(cfg["num_classes"]))),
        SpatialPadd(keys, spatial_size=patch),
        EnsureTyped(keys, dtype=torch.float32, track_meta=False),
    ]
    if train:
        steps += [
            RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch, pos=float(cfg["pos_neg_ratio"]),
                                   neg=1.0, num_samples=int(cfg["samples_per_volume"]), image_key="image",
                                   image_threshold=0.0),
            *_augmentations(cfg["augment"], keys),
        ]
    return Compose(steps)


# --------------------------------------------------------------------------------------------
# Slice classification
# --------------------------------------------------------------------------------------------


def cls_items(entries: Sequence[Mapping[str, Any]], voxel_labels: bool = False) -> list[dict[str, Any]]:
    """Manifest entries -> cls data dicts (entries need ``slice_labels``; with ``voxel_labels``
    also a voxel ``label`` for the auxiliary segmentation head)."""
    items = []
    for e in entries:
        sl = e.get("slice_labels")
        if not sl:
            raise InputError(f"cls training needs slice_labels; {e.get('study_uid')} has none")
        item = {"image": e["image"], "slice_labels": np.asarray(sl, dtype=np.float32),
                "ct": _ct_vector(e), "patient_key": e.get("patient_key", "")}
        if voxel_labels:
            if not e.get("label"):
                raise InputError(f"the auxiliary segmentation head (network.aux_seg) needs a voxel label for every "
                                 f"study; {e.get('study_uid')} has none (set network.aux_seg to false)")
            item["label"] = e["label"]
        items.append(item)
    return items


def _source(img: Any) -> str:
    """The file a loaded image came from (its MetaTensor's ``filename_or_obj``), for messages."""
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or "a study")


class CheckSliceCountd(MapTransform):
    """Refuse a study whose slice count differs from its slice-label rows (labels would misalign)."""

    def __init__(self) -> None:
        super().__init__(("image",))

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        n_img, n_lab = int(d["image"].shape[-1]), int(len(d["slice_labels"]))
        if n_img != n_lab:
            raise InputError(_source(d["image"]), f"{n_img} slices but {n_lab} slice-label rows in the manifest")
        return d


class InPlaneHeadCropd(MapTransform):
    """Crop the in-plane axes (0, 1) of a HU volume (and ``label``) to the brain/head box of all slices.

    The slice axis is kept whole, so slice ``k`` of the output is still slice ``k`` of the study
    (its slice-label row). An empty mask leaves the image as it is.
    """

    def __init__(self, mode: str = "brain", margin_mm: float = 10.0) -> None:
        super().__init__(("image", "label"), allow_missing_keys=True)
        from ichct.transforms.crop import CropHead

        self.cropper = CropHead(mode=mode, margin_mm=margin_mm)  # type: ignore[arg-type]

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        img = d["image"]
        start, end = self.cropper.compute_bounding_box(img)
        x0, y0 = (max(0, int(v)) for v in start[:2])
        x1, y1 = (min(int(img.shape[i + 1]), int(end[i])) for i in range(2))
        if x1 - x0 >= 8 and y1 - y0 >= 8:
            for k in self.key_iterator(d):
                d[k] = d[k][:, x0:x1, y0:y1, :]
        return d


class CheckSameGridd(MapTransform):
    """Refuse a voxel label whose grid differs from the image's (the aux-seg target would misalign)."""

    def __init__(self) -> None:
        super().__init__(("image", "label"))

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        if tuple(d["image"].shape[1:]) != tuple(d["label"].shape[1:]):
            raise InputError(_source(d["label"]), f"label grid {tuple(d['label'].shape[1:])} differs from the grid "
                                                  f"{tuple(d['image'].shape[1:])} of its image {_source(d['image'])}")
        return d


#: Level and width (HU) of the skull-stripped channel (``stripped_brain_channel``): the brain window.
STRIPPED_CHANNEL_WINDOW = (40.0, 80.0)


def _stripped_brain_channel() -> list[Any]:
    """Steps that append a 4th channel: the brain window of the image with everything outside the
    intracranial space set to air (:class:`~ichct.transforms.StripSkull`). In the brain window
    acute blood and bone are both white, so a one-pixel subdural rim looks like a thicker skull;
    in this channel it is a white line against black, while the other channels keep the skull."""
    level, width = STRIPPED_CHANNEL_WINDOW
    return [CopyItemsd("image", names="stripped"), StripSkulld("stripped"),
            HUWindowd("stripped", level=level, width=width)]


def cls_transforms(cfg: Mapping[str, Any], train: bool, *, slice_labels: bool = True) -> Compose:
    """Slice-classification transforms of a study.

    Parameters
    ----------
    cfg
        The classifier's training config (one saved by an older run is completed by
        :func:`~ichct.pipeline.models.config.saved_run_config`: no ``stripped_brain_channel`` and
        no ``crop`` mean neither).
    train
        Training (random augmentations; the blood mask ``label`` too when ``network.aux_seg``
        is on, binary, with the image's crop, resize and augmentation) or evaluation.
    slice_labels
        The items carry ``slice_labels`` (training and validation): their row count is checked
        against the slices. False for inference, where a study has no labels.

    Returns
    -------
    Compose
        Load, crop, window (one channel per HU window, plus the skull-stripped brain window with
        ``stripped_brain_channel``), resize in-plane to ``in_plane``, [augment].
    """
    cfg = saved_run_config("cls", cfg)
    h, w = (int(v) for v in cfg["in_plane"])
    crop = cfg["crop"]
    aux = train and bool(dict(cfg["network"]).get("aux_seg", False))
    stripped = bool(cfg["stripped_brain_channel"])
    keys: tuple[str, ...] = ("image", "label") if aux else ("image",)
    steps: list[Any] = [
        LoadCTd(keys),
        *([CheckSliceCountd()] if slice_labels else []),
        *([InPlaneHeadCropd(str(crop))] if crop else []),
        *(_stripped_brain_channel() if stripped else []),
        MultiWindowd("image", windows=config_windows(cfg)),
        *([ConcatItemsd(["image", "stripped"], "image"), DeleteItemsd("stripped")] if stripped else []),
        *([Lambdad("label", _label_map(2)), CheckSameGridd()] if aux else []),
        Resized(keys, spatial_size=(h, w, -1), mode=("trilinear", "nearest")[: len(keys)]),
        EnsureTyped(keys, dtype=torch.float32, track_meta=False),
    ]
    if train:
        steps += _augmentations(cfg["augment"], keys)
    return Compose(steps)


def cls_collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pad studies of different slice counts; slice labels are padded with -1 (ignored)."""
    from ichct.networks import pad_slice_batch

    image, lengths = pad_slice_batch([torch.as_tensor(i["image"]) for i in items])
    labels, _ = pad_slice_batch([torch.as_tensor(i["slice_labels"]) for i in items], pad_value=-1.0, axis=0)
    out = {"image": image, "lengths": lengths, "slice_labels": labels,
            "ct": torch.stack([torch.as_tensor(i["ct"]) for i in items]),
            "patient_key": [i["patient_key"] for i in items]}
    if all("label" in i for i in items):
        out["label"] = pad_slice_batch([torch.as_tensor(i["label"]) for i in items])[0]
    return out


def pos_weight_auto(items: Sequence[Mapping[str, Any]], max_weight: float) -> list[float]:
    """neg/pos per label over the known training slice labels, clipped to [1, max_weight]."""
    lab = np.concatenate([i["slice_labels"] for i in items], axis=0)
    out = []
    for j in range(lab.shape[1]):
        col = lab[:, j]
        pos, neg = float((col == 1).sum()), float((col == 0).sum())
        out.append(float(np.clip(neg / pos, 1.0, max_weight)) if pos > 0 else 1.0)
    return out


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def make_loaders(kind: str, cfg: Mapping[str, Any], train_entries, val_entries):
    """(train_ds, train_loader, val_loader, train_items)."""
    if kind == "seg":
        tr_items, va_items = seg_items(train_entries, cfg["num_classes"]), seg_items(val_entries, cfg["num_classes"])
        tr_tf, va_tf, collate = seg_transforms(cfg, True), seg_transforms(cfg, False), None
        val_bs = 1
    else:
        aux = bool(dict(cfg["network"]).get("aux_seg", False))
        tr_items, va_items = cls_items(train_entries, aux), cls_items(val_entries, False)
        tr_tf, va_tf, collate = cls_transforms(cfg, True), cls_transforms(cfg, False), cls_collate
        val_bs = 1
    rate, nw = float(cfg["cache_rate"]), int(cfg["num_workers"])
    train_ds = CacheDataset(tr_items, tr_tf, cache_rate=rate, num_workers=None, progress=False)
    val_ds = CacheDataset(va_items, va_tf, cache_rate=rate, num_workers=None, progress=False)
    kw: dict[str, Any] = {"num_workers": nw}
    if collate is not None:
        kw["collate_fn"] = collate
    train_loader = DataLoader(train_ds, batch_size=int(cfg["batch_size"]), shuffle=True, drop_last=False, **kw)
    val_loader = DataLoader(val_ds, batch_size=val_bs, shuffle=False, **kw)
    return train_ds, train_loader, val_loader, tr_items
