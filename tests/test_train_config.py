"""Training config: defaults, JSON/YAML overrides, validation."""

from __future__ import annotations

import json

import pytest

from ichct.pipeline.train_config import DEFAULTS, resolve_config


def test_defaults_and_epochs_override():
    seg = resolve_config("seg")
    assert seg == DEFAULTS["seg"] and seg["num_classes"] == 2 and seg["patch"] == [64, 64, 16]
    assert seg["max_minutes"] is None and seg["loss"] == "dice_ce" and seg["spacing_mm"] == [2.0, 2.0, 3.0]
    default_epochs = DEFAULTS["cls"]["epochs"]
    cls = resolve_config("cls", epochs=3)
    assert cls["epochs"] == 3 and cls["network"]["encoder"] == "small" and default_epochs != 3
    assert cls["class_weights"][0] == 2.0 and DEFAULTS["cls"]["epochs"] == default_epochs  # not mutated
    assert cls["crop"] == "brain" and cls["network"]["aux_seg"] and cls["network"]["neighbour_slices"]
    assert resolve_config("cls", {"max_minutes": 5})["max_minutes"] == 5  # defaults untouched


def test_json_and_yaml_merge(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"lr": 0.01, "augment": {"flip_prob": 0.0}, "network": {"channels": [8, 16]}}))
    cfg = resolve_config("seg", j)
    assert cfg["lr"] == 0.01 and cfg["augment"]["flip_prob"] == 0.0
    assert cfg["augment"]["noise_prob"] == DEFAULTS["seg"]["augment"]["noise_prob"]  # deep merge
    assert cfg["network"]["channels"] == [8, 16]
    assert cfg["network"]["num_res_units"] == DEFAULTS["seg"]["network"]["num_res_units"]  # other kwargs kept
    y = tmp_path / "c.yaml"
    y.write_text("num_classes: 6\nclass_weights: [1, 2, 2, 2, 2, 2]\n")
    assert resolve_config("seg", y)["num_classes"] == 6


@pytest.mark.parametrize("over", [{"learning_rate": 1}, {"augment": {"flip": 1}}, {"num_classes": 3},
                                  {"epochs": 0}, {"patch": [96, 96]},
                                  {"max_minutes": 0}, {"max_minutes": -1}, {"loss": "dice"}])
def test_bad_overrides_refused(over):
    with pytest.raises(ValueError):
        resolve_config("seg", over)


def test_bad_kind_and_cls_checks():
    with pytest.raises(ValueError):
        resolve_config("det")
    with pytest.raises(ValueError):
        resolve_config("cls", {"pos_weight": [1.0, 2.0]})
    assert resolve_config("cls", {"pos_weight": [1.0] * 6})["pos_weight"] == [1.0] * 6
