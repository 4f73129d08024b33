"""Pending physics test of the synthetic renderer: the slice sensitivity profile (SSP).

Not collected by the test suite (``testpaths = ["tests"]`` and the name does not match
``test_*.py``) because the current renderer does not meet it; it moves into
``tests/test_synth_physics.py`` once it does. Run it with
``python benchmarks/physics_pending.py`` (prints the measured values, exits 1 while it fails) or
``pytest benchmarks/physics_pending.py``.

What is measured: the renderer has no separate slice-profile function; the slice thickness
enters only through the partial-volume footprint of :class:`~ichct.pipeline.synth.grid.PartialVolume`
that the painter (:func:`~ichct.pipeline.synth.shapes.soft_occupancy` /
:func:`~ichct.pipeline.synth.shapes.paint`) applies to every surface. That is the real path, so
the SSP is measured the way it is on a scanner: a thin plate (0.1 mm, 1000 HU, a 15 mm disc
perpendicular to the slice axis) is rendered on a 0.49 mm in-plane grid at 201 offsets ``dz``
from the slice centre, reconstructed with the standard kernel without noise, and the centre
pixel's value against ``dz`` is the SSP (the plate is much thinner than the slice). Its FWHM
should be within 10 % of the nominal thickness. Two footprints are measured:

- ``oriented``: ``PartialVolume.width(|cos|)`` with the plate normal along the slice axis
  (``cos = 1``: the ramp is the slice thickness), as the skull vault and cranial cavity are painted;
- ``iso``: ``PartialVolume.iso_width``, the orientation-free ramp that most other structures
  use (grey matter, sulci, ventricles, falx / tentorium, lesions, mimics).

A thickness-``T`` box SSP would give a flat response ``0.1 / T`` over ``|dz| < T/2`` (FWHM
``T``, area 0.1 mm); the painter instead gives a triangle of peak ``~0.5`` and FWHM
``~ramp / 2``, i.e. the thin plate is drawn at half its full contrast and about ``T / 4 / 0.1``
times its real partial-volume weight.
"""

from __future__ import annotations

import sys

import numpy as np

from ichct.pipeline.synth.grid import PartialVolume
from ichct.pipeline.synth.noise import SOFT, reconstruct
from ichct.pipeline.synth.seeding import rng
from ichct.pipeline.synth.shapes import F32, paint, soft_occupancy

PIXEL_MM = 0.49
PLATE_MM = 0.1
DISC_RADIUS_MM = 15.0
THICKNESSES_MM = (2.5, 3.75, 5.0)


def thin_plate_ssp(thickness_mm: float, footprint: str = "oriented", n_offsets: int = 201,
                   pixel_mm: float = PIXEL_MM, n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """(offsets dz mm, centre-pixel response normalised to the plate's contrast) of a thin disc."""
    pv = PartialVolume(pixel_mm=pixel_mm, thickness_mm=thickness_mm, slice_dir_head=np.array([0.0, 0.0, 1.0]))
    centre = (n - 1) / 2.0
    jj, ii = np.mgrid[0:n, 0:n].astype(np.float32)
    r = np.hypot(ii - centre, jj - centre) * F32(pixel_mm)
    offsets = np.linspace(-thickness_mm, thickness_mm, n_offsets)
    slices = np.empty((n_offsets, n, n), dtype=np.float32)
    for k, dz in enumerate(offsets):
        face = np.full((n, n), F32(abs(dz) - PLATE_MM / 2), dtype=np.float32)  # distance to the plate faces
        rim = r - F32(DISC_RADIUS_MM)
        d = np.maximum(face, rim)
        if footprint == "oriented":  # the nearer surface decides the normal: faces (cos 1) or rim (cos 0)
            cos = (face >= rim).astype(np.float32)
            width = pv.width(cos)
        elif footprint == "iso":
            width = pv.iso_width
        else:
            raise ValueError(footprint)
        vol = np.zeros((n, n), dtype=np.float32)
        paint(vol, soft_occupancy(d, width), F32(1000.0))
        slices[k] = vol
    out = reconstruct(slices, pixel_mm, SOFT, 0.0, None, rng(0, "ssp"))
    c = round(centre)
    return offsets, out[:, c, c].astype(np.float64) / 1000.0


def fwhm(x: np.ndarray, y: np.ndarray) -> float:
    """Full width at half maximum of a single-peaked profile (linear interpolation)."""
    half = y.max() / 2.0
    above = np.flatnonzero(y >= half)
    lo, hi = int(above[0]), int(above[-1])
    left = x[lo - 1] + (half - y[lo - 1]) * (x[lo] - x[lo - 1]) / (y[lo] - y[lo - 1])
    right = x[hi] + (y[hi] - half) * (x[hi + 1] - x[hi]) / (y[hi] - y[hi + 1])
    return float(right - left)


def measure() -> list[dict[str, float | str]]:
    rows = []
    for footprint in ("oriented", "iso"):
        for t in THICKNESSES_MM:
            dz, resp = thin_plate_ssp(t, footprint)
            step = dz[1] - dz[0]
            rows.append({"footprint": footprint, "nominal_mm": t, "fwhm_mm": fwhm(dz, resp), "peak": float(resp.max()),
                         "area_over_plate": float(resp.sum() * step / PLATE_MM)})
    return rows


def test_slice_sensitivity_profile_fwhm_is_the_nominal_thickness():
    for footprint in ("oriented", "iso"):
        for t in THICKNESSES_MM:
            dz, resp = thin_plate_ssp(t, footprint)
            width = fwhm(dz, resp)
            assert abs(width - t) <= 0.1 * t, f"{footprint} footprint, {t} mm slice: SSP FWHM {width:.2f} mm"


def main() -> int:
    rows = measure()
    print(f"Thin-plate SSP ({PLATE_MM} mm plate, {PIXEL_MM} mm pixels, standard kernel, no noise); goal: FWHM within 10 % of nominal\n")
    print("| footprint | nominal mm | FWHM mm | FWHM / nominal | peak (box SSP: plate/T) | area / plate thickness (box SSP: 1) | goal |")
    print("|---|---:|---:|---:|---:|---:|---|")
    ok = True
    for r in rows:
        ratio = r["fwhm_mm"] / r["nominal_mm"]
        passed = abs(ratio - 1.0) <= 0.1
        ok &= passed
        print(f"| {r['footprint']} | {r['nominal_mm']:g} | {r['fwhm_mm']:.2f} | {ratio:.2f} | {r['peak']:.3f} ({PLATE_MM / r['nominal_mm']:.3f}) "
              f"| {r['area_over_plate']:.1f} | {'PASS' if passed else 'FAIL'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
