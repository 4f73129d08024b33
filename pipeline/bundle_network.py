"""The network definitions of the model bundles (``network_def`` in ``configs/inference.json``).

MONAI's bundle tools (``verify_net_in_out``, ``ckpt_export``, ``onnx_export``) expect a network
that maps a channel-first batch to one channel-first tensor. The 3D U-Net already does
(:func:`ichct.networks.ich_unet3d`). The slice classifier returns ``(B, S, 6)`` logits, or a dict
with an auxiliary segmentation, so the bundles use :class:`ChannelFirstSliceClassifier`: the same
module (identical ``state_dict`` keys, so ``models/model.pt`` loads into either) whose forward
returns only the slice logits, channel first: ``(B, 6, S)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ichct.networks.slice_sequence import SliceSequenceClassifier

__all__ = ["ChannelFirstSliceClassifier", "network_kwargs"]


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


def network_kwargs(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a run's network (as ``ichct.pipeline.train._build_model`` builds it).

    Parameters
    ----------
    kind
        ``"seg"`` or ``"cls"``.
    cfg
        The resolved training config of the run.

    Returns
    -------
    dict
        ``in_channels`` (and ``out_channels`` for seg) followed by the config's ``network`` entries.
    """
    from ichct.pipeline.train_config import input_channels

    n_in = input_channels(kind, cfg)
    if kind == "seg":
        return {"in_channels": n_in, "out_channels": int(cfg["num_classes"]), **dict(cfg["network"])}
    if kind == "cls":
        return {"in_channels": n_in, **dict(cfg["network"])}
    raise ValueError(f"kind must be 'seg' or 'cls', got {kind!r}")
