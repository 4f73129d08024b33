"""Segmentation metrics: Dice conventions, HD95 with spacing, volumes, lesions, summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ichct.pipeline.evaluate.metrics_seg import (
    bland_altman,
    dice,
    lesion_detection,
    segmentation_case_metrics,
    segmentation_summary,
    surface_distances,
)


def _cube(shape=(20, 20, 20), lo=(5, 5, 5), size=8):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, a + size) for a in lo)] = True
    return m


def test_dice_conventions_and_hand_case():
    z = np.zeros((4, 4, 4), bool)
    assert dice(z, z) == (1.0, True)  # empty-empty
    a = z.copy()
    a[0, 0, :2] = True
    assert dice(a, z) == (0.0, False) and dice(z, a) == (0.0, False)
    b = z.copy()
    b[0, 0, 1:4] = True  # |A|=2, |B|=3, overlap 1
    assert dice(a, b)[0] == pytest.approx(2 * 1 / 5)


def test_dice_equals_monai_dicemetric():
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(0)
    cases = [(rng.random((8, 8, 8)) > 0.6, rng.random((8, 8, 8)) > 0.5), (np.zeros((8, 8, 8), bool),) * 2]
    for p, t in cases:
        m = DiceMetric(include_background=True, ignore_empty=False)
        m(y_pred=torch.as_tensor(p[None, None].astype(np.float32)), y=torch.as_tensor(t[None, None].astype(np.float32)))
        assert dice(p, t)[0] == pytest.approx(float(m.aggregate()), abs=1e-6)


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
def test_hd95_offset_cubes_uses_spacing():
    a = _cube()
    b = np.roll(a, 1, axis=0)
    hd, asd = surface_distances(a, b, spacing=(2.5, 1.0, 1.0))
    assert hd == pytest.approx(2.5)
    assert 0 < asd < 2.5
    c = np.roll(a, 1, axis=2)
    assert surface_distances(a, c, spacing=(2.5, 1.0, 1.0))[0] == pytest.approx(1.0)
    # matches MONAI's metric class
    from monai.metrics import HausdorffDistanceMetric

    m = HausdorffDistanceMetric(include_background=True, percentile=95)
    m(y_pred=torch.as_tensor(a[None, None].astype(np.float32)), y=torch.as_tensor(b[None, None].astype(np.float32)),
      spacing=[2.5, 1.0, 1.0])
    assert hd == pytest.approx(float(m.aggregate()))
    z = np.zeros_like(a)
    assert all(math.isnan(v) for v in surface_distances(a, z, (1, 1, 1)))
    assert all(math.isnan(v) for v in surface_distances(z, z, (1, 1, 1)))


def test_lesion_detection():
    true = np.zeros((20, 20, 20), bool)
    true[1:4, 1:4, 1:4] = True  # lesion 1: hit
    true[10:13, 10:13, 10:13] = True  # lesion 2: missed
    pred = np.zeros_like(true)
    pred[3:6, 3:6, 3:6] = True  # overlaps lesion 1
    pred[15:17, 1:3, 1:3] = True  # false positive
    r = lesion_detection(pred, true)
    assert r == {"n_true_lesions": 2, "n_detected_lesions": 1, "n_pred_lesions": 2, "n_fp_lesions": 1}


def test_case_metrics_volumes_and_classes():
    true = np.zeros((10, 10, 10), np.uint8)
    true[0:2, 0:5, 0:5] = 2  # 50 voxels intraparenchymal
    pred = np.zeros_like(true)
    pred[0:2, 0:5, 0:4] = 2  # 40 voxels
    pred[8, 8, 8] = 5  # 1 voxel subdural (false positive)
    m = segmentation_case_metrics(pred, true, spacing=(2.0, 1.0, 0.5), num_classes=6)
    assert set(m) == {"any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"}
    ip = m["intraparenchymal"]
    assert ip["vol_true_ml"] == pytest.approx(50 * 1e-3) and ip["vol_pred_ml"] == pytest.approx(40e-3)
    assert ip["vol_err_ml"] == pytest.approx(-10e-3) and ip["vol_rel_err"] == pytest.approx(-0.2)
    assert ip["dice"] == pytest.approx(80 / 90)
    assert m["epidural"]["dice"] == 1.0 and m["epidural"]["dice_empty_empty"] == 1.0
    assert math.isnan(m["epidural"]["hd95_mm"]) and math.isnan(m["epidural"]["vol_rel_err"])
    assert m["subdural"]["dice"] == 0.0
    # default lesions (>= 0.05 mL): the 0.001 mL speck is no false positive; the 0.04 mL prediction is
    # no lesion of its own but detects the 0.05 mL reference lesion it overlaps
    assert m["subdural"]["n_fp_lesions"] == 0 and m["subdural"]["n_pred_lesions"] == 0
    assert (m["any"]["n_true_lesions"], m["any"]["n_detected_lesions"], m["any"]["n_pred_lesions"]) == (1, 1, 0)
    old = segmentation_case_metrics(pred, true, spacing=(2.0, 1.0, 0.5), num_classes=6, connectivity=1)
    assert old["subdural"]["n_fp_lesions"] == 1 and old["any"]["n_pred_lesions"] == 2  # every component


def test_bland_altman_by_hand():
    ba = bland_altman([10, 20, 30], [12, 19, 33])  # diffs 2, -1, 3
    assert ba["bias"] == pytest.approx(4 / 3)
    sd = np.std([2, -1, 3], ddof=1)
    assert ba["loa_low"] == pytest.approx(4 / 3 - 1.96 * sd) and ba["loa_high"] == pytest.approx(4 / 3 + 1.96 * sd)


def _seg_table(rows):
    table = {}
    for r in rows:
        for k, v in r.items():
            table.setdefault(f"seg:any:{k}", []).append(v)
    return {k: np.asarray(v, float) for k, v in table.items()}


def test_summary_empty_cases_counted_and_excluded():
    a = _cube((12, 12, 12), (2, 2, 2), 5)
    z = np.zeros_like(a)
    cases = [(a, a), (np.roll(a, 1, 0), a), (z, z), (a, z)]  # exact, offset, empty-empty, FP only
    rows = [segmentation_case_metrics(p.astype(np.uint8), t.astype(np.uint8), (1, 1, 1), 2)["any"] for p, t in cases]
    table = _seg_table(rows)
    s = segmentation_summary(table, ["p1", "p2", "p3", "p4"], n_boot=200, seed=0)["any"]
    d = [r["dice"] for r in rows]
    assert d[2] == 1.0 and d[3] == 0.0
    assert s["dice"]["value"] == pytest.approx(np.mean(d))
    assert s["dice_nonempty"]["value"] == pytest.approx(np.mean([d[0], d[1], d[3]]))
    assert s["dice_positive"]["value"] == pytest.approx(np.mean([d[0], d[1]]))  # reference has blood
    assert s["n_empty_empty"]["value"] == 1 and s["n_hd95_undefined"]["value"] == 2
    assert s["hd95_mm"]["value"] == pytest.approx(np.mean([0.0, 1.0]))  # NaN studies excluded
    assert s["lesion_sensitivity"]["value"] == pytest.approx(2 / 2)
    assert s["fp_per_scan"]["value"] == pytest.approx(1 / 4)
    ba = bland_altman(table["seg:any:vol_true_ml"], table["seg:any:vol_pred_ml"])
    assert s["bland_altman_bias_ml"]["value"] == pytest.approx(ba["bias"])
    assert s["bland_altman_loa_high_ml"]["value"] == pytest.approx(ba["loa_high"])


def test_summary_all_empty():
    z = np.zeros((6, 6, 6), np.uint8)
    rows = [segmentation_case_metrics(z, z, (1, 1, 1), 2)["any"] for _ in range(3)]
    s = segmentation_summary(_seg_table(rows), ["a", "b", "c"], n_boot=50)["any"]
    assert s["dice"]["value"] == 1.0 and s["n_empty_empty"]["value"] == 3
    assert math.isnan(s["hd95_mm"]["value"]) and "empty" in s["hd95_mm"]["reason"]
    assert math.isnan(s["lesion_sensitivity"]["value"]) and s["lesion_sensitivity"]["reason"] == "no reference lesions"
    assert s["fp_per_scan"]["value"] == 0.0
