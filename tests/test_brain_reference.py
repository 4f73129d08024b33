"""Brain-referenced HU (``brain_reference_hu``): the transform, its config key and where it runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ichct.pipeline.models.config import resolve_config
from ichct.pipeline.models.data import cls_preprocessing, seg_preprocessing
from ichct.transforms import ReferenceBrainHU, ReferenceBrainHUd, brain_tissue_level


def _head(offset_hu: float = 0.0, bleed: bool = True, seed: int = 0) -> np.ndarray:
    """(40, 40, 6) HU head: air, skull, CSF rim, grey/white matter (noisy), a bleed; all + offset."""
    rng = np.random.default_rng(seed)
    hu = np.full((40, 40, 6), -1000.0, dtype=np.float32)
    hu[3:37, 3:37] = 1200.0  # skull
    hu[5:35, 5:35] = 8.0  # CSF
    hu[7:33, 7:33] = 30.0 + rng.normal(0, 4, size=(26, 26, 6))  # brain
    hu[7:33, 7:20] += 6.0  # grey matter brighter than white
    if bleed:
        hu[12:20, 22:30] = 70.0
    return hu + np.float32(offset_hu)


def test_level_is_the_median_of_brain_tissue_and_ignores_blood_and_csf():
    plain = brain_tissue_level(_head(bleed=False), min_voxels=100)
    assert 30.0 < plain < 36.0
    assert brain_tissue_level(_head(bleed=True), min_voxels=100) == pytest.approx(plain, abs=1.5)
    assert brain_tissue_level(_head(offset_hu=5.0, bleed=False), min_voxels=100) == pytest.approx(plain + 5.0, abs=0.01)


def test_no_brain_no_level_and_the_image_is_unchanged():
    air = np.full((1, 10, 10, 3), -1000.0, dtype=np.float32)
    assert brain_tissue_level(air[0]) is None
    assert np.array_equal(ReferenceBrainHU()(air), air)


@pytest.mark.parametrize("offset", [-6.0, -2.0, 3.0, 7.0])
def test_a_calibration_offset_is_undone(offset):
    """The same head at another calibration comes out the same: the offset is gone, the contrast kept."""
    t = ReferenceBrainHU(reference_hu=30.0, min_voxels=100)
    base = t(_head()[None])
    shifted = t(_head(offset)[None])
    assert np.allclose(shifted, base, atol=0.01)
    assert brain_tissue_level(base[0], min_voxels=100) == pytest.approx(30.0, abs=0.01)
    head = _head()
    assert float(base[0, 15, 25, 0] - base[0, 25, 10, 0]) == pytest.approx(float(head[15, 25, 0] - head[25, 10, 0]))


def test_shift_is_clipped_and_recorded_in_the_meta():
    img = MetaTensor(torch.as_tensor(_head(offset_hu=12.0)[None]), affine=torch.diag(torch.tensor([0.5, 0.5, 5.0, 1.0])))
    out = ReferenceBrainHU(reference_hu=30.0, max_shift_hu=5.0, min_voxels=100)(img)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, img.affine) and out.dtype == img.dtype
    assert out.meta["brain_hu_shift"] == -5.0
    assert out.meta["brain_tissue_hu"] == pytest.approx(brain_tissue_level(_head(offset_hu=12.0), min_voxels=100))
    assert torch.allclose(out, img - 5.0)
    far = _head(offset_hu=60.0)[None]  # no tissue in the range at all: not a calibration error, left alone
    assert np.array_equal(ReferenceBrainHU(min_voxels=100)(far), far)
    far_meta = ReferenceBrainHU(min_voxels=100)(MetaTensor(torch.as_tensor(far))).meta
    assert far_meta["brain_hu_shift"] == 0.0 and np.isnan(far_meta["brain_tissue_hu"])


def test_every_channel_shifts_by_channel_zeros_level():
    two = np.stack([_head(4.0), _head(4.0) * 0 + 100.0])
    out = ReferenceBrainHU(reference_hu=30.0, min_voxels=100)(two)
    shift = float(out[1, 0, 0, 0] - 100.0)
    assert shift == pytest.approx(30.0 - brain_tissue_level(_head(4.0), min_voxels=100))
    assert np.allclose(out[0], two[0] + shift)


def test_dictionary_twin_and_bad_parameters():
    d = ReferenceBrainHUd(["image", "other"], min_voxels=100, allow_missing_keys=True)({"image": _head(5.0)[None],
                                                                                         "label": np.ones(3)})
    assert brain_tissue_level(d["image"][0], min_voxels=100) == pytest.approx(30.0, abs=0.01)
    assert np.array_equal(d["label"], np.ones(3))
    with pytest.raises(KeyError):
        ReferenceBrainHUd("missing")({"image": _head()[None]})
    with pytest.raises(ValueError, match="tissue_range_hu"):
        ReferenceBrainHU(tissue_range_hu=(45, 15))
    with pytest.raises(ValueError, match="max_shift_hu"):
        ReferenceBrainHU(max_shift_hu=-1)


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_config_key_puts_the_step_right_after_loading(kind):
    build = seg_preprocessing if kind == "seg" else cls_preprocessing
    off = build(resolve_config(kind), train=False)
    assert not any(s["_target_"].endswith("ReferenceBrainHUd") for s in off)
    on = build(resolve_config(kind, {"brain_reference_hu": 32}), train=False)
    assert on[1]["_target_"] == "ichct.transforms.ReferenceBrainHUd" and on[1]["reference_hu"] == 32.0
    assert [s["_target_"] for s in on[:1] + on[2:]] == [s["_target_"] for s in off]
    with pytest.raises(ValueError, match="brain_reference_hu"):
        resolve_config(kind, {"brain_reference_hu": "auto"})


def test_bundle_configs_carry_the_step():
    from ichct.pipeline.bundle.configs import bundle_configs

    cfg = resolve_config("seg", {"brain_reference_hu": 30.0})
    configs = bundle_configs({"kind": "seg", "fold": 0, "seed": 0, "manifest": "m.json", "config": cfg})
    for name in ("inference", "evaluate"):
        steps = configs[name]["preprocessing"]["transforms"]
        assert steps[1]["_target_"] == "ichct.transforms.ReferenceBrainHUd", name


def test_bundle_refresh_sets_and_clears_the_inference_settings(tmp_path, run_cli):
    """``ichct bundle refresh --brain-reference-hu/--tta-mirror-axes`` rewrite the run config and the configs;
    a bad value is refused and changes nothing."""
    import json
    import shutil
    from pathlib import Path

    bundle = tmp_path / "cls"
    shutil.copytree(Path(__file__).resolve().parents[1] / "bundles" / "ich_ct_classification", bundle)

    def state():
        config = json.loads((bundle / "models" / "run_config.json").read_text())["config"]
        inference = json.loads((bundle / "configs" / "inference.json").read_text())
        targets = [t["_target_"] for t in inference["preprocessing"]["transforms"]]
        return config.get("brain_reference_hu"), config.get("tta_mirror_axes"), targets, inference["inferer"]["_target_"]

    r = run_cli("bundle", "refresh", bundle, "--brain-reference-hu", "none", "--tta-mirror-axes", "none", "-q")
    assert r.code == 0, r.err
    level, axes, targets, inferer = state()
    assert level is None and axes == [] and "ichct.transforms.ReferenceBrainHUd" not in targets
    assert inferer == "SimpleInferer"
    assert run_cli("bundle", "refresh", bundle, "--brain-reference-hu", "28.5", "--tta-mirror-axes", "0,1", "-q").code == 0
    level, axes, targets, inferer = state()
    assert level == 28.5 and axes == [0, 1] and targets[1] == "ichct.transforms.ReferenceBrainHUd"
    assert inferer == "ichct.networks.MirrorEnsembleInferer"
    readme = (bundle / "docs" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "`ichct.transforms.ReferenceBrainHUd`" in line)
    assert row.rstrip("| ").endswith("(brain-referenced HU)"), row  # the step is explained
    assert "median HU of its brain tissue is 28.5" in readme
    from ichct.pipeline.bundle.package import load_bundle

    # report.json and metrics.json describe each model with these settings
    assert load_bundle(bundle).describe()["inference"] == {"brain_reference_hu": 28.5, "tta_mirror_axes": [0, 1]}
    before = state()
    r = run_cli("bundle", "refresh", bundle, "--tta-mirror-axes", "2")  # the classifier's slice axis
    assert r.code == 1 and "tta_mirror_axes" in r.err and state() == before
    assert run_cli("bundle", "refresh", bundle, "--brain-reference-hu", "warm").code == 2 and state() == before
