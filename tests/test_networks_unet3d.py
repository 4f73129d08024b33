"""3D segmentation networks (MONAI UNet / DynUNet) and sliding-window inference."""

from __future__ import annotations

import io

import pytest
import torch

from ichct.networks import SEG_CLASSES, count_parameters, ich_unet3d, sliding_window_predict


def _state_dict_bytes(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


@pytest.mark.parametrize("variant", ["unet", "dynunet"])
@pytest.mark.parametrize("out_channels", [2, 6])
def test_output_shape_binary_and_six_class(variant: str, out_channels: int) -> None:
    torch.manual_seed(0)
    model = ich_unet3d(out_channels=out_channels, variant=variant).eval()
    x = torch.randn(2, 3, 32, 24, 16)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, out_channels, 32, 24, 16)
    assert torch.isfinite(y).all()


def test_six_class_label_order() -> None:
    assert len(SEG_CLASSES) == 6
    assert SEG_CLASSES[0] == "background"
    assert SEG_CLASSES[1:] == ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")


def test_default_parameter_counts_and_file_size() -> None:
    """The defaults stay small: ~1.2 M (UNet) / ~1.4 M (DynUNet) parameters, < 6 MB on disk."""
    unet = ich_unet3d()
    dyn = ich_unet3d(variant="dynunet")
    n_unet, n_dyn = count_parameters(unet), count_parameters(dyn)
    assert 1_000_000 < n_unet < 1_400_000, n_unet
    assert 1_200_000 < n_dyn < 1_600_000, n_dyn
    assert count_parameters(unet, trainable_only=True) == n_unet
    # float32 weights: about 4 bytes per parameter, far from the 20 MB limit
    for model, n in ((unet, n_unet), (dyn, n_dyn)):
        size = _state_dict_bytes(model)
        assert 4 * n <= size < 4 * n + 500_000
        assert size < 6 * 1024 * 1024


def test_depth_and_filters_configurable() -> None:
    small = ich_unet3d(channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    assert count_parameters(small) < count_parameters(ich_unet3d()) / 4
    y = small(torch.randn(1, 3, 16, 16, 8))
    assert y.shape == (1, 2, 16, 16, 8)


def test_anisotropic_strides_dynunet() -> None:
    model = ich_unet3d(variant="dynunet", strides=((2, 2, 1), (2, 2, 2), (2, 2, 1)), out_channels=6).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 32, 32, 8))
    assert y.shape == (1, 6, 32, 32, 8)


@pytest.mark.parametrize("supr", [1, 2])
def test_deep_supervision_train_and_eval(supr: int) -> None:
    torch.manual_seed(0)
    model = ich_unet3d(variant="dynunet", out_channels=6, deep_supervision=True, deep_supr_num=supr)
    x = torch.randn(2, 3, 32, 32, 16)
    model.train()
    y = model(x)
    assert y.shape == (2, 1 + supr, 6, 32, 32, 16)
    # every head is trained: a loss on the deepest head reaches the encoder's first layer
    y[:, -1].mean().backward()
    first = next(p for p in model.parameters() if p.ndim == 5)
    assert first.grad is not None and first.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 6, 32, 32, 16)


def test_gradients_reach_all_parameters() -> None:
    torch.manual_seed(0)
    model = ich_unet3d(channels=(8, 16, 32), strides=(2, 2), num_res_units=1).train()
    y = model(torch.randn(2, 3, 16, 16, 8))
    target = torch.randint(0, 2, (2, 16, 16, 8))
    torch.nn.functional.cross_entropy(y, target).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variant": "unet", "deep_supervision": True}, "dynunet"),
        ({"variant": "vnet"}, "variant"),
        ({"channels": (16, 32, 64), "strides": (2, 2, 2)}, "strides"),
        ({"out_channels": 1}, "out_channels"),
        ({"variant": "dynunet", "deep_supervision": True, "deep_supr_num": 3}, "deep_supr_num"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_configurations(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ich_unet3d(**kwargs)


def test_dropout_is_used_in_training_only() -> None:
    torch.manual_seed(0)
    model = ich_unet3d(channels=(8, 16), strides=(2,), num_res_units=1, dropout=0.5)
    x = torch.randn(1, 3, 8, 8, 8)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_sliding_window_larger_volume_shape_and_mode_restored() -> None:
    torch.manual_seed(0)
    model = ich_unet3d(out_channels=6).train()
    image = torch.randn(3, 70, 56, 40)
    out = sliding_window_predict(model, image, roi_size=(48, 48, 16), sw_batch_size=2, overlap=0.25)
    assert out.shape == (6, 70, 56, 40)
    assert type(out) is torch.Tensor and not out.requires_grad
    assert torch.isfinite(out).all()
    assert model.training  # the caller's mode is restored
    batched = sliding_window_predict(model, image[None].repeat(2, 1, 1, 1, 1), roi_size=(48, 48, 16))
    assert batched.shape == (2, 6, 70, 56, 40)
    torch.testing.assert_close(batched[0], out, atol=1e-5, rtol=1e-5)


def test_sliding_window_stitching_is_exact_for_a_pointwise_model() -> None:
    """Gaussian blending of identical per-voxel predictions must give those predictions back."""
    torch.manual_seed(0)
    model = torch.nn.Conv3d(3, 2, kernel_size=1)
    image = torch.randn(3, 50, 41, 23)
    out = sliding_window_predict(model, image, roi_size=16, overlap=0.5)
    with torch.no_grad():
        expected = model(image[None])[0]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_sliding_window_single_window_equals_forward() -> None:
    torch.manual_seed(0)
    model = ich_unet3d().eval()
    image = torch.randn(1, 3, 32, 32, 16)
    with torch.no_grad():
        expected = model(image)
    out = sliding_window_predict(model, image, roi_size=(32, 32, 16))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_sliding_window_rejects_bad_rank() -> None:
    with pytest.raises(ValueError, match="image"):
        sliding_window_predict(torch.nn.Identity(), torch.zeros(3, 8, 8), roi_size=4)
