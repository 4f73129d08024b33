"""Test-time mirroring: the mean prediction over mirrored copies of the input (nnU-Net's "mirroring").

A network trained with random flips along an axis has seen both mirror images of every study;
averaging its outputs over them removes the part of its error that depends on which side the
bleed is on. :func:`mirror_ensemble` does it for any prediction function,
:class:`MirrorEnsembleInferer` for a MONAI inferer (a bundle's ``inferer``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["mirror_ensemble", "mirror_combinations", "MirrorEnsembleInferer"]


def mirror_combinations(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``mirror_axes`` (the empty one first): the mirrorings nnU-Net averages.

    Examples
    --------
    >>> mirror_combinations([0])
    [(), (0,)]
    >>> len(mirror_combinations([0, 1, 2]))
    8
    """
    axes = tuple(int(a) for a in mirror_axes)
    if len(set(axes)) != len(axes) or any(a < 0 or a != b for a, b in zip(axes, mirror_axes)):
        raise ValueError(f"mirror_axes must be distinct spatial axes >= 0, got {list(mirror_axes)}")
    return [c for n in range(len(axes) + 1) for c in itertools.combinations(axes, n)]


def mirror_ensemble(predict: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
                    mirror_axes: Sequence[int] = (), *, spatial_output: bool = True) -> torch.Tensor:
    """The mean of ``predict`` over ``batch`` mirrored along every subset of ``mirror_axes``.

    Parameters
    ----------
    predict
        Maps a ``(B, C, *spatial)`` tensor to a tensor (logits: their mean is what is returned).
    batch
        ``(B, C, *spatial)`` input.
    mirror_axes
        Spatial axes (0 is the first axis after the channel) to mirror; empty: ``predict(batch)``.
    spatial_output
        The output is ``(B, K, *spatial)`` on the input's grid, so each prediction is mirrored
        back before averaging (a segmentation); False for an output without those axes (per-slice
        logits of in-plane mirrored slices).

    Returns
    -------
    torch.Tensor
        The averaged output.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(4.0).reshape(1, 1, 4)
    >>> mirror_ensemble(lambda t: t * 2, x, [0])  # equivariant: mirrored back, unchanged
    tensor([[[0., 2., 4., 6.]]])
    >>> mirror_ensemble(lambda t: t[..., :1], x, [0], spatial_output=False)  # mean of first and last
    tensor([[[1.5000]]])
    """
    combos = mirror_combinations(mirror_axes)
    if combos[-1] and max(combos[-1]) >= batch.ndim - 2:
        raise ValueError(f"mirror_axes {list(mirror_axes)} outside the {batch.ndim - 2} spatial axes of the input")
    total = None
    for axes in combos:
        dims = [a + 2 for a in axes]
        out = predict(torch.flip(batch, dims) if dims else batch)
        if dims and spatial_output:
            out = torch.flip(out, dims)
        total = out.float() if total is None else total + out.float()
    return total / len(combos)


class MirrorEnsembleInferer(Inferer):
    """A MONAI inferer averaging another inferer's output over mirrored inputs (:func:`mirror_ensemble`).

    Parameters
    ----------
    inferer
        The inferer run on each mirrored copy (a ``SlidingWindowInferer``, a ``SimpleInferer``).
    mirror_axes
        Spatial axes to mirror.
    spatial_output
        See :func:`mirror_ensemble`.
    output_key
        For a network whose output is a mapping (a classifier with an auxiliary head): the item
        averaged and returned (``"logits"``); a tensor output is averaged as it is.

    Examples
    --------
    >>> import torch
    >>> from monai.inferers import SimpleInferer
    >>> inferer = MirrorEnsembleInferer(SimpleInferer(), mirror_axes=[0, 1])
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)
    >>> inferer(torch.rand(1, 1, 8, 8), net).shape
    torch.Size([1, 1, 8, 8])
    """

    def __init__(self, inferer: Inferer, mirror_axes: Sequence[int], spatial_output: bool = True,
                 output_key: str | None = None) -> None:
        super().__init__()
        mirror_combinations(mirror_axes)  # refuse bad axes when the config is built
        self.inferer, self.mirror_axes, self.spatial_output = inferer, [int(a) for a in mirror_axes], spatial_output
        self.output_key = output_key

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        def predict(x: torch.Tensor) -> torch.Tensor:
            out = self.inferer(x, network, *args, **kwargs)
            return out[self.output_key] if self.output_key is not None and isinstance(out, Mapping) else out

        return mirror_ensemble(predict, inputs, self.mirror_axes, spatial_output=self.spatial_output)
