"""The slice-classification loss: RSNA-weighted BCE with pos_weight, ignored labels and focal modulation."""

from __future__ import annotations

import pytest
import torch

from ichct.pipeline.train.engine import RSNAWeightedBCE
from ichct.pipeline.models.config import resolve_config

WEIGHTS = [2.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 6, generator=g) * 3
    labels = (torch.rand(2, 5, 6, generator=g) > 0.6).float()
    labels[1, 3:] = -1.0  # padded slices of a shorter study
    return logits, {"labels": labels}


def _reference(logits, labels, pos_weight, gamma):
    w = torch.tensor(WEIGHTS)
    total, norm = 0.0, 0.0
    for b in range(labels.shape[0]):
        for s in range(labels.shape[1]):
            for j in range(6):
                y = float(labels[b, s, j])
                if y < 0:
                    continue
                p = torch.sigmoid(logits[b, s, j])
                bce = -(pos_weight[j] * y * torch.log(p) + (1 - y) * torch.log(1 - p))
                p_t = p if y > 0 else 1 - p
                total += float(w[j] * bce * (1 - p_t) ** gamma)
                norm += float(w[j])
    return total / norm


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_loss_matches_an_element_by_element_reference(gamma):
    logits, target = _batch()
    pos_weight = [3.0, 10.0, 1.0, 2.0, 5.0, 7.0]
    loss = RSNAWeightedBCE(WEIGHTS, pos_weight, focal_gamma=gamma)(logits, target)
    assert float(loss) == pytest.approx(_reference(logits, target["labels"], pos_weight, gamma), rel=1e-5)


def test_focal_modulation_shifts_the_loss_to_the_hard_slices():
    """With gamma 2 a confidently right slice adds almost nothing; a confidently wrong one keeps most of its BCE."""
    labels = torch.zeros(1, 2, 6)
    labels[0, :, 0] = 1.0
    logits = torch.full((1, 2, 6), -8.0)
    logits[0, 0, 0], logits[0, 1, 0] = 6.0, -4.0  # slice 0: easy positive, slice 1: missed positive
    easy_hard = []
    for gamma in (0.0, 2.0):
        fn = RSNAWeightedBCE(WEIGHTS, [1.0] * 6, focal_gamma=gamma)
        one = {"labels": labels.clone()}
        one["labels"][0, 1] = -1.0
        easy = float(fn(logits, one))
        one = {"labels": labels.clone()}
        one["labels"][0, 0] = -1.0
        hard = float(fn(logits, one))
        easy_hard.append(hard / easy)
    assert easy_hard[1] > 100 * easy_hard[0]


def test_focal_gamma_is_validated():
    assert resolve_config("cls")["focal_gamma"] >= 0
    with pytest.raises(ValueError, match="focal_gamma"):
        resolve_config("cls", {"focal_gamma": -1})
