"""Several trained slice classifiers as one network: the mean of their slice probabilities.

ichct's inference applies a sigmoid to the slice logits a classifier returns, so the ensemble
returns the logit of the members' mean probability: its sigmoid is the mean itself, and the
decision rules, thresholds, test-time mirroring and MONAI's bundle tools take the ensemble as they
take one classifier. Segmenters have their own, :class:`~ichct.networks.ensemble.SegmentationEnsemble`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ensemble_args import check_member_arguments
from .slice_sequence import LABEL_NAMES, SliceSequenceClassifier

__all__ = ["ClassifierEnsemble"]


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
        check_member_arguments(members, "SliceSequenceClassifier")
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
