"""Volume-level decision rules: scores, calls, segmentation volumes, thresholds, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ichct.pipeline import decision as d
from ichct.pipeline.decision import (
    LABEL_NAMES,
    DecisionRule,
    choose_threshold,
    choose_thresholds,
    consecutive_call,
    consecutive_score,
    ct_scores,
    decide,
    max_score,
    remove_small_components,
    segmentation_volumes,
    slice_scores,
    topk_mean_score,
    voxel_volume_ml,
)


def _longest_run(passing: list[bool]) -> int:
    best = run = 0
    for p in passing:
        run = run + 1 if p else 0
        best = max(best, run)
    return best


# ------------------------------------------------------------------ slice rules


def test_label_names_match_network_outputs() -> None:
    from ichct.networks import LABEL_NAMES as NET_LABEL_NAMES

    assert LABEL_NAMES == NET_LABEL_NAMES and LABEL_NAMES[0] == "any" and len(LABEL_NAMES) == 6


def test_consecutive_needs_k_adjacent_slices() -> None:
    p = [0.1, 0.9, 0.8, 0.2, 0.7, 0.95, 0.6, 0.1]
    assert consecutive_score(p, k=3) == pytest.approx(0.6)  # window (0.7, 0.95, 0.6)
    assert consecutive_score(p, k=2) == pytest.approx(0.8)  # window (0.9, 0.8)
    assert consecutive_score(p, k=1) == pytest.approx(0.95)
    assert consecutive_call(p, 0.6, k=3) is True
    assert consecutive_call(p, 0.65, k=3) is False
    # gaps: five passing slices, but never three in a row
    gaps = [0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.9]
    assert consecutive_call(gaps, 0.5, k=3) is False
    assert consecutive_score(gaps, k=3) == pytest.approx(0.1)
    assert consecutive_call(gaps, 0.5, k=2) is True


def test_fewer_than_k_slices_is_negative() -> None:
    p = [0.99, 0.99]
    assert consecutive_score(p, k=3) == 0.0
    assert consecutive_call(p, 0.5, k=3) is False
    rule = DecisionRule("consecutive", threshold=0.01, k=3)
    calls = decide(rule, slice_probs=np.full((2, 6), 0.99))
    assert not any(v["positive"] for v in calls.values())
    # top-k mean averages what there is; max is unaffected
    assert topk_mean_score(p, k=3) == pytest.approx(0.99)
    assert max_score([0.3]) == pytest.approx(0.3)


def test_ties_at_threshold_pass() -> None:
    p = np.array([0.2, 0.5, 0.5, 0.5, 0.2])
    assert consecutive_call(p, 0.5, k=3) is True
    for name in ("consecutive", "max", "topk_mean"):
        rule = DecisionRule(name, threshold=float(slice_scores(p, name, k=3)), k=3)
        res = decide(rule, slice_probs=np.repeat(p[:, None], 6, axis=1))
        assert all(v["positive"] for v in res.values()), name
        above = DecisionRule(name, threshold=float(np.nextafter(rule.threshold, 1.0)), k=3)
        res = decide(above, slice_probs=np.repeat(p[:, None], 6, axis=1))
        assert not any(v["positive"] for v in res.values()), name


def test_consecutive_score_is_equivalent_to_the_run_rule() -> None:
    """score >= t  <=>  some k adjacent slices have p >= t, for random CTs, k and thresholds."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 15))
        k = int(rng.integers(1, 6))
        probs = np.round(rng.random((n, 6)), 1)  # coarse values create many ties
        scores = consecutive_score(probs, k)
        thresholds = np.concatenate([np.unique(probs), rng.random(3), [1.0]])
        for t in thresholds[thresholds > 0]:
            direct = np.array([_longest_run(list(probs[:, j] >= t)) >= k for j in range(6)])
            assert np.array_equal(scores >= t, direct)
            assert np.array_equal(consecutive_call(probs, t, k), direct)


def test_max_and_topk_mean() -> None:
    p = np.array([[0.1, 0.0], [0.9, 0.2], [0.4, 0.6], [0.7, 0.1]])
    np.testing.assert_allclose(max_score(p), [0.9, 0.6])
    np.testing.assert_allclose(topk_mean_score(p, k=2), [0.8, 0.4])
    np.testing.assert_allclose(topk_mean_score(p, k=1), max_score(p))
    np.testing.assert_allclose(topk_mean_score(p, k=10), p.mean(axis=0))
    assert isinstance(topk_mean_score(p[:, 0], k=2), float)


def test_all_zero_input_is_negative_everywhere() -> None:
    zeros = np.zeros((20, 6))
    for name in ("consecutive", "max", "topk_mean"):
        res = decide(DecisionRule(name, threshold=1e-6), slice_probs=zeros)
        assert set(res) == set(LABEL_NAMES)
        assert all(v["score"] == 0.0 and not v["positive"] for v in res.values())


@pytest.mark.parametrize(
    "probs, match",
    [
        ([0.1, float("nan"), 0.3], "NaN"),
        (np.full((4, 6), np.nan), "NaN"),
        ([0.1, 1.5], r"\[0, 1\]"),
        ([-0.1, 0.5], r"\[0, 1\]"),
        ([0.1, float("inf")], r"\[0, 1\]"),
        (np.zeros((0, 6)), "empty"),
        (np.zeros((2, 3, 4)), "shape"),
    ],
)
def test_invalid_probabilities_rejected(probs, match: str) -> None:
    for fn in (max_score, topk_mean_score, consecutive_score):
        with pytest.raises(ValueError, match=match):
            fn(probs)
    with pytest.raises(ValueError, match=match):
        decide(DecisionRule("max", 0.5), slice_probs=probs)


def test_decide_uses_per_subtype_thresholds_and_column_order() -> None:
    probs = np.zeros((6, 6))
    probs[1:4, 0] = 0.8  # any: 3 adjacent slices at 0.8
    probs[1:4, 5] = 0.8  # subdural likewise
    probs[2, 2] = 0.9  # intraparenchymal: a single slice
    th = {s: 0.5 for s in LABEL_NAMES} | {"subdural": 0.85}
    res = decide(DecisionRule("consecutive", threshold=th, k=3), slice_probs=probs)
    assert [s for s, v in res.items() if v["positive"]] == ["any"]
    assert res["subdural"]["threshold"] == 0.85 and res["subdural"]["score"] == pytest.approx(0.8)
    res = decide(DecisionRule("max", threshold=0.5), slice_probs=probs)
    assert [s for s, v in res.items() if v["positive"]] == ["any", "intraparenchymal", "subdural"]
    with pytest.raises(KeyError, match="epidural"):
        decide(DecisionRule("max", threshold={"any": 0.5}), slice_probs=probs)
    with pytest.raises(ValueError, match="columns"):
        decide(DecisionRule("max", threshold=0.5), slice_probs=probs[:, :5])
    with pytest.raises(ValueError, match="slice_probs"):
        decide(DecisionRule("max", threshold=0.5), segmentation=np.zeros((2, 2, 2)))


# ------------------------------------------------------------------ segmentation rule


def _seg() -> np.ndarray:
    seg = np.zeros((20, 20, 10), dtype=np.uint8)
    seg[2:6, 2:6, 2:4] = 5  # subdural, 32 voxels
    seg[6:8, 2:6, 2:4] = 2  # intraparenchymal, 16 voxels, touching the subdural block
    seg[15, 15, 5] = 4  # subarachnoid, isolated single voxel
    return seg


def test_segmentation_volumes_per_subtype_and_any() -> None:
    vox = 0.5  # mL per voxel
    vols = segmentation_volumes(_seg(), vox, num_classes=6)
    assert set(vols) == set(LABEL_NAMES)
    assert vols["subdural"] == 16.0 and vols["intraparenchymal"] == 8.0 and vols["subarachnoid"] == 0.5
    assert vols["epidural"] == 0.0 and vols["intraventricular"] == 0.0
    assert vols["any"] == 24.5
    # minimum component size: the 1-voxel bleed goes; the touching blocks form one 'any' component
    vols = segmentation_volumes(_seg(), vox, min_component_ml=10.0, num_classes=6)
    assert vols["subarachnoid"] == 0.0 and vols["intraparenchymal"] == 0.0 and vols["subdural"] == 16.0
    assert vols["any"] == 24.0
    # a component of exactly the minimum size is kept
    assert segmentation_volumes(_seg(), vox, min_component_ml=8.0, num_classes=6)["intraparenchymal"] == 8.0


def test_connectivity_changes_components() -> None:
    seg = np.zeros((5, 5, 5), dtype=np.int64)
    seg[1, 1, 1] = seg[2, 2, 2] = 1  # diagonal neighbours
    assert segmentation_volumes(seg, 1.0, min_component_ml=2.0, num_classes=2, connectivity=1) == {"any": 0.0}
    assert segmentation_volumes(seg, 1.0, min_component_ml=2.0, num_classes=2, connectivity=3) == {"any": 2.0}


def test_probability_map_input_uses_argmax() -> None:
    labels = _seg()
    probs = np.full((6, *labels.shape), 0.02, dtype=np.float32)
    for c in range(6):
        probs[c][labels == c] = 0.9
    assert segmentation_volumes(probs, 0.5) == segmentation_volumes(labels, 0.5, num_classes=6)
    binary = np.stack([labels == 0, labels > 0]).astype(np.float32)
    assert segmentation_volumes(binary, 0.5) == {"any": 24.5}
    assert segmentation_volumes(labels[None], 0.5, num_classes=6)["any"] == 24.5


def test_empty_segmentation_is_negative() -> None:
    empty = np.zeros((8, 8, 8), dtype=np.uint8)
    rule = DecisionRule("seg_volume", threshold=0.01, num_seg_classes=6)
    res = decide(rule, segmentation=empty, voxel_volume_ml=0.001)
    assert set(res) == set(LABEL_NAMES)
    assert all(v["score"] == 0.0 and not v["positive"] for v in res.values())
    binary = DecisionRule("seg_volume", threshold=0.01, num_seg_classes=2)
    assert decide(binary, segmentation=empty, voxel_volume_ml=0.001) == {
        "any": {"score": 0.0, "threshold": 0.01, "positive": False}
    }
    assert not remove_small_components(empty, 0.001, 1.0).any()


def test_seg_volume_rule_calls() -> None:
    rule = DecisionRule("seg_volume", threshold={s: 5.0 for s in LABEL_NAMES}, min_component_ml=1.0, num_seg_classes=6)
    res = decide(rule, segmentation=_seg(), voxel_volume_ml=0.5)
    assert {s for s, v in res.items() if v["positive"]} == {"any", "subdural", "intraparenchymal"}
    assert res["subarachnoid"]["score"] == 0.0  # removed as a small component
    tie = DecisionRule("seg_volume", threshold=16.0, num_seg_classes=6)
    assert decide(tie, segmentation=_seg(), voxel_volume_ml=0.5)["subdural"]["positive"]  # >= passes
    with pytest.raises(ValueError, match="voxel_volume_ml"):
        decide(rule, segmentation=_seg())


def test_segmentation_input_errors() -> None:
    with pytest.raises(ValueError, match="num_classes is required"):
        segmentation_volumes(_seg(), 1.0)
    with pytest.raises(ValueError, match=r"integers in \[0, 1\]"):
        segmentation_volumes(_seg(), 1.0, num_classes=2)
    bad = np.zeros((2, 4, 4, 4), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        segmentation_volumes(bad, 1.0)
    with pytest.raises(ValueError, match="channels"):
        segmentation_volumes(np.zeros((3, 4, 4, 4)), 1.0)
    with pytest.raises(ValueError, match="num_classes"):
        segmentation_volumes(np.zeros((2, 4, 4, 4)), 1.0, num_classes=6)
    with pytest.raises(ValueError, match="voxel_volume_ml"):
        segmentation_volumes(_seg(), 0.0, num_classes=6)
    with pytest.raises(ValueError, match="min_component_ml"):
        segmentation_volumes(_seg(), 1.0, min_component_ml=-1, num_classes=6)
    with pytest.raises(ValueError, match="connectivity"):
        segmentation_volumes(_seg(), 1.0, num_classes=6, connectivity=4)


def test_voxel_volume_ml() -> None:
    assert voxel_volume_ml((1.0, 1.0, 5.0)) == pytest.approx(0.005)
    assert voxel_volume_ml([0.5, 0.5, 2.0]) == pytest.approx(0.0005)
    with pytest.raises(ValueError):
        voxel_volume_ml((1.0, 0.0, 1.0))


# ------------------------------------------------------------------ thresholds


def test_choose_threshold_youden() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    # J: t=0.9 .25, 0.8 .5, 0.7 .75, 0.6 .5, 0.35 .75, 0.3 .5 ... -> tie 0.7 / 0.35, the higher wins;
    # every threshold in (0.6, 0.7] gives that operating point: the midpoint is returned
    assert choose_threshold(scores, labels, "youden") == pytest.approx(0.65)
    assert choose_threshold(scores, labels.astype(bool)) == pytest.approx(0.65)
    # perfectly separable data: halfway between the highest negative and the lowest positive
    assert choose_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(0.5)


def test_choose_threshold_youden_does_not_sit_on_the_lowest_positive() -> None:
    """Validation positives all at 0.998: a threshold of 0.998 misses a test positive at 0.99."""
    val_scores = [0.01, 0.02, 0.05, 0.2, 0.998, 0.9985, 0.999]
    t = choose_threshold(val_scores, [0, 0, 0, 0, 1, 1, 1])
    assert t == pytest.approx(0.599)
    assert 0.99 >= t and 0.2 < t


def test_choose_threshold_youden_tie_takes_higher_threshold() -> None:
    # t=0.5: sens 1/2, spec 1 -> J=0.5; t=0.3: sens 1, spec 1/2 -> J=0.5; (0.4, 0.5] keeps t=0.5's point
    assert choose_threshold([0.3, 0.4, 0.5], [1, 0, 1]) == pytest.approx(0.45)
    # the lowest score has no gap below it: it is returned as it is
    assert choose_threshold([0.3, 0.4, 0.5], [1, 0, 0]) == pytest.approx(0.3)


def _observed_gap(scores: np.ndarray, t: float) -> tuple[float, float]:
    """The observed scores just above and just below a threshold that sits strictly inside a gap."""
    above, below = scores[scores >= t], scores[scores < t]
    assert above.size and t not in set(scores.tolist())
    return float(above.min()), float(below.max()) if below.size else -np.inf


def test_choose_threshold_sensitivity_and_specificity_targets() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(400) < 0.3
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1)
    for target in (0.8, 0.9, 0.95):
        t = choose_threshold(scores, labels, "sensitivity", target)
        assert (scores[labels] >= t).mean() >= target
        upper, lower = _observed_gap(scores, t)
        assert t == pytest.approx(0.5 * (upper + lower))
        # the highest such operating point: the next observed score above the gap misses the target
        higher = scores[scores > upper]
        if higher.size:
            assert (scores[labels] >= higher.min()).mean() < target
        t = choose_threshold(scores, labels, "specificity", target)
        assert (scores[~labels] < t).mean() >= target
        upper, lower = _observed_gap(scores, t)
        assert t == pytest.approx(0.5 * (upper + lower))
        # the lowest such operating point: calling the score below the gap positive misses the target
        assert (scores[~labels] < lower).mean() < target


def test_choose_threshold_errors() -> None:
    with pytest.raises(ValueError, match="positives and negatives"):
        choose_threshold([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="positive case"):
        choose_threshold([0.1, 0.2], [0, 0], "sensitivity")
    with pytest.raises(ValueError, match="NaN"):
        choose_threshold([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        choose_threshold([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="equal length"):
        choose_threshold([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="target"):
        choose_threshold([0.1, 0.2], [0, 1], "sensitivity", target=0.0)
    with pytest.raises(ValueError, match="method"):
        choose_threshold([0.1, 0.2], [0, 1], "f1")
    with pytest.raises(ValueError, match="specificity 1.0"):
        choose_threshold([0.1, 0.9], [1, 0], "specificity", target=1.0)


def test_threshold_from_validation_reproduces_calls_on_ct_scores() -> None:
    """Choose per-subtype thresholds on CT scores, store them in a rule, get the same calls."""
    rng = np.random.default_rng(2)
    labels = rng.random((40, 6)) < 0.5
    cts = []
    for y in labels:
        p = rng.random((int(rng.integers(5, 30)), 6)) * 0.6
        start = int(rng.integers(0, p.shape[0] - 3))
        p[start : start + 3] = np.maximum(p[start : start + 3], np.where(y, rng.uniform(0.3, 1.0, 6), 0.0))
        cts.append(p)
    rule0 = DecisionRule("consecutive", threshold=0.5, k=3)
    scores = np.array([[ct_scores(rule0, slice_probs=p)[s] for s in LABEL_NAMES] for p in cts])
    for method in ("youden", "sensitivity"):
        thresholds = choose_thresholds(scores, labels, method, 0.9)
        rule = DecisionRule("consecutive", threshold=thresholds, k=3, meta={"method": method, "target": 0.9})
        calls = np.array([[decide(rule, slice_probs=p)[s]["positive"] for s in LABEL_NAMES] for p in cts])
        expected = scores >= np.array([thresholds[s] for s in LABEL_NAMES])
        assert np.array_equal(calls, expected)
        # the calls are also those of the direct run rule
        direct = np.array([consecutive_call(p, thresholds[s], 3)[j] for p in cts for j, s in enumerate(LABEL_NAMES)])
        assert np.array_equal(direct.reshape(40, 6)[:, 0], calls[:, 0])
        if method == "sensitivity":
            assert all((calls[:, j][labels[:, j]]).mean() >= 0.9 for j in range(6))
    with pytest.raises(ValueError, match="subtype 'epidural'"):
        choose_thresholds(scores, np.column_stack([labels[:, :1], np.zeros((40, 5), bool)]))


# ------------------------------------------------------------------ DecisionRule


def test_rule_json_round_trip(tmp_path) -> None:
    rules = [
        DecisionRule("consecutive", threshold=0.42, k=4),
        DecisionRule("max", threshold={s: 0.1 * (i + 1) for i, s in enumerate(LABEL_NAMES)}),
        DecisionRule("topk_mean", threshold=0.3, k=5, meta={"method": "youden", "auc": 0.91}),
        DecisionRule("seg_volume", threshold=0.5, min_component_ml=0.05, num_seg_classes=6, connectivity=3),
    ]
    for rule in rules:
        text = rule.to_json()
        assert json.loads(text)["name"] == rule.name
        assert DecisionRule.from_json(text) == rule
        path = tmp_path / f"{rule.name}.json"
        rule.save(path)
        assert DecisionRule.load(path) == rule
    assert rules[1].threshold_for("subdural") == pytest.approx(0.6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "mean", "threshold": 0.5}, "rule name"),
        ({"name": "max", "threshold": 0.0}, r"\(0, 1\]"),
        ({"name": "max", "threshold": 1.2}, r"\(0, 1\]"),
        ({"name": "max", "threshold": float("nan")}, r"\(0, 1\]"),
        ({"name": "max", "threshold": {"any": 2.0}}, r"\(0, 1\]"),
        ({"name": "max", "threshold": {}}, "empty"),
        ({"name": "max", "threshold": "high"}, "number"),
        ({"name": "seg_volume", "threshold": 0.0}, "mL"),
        ({"name": "consecutive", "threshold": 0.5, "k": 0}, "k must"),
        ({"name": "consecutive", "threshold": 0.5, "k": 2.5}, "k must"),
        ({"name": "seg_volume", "threshold": 1.0, "min_component_ml": -1.0}, "min_component_ml"),
        ({"name": "seg_volume", "threshold": 1.0, "num_seg_classes": 3}, "num_seg_classes"),
        ({"name": "max", "threshold": 0.5, "meta": {"f": object()}}, "JSON"),
    ],
)
def test_rule_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DecisionRule(**kwargs)


def test_rule_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown"):
        DecisionRule.from_dict({"name": "max", "threshold": 0.5, "colour": "red"})


def test_module_exports() -> None:
    assert set(d.__all__) <= set(dir(d))
    assert d.RULES == ("consecutive", "max", "topk_mean", "seg_volume", "seg_peak", "fused")
    assert set(d.PROBABILITY_MAP_RULES) == {"seg_peak", "fused"}


def test_affine_voxel_volume_is_right_on_a_sheared_grid():
    """A gantry-tilted stack kept as acquired has parallelepiped voxels: the voxel volume is |det|,
    not the product of the column norms (which overstates it by 1/cos(tilt))."""
    from ichct.pipeline.predict.abc2 import abc2_estimate
    from ichct.pipeline.decision import affine_voxel_volume_ml
    from ichct.pipeline.evaluate.metrics_seg import segmentation_case_metrics

    tilt = np.deg2rad(25.0)
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    affine[1, 2] = 5.0 * np.tan(tilt)  # each slice shifted along y by the tilt
    assert affine_voxel_volume_ml(affine) == pytest.approx(0.5 * 0.5 * 5.0 / 1000.0)
    assert affine_voxel_volume_ml(-affine) == pytest.approx(affine_voxel_volume_ml(affine))
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    assert voxel_volume_ml(norms) == pytest.approx(affine_voxel_volume_ml(affine) / np.cos(tilt))
    with pytest.raises(ValueError, match="no positive voxel volume"):
        affine_voxel_volume_ml(np.diag([1.0, 1.0, 0.0, 1.0]))

    mask = np.zeros((40, 40, 8), np.uint8)
    mask[10:30, 10:30, 2:6] = 1  # 1600 voxels = 2.0 mL of parallelepipeds
    voxel_ml = affine_voxel_volume_ml(affine)
    row = segmentation_case_metrics(mask, mask, norms, 2, surface=False, voxel_volume_ml=voxel_ml)["any"]
    assert row["vol_true_ml"] == pytest.approx(2.0) and row["vol_pred_ml"] == pytest.approx(2.0)
    default = segmentation_case_metrics(mask, mask, norms, 2, surface=False)["any"]
    assert default["vol_true_ml"] == pytest.approx(2.0 / np.cos(tilt))
    est = abc2_estimate(mask.astype(bool), norms, voxel_volume_ml=voxel_ml)
    assert est is not None and est.component_volume_ml == pytest.approx(2.0)


def test_seg_peak_scores_the_highest_neighbourhood_mean_per_label():
    """``seg_peak``: any = 1 - p(background), each subtype its own channel, a lone voxel averaged down with
    its neighbours; a probability threshold; a map that is no probability map is refused."""
    probs = np.zeros((6, 8, 8, 8), dtype=np.float32)
    probs[0] = 1.0
    probs[:, 1:4, 1:4, 1:4] = 0.0
    probs[0, 1:4, 1:4, 1:4], probs[5, 1:4, 1:4, 1:4] = 0.2, 0.8  # a subdural blob, 3 x 3 x 3
    probs[0, 6, 6, 6], probs[1, 6, 6, 6] = 0.0, 1.0  # one epidural voxel
    scores = d.peak_probability_scores(probs)
    assert scores["any"] == pytest.approx(0.8) and scores["subdural"] == pytest.approx(0.8)
    assert scores["epidural"] == pytest.approx(1 / 27)  # alone among its 26 neighbours
    assert scores["intraparenchymal"] == 0.0
    assert d.peak_probability_scores(probs, size=1)["epidural"] == pytest.approx(1.0)
    rule = d.DecisionRule("seg_peak", threshold=0.5)
    calls = d.decide(rule, probabilities=probs)
    assert calls["subdural"]["positive"] and not calls["epidural"]["positive"]
    assert calls["any"] == {"score": pytest.approx(0.8), "threshold": 0.5, "positive": True}
    with pytest.raises(ValueError, match="needs probabilities"):
        d.ct_scores(rule, segmentation=probs.argmax(0), voxel_volume_ml=0.001)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        d.DecisionRule("seg_peak", threshold=2.0)
    with pytest.raises(ValueError, match="softmax"):
        d.peak_probability_scores(probs * 5.0)  # logits
    with pytest.raises(ValueError, match="C = 2"):
        d.peak_probability_scores(probs[:3])


def test_fused_rule_averages_the_classifier_window_and_the_segmenter_peak():
    """``fused``: per label both models score, the mean of the ``consecutive`` score (the rule's k) and
    the ``seg_peak`` score; a binary segmenter leaves only ``any``; both inputs are required."""
    slice_probs = np.zeros((10, len(d.LABEL_NAMES)))
    slice_probs[2:5, 0] = [0.9, 0.8, 0.6]      # any: best 3-window minimum 0.6, best 2-window 0.8
    slice_probs[2:5, 5] = 0.3                   # subdural
    probs = np.zeros((2, 6, 6, 6), dtype=np.float32)
    probs[0] = 1.0
    probs[:, 1:4, 1:4, 1:4] = [[[[0.0]]], [[[1.0]]]]  # a 3 x 3 x 3 blob of blood: peak 1.0
    rule = d.DecisionRule("fused", threshold=0.75, k=3)
    assert d.ct_scores(rule, slice_probs=slice_probs, probabilities=probs) == {"any": pytest.approx(0.8)}
    two = d.DecisionRule("fused", threshold=0.75, k=2)
    assert d.ct_scores(two, slice_probs=slice_probs, probabilities=probs)["any"] == pytest.approx(0.9)
    calls = d.decide(rule, slice_probs=slice_probs, probabilities=probs)
    assert calls == {"any": {"score": pytest.approx(0.8), "threshold": 0.75, "positive": True}}
    six = np.zeros((6, 6, 6, 6), dtype=np.float32)
    six[0] = 1.0
    six[:, 1:4, 1:4, 1:4] = 0.0
    six[0, 1:4, 1:4, 1:4], six[5, 1:4, 1:4, 1:4] = 0.5, 0.5  # subdural blob at 0.5
    scores = d.ct_scores(rule, slice_probs=slice_probs, probabilities=six)
    assert set(scores) == set(d.LABEL_NAMES)
    assert scores["subdural"] == pytest.approx(0.4) and scores["any"] == pytest.approx(0.55)
    assert scores["epidural"] == 0.0
    with pytest.raises(ValueError, match="needs slice_probs= and probabilities="):
        d.ct_scores(rule, slice_probs=slice_probs)
    with pytest.raises(ValueError, match="needs slice_probs= and probabilities="):
        d.ct_scores(rule, probabilities=probs)


def test_fused_threshold_is_the_mean_of_the_two_rules():
    cons = d.DecisionRule("consecutive", threshold={s: 0.6 for s in d.LABEL_NAMES} | {"any": 0.7}, k=4,
                          meta={"chosen_on": "validation fold 0"})
    peak = d.DecisionRule("seg_peak", threshold=0.9, meta={"chosen_on": "tuning"})
    rule = d.fused_threshold(cons, peak)
    assert rule.name == "fused" and rule.k == 4
    assert rule.threshold_for("any") == pytest.approx(0.8) and rule.threshold_for("subdural") == pytest.approx(0.75)
    assert rule.meta["consecutive_chosen_on"] == "validation fold 0" and rule.meta["seg_peak_chosen_on"] == "tuning"
    assert d.DecisionRule.from_json(rule.to_json()) == rule
    with pytest.raises(ValueError, match="a consecutive and a seg_peak rule"):
        d.fused_threshold(d.DecisionRule("max", threshold=0.5), peak)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        d.DecisionRule("fused", threshold=0.0)
