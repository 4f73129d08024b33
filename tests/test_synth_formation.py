"""Image formation of the synthetic renderer beyond the kernel's core (pipeline/synth/formation.py).

PSF tails of the reconstruction kernel, beam hardening next to bone, the slice-profile helpers of
the sub-slice render, patient motion, and what a generated cohort records of them. The kernel's
MTF50, NPS and the slice sensitivity profile themselves are in tests/test_synth_physics.py.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pydicom
import pytest

from ichct.pipeline.synth import SynthConfig, generate_cohort
from ichct.pipeline.synth.acquisition import VENDORS
from ichct.pipeline.synth.cohort import plan_cohort, plan_patient
from ichct.pipeline.synth.formation import (SSP_TAIL, SUBSLICES, TISSUE_MAX_HU, Scanner, beam_hardening,
                                            centre_subslices, integrate_slices, motion_blur, slice_profile,
                                            subslice_grid)
from ichct.pipeline.synth.grid import Grid
from ichct.pipeline.synth.noise import SOFT, reconstruct
from ichct.pipeline.synth.seeding import rng
from ichct.pipeline.synth.shapes import F32, paint, slab_occupancy, soft_occupancy
from test_synth_physics import PIXEL_MM, edge_image, measured_mtf, mtf50

BONE_HU = 1500.0
BRAIN_HU = 30.0


# ----------------------------------------------------------------------------------------------
# PSF tails


def _edge_excess(kernel, band_mm: tuple[float, float], n: int = 128) -> float:
    """Mean HU above the brain at ``band_mm`` from a reconstructed straight bone / brain edge."""
    vol, dist = edge_image(n, PIXEL_MM, 0.0)  # 0 / 1000 HU, the bright side at +i
    image = F32(BRAIN_HU) + vol * F32((BONE_HU - BRAIN_HU) / 1000.0)
    out = reconstruct(image[None], PIXEL_MM, kernel, 0.0, None, rng(0, "edge"))[0]
    lo, hi = band_mm
    band = (dist >= -hi) & (dist <= -lo)
    return float(out[band].mean()) - BRAIN_HU


def test_psf_tails_put_bone_signal_millimetres_into_the_brain():
    tail_free = dataclasses.replace(SOFT, tail_fraction=0.0)
    excess = _edge_excess(SOFT, (2.0, 3.0))
    assert 8.0 <= excess <= 20.0, f"{excess:.2f} HU at 2-3 mm from a {BONE_HU:g} HU edge"
    assert abs(_edge_excess(tail_free, (2.0, 3.0))) < 1.0  # a Gaussian core alone has died out there
    # falling off with distance, next to nothing 10 mm away
    assert _edge_excess(SOFT, (1.0, 2.0)) > excess > _edge_excess(SOFT, (3.0, 5.0)) > 2.0
    assert abs(_edge_excess(SOFT, (10.0, 20.0))) < 0.1
    # while the kernel stays a brain kernel: the tails barely move its MTF50
    with_tails, without = mtf50(*measured_mtf(SOFT)), mtf50(*measured_mtf(tail_free))
    assert 0.30 <= with_tails <= 0.45
    assert with_tails == pytest.approx(without, rel=0.1)


# ----------------------------------------------------------------------------------------------
# beam hardening


def _rings(thicknesses_mm, n: int = 256, inner_mm: float = 40.0, scalp_mm: float = 5.0):
    """One slice per bone ring (brain inside, scalp outside, air beyond); the cranial cavity is ``inside``."""
    centre = (n - 1) / 2.0
    jj, ii = np.mgrid[0:n, 0:n].astype(np.float32)
    r = np.hypot(ii - centre, jj - centre) * F32(PIXEL_MM)
    vol = np.full((len(thicknesses_mm), n, n), -1000.0, dtype=np.float32)
    for k, t in enumerate(thicknesses_mm):
        paint(vol[k], soft_occupancy(r - F32(inner_mm + t + scalp_mm), PIXEL_MM), F32(BRAIN_HU))
        paint(vol[k], slab_occupancy(r, inner_mm, inner_mm + t, PIXEL_MM), F32(BONE_HU))
    inside = np.broadcast_to(r < inner_mm - PIXEL_MM, vol.shape)
    return vol, inside, r, inner_mm


def test_beam_hardening_raises_tissue_near_thick_bone_and_only_tissue():
    vol, inside, r, inner = _rings((7.0, 1.5))
    before = vol.copy()
    beam_hardening(vol, PIXEL_MM, 150.0, inside)
    delta = vol - before
    assert not delta[~inside].any(), "scalp or air changed"
    assert not delta[before >= TISSUE_MAX_HU].any(), "bone changed"
    profiles = np.array([[delta[k][(r > inner - mm - 0.5) & (r <= inner - mm + 0.5)].mean() for mm in range(1, 11)]
                         for k in range(2)])
    thick, thin = profiles
    assert np.all(np.diff(thick) < 0) and np.all(np.diff(thin) < 0), profiles.round(1)
    assert 30.0 < thick[0] < 100.0, thick[0]  # tens of HU under a thick inner table
    assert np.all(thick[:5] > 2.0 * thin[:5]), profiles.round(1)
    assert np.abs(delta[:, r < 15.0]).max() < 0.5  # not in the middle of the brain


# ----------------------------------------------------------------------------------------------
# slice profile helpers


@pytest.mark.parametrize("thickness_mm", [2.5, 3.75, 5.0])
def test_slice_profile_peaks_at_the_centre_and_halves_at_the_faces(thickness_mm):
    w = slice_profile(thickness_mm)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert len(w) == SUBSLICES + 2 * SSP_TAIL
    centre = SSP_TAIL + SUBSLICES // 2
    assert w[centre] == w.max() and np.all(np.diff(w[:centre + 1]) > 0)
    core = w[SSP_TAIL:SSP_TAIL + SUBSLICES]
    tails = np.concatenate([w[:SSP_TAIL], w[SSP_TAIL + SUBSLICES:]])
    # the face of the box lies between the last core and the first tail sub-slice: above / below half
    assert core.min() > 0.5 * w.max() and np.all(tails > 0) and np.all(tails < 0.5 * w.max())
    assert np.allclose(w, w[::-1])  # symmetric: no shift of the slice


def test_thin_slices_have_relatively_longer_tails():
    """The z-blur of helical interpolation is in mm: it matters more for a 2.5 mm slice than for a 5 mm one."""
    def tail_share(thickness_mm):
        w = slice_profile(thickness_mm)
        return float(w[:SSP_TAIL].sum() + w[SSP_TAIL + SUBSLICES:].sum())

    assert tail_share(2.5) > tail_share(3.75) > tail_share(5.0) > 0.02


def test_integrate_slices_keeps_a_constant_and_is_centred_on_the_slice():
    # a gantry-tilted grid (sheared slice axis), 5 slices
    affine = np.array([[0.7, 0.0, 0.0, -10.0], [0.0, 0.7, 1.2, 5.0], [0.0, 0.0, 4.5, 30.0], [0, 0, 0, 1.0]])
    grid = Grid(shape=(6, 4, 5), affine=affine)
    sub = subslice_grid(grid)
    nk, n_sub = grid.shape[2], sub.shape[2]
    constant = np.full((n_sub, 4, 6), 37.5, dtype=np.float32)
    assert np.allclose(integrate_slices(constant, nk, 4.5), 37.5, rtol=1e-6)
    index = np.broadcast_to(np.arange(n_sub, dtype=np.float32)[:, None, None], (n_sub, 4, 6))
    centres = centre_subslices(index, nk)[:, 0, 0].astype(int)
    assert len(centres) == nk
    # the centre sub-slices are the slices' own voxels, and each slice is weighted around its own
    for k, m in enumerate(centres):
        assert np.allclose(sub.affine @ [2, 3, m, 1], grid.affine @ [2, 3, k, 1])
    assert np.allclose(integrate_slices(index.copy(), nk, 4.5)[:, 0, 0], centres, atol=1e-4)
    # and the sub-slices are one third of the slice spacing apart
    assert np.allclose(sub.affine[:3, 2] * SUBSLICES, grid.affine[:3, 2])


# ----------------------------------------------------------------------------------------------
# motion


def _square_stack(nk: int = 9, n: int = 64) -> np.ndarray:
    vol = np.full((nk, n, n), BRAIN_HU, dtype=np.float32)
    vol[:, 20:44, 20:44] = 1000.0
    return vol


def _scanner(motion_mm: float, angle: float) -> Scanner:
    return Scanner(beam_hardening_hu=150.0, hu_offset=0.0, motion_mm=motion_mm, motion_angle=angle,
                   motion_slices=(250, 750))


def test_still_patient_changes_nothing():
    vol = _square_stack()
    before = vol.copy()
    motion_blur(vol, 0.5, _scanner(0.0, 0.3))
    assert np.array_equal(vol, before)


@pytest.mark.parametrize("angle, moving_axis", [(0.0, 2), (np.pi / 2, 1)], ids=["along_columns", "along_rows"])
def test_motion_blurs_its_episode_along_its_direction(angle, moving_axis):
    vol = _square_stack()
    before = vol.copy()
    motion_blur(vol, 0.5, _scanner(4.0, angle))  # up to 8 pixels of travel
    changed = [k for k in range(vol.shape[0]) if not np.array_equal(vol[k], before[k])]
    assert changed == [2, 3, 4, 5, 6]  # 25-75 % of a 9-slice stack; the others byte-identical
    mid = 32
    spread = []
    row, column = (mid, slice(None)), (slice(None), mid)
    across, along = (row, column) if moving_axis == 2 else (column, row)
    for k in changed:
        # a line crossing the edges the motion moves is spread; one crossing the edges parallel to it is not
        line = vol[k][across]
        spread.append(int(np.sum((line > 100) & (line < 900))))
        assert spread[-1] >= 2
        assert np.allclose(vol[k][along], before[k][along], atol=1e-3)
        assert vol[k].mean() == pytest.approx(before[k].mean(), rel=0.01)
    assert spread[2] == max(spread) and spread[2] > spread[0]  # strongest in the middle of the episode


# ----------------------------------------------------------------------------------------------
# a generated cohort


def _soft_slices(root, record) -> list[np.ndarray]:
    """Stored pixels of the soft-tissue series, in the record's slice order."""
    by_uid = {}
    for path in (root / record["series_dir"]).glob("*.dcm"):
        ds = pydicom.dcmread(path)
        by_uid[str(ds.SOPInstanceUID)] = ds.pixel_array
    return [by_uid[uid] for uid in record["sop_instance_uids"]]


def test_cohort_records_scanner_offset_and_motion_and_blurs_only_the_episode(tmp_path):
    # the plan's random draws are the same with and without motion (every value is always drawn)
    def config(motion_fraction):
        return SynthConfig(n_patients=3, seed=21, matrix=128, slices=8, follow_up_fraction=0.34,
                           motion_fraction=motion_fraction)

    moving = generate_cohort(config(1.0), tmp_path / "moving", workers=1)
    still = generate_cohort(config(0.0), tmp_path / "still", workers=1)
    assert json.loads((tmp_path / "moving" / "cohort.json").read_text())["studies"] == moving["studies"]
    offsets = {v.manufacturer: v.hu_offset for v in VENDORS}
    plans = {a.patient_id: plan_patient(config(1.0), a) for a in plan_cohort(config(1.0))}
    for rec, rec_still in zip(moving["studies"], still["studies"]):
        acq = rec["acquisition"]
        assert 1.5 <= acq["motion_mm"] <= 5.0 and rec_still["acquisition"]["motion_mm"] == 0.0
        assert abs(acq["hu_offset"] - offsets[acq["manufacturer"]]) <= 1.5 + 0.005
        assert acq["hu_offset"] == rec_still["acquisition"]["hu_offset"]
        a, b = _soft_slices(tmp_path / "moving", rec), _soft_slices(tmp_path / "still", rec_still)
        changed = [k for k in range(len(a)) if not np.array_equal(a[k], b[k])]
        start, stop = plans[rec["patient_id"]].studies[rec["study_index"] - 1].scanner.motion_slices
        k0, k1 = round(start / 1000 * (len(a) - 1)), round(stop / 1000 * (len(a) - 1))
        assert changed and set(changed) <= set(range(k0, k1 + 1)), (changed, k0, k1)
        assert acq["motion_slices"] == [k0, k1] and rec_still["acquisition"]["motion_slices"] is None
