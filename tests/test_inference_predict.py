"""``ichct.pipeline.models.inference``: load_run and predict_study (shapes, grids, rules)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import FOLD, eval_setup

from ichct.pipeline.decision import DecisionRule, voxel_volume_ml
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.models.inference import (
    DEFAULT_SLICE_THRESHOLD,
    default_rules,
    load_run,
    predict_study,
)


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def models(setup):
    return {"seg": load_run(setup["seg"]), "cls": load_run(setup["cls"])}


@pytest.fixture(scope="module")
def study(setup):
    from ichct.pipeline.manifests import load_manifest

    entries = load_manifest(setup["manifest"], "test", check=False)
    return next(e for e in entries if e["ct_labels"]["any"] == 1)


@pytest.fixture(scope="module")
def prediction(models, study):
    return predict_study(models, study["image"])


def test_load_run(setup, models):
    for kind in ("seg", "cls"):
        m = models[kind]
        assert m.kind == kind and not m.network.training
        assert m.run_config["fold"] == FOLD and m.epoch == 1
        best = torch.load(setup[kind] / "best.pt", weights_only=True)["model"]
        for name, t in m.network.state_dict().items():
            assert torch.equal(t, best[name]), name
        assert m.rule == DecisionRule.load(setup[kind] / "thresholds.json")
        doc = setup["doc"]
        assert m.train_patient_keys == {e["patient_key"] for e in doc["training"] if e["fold"] != FOLD}
    rules = default_rules(models)
    assert list(rules) == ["consecutive", "max", "topk_mean", "seg_volume", "seg_peak", "fused"]
    assert rules["consecutive"] is models["cls"].rule and rules["seg_volume"] is models["seg"].rule
    # fused: the mean of the consecutive and seg_peak thresholds, the classifier's k
    for st in LABEL_NAMES:
        mean = (rules["consecutive"].threshold_for(st) + rules["seg_peak"].threshold_for(st)) / 2
        assert rules["fused"].threshold_for(st) == pytest.approx(mean)
    assert rules["fused"].k == rules["consecutive"].k
    assert "fused" not in default_rules({"cls": models["cls"]}) and "fused" not in default_rules({"seg": models["seg"]})
    # max / topk_mean: thresholds chosen on the validation fold with the stored rule (meta.other_rules)
    stored = models["cls"].rule
    for name in ("max", "topk_mean"):
        chosen = stored.meta["other_rules"][name]
        assert set(chosen) == set(LABEL_NAMES) and all(1e-6 <= t <= 1.0 for t in chosen.values())
        assert all(rules[name].threshold_for(st) == pytest.approx(chosen[st]) for st in LABEL_NAMES)
        assert rules[name].meta["chosen_on"] == stored.meta["chosen_on"] and rules[name].k == stored.k
    # a run stored before other rules were chosen falls back to the default threshold
    import dataclasses

    old_rule = dataclasses.replace(stored, meta={k: v for k, v in stored.meta.items() if k != "other_rules"})
    old_run = dataclasses.replace(models["cls"], rule=old_rule)
    assert default_rules({"cls": old_run})["max"].threshold == DEFAULT_SLICE_THRESHOLD
    # seg_peak: the segmenter's peak-probability threshold, chosen on the same validation studies by training
    seg_rule = models["seg"].rule
    peak = seg_rule.meta["other_rules"]["seg_peak"]
    assert set(peak) == {"any"} and 1e-6 <= peak["any"] <= 1.0
    assert rules["seg_peak"].threshold == pytest.approx(peak["any"])
    assert rules["seg_peak"].meta["chosen_on"] == seg_rule.meta["chosen_on"]
    old_seg = dataclasses.replace(models["seg"], rule=dataclasses.replace(seg_rule, meta={}))
    assert default_rules({"seg": old_seg})["seg_peak"].threshold == DEFAULT_SLICE_THRESHOLD
    with pytest.raises(FileNotFoundError):
        load_run(setup["base"] / "cohort")


def test_predict_study_shapes_and_grids(prediction, study, models):
    from ichct.transforms import read_dicom_series

    vol = read_dicom_series(study["image"])
    n = vol.hu_volume.shape[-1]
    p = prediction
    assert p.n_slices == n and p.original_shape == vol.hu_volume.shape
    assert p.slice_probs.shape == (n, 6)
    assert np.all((p.slice_probs >= 0) & (p.slice_probs <= 1))
    # segmentation on the original ingest grid: the reader's shape and RAS affine
    assert p.seg_original.shape == vol.hu_volume.shape
    np.testing.assert_allclose(p.original_affine, vol.affine_ras, atol=1e-4)
    assert set(np.unique(p.seg_original)) <= {0, 1}
    # preprocessed grid: the run's spacing, at least the training patch
    np.testing.assert_allclose(np.linalg.norm(p.seg_preprocessed_affine[:3, :3], axis=0), [3.0, 3.0, 5.0], atol=1e-4)
    assert all(s >= q for s, q in zip(p.seg_preprocessed.shape, models["seg"].config["patch"]))
    vml = voxel_volume_ml([3.0, 3.0, 5.0])
    from ichct.pipeline.decision import remove_small_components

    kept = remove_small_components(p.seg_preprocessed > 0, vml, float(models["seg"].config["min_component_ml"]))
    assert p.volumes_ml["any"] == pytest.approx(np.count_nonzero(kept) * vml)  # the run's small components dropped
    vml0 = voxel_volume_ml(np.linalg.norm(vol.affine_ras[:3, :3], axis=0))
    assert p.volumes_ml_original["any"] == pytest.approx(np.count_nonzero(p.seg_original) * vml0)


class _BrightIsBlood(torch.nn.Module):
    """A deterministic 'segmenter': blood wherever the brain-window channel exceeds 0.5 (> 40 HU),
    so the label map has large constant regions (bone, dense tissue) and clean boundaries."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), 20.0 * (x[:, :1] - 0.5)], dim=1)


@pytest.fixture(scope="module")
def structured_prediction(models, study):
    import dataclasses

    seg = dataclasses.replace(models["seg"], network=_BrightIsBlood())
    return predict_study({"seg": seg}, study["image"])


def test_inverted_segmentation_matches_preprocessed_in_world_space(structured_prediction):
    """Each original voxel carries the label of the preprocessed grid at the same world point.

    The class probabilities are resampled linearly, so the check holds exactly where the
    preprocessed label map is constant around that point (its 3x3x3 neighbourhood), and outside
    the preprocessed (cropped) box, one voxel away from its border, everything is background.
    """
    from scipy import ndimage

    p = structured_prediction
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in p.original_shape], indexing="ij"), -1).reshape(-1, 3)
    world = np.c_[ijk, np.ones(len(ijk))] @ p.original_affine.T
    pre_ijk = (world @ np.linalg.inv(p.seg_preprocessed_affine).T)[:, :3]
    idx = np.rint(pre_ijk).astype(int)
    shape = np.array(p.seg_preprocessed.shape)
    inside = np.all((idx >= 0) & (idx < shape), axis=1)
    assert inside.mean() > 0.3
    seg = p.seg_preprocessed
    uniform = ndimage.maximum_filter(seg, size=3, mode="nearest") == ndimage.minimum_filter(seg, size=3, mode="nearest")
    at = tuple(idx[inside].T)
    check = uniform[at]
    assert check.sum() > 1000 and seg[at][check].any()  # enough constant voxels, blood among them
    got = p.seg_original.reshape(-1)[inside]
    assert np.mean(seg[at][check] == got[check]) > 0.99
    far = np.any((idx < -1) | (idx > shape), axis=1)
    assert far.any() and np.all(p.seg_original.reshape(-1)[far] == 0)


def test_rule_scores_and_calls(prediction, models):
    from ichct.pipeline.decision import consecutive_score, max_score, topk_mean_score

    p = prediction
    assert set(p.scores) == {"consecutive", "max", "topk_mean", "seg_volume", "seg_peak", "fused"}
    k = models["cls"].rule.k
    np.testing.assert_allclose([p.scores["max"][s] for s in LABEL_NAMES], max_score(p.slice_probs))
    np.testing.assert_allclose([p.scores["topk_mean"][s] for s in LABEL_NAMES], topk_mean_score(p.slice_probs, k))
    np.testing.assert_allclose([p.scores["consecutive"][s] for s in LABEL_NAMES], consecutive_score(p.slice_probs, k))
    assert p.scores["seg_volume"] == {"any": pytest.approx(p.volumes_ml["any"])}
    # the peak probability lies in [0, 1], and the model's segmented voxels came from probabilities above 0.5
    assert set(p.scores["seg_peak"]) == {"any"} and 0.0 <= p.scores["seg_peak"]["any"] <= 1.0
    if p.volumes_ml["any"] > 0:
        assert p.scores["seg_peak"]["any"] > 0.3
    # fused: the mean of the two models' scores, for "any" only beside a binary segmenter
    assert p.scores["fused"] == {"any": pytest.approx((p.scores["consecutive"]["any"] + p.scores["seg_peak"]["any"]) / 2)}
    for rule, per in p.decisions.items():
        for s, d in per.items():
            assert d["positive"] == (d["score"] >= d["threshold"]), (rule, s)
    assert p.decisions["consecutive"]["any"]["threshold"] == models["cls"].rule.threshold_for("any")


def test_single_model_and_errors(models, study):
    cls_only = predict_study({"cls": models["cls"]}, study["image"])
    assert cls_only.seg_original is None and set(cls_only.scores) == {"consecutive", "max", "topk_mean"}
    seg_only = predict_study({"seg": models["seg"], "cls": None}, study["image"], default_rules({"seg": models["seg"]}))
    assert seg_only.slice_probs is None and set(seg_only.scores) == {"seg_volume", "seg_peak"}
    assert seg_only.seg_original.shape == cls_only.original_shape
    with pytest.raises(ValueError, match="at least one model"):
        predict_study({}, study["image"])
    with pytest.raises(ValueError, match="is a seg run"):
        predict_study({"cls": models["seg"]}, study["image"])


def test_small_components_leave_the_mask_and_the_volumes(models, study):
    """``min_component_ml`` of the seg run: components below it leave the original-grid mask and the
    model-grid volumes; larger ones stay voxel for voxel."""
    import dataclasses

    from scipy import ndimage

    def run(min_ml: float):
        seg = dataclasses.replace(models["seg"], network=_BrightIsBlood(),
                                  config={**models["seg"].config, "min_component_ml": min_ml})
        return predict_study({"seg": seg}, study["image"])

    def components_ml(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
        lab, n = ndimage.label(mask > 0)
        return np.bincount(lab.ravel())[1:] * voxel_volume_ml(np.linalg.norm(affine[:3, :3], axis=0))

    everything, cleaned = run(0.0), run(0.5)
    sizes_all = components_ml(everything.seg_original, everything.original_affine)
    assert (sizes_all < 0.5).any() and (sizes_all >= 0.5).any()  # the bright-is-blood map has both
    sizes_clean = components_ml(cleaned.seg_original, cleaned.original_affine)
    assert len(sizes_clean) and sizes_clean.min() >= 0.5
    np.testing.assert_allclose(np.sort(sizes_clean), np.sort(sizes_all[sizes_all >= 0.5]))
    kept = cleaned.seg_original > 0
    assert np.array_equal(everything.seg_original[kept], cleaned.seg_original[kept])
    assert cleaned.volumes_ml_original["any"] == pytest.approx(sizes_clean.sum())
    assert cleaned.volumes_ml["any"] < everything.volumes_ml["any"]


def test_unsure_components_leave_both_grids_whole(models, study):
    """``min_component_confidence`` of the seg run: components whose mean blood probability is below it
    leave the original-grid mask and the model-grid map whole; the others stay voxel for voxel."""
    import dataclasses

    from scipy import ndimage

    def run(min_confidence: float):
        seg = dataclasses.replace(models["seg"], network=_BrightIsBlood(),
                                  config={**models["seg"].config, "min_component_confidence": min_confidence})
        return predict_study({"seg": seg}, study["image"])

    everything, sure = run(0.0), run(0.9)  # the large bright regions stay, some small dim ones go
    for grid in ("seg_original", "seg_preprocessed"):
        before, after = getattr(everything, grid) > 0, getattr(sure, grid) > 0
        assert after.any() and (before & ~after).any() and not (after & ~before).any()
        lab, _ = ndimage.label(before)
        kept = np.unique(lab[after])
        assert np.array_equal(np.isin(lab, kept) & before, after), grid  # whole components, kept or dropped
    assert sure.volumes_ml["any"] < everything.volumes_ml["any"]
