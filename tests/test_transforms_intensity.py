"""HU windowing: HUWindow(d), MultiWindow(d), DEFAULT_WINDOWS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ichct.transforms import DEFAULT_WINDOWS, HUWindow, HUWindowd, MultiWindow, MultiWindowd
from ichct.transforms.intensity import WINDOW_NAMES_KEY

AFFINE = torch.tensor([[-0.5, 0, 0, 10.0], [0, -0.5, 0, 20.0], [0, 0, 5.0, -30.0], [0, 0, 0, 1]], dtype=torch.float64)


def hu_image(values: list[float]) -> MetaTensor:
    """A (1, N, 1, 1) MetaTensor holding the given HU values along the first spatial axis."""
    arr = torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1)
    return MetaTensor(arr, affine=AFFINE.clone(), meta={"series_uid": "1.2.3"})


def test_default_windows_order_and_values():
    assert list(DEFAULT_WINDOWS) == ["brain", "subdural", "soft_tissue"]
    assert DEFAULT_WINDOWS["brain"] == (40.0, 80.0)
    assert DEFAULT_WINDOWS["subdural"] == (80.0, 200.0)
    assert DEFAULT_WINDOWS["soft_tissue"] == (40.0, 380.0)
    with pytest.raises(TypeError):
        DEFAULT_WINDOWS["bone"] = (600.0, 2800.0)  # read-only


def test_huwindow_known_values():
    # level - w/2, level - w/4, level, level + w/2, far below, far above
    out = HUWindow(level=40, width=80)(hu_image([0.0, 20.0, 40.0, 80.0, -1000.0, 1000.0]))
    np.testing.assert_allclose(out.flatten().numpy(), [0.0, 0.25, 0.5, 1.0, 0.0, 1.0], atol=1e-6)
    assert out.dtype == torch.float32


def test_huwindow_custom_range_and_no_clip():
    out = HUWindow(level=0, width=100, out_min=-1.0, out_max=1.0, clip=False)(hu_image([-50.0, 0.0, 50.0, 100.0]))
    np.testing.assert_allclose(out.flatten().numpy(), [-1.0, 0.0, 1.0, 2.0], atol=1e-6)


def test_huwindow_rejects_bad_width():
    with pytest.raises(ValueError):
        HUWindow(level=40, width=0)


def test_huwindow_keeps_affine_and_meta():
    img = hu_image([0.0, 40.0])
    out = HUWindow(40, 80)(img)
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, AFFINE)
    assert out.meta["series_uid"] == "1.2.3"


def test_huwindowd_keys_and_missing():
    data = {"image": hu_image([40.0]), "label": hu_image([40.0])}
    out = HUWindowd(keys="image", level=40, width=80)(data)
    assert float(out["image"].flatten()[0]) == pytest.approx(0.5)
    assert float(out["label"].flatten()[0]) == pytest.approx(40.0)  # untouched
    with pytest.raises(KeyError):
        HUWindowd(keys="other", level=40, width=80)(data)
    kept = HUWindowd(keys=["image", "other"], level=40, width=80, allow_missing_keys=True)(data)
    assert set(kept) == {"image", "label"}


def test_multiwindow_channels_order_values():
    hu = [0.0, 40.0, 80.0, -20.0, 180.0, -150.0, 230.0]
    out = MultiWindow()(hu_image(hu))
    assert tuple(out.shape) == (3, len(hu), 1, 1)
    got = out[:, :, 0, 0].numpy()
    expected = np.stack([
        np.clip((np.array(hu) - (level - width / 2)) / width, 0, 1) for level, width in DEFAULT_WINDOWS.values()
    ])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # spot checks: brain window 0/40/80 -> 0/0.5/1; subdural -20 -> 0, 180 -> 1; soft tissue -150 -> 0, 230 -> 1
    np.testing.assert_allclose(got[0, :3], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(got[1, [3, 4, 2]], [0.0, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(got[2, [5, 6, 1]], [0.0, 1.0, 0.5], atol=1e-6)


def test_multiwindow_keeps_metatensor_meta_and_ops():
    img = hu_image([0.0, 40.0])
    img.applied_operations.append({"class": "Marker"})
    out = MultiWindow({"a": (0, 10), "b": (100, 10)})(img)
    assert isinstance(out, MetaTensor)
    assert out.shape[0] == 2
    torch.testing.assert_close(out.affine, AFFINE)
    assert out.meta["series_uid"] == "1.2.3"
    assert out.meta[WINDOW_NAMES_KEY] == "a,b"
    assert out.applied_operations == [{"class": "Marker"}]


def test_multiwindow_numpy_and_bad_input():
    out = MultiWindow()(np.full((1, 2, 2, 2), 40.0, dtype=np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (3, 2, 2, 2)
    np.testing.assert_allclose(out[:, 0, 0, 0], [0.5, 0.3, (40 + 150) / 380], atol=1e-6)
    with pytest.raises(ValueError):
        MultiWindow()(np.zeros((2, 2, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError):
        MultiWindow({})


def test_multiwindowd():
    data = {"image": hu_image([40.0, 80.0]), "label": hu_image([1.0, 0.0])}
    out = MultiWindowd(keys=["image", "missing"], allow_missing_keys=True)(data)
    assert out["image"].shape[0] == 3
    assert out["label"].shape[0] == 1
    torch.testing.assert_close(out["image"].affine, AFFINE)
