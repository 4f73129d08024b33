"""RemoveSmallComponents / RemoveSmallComponentsd: specks below a volume in mL leave a label map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ichct.pipeline.decision import remove_small_components
from ichct.transforms import RemoveSmallComponents, RemoveSmallComponentsd, large_component_mask

# 2 x 2 x 3 mm voxels: 12 mm^3 = 0.012 mL each
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
VOXEL_ML = 0.012


def _label_map() -> np.ndarray:
    lab = np.zeros((1, 40, 40, 20), dtype=np.uint8)
    lab[0, 2:7, 2:4, 2] = 1  # 10 voxels = 0.12 mL
    lab[0, 20:30, 20:23, 5:6] = 1  # 30 voxels = 0.36 mL
    lab[0, 20:30, 23, 5] = 2  # 10 voxels of another label touching the 30-voxel region: one component of 40
    lab[0, 35:37, 35, 15] = 2  # 2 voxels = 0.024 mL
    return lab


def test_drops_components_below_the_volume_and_keeps_the_rest_on_a_metatensor():
    lab = MetaTensor(torch.as_tensor(_label_map()), affine=torch.as_tensor(AFFINE))
    out = RemoveSmallComponents(0.2)(lab)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, lab.affine)
    expected = _label_map()
    expected[0, 2:7, 2:4, 2] = 0
    expected[0, 35:37, 35, 15] = 0
    np.testing.assert_array_equal(out.numpy(), expected)  # the label-2 rim of the large bleed stays


def test_the_volume_comes_from_the_affine():
    # the same voxels at 1 mm: the 40-voxel component is 0.04 mL and goes too
    lab = MetaTensor(torch.as_tensor(_label_map()), affine=torch.eye(4, dtype=torch.float64))
    assert not RemoveSmallComponents(0.2)(lab).numpy().any()
    # at 2 x 2 x 3 mm a threshold of exactly one component's volume keeps it (>=), just above drops it
    big = MetaTensor(torch.as_tensor(_label_map()), affine=torch.as_tensor(AFFINE))
    assert int(RemoveSmallComponents(40 * VOXEL_ML)(big).numpy().astype(bool).sum()) == 40
    assert not RemoveSmallComponents(40 * VOXEL_ML * 1.001)(big).numpy().any()


def test_plain_arrays_need_the_voxel_volume_and_match_the_decision_helper():
    arr = _label_map()
    with pytest.raises(ValueError, match="voxel_volume_ml"):
        RemoveSmallComponents(0.2)(arr)
    out = RemoveSmallComponents(0.1, voxel_volume_ml=VOXEL_ML)(arr)
    assert isinstance(out, np.ndarray) and out.dtype == arr.dtype
    kept = remove_small_components(arr[0] > 0, VOXEL_ML, 0.1)
    np.testing.assert_array_equal(out[0] > 0, kept)
    assert int(kept.sum()) == 50  # 10 + 40 voxels; the 2-voxel speck is gone
    np.testing.assert_array_equal(out[0][kept], arr[0][kept])  # labels of kept voxels unchanged


def test_connectivity_decides_what_is_one_component():
    m = np.zeros((6, 6, 6), dtype=bool)
    m[1, 1, 1] = m[2, 2, 1] = True  # touching along an edge only
    assert not large_component_mask(m, 1.0, 2.0, connectivity=1).any()
    assert large_component_mask(m, 1.0, 2.0, connectivity=2).sum() == 2
    with pytest.raises(ValueError, match="connectivity"):
        large_component_mask(m, 1.0, 2.0, connectivity=4)


def test_zero_keeps_everything_and_bad_arguments_are_refused():
    arr = _label_map()
    assert RemoveSmallComponents(0.0)(arr) is arr
    with pytest.raises(ValueError, match="min_volume_ml"):
        RemoveSmallComponents(-0.1)
    with pytest.raises(ValueError, match="voxel_volume_ml"):
        large_component_mask(arr[0] > 0, 0.0, 0.1)


def test_dictionary_twin_and_missing_keys():
    lab = MetaTensor(torch.as_tensor(_label_map()), affine=torch.as_tensor(AFFINE))
    out = RemoveSmallComponentsd("pred", min_volume_ml=0.2)({"pred": lab, "image": lab})
    assert int(out["pred"].numpy().astype(bool).sum()) == 40
    assert out["image"] is lab  # other keys untouched
    with pytest.raises(KeyError):
        RemoveSmallComponentsd("pred", min_volume_ml=0.2)({"image": lab})
    assert RemoveSmallComponentsd("pred", min_volume_ml=0.2, allow_missing_keys=True)({"image": lab})["image"] is lab


@pytest.mark.parametrize("seed", range(4))
def test_random_masks_match_labelling_the_whole_volume(seed):
    """The bounding-box labelling gives what labelling the whole array and thresholding sizes gives."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    for _ in range(25):
        shape = tuple(int(n) for n in rng.integers(1, 24, size=int(rng.integers(1, 4))))
        mask = np.zeros(shape, bool)
        lo = [int(rng.integers(0, n)) for n in shape]  # foreground in a sub-box, off the array's edges
        hi = [int(rng.integers(a, n)) + 1 for a, n in zip(lo, shape)]
        mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = rng.random([b - a for a, b in zip(lo, hi)]) < 0.4
        for connectivity in range(1, mask.ndim + 1):
            labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, connectivity))
            sizes = np.bincount(labels.ravel(), minlength=n + 1)
            for min_voxels in (1, 2, 3, 7):
                expected = (sizes >= min_voxels)[labels] & mask
                got = large_component_mask(mask, 0.001, min_voxels * 0.001, connectivity)
                np.testing.assert_array_equal(got, expected)
