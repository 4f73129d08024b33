"""Orientation (ToRAS(d)) and resampling (ResampleToSpacing(d))."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from ichct.transforms import ResampleToSpacing, ResampleToSpacingd, ToRAS, ToRASd

# LPS-like voxel axes (i -> left, j -> posterior, k -> superior), anisotropic spacing, offset origin.
LPS_AFFINE = np.array([[-0.8, 0, 0, 40.0], [0, -0.9, 0, 50.0], [0, 0, 4.0, -20.0], [0, 0, 0, 1]])


def spacing_of(img: MetaTensor) -> np.ndarray:
    return np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0)


def world(affine, ijk) -> np.ndarray:
    return (np.asarray(affine, dtype=float) @ np.r_[np.asarray(ijk, dtype=float), 1.0])[:3]


def make_pair(shape=(20, 18, 7)) -> dict:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 100, size=shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.float32)
    label[4:14, 3:12, 1:5] = 1
    label[6:9, 5:8, 2:4] = 2
    return {
        "image": MetaTensor(torch.from_numpy(image)[None], affine=torch.as_tensor(LPS_AFFINE)),
        "label": MetaTensor(torch.from_numpy(label)[None], affine=torch.as_tensor(LPS_AFFINE)),
    }


def test_toras_axcodes_and_world_positions():
    img = make_pair()["image"]
    assert nib.aff2axcodes(np.asarray(img.affine)) == ("L", "P", "S")
    out = ToRAS()(img.clone())
    assert nib.aff2axcodes(np.asarray(out.affine)) == ("R", "A", "S")
    assert tuple(out.shape) == tuple(img.shape)
    # the voxel at the same world position holds the same value
    src = (3, 5, 2)
    pos = world(img.affine, src)
    dst = np.rint(np.linalg.solve(np.asarray(out.affine, dtype=float), np.r_[pos, 1.0])[:3]).astype(int)
    assert float(out[0][tuple(dst)]) == float(img[0][src])
    np.testing.assert_allclose(spacing_of(out), [0.8, 0.9, 4.0])


def test_torasd_inverse_restores():
    data = make_pair()
    t = ToRASd(keys=["image", "label", "absent"], allow_missing_keys=True)
    out = t({k: v.clone() for k, v in data.items()})
    for key in ("image", "label"):
        assert nib.aff2axcodes(np.asarray(out[key].affine)) == ("R", "A", "S")
    back = t.inverse(out)
    torch.testing.assert_close(back["image"].as_tensor(), data["image"].as_tensor())
    np.testing.assert_allclose(np.asarray(back["label"].affine), LPS_AFFINE)


def test_resample_array_spacing_and_modes():
    data = make_pair()
    img = ResampleToSpacing((0.5, 0.5, 2.0))(data["image"].clone())
    np.testing.assert_allclose(spacing_of(img), [0.5, 0.5, 2.0], atol=1e-6)
    # same field of view (first to last voxel centre), to within one new voxel
    old_fov = (np.array(data["image"].shape[1:]) - 1) * [0.8, 0.9, 4.0]
    new_fov = (np.array(img.shape[1:]) - 1) * [0.5, 0.5, 2.0]
    assert np.all(np.abs(new_fov - old_fov) <= np.array([0.5, 0.5, 2.0]) / 2 + 1e-6)
    lab = ResampleToSpacing((0.5, 0.5, 2.0), label=True)(data["label"].clone())
    assert set(np.unique(lab.numpy())) == {0.0, 1.0, 2.0}
    # the same label through linear interpolation gets fractional values: modes really differ
    lin = ResampleToSpacing((0.5, 0.5, 2.0))(data["label"].clone())
    assert not np.allclose(lin.numpy(), np.rint(lin.numpy()))
    iso = ResampleToSpacing(2.0)(data["image"].clone())
    np.testing.assert_allclose(spacing_of(iso), [2.0, 2.0, 2.0], atol=1e-6)


def test_resampled_keeps_world_frame():
    img = make_pair()["image"]
    out = ResampleToSpacing((1.5, 2.0, 4.0))(img.clone())
    # Spacing keeps the orientation and the world position of voxel (0, 0, 0)
    assert nib.aff2axcodes(np.asarray(out.affine)) == ("L", "P", "S")
    np.testing.assert_allclose(spacing_of(out), [1.5, 2.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(world(out.affine, (0, 0, 0)), world(img.affine, (0, 0, 0)), atol=1e-6)
    # corner-to-corner extent over the new spacing, rounded: 19*0.8/1.5 + 1 -> 11, 17*0.9/2 + 1 -> 9
    assert tuple(out.shape[1:]) == (11, 9, 7)


def test_resampled_dict_labels_integer_and_same_grid():
    data = make_pair()
    t = ResampleToSpacingd(keys="image", spacing_mm=(0.6, 0.6, 1.5), label_keys="label")
    out = t({k: v.clone() for k, v in data.items()})
    for key in ("image", "label"):
        np.testing.assert_allclose(spacing_of(out[key]), [0.6, 0.6, 1.5], atol=1e-6)
    assert out["image"].shape[1:] == out["label"].shape[1:]
    torch.testing.assert_close(out["image"].affine, out["label"].affine)
    labels = out["label"].numpy()
    np.testing.assert_array_equal(labels, np.rint(labels))
    assert set(np.unique(labels)) == {0.0, 1.0, 2.0}
    assert t.label_keys == ("label",)
    assert list(t.keys) == ["image", "label"]


def test_spatial_chain_inverted_by_invertd():
    data = make_pair()
    pre = Compose([
        ToRASd(keys=["image", "label"]),
        ResampleToSpacingd(keys="image", spacing_mm=(1.5, 1.5, 3.0), label_keys="label"),
    ])
    out = pre({k: v.clone() for k, v in data.items()})
    assert out["image"].shape[1:] != data["image"].shape[1:]
    out["pred"] = MetaTensor(out["label"].as_tensor().clone(), affine=out["label"].affine.clone())
    inv = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(out)
    pred = inv["pred"]
    assert tuple(pred.shape) == tuple(data["label"].shape)
    np.testing.assert_allclose(np.asarray(pred.affine), LPS_AFFINE, atol=1e-5)
    # the big label block comes back where it was (nearest, coarse grid: allow boundary losses)
    orig = data["label"].numpy()[0] > 0
    back = pred.numpy()[0] > 0
    dice = 2 * (orig & back).sum() / (orig.sum() + back.sum())
    assert dice > 0.8


def test_resample_rejects_missing_key():
    with pytest.raises(KeyError):
        ResampleToSpacingd(keys="image", spacing_mm=1.0, label_keys="label")({"image": make_pair()["image"]})


def test_toras_handles_lps_space_metatensor():
    # an identity affine in LPS world coordinates: voxel axes already run to L, P, S
    img = MetaTensor(torch.arange(8.0).reshape(1, 2, 2, 2), affine=torch.eye(4, dtype=torch.float64))
    img.meta["space"] = "LPS"
    out = ToRAS()(img)
    np.testing.assert_allclose(np.diag(np.asarray(out.affine)), [-1.0, -1.0, 1.0, 1.0])  # now to R, A (in LPS)
    assert float(out[0, 0, 0, 0]) == float(img[0, 1, 1, 0])


def _oblique_affine(tilt_deg: float = 20.0) -> np.ndarray:
    t = np.deg2rad(tilt_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([3.9, 3.7, 5.0])
    aff[:3, 3] = [-120.3, -95.7, -60.2]
    return aff


@pytest.mark.parametrize("dict_form", [False, True])
def test_float32_rounded_oblique_affine_gives_the_same_grid(dict_form):
    """A tilt-corrected (oblique) grid saved as NIfTI comes back with float32-rounded direction
    cosines; resampling must put the output grid where the exact affine puts it (MONAI Spacing
    alone centres it instead, about a voxel away)."""
    rng = np.random.default_rng(0)
    data = torch.as_tensor(rng.normal(size=(1, 40, 36, 16)).astype(np.float32))
    exact = _oblique_affine()
    rounded = exact.astype(np.float32).astype(np.float64)
    outs = []
    for aff in (exact, rounded):
        img = MetaTensor(data.clone(), affine=torch.as_tensor(aff))
        if dict_form:
            out = ResampleToSpacingd("image", (2.0, 2.0, 3.0))({"image": img})["image"]
        else:
            out = ResampleToSpacing((2.0, 2.0, 3.0))(img)
        outs.append(out)
        assert np.allclose(np.asarray(img.affine), aff)  # the input is not modified
    assert outs[0].shape == outs[1].shape
    assert np.abs(np.asarray(outs[0].affine) - np.asarray(outs[1].affine)).max() < 1e-4
    assert float((outs[0] - outs[1]).abs().max()) < 1e-3


def test_sheared_affine_is_not_orthogonalised():
    from ichct.transforms.spatial import orthogonalised_affine

    sheared = np.diag([0.5, 0.5, 5.0, 1.0])
    sheared[1, 2] = 5.0 * np.tan(np.deg2rad(15.0))
    assert orthogonalised_affine(sheared) is None
    assert orthogonalised_affine(_oblique_affine()) is None  # exact already: nothing to do
    snapped = orthogonalised_affine(_oblique_affine().astype(np.float32))
    direction = snapped[:3, :3] / np.linalg.norm(snapped[:3, :3], axis=0)
    assert np.allclose(direction.T @ direction, np.eye(3), atol=1e-12)
    assert np.allclose(snapped, _oblique_affine(), atol=1e-5)
