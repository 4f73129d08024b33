"""Patient-level bootstrap: resampling unit, vectorised CIs, paired comparison, coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from ichct.pipeline.evaluate.bootstrap import bootstrap_ci, paired_bootstrap, resample_weights
from ichct.pipeline.evaluate.metrics_ct import weighted_auc_ap, weighted_binary_metrics


def test_resampling_draws_whole_patients():
    keys = ["A", "A", "A", "B", "C", "C", "D"]
    w = resample_weights(keys, n=500, seed=0)
    assert w.shape == (500, 7)
    a = w[:, :3]
    assert np.all(a == a[:, :1])  # all three studies of A share the multiplicity
    assert set(np.unique(a.sum(axis=1) % 3)) == {0}  # A contributes 0 or k*3 studies
    assert np.all(w[:, 4] == w[:, 5])
    # 4 patients drawn per resample
    counts = w[:, 0] + w[:, 3] + w[:, 4] + w[:, 6]
    assert np.all(counts == 4)
    assert (a[:, 0] == 0).any() and (a[:, 0] >= 2).any()
    np.testing.assert_array_equal(w, resample_weights(keys, n=500, seed=0))  # seeded


def _sens_fn(table, w):
    return weighted_binary_metrics(table["y"], table["s"] >= 0.5, w) | weighted_auc_ap(table["s"], table["y"], w)


def test_bootstrap_ci_point_and_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = np.clip(0.3 * y + rng.random(50) * 0.7, 0, 1)
    keys = [f"P{i // 2}" for i in range(50)]
    res = bootstrap_ci({"y": y, "s": s}, _sens_fn, keys, n=500, seed=1)
    for m in ("sensitivity", "specificity", "roc_auc", "pr_auc"):
        assert res[m]["ci_low"] <= res[m]["value"] <= res[m]["ci_high"], m
        assert res[m]["ci_high"] - res[m]["ci_low"] > 0
    assert res["sensitivity"]["value"] == pytest.approx(np.mean(s[y == 1] >= 0.5))
    # undefined metric: NaN value and interval, no crash
    res0 = bootstrap_ci({"y": np.zeros(6, int), "s": s[:6]}, _sens_fn, keys[:6], n=50)
    assert math.isnan(res0["sensitivity"]["value"]) and math.isnan(res0["sensitivity"]["ci_low"])
    assert res0["sensitivity"]["n_boot_valid"] == 0


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    good = np.clip(0.6 * y + 0.4 * rng.random(80), 0, 1)
    bad = rng.random(80)
    keys = [f"P{i // 2}" for i in range(80)]
    same = paired_bootstrap(_sens_fn, {"y": y, "s": good}, {"y": y, "s": good}, keys, n=300)
    assert same["roc_auc"]["value"] == 0 and same["roc_auc"]["p_value"] == 1.0
    diff = paired_bootstrap(_sens_fn, {"y": y, "s": good}, {"y": y, "s": bad}, keys, n=300)
    assert diff["roc_auc"]["value"] > 0.2 and diff["roc_auc"]["ci_low"] > 0
    assert diff["roc_auc"]["p_value"] < 0.01


def test_coverage_of_known_auc_and_sensitivity():
    """200 simulated datasets: the 95 % intervals cover the true values about 95 % of the time."""
    rng = np.random.default_rng(123)
    d = 1.0
    true_auc = norm.cdf(d / math.sqrt(2))
    true_sens = 1 - norm.cdf(0.5 - d)  # positives ~ N(d, 1), threshold 0.5
    n_pat, hits_auc, hits_sens, n_sim = 80, 0, 0, 200
    for i in range(n_sim):
        n_studies = rng.integers(1, 3, n_pat)  # 1 or 2 studies per patient
        keys = np.repeat(np.arange(n_pat), n_studies)
        y = rng.integers(0, 2, keys.size)
        s = rng.normal(d * y, 1.0)
        res = bootstrap_ci({"y": y, "s": s}, _sens_fn, keys, n=300, seed=i)
        hits_auc += res["roc_auc"]["ci_low"] <= true_auc <= res["roc_auc"]["ci_high"]
        hits_sens += res["sensitivity"]["ci_low"] <= true_sens <= res["sensitivity"]["ci_high"]
    assert 0.88 <= hits_auc / n_sim <= 0.99
    assert 0.88 <= hits_sens / n_sim <= 0.99
