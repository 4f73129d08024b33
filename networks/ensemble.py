"""Several trained models as one network: the mean of their probabilities (nnU-Net's ensembling).

Two models trained on different data (or folds, or seeds) make partly different errors; the mean
of their probabilities is better calibrated and usually better than either. ichct's inference
applies a softmax (segmenters) or a sigmoid (slice classifiers) to whatever the network returns,
so an ensemble returns what those turn into the mean probabilities: the log of the mean class
probabilities (:class:`SegmentationEnsemble`) or the logit of the mean slice probabilities
(:class:`ClassifierEnsemble`). Every consumer of a model (sliding windows, test-time mirroring,
MONAI's bundle tools; for segmenters TorchScript export) takes the ensemble as it takes one network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .slice_sequence import LABEL_NAMES, SliceSequenceClassifier
from .unet3d import ich_unet3d

__all__ = ["SegmentationEnsemble", "ClassifierEnsemble"]


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
        _check_members(members, "ich_unet3d")
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


def _check_members(members: Sequence[Mapping[str, Any]], constructor: str) -> None:
    """At least two members, each a mapping of ``constructor``'s arguments."""
    if isinstance(members, (str, bytes, Mapping)) or len(members) < 2:
        raise ValueError(f"an ensemble needs a list of at least two members' arguments, got {members!r}")
    for i, kwargs in enumerate(members):
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"member {i}: expected a mapping of {constructor} arguments, got {type(kwargs).__name__}")


class ClassifierEnsemble(nn.Module):
    """Mean slice probabilities of several :class:`~ichct.networks.SliceSequenceClassifier`, as logits.

    Each label's output is ``logit(mean_i sigmoid(member_i(x)))``: a sigmoid of it gives the
    members' mean probability, so thresholds, decision rules and test-time mirroring take the
    ensemble as they take one classifier. Members may differ in encoder, RNN and auxiliary head;
    the ensemble returns the logits tensor ``(B, S, num_classes)`` only (an auxiliary head's map is
    a training signal, not part of what the ensemble predicts). Padding slices hold 0, as a
    member's do.

    Parameters
    ----------
    in_channels, num_classes
        Shared by every member (the same input windows and labels; 6 labels by default).
    members
        Each member's other :class:`~ichct.networks.SliceSequenceClassifier` arguments; at least
        two. The ``state_dict`` keys are ``members.<i>.<the member's own keys>``.

    Examples
    --------
    >>> import torch
    >>> from ichct.networks import ClassifierEnsemble
    >>> net = ClassifierEnsemble(3, 6, [{"encoder": "small", "feature_dim": 8, "rnn_hidden": 4}] * 2).eval()
    >>> x = torch.rand(2, 3, 32, 32, 5)
    >>> with torch.no_grad():
    ...     out = net(x, lengths=[5, 3])
    ...     mean = torch.stack([torch.sigmoid(m(x, lengths=[5, 3])) for m in net.members]).mean(0)
    >>> tuple(out.shape), bool(torch.allclose(torch.sigmoid(out)[0], mean[0], atol=1e-6))
    ((2, 5, 6), True)
    >>> out[1, 3:].abs().sum().item()  # padding slices
    0.0
    """

    def __init__(self, in_channels: int = 3, num_classes: int = len(LABEL_NAMES),
                 members: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__()
        _check_members(members, "SliceSequenceClassifier")
        self.members = nn.ModuleList([SliceSequenceClassifier(in_channels=in_channels, num_classes=num_classes,
                                                              **dict(kwargs)) for kwargs in members])
        self.log_n = math.log(len(members))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None,
                slice_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``logit(mean_i sigmoid(member_i(x)))`` per slice and label, ``(B, S, num_classes)``."""
        logits = []
        for member in self.members:
            out = member(x, lengths=lengths, slice_mask=slice_mask)
            logits.append((out["logits"] if isinstance(out, dict) else out).float())
        stacked = torch.stack(logits)
        log_p = torch.logsumexp(F.logsigmoid(stacked), dim=0) - self.log_n  # log of the mean probability
        log_q = torch.logsumexp(F.logsigmoid(-stacked), dim=0) - self.log_n  # log of its complement
        return log_p - log_q
