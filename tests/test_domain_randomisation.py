"""Training-time domain randomisation (config ``domain``): each effect on tiny volumes, the place of
its steps in both models' training chains (image formation on HU before the windows, the rest on the
windowed image), the config checks, and the bundle's train.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ichct.pipeline.bundle.configs import bundle_configs
from ichct.pipeline.models.config import DEFAULTS, resolve_config, saved_run_config
from ichct.pipeline.models.data import (
    cls_preprocessing,
    compose,
    domain_randomisation,
    formation_randomisation,
    seg_preprocessing,
)
from ichct.pipeline.preprocess.cache import cache_plan, first_random_index
from ichct.transforms import RandHUNoised, RandHUOffsetd, RandSliceThicknessd, simulate_slice_thickness

REPO = Path(__file__).resolve().parents[1]
WIDTHS = [80.0, 200.0, 380.0]
EFFECTS = list(DEFAULTS["seg"]["domain"])
WINDOWED_TARGETS = {"ichct.transforms.RandHUOffsetd", "ichct.transforms.RandHUNoised", "RandBiasFieldd",
                    "RandAdjustContrastd"}
FORMATION_TARGETS = {"ichct.transforms.RandPSFTaild", "ichct.transforms.RandSliceThicknessd", "RandGaussianSmoothd",
                     "RandGaussianSharpend"}
DOMAIN_TARGETS = WINDOWED_TARGETS | FORMATION_TARGETS
PREPROCESSING = {"seg": seg_preprocessing, "cls": cls_preprocessing}


def _windowed(seed: int = 0, shape: tuple[int, ...] = (3, 24, 24, 8)) -> torch.Tensor:
    """A windowed image with every voxel inside its window (0.2..0.8), a random texture."""
    return torch.from_numpy(np.random.default_rng(seed).uniform(0.2, 0.8, shape).astype(np.float32))


def _one(effect: str, widths: list[float] = WIDTHS, **params: object):
    """The Compose of one effect's step as the training chain builds it (prob 1)."""
    domain = {effect: {"prob": 1.0, **params}}
    steps = domain_randomisation(domain, widths) + formation_randomisation(domain)
    assert len(steps) == 1
    return compose(steps)


def _in_plane_hf_energy(img: torch.Tensor) -> float:
    """Mean squared difference of neighbouring voxels along the two in-plane axes."""
    return float((img.diff(dim=1) ** 2).mean() + (img.diff(dim=2) ** 2).mean())


# --------------------------------------------------------------------------------------------
# the training chains
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_defaults_randomise_and_an_old_run_keeps_its_chain(kind):
    """Every effect is on by default; a run saved before ``domain`` existed trained without it, and its
    chain (and so its bundle's configs and its cache boundary) stays the one it had."""
    assert all(effect["prob"] > 0 for effect in DEFAULTS[kind]["domain"].values())
    cfg = resolve_config(kind)
    assert DOMAIN_TARGETS <= {s["_target_"] for s in PREPROCESSING[kind](cfg, train=True)}
    old = {k: v for k, v in cfg.items() if k != "domain"}
    assert "domain" not in saved_run_config(kind, old)  # an old run's bundle configs stay what they were
    chain = PREPROCESSING[kind](old, train=True)
    assert chain == PREPROCESSING[kind](resolve_config(kind, {"domain": {e: {"prob": 0.0} for e in EFFECTS}}),
                                        train=True)
    names = [s["_target_"].rsplit(".", 1)[-1] for s in chain]
    head = {"seg": ["LoadCTd", "Orientationd", "ResampleToSpacingd", "CropHeadd", "MultiWindowd", "BloodLabelsd",
                    "SpatialPadd", "EnsureTyped", "RandCropByPosNegLabeld"],
            "cls": ["LoadCTd", "CheckSliceCountd", "InPlaneHeadCropd", "CopyItemsd", "StripSkulld",
                    "ScaleIntensityRanged", "MultiWindowd", "ConcatItemsd", "DeleteItemsd", "BloodLabelsd",
                    "CheckSameGridd", "Resized", "EnsureTyped"]}[kind]
    assert names == head + ["RandFlipd", "RandAffined", "RandShiftIntensityd", "RandGaussianNoised"]


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_windowed_steps_follow_the_cache_boundary_in_training_only(kind):
    windowed = ("hu_offset", "noise", "bias_field", "contrast")
    cfg = resolve_config(kind, {"domain": {e: {"prob": 0.5 if e in windowed else 0.0} for e in EFFECTS}})
    default = PREPROCESSING[kind](resolve_config(kind, {"domain": {e: {"prob": 0.0} for e in EFFECTS}}), train=True)
    chain = PREPROCESSING[kind](cfg, train=True)
    targets = [s["_target_"] for s in chain]
    assert WINDOWED_TARGETS <= set(targets) and not FORMATION_TARGETS & set(targets)
    boundary = first_random_index(compose(chain))
    assert boundary == first_random_index(compose(default))
    assert targets.index("RandAffined") < min(targets.index(t) for t in WINDOWED_TARGETS)
    # the cached prefix (and so the disk cache's folder) is the default one
    assert cache_plan(kind, chain).digest == cache_plan(kind, default).digest
    widths = [s["widths_hu"] for s in chain if s["_target_"] == "ichct.transforms.RandHUOffsetd"][0]
    assert widths == WIDTHS + ([80.0] if kind == "cls" else [])  # the classifier's skull-stripped brain window


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_formation_steps_run_on_hu_before_the_windows_in_training_only(kind):
    cfg = resolve_config(kind, {"domain": {e: {"prob": 0.5} for e in EFFECTS}})
    chain = PREPROCESSING[kind](cfg, train=True)
    targets = [s["_target_"] for s in chain]
    assert DOMAIN_TARGETS <= set(targets)
    formation = [targets.index(t) for t in FORMATION_TARGETS]
    window = targets.index("ichct.transforms.MultiWindowd")
    assert max(formation) < window and min(formation) == first_random_index(compose(chain))
    if kind == "cls":  # the stripped copy is made (cached) before, brought up to date and windowed after
        assert targets.index("ichct.transforms.StripSkulld") < min(formation)
        assert max(formation) < targets.index("ichct.transforms.ReapplyStripd") < targets.index("ScaleIntensityRanged")
    assert not DOMAIN_TARGETS & {s["_target_"] for s in PREPROCESSING[kind](cfg, train=False)}  # validation
    assert PREPROCESSING[kind](cfg, train=False) == PREPROCESSING[kind](resolve_config(kind), train=False)


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_packaged_train_json_lists_the_enabled_steps(kind):
    """The bundle generator writes each enabled step as an explicit ``_target_`` entry with its parameters."""
    name = {"seg": "ich_ct_segmentation", "cls": "ich_ct_classification"}[kind]
    rc = json.loads((REPO / "bundles" / name / "models" / "run_config.json").read_text())
    rc["config"]["domain"] = {"noise": {"prob": 0.3, "std_hu": [1.0, 4.0], "texture_sigma": [0.0, 0.5]},
                              "slice_thickness": {"prob": 0.2, "factor": [1.0, 1.5]}}
    configs = bundle_configs(rc)
    train = configs["train"]["train"]["preprocessing"]["transforms"]
    noise = [s for s in train if s["_target_"] == "ichct.transforms.RandHUNoised"]
    assert noise and noise[0]["prob"] == 0.3 and noise[0]["std_hu"] == [1.0, 4.0]
    assert noise[0]["texture_sigma"] == [0.0, 0.5]
    assert [s["factor"] for s in train if s["_target_"] == "ichct.transforms.RandSliceThicknessd"] == [[1.0, 1.5]]
    assert not {"RandGaussianSmoothd", "RandBiasFieldd"} & {s["_target_"] for s in train}  # prob 0: left out
    for section in (configs["train"]["validate"], configs["inference"], configs["evaluate"]):
        text = json.dumps(section)
        assert "RandHUNoised" not in text and "RandSliceThicknessd" not in text
    compose(train)  # MONAI's ConfigParser builds every entry


# --------------------------------------------------------------------------------------------
# the effects
# --------------------------------------------------------------------------------------------


def test_hu_offset_moves_every_channel_by_the_same_hu():
    img = _windowed()
    img[:, 0, 0, 0], img[:, 1, 0, 0] = 0.0, 1.0  # saturated: outside the window, a few HU keep them there
    out = _one("hu_offset", offset_hu=[6.0, 6.0])({"image": img.clone()})["image"]
    shift_hu = (out - img) * torch.tensor(WIDTHS).reshape(-1, 1, 1, 1)
    inside = (img > 0) & (img < 1)
    assert torch.allclose(shift_hu[inside], torch.tensor(6.0), atol=1e-3)
    assert torch.equal(out[~inside], img[~inside])
    drawn = RandHUOffsetd("image", widths_hu=[80.0], offset_hu=(-4.0, 4.0), prob=1.0).set_random_state(1)
    offsets = {round(float((drawn({"image": torch.full((1, 2, 2, 2), 0.5)})["image"] - 0.5).mean() * 80), 3)
               for _ in range(5)}
    assert len(offsets) == 5 and all(-4 <= o <= 4 for o in offsets)


def test_hu_noise_has_its_sd_in_hu_and_texture():
    img = torch.full((3, 48, 48, 6), 0.5)
    white = _one("noise", std_hu=[8.0, 8.0], texture_sigma=[0.0, 0.0])({"image": img.clone()})["image"]
    noise_hu = (white - img) * torch.tensor(WIDTHS).reshape(-1, 1, 1, 1)
    assert abs(float(noise_hu.std()) - 8.0) < 0.3
    assert torch.allclose(noise_hu[0], noise_hu[1], atol=1e-3) and torch.allclose(noise_hu[0], noise_hu[2], atol=1e-3)
    grain = _one("noise", std_hu=[8.0, 8.0], texture_sigma=[1.5, 1.5])({"image": img.clone()})["image"]
    grain_hu = (grain - img) * torch.tensor(WIDTHS).reshape(-1, 1, 1, 1)
    assert abs(float(grain_hu.std()) - 8.0) < 0.3  # the same SD, ...
    assert _in_plane_hf_energy(grain_hu) < 0.3 * _in_plane_hf_energy(noise_hu)  # ... a coarser grain
    assert float(grain_hu[..., 1:].sub(grain_hu[..., :-1]).std()) > 8.0  # along z the slices stay independent


def test_blur_lowers_and_sharpening_raises_high_frequencies():
    img = _windowed(1)
    blurred = _one("blur", sigma=[1.0, 1.0])({"image": img.clone()})["image"]
    sharpened = _one("sharpen", alpha=[1.0, 1.0], sigma=[1.0, 1.0])({"image": img.clone()})["image"]
    assert _in_plane_hf_energy(blurred) < 0.5 * _in_plane_hf_energy(img)
    assert _in_plane_hf_energy(sharpened) > 1.5 * _in_plane_hf_energy(img)
    inner = (slice(None), slice(4, -4), slice(4, -4))  # MONAI's filters pad with zeros: the border darkens
    assert torch.allclose(blurred[inner].mean(dim=(1, 2)), img[inner].mean(dim=(1, 2)), atol=0.02)
    constant_in_plane = img[:, :1, :1].expand_as(img).clone()  # a profile along z only: unchanged in-plane
    along_z = _one("blur", sigma=[1.0, 1.0])({"image": constant_in_plane})["image"]
    assert torch.allclose(along_z[inner], constant_in_plane[inner], atol=1e-5)


def test_slice_thickness_keeps_grid_and_constants_and_smooths_a_step():
    affine = torch.diag(torch.tensor([0.5, 0.5, 5.0, 1.0]))
    flat = MetaTensor(_windowed(2, (2, 6, 6, 1)).repeat(1, 1, 1, 10), affine=affine)
    t = RandSliceThicknessd("image", factor=(1.5, 3.0), prob=1.0).set_random_state(0)
    out = t({"image": flat})["image"]
    assert isinstance(out, MetaTensor) and out.shape == flat.shape and torch.equal(out.affine, affine)
    assert torch.allclose(out, flat, atol=1e-6)
    step = torch.zeros(1, 2, 2, 12)
    step[..., 6:] = 1.0
    smooth = simulate_slice_thickness(step, 2.5, phase=0.3)[0, 0, 0]
    assert smooth.shape == (12,) and bool((smooth.diff() >= -1e-6).all())  # still monotone
    assert 0 < float(smooth[5]) < 1 and 0 < float(smooth[6]) < 1  # the edge spread over the thicker slice
    assert smooth[:3].abs().max() < 1e-6 and (smooth[-3:] - 1).abs().max() < 1e-6  # far from it: unchanged
    assert torch.equal(simulate_slice_thickness(step, 1.0), step)


def test_bias_field_is_smooth_and_multiplicative():
    img = _windowed(3, (2, 16, 16, 8))
    seeded = _one("bias_field", coeff=[-0.05, 0.05])
    seeded.set_random_state(4)
    out = seeded({"image": img.clone()})["image"]
    seeded.set_random_state(4)
    field = seeded({"image": torch.ones_like(img)})["image"]
    assert torch.allclose(out, img * field, atol=1e-5)  # multiplicative
    assert torch.allclose(field[0], field[1])  # one field for every channel
    assert float(field.max() - field.min()) > 0.05  # visible ...
    log_field = torch.log(torch.as_tensor(field[0])).double()
    for axis in range(3):  # ... and smooth: the exponential of a polynomial of degree 3 (4th differences vanish)
        assert float(log_field.diff(n=4, dim=axis).abs().max()) < 1e-4


def test_contrast_is_a_gamma_of_the_windowed_intensities():
    img = _windowed(4)
    img[0, 0, 0, 0], img[0, 1, 0, 0] = 0.0, 1.0
    out = _one("contrast", gamma=[2.0, 2.0])({"image": img.clone()})["image"]
    assert torch.allclose(out, img ** 2, atol=1e-4)


def test_every_step_is_deterministic_with_set_random_state():
    domain = {e: {"prob": 0.7} for e in EFFECTS}
    chain = compose(formation_randomisation(domain) + domain_randomisation(domain, WIDTHS))
    img = _windowed(5)

    def run(seed: int) -> torch.Tensor:
        chain.set_random_state(seed)
        return torch.as_tensor(chain({"image": img.clone()})["image"])

    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))
    noise = RandHUNoised("image", widths_hu=WIDTHS, std_hu=(5.0, 5.0), prob=1.0)
    first = noise.set_random_state(3)({"image": img.clone()})["image"]
    assert torch.equal(first, noise.set_random_state(3)({"image": img.clone()})["image"])


# --------------------------------------------------------------------------------------------
# bad config values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("over", "key"), [
    ({"blur": {"prob": 1.5}}, "domain.blur.prob"),
    ({"noise": {"prob": -0.1}}, "domain.noise.prob"),
    ({"noise": {"std_hu": [6.0, 2.0]}}, "domain.noise.std_hu"),
    ({"noise": {"std_hu": [-1.0, 2.0]}}, "domain.noise.std_hu[0]"),
    ({"blur": {"sigma": [-0.5, 1.0]}}, "domain.blur.sigma[0]"),
    ({"sharpen": {"alpha": 1.0}}, "domain.sharpen.alpha"),
    ({"slice_thickness": {"factor": [0.5, 2.0]}}, "domain.slice_thickness.factor[0]"),
    ({"contrast": {"gamma": [0.0, 1.0]}}, "domain.contrast.gamma[0]"),
    ({"hu_offset": {"offset_hu": [5.0, -5.0]}}, "domain.hu_offset.offset_hu"),
    ({"psf_tail": {"fraction": [0.1, 1.5]}}, "domain.psf_tail.fraction[1]"),
    ({"psf_tail": {"length_mm": [0.0, 1.0]}}, "domain.psf_tail.length_mm[0]"),
    ({"blurr": {"prob": 0.5}}, "domain.blurr"),
    ({"bias_field": {"degree": 3}}, "domain.bias_field.degree"),
])
def test_bad_domain_values_are_refused_naming_the_key(over, key):
    for kind in ("seg", "cls"):
        with pytest.raises(ValueError, match=re.escape(f"config key '{key}'")):
            resolve_config(kind, {"domain": over})


def test_cli_train_refuses_a_bad_domain_config_before_writing(tmp_path, run_cli):
    cfg = tmp_path / "domain.yaml"
    cfg.write_text("domain:\n  noise:\n    prob: 0.5\n    std_hu: [8, 2]\n")
    out = tmp_path / "runs" / "seg"
    r = run_cli("train", "seg", "--manifest", REPO / "data_manifests" / "synth_default.json", "--fold", "0",
                "--out", out, "--epochs", "1", "--config", cfg)
    assert r.code == 1 and str(cfg) in r.err and "'domain.noise.std_hu'" in r.err and "low <= high" in r.err, r.err
    assert "Traceback" not in r.err and not (tmp_path / "runs").exists()


def _cached_item(kind: str) -> dict:
    """What the cache holds for a study when formation effects are on: HU (and the stripped copy), labels."""
    shape = (72, 72, 18) if kind == "seg" else (80, 80, 7)
    hu = torch.full((1, *shape), 30.0)
    hu[:, :4], hu[:, -4:] = 1400.0, 1400.0  # bone on two sides
    hu += torch.from_numpy(np.random.default_rng(6).normal(0, 4, hu.shape).astype(np.float32))
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0]))
    label = torch.zeros((1, *shape))
    label[0, 30:40, 30:40, 4:6] = 1.0
    item = {"image": MetaTensor(hu, affine=affine), "label": MetaTensor(label, affine=affine)}
    if kind == "cls":
        stripped = hu.clone()
        stripped[:, :4], stripped[:, -4:] = -1000.0, -1000.0
        item.update(stripped=MetaTensor(stripped, affine=affine), slice_labels=np.zeros((shape[-1], 6), np.float32))
    return item


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_training_chains_run_with_every_effect_on(kind):
    """The random part of each training chain, every effect at prob 1, on a cached item of the model's shape."""
    cfg = resolve_config(kind, {"domain": {e: {"prob": 1.0} for e in EFFECTS}})
    chain = compose(PREPROCESSING[kind](cfg, train=True))
    channels = 3 if kind == "seg" else 4
    chain.set_random_state(0)
    out = chain(_cached_item(kind), start=first_random_index(chain))
    samples = out if isinstance(out, list) else [out]
    for sample in samples:
        assert sample["image"].dtype == torch.float32 and torch.isfinite(sample["image"]).all()
        assert sample["image"].shape[0] == channels and sample["image"].shape[1:] == sample["label"].shape[1:]


# --------------------------------------------------------------------------------------------
# kernel tails on HU (ichct.transforms.kernel_tail) and the stripped copy
# --------------------------------------------------------------------------------------------


def _bone_slab(pixel_mm: float = 0.5) -> MetaTensor:
    """40 HU brain with a 1,500 HU bone slab along the first 10 rows (pixels of ``pixel_mm``)."""
    hu = torch.full((1, 60, 40, 3), 40.0)
    hu[:, :10] = 1500.0
    return MetaTensor(hu, affine=torch.diag(torch.tensor([pixel_mm, pixel_mm, 5.0, 1.0])))


def test_psf_tail_throws_a_halo_from_bone_that_grows_with_fraction_and_length():
    from ichct.transforms import RandPSFTaild, psf_tail

    slab = _bone_slab()

    def halo(fraction: float, length_mm: float, pixel_mm: float = 0.5) -> np.ndarray:
        img = _bone_slab(pixel_mm)
        t = RandPSFTaild("image", fraction=(fraction, fraction), length_mm=(length_mm, length_mm), prob=1.0)
        out = t({"image": img})["image"]
        assert isinstance(out, MetaTensor) and torch.equal(out.affine, img.affine)
        return (out - img)[0, :, 20, 1].numpy()  # one column across the edge

    base = halo(0.1, 1.0)
    assert base[10] > 20.0 and base[9] < -20.0  # brain next to bone brightens, bone's edge dims
    assert abs(base[30:]).max() < 0.5  # 10 mm from bone: nothing
    assert halo(0.2, 1.0)[10] == pytest.approx(2 * base[10], rel=1e-4)  # linear in the fraction
    assert halo(0.1, 2.0)[14] > base[14] + 1.0  # a longer tail reaches farther
    # the length is in mm: the same tail on 1 mm pixels covers half as many pixels
    assert halo(0.1, 1.0, pixel_mm=1.0)[12] < base[12] - 1.0
    # the signal only spreads: around a bone block inside a uniform field the slice keeps its total HU
    block = torch.full((1, 60, 40, 1), 40.0)
    block[:, 20:30, 15:25] = 1500.0
    out = psf_tail(block, 0.15, (3.0, 3.0))
    assert float(out.sum()) == pytest.approx(float(block.sum()), rel=1e-5) and float(out.max()) < 1500.0
    assert torch.equal(psf_tail(slab, 0.0, (3.0, 3.0)), slab)


def test_psf_tail_needs_hu_not_the_windowed_image():
    """The halo of 1,500 HU bone in the brain window, with the tail applied before and after windowing."""
    from ichct.transforms import MultiWindow, psf_tail

    window = MultiWindow({"brain": (40.0, 80.0)})
    slab = _bone_slab()
    before = window(psf_tail(slab, 0.1, (2.0, 2.0)))[0, 11, 20, 1]
    after = psf_tail(window(slab), 0.1, (2.0, 2.0))[0, 11, 20, 1]
    assert float(before) > float(after) + 0.1  # ~ +20 HU more in the band under the bone


def test_reapply_strip_carries_the_change_into_the_kept_voxels_only():
    from ichct.transforms import ReapplyStripd, StripSkulld

    item = _cached_item("cls")
    item["stripped"] = StripSkulld("stripped")({"stripped": item["image"].clone()})["stripped"]
    kept = item["stripped"] != -1000.0
    changed = {**item, "image": item["image"] + 7.0}
    out = ReapplyStripd("stripped", "image")(changed)["stripped"]
    assert torch.allclose(out[kept], item["stripped"][kept] + 7.0)
    assert torch.equal(out[~kept], item["stripped"][~kept]) and isinstance(out, MetaTensor)
    with pytest.raises(ValueError, match="shape"):
        ReapplyStripd("stripped", "image")({"image": torch.zeros(1, 2, 2, 2), "stripped": torch.zeros(1, 3, 2, 2)})
