"""The network definitions of the model bundles (``network_def`` in ``configs/inference.json``).

MONAI's bundle tools (``verify_net_in_out``, ``ckpt_export``, ``onnx_export``) expect a network
that maps a channel-first batch to one channel-first tensor. The 3D U-Net already does
(:func:`ichct.networks.ich_unet3d`). The slice classifier returns ``(B, S, 6)`` logits, or a dict
with an auxiliary segmentation, so the bundles use :class:`ChannelFirstSliceClassifier`: the same
module (identical ``state_dict`` keys, so ``models/model.pt`` loads into either) whose forward
returns only the slice logits, channel first: ``(B, 6, S)``; :class:`ChannelFirstClassifierEnsemble`
is the same for an ensemble of classifiers (``ichct ensemble``). This module imports nothing of
ichct but the networks, so an exported bundle carries no more than that for them.
"""

from __future__ import annotations

import torch

from ichct.networks.classifier_ensemble import ClassifierEnsemble
from ichct.networks.slice_sequence import SliceSequenceClassifier

__all__ = ["ChannelFirstSliceClassifier", "ChannelFirstClassifierEnsemble"]


class ChannelFirstSliceClassifier(SliceSequenceClassifier):
    """:class:`~ichct.networks.SliceSequenceClassifier` returning ``(B, num_classes, S)`` logits.

    Every slice of the input is valid (one study per batch item, no padding), as in inference.
    The auxiliary segmentation output, when the network has one, is dropped.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Slice logits of ``x`` ``(B, C, H, W, S)`` as ``(B, num_classes, S)``."""
        out = super().forward(x)
        logits = out["logits"] if isinstance(out, dict) else out
        return logits.transpose(1, 2)


class ChannelFirstClassifierEnsemble(ClassifierEnsemble):
    """:class:`~ichct.networks.ClassifierEnsemble` returning ``(B, num_classes, S)`` logits (of the
    members' mean slice probabilities); every slice of the input is valid, as in inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Slice logits of ``x`` ``(B, C, H, W, S)`` as ``(B, num_classes, S)``."""
        return super().forward(x).transpose(1, 2)
