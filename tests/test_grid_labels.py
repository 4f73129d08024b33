"""``labels_on_grid``: class probabilities on a model's grid -> labels on the input's grid, as ``Invertd`` gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, Orientationd, Spacingd

from ichct.transforms import labels_on_grid


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    out = np.eye(4)
    out[i, i] = out[j, j] = c
    out[i, j], out[j, i] = -s, s
    return out


def _smooth_probs(shape: tuple[int, ...], classes: int, seed: int) -> torch.Tensor:
    """Smooth random class probabilities (blobs, so boundaries are not all ties)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    logits = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 2.0) * 8 for _ in range(classes)])
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float32), 0)


@pytest.mark.parametrize("classes", [2, 6])
def test_labels_are_those_of_invertd_on_an_oblique_flipped_grid(classes):
    # the input: oblique (two rotations), left-right flipped, anisotropic; the model's grid: RAS and
    # another spacing, whose inverse labels_on_grid is (inference undoes the brain crop and the
    # padding with MONAI first, on the model's grid)
    affine = _rotation(0, 17) @ _rotation(1, -9) @ np.diag([-0.9, 0.9, 2.5, 1.0])
    affine[:3, 3] = [60.0, -40.0, -20.0]
    image = MetaTensor(torch.zeros(40, 36, 14), affine=torch.as_tensor(affine))
    transform = Compose([EnsureChannelFirstd("image", channel_dim="no_channel"), Orientationd("image", "RAS"),
                         Spacingd("image", (2.0, 2.0, 3.0))])
    data = transform({"image": image})
    model_grid = data["image"]
    probs = _smooth_probs(tuple(model_grid.shape[1:]), classes, seed=classes)
    inverse = Invertd("pred", transform=transform, orig_keys="image", nearest_interp=False, to_tensor=True)
    back = inverse({**data, "pred": MetaTensor(probs, affine=model_grid.affine.clone())})["pred"]
    expected = torch.max(back.as_tensor(), dim=0).indices.numpy()
    labels = labels_on_grid(probs, model_grid.affine, affine, (40, 36, 14))
    assert labels.dtype == np.uint8 and labels.shape == (40, 36, 14)
    assert len(np.unique(labels)) > 1  # the blobs reach the input's grid
    assert np.array_equal(labels, expected)
    # slab by slab is the same as at once, whatever the slab
    assert np.array_equal(labels_on_grid(probs, model_grid.affine, affine, (40, 36, 14), slab_voxels=1), labels)


def test_outside_the_model_grid_is_background_and_bad_shapes_are_refused():
    probs = torch.zeros(2, 4, 4, 4)
    probs[1] = 1.0  # blood everywhere on the model's grid
    shifted = np.eye(4)
    shifted[0, 3] = 10.0  # the target lies beyond the model grid's edge along x
    assert not labels_on_grid(probs, np.eye(4), shifted, (4, 4, 4)).any()
    assert labels_on_grid(probs, np.eye(4), np.eye(4), (4, 4, 4)).all()
    with pytest.raises(ValueError, match="expected probabilities"):
        labels_on_grid(probs[0], np.eye(4), np.eye(4), (4, 4, 4))
    with pytest.raises(ValueError, match="3D target shape"):
        labels_on_grid(probs, np.eye(4), np.eye(4), (4, 4))
