"""A bundle's explicit preprocessing gives the tensors its model was trained and evaluated with.

The bundles' configs list every transform as its own entry; training, ``ichct predict`` and the
configs build their ``Compose`` from one list of specs (:mod:`ichct.pipeline.models.data`). Here the
same study goes through

* the committed bundles' ``inference.json`` / ``train.json`` entries, parsed by MONAI's ``ConfigParser``;
* the configs published before with the same weights (0.2.0: an opaque ``ichct_config`` handed to
  ichct's builders);
* ichct's own builders (``seg_eval_transforms``, ``seg_transforms``, ``cls_transforms``, ...);
* the chains as ichct built them before the specs existed, written out here transform by transform;

and every output is the same tensor, bit for bit (random training transforms under one seed too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from eval_helpers import eval_setup
from monai.bundle import ConfigParser
from monai.transforms import (
    Compose,
    ConcatItemsd,
    CopyItemsd,
    DeleteItemsd,
    EnsureTyped,
    Lambdad,
    Resized,
    SpatialPadd,
)

from ichct.pipeline.models.config import config_windows, saved_run_config
from ichct.pipeline.models.data import cls_transforms, seg_transforms
from ichct.pipeline.models.inference import cls_eval_transforms, seg_eval_transforms
from ichct.transforms import (HUWindowd, InPlaneHeadCropd, LoadCTd, MultiWindowd, ReferenceBrainHUd, StripSkulld,
                              ct_preprocess)

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = Path(__file__).resolve().parent / "data" / "published_bundles"
NAMES = {"seg": "ich_ct_segmentation", "cls": "ich_ct_classification"}


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def studies(setup) -> list[dict[str, Any]]:
    from ichct.pipeline.manifests import load_manifest

    entries = load_manifest(setup["manifest"], "test", check=False)
    return [next(e for e in entries if e["ct_labels"]["any"] == 1), next(e for e in entries if e["ct_labels"]["any"] == 0)]


def _run_config(kind: str) -> dict[str, Any]:
    return json.loads((REPO / "bundles" / NAMES[kind] / "models" / "run_config.json").read_text())


def _parsed(path: Path, id_: str) -> Compose:
    parser = ConfigParser()
    parser.read_config(str(path))
    parser["bundle_root"] = str(path.parent.parent)
    return parser.get_parsed_content(id_)


def _equal(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...]) -> None:
    for k in keys:
        x, y = a[k], b[k]
        assert type(x) is type(y) and x.shape == y.shape and x.dtype == y.dtype, (k, x.shape, y.shape)
        assert torch.equal(torch.as_tensor(x).as_subclass(torch.Tensor), torch.as_tensor(y).as_subclass(torch.Tensor)), k
        if hasattr(x, "affine"):
            assert torch.equal(x.affine, y.affine), k


# --------------------------------------------------------------------------------------------
# the chains as ichct built them before the specs (pipeline/models/data.py and inference.py, 0.2.0)
# --------------------------------------------------------------------------------------------


def _referenced(steps: list[Any], cfg: dict[str, Any]) -> list[Any]:
    """``steps`` (a loader first) with the brain-referenced HU step after the loader when ``cfg`` sets it
    (added after the specs: the committed bundles read images so since 0.8.0 / 0.6.0)."""
    level = cfg.get("brain_reference_hu")
    return steps if level is None else [steps[0], ReferenceBrainHUd("image", reference_hu=float(level)), *steps[1:]]


def _old_seg(cfg: dict[str, Any], labels: bool) -> Compose:
    keys = ("image", "label") if labels else ("image",)
    pre = ct_preprocess(("image",), keys[1:], spacing_mm=cfg["spacing_mm"], windows=config_windows(cfg),
                        crop=cfg["crop"], allow_missing_keys=False)
    pre = Compose(_referenced(list(pre.transforms), cfg))
    if not labels:
        return Compose([*pre.transforms, SpatialPadd("image", spatial_size=[int(p) for p in cfg["patch"]]),
                        EnsureTyped("image", dtype=torch.float32)])
    binary = int(cfg["num_classes"]) == 2
    return Compose([*pre.transforms,
                    Lambdad("label", (lambda x: (x > 0).to(torch.float32)) if binary
                            else (lambda x: x.clamp(0, 5).to(torch.float32))),
                    SpatialPadd(keys, spatial_size=[int(p) for p in cfg["patch"]]),
                    EnsureTyped(keys, dtype=torch.float32, track_meta=False)])


def _old_cls_eval(cfg: dict[str, Any]) -> Compose:
    h, w = (int(v) for v in cfg["in_plane"])
    steps: list[Any] = [LoadCTd(("image",))]
    if cfg["crop"]:
        steps.append(InPlaneHeadCropd(["image", "label"], mode=str(cfg["crop"]), allow_missing_keys=True))
    if cfg["stripped_brain_channel"]:
        steps += [CopyItemsd("image", names="stripped"), StripSkulld("stripped"),
                  HUWindowd("stripped", level=40.0, width=80.0)]
    steps.append(MultiWindowd("image", windows=config_windows(cfg)))
    if cfg["stripped_brain_channel"]:
        steps += [ConcatItemsd(["image", "stripped"], "image"), DeleteItemsd("stripped")]
    steps += [Resized(("image",), spatial_size=(h, w, -1), mode=("trilinear",)),
              EnsureTyped(("image",), dtype=torch.float32, track_meta=False)]
    return Compose(_referenced(steps, cfg))


# --------------------------------------------------------------------------------------------
# inference and evaluation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_bundle_inference_preprocessing_is_the_models(kind, studies):
    cfg = saved_run_config(kind, _run_config(kind)["config"])
    chains = {
        "inference.json": _parsed(REPO / "bundles" / NAMES[kind] / "configs" / "inference.json", "preprocessing"),
        "evaluate.json": _parsed(REPO / "bundles" / NAMES[kind] / "configs" / "evaluate.json", "preprocessing"),
        "ichct": seg_eval_transforms(cfg) if kind == "seg" else cls_eval_transforms(cfg),
        "before the specs": _old_seg(cfg, labels=False) if kind == "seg" else _old_cls_eval(cfg),
    }
    # 0.2.0 has the same weights and run config (an opaque ichct_config handed to ichct's builders), read
    # without brain-referenced HU
    published = _parsed(PUBLISHED / NAMES[kind] / "0.2.0" / "configs" / "inference.json", "preprocessing")
    unreferenced = {**cfg, "brain_reference_hu": None}
    for study in studies:
        outputs = {name: chain({"image": study["image"]}) for name, chain in chains.items()}
        for name, out in outputs.items():
            _equal(outputs["before the specs"], out, ("image",))
        old = (_old_seg(unreferenced, labels=False) if kind == "seg" else _old_cls_eval(unreferenced))
        _equal(old({"image": study["image"]}), published({"image": study["image"]}), ("image",))
        if kind == "seg":  # the inverse back to the input's grid sees the same applied operations
            ops = [[op["class"] for op in out["image"].applied_operations] for out in outputs.values()]
            assert all(o == ops[0] for o in ops), ops


# --------------------------------------------------------------------------------------------
# training and validation
# --------------------------------------------------------------------------------------------


def test_bundle_seg_training_preprocessing_is_the_models(studies):
    cfg = saved_run_config("seg", _run_config("seg")["config"])
    train_json = REPO / "bundles" / NAMES["seg"] / "configs" / "train.json"
    for study in studies:
        item = {"image": study["image"], "label": study["label"]}
        val = {name: chain(dict(item)) for name, chain in {
            "train.json": _parsed(train_json, "validate#preprocessing"), "ichct": seg_transforms(cfg, False),
            "before the specs": _old_seg(cfg, labels=True)}.items()}
        for out in val.values():
            _equal(val["before the specs"], out, ("image", "label"))
        patches = []
        for chain in (_parsed(train_json, "train#preprocessing"), seg_transforms(cfg, True)):
            chain.set_random_state(seed=11)
            patches.append(chain(dict(item)))
        assert len(patches[0]) == int(cfg["samples_per_volume"])
        for a, b in zip(*patches):
            _equal(a, b, ("image", "label"))


def test_bundle_cls_training_preprocessing_is_the_models(studies):
    cfg = saved_run_config("cls", _run_config("cls")["config"])
    train_json = REPO / "bundles" / NAMES["cls"] / "configs" / "train.json"
    for study in studies:
        item = {"image": study["image"], "label": study["label"],
                "slice_labels": np.asarray(study["slice_labels"], dtype=np.float32)}
        val = [chain({k: v for k, v in item.items() if k != "label"})
               for chain in (_parsed(train_json, "validate#preprocessing"), cls_transforms(cfg, False))]
        _equal(val[0], val[1], ("image",))
        _equal(val[0], _old_cls_eval(cfg)({"image": study["image"]}), ("image",))
        trained = []
        for chain in (_parsed(train_json, "train#preprocessing"), cls_transforms(cfg, True)):
            chain.set_random_state(seed=5)
            trained.append(chain(dict(item)))
        _equal(trained[0], trained[1], ("image", "label"))
