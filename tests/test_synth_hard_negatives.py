"""Hard negatives (``SynthConfig.hard_negative_fraction``, ``ichct synth --hard-negative-fraction``):
only negative patients become hard, the others keep their bytes, and a hard negative is brighter
under the inner table than the same patient rendered normally, with no label."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ichct.pipeline.synth import SynthConfig, generate_cohort
from ichct.transforms.dicom import read_dicom_series


def _config(fraction: float, positive_fraction: float = 0.5) -> SynthConfig:
    return SynthConfig(n_patients=4, seed=11, matrix=128, slices=12, positive_fraction=positive_fraction,
                       follow_up_fraction=0.0, tilt_fraction=0.0, bone_fraction=0.0, scout_fraction=0.0,
                       compression_mix={"none": 1.0}, hard_negative_fraction=fraction)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    base = tmp_path_factory.mktemp("hard")
    plain = generate_cohort(_config(0.0), base / "plain", workers=1)
    hard = generate_cohort(_config(1.0), base / "hard", workers=1)
    return base, plain, hard


def _series_bytes(root, study) -> list[bytes]:
    return [p.read_bytes() for p in sorted((root / study["series_dir"]).glob("*.dcm"))]


def _inner_band_hu(root, study, band_mm: float = 3.0) -> float:
    """Mean HU of intracranial voxels within ``band_mm`` (in-plane) of bone (> 300 HU)."""
    volume = read_dicom_series(root / study["series_dir"])
    hu = volume.hu_volume.astype(np.float64)
    spacing = np.linalg.norm(volume.affine_lps[:3, :2], axis=0)
    values = []
    for k in range(hu.shape[2]):
        bone = hu[:, :, k] > 300
        inside = ndimage.binary_fill_holes(bone) & ~bone
        labels, n = ndimage.label(inside)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        brain = labels == int(np.argmax(sizes))
        dist = ndimage.distance_transform_edt(~bone, sampling=spacing)
        values.append(hu[:, :, k][brain & (dist <= band_mm)])
    return float(np.concatenate(values).mean())


def test_only_negatives_become_hard_and_the_rest_keep_their_bytes(cohorts):
    base, plain, hard = cohorts
    for a, b in zip(plain["studies"], hard["studies"]):
        assert a["study_uid"] == b["study_uid"] and a["ct_labels"] == b["ct_labels"]
        assert not a["hard_negative"]
        assert b["hard_negative"] == (not b["ct_labels"]["any"])
        same = _series_bytes(base / "plain", a) == _series_bytes(base / "hard", b)
        assert same == (not b["hard_negative"]), b["patient_id"]
    assert any(s["hard_negative"] for s in hard["studies"])


def test_a_hard_negative_is_brighter_under_the_inner_table_and_stays_blood_free(cohorts):
    base, plain, hard = cohorts
    gains = []
    for a, b in zip(plain["studies"], hard["studies"]):
        if not b["hard_negative"]:
            continue
        assert b["volumes_ml"]["any"] == 0.0 and not any(b["slice_labels"][k][0] for k in range(len(b["slice_labels"])))
        assert {"dense_venous_sinus", "falx_calcification", "pineal_calcification"} <= set(b["mimics"])
        gains.append(_inner_band_hu(base / "hard", b, 5.0) - _inner_band_hu(base / "plain", a, 5.0))
    # a patient already at the bright end (young, no extra-axial CSF) gains little, none loses
    assert min(gains) > -1.0 and np.mean(gains) > 5.0, gains


def test_the_share_is_stratified_over_the_negatives():
    from ichct.pipeline.synth import plan_cohort

    plan = plan_cohort(SynthConfig(n_patients=40, seed=2, positive_fraction=0.5, hard_negative_fraction=0.25))
    negatives = [a for a in plan if not a.positive]
    assert sum(a.hard_negative for a in negatives) in (len(negatives) // 4, -(-len(negatives) // 4))
    assert not any(a.hard_negative for a in plan if a.positive)
