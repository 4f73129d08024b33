"""Point-spread-function tails of a CT reconstruction kernel, as a training-time random transform on HU.

A real kernel's point-spread function has long, low tails besides its core: a few per cent of every
voxel's signal spreads over one or two millimetres. Next to bone (1,000-1,800 HU) that is a bright
halo of tens of HU in the brain under the inner table, of a size that differs between kernels and
scanners, and a segmenter trained on one scanner's halo reads a brighter one as subdural blood.
:func:`psf_tail` mixes a fraction of the image blurred by a normalised in-plane exponential
``exp(-r / length)`` back into it: ``(1 - fraction) x + fraction (E * x)``. The signal is kept
(the kernel sums to one); it only spreads.

The transform must see HU, not windowed intensities: once a window has clipped bone to its top,
the halo that 1,500 HU would throw is gone. In ichct's training chains it runs before
:class:`~ichct.transforms.MultiWindow` (``domain.psf_tail`` in the training config).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform
from monai.utils import convert_to_dst_type

from ichct.transforms.domain import RandDictTwin, checked_range

__all__ = ["RandPSFTail", "RandPSFTaild", "exponential_kernel", "psf_tail"]


def exponential_kernel(length_px: Sequence[float], reach: float = 4.0) -> torch.Tensor:
    """A normalised 2D kernel ``exp(-r / length)`` (``length_px``: the lengths along x and y, in pixels).

    The kernel reaches ``reach`` lengths from its centre (odd size, at least 3 x 3) and sums to one.

    Example
    -------
    >>> k = exponential_kernel((1.0, 1.0))
    >>> tuple(k.shape), round(float(k.sum()), 6), bool(k[4, 4] == k.max())
    ((9, 9), 1.0, True)
    """
    lx, ly = (max(float(v), 1e-3) for v in length_px)
    rx, ry = max(1, math.ceil(reach * lx)), max(1, math.ceil(reach * ly))
    x = torch.arange(-rx, rx + 1, dtype=torch.float32)[:, None] / lx
    y = torch.arange(-ry, ry + 1, dtype=torch.float32)[None, :] / ly
    kernel = torch.exp(-torch.sqrt(x * x + y * y))
    return kernel / kernel.sum()


def psf_tail(img: NdarrayOrTensor, fraction: float, length_px: Sequence[float]) -> NdarrayOrTensor:
    """``(1 - fraction) img + fraction (E * img)`` slice by slice, ``E`` :func:`exponential_kernel`.

    Parameters
    ----------
    img
        Channel-first HU image ``(C, X, Y[, Z])``; the blur is in the first two spatial axes.
    fraction
        Share of the signal in the tails, in ``[0, 1]``.
    length_px
        Exponential lengths along the two in-plane axes, in pixels.

    Returns
    -------
    The image (same type, shape, dtype, meta and affine); edges repeat.

    Example
    -------
    >>> import torch
    >>> hu = torch.full((1, 15, 15, 1), 30.0)
    >>> hu[0, :5] = 1500.0  # bone along one side
    >>> out = psf_tail(hu, 0.1, (1.0, 1.0))
    >>> round(float(out[0, 5, 7, 0] - hu[0, 5, 7, 0]), 1), float(out[0, 14, 7, 0])  # halo; far side untouched
    (48.3, 30.0)
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    x = torch.as_tensor(img).as_subclass(torch.Tensor)
    if fraction == 0.0:
        return img
    kernel = exponential_kernel(length_px).to(device=x.device)
    work = x.to(torch.float32)
    squeeze = work.ndim == 3
    if squeeze:
        work = work[..., None]
    c, nx, ny, nz = work.shape
    slices = work.permute(0, 3, 1, 2).reshape(c * nz, 1, nx, ny)
    px, py = (kernel.shape[0] - 1) // 2, (kernel.shape[1] - 1) // 2
    padded = torch.nn.functional.pad(slices, (py, py, px, px), mode="replicate")
    blurred = torch.nn.functional.conv2d(padded, kernel[None, None]).reshape(c, nz, nx, ny).permute(0, 2, 3, 1)
    out = (1.0 - fraction) * work + fraction * blurred
    if squeeze:
        out = out[..., 0]
    return convert_to_dst_type(out.to(x.dtype), img)[0]


def _pixel_mm(img: Any) -> tuple[float, float]:
    """The in-plane pixel size (mm) of a MetaTensor, 1 mm for anything without an affine."""
    if isinstance(img, MetaTensor):
        pixdim = [float(v) for v in img.pixdim[:2]]
        return pixdim[0], pixdim[1]
    return 1.0, 1.0


class RandPSFTail(RandomizableTransform):
    """:func:`psf_tail` with a random fraction and length (mm, converted with the image's pixel size).

    Parameters
    ----------
    fraction
        ``(low, high)``: share of the signal in the tails, drawn uniformly (within ``[0, 1]``).
    length_mm
        ``(low, high)``: the exponential length in mm, drawn uniformly (> 0).
    prob
        Probability of applying it.

    Example
    -------
    >>> import torch
    >>> from monai.data import MetaTensor
    >>> hu = MetaTensor(torch.full((1, 12, 12, 2), 30.0), affine=torch.diag(torch.tensor([0.5, 0.5, 5.0, 1.0])))
    >>> out = RandPSFTail(fraction=(0.05, 0.1), length_mm=(1.0, 2.0), prob=1.0)(hu)  # uniform: unchanged
    >>> bool(torch.allclose(out, hu)), out.affine.diagonal().tolist()
    (True, [0.5, 0.5, 5.0, 1.0])
    """

    def __init__(self, fraction: Sequence[float] = (0.02, 0.12), length_mm: Sequence[float] = (0.8, 2.0),
                 prob: float = 0.1) -> None:
        RandomizableTransform.__init__(self, prob)
        self.fraction_range = checked_range(fraction, "fraction", 0.0, 1.0)
        self.length_range = checked_range(length_mm, "length_mm", 1e-6)
        self.fraction, self.length_mm = 0.0, 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.fraction = float(self.R.uniform(*self.fraction_range))
            self.length_mm = float(self.R.uniform(*self.length_range))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """``img`` (HU) with the drawn tails (when drawn)."""
        if randomize:
            self.randomize(img)
        if not self._do_transform:
            return img
        px, py = _pixel_mm(img)
        return psf_tail(img, self.fraction, (self.length_mm / px, self.length_mm / py))


class RandPSFTaild(RandDictTwin):
    """Dictionary twin of :class:`RandPSFTail`: one draw applied to every key.

    Example
    -------
    >>> import torch
    >>> d = RandPSFTaild("image", fraction=(0.1, 0.1), length_mm=(1.0, 1.0), prob=1.0)({"image": torch.ones(1, 8, 8, 2)})
    >>> bool(torch.allclose(d["image"], torch.ones(1, 8, 8, 2)))
    True
    """

    def __init__(self, keys: KeysCollection, fraction: Sequence[float] = (0.02, 0.12),
                 length_mm: Sequence[float] = (0.8, 2.0), prob: float = 0.1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, RandPSFTail(fraction, length_mm, prob=1.0), prob, allow_missing_keys)
