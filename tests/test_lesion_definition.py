"""The lesion definition of the lesion-level metrics (issue 23): connectivity and minimum volume, in the
counts, the summary, ``ichct evaluate --lesion-connectivity/--lesion-min-ml`` and its report."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage
from eval_helpers import eval_setup, evaluate_predictions, read_metrics, split_entries, write_label_predictions

from ichct.errors import InputError
from ichct.pipeline.evaluate.lesions import DEFAULT_LESIONS, LesionDefinition, lesion_counts
from ichct.pipeline.evaluate.metrics_seg import segmentation_case_metrics, segmentation_summary

OLD = LesionDefinition(6, 0.0)  # the definition before issue 23


def _counts(pred, true, lesions, voxel_ml=0.001):
    r = lesion_counts(pred, true, lesions, voxel_ml)
    return r["n_true_lesions"], r["n_detected_lesions"], r["n_pred_lesions"], r["n_fp_lesions"]


def test_diagonal_neighbours_are_one_lesion_at_26_and_two_at_6():
    corner = np.zeros((5, 5, 5), bool)
    corner[1, 1, 1] = corner[2, 2, 2] = True  # touching at a corner only
    edge = np.zeros((5, 5, 5), bool)
    edge[1, 1, 1] = edge[2, 2, 1] = True  # touching along an edge
    for c, n_corner, n_edge in ((6, 2, 2), (18, 2, 1), (26, 1, 1)):
        lesions = LesionDefinition(c, 0.0)
        assert _counts(corner, corner, lesions)[0] == n_corner, c
        assert _counts(edge, edge, lesions)[0] == n_edge, c
    # a prediction of the corner pair with nothing in the reference: one false positive at 26, two at 6
    empty = np.zeros_like(corner)
    assert _counts(corner, empty, LesionDefinition(26, 0.0)) == (0, 0, 1, 1)
    assert _counts(corner, empty, OLD) == (0, 0, 2, 2)


def test_speck_under_the_minimum_is_neither_a_lesion_nor_a_false_positive():
    true = np.zeros((20, 20, 10), np.uint8)
    true[2:8, 2:8, 2:5] = 1  # 108 voxels of 1 mm^3 = 0.108 mL: a lesion
    true[15, 15, 8] = 1  # a reference speck of 0.001 mL, missed
    pred = np.zeros_like(true)
    pred[2:8, 2:8, 2:5] = 1
    pred[18, 2, 1] = 1  # a predicted speck far from any blood
    new = segmentation_case_metrics(pred, true, (1.0, 1.0, 1.0), 2, surface=False)["any"]
    assert (new["n_true_lesions"], new["n_detected_lesions"], new["n_pred_lesions"], new["n_fp_lesions"]) == (1, 1, 1, 0)
    old = segmentation_case_metrics(pred, true, (1.0, 1.0, 1.0), 2, surface=False, lesions=OLD)["any"]
    assert (old["n_true_lesions"], old["n_detected_lesions"], old["n_pred_lesions"], old["n_fp_lesions"]) == (2, 1, 2, 1)
    # the older keyword (scipy rank, every component) still gives the old counts
    older = segmentation_case_metrics(pred, true, (1.0, 1.0, 1.0), 2, connectivity=1, surface=False)["any"]
    assert {k: v for k, v in older.items() if "lesions" in k} == {k: v for k, v in old.items() if "lesions" in k}
    # Dice and volumes do not depend on the lesion definition
    assert new["dice"] == old["dice"] and new["vol_pred_ml"] == old["vol_pred_ml"]


def test_overlap_is_judged_on_the_whole_other_mask():
    true = np.zeros((20, 20, 10), bool)
    true[2:10, 2:10, 2:6] = True  # a large lesion (0.256 mL)
    true[15, 15, 5] = True  # a reference speck
    pred = np.zeros_like(true)
    pred[5, 5, 3] = True  # a predicted speck inside the large lesion: it is found
    pred[14:17, 14:17, 4:7] = True  # 0.027 mL around the reference speck
    pred[16:19, 16:19, 6:9] |= True  # grows it to a lesion of >= 0.05 mL touching only the speck
    lesions = LesionDefinition(26, 0.04)
    n_true, n_detected, n_pred, n_fp = _counts(pred, true, lesions)
    assert (n_true, n_detected) == (1, 1)  # the speck is no lesion to find; the large one is detected
    assert (n_pred, n_fp) == (1, 0)  # the predicted lesion touches reference blood: no false positive


def test_minimum_is_inclusive_and_uses_the_given_voxel_volume():
    voxel_ml = 0.5 * 0.5 * 5.0 / 1000.0  # 0.00125 mL: 40 voxels are exactly 0.05 mL
    m = np.zeros((10, 10, 4), bool)
    m[0:5, 0:8, 0] = True
    assert _counts(m, m, DEFAULT_LESIONS, voxel_ml)[0] == 1
    m[4, 7, 0] = False  # 39 voxels
    assert _counts(m, m, DEFAULT_LESIONS, voxel_ml)[0] == 0
    # a sheared (gantry-tilted) grid: |det| is smaller than the product of the column norms
    m[4, 7, 0] = True
    norms = (0.5, 0.5 / np.cos(np.deg2rad(25.0)), 5.0)
    by_norms = segmentation_case_metrics(m.astype(np.uint8), m.astype(np.uint8), norms, 2, surface=False)["any"]
    by_det = segmentation_case_metrics(m.astype(np.uint8), m.astype(np.uint8), norms, 2, surface=False,
                                       voxel_volume_ml=voxel_ml * 0.99)["any"]
    assert by_norms["n_true_lesions"] == 1 and by_det["n_true_lesions"] == 0
    with pytest.raises(ValueError, match="voxel volume"):
        lesion_counts(m, m, DEFAULT_LESIONS, None)


def test_definition_validated_and_described():
    assert DEFAULT_LESIONS == LesionDefinition(26, 0.05)
    assert DEFAULT_LESIONS.describe() == "26-connected components of >= 0.05 mL"
    assert DEFAULT_LESIONS.to_dict() == {"connectivity": 26, "min_volume_ml": 0.05,
                                         "description": "26-connected components of >= 0.05 mL"}
    for bad in ({"connectivity": 8}, {"connectivity": 1}, {"min_volume_ml": -0.01}, {"min_volume_ml": float("nan")}):
        with pytest.raises(InputError, match="--lesion-"):
            LesionDefinition(**bad)
    with pytest.raises(ValueError, match="not both"):
        segmentation_case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), (1, 1, 1), 2, connectivity=1,
                                  lesions=DEFAULT_LESIONS)


def test_lesion_sensitivity_is_a_ratio_of_sums():
    """Studies with 1 of 1 and 0 of 3 lesions found: 1/4, not the mean of the per-study ratios (1/2)."""
    n = 2
    table = {f"seg:any:{f}": np.zeros(n) for f in ("dice", "dice_empty_empty", "hd95_mm", "assd_mm", "vol_true_ml",
                                                    "vol_pred_ml", "vol_err_ml", "vol_rel_err", "n_pred_lesions")}
    table.update({"seg:any:n_true_lesions": np.array([1.0, 3.0]), "seg:any:n_detected_lesions": np.array([1.0, 0.0]),
                  "seg:any:n_fp_lesions": np.array([2.0, 0.0])})
    s = segmentation_summary(table, ["a", "b"], n_boot=200, seed=0)["any"]
    assert s["lesion_sensitivity"]["value"] == pytest.approx(0.25)
    assert s["fp_per_scan"]["value"] == pytest.approx(1.0)
    assert s["lesion_sensitivity"]["ci_low"] <= 0.25 <= s["lesion_sensitivity"]["ci_high"]


# --------------------------------------------------------------------------------------------
# ichct evaluate
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


def _predictions_with_a_speck(setup, folder):
    """The reference labels as predictions, plus one isolated voxel of blood in the first study;
    ``(entries, that study's UID, its voxel volume in mL)``."""
    import nibabel as nib

    from ichct.pipeline.decision import affine_voxel_volume_ml

    entries = split_entries(setup)
    paths = write_label_predictions(entries, folder)
    img = nib.load(paths[0])
    arr = np.asarray(img.dataobj).astype(np.uint8)
    far = np.argwhere(~ndimage.binary_dilation(arr > 0, iterations=3))  # voxels 4 or more from any blood
    arr[tuple(far[len(far) // 2])] = 1
    nib.save(nib.Nifti1Image(arr, img.affine), paths[0])
    return entries, entries[0]["study_uid"], affine_voxel_volume_ml(img.affine)


def _row(out, uid):
    with open(out / "per_case.csv", newline="") as f:
        return next(r for r in csv.DictReader(f) if r["study_id"] == uid)


def test_cli_lesion_options_reach_metrics_report_and_summary(setup, run_cli, tmp_path):
    entries, uid, voxel_ml = _predictions_with_a_speck(setup, tmp_path / "preds")
    common = ("--split", "all", "--trained-on", "unknown", "--label-map", "ichct")
    runs = {}
    for name, extra in (("default", ()), ("old", ("--lesion-connectivity", "6", "--lesion-min-ml", "0")),
                        ("custom", ("--lesion-connectivity", "18", "--lesion-min-ml", f"{2 * voxel_ml}"))):
        r = evaluate_predictions(run_cli, setup, tmp_path / "preds", tmp_path / name, *common, *extra)
        assert r.code == 0, r.err
        runs[name] = (json.loads(r.out), read_metrics(tmp_path / name), (tmp_path / name / "report.md").read_text())
    summary, doc, report = runs["default"]
    assert doc["lesion_definition"] == DEFAULT_LESIONS.to_dict()
    assert "Lesions: 26-connected components of >= 0.05 mL" in report
    seg = summary["segmentation_any"]
    assert seg["lesions"] == "26-connected components of >= 0.05 mL"
    for m in ("dice", "lesion_sensitivity", "fp_per_scan"):
        assert seg[m] == {k: doc["segmentation"]["any"][m][k] for k in ("value", "ci_low", "ci_high")}
    assert runs["old"][1]["lesion_definition"]["description"] == "6-connected components of any size"
    assert "Lesions: 6-connected components of any size" in runs["old"][2]
    custom = runs["custom"][1]["lesion_definition"]
    assert (custom["connectivity"], custom["min_volume_ml"]) == (18, pytest.approx(2 * voxel_ml))
    # the speck is a false positive under the old definition only (a single voxel is under 2 voxels' volume)
    assert float(_row(tmp_path / "old", uid)["seg:any:n_fp_lesions"]) == 1.0
    assert float(_row(tmp_path / "custom", uid)["seg:any:n_fp_lesions"]) == 0.0
    assert runs["old"][1]["segmentation"]["any"]["fp_per_scan"]["value"] == pytest.approx(1 / len(entries))
    assert runs["custom"][1]["segmentation"]["any"]["fp_per_scan"]["value"] == 0.0
    for name in runs:  # the reference labels themselves: every reference lesion found
        assert runs[name][1]["segmentation"]["any"]["lesion_sensitivity"]["value"] in (1.0, None)


def test_cli_lesion_options_with_an_ichct_run(setup, run_cli, tmp_path):
    out = tmp_path / "eval"
    r = run_cli("evaluate", "--run", setup["seg"], "--manifest", setup["manifest"], "--out", out, "--bootstrap",
                "10", "--rules", "seg_volume", "--lesion-connectivity", "18", "--lesion-min-ml", "0.5", "-q")
    assert r.code == 0, r.err
    assert read_metrics(out)["lesion_definition"]["description"] == "18-connected components of >= 0.5 mL"
    assert "Lesions: 18-connected components of >= 0.5 mL" in (out / "report.md").read_text()
    assert json.loads(r.out)["segmentation_any"]["lesions"] == "18-connected components of >= 0.5 mL"


@pytest.mark.parametrize("extra, option", [
    (("--lesion-connectivity", "8"), "--lesion-connectivity"),
    (("--lesion-connectivity", "x"), "--lesion-connectivity"),
    (("--lesion-min-ml", "-0.1"), "--lesion-min-ml"),
    (("--lesion-min-ml", "nan"), "--lesion-min-ml"),
    (("--lesion-min-ml", "small"), "--lesion-min-ml"),
])
def test_cli_bad_lesion_options_exit_2(run_cli, tmp_path, extra, option):
    r = run_cli("evaluate", "--predictions", tmp_path, "--trained-on", "unknown", "--manifest", tmp_path / "m.json",
                "--out", tmp_path / "out", *extra)
    assert r.code == 2 and option in r.err, r.err
    assert not (tmp_path / "out").exists()
