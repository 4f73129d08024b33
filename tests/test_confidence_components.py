"""Dropping predicted blood components the segmenter is unsure of (``min_component_confidence``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ichct.errors import InputError
from ichct.pipeline.bundle.configs import PROBABILITIES_KEY, bundle_configs
from ichct.pipeline.models.config import resolve_config, saved_run_config
from ichct.transforms import RemoveUncertainComponents, RemoveUncertainComponentsd, confident_component_mask


def _two_bleeds() -> tuple[np.ndarray, np.ndarray]:
    """A label map with a confident bleed (p 0.95, label 2) and a doubtful one (p 0.7 and 0.9, label 1)."""
    labels = np.zeros((1, 10, 10, 3), dtype=np.uint8)
    fg = np.zeros((10, 10, 3))
    labels[0, 0:3, 0:3, :] = 2
    fg[0:3, 0:3, :] = 0.95
    labels[0, 6:9, 6:9, 1] = 1
    fg[6:9, 6:9, 1] = 0.7
    fg[6, 6, 1] = 0.9  # one sure voxel does not save the component: the mean decides
    probs = np.stack([1.0 - fg, 0.4 * fg, 0.6 * fg])
    return labels, probs


def test_components_go_by_their_mean_blood_probability():
    labels, probs = _two_bleeds()
    mean_doubtful = (8 * 0.7 + 0.9) / 9
    kept = RemoveUncertainComponents(0.8)(labels, probs)
    assert kept[0, 0:3, 0:3].tolist() == labels[0, 0:3, 0:3].tolist() and not kept[0, 6:9, 6:9].any()
    assert RemoveUncertainComponents(mean_doubtful - 1e-6)(labels, probs).sum() == labels.sum()
    assert RemoveUncertainComponents(0.96)(labels, probs).sum() == 0
    assert RemoveUncertainComponents(0.0)(labels, probs) is labels
    as_tensor = RemoveUncertainComponents(0.8)(torch.as_tensor(labels), torch.as_tensor(probs))
    assert isinstance(as_tensor, torch.Tensor) and np.array_equal(as_tensor.numpy(), kept)
    out = RemoveUncertainComponentsd("pred", "prob", 0.8)({"pred": labels, "prob": probs})
    assert np.array_equal(out["pred"], kept) and out["prob"] is probs


def test_connectivity_decides_what_one_component_is():
    mask = np.zeros((4, 4, 1), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 0] = True  # diagonal neighbours: one component only with connectivity 2
    prob = np.zeros((4, 4, 1))
    prob[0, 0, 0], prob[1, 1, 0] = 1.0, 0.5
    assert confident_component_mask(mask, prob, 0.7, connectivity=1).tolist() == (mask & (prob == 1.0)).tolist()
    assert confident_component_mask(mask, prob, 0.7, connectivity=2).sum() == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_confidence": 1.5}, "min_confidence must be within"),
    ({"min_confidence": float("nan")}, "min_confidence must be within"),
    ({"connectivity": 4}, "connectivity must be in"),
])
def test_bad_arguments_are_refused(kwargs, message):
    mask = np.ones((2, 2, 2), dtype=bool)
    args = {"min_confidence": 0.5, "connectivity": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        confident_component_mask(mask, np.ones((2, 2, 2)), **args)
    with pytest.raises(ValueError, match="foreground_prob has shape"):
        confident_component_mask(mask, np.ones((2, 2)), 0.5)
    with pytest.raises(ValueError, match="do not fit the label map"):
        RemoveUncertainComponents(0.5)(np.ones((1, 2, 2, 2)), np.ones((2, 2, 2, 3)))


def test_the_config_key_is_checked_and_off_for_saved_runs():
    assert resolve_config("seg")["min_component_confidence"] == 0.0
    assert resolve_config("seg", {"min_component_confidence": 0.8})["min_component_confidence"] == 0.8
    with pytest.raises(InputError, match="min_component_confidence"):
        resolve_config("seg", {"min_component_confidence": 1.2})
    old = {k: v for k, v in resolve_config("seg").items() if k != "min_component_confidence"}
    assert saved_run_config("seg", old)["min_component_confidence"] == 0.0


def test_bundle_postprocessing_filters_both_grids_before_the_specks():
    def post(config: str, overrides: dict) -> list[tuple[str, str]]:
        run_config = {"kind": "seg", "manifest": "m.json", "config": resolve_config("seg", overrides)}
        steps = bundle_configs(run_config)[config]["postprocessing"]["transforms"]
        return [(s["_target_"].rsplit(".", 1)[-1], s.get("keys")) for s in steps]

    assert post("evaluate", {"min_component_confidence": 0.8}) == [
        ("Activationsd", "pred"), ("CopyItemsd", "pred"), ("AsDiscreted", "pred_model_grid"),
        ("RemoveUncertainComponentsd", "pred_model_grid"), ("Invertd", "pred"), ("CopyItemsd", "pred"),
        ("AsDiscreted", "pred"), ("RemoveUncertainComponentsd", "pred"), ("DeleteItemsd", PROBABILITIES_KEY),
        ("RemoveSmallComponentsd", "pred")]
    assert ("RemoveUncertainComponentsd", "pred") in post("inference", {"min_component_confidence": 0.8})
    assert not any("Uncertain" in name for name, _ in post("evaluate", {}) + post("inference", {}))
