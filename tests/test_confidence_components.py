"""Turning predicted blood components the segmenter is unsure of into background (``min_component_confidence``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ichct.errors import InputError
from ichct.pipeline.bundle.configs import bundle_configs
from ichct.pipeline.models.config import resolve_config, saved_run_config
from ichct.transforms import SuppressUncertainComponents, SuppressUncertainComponentsd, confident_component_mask


def _two_bleeds() -> np.ndarray:
    """Class probabilities (background, 2 blood classes) of a confident bleed (blood 0.95, class 2 wins)
    and a doubtful one (blood 0.7, one voxel 0.9; class 1 wins)."""
    blood = np.zeros((10, 10, 3))
    blood[0:3, 0:3, :] = 0.95
    blood[6:9, 6:9, 1] = 0.7
    blood[6, 6, 1] = 0.9  # one sure voxel does not save the component: the mean decides
    split = np.where(blood == 0.95, 0.7, 0.3)  # share of class 2 in the blood
    return np.stack([1.0 - blood, blood * (1 - split), blood * split])


def test_components_go_by_their_mean_blood_probability():
    probs = _two_bleeds()
    labels = probs.argmax(0)
    assert set(np.unique(labels[0:3, 0:3])) == {2} and set(np.unique(labels[6:9, 6:9, 1])) == {1}
    out = SuppressUncertainComponents(0.8)(probs)
    assert np.array_equal(out.argmax(0)[0:3, 0:3], labels[0:3, 0:3]) and not out.argmax(0)[6:9, 6:9].any()
    assert np.array_equal(out[:, 6:9, 6:9, 1], np.broadcast_to(np.array([1.0, 0, 0])[:, None, None], (3, 3, 3)))
    assert np.array_equal(out[:, 0:3, 0:3], probs[:, 0:3, 0:3])  # the kept bleed's probabilities are untouched
    mean_doubtful = (8 * 0.7 + 0.9) / 9
    assert SuppressUncertainComponents(mean_doubtful - 1e-6)(probs) is probs
    assert not SuppressUncertainComponents(0.96)(probs).argmax(0).any()
    assert SuppressUncertainComponents(0.0)(probs) is probs
    as_tensor = SuppressUncertainComponents(0.8)(torch.as_tensor(probs))
    assert isinstance(as_tensor, torch.Tensor) and np.array_equal(as_tensor.numpy(), out)
    assert np.array_equal(SuppressUncertainComponentsd("pred", 0.8)({"pred": probs})["pred"], out)


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
    with pytest.raises(ValueError, match="expected class probabilities"):
        SuppressUncertainComponents(0.5)(np.ones((1, 2, 2, 2)))


def test_the_config_key_is_checked_and_off_by_default():
    assert resolve_config("seg")["min_component_confidence"] == 0.0
    assert resolve_config("seg", {"min_component_confidence": 0.8})["min_component_confidence"] == 0.8
    with pytest.raises(InputError, match="min_component_confidence"):
        resolve_config("seg", {"min_component_confidence": 1.2})
    old = {k: v for k, v in resolve_config("seg").items() if k != "min_component_confidence"}
    assert saved_run_config("seg", old)["min_component_confidence"] == 0.0


def test_bundle_postprocessing_suppresses_on_the_models_grid_first():
    def post(config: str, overrides: dict) -> list[tuple[str, str]]:
        run_config = {"kind": "seg", "manifest": "m.json", "config": resolve_config("seg", overrides)}
        steps = bundle_configs(run_config)[config]["postprocessing"]["transforms"]
        return [(s["_target_"].rsplit(".", 1)[-1], s.get("keys")) for s in steps]

    assert post("evaluate", {"min_component_confidence": 0.8}) == [
        ("Activationsd", "pred"), ("SuppressUncertainComponentsd", "pred"), ("CopyItemsd", "pred"),
        ("AsDiscreted", "pred_model_grid"), ("Invertd", "pred"), ("AsDiscreted", "pred"),
        ("RemoveSmallComponentsd", "pred")]
    assert post("inference", {"min_component_confidence": 0.8})[:2] == [
        ("Activationsd", "pred"), ("SuppressUncertainComponentsd", "pred")]
    assert not any("Uncertain" in name for name, _ in post("evaluate", {}) + post("inference", {}))
