"""Several trained segmenters as one network: the mean of their class probabilities (nnU-Net's ensembling).

Two segmenters trained on different data (or folds, or seeds) make partly different errors; the
mean of their softmax outputs is better calibrated and usually better than either. ichct's
inference applies a softmax to whatever the network returns, so the ensemble returns the
logarithm of the mean probabilities: their softmax is the mean itself, and every consumer of a
segmenter (sliding windows, test-time mirroring, MONAI's bundle tools, TorchScript export) takes
the ensemble as it takes one network. Slice classifiers have their own,
:class:`~ichct.networks.classifier_ensemble.ClassifierEnsemble` (a module of its own, so that an
exported bundle of either kind carries only its own network's code).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .ensemble_args import check_member_arguments
from .unet3d import ich_unet3d

__all__ = ["SegmentationEnsemble"]


class SegmentationEnsemble(nn.Module):
    """Mean class probabilities of several :func:`~ichct.networks.ich_unet3d` segmenters, as log-probabilities.

    Parameters
    ----------
    in_channels, out_channels
        Shared by every member (the same input windows and classes).
    members
        Each member's other :func:`~ichct.networks.ich_unet3d` arguments (``variant``, ``channels``,
        ...); at least two. The ``state_dict`` keys are ``members.<i>.<the member's own keys>``.

    Examples
    --------
    >>> import torch
    >>> from ichct.networks import SegmentationEnsemble
    >>> net = SegmentationEnsemble(3, 2, [{"channels": [4, 8], "strides": [2]}] * 2).eval()
    >>> out = net(torch.zeros(1, 3, 16, 16, 16))
    >>> tuple(out.shape), bool(torch.allclose(out.exp().sum(1), torch.ones(1, 16, 16, 16)))
    ((1, 2, 16, 16, 16), True)
    """

    def __init__(self, in_channels: int, out_channels: int, members: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        check_member_arguments(members, "ich_unet3d")
        for i, kwargs in enumerate(members):
            if kwargs.get("deep_supervision"):  # its training output stacks the heads: nothing to average
                raise ValueError(f"member {i}: deep_supervision is a training setting, not one of an ensemble")
        self.members = nn.ModuleList(
            [ich_unet3d(in_channels=in_channels, out_channels=out_channels, **dict(kwargs)) for kwargs in members])
        self.log_n = math.log(len(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``log(mean_i softmax(member_i(x)))`` over the class axis (1) of ``x``'s batch."""
        log_probs = []
        for member in self.members:
            log_probs.append(torch.log_softmax(member(x).float(), dim=1))
        return torch.logsumexp(torch.stack(log_probs), dim=0) - self.log_n
