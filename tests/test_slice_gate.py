"""The classifier's slice gate on a segmenter's components (``ichct.transforms.slice_gate``) and its use
by ``predict_study`` when a segmenter's config sets ``classifier_slice_gate``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import predict_helpers as ph
from ichct.transforms import SuppressQuietSliceComponents, SuppressQuietSliceComponentsd, components_on_scored_slices


def _probs(blood: np.ndarray) -> np.ndarray:
    return np.stack([1.0 - blood, blood]).astype(np.float32)


def test_components_map_to_source_slices_through_the_matrix():
    """The model grid here has half the source's slice count, reversed: model slice k covers source
    slices 2 * (3 - k) (the matrix of a flip and a 2x resampling along the stack)."""
    mask = np.zeros((5, 5, 4), dtype=bool)
    mask[0:2, 0:2, 0] = True          # model slice 0 -> source slice 6
    mask[3:5, 3:5, 2:4] = True        # model slices 2-3 -> source slices 2 and 0
    grid_to_source = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, -2.0, 6.0], [0, 0, 0, 1.0]])
    scores = np.full(8, 0.1)
    scores[6] = 0.9
    keep = components_on_scored_slices(mask, scores, grid_to_source, 0.5)
    assert keep[0, 0, 0] and not keep[3:5, 3:5, 2:4].any()
    scores[0] = 0.6                   # now the second component touches a scored slice too
    assert components_on_scored_slices(mask, scores, grid_to_source, 0.5).sum() == mask.sum()
    # slices past either end of the source clip to its first or last slice
    far = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 40.0], [0, 0, 0, 1.0]])
    assert components_on_scored_slices(mask, scores, far, 0.15).sum() == 0  # last source slice: 0.1
    assert components_on_scored_slices(mask, scores, far, 0.1).sum() == mask.sum()
    # 0 keeps everything, whatever the scores
    assert np.array_equal(components_on_scored_slices(mask, np.zeros(8), grid_to_source, 0.0), mask)


def test_the_transform_drops_only_what_it_must_on_tensors_and_arrays():
    blood = np.zeros((6, 6, 6))
    blood[0:2, 0:2, 0:2] = 0.9        # on source slices 0-1, which the classifier scores high
    blood[4:6, 4:6, 4:6] = 0.8        # on slices 4-5, scored low
    scores = [0.95, 0.9, 0.2, 0.1, 0.1, 0.1]
    gate = SuppressQuietSliceComponents(0.4)
    for probs in (_probs(blood), torch.from_numpy(_probs(blood))):
        out = gate(probs, scores, np.eye(4))
        assert type(out) is type(probs)
        arr = np.asarray(out)
        assert (arr.argmax(0) == 1).sum() == 8 and arr[0, 5, 5, 5] == 1.0 and arr[1, 5, 5, 5] == 0.0
        assert np.array_equal(arr[:, 0:2, 0:2, 0:2], _probs(blood)[:, 0:2, 0:2, 0:2])  # kept as it was
    same = _probs(blood)
    assert SuppressQuietSliceComponents(0.0)(same, scores, np.eye(4)) is same
    d = SuppressQuietSliceComponentsd("pred", min_score=0.4)({"pred": _probs(blood), "slice_scores": scores,
                                                                "grid_to_source": np.eye(4)})
    assert (d["pred"].argmax(0) == 1).sum() == 8


@pytest.mark.parametrize("call, match", [
    (lambda: SuppressQuietSliceComponents(1.5), r"min_score must be within \[0, 1\]"),
    (lambda: components_on_scored_slices(np.ones((2, 2, 2)), [np.nan, 0.5], np.eye(4), 0.4), "finite score"),
    (lambda: components_on_scored_slices(np.ones((2, 2, 2)), [0.5, 0.5], np.eye(3), 0.4), "4 x 4"),
    (lambda: components_on_scored_slices(np.ones((2, 2)), [0.5], np.eye(4), 0.4), "must be 3D"),
    (lambda: SuppressQuietSliceComponents(0.4)(np.ones((2, 2, 2)), [0.5, 0.5], np.eye(4)), "class probabilities"),
])
def test_bad_arguments_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


class QuietCls(torch.nn.Module):
    """A slice "classifier" that scores every slice p(any) = 0.12."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, _, _, s = x.shape
        return {"logits": torch.full((b, s, 6), -2.0)}


@pytest.fixture(scope="module")
def gate_setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("slice_gate")
    _, _ = ph.write_study(base / "study" / "DICOM")
    gated_seg = ph.loaded("seg", ph.BloodRangeSeg(), base / "seg_gate", {**ph.SEG_CFG, "classifier_slice_gate": 0.5})
    return base / "study", gated_seg, base


def test_predict_study_gates_the_segmenter_by_the_classifier_only_beside_one(gate_setup):
    """The segmenter's haematoma lies on slices the blood-range classifier scores ~1: kept at the gate 0.5.
    Beside a classifier that calls every slice quiet it is dropped from both grids (its volume 0), while
    the segmenter's peak probability, and the fused score, still see it; the segmenter alone ignores
    the gate."""
    from ichct.pipeline.models.inference import predict_study

    study, gated_seg, base = gate_setup
    alone = predict_study({"seg": gated_seg}, study)
    assert alone.volumes_ml["any"] > 1.0
    seen = predict_study({"seg": gated_seg, "cls": ph.loaded("cls", ph.BloodRangeCls(), base / "cls")}, study)
    assert np.array_equal(seen.seg_original, alone.seg_original)
    quiet = predict_study({"seg": gated_seg, "cls": ph.loaded("cls", QuietCls(), base / "quiet")}, study)
    assert not quiet.seg_original.any() and not quiet.seg_preprocessed.any() and quiet.volumes_ml["any"] == 0.0
    assert quiet.scores["seg_peak"]["any"] == pytest.approx(alone.scores["seg_peak"]["any"])
    assert quiet.scores["fused"]["any"] == pytest.approx((quiet.scores["consecutive"]["any"]
                                                          + alone.scores["seg_peak"]["any"]) / 2)
    # report.json and metrics.json describe the segmenter with its gate
    assert gated_seg.describe()["inference"]["classifier_slice_gate"] == 0.5
    assert "classifier_slice_gate" not in ph.loaded("seg", ph.BloodRangeSeg(), base / "plain").describe()["inference"]


def test_the_gate_is_a_checked_config_key_off_by_default():
    from ichct.errors import InputError
    from ichct.pipeline.models.config import resolve_config

    assert resolve_config("seg", {})["classifier_slice_gate"] == 0.0
    assert resolve_config("seg", {"classifier_slice_gate": 0.4})["classifier_slice_gate"] == 0.4
    with pytest.raises(InputError, match="classifier_slice_gate"):
        resolve_config("seg", {"classifier_slice_gate": 1.5})


def test_bundle_refresh_sets_the_gate_of_a_segmenter_only(tmp_path, run_cli):
    """``ichct bundle refresh --classifier-slice-gate`` writes the gate into a segmentation bundle's
    run config (its README's recipe names it); a bad value is a usage error, a classifier refuses it."""
    import json
    import shutil
    from pathlib import Path

    from ichct.pipeline.bundle.package import load_bundle

    repo = Path(__file__).resolve().parents[1]
    seg, cls = tmp_path / "seg", tmp_path / "cls"
    shutil.copytree(repo / "bundles" / "ich_ct_segmentation", seg)
    shutil.copytree(repo / "bundles" / "ich_ct_classification", cls)
    assert load_bundle(seg).config["classifier_slice_gate"] == 0.4  # the committed segmenter's
    r = run_cli("bundle", "refresh", seg, "--classifier-slice-gate", "0.25", "-q")
    assert r.code == 0, r.err
    config = json.loads((seg / "models" / "run_config.json").read_text())["config"]
    assert config["classifier_slice_gate"] == 0.25 and load_bundle(seg).describe()["inference"]["classifier_slice_gate"] == 0.25
    assert "--classifier-slice-gate" not in (seg / "docs" / "README.md").read_text()  # no longer the script's bundle
    before = (seg / "models" / "run_config.json").read_text()
    r = run_cli("bundle", "refresh", seg, "--classifier-slice-gate", "1.5")
    assert r.code == 2 and "--classifier-slice-gate" in r.err
    assert (seg / "models" / "run_config.json").read_text() == before
    r = run_cli("bundle", "refresh", cls, "--classifier-slice-gate", "0.4")
    assert r.code == 1 and "classifier_slice_gate" in r.err


def test_bundle_refresh_sets_the_sliding_window_overlap_of_a_segmenter_only(tmp_path, run_cli):
    """``ichct bundle refresh --sw-overlap`` rewrites a segmentation bundle's run config, the inferer of its
    inference and evaluation configs and its README; a value outside [0, 1) changes nothing; a classifier
    refuses it."""
    import json
    import shutil
    from pathlib import Path

    from ichct.pipeline.bundle.package import load_bundle

    repo = Path(__file__).resolve().parents[1]
    seg, cls = tmp_path / "seg", tmp_path / "cls"
    shutil.copytree(repo / "bundles" / "ich_ct_segmentation", seg)
    shutil.copytree(repo / "bundles" / "ich_ct_classification", cls)
    committed = load_bundle(seg).config["sw_overlap"]
    r = run_cli("bundle", "refresh", seg, "--sw-overlap", "0.6", "-q")
    assert r.code == 0, r.err
    assert json.loads((seg / "models" / "run_config.json").read_text())["config"]["sw_overlap"] == 0.6 != committed
    for name in ("inference", "evaluate"):
        inferer = json.loads((seg / "configs" / f"{name}.json").read_text())["inferer"]
        assert inferer["inferer"]["overlap"] == 0.6, name  # inside the mirroring inferer
    assert load_bundle(seg).describe()["inference"]["sw_overlap"] == 0.6
    assert "(overlap 0.6)" in (seg / "docs" / "README.md").read_text()
    before = (seg / "models" / "run_config.json").read_text()
    r = run_cli("bundle", "refresh", seg, "--sw-overlap", "1")
    assert r.code == 1 and "sw_overlap" in r.err and "< 1" in r.err
    assert (seg / "models" / "run_config.json").read_text() == before
    r = run_cli("bundle", "refresh", cls, "--sw-overlap", "0.5")
    assert r.code == 1 and "sw_overlap" in r.err
