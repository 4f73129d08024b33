"""Domain randomisation of windowed head CT: HU offsets, HU noise and slice thickness.

Training sees one scanner's worth of images; these transforms imitate what another scanner or
protocol changes, on images that are already windowed (the channels of
:class:`~ichct.transforms.MultiWindow`, each a HU window mapped to ``[out_min, out_max]``), so
that they run after a cache of the deterministic preprocessing:

* :class:`RandHUOffset` - a calibration offset of a few HU. A shift of ``d`` HU is ``d / width``
  in the channel of a window of that width, so every channel moves by the same HU;
* :class:`RandHUNoise` - Gaussian noise with its SD in HU (one noise image, the same HU in every
  channel), optionally with texture (the noise smoothed in-plane, its SD kept);
* :class:`RandSliceThickness` - a thicker slice: the image averaged along the slice axis through a
  box a random factor times the slice spacing wide, sampled at that spacing and interpolated back
  to the grid (shape, meta and affine kept).

In the HU transforms a saturated voxel (at ``out_min`` or ``out_max``: HU outside the window, air
or bone) stays as it is, since a few HU do not bring it into the window; every other voxel moves
and is clipped to the output range. Each array transform has a dictionary twin (``...d``) that
applies one random draw to all its keys.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type

__all__ = ["RandDictTwin", "checked_range", "RandHUOffset", "RandHUOffsetd", "RandHUNoise", "RandHUNoised", "RandSliceThickness",
           "RandSliceThicknessd", "add_hu", "simulate_slice_thickness"]


def checked_range(value: Sequence[float], name: str, minimum: float | None = None,
                  maximum: float | None = None) -> tuple[float, float]:
    """A transform's ``(low, high)`` range as floats; ValueError naming ``name`` unless
    ``minimum <= low <= high <= maximum`` (each bound only when given).

    Example
    -------
    >>> checked_range([1, 2], "factor", 1.0)
    (1.0, 2.0)
    """
    low, high = (float(v) for v in value)
    if low > high or (minimum is not None and low < minimum) or (maximum is not None and high > maximum):
        bound = f" and low >= {minimum:g}" if minimum is not None else ""
        bound += f" and high <= {maximum:g}" if maximum is not None else ""
        raise ValueError(f"{name} must be (low, high) with low <= high{bound}, got {tuple(value)!r}")
    return low, high


def add_hu(windowed: NdarrayOrTensor, delta_hu: Any, widths_hu: Sequence[float], out_min: float = 0.0,
           out_max: float = 1.0) -> NdarrayOrTensor:
    """Add ``delta_hu`` (HU: a number, or an array of the spatial shape) to every channel of a windowed image.

    Parameters
    ----------
    windowed
        ``(C, *spatial)``, channel ``c`` a HU window of width ``widths_hu[c]`` mapped onto
        ``[out_min, out_max]``.
    delta_hu
        The change in HU; broadcast over the channels.
    widths_hu
        The window width (HU) of each channel, in channel order.
    out_min, out_max
        The windows' output range.

    Returns
    -------
    The image (same type, meta and affine): each voxel inside its window moved by
    ``delta_hu * (out_max - out_min) / width`` and clipped to the range; saturated voxels kept.

    Examples
    --------
    >>> import torch
    >>> img = torch.tensor([[[0.0, 0.5, 1.0]], [[0.0, 0.5, 1.0]]])  # two windows: 80 and 200 HU wide
    >>> add_hu(img, 8.0, [80.0, 200.0]).tolist()
    [[[0.0, 0.6000000238418579, 1.0]], [[0.0, 0.5400000214576721, 1.0]]]
    """
    x = torch.as_tensor(windowed)
    if x.shape[0] != len(widths_hu):
        raise ValueError(f"the image has {x.shape[0]} channels but {len(widths_hu)} window widths are given")
    scale = torch.as_tensor([(out_max - out_min) / float(w) for w in widths_hu], dtype=x.dtype, device=x.device)
    scale = scale.reshape(-1, *([1] * (x.ndim - 1)))
    delta = torch.as_tensor(delta_hu, dtype=x.dtype, device=x.device)
    inside = (x > out_min) & (x < out_max)
    moved = torch.where(inside, torch.clamp(x + delta * scale, out_min, out_max), x)
    return convert_to_dst_type(moved.as_subclass(torch.Tensor), windowed)[0]


class _HUChange(RandomizableTransform):
    """Base of the HU transforms: the windows' widths and output range, and :func:`add_hu`."""

    def __init__(self, widths_hu: Sequence[float], prob: float, out_min: float, out_max: float) -> None:
        RandomizableTransform.__init__(self, prob)
        self.widths_hu = [float(w) for w in widths_hu]
        if not self.widths_hu or min(self.widths_hu) <= 0:
            raise ValueError(f"widths_hu must be window widths > 0, got {widths_hu!r}")
        self.out_min, self.out_max = float(out_min), float(out_max)

    def delta_hu(self, img: NdarrayOrTensor) -> Any:
        """The HU to add (drawn by :meth:`randomize`)."""
        raise NotImplementedError

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """``img`` (``(C, *spatial)``, one channel per width) with the drawn HU change (when drawn)."""
        if randomize:
            self.randomize(img)
        if not self._do_transform:
            return img
        return add_hu(img, self.delta_hu(img), self.widths_hu, self.out_min, self.out_max)


class RandHUOffset(_HUChange):
    """Shift a windowed image by a random offset in HU, the same HU in every channel.

    Parameters
    ----------
    widths_hu
        Width (HU) of each channel's window, in channel order.
    offset_hu
        ``(low, high)``: the offset is drawn uniformly from it.
    prob
        Probability of shifting.
    out_min, out_max
        The windows' output range (saturated voxels are kept, see :func:`add_hu`).

    Examples
    --------
    >>> import torch
    >>> t = RandHUOffset([80.0, 200.0], offset_hu=(4.0, 4.0), prob=1.0)
    >>> t(torch.full((2, 2, 2, 2), 0.5))[:, 0, 0, 0].tolist()
    [0.550000011920929, 0.5199999809265137]
    """

    def __init__(self, widths_hu: Sequence[float], offset_hu: Sequence[float] = (-5.0, 5.0), prob: float = 0.1,
                 out_min: float = 0.0, out_max: float = 1.0) -> None:
        super().__init__(widths_hu, prob, out_min, out_max)
        self.offset_hu = checked_range(offset_hu, "offset_hu")
        self.offset = 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.offset = float(self.R.uniform(*self.offset_hu))

    def delta_hu(self, img: NdarrayOrTensor) -> Any:
        return self.offset


class RandHUNoise(_HUChange):
    """Add Gaussian noise with a random SD in HU (optionally textured) to a windowed image.

    One noise image of the spatial shape is drawn and added to every channel as HU (``n / width``
    in a channel of that window), as scanner noise is one HU image seen through each window.

    Parameters
    ----------
    widths_hu
        Width (HU) of each channel's window, in channel order.
    std_hu
        ``(low, high)``: the noise SD (HU) is drawn uniformly from it (low >= 0).
    texture_sigma
        ``(low, high)``: the in-plane Gaussian sigma (voxels) that smooths the noise before it is
        scaled to its SD (0: white noise; larger: the coarser grain of a soft kernel), low >= 0.
    prob
        Probability of adding noise.
    out_min, out_max
        The windows' output range (saturated voxels are kept, see :func:`add_hu`).

    Examples
    --------
    >>> import torch
    >>> t = RandHUNoise([80.0], std_hu=(10.0, 10.0), prob=1.0)
    >>> _ = t.set_random_state(0)
    >>> noisy = t(torch.full((1, 32, 32, 8), 0.5))
    >>> round(float((noisy - 0.5).std() * 80), 0)  # the SD in HU
    10.0
    """

    def __init__(self, widths_hu: Sequence[float], std_hu: Sequence[float] = (0.0, 10.0),
                 texture_sigma: Sequence[float] = (0.0, 0.0), prob: float = 0.1, out_min: float = 0.0,
                 out_max: float = 1.0) -> None:
        super().__init__(widths_hu, prob, out_min, out_max)
        self.std_hu = checked_range(std_hu, "std_hu", 0.0)
        self.texture_sigma = checked_range(texture_sigma, "texture_sigma", 0.0)
        self.noise: np.ndarray | None = None

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform or data is None:
            return
        from scipy.ndimage import gaussian_filter

        std, sigma = float(self.R.uniform(*self.std_hu)), float(self.R.uniform(*self.texture_sigma))
        field = self.R.standard_normal(tuple(data.shape[1:])).astype(np.float32)
        if sigma > 0:
            axes_sigma = [sigma, sigma] + [0.0] * (field.ndim - 2)  # in-plane: the first two spatial axes
            field = gaussian_filter(field, axes_sigma, mode="reflect")
        sd = float(field.std())
        self.noise = field * (std / sd) if sd > 0 else field * 0.0

    def delta_hu(self, img: NdarrayOrTensor) -> Any:
        if self.noise is None or tuple(self.noise.shape) != tuple(img.shape[1:]):
            raise RuntimeError("RandHUNoise: randomize(img) must run with this image's shape before the noise is added")
        return self.noise


def _sample_linear(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``values`` (``(..., n)``) linearly interpolated at fractional ``positions`` (clamped to the ends)."""
    n = values.shape[-1]
    pos = positions.clamp(0, n - 1)
    lower = pos.floor().long().clamp(max=max(n - 2, 0))
    frac = (pos - lower).to(values.dtype)
    upper = (lower + 1).clamp(max=n - 1)
    return values[..., lower] * (1 - frac) + values[..., upper] * frac


def simulate_slice_thickness(img: NdarrayOrTensor, factor: float, phase: float = 0.0,
                             axis: int = -1) -> NdarrayOrTensor:
    """``img`` as if scanned with slices ``factor`` times as thick, resampled back to its grid.

    Along ``axis`` the image is averaged through a box ``factor`` voxels wide (the slice profile),
    sampled every ``factor`` voxels starting ``phase * factor`` from the first voxel, and
    interpolated back linearly onto the original positions; edges repeat.

    Parameters
    ----------
    img
        Channel-first image ``(C, *spatial)``.
    factor
        Thickness relative to the voxel spacing along ``axis`` (>= 1; 1 returns the input).
    phase
        Where the thick slices start, as a fraction of their spacing, in ``[0, 1)``.
    axis
        The slice axis (a spatial axis; -1: the last).

    Returns
    -------
    The image with the same shape, dtype, meta and affine.

    Examples
    --------
    >>> import torch
    >>> step = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    >>> simulate_slice_thickness(step, 2.0)[0].tolist()  # thick slices at voxels 0, 2, 4: the edge spreads
    [0.0, 0.125, 0.25, 0.625, 1.0, 1.0]
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    x = torch.as_tensor(img).as_subclass(torch.Tensor)
    if factor == 1 or x.shape[axis] < 2:
        return img
    work = x.movedim(axis, -1).to(torch.float32)
    n = work.shape[-1]
    half = factor / 2.0
    reach = int(math.ceil(half - 0.5))
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32)
    weights = (torch.minimum(offsets + 0.5, torch.tensor(half)) - torch.maximum(offsets - 0.5, torch.tensor(-half)))
    weights = weights.clamp(min=0) / factor
    flat = work.reshape(-1, 1, n)
    padded = torch.nn.functional.pad(flat, (reach, reach), mode="replicate") if reach else flat
    averaged = torch.nn.functional.conv1d(padded, weights.reshape(1, 1, -1)).reshape(work.shape)
    first = (phase % 1.0 - 1.0) * factor  # the first thick slice at or before voxel 0
    count = int(math.ceil((n - 1 - first) / factor)) + 1  # through the last voxel
    centres = first + factor * torch.arange(count, dtype=torch.float32)
    thick = _sample_linear(averaged, centres)
    back = _sample_linear(thick, (torch.arange(n, dtype=torch.float32) - first) / factor)
    out = back.to(x.dtype).movedim(-1, axis)
    return convert_to_dst_type(out, img)[0]


class RandSliceThickness(RandomizableTransform):
    """Simulate a thicker slice (:func:`simulate_slice_thickness`) with a random factor and phase.

    Parameters
    ----------
    factor
        ``(low, high)``: the thickness relative to the current slice spacing, drawn uniformly
        (low >= 1); e.g. ``(1, 2)`` on a 2.5 mm grid simulates slices of 2.5 to 5 mm.
    prob
        Probability of applying it.
    axis
        The slice axis of the spatial axes (-1: the last, the slices of head CT in RAS).

    Examples
    --------
    >>> import torch
    >>> from monai.data import MetaTensor
    >>> img = MetaTensor(torch.rand(1, 4, 4, 1).repeat(1, 1, 1, 6), affine=torch.diag(torch.tensor([1.0, 1, 5, 1])))
    >>> out = RandSliceThickness(factor=(1.5, 3.0), prob=1.0)(img)  # constant along the slices: unchanged
    >>> out.shape, bool(torch.allclose(out, img)), out.affine.diagonal().tolist()
    (torch.Size([1, 4, 4, 6]), True, [1.0, 1.0, 5.0, 1.0])
    """

    def __init__(self, factor: Sequence[float] = (1.0, 2.0), prob: float = 0.1, axis: int = -1) -> None:
        RandomizableTransform.__init__(self, prob)
        self.factor_range = checked_range(factor, "factor", 1.0)
        self.axis = int(axis)
        self.factor, self.phase = 1.0, 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.factor, self.phase = float(self.R.uniform(*self.factor_range)), float(self.R.uniform(0.0, 1.0))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """``img`` with the drawn slice thickness (when drawn)."""
        if randomize:
            self.randomize(img)
        if not self._do_transform:
            return img
        return simulate_slice_thickness(img, self.factor, self.phase, self.axis)


class RandDictTwin(RandomizableTransform, MapTransform):
    """Dictionary twin of a random array transform: one draw (on the first key) for every key.

    ``transform`` is the array transform (``prob`` 1: this twin draws whether to apply it); it
    must offer ``randomize(img)`` and ``__call__(img, randomize=False)``.

    Examples
    --------
    >>> import torch
    >>> twin = RandDictTwin(["a", "b"], RandHUOffset([80.0], offset_hu=(8.0, 8.0), prob=1.0), 1.0, False)
    >>> out = twin({"a": torch.full((1, 2, 2), 0.5), "b": torch.full((1, 2, 2), 0.5)})
    >>> round(float(out["a"].mean()), 3), round(float(out["b"].mean()), 3)  # one draw for both keys
    (0.6, 0.6)
    """

    def __init__(self, keys: KeysCollection, transform: Any, prob: float, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandDictTwin:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        first = self.first_key(d)
        if not self._do_transform or first == ():
            return d
        self.transform.randomize(d[first])
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], randomize=False)
        return d


class RandHUOffsetd(RandDictTwin):
    """Dictionary twin of :class:`RandHUOffset` (image keys only); see it for the parameters.

    Examples
    --------
    >>> import torch
    >>> t = RandHUOffsetd("image", widths_hu=[80.0], offset_hu=(-8.0, -8.0), prob=1.0)
    >>> t({"image": torch.full((1, 2, 2, 2), 0.5)})["image"].flatten()[0].item()
    0.4000000059604645
    """

    def __init__(self, keys: KeysCollection, widths_hu: Sequence[float], offset_hu: Sequence[float] = (-5.0, 5.0),
                 prob: float = 0.1, out_min: float = 0.0, out_max: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, RandHUOffset(widths_hu, offset_hu, 1.0, out_min, out_max), prob, allow_missing_keys)


class RandHUNoised(RandDictTwin):
    """Dictionary twin of :class:`RandHUNoise` (image keys only); see it for the parameters.

    Examples
    --------
    >>> import torch
    >>> t = RandHUNoised("image", widths_hu=[80.0, 200.0], std_hu=(5.0, 5.0), prob=1.0).set_random_state(0)
    >>> out = t({"image": torch.full((2, 16, 16, 4), 0.5)})["image"]
    >>> bool(torch.allclose((out[0] - 0.5) * 80, (out[1] - 0.5) * 200, atol=1e-4))  # the same HU in both
    True
    """

    def __init__(self, keys: KeysCollection, widths_hu: Sequence[float], std_hu: Sequence[float] = (0.0, 10.0),
                 texture_sigma: Sequence[float] = (0.0, 0.0), prob: float = 0.1, out_min: float = 0.0,
                 out_max: float = 1.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, RandHUNoise(widths_hu, std_hu, texture_sigma, 1.0, out_min, out_max), prob,
                         allow_missing_keys)


class RandSliceThicknessd(RandDictTwin):
    """Dictionary twin of :class:`RandSliceThickness` (image keys only); see it for the parameters.

    Examples
    --------
    >>> import torch
    >>> step = torch.tensor([[[[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]]]])
    >>> out = RandSliceThicknessd("image", factor=(2.0, 2.0), prob=1.0)({"image": step})["image"]
    >>> out.shape, bool(0 < out[0, 0, 0, 2] < out[0, 0, 0, 3] < 1)  # the step is smoothed
    (torch.Size([1, 1, 1, 6]), True)
    """

    def __init__(self, keys: KeysCollection, factor: Sequence[float] = (1.0, 2.0), prob: float = 0.1,
                 axis: int = -1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, RandSliceThickness(factor, 1.0, axis), prob, allow_missing_keys)
