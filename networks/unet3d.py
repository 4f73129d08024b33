"""3D U-Nets for hemorrhage segmentation of multi-window head CT, and sliding-window inference.

The input is a channel-first CT patch ``(B, C, X, Y, Z)`` whose channels are HU windows of the
same volume (by default brain, subdural and soft-tissue windows, so ``in_channels=3``). The output
holds one logit channel per class:

* ``out_channels=2``: background vs blood (binary segmentation);
* ``out_channels=6``: background + the five subtypes in the order of :data:`SEG_CLASSES`
  (epidural, intraparenchymal, intraventricular, subarachnoid, subdural).

The defaults are deliberately small (about 1.2 M parameters for ``variant="unet"``, under 5 MB as
a float32 state dict) so that a CPU can train the model in minutes on ``96 x 96 x 32`` patches.

This module imports only torch and MONAI (never another part of ``ichct``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import DynUNet, UNet

from .mirror import mirror_ensemble

__all__ = ["SEG_CLASSES", "ich_unet3d", "sliding_window_predict", "count_parameters"]

#: Label order of the 6-class segmentation (label value == index). Label 0 is background; the
#: binary model uses labels 0 (background) and 1 (blood, any subtype).
SEG_CLASSES: tuple[str, ...] = (
    "background",
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)

_VARIANTS = ("unet", "dynunet")

Stride = int | Sequence[int]


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model``.

    Parameters
    ----------
    model
        Any torch module.
    trainable_only
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int
        The number of scalar parameters.

    Examples
    --------
    >>> import torch
    >>> from ichct.networks import count_parameters
    >>> layer = torch.nn.Linear(3, 2)  # 3 x 2 weights + 2 biases
    >>> _ = layer.bias.requires_grad_(False)
    >>> count_parameters(layer), count_parameters(layer, trainable_only=True)
    (8, 6)
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def ich_unet3d(
    in_channels: int = 3,
    out_channels: int = 2,
    variant: str = "unet",
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[Stride] = (2, 2, 2),
    num_res_units: int = 2,
    deep_supervision: bool = False,
    dropout: float = 0.0,
    *,
    kernel_size: int = 3,
    deep_supr_num: int = 1,
    norm: str | tuple = "instance",
) -> torch.nn.Module:
    """Build a 3D segmentation network for multi-window head CT.

    Parameters
    ----------
    in_channels
        Number of input channels (HU windows); 3 for the default brain/subdural/soft-tissue stack.
    out_channels
        Number of output classes including background: 2 (background vs blood) or 6 (background +
        five subtypes, see :data:`SEG_CLASSES`). Other values >= 2 are accepted for experiments.
    variant
        ``"unet"`` for :class:`monai.networks.nets.UNet` (residual units) or ``"dynunet"`` for
        :class:`monai.networks.nets.DynUNet` (nnU-Net style; the only variant with deep supervision).
    channels
        Feature maps per resolution level, from the finest to the bottleneck. Its length is the
        number of levels (the depth).
    strides
        Down-sampling stride between consecutive levels; ``len(strides) == len(channels) - 1``.
        Each entry is an int or a per-axis triple (e.g. ``(2, 2, 1)`` to keep thick-slice Z).
        The input size must be divisible by the product of the strides on every axis.
    num_res_units
        Residual units per block for ``"unet"``. For ``"dynunet"`` any value > 0 selects residual
        blocks (``res_block=True``).
    deep_supervision
        ``"dynunet"`` only. In training mode the forward pass then returns a tensor of shape
        ``(B, 1 + deep_supr_num, out_channels, X, Y, Z)``: the final logits at index 0 followed by
        the up-sampled logits of the deeper decoder levels. In eval mode it returns the usual
        ``(B, out_channels, X, Y, Z)`` logits.
    dropout
        Dropout probability inside the blocks.
    kernel_size
        Convolution kernel size.
    deep_supr_num
        Number of deep-supervision heads (``1 <= deep_supr_num < len(channels) - 1``).
    norm
        Normalisation layer name (MONAI naming), instance norm by default.

    Returns
    -------
    torch.nn.Module
        The network; its forward pass maps ``(B, in_channels, X, Y, Z)`` to
        ``(B, out_channels, X, Y, Z)`` logits (see ``deep_supervision`` for the training output).

    Raises
    ------
    ValueError
        On an unknown variant, inconsistent channels/strides, or deep supervision with ``"unet"``.

    Examples
    --------
    A tiny two-level UNet on a 3-window patch (the input size must be divisible by the strides):

    >>> import torch
    >>> from ichct.networks import ich_unet3d
    >>> _ = torch.manual_seed(0)
    >>> net = ich_unet3d(in_channels=3, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    >>> with torch.no_grad():
    ...     logits = net(torch.rand(1, 3, 8, 8, 4))
    >>> logits.shape
    torch.Size([1, 2, 8, 8, 4])
    """
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if out_channels < 2:
        raise ValueError(f"out_channels must be >= 2 (background + classes), got {out_channels}")
    channels = tuple(int(c) for c in channels)
    strides = tuple(strides)
    if len(channels) < 2:
        raise ValueError(f"channels needs at least 2 levels, got {channels}")
    if len(strides) != len(channels) - 1:
        raise ValueError(
            f"len(strides) must be len(channels) - 1 = {len(channels) - 1}, got strides={strides}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    if variant == "unet":
        if deep_supervision:
            raise ValueError("deep_supervision needs variant='dynunet' (MONAI UNet has no heads)")
        return UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            strides=strides,
            kernel_size=kernel_size,
            up_kernel_size=kernel_size,
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )

    if deep_supervision and not 1 <= deep_supr_num < len(channels) - 1:
        raise ValueError(
            f"deep_supr_num must be in [1, {len(channels) - 2}] for {len(channels)} levels, "
            f"got {deep_supr_num}"
        )
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[kernel_size] * len(channels),
        strides=[1, *strides],
        upsample_kernel_size=list(strides),
        filters=channels,
        dropout=dropout if dropout > 0 else None,
        norm_name=(norm, {"affine": True}) if isinstance(norm, str) else norm,
        deep_supervision=deep_supervision,
        deep_supr_num=deep_supr_num,
        res_block=num_res_units > 0,
    )


@torch.no_grad()
def sliding_window_predict(
    model: torch.nn.Module,
    image: torch.Tensor,
    roi_size: int | Sequence[int],
    sw_batch_size: int = 2,
    overlap: float = 0.25,
    *,
    mode: str = "gaussian",
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    mirror_axes: Sequence[int] = (),
) -> torch.Tensor:
    """Segment a whole volume patch by patch with Gaussian-weighted blending.

    The model is run in eval mode (its previous mode is restored afterwards) without gradients,
    through :class:`monai.inferers.SlidingWindowInferer`. Volumes smaller than ``roi_size`` are
    padded by the inferer and cropped back.

    Parameters
    ----------
    model
        A segmentation network mapping ``(B, C, *roi_size)`` to ``(B, K, *roi_size)``.
    image
        ``(C, X, Y, Z)`` or ``(B, C, X, Y, Z)`` tensor.
    roi_size
        Patch size (an int for a cube); use the training patch size, e.g. ``(96, 96, 32)``.
    sw_batch_size
        Patches per forward pass.
    overlap
        Fractional overlap of neighbouring patches.
    mode
        Blending mode of the inferer (``"gaussian"`` or ``"constant"``).
    sw_device, device
        Where patches are computed and where the output is stitched (inferer defaults: the
        image's device).
    mirror_axes
        Spatial axes to mirror at test time: the logits are the mean over the input mirrored
        along every subset of them (:func:`~ichct.networks.mirror.mirror_ensemble`); empty: one pass.

    Returns
    -------
    torch.Tensor
        Logits with the image's spatial shape: ``(K, X, Y, Z)`` for an unbatched image, else
        ``(B, K, X, Y, Z)``.

    Examples
    --------
    >>> import torch
    >>> from ichct.networks import ich_unet3d, sliding_window_predict
    >>> _ = torch.manual_seed(0)
    >>> net = ich_unet3d(in_channels=3, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0)
    >>> logits = sliding_window_predict(net, torch.rand(3, 16, 12, 6), roi_size=(8, 8, 4))
    >>> logits.shape, net.training  # the whole volume; the model's mode is restored
    (torch.Size([2, 16, 12, 6]), True)
    """
    unbatched = image.ndim == 4
    if image.ndim not in (4, 5):
        raise ValueError(f"image must be (C, X, Y, Z) or (B, C, X, Y, Z), got shape {tuple(image.shape)}")
    batch = image.unsqueeze(0) if unbatched else image
    inferer = SlidingWindowInferer(
        roi_size=roi_size,
        sw_batch_size=sw_batch_size,
        overlap=overlap,
        mode=mode,
        sw_device=sw_device,
        device=device,
    )
    was_training = model.training
    model.eval()
    try:
        out = mirror_ensemble(lambda x: inferer(x, model), batch, mirror_axes)
    finally:
        model.train(was_training)
    if isinstance(out, MetaTensor):  # plain tensor out, whatever the input type
        out = out.as_tensor()
    return out[0] if unbatched else out
