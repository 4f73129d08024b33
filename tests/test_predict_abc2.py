"""ABC/2 estimate and the slice ranges behind a call (``ichct.pipeline.predict.abc2``, ``predict_findings``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ichct.pipeline.predict.abc2 import abc2_estimate, largest_component
from ichct.pipeline.decision import DecisionRule, consecutive_score
from ichct.pipeline.predict.findings import runs, seg_ranges, slice_rule_ranges


def _ellipsoid(shape, center, semi, spacing):
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    r2 = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, center, semi))
    return r2 <= 1.0


def test_abc2_of_an_ellipsoid_matches_its_diameters_and_volume():
    spacing = (0.5, 0.5, 2.0)
    semi = (20.0, 12.0, 9.0)  # mm
    mask = _ellipsoid((100, 80, 20), (25.0, 20.0, 19.0), semi, spacing)
    est = abc2_estimate(mask, spacing)
    assert est.a_mm == pytest.approx(2 * semi[0], abs=1.5)
    assert est.b_mm == pytest.approx(2 * semi[1], abs=1.5)
    assert est.n_slices == int(mask.any(axis=(0, 1)).sum()) and est.c_mm == pytest.approx(est.n_slices * 2.0)
    assert est.component_volume_ml == pytest.approx(mask.sum() * 0.5 * 0.5 * 2.0 / 1000)
    true_ml = 4 / 3 * math.pi * np.prod(semi) / 1000
    # ABC/2 approximates the ellipsoid volume (pi/6 = 0.52 vs 0.5)
    assert est.volume_ml == pytest.approx(true_ml, rel=0.15)
    assert est.volume_ml == pytest.approx(est.a_mm * est.b_mm * est.c_mm / 2000)


def test_abc2_diameters_of_a_rectangle_and_the_thickness_argument():
    mask = np.zeros((30, 30, 3), bool)
    mask[5:15, 10:14, 1] = True  # 10 x 4 pixels of 1 mm, one slice
    est = abc2_estimate(mask, (1.0, 1.0, 5.0), slice_thickness_mm=3.0)
    diag = math.hypot(10, 4)
    assert est.a_mm == pytest.approx(diag)
    assert est.b_mm == pytest.approx(2 * 10 * 4 / diag)  # rectangle's extent across its diagonal
    assert est.slice_index == 1 and est.n_slices == 1 and est.c_mm == 3.0


def test_abc2_uses_the_largest_component_and_handles_empty_masks():
    mask = np.zeros((40, 40, 6), bool)
    mask[2:6, 2:6, 1:3] = True  # small
    mask[20:35, 20:30, 2:6] = True  # large
    assert largest_component(mask).sum() == 15 * 10 * 4
    est = abc2_estimate(mask, (1.0, 1.0, 1.0))
    assert est.n_slices == 4 and est.slice_index in (2, 3, 4, 5)
    assert est.a_mm == pytest.approx(math.hypot(15, 10))
    assert abc2_estimate(np.zeros((4, 4, 4), bool), (1, 1, 1)) is None
    with pytest.raises(ValueError, match="3D"):
        abc2_estimate(np.ones((4, 4), bool), (1, 1, 1))


def test_runs_and_seg_ranges():
    assert runs([7, 1, 2, 3, 9, 8]) == [[1, 3], [7, 9]]
    assert runs([]) == []
    m = np.zeros((3, 3, 8), bool)
    m[1, 1, [2, 3, 6]] = True
    assert seg_ranges(m) == [[2, 3], [6, 6]]


def test_slice_rule_ranges_follow_the_rule():
    p = np.array([0.1, 0.7, 0.8, 0.2, 0.9, 0.95, 0.9, 0.1])
    cons = DecisionRule("consecutive", threshold=0.6, k=3)
    ranges, why = slice_rule_ranges(p, cons, 0.6, positive=True)
    assert ranges == [[4, 6]] and "3 adjacent" in why  # the run of 2 does not count
    high = DecisionRule("consecutive", threshold=0.95, k=3)
    ranges, _ = slice_rule_ranges(p, high, 0.95, positive=False)
    assert ranges == [[4, 6]]
    assert consecutive_score(p, 3) == pytest.approx(p[4:7].min())  # that window gave the score
    mx = DecisionRule("max", threshold=0.85)
    assert slice_rule_ranges(p, mx, 0.85, True)[0] == [[4, 6]]
    assert slice_rule_ranges(p, mx, 0.99, False)[0] == [[5, 5]]
    top = DecisionRule("topk_mean", threshold=0.5, k=3)
    assert slice_rule_ranges(p, top, 0.5, True)[0] == [[4, 6]]
    assert slice_rule_ranges(np.array([0.9, 0.1]), cons, 0.6, False)[0] == []
