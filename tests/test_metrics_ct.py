"""CT-level metrics against hand-computed values and MONAI; degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ichct.pipeline.decision import DecisionRule
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.evaluate.metrics_ct import (
    average_precision,
    binary_log_loss,
    binary_metrics,
    brier_score,
    ct_level_metrics,
    degenerate_reasons,
    expected_calibration_error,
    pr_curve,
    reader_metrics,
    reliability_curve,
    roc_auc,
    roc_auc_known_labels,
    roc_curve,
    rsna_log_loss,
    weighted_auc_ap,
)

Y = [1, 1, 1, 0, 0, 0, 0]
S = [0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.4]


def test_operating_point_by_hand():
    m = binary_metrics(Y, S, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 3)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["ppv"] == pytest.approx(2 / 3)
    assert m["npv"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["f1"] == pytest.approx(2 / 3)
    # score == threshold is positive (as in ichct.pipeline.decision)
    assert binary_metrics([1], [0.5], 0.5)["sensitivity"] == 1.0


def test_operating_point_matches_monai_confusion_matrix():
    from monai.metrics import ConfusionMatrixMetric

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = rng.random(200)
    names = ["sensitivity", "specificity", "precision", "negative predictive value", "accuracy", "f1 score"]
    cm = ConfusionMatrixMetric(include_background=True, metric_name=names)
    calls = torch.as_tensor((s >= 0.4).astype(np.float32))[:, None]
    cm(y_pred=calls, y=torch.as_tensor(y, dtype=torch.float32)[:, None])
    theirs = [float(v) for v in cm.aggregate()]
    mine = binary_metrics(y, s, 0.4)
    for key, val in zip(["sensitivity", "specificity", "ppv", "npv", "accuracy", "f1"], theirs):
        assert mine[key] == pytest.approx(val, abs=1e-6), key


def test_auc_and_ap_by_hand_with_ties():
    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs 1 + 1 + 1/2 + 1 = 3.5 of 4
    assert roc_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    # AP step-wise: (R 0.5, P 1) then (R 1, P 2/3)
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a tie forms one step: (R 0.5, P 0.5) then (R 1, P 2/3)
    assert average_precision([0.9, 0.9, 0.5], [1, 0, 1]) == pytest.approx(0.25 + 0.5 * 2 / 3)


def test_auc_equals_monai_rocaucmetric_with_ties():
    from monai.metrics import ROCAUCMetric

    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 300)
        s = np.round(rng.random(300) * 0.6 + 0.3 * y, 1)  # rounding makes many ties
        metric = ROCAUCMetric()
        metric(y_pred=torch.as_tensor(s)[:, None], y=torch.as_tensor(y)[:, None])
        assert roc_auc(s, y) == pytest.approx(float(metric.aggregate()), abs=1e-12)


def test_weighted_auc_equals_auc_of_repeated_rows():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 30)
    s = np.round(rng.random(30), 1)
    w = rng.integers(0, 4, (3, 30)).astype(float)
    res = weighted_auc_ap(s, y, w)
    for b in range(3):
        rep = np.repeat(np.arange(30), w[b].astype(int))
        assert res["roc_auc"][b] == pytest.approx(roc_auc(s[rep], y[rep]))
        assert res["pr_auc"][b] == pytest.approx(average_precision(s[rep], y[rep]))


def test_degenerate_cases_are_nan_with_reason():
    m = binary_metrics([0, 0, 0], [0.1, 0.9, 0.4], 0.5)
    assert math.isnan(m["sensitivity"]) and m["specificity"] == pytest.approx(2 / 3)
    assert math.isnan(roc_auc([0.1, 0.9, 0.4], [0, 0, 0]))
    assert math.isnan(average_precision([0.1, 0.9], [0, 0]))
    assert math.isnan(roc_auc([0.1, 0.9], [1, 1]))  # single class
    r = degenerate_reasons([0, 0, 0], [False, False, False])
    assert r["sensitivity"] == "no positive cases" and r["roc_auc"] == "no positive cases"
    assert r["ppv"] == "no positive calls"
    # all predictions equal: AUC 0.5, AP = prevalence
    assert roc_auc([0.3] * 4, [1, 0, 0, 1]) == 0.5
    assert average_precision([0.3] * 4, [1, 0, 0, 0]) == pytest.approx(0.25)


def test_roc_auc_known_labels_leaves_unknown_labels_out():
    """Training's validation AUC: labels < 0 are unknown and left out, labels > 0 positive."""
    assert roc_auc_known_labels([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc_known_labels([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert math.isnan(roc_auc_known_labels([0.1, 0.2], [1, 1]))
    assert roc_auc_known_labels([0.9, 0.1, 0.3], [1, 0, -1]) == 1.0
    assert roc_auc_known_labels([0.9, 0.1, 0.3], [2, 0, 0]) == 1.0
    assert math.isnan(roc_auc_known_labels([float("nan"), 0.1], [1, 0]))
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 5, 60) / 4, rng.integers(-1, 2, 60)
    assert roc_auc_known_labels(s, y) == roc_auc(s[y >= 0], y[y >= 0])


def test_curves_by_hand():
    roc = roc_curve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    np.testing.assert_allclose(roc["fpr"], [0, 0, 0.5, 1])
    np.testing.assert_allclose(roc["tpr"], [0, 0.5, 1, 1])
    pr = pr_curve([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    np.testing.assert_allclose(pr["recall"], [0.5, 0.5, 1, 1])
    np.testing.assert_allclose(pr["precision"], [1, 0.5, 2 / 3, 0.5])


def test_log_losses_by_hand():
    p = np.array([[0.9, 0.2, 0.5, 0.5, 0.5, 0.1]])
    y = np.array([[1, 0, 1, 0, 0, 0]])
    expected = (2 * -math.log(0.9) - math.log(0.8) + 3 * -math.log(0.5) - math.log(0.9)) / 7
    assert rsna_log_loss(p, y) == pytest.approx(expected)
    # two rows: the mean of the rows
    p2, y2 = np.vstack([p, np.full((1, 6), 0.5)]), np.vstack([y, np.zeros((1, 6))])
    assert rsna_log_loss(p2, y2) == pytest.approx((expected + math.log(2)) / 2)
    # clipping: a confident wrong prediction costs -log(1e-15), not inf
    assert binary_log_loss([1.0], [0]) == pytest.approx(-math.log(1e-15), rel=1e-4)
    assert math.isfinite(rsna_log_loss(np.zeros((1, 6)), np.ones((1, 6))))


def test_brier_ece_reliability_by_hand():
    p, y = [0.05, 0.15, 0.15, 0.95], [0, 1, 0, 1]
    assert brier_score(p, y) == pytest.approx((0.0025 + 0.7225 + 0.0225 + 0.0025) / 4)
    assert expected_calibration_error(p, y, n_bins=10) == pytest.approx((0.05 + 0.7 + 0.05) / 4)
    rel = reliability_curve(p, y, n_bins=10)
    assert rel["count"].tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert rel["fraction_positive"][1] == 0.5 and math.isnan(rel["mean_predicted"][2])
    assert reliability_curve([1.0], [1], n_bins=10)["count"][-1] == 1  # p = 1 goes to the last bin


def _table(n=12, seed=0, no_pos_subtype="epidural"):
    rng = np.random.default_rng(seed)
    t = {}
    for st in LABEL_NAMES:
        y = rng.integers(0, 2, n) if st != no_pos_subtype else np.zeros(n, int)
        t[f"label:{st}"] = y
        t[f"score:max:{st}"] = np.clip(0.5 * y + 0.5 * rng.random(n), 0, 1)
    return t, [f"P{i // 2}" for i in range(n)]


def test_ct_level_metrics_structure_and_degenerate_subtype():
    table, keys = _table()
    table["slice_ll_sum"] = np.arange(12, dtype=float)
    table["n_slices"] = np.full(12, 4)
    ct, curves = ct_level_metrics(table, keys, {"max": DecisionRule("max", threshold=0.5)}, n_boot=200, seed=1)
    any_ = ct["any"]["max"]
    assert any_["sensitivity"]["value"] == pytest.approx(
        binary_metrics(table["label:any"], table["score:max:any"], 0.5)["sensitivity"])
    assert any_["roc_auc"]["ci_low"] <= any_["roc_auc"]["value"] <= any_["roc_auc"]["ci_high"]
    epi = ct["epidural"]["max"]
    assert math.isnan(epi["sensitivity"]["value"]) and epi["sensitivity"]["reason"] == "no positive cases"
    assert math.isnan(epi["roc_auc"]["value"]) and epi["roc_auc"]["reason"] == "no positive cases"
    assert math.isfinite(epi["specificity"]["value"])
    assert ct["all"]["max"]["rsna_log_loss_slice"]["value"] == pytest.approx(66 / 48)  # pooled over slices
    p = np.stack([table[f"score:max:{s}"] for s in LABEL_NAMES], 1)
    y = np.stack([table[f"label:{s}"] for s in LABEL_NAMES], 1)
    assert ct["all"]["max"]["rsna_log_loss_study"]["value"] == pytest.approx(rsna_log_loss(p, y))
    assert set(curves["any"]["max"]) >= {"roc", "pr", "band", "reliability"}


def test_reader_metrics():
    table, keys = _table(n=10, no_pos_subtype=None)
    table["reader:R1:any"] = table["label:any"].copy()
    out = reader_metrics(table, keys, ["R1"], n_boot=100)
    assert out["any"]["R1"]["sensitivity"]["value"] == 1.0
    assert out["any"]["R1"]["specificity"]["value"] == 1.0
    assert "epidural" not in out
