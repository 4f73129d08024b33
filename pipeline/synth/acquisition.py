"""Acquisition protocols: scanner vendor, kernels, slice thickness, gantry tilt, field of view,
pixel encoding, compression and which extra series (scout, bone reconstruction) a study has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import COMPRESSIONS, FormationShift, SynthConfig
from .render_settings import render_settings


@dataclass(frozen=True)
class Vendor:
    """How one scanner family writes its images."""

    manufacturer: str
    model: str
    soft_kernels: tuple[str, ...]
    bone_kernels: tuple[str, ...]
    signed: bool  # PixelRepresentation 1
    bits_stored: int
    intercept: int  # RescaleIntercept (slope is 1)
    padding_hu: float | None  # value outside the reconstruction circle, flagged by PixelPaddingValue
    implicit_vr: bool  # uncompressed series written as Implicit VR Little Endian
    descending: bool  # instance numbers run from the vertex down
    hu_offset: float = 0.0  # this scanner family's water calibration offset (a few HU)


VENDORS: tuple[Vendor, ...] = (
    Vendor("GE MEDICAL SYSTEMS", "LightSpeed VCT", ("STANDARD", "SOFT"), ("BONE", "BONEPLUS"), True, 16, -1024, -3024.0, True, True, 2.0),
    Vendor("SIEMENS", "SOMATOM Definition AS", ("H31s", "Hr38", "J40s"), ("H70h", "Hr64", "J70h"), False, 12, -1024, None, False, False, -1.5),
    Vendor("Philips", "Brilliance 64", ("UB", "B"), ("D", "YC"), True, 16, -1024, None, False, False, 3.0),
    Vendor("TOSHIBA", "Aquilion ONE", ("FC21", "FC26"), ("FC30", "FC35"), True, 16, 0, -2048.0, False, True, -2.5),
)


@dataclass
class Protocol:
    """Acquisition and reconstruction settings of one study."""

    vendor: Vendor
    soft_kernel: str
    bone_kernel: str | None  # None: no bone reconstruction
    scout: bool
    compression: str  # one of COMPRESSIONS
    thickness_mm: float
    tilt_deg: float
    fov_mm: float
    kvp: int
    mas: float
    sigma_soft_hu: float  # noise std of the soft kernel at the centre of the head
    sigma_bone_hu: float
    window: tuple[float, float]  # brain window written in the soft series
    extra_window: tuple[float, float] | None  # a second (subdural) window some scanners add


def sample_protocol(gen: np.random.Generator, config: SynthConfig, *, tilt: bool, bone: bool, scout: bool, compression: str,
                    formation: FormationShift | None, vendor: Vendor | None = None) -> Protocol:
    """Draw one study's protocol; the flags come from the cohort plan (stratified).

    ``formation``: the study's image formation (``cohort.study_formation``; None: the default
    render), whose dose scales the noise.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression}")
    vendor = vendor or VENDORS[int(gen.integers(len(VENDORS)))]
    thickness = float(gen.choice(config.thickness_choices_mm))
    coverage = thickness * config.slices
    tilt_deg = 0.0
    if tilt:
        # keep the in-plane drift of the tilted stack (n * step * tan(tilt)) within ~35 mm
        max_tilt = min(22.0, float(np.degrees(np.arctan(35.0 / max(coverage, 1.0)))))
        tilt_deg = float(gen.uniform(max(4.0, 0.5 * max_tilt), max(4.5, max_tilt)))
    kvp = int(gen.choice([100, 120, 120, 140]))
    mas = float(gen.uniform(200, 350))
    sigma5 = float(gen.uniform(2.0, 3.4)) * float(np.sqrt(300.0 / mas))
    sigma = sigma5 * float(np.sqrt(5.0 / thickness))
    # a shifted dose (no extra draw: the stream is unchanged)
    sigma *= render_settings(formation).noise_scale
    window = (40.0, 80.0) if gen.random() < 0.7 else (float(gen.choice([35.0, 40.0, 45.0])), float(gen.choice([80.0, 90.0, 100.0])))
    return Protocol(
        vendor=vendor,
        soft_kernel=str(gen.choice(vendor.soft_kernels)),
        bone_kernel=str(gen.choice(vendor.bone_kernels)) if bone else None,
        scout=scout,
        compression=compression,
        thickness_mm=thickness,
        tilt_deg=tilt_deg,
        fov_mm=float(gen.uniform(230.0, 265.0)),
        kvp=kvp,
        mas=mas,
        sigma_soft_hu=sigma,
        sigma_bone_hu=sigma * float(gen.uniform(5.0, 8.0)),
        window=window,
        extra_window=(75.0, 215.0) if gen.random() < 0.3 else None,
    )
