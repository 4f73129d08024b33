"""Datasets and MONAI transforms of the training stage (segmentation and slice classification).

Every model's transforms are written down once, as MONAI config entries ("specs":
``{"_target_": name, **arguments}``): :func:`seg_preprocessing` and :func:`cls_preprocessing`
turn a run's config into that list. Training (:func:`seg_transforms`, :func:`cls_transforms`),
inference (:mod:`ichct.pipeline.models.inference`) and the model bundles' configs
(:mod:`ichct.pipeline.bundle.configs`, which write the same dicts into ``inference.json``,
``train.json`` and ``evaluate.json``) all build their ``Compose`` from it (:func:`compose`, through
MONAI's own ``ConfigParser``), so a bundle preprocesses exactly as its model was trained.

Deterministic steps (DICOM decoding, RAS, resampling, brain crop, windowing) run once per study
inside a :class:`monai.data.CacheDataset` (config ``cache: "ram"``, the default) or once per study
and preprocessing config on disk (``cache: "disk"``, :mod:`ichct.pipeline.preprocess`); the random augmentations after them run every epoch:
flips across the mid-sagittal plane (RAS axis 0 for seg; the in-plane column axis for cls, which
is left-right for axial head CT), a small affine, the domain randomisation steps of config ``domain``
(:func:`domain_randomisation`; none by default), an intensity shift and Gaussian noise. The
domain randomisation of the image formation (:func:`formation_randomisation`: kernel tails, slice
thickness, blur, sharpening) needs HU, so when it is on it runs before the windows, and the cache
then ends at the last HU step before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose

from ichct.errors import InputError
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.transforms.crop import InPlaneHeadCropd  # noqa: F401 - its home is ichct.transforms; importable here as before
from ichct.transforms.labels import CheckSameGridd, CheckSliceCountd  # noqa: F401 - idem

#: Level and width (HU) of the skull-stripped channel (``stripped_brain_channel``): the brain window.
STRIPPED_CHANNEL_WINDOW = (40.0, 80.0)

#: Margin (mm) around the brain or head box of the crops.
CROP_MARGIN_MM = 10.0


def _ct_vector(entry: Mapping[str, Any]) -> np.ndarray:
    flags = entry.get("ct_labels") or {}
    return np.array([float(flags.get(s, -1)) for s in LABEL_NAMES], dtype=np.float32)


def spec(target: str, **arguments: Any) -> dict[str, Any]:
    """One transform as a MONAI config entry: ``{"_target_": target, **arguments}``.

    ``target`` is a MONAI component name (``"SpatialPadd"``) or a dotted path
    (``"ichct.transforms.LoadCTd"``); values are plain JSON, or ``"$..."`` expressions.

    Examples
    --------
    >>> spec("SpatialPadd", keys="image", spatial_size=[64, 64, 16])
    {'_target_': 'SpatialPadd', 'keys': 'image', 'spatial_size': [64, 64, 16]}
    """
    return {"_target_": target, **arguments}


def _keys(keys: Sequence[str]) -> str | list[str]:
    """``keys`` as a config writes them: one key as a string, several as a list."""
    return keys[0] if len(keys) == 1 else list(keys)


def compose(specs: Sequence[Mapping[str, Any]]) -> Compose:
    """The ``Compose`` of a list of transform specs, instantiated by MONAI's ``ConfigParser`` as a bundle does.

    Examples
    --------
    >>> pre = compose([spec("ichct.transforms.HUWindowd", keys="image", level=40.0, width=80.0),
    ...                spec("EnsureTyped", keys="image", dtype="$torch.float32")])
    >>> [type(t).__name__ for t in pre.transforms]
    ['HUWindowd', 'EnsureTyped']
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser({"transforms": {"_target_": "Compose", "transforms": [dict(s) for s in specs]}})
    return parser.get_parsed_content("transforms")


def _windows(cfg: Mapping[str, Any]) -> dict[str, list[float]]:
    """The run's HU windows as JSON: ``{name: [level, width]}``, in channel order."""
    from ichct.pipeline.models.config import config_windows

    return {str(name): [float(level), float(width)] for name, (level, width) in config_windows(cfg).items()}


def _augmentations(aug: Mapping[str, Any], keys: Sequence[str],
                   domain: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Training augmentations shared by both models: left-right flip (axis 0 is the patient's
    left-right axis after RAS), small in-plane rotation and scaling, then the ``domain`` steps
    (:func:`domain_randomisation`), then intensity shift and noise.
    The first key is the image (bilinear), a second one a label (nearest)."""
    rot = math.radians(float(aug["rotate_deg"]))
    s = float(aug["scale"])
    return [
        spec("RandFlipd", keys=_keys(keys), prob=float(aug["flip_prob"]), spatial_axis=0),
        spec("RandAffined", keys=_keys(keys), prob=float(aug["affine_prob"]), rotate_range=[0.0, 0.0, rot],
             scale_range=[s, s, 0.0], mode=_keys(["bilinear", "nearest"][: len(keys)]), padding_mode="zeros"),
        *domain,
        spec("RandShiftIntensityd", keys="image", offsets=float(aug["shift"]), prob=float(aug["shift_prob"])),
        spec("RandGaussianNoised", keys="image", std=float(aug["noise_std"]), prob=float(aug["noise_prob"])),
    ]


def domain_randomisation(domain: Mapping[str, Mapping[str, Any]] | None,
                         widths_hu: Sequence[float]) -> list[dict[str, Any]]:
    """The domain randomisation steps on the windowed image, from a training config's ``domain`` section.

    Only effects with ``prob > 0`` are listed, in this order: HU offset and HU noise (on the clean
    windowed image, where a saturated voxel is still exactly 0 or 1; :mod:`ichct.transforms.domain`),
    bias field and gamma (multiplicative, on the windowed intensities). All act on ``image`` only.
    The image-formation effects (kernel tails, slice thickness, blur, sharpening) act on HU before
    the windows: :func:`formation_randomisation`.

    Parameters
    ----------
    domain
        ``{effect: {"prob": p, ...ranges}}`` (config ``domain``; a missing effect is off, a missing
        key takes its default, None means none).
    widths_hu
        The window width (HU) of each image channel, in channel order (for the HU steps).

    Returns
    -------
    list of dict
        MONAI config entries (``RandBiasFieldd``, ``RandAdjustContrastd`` and ichct's
        ``RandHUOffsetd``, ``RandHUNoised``).

    Examples
    --------
    >>> domain_randomisation(None, [80.0])
    []
    >>> [s["_target_"] for s in domain_randomisation({"hu_offset": {"prob": 0.5}, "blur": {"prob": 0.2}}, [80.0])]
    ['ichct.transforms.RandHUOffsetd']
    """
    widths = [float(w) for w in widths_hu]
    steps = {
        "hu_offset": lambda e: spec("ichct.transforms.RandHUOffsetd", keys="image", widths_hu=widths,
                                    offset_hu=_floats(e["offset_hu"]), prob=e["prob"]),
        "noise": lambda e: spec("ichct.transforms.RandHUNoised", keys="image", widths_hu=widths,
                                std_hu=_floats(e["std_hu"]), texture_sigma=_floats(e["texture_sigma"]), prob=e["prob"]),
        "bias_field": lambda e: spec("RandBiasFieldd", keys="image", degree=3, coeff_range=_floats(e["coeff"]),
                                     prob=e["prob"]),
        "contrast": lambda e: spec("RandAdjustContrastd", keys="image", gamma=_floats(e["gamma"]), prob=e["prob"]),
    }
    return _drawn_steps(domain, steps)


def formation_randomisation(domain: Mapping[str, Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The domain randomisation steps on HU, before the windows: another scanner's image formation.

    Only effects with ``prob > 0`` are listed, in this order: kernel tails (a halo next to bone,
    :mod:`ichct.transforms.kernel_tail`), slice thickness (bone's partial volume along z), blur and
    sharpening (the kernel's core). They need HU: in a window that clipped bone to its top, the
    bright band a sharper kernel or a thicker slice makes under the inner table is lost. All act
    on ``image`` only, in-plane filters on the first two spatial axes, the slice axis last.

    Examples
    --------
    >>> [s["_target_"] for s in formation_randomisation({"psf_tail": {"prob": 0.3}, "blur": {"prob": 0.2}})]
    ['ichct.transforms.RandPSFTaild', 'RandGaussianSmoothd']
    """
    none = [0.0, 0.0]
    steps = {
        "psf_tail": lambda e: spec("ichct.transforms.RandPSFTaild", keys="image", fraction=_floats(e["fraction"]),
                                   length_mm=_floats(e["length_mm"]), prob=e["prob"]),
        "slice_thickness": lambda e: spec("ichct.transforms.RandSliceThicknessd", keys="image",
                                          factor=_floats(e["factor"]), prob=e["prob"]),
        "blur": lambda e: spec("RandGaussianSmoothd", keys="image", sigma_x=_floats(e["sigma"]),
                               sigma_y=_floats(e["sigma"]), sigma_z=none, prob=e["prob"]),
        "sharpen": lambda e: spec("RandGaussianSharpend", keys="image", sigma1_x=none, sigma1_y=none, sigma1_z=none,
                                  sigma2_x=_floats(e["sigma"]), sigma2_y=_floats(e["sigma"]), sigma2_z=0.0,
                                  alpha=_floats(e["alpha"]), prob=e["prob"]),
    }
    return _drawn_steps(domain, steps)


def _drawn_steps(domain: Mapping[str, Mapping[str, Any]] | None,
                 makers: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> list[dict[str, Any]]:
    """The specs of the effects in ``makers`` whose probability is > 0, in ``makers``' order.

    An effect missing from ``domain`` (or ``domain`` None: a run saved before it existed) is off,
    since the defaults are on; a key missing from a given effect takes its default."""
    from ichct.pipeline.models.config import DEFAULTS

    given = dict(domain or {})
    out = []
    for name, make in makers.items():
        if name not in given:
            continue
        effect = {**DEFAULTS["seg"]["domain"][name], **dict(given[name] or {})}
        if float(effect["prob"]) > 0:
            out.append(make({**effect, "prob": float(effect["prob"])}))
    return out


def _floats(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values]


def _window_widths(cfg: Mapping[str, Any], stripped: bool = False) -> list[float]:
    """The HU width of each image channel: the run's windows [, the skull-stripped brain window]."""
    return [w for _, w in _windows(cfg).values()] + ([STRIPPED_CHANNEL_WINDOW[1]] if stripped else [])


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


def brain_reference(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The brain-referenced HU step of a config (``brain_reference_hu``; none when it is null or absent).

    Examples
    --------
    >>> brain_reference({"brain_reference_hu": 30.0})[0]["_target_"]
    'ichct.transforms.ReferenceBrainHUd'
    >>> brain_reference({"brain_reference_hu": None}), brain_reference({})
    ([], [])
    """
    level = cfg.get("brain_reference_hu")
    if level is None:
        return []
    return [spec("ichct.transforms.ReferenceBrainHUd", keys="image", reference_hu=float(level))]


def seg_preprocessing(cfg: Mapping[str, Any], *, train: bool, labels: bool = True) -> list[dict[str, Any]]:
    """The segmenter's transforms as MONAI config specs (the one definition of its preprocessing).

    Parameters
    ----------
    cfg
        The segmenter's training config (completed by
        :func:`~ichct.pipeline.models.config.saved_run_config`).
    train
        Training: random patches (``RandCropByPosNegLabeld``) and augmentations after the
        deterministic steps; needs ``labels``.
    labels
        The items carry a voxel ``label`` (training and validation), transformed with the image
        and mapped to the model's classes (:class:`~ichct.transforms.BloodLabelsd`); the output
        is then plain tensors. Without labels (inference) the image stays a ``MetaTensor``, so
        ``Invertd`` maps a prediction back to the input's grid.

    Returns
    -------
    list of dict
        Load, RAS, resample to ``spacing_mm``, ``crop``, the HU windows, pad to ``patch``, float32 [, train].

    Examples
    --------
    >>> from ichct.pipeline.models.config import resolve_config
    >>> [s["_target_"].rsplit(".", 1)[-1] for s in seg_preprocessing(resolve_config("seg"), train=False, labels=False)]
    ['LoadCTd', 'Orientationd', 'ResampleToSpacingd', 'CropHeadd', 'MultiWindowd', 'SpatialPadd', 'EnsureTyped']
    """
    from ichct.pipeline.models.config import saved_run_config

    if train and not labels:
        raise ValueError("seg training transforms need labels")
    cfg = saved_run_config("seg", cfg)
    keys = ["image", "label"] if labels else ["image"]
    patch = [int(p) for p in cfg["patch"]]
    steps = [
        spec("ichct.transforms.LoadCTd", keys=_keys(keys)),
        *brain_reference(cfg),
        spec("Orientationd", keys=_keys(keys), axcodes="RAS", labels=None),  # ichct.transforms.ToRASd, as MONAI writes it
        spec("ichct.transforms.ResampleToSpacingd", keys="image", spacing_mm=[float(s) for s in cfg["spacing_mm"]],
             **({"label_keys": "label"} if labels else {})),
        *([spec("ichct.transforms.CropHeadd", keys=_keys(keys), source_key="image", mode=str(cfg["crop"]),
                margin_mm=CROP_MARGIN_MM)] if cfg["crop"] else []),
        *(formation_randomisation(cfg.get("domain")) if train else []),
        spec("ichct.transforms.MultiWindowd", keys="image", windows=_windows(cfg)),
        *([spec("ichct.transforms.BloodLabelsd", keys="label", num_classes=int(cfg["num_classes"]))] if labels else []),
        spec("SpatialPadd", keys=_keys(keys), spatial_size=patch),
        spec("EnsureTyped", keys=_keys(keys), dtype="$torch.float32", **({"track_meta": False} if labels else {})),
    ]
    if train:
        steps += [
            spec("RandCropByPosNegLabeld", keys=_keys(keys), label_key="label", spatial_size=patch,
                 pos=float(cfg["pos_neg_ratio"]), neg=1.0, num_samples=int(cfg["samples_per_volume"]),
                 image_key="image", image_threshold=0.0),
            *_augmentations(cfg["augment"], keys, domain_randomisation(cfg.get("domain"), _window_widths(cfg))),
        ]
    return steps


def seg_transforms(cfg: Mapping[str, Any], train: bool) -> Compose:
    """Segmentation transforms of a labelled study (training or validation): :func:`seg_preprocessing`."""
    return compose(seg_preprocessing(cfg, train=train))


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


def _stripped_brain_channel(formation: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Steps that make the 4th channel: the brain window of the image with everything outside the
    intracranial space set to air (:class:`~ichct.transforms.StripSkull`). In the brain window
    acute blood and bone are both white, so a one-pixel subdural rim looks like a thicker skull;
    in this channel it is a white line against black, while the other channels keep the skull.

    ``formation`` (training: :func:`formation_randomisation`) runs on the HU image between the strip
    (cached) and the window; :class:`~ichct.transforms.ReapplyStripd` then carries its change into
    the stripped copy, so the skull mask is not recomputed every epoch."""
    level, width = STRIPPED_CHANNEL_WINDOW  # ichct.transforms.HUWindowd(level, width), as MONAI writes it:
    changed = [*formation, spec("ichct.transforms.ReapplyStripd", keys="stripped", source_key="image")] if formation else []
    return [spec("CopyItemsd", keys="image", names="stripped"), spec("ichct.transforms.StripSkulld", keys="stripped"),
            *changed,
            spec("ScaleIntensityRanged", keys="stripped", a_min=level - width / 2, a_max=level + width / 2, b_min=0.0,
                 b_max=1.0, clip=True)]


def cls_preprocessing(cfg: Mapping[str, Any], *, train: bool, slice_labels: bool = True) -> list[dict[str, Any]]:
    """The slice classifier's transforms as MONAI config specs (the one definition of its preprocessing).

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
    list of dict
        Load, crop in-plane, window (one channel per HU window, plus the skull-stripped brain
        window with ``stripped_brain_channel``), resize in-plane to ``in_plane``, [augment].

    Examples
    --------
    >>> from ichct.pipeline.models.config import resolve_config
    >>> [s["_target_"].rsplit(".", 1)[-1] for s in cls_preprocessing(resolve_config("cls"), train=False)][:4]
    ['LoadCTd', 'CheckSliceCountd', 'InPlaneHeadCropd', 'CopyItemsd']
    """
    from ichct.pipeline.models.config import saved_run_config

    cfg = saved_run_config("cls", cfg)
    h, w = (int(v) for v in cfg["in_plane"])
    crop = cfg["crop"]
    aux = train and bool(dict(cfg["network"]).get("aux_seg", False))
    stripped = bool(cfg["stripped_brain_channel"])
    keys = ["image", "label"] if aux else ["image"]
    formation = formation_randomisation(cfg.get("domain")) if train else []
    steps = [
        spec("ichct.transforms.LoadCTd", keys=_keys(keys)),
        *brain_reference(cfg),
        *([spec("ichct.transforms.CheckSliceCountd", keys="image", labels_key="slice_labels")] if slice_labels else []),
        *([spec("ichct.transforms.InPlaneHeadCropd", keys=_keys(keys), source_key="image", mode=str(crop),
                margin_mm=CROP_MARGIN_MM)] if crop else []),
        *(_stripped_brain_channel(formation) if stripped else formation),
        spec("ichct.transforms.MultiWindowd", keys="image", windows=_windows(cfg)),
        *([spec("ConcatItemsd", keys=["image", "stripped"], name="image"), spec("DeleteItemsd", keys="stripped")]
          if stripped else []),
        *([spec("ichct.transforms.BloodLabelsd", keys="label", num_classes=2),
           spec("ichct.transforms.CheckSameGridd", keys=["image", "label"])] if aux else []),
        spec("Resized", keys=_keys(keys), spatial_size=[h, w, -1], mode=_keys(["trilinear", "nearest"][: len(keys)])),
        spec("EnsureTyped", keys=_keys(keys), dtype="$torch.float32", track_meta=False),
    ]
    if train:
        steps += _augmentations(cfg["augment"], keys, domain_randomisation(cfg.get("domain"),
                                                                            _window_widths(cfg, stripped)))
    return steps


def cls_transforms(cfg: Mapping[str, Any], train: bool, *, slice_labels: bool = True) -> Compose:
    """Slice-classification transforms of a study: :func:`cls_preprocessing` (see it for the parameters)."""
    return compose(cls_preprocessing(cfg, train=train, slice_labels=slice_labels))


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


def make_loaders(kind: str, cfg: Mapping[str, Any], train_entries: Sequence[Mapping[str, Any]],
                 val_entries: Sequence[Mapping[str, Any]]) -> tuple[Any, DataLoader, DataLoader, list[dict[str, Any]]]:
    """The training and validation data of a run: ``(train_ds, train_loader, val_loader, train_items)``.

    Config ``cache`` chooses where the deterministic preprocessing is kept: ``"ram"`` (default) a
    MONAI ``CacheDataset`` (every study in memory, ``cache_rate``); ``"disk"`` the persistent cache
    in ``cache_dir`` (:mod:`ichct.pipeline.preprocess`), streamed one study per ``__getitem__``
    (entries missing there are built on demand), so memory does not grow with the number of studies.
    Either way the loaders' ``dataset`` is a map-style dataset and ``train_ds.transform`` the full
    training ``Compose`` (whose random steps' RNG states the checkpoints keep).
    """
    if kind == "seg":
        tr_items, va_items = seg_items(train_entries, cfg["num_classes"]), seg_items(val_entries, cfg["num_classes"])
        tr_tf, va_tf, collate = seg_transforms(cfg, True), seg_transforms(cfg, False), None
    else:
        aux = bool(dict(cfg["network"]).get("aux_seg", False))
        tr_items, va_items = cls_items(train_entries, aux), cls_items(val_entries, False)
        tr_tf, va_tf, collate = cls_transforms(cfg, True), cls_transforms(cfg, False), cls_collate
    if cfg.get("cache", "ram") == "disk":
        from ichct.pipeline.preprocess.plans import cache_items, disk_dataset

        train_ds: Any = disk_dataset(kind, cfg, train_entries, tr_items, tr_tf, cfg["cache_dir"])
        val_ds: Any = disk_dataset(kind, cfg, val_entries, cache_items(kind, cfg, val_entries), va_tf,
                                   cfg["cache_dir"], drop_keys=("label",) if kind == "cls" else ())
    else:
        rate = float(cfg["cache_rate"])
        train_ds = CacheDataset(tr_items, tr_tf, cache_rate=rate, num_workers=None, progress=False)
        val_ds = CacheDataset(va_items, va_tf, cache_rate=rate, num_workers=None, progress=False)
    kw: dict[str, Any] = {"num_workers": int(cfg["num_workers"])}
    if collate is not None:
        kw["collate_fn"] = collate
    train_loader = DataLoader(train_ds, batch_size=int(cfg["batch_size"]), shuffle=True, drop_last=False, **kw)
    val_loader = DataLoader(val_ds, batch_size=1, shuffle=False, **kw)
    return train_ds, train_loader, val_loader, tr_items
