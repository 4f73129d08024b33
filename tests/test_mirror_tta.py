"""Test-time mirroring (``tta_mirror_axes``): the network, the inference path, the config and the bundle."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ichct.networks import MirrorEnsembleInferer, ich_unet3d, mirror_combinations, mirror_ensemble, sliding_window_predict
from ichct.pipeline.models.config import resolve_config, saved_run_config


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return ich_unet3d(in_channels=3, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0).eval()


def test_mirror_ensemble_is_the_mean_over_every_mirroring():
    net, x = _net(), torch.rand(1, 3, 12, 10, 6)
    with torch.no_grad():
        got = mirror_ensemble(net, x, [0, 2])
        want = (net(x) + net(x.flip(2)).flip(2) + net(x.flip(4)).flip(4) + net(x.flip(2, 4)).flip(2, 4)) / 4
        plain = mirror_ensemble(net, x, [])
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(plain, net(x).detach())
    assert not torch.allclose(got, plain, atol=1e-4)  # the network is not symmetric: mirroring changes it


def test_mirrored_prediction_is_mirror_invariant():
    """Averaged over both mirror images, a prediction of the mirrored input is the mirrored prediction."""
    net, x = _net(), torch.rand(1, 3, 16, 12, 8)
    with torch.no_grad():
        a = sliding_window_predict(net, x, roi_size=(16, 12, 8), mirror_axes=[0])
        b = sliding_window_predict(net, x.flip(2), roi_size=(16, 12, 8), mirror_axes=[0])
    assert torch.allclose(a, b.flip(2), atol=1e-5)


def test_sliding_window_mirroring_averages_whole_volume_passes():
    net, x = _net(), torch.rand(3, 20, 14, 9)
    with torch.no_grad():
        one = sliding_window_predict(net, x, roi_size=(8, 8, 4))
        mirrored = sliding_window_predict(net, x.flip(1), roi_size=(8, 8, 4)).flip(1)
        both = sliding_window_predict(net, x, roi_size=(8, 8, 4), mirror_axes=[0])
    assert torch.allclose(both, (one + mirrored) / 2, atol=1e-6)


def test_non_spatial_outputs_are_averaged_without_mirroring_back():
    x = torch.arange(6.0).reshape(1, 1, 6)
    out = mirror_ensemble(lambda t: t[..., :2], x, [0], spatial_output=False)
    assert torch.equal(out, torch.tensor([[[2.5, 2.5]]]))  # mean of [0, 1] and [5, 4]


@pytest.mark.parametrize("axes", [[0, 0], [-1], [1.5]])
def test_bad_mirror_axes_refused(axes):
    with pytest.raises(ValueError, match="mirror_axes"):
        mirror_combinations(axes)


def test_axes_beyond_the_input_refused():
    with pytest.raises(ValueError, match="spatial axes"):
        mirror_ensemble(lambda t: t, torch.zeros(1, 1, 4, 4), [2])


def test_inferer_wraps_another_inferer():
    from monai.inferers import SlidingWindowInferer

    net, x = _net(), torch.rand(1, 3, 16, 16, 8)
    inner = SlidingWindowInferer(roi_size=(8, 8, 4), overlap=0.5, mode="gaussian")
    with torch.no_grad():
        got = MirrorEnsembleInferer(inner, [1])(x, net)
        want = (inner(x, net) + inner(x.flip(3), net).flip(3)) / 2
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="mirror_axes"):
        MirrorEnsembleInferer(inner, [1, 1])


@pytest.mark.parametrize(("kind", "value", "ok"), [
    ("seg", [0], [0]), ("seg", [2, 0], [2, 0]), ("seg", [], []), ("cls", [0, 1], [0, 1]),
    ("seg", [3], None), ("seg", [0, 0], None), ("seg", 0, None), ("seg", ["x"], None), ("cls", [2], None),
])
def test_config_key_checked(kind, value, ok):
    if ok is None:
        with pytest.raises(ValueError, match="tta_mirror_axes"):
            resolve_config(kind, {"tta_mirror_axes": value})
    else:
        assert resolve_config(kind, {"tta_mirror_axes": value})["tta_mirror_axes"] == ok


def test_saved_runs_without_the_key_stay_without_it():
    """A run saved before the key existed did not mirror, and its bundle's configs stay as they were."""
    assert resolve_config("seg")["tta_mirror_axes"] == []
    assert "tta_mirror_axes" not in saved_run_config("seg", {"patch": [64, 64, 16]})


class _Probe(torch.nn.Module):
    """Per-slice logits that depend on which side of the first in-plane axis is bright; records its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, C, H, W, S) -> (1, S, 6)
        self.inputs.append(x.clone())
        h = x.shape[2]
        left = x[:, :, : h // 2].mean(dim=(1, 2, 3))
        right = x[:, :, h // 2:].mean(dim=(1, 2, 3))
        return (3 * left - right)[..., None].repeat(1, 1, 6)


def test_classifier_inference_averages_the_mirrored_slices(tmp_path):
    from ichct.pipeline.models.inference import LoadedModel, predict_study

    image = _asymmetric_nifti(tmp_path)
    cfg = resolve_config("cls", {"stripped_brain_channel": False, "crop": None, "in_plane": [16, 16]})

    def run(axes):
        model = LoadedModel("cls", tmp_path, {}, {**cfg, "tta_mirror_axes": axes}, _Probe(), None,
                            torch.device("cpu"), "probe")
        return model.network, predict_study({"cls": model}, image).slice_probs

    probe, mirrored = run([0])
    plain_probe, plain = run([])
    assert len(probe.inputs) == 2 and torch.equal(probe.inputs[1], probe.inputs[0].flip(2))
    logits = torch.stack([_Probe()(t) for t in probe.inputs]).mean(0)
    assert np.allclose(mirrored, torch.sigmoid(logits)[0].numpy(), atol=1e-6)
    assert len(plain_probe.inputs) == 1 and not np.allclose(mirrored, plain, atol=1e-3)


def _asymmetric_nifti(tmp_path: Path) -> str:
    """A small CT whose left half is brighter than its right (HU)."""
    import nibabel as nib

    hu = np.full((24, 20, 5), -1000.0, dtype=np.float32)
    hu[4:20, 3:17] = 30.0
    hu[4:12, 3:17] = 70.0
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.diag([0.9, 0.9, 5.0, 1.0])), str(path))
    return str(path)


def test_bundle_inference_and_evaluation_mirror_as_the_run_says():
    from monai.bundle import ConfigParser

    from ichct.pipeline.bundle.configs import bundle_configs

    for kind, inner in (("seg", "SlidingWindowInferer"), ("cls", "SimpleInferer")):
        cfg = resolve_config(kind)
        run = {"kind": kind, "fold": 0, "seed": 0, "manifest": "m.json", "config": cfg}
        plain = bundle_configs(run)
        assert plain["inference"]["inferer"]["_target_"] == inner
        mirrored = bundle_configs({**run, "config": {**copy.deepcopy(cfg), "tta_mirror_axes": [0]}})
        for name in ("inference", "evaluate"):
            spec = mirrored[name]["inferer"]
            assert spec["_target_"] == "ichct.networks.MirrorEnsembleInferer" and spec["mirror_axes"] == [0]
            assert spec["spatial_output"] is (kind == "seg") and spec["inferer"]["_target_"] == inner
        built = ConfigParser(json.loads(json.dumps(mirrored["inference"]))).get_parsed_content("inferer")
        assert isinstance(built, MirrorEnsembleInferer) and type(built.inferer).__name__ == inner
