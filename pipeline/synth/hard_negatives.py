"""Hard negatives: blood-free studies at the bright end of everything that mimics blood.

A hard negative has no extra-axial CSF (brain against a thick dura), a dense falx and dural
sinuses, calcified choroid plexus, pineal and falx plaques, a hyperdense vessel, dense inner
tables and the strongest beam hardening and skull-base streaks the renderer produces: the
band under the inner table, the falx and the tentorium read as bright as they ever do on a normal
scan. ``SynthConfig.hard_negative_fraction`` (``ichct synth --hard-negative-fraction``) sets
their share among the negative patients; their random values come from streams of their own, so
a cohort with the share at 0 is byte for byte the cohort without the option.

Example
-------
>>> import numpy as np
>>> hard_negative_flags(np.array([True, False, False, True]), 0.0, seed=0).tolist()
[False, False, False, False]
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .seeding import rng, stratified_flags

if TYPE_CHECKING:
    from .cohort import PatientPlan

BH_HU = (195.0, 215.0)  # the top of sample_scanner's range and a little beyond
STREAK_GAIN = 1.6


def hard_negative_flags(positive: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which patients are hard negatives: a stratified ``fraction`` of the negative ones."""
    flags = np.zeros(len(positive), dtype=bool)
    negatives = np.flatnonzero(~np.asarray(positive, dtype=bool))
    if fraction <= 0 or negatives.size == 0:
        return flags
    flags[negatives] = stratified_flags(rng(seed, "hard-negatives"), negatives.size, fraction)
    return flags


def harden(plan: PatientPlan, seed: int) -> None:
    """Push one negative patient's anatomy, mimics and acquisitions to their bright end (in place)."""
    gen = rng(seed, "hard-negative", plan.assignment.index)
    h = plan.head
    h.csf_mm = 0.0
    h.dura_mm = float(gen.uniform(1.2, 1.5))
    h.falx_hu = float(gen.uniform(85.0, 95.0))
    h.table_hu = float(gen.uniform(1850.0, 1950.0))
    m = plan.mimics
    m.sinus_hu = float(gen.uniform(70.0, 78.0))
    if not m.choroid:
        m.choroid = [{"centre": [side * (14.0 + 2 * h.vent_scale), 26.0, 7.0], "radius": 3.0,
                      "hu": float(gen.uniform(150, 350))} for side in (-1, 1)]
    if m.pineal is None:
        m.pineal = {"centre": [0.0, 20.0, -1.0], "radius": 2.5, "hu": float(gen.uniform(150, 400))}
    if not m.falx_plaques:
        m.falx_plaques = [{"y": float(gen.uniform(-30, 30)), "z": float(gen.uniform(35, 50)), "semi": [1.2, 6.0, 4.0],
                           "hu": float(gen.uniform(200, 600))}]
    if m.vessel is None:
        m.vessel = {"name": "basilar", "p1": [0.0, 4.0, h.z_pf + 8.0], "p2": [0.0, 0.0, -30.0], "radius": 1.8,
                    "hu": float(gen.uniform(62, 72))}
    for study in plan.studies:
        study.scanner = replace(study.scanner, beam_hardening_hu=float(gen.uniform(*BH_HU)))
        study.streaks = replace(study.streaks, dark_hu=study.streaks.dark_hu * STREAK_GAIN,
                                bright_hu=study.streaks.bright_hu * STREAK_GAIN)
