"""Head/brain masks and the CropHead(d) transforms on a synthetic head phantom."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from ichct.transforms import CropHead, CropHeadd, brain_mask, head_mask
from ichct.transforms.crop import axial_axis

SPACING = (1.5, 1.5, 3.0)
SHAPE = (64, 72, 24)
AFFINE = np.array([[SPACING[0], 0, 0, -48.0], [0, SPACING[1], 0, -54.0], [0, 0, SPACING[2], -36.0], [0, 0, 0, 1]])
AIR, SCALP, SKULL, BRAIN, TABLE = -1000.0, 40.0, 1000.0, 35.0, 100.0


def phantom(shape=SHAPE, spacing=SPACING, skull=True, table=True) -> tuple[np.ndarray, np.ndarray]:
    """HU volume of an ellipsoidal head (scalp, skull shell, brain) in air, and its brain mask.

    Semi-axes are fractions of the field of view; a separate table slab lies behind the head.
    """
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    fov = np.array(shape) * np.array(spacing)

    def inside(frac):
        a = fov * np.asarray(frac)
        return (x / a[0]) ** 2 + (y / a[1]) ** 2 + (z / a[2]) ** 2 <= 1.0

    hu = np.full(shape, AIR, dtype=np.float32)
    hu[inside((0.32, 0.32, 0.45))] = SCALP
    hu[inside((0.29, 0.29, 0.41))] = SKULL if skull else SCALP
    brain = inside((0.24, 0.24, 0.33))
    hu[brain] = BRAIN
    if table:
        hu[:, 1:3, :] = TABLE  # posterior slab, not touching the head
    return hu, brain


def as_image(hu: np.ndarray, affine=AFFINE) -> MetaTensor:
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(hu))[None], affine=torch.as_tensor(affine))


def test_head_mask_excludes_air_and_table():
    hu, brain = phantom()
    mask = head_mask(hu)
    assert mask.dtype == bool and mask.shape == hu.shape
    assert mask[hu == SCALP].mean() > 0.99
    assert mask[brain].all()
    assert not mask[:, 1:3, :].any()  # the table is a smaller, separate component
    assert mask[hu == AIR].mean() < 0.01


def test_head_mask_fills_enclosed_air():
    hu, _ = phantom()
    cavity = np.zeros(hu.shape, dtype=bool)
    cavity[30:34, 34:38, 10:14] = True  # an air pocket inside the brain (e.g. pneumocephalus)
    hu[cavity] = AIR
    assert head_mask(hu)[cavity].all()


def test_brain_mask_is_intracranial_space():
    hu, brain = phantom()
    mask = brain_mask(hu)
    assert mask[brain].all()
    assert not mask[hu == SKULL].any()
    assert not mask[hu == SCALP].any()
    assert mask.sum() == brain.sum()


def test_brain_mask_falls_back_to_head_without_skull():
    hu, _ = phantom(skull=False)
    np.testing.assert_array_equal(brain_mask(hu), head_mask(hu))
    # torch input gives the same
    np.testing.assert_array_equal(brain_mask(torch.from_numpy(hu)), head_mask(hu))


def test_axial_axis_from_affine():
    assert axial_axis(AFFINE) == 2
    permuted = AFFINE[:, [2, 0, 1, 3]]
    assert axial_axis(permuted) == 0


@pytest.mark.parametrize("mode", ["brain", "head"])
def test_crop_keeps_brain_and_removes_air(mode):
    hu, brain = phantom()
    data = {"image": as_image(hu), "label": as_image(brain.astype(np.float32))}
    out = CropHeadd(keys=["image", "label"], mode=mode, margin_mm=4.5)(data)
    assert out["label"].sum() == brain.sum()  # no brain voxel lost
    air_before = (hu == AIR).sum()
    air_after = (out["image"] == AIR).sum().item()
    assert air_after < 0.5 * air_before
    assert not (out["image"] == TABLE).any()
    assert out["image"].shape == out["label"].shape
    # margin 4.5 mm = 3 voxels in-plane, 2 axially (ceil(4.5/3)) around the mask's box, clipped to the image
    mask = brain_mask(hu) if mode == "brain" else head_mask(hu)
    idx = np.argwhere(mask)
    margin = np.array([3, 3, 2])
    np.testing.assert_array_equal(out["foreground_start_coord"], np.maximum(idx.min(0) - margin, 0))
    np.testing.assert_array_equal(out["foreground_end_coord"], np.minimum(idx.max(0) + 1 + margin, SHAPE))


def test_brain_crop_is_tighter_than_head_crop():
    hu, _ = phantom()
    brain_box = CropHead(mode="brain", margin_mm=0)(as_image(hu)).shape
    head_box = CropHead(mode="head", margin_mm=0)(as_image(hu)).shape
    assert all(b < h for b, h in zip(brain_box[1:], head_box[1:]))


def test_crop_affine_preserves_world_positions():
    hu, _ = phantom()
    rot = AFFINE.copy()
    rot[:3, :3] = rot[:3, :3] @ np.diag([-1, 1, 1])  # an L-pointing first axis as well
    img = as_image(hu, rot)
    cropper = CropHead(mode="brain", margin_mm=3.0)
    out = cropper(img)
    start = np.asarray(cropper.compute_bounding_box(img)[0])
    assert np.all(start > 0)
    for ijk in [(0, 0, 0), (5, 7, 3), tuple(np.array(out.shape[1:]) - 1)]:
        src = np.asarray(ijk) + start
        w_out = np.asarray(out.affine, dtype=float) @ np.r_[ijk, 1.0]
        w_src = rot @ np.r_[src, 1.0]
        np.testing.assert_allclose(w_out, w_src, atol=1e-6)
        assert float(out[0][tuple(ijk)]) == float(hu[tuple(src)])


def test_empty_mask_keeps_whole_image():
    img = as_image(np.full((10, 10, 4), AIR, dtype=np.float32))
    out = CropHead(mode="brain")(img)
    assert out.shape == img.shape


def test_crop_array_inverse_and_invertd():
    hu, brain = phantom()
    img = as_image(hu)
    cropper = CropHead(mode="brain", margin_mm=3.0)
    out = cropper(img.clone())
    back = cropper.inverse(out)
    assert back.shape == img.shape
    np.testing.assert_allclose(np.asarray(back.affine), AFFINE)

    pre = Compose([CropHeadd(keys=["image", "label"], source_key="image", margin_mm=3.0)])
    data = pre({"image": img.clone(), "label": as_image(brain.astype(np.float32))})
    data["pred"] = MetaTensor(data["label"].as_tensor().clone(), affine=data["label"].affine.clone())
    inv = Invertd(keys="pred", transform=pre, orig_keys="image")(data)
    assert tuple(inv["pred"].shape) == (1, *SHAPE)
    np.testing.assert_allclose(np.asarray(inv["pred"].affine), AFFINE)
    np.testing.assert_array_equal(inv["pred"].numpy()[0] > 0, brain)


def test_bad_mode():
    with pytest.raises(ValueError):
        CropHead(mode="skull")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# StripSkull(d)
# --------------------------------------------------------------------------------------------


def _rim_phantom():
    """The phantom with a thin 80 HU rim (extra-axial blood) replacing the inner layer of the skull."""
    hu, brain = phantom()
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(SHAPE, SPACING)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    a = np.array(SHAPE) * np.array(SPACING) * np.array([0.255, 0.255, 0.35])
    rim = ((x / a[0]) ** 2 + (y / a[1]) ** 2 + (z / a[2]) ** 2 <= 1.0) & ~brain & (x > 0)
    hu[rim] = 80.0
    return hu, brain, rim


def test_strip_skull_keeps_the_intracranial_space_and_blanks_bone_scalp_and_table():
    from ichct.transforms import StripSkull

    hu, brain, rim = _rim_phantom()
    assert rim.sum() > 50
    img = as_image(hu)
    out = StripSkull()(img)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, img.affine) and out.shape == img.shape
    o = out[0].numpy()
    assert np.array_equal(o[brain], hu[brain]) and np.array_equal(o[rim], hu[rim])  # blood along the skull kept
    for tissue in (SKULL, SCALP, TABLE):
        assert (o[hu == tissue] == -1000.0).all(), tissue
    assert np.array_equal(img[0].numpy(), hu)  # the input is not modified


def test_strip_skull_without_a_closed_skull_only_blanks_outside_the_head():
    from ichct.transforms import StripSkull

    hu, _ = phantom(skull=False)
    o = StripSkull(fill_hu=-1024.0)(hu[None])[0]
    assert isinstance(o, np.ndarray)
    assert (o[hu == SCALP] == SCALP).mean() > 0.99 and (o[hu == BRAIN] == BRAIN).all()
    assert (o[hu == TABLE] == -1024.0).all()


def test_strip_skulld_strips_each_key_and_skips_missing_ones():
    from ichct.transforms import StripSkulld

    hu, brain, _ = _rim_phantom()
    two = torch.from_numpy(np.stack([hu, hu + 1.0]))  # the mask of channel 0 applies to every channel
    out = StripSkulld(["image", "other"], allow_missing_keys=True)({"image": two, "label": "kept"})
    assert out["label"] == "kept" and "other" not in out
    assert (out["image"][1][torch.from_numpy(brain)] == torch.from_numpy(hu[brain] + 1.0)).all()
    assert (out["image"][:, torch.from_numpy(hu == SKULL)] == -1000.0).all()
    with pytest.raises(KeyError):
        StripSkulld("image")({"label": 1})


@pytest.mark.parametrize("seed", range(3))
def test_fill_holes_matches_scipy_in_3d_and_per_slice(seed):
    """The one-pass hole filling gives scipy's ``binary_fill_holes``, whole and slice by slice."""
    from scipy import ndimage

    from ichct.transforms.crop import fill_holes

    rng = np.random.default_rng(seed)
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 18, size=int(rng.integers(1, 4))))
        mask = rng.random(shape) < rng.uniform(0.3, 0.8)
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
        if mask.ndim == 3:
            for axis in range(3):
                moved = np.moveaxis(mask, axis, 0)
                expected = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in moved]), 0, axis)
                in_plane = [a for a in range(3) if a != axis]  # hole filling slice by slice across `axis`
                np.testing.assert_array_equal(fill_holes(mask, in_plane), expected)
    ring = np.ones((7, 7), bool)
    ring[2:5, 2:5] = False
    assert fill_holes(ring).all()  # a closed hole is filled
    ring[3, 0] = ring[3, 1] = False  # a channel to the border opens it: it stays background
    np.testing.assert_array_equal(fill_holes(ring), ring)


def _reference_masks(hu: np.ndarray, axial: int, min_fraction: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Head and brain masks computed over the whole array with scipy alone: the definitions of
    :func:`head_mask` and :func:`brain_mask` without their bounding-box shortcuts."""
    from scipy import ndimage

    def largest(mask):
        labels, n = ndimage.label(mask)
        return labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1) if n else np.zeros_like(mask)

    def per_slice(mask):
        moved = np.moveaxis(mask, axial, 0)
        return np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in moved]), 0, axial)

    body = largest(hu > -300.0)
    head = per_slice(ndimage.binary_fill_holes(body)) if body.any() else body
    skull = hu > 300.0
    brain = largest(per_slice(skull) & ~skull)
    if not brain.any() or brain.sum() < min_fraction * max(int(head.sum()), 1):
        return head, head
    return head, ndimage.binary_fill_holes(brain)


@pytest.mark.parametrize("case", ["phantom", "skull_at_border", "no_skull", "small_brain", "noise", "air"])
def test_masks_equal_the_whole_volume_definition(case):
    """The masks work inside bounding boxes and skip the head mask when the brain is large enough;
    they give exactly what the whole-volume computation gives, along any axial axis."""
    rng = np.random.default_rng(7)
    hu, _ = phantom()
    if case == "skull_at_border":
        hu[:2] = SKULL  # bone touching the array's border: the box is clipped there
        hu[5:9, 30:34, 10] = SKULL  # and a bone speck outside the head's shell
    elif case == "no_skull":
        hu, _ = phantom(skull=False)
    elif case == "small_brain":  # an enclosed region below min_fraction of the head: the head mask is returned
        hu = np.full(SHAPE, SCALP, dtype=np.float32)
        hu[20:25, 20:25, 10:13] = SKULL
        hu[21:24, 21:24, 11] = BRAIN
    elif case == "noise":
        hu = rng.normal(0.0, 600.0, SHAPE).astype(np.float32)
    elif case == "air":
        hu = np.full(SHAPE, AIR, dtype=np.float32)
    for axial in (2, 0):
        head, brain = _reference_masks(hu, axial)
        np.testing.assert_array_equal(head_mask(hu, axial=axial), head)
        np.testing.assert_array_equal(brain_mask(hu, axial=axial), brain)
    if case == "small_brain":
        assert brain.sum() == head.sum() == hu.size  # the fallback was taken
