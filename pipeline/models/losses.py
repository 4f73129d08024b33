"""Losses and batch preparation of the two models, shared by ``ichct train`` and the bundles' train.json.

They live with the model recipe (not in the training engine) so that a bundle's ``train.json`` names a
small module: an exported bundle's ``scripts/`` then carries these two, not the training engine, its
tracking and its run-folder code. ``ichct.pipeline.train.engine`` re-exports both names for configs
written before the move.

Examples
--------
>>> import torch
>>> loss = RSNAWeightedBCE([2, 1, 1, 1, 1, 1], [1.0] * 6)
>>> float(loss(torch.zeros(4, 6), {"labels": torch.zeros(4, 6)})) > 0
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class RSNAWeightedBCE(torch.nn.Module):
    """Weighted BCE over slices and labels (``any`` weight 2), with ``pos_weight``; label < 0 ignored."""

    def __init__(self, class_weights, pos_weight, aux_seg_weight: float = 0.0, focal_gamma: float = 0.0) -> None:
        super().__init__()
        self.focal_gamma = float(focal_gamma)
        self.register_buffer("w", torch.as_tensor(class_weights, dtype=torch.float32))
        self.register_buffer("pw", torch.as_tensor(pos_weight, dtype=torch.float32))
        self.aux_seg_weight = float(aux_seg_weight)
        self.seg_loss = None
        if self.aux_seg_weight > 0:
            from monai.losses import DiceCELoss

            self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    def forward(self, logits: torch.Tensor | Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Slice BCE; with an aux-seg output dict, plus ``aux_seg_weight`` x DiceCE of the blood mask."""
        if isinstance(logits, Mapping):
            out = logits
            loss = self.forward(out["logits"], target)
            if self.seg_loss is not None and target.get("seg") is not None:
                seg_t = target["seg"].to(out["seg"].device, torch.float32)
                loss = loss + self.aux_seg_weight * self.seg_loss(out["seg"].float(), seg_t)
            return loss
        y = target["labels"].to(logits.device, torch.float32)
        mask = (y >= 0).to(torch.float32)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(), y.clamp(min=0), reduction="none", pos_weight=self.pw.to(logits.device))
        if self.focal_gamma > 0:  # focal modulation (1 - p_t)^gamma: easy slices count less
            p = torch.sigmoid(logits.float())
            p_t = torch.where(y > 0, p, 1.0 - p)
            loss = loss * (1.0 - p_t).pow(self.focal_gamma)
        wm = mask * self.w.to(logits.device)
        return (loss * wm).sum() / wm.sum().clamp(min=1.0)


def cls_prepare_batch(batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False,
                      **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any], tuple, dict[str, Any]]:
    """The ``prepare_batch`` of the classifier's MONAI engines (a :func:`~ichct.pipeline.models.data.cls_collate` batch).

    Parameters
    ----------
    batchdata
        ``image`` ``(B, C, H, W, S)``, ``lengths``, ``slice_labels`` and, with the auxiliary
        segmentation head, the blood mask ``label``.
    device, non_blocking
        Where the tensors go (as ``Tensor.to``).
    **kwargs
        Ignored (MONAI passes more).

    Returns
    -------
    tuple
        ``(image, target, (), {"lengths": lengths})``: the network gets ``lengths`` as a keyword,
        the loss (:class:`RSNAWeightedBCE`) ``target`` = ``{"labels", "lengths"[, "seg"]}``.
    """
    x = batchdata["image"].to(device=device, non_blocking=non_blocking)
    lengths = batchdata["lengths"]
    target = {"labels": batchdata["slice_labels"].to(device=device, non_blocking=non_blocking), "lengths": lengths}
    if batchdata.get("label") is not None:
        target["seg"] = batchdata["label"].to(device=device, non_blocking=non_blocking)
    return x, target, (), {"lengths": lengths}
