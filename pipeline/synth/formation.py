"""Image formation along the slice axis and next to bone: slice sensitivity profile, beam hardening,
scanner HU offsets and patient motion.

The phantom is rendered on *sub-slices*: :data:`SUBSLICES` thin slabs per nominal slice, each with
the partial-volume footprint of a ``T / SUBSLICES`` slab, plus :data:`SSP_TAIL` extra sub-slices
beyond each face. A slice is the weighted sum of its sub-slices (:func:`slice_profile`): the box
of the nominal thickness ``T`` (FWHM = ``T``) blurred along z by the helical interpolation, which
gives a real scanner's slice sensitivity profile its tails. Where the curved calvarium runs
oblique to the slice, the slab then holds bone from above or below the slice centre in the
proportion the profile says, and the tails add a little more bone a few mm further in: the bright
band under the inner table of real head CTs.

Beam hardening (:func:`beam_hardening`) raises soft tissue near thick bone in proportion to the
amount of bone around it (a Gaussian-weighted bone fraction of a few mm): a few mm of raised values
under the inner table, strongest where the slice cuts the vault tangentially (vertex) and at the
skull base. Both effects run on the noiseless HU before the kernel and the noise
(:func:`ichct.pipeline.synth.noise.reconstruct`).

Why image-domain models and not a projection-domain route (forward projection, noise, filtered
back-projection): a projection round trip costs two Radon transforms of every slice at several
hundred views (seconds per 512 slice on two cores) while the default 75-study cohort must build
in about 20 s; the measurements that matter here (edge spread with tails, slice profile, noise
power spectrum, the profile under the inner table) are reproduced by the image-domain models, see
``docs/synthetic-data.md``.

Example
-------
>>> w = slice_profile(2.5)
>>> round(float(w.sum()), 6), len(w) == SUBSLICES + 2 * SSP_TAIL
(1.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

from .grid import Grid
from .shapes import F32

SUBSLICES = 3  # sub-slices per nominal slice: the box core of the slice sensitivity profile
SSP_TAIL = 3  # sub-slices beyond each face of the core (to 1.5 slice thicknesses from the centre)
SSP_BLUR_MM = 1.0  # SD of the Gaussian that blurs the nominal box along z (helical interpolation, detector rows)


def slice_profile(thickness_mm: float, blur_mm: float = SSP_BLUR_MM) -> np.ndarray:
    """Weights of the ``SUBSLICES + 2 * SSP_TAIL`` sub-slices that make one slice (sum 1).

    The profile is the box of the nominal thickness blurred by a Gaussian of SD ``blur_mm``
    (the z-interpolation of helical reconstruction works in mm, not in slice thicknesses;
    default :data:`SSP_BLUR_MM`, a :class:`~ichct.pipeline.synth.config.FormationShift` may set
    another), read at the sub-slice centres: its half maximum falls on the box's faces, so its FWHM is the
    nominal thickness, and thin slices have relatively longer tails than thick ones.

    Example
    -------
    >>> w = slice_profile(5.0)
    >>> bool(w[SSP_TAIL + SUBSLICES // 2] == w.max()) and bool(w[SSP_TAIL - 1] < 0.5 * w.max())
    True
    """
    half_count = SUBSLICES // 2 + SSP_TAIL
    z_mm = np.arange(-half_count, half_count + 1) * (thickness_mm / SUBSLICES)
    half = thickness_mm / 2.0
    weights = special.ndtr((half - z_mm) / blur_mm) - special.ndtr((-half - z_mm) / blur_mm)
    return weights / weights.sum()


def subslice_grid(grid: Grid) -> Grid:
    """The sub-slice grid of ``grid``: ``SUBSLICES`` per slice along the table step, plus the tails.

    Sub-slice ``m`` lies at slice index ``(m - SUBSLICES // 2 - SSP_TAIL) / SUBSLICES``: slice
    ``k`` is made of sub-slices ``SUBSLICES * k`` to ``SUBSLICES * (k + 1) + 2 * SSP_TAIL - 1``,
    and its centre sub-slice (``SUBSLICES`` is odd) has exactly the slice's voxel centres.
    """
    ni, nj, nk = grid.shape
    lead = SUBSLICES // 2 + SSP_TAIL
    affine = grid.affine.copy()
    affine[:3, 2] = grid.affine[:3, 2] / SUBSLICES
    affine[:3, 3] = grid.affine[:3, 3] - lead * affine[:3, 2]
    return Grid(shape=(ni, nj, SUBSLICES * (nk - 1) + 1 + 2 * lead), affine=affine)


def integrate_slices(sub: np.ndarray, nk: int, thickness_mm: float, blur_mm: float = SSP_BLUR_MM) -> np.ndarray:
    """Slices ``[nk, j, i]`` from sub-slices ``[m, j, i]`` of :func:`subslice_grid` by :func:`slice_profile`."""
    weights = slice_profile(thickness_mm, blur_mm)
    out = np.zeros((nk, *sub.shape[1:]), dtype=np.float32)
    stop = SUBSLICES * (nk - 1) + 1
    for q, w in enumerate(weights):
        out += F32(w) * sub[q:q + stop:SUBSLICES]
    return out


def centre_subslices(sub: np.ndarray, nk: int) -> np.ndarray:
    """The sub-slices whose voxel centres are the slices' own (odd ``SUBSLICES``)."""
    start = SSP_TAIL + SUBSLICES // 2
    return sub[start:start + SUBSLICES * (nk - 1) + 1:SUBSLICES]


# ----------------------------------------------------------------------------------------------
# beam hardening, HU offset, motion


@dataclass(frozen=True)
class Scanner:
    """Per-study scanner effects: beam-hardening strength, HU calibration offset, patient motion."""

    beam_hardening_hu: float  # HU added to tissue fully surrounded by bone (scales the bone fraction)
    hu_offset: float  # calibration offset of this scanner on this day (HU)
    motion_mm: float  # in-plane displacement during the motion episode (0: the patient kept still)
    motion_angle: float  # direction of the displacement (radians, in-plane)
    motion_slices: tuple[int, int]  # fractions*1000 of the stack where the episode starts and ends


BH_SIGMA_MM = 5.0  # reach of beam hardening around bone
BONE_FRACTION_HU = (150.0, 1500.0)  # HU mapped to bone fraction 0 and 1
TISSUE_MAX_HU = 200.0  # beam hardening is added below this (soft tissue, fluid, fat)


def sample_scanner(gen: np.random.Generator, vendor_offset_hu: float, motion_fraction: float = 0.06) -> Scanner:
    """Draw a study's scanner effects around its vendor's HU offset."""
    # every value is drawn whether or not the patient moves: motion_fraction changes nothing else
    moving = gen.random() < motion_fraction
    amplitude_mm = float(gen.uniform(1.5, 5.0))
    start = float(gen.uniform(0.0, 0.7))
    return Scanner(
        beam_hardening_hu=float(gen.uniform(115.0, 210.0)),
        hu_offset=vendor_offset_hu + float(gen.uniform(-1.5, 1.5)),
        motion_mm=amplitude_mm if moving else 0.0,
        motion_angle=float(gen.uniform(0.0, np.pi)),
        motion_slices=(int(1000 * start), int(1000 * min(1.0, start + gen.uniform(0.15, 0.5)))),
    )


def motion_episode(scanner: Scanner, nk: int) -> tuple[int, int] | None:
    """First and last slice index (0-based, acquisition order) blurred by motion; None without motion."""
    if scanner.motion_mm <= 0:
        return None
    k0, k1 = (int(round(f / 1000.0 * (nk - 1))) for f in scanner.motion_slices)
    return k0, k1


def beam_hardening(clean: np.ndarray, pixel_mm: float, strength_hu: float, inside: np.ndarray) -> None:
    """Raise soft tissue near bone in ``clean`` (``[k, j, i]`` HU, in place) by the local bone fraction.

    The bone fraction (HU mapped linearly from :data:`BONE_FRACTION_HU` to 0-1) is smoothed in
    each slice by a Gaussian of :data:`BH_SIGMA_MM`; tissue below :data:`TISSUE_MAX_HU` inside
    the head (``inside``) gains ``strength_hu`` times it.
    """
    lo, hi = BONE_FRACTION_HU
    bone = np.clip((clean - F32(lo)) * F32(1.0 / (hi - lo)), 0.0, 1.0)
    sigma = BH_SIGMA_MM / pixel_mm
    ndimage.gaussian_filter(bone, sigma=(0.0, sigma, sigma), output=bone, mode="constant", truncate=3.0)
    tissue = (clean < F32(TISSUE_MAX_HU)) & inside
    bone *= F32(strength_hu)
    clean += bone * tissue


def motion_blur(clean: np.ndarray, pixel_mm: float, scanner: Scanner) -> None:
    """Blur the slices of the motion episode (``[k, j, i]``, in place) along the motion direction.

    The head moves ``motion_mm`` in-plane while those slices are acquired: each is the mean of the
    image over the displacement, seven equally spaced shifts, the amplitude rising and falling
    over the episode.
    """
    episode = motion_episode(scanner, clean.shape[0])
    if episode is None:
        return
    k0, k1 = episode
    direction = np.array([np.sin(scanner.motion_angle), np.cos(scanner.motion_angle)])
    for k in range(k0, k1 + 1):
        phase = np.sin(np.pi * (k - k0 + 0.5) / (k1 - k0 + 1))
        extent = scanner.motion_mm * phase / pixel_mm
        if extent < 0.3:
            continue
        frame = clean[k].copy()
        acc = np.zeros_like(frame)
        for t in np.linspace(-0.5, 0.5, 7):
            acc += ndimage.shift(frame, t * extent * direction, order=1, mode="nearest")
        clean[k] = acc / F32(7.0)
