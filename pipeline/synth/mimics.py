"""Normal findings that look like blood to a threshold: calcifications and dense vessels.

Drawn per patient (they are anatomy) and present in positive and negative studies alike:

- calcified choroid plexus in the atria (bright, bilateral, exactly where layering IVH sits);
- pineal and habenular calcification, basal ganglia calcification, falx calcification plaques;
- dural venous sinuses (superior sagittal, transverse/straight) at 40-78 HU: a "dense sinus"
  overlaps acute blood and lies where subdural and subarachnoid blood lies;
- a hyperdense basilar or middle cerebral artery segment.

Beam-hardening streaks at the skull base are acquisition artifacts (:mod:`.noise`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .anatomy import Fields, HeadParams, tentorium_z
from .shapes import F32, capsule, ellipsoid, paint, soft_occupancy, sphere


@dataclass
class Mimics:
    """Per-patient mimic findings (positions in head coordinates)."""

    choroid: list[dict[str, Any]] = field(default_factory=list)
    pineal: dict[str, Any] | None = None
    basal_ganglia: list[dict[str, Any]] = field(default_factory=list)
    falx_plaques: list[dict[str, Any]] = field(default_factory=list)
    sinus_hu: float = 50.0
    vessel: dict[str, Any] | None = None

    def names(self) -> list[str]:
        out = []
        if self.choroid:
            out.append("choroid_plexus_calcification")
        if self.pineal:
            out.append("pineal_calcification")
        if self.basal_ganglia:
            out.append("basal_ganglia_calcification")
        if self.falx_plaques:
            out.append("falx_calcification")
        if self.sinus_hu >= 62:
            out.append("dense_venous_sinus")
        if self.vessel:
            out.append(f"hyperdense_{self.vessel['name']}")
        return out


def sample_mimics(h: HeadParams, gen: np.random.Generator, negative: bool) -> Mimics:
    """Draw mimics; negative studies get them more often (at least one)."""
    boost = 1.3 if negative else 1.0
    m = Mimics()
    if gen.random() < 0.6 * boost:
        for side in (-1, 1):
            if gen.random() < 0.85:
                c = np.array([side * (14.0 + 2 * h.vent_scale), 26.0, 7.0]) + gen.uniform(-2, 2, 3)
                m.choroid.append({"centre": c.tolist(), "radius": float(gen.uniform(1.5, 3.5)), "hu": float(gen.uniform(90, 350))})
    if gen.random() < 0.5 * boost:
        m.pineal = {"centre": [0.0, 20.0 + float(gen.uniform(-2, 2)), -1.0 + float(gen.uniform(-2, 2))],
                    "radius": float(gen.uniform(1.2, 3.0)), "hu": float(gen.uniform(90, 400))}
    if gen.random() < 0.12 * boost:
        for side in (-1, 1):
            c = np.array([side * 18.0, -3.0, -3.0]) + gen.uniform(-2, 2, 3)
            m.basal_ganglia.append({"centre": c.tolist(), "semi": gen.uniform(1.5, 3.5, 3).tolist(), "hu": float(gen.uniform(70, 200))})
    if gen.random() < 0.2 * boost:
        for _ in range(int(gen.integers(1, 3))):
            m.falx_plaques.append({"y": float(gen.uniform(-40, 40)), "z": float(gen.uniform(30, 55)),
                                   "semi": [1.2, float(gen.uniform(3, 9)), float(gen.uniform(2, 6))], "hu": float(gen.uniform(150, 600))})
    m.sinus_hu = float(gen.uniform(62, 78)) if gen.random() < 0.3 * boost else float(gen.uniform(40, 60))
    if gen.random() < 0.2 * boost:
        if gen.random() < 0.5:
            m.vessel = {"name": "basilar", "p1": [0.0, 4.0, h.z_pf + 8.0], "p2": [0.0, 0.0, -30.0], "radius": 1.8,
                        "hu": float(gen.uniform(55, 70))}
        else:
            side = 1 if gen.random() < 0.5 else -1
            m.vessel = {"name": "mca", "p1": [side * 6.0, -12.0, -26.0], "p2": [side * 34.0, -14.0, -20.0], "radius": 1.6,
                        "hu": float(gen.uniform(55, 72))}
    return m


def paint_mimics(m: Mimics, h: HeadParams, f: Fields, vol: np.ndarray, block, iso: float) -> None:
    """Paint dural sinuses, calcifications and dense vessels into ``vol``."""
    x, y, z = f.x, f.y, f.z
    sinus = F32(m.sinus_hu)
    # superior sagittal sinus: triangle under the midline inner table, widening posteriorly
    depth = -f.cavity
    width = F32(2.5) + F32(2.0) * np.clip((y + F32(20.0)) * F32(1 / 60.0), 0.0, 1.0)
    d = np.abs(x) - width * (F32(1.0) - depth * F32(1 / 8.0))
    np.maximum(d, -depth, out=d)
    np.maximum(d, depth - F32(8.0), out=d)
    np.maximum(d, f.callosum + F32(10.0) - z, out=d)
    paint(vol, soft_occupancy(d, iso), sinus)
    # transverse sinuses: where the tentorium meets the occipital inner table
    bl = block((0.0, h.b_back - 10.0, h.z_tent - 20.0), h.a + 10.0)
    if bl is not None:
        xb, yb, zb = x[bl], y[bl], z[bl]
        dep = -f.cavity[bl]
        d = np.abs(zb - tentorium_z(h, xb, yb)) - F32(3.0)
        np.maximum(d, -dep, out=d)
        np.maximum(d, dep - F32(5.0), out=d)
        np.maximum(d, F32(25.0) - yb, out=d)
        paint(vol[bl], soft_occupancy(d, iso), sinus)
    # straight sinus: from the vein of Galen to the torcula
    p1, p2 = np.array([0.0, 30.0, -8.0]), np.array([0.0, h.b_back - 4.0, h.z_tent - 18.0])
    bl = block((p1 + p2) / 2, np.linalg.norm(p2 - p1) / 2 + 5)
    if bl is not None:
        d = capsule(x[bl], y[bl], z[bl], p1, p2, 2.2)
        np.maximum(d, f.cavity[bl], out=d)
        paint(vol[bl], soft_occupancy(d, iso), sinus)
    xs = f.x_shift if f.x_shift is not None else x
    for c in m.choroid:
        bl = block(c["centre"], c["radius"] + 3)
        if bl is not None:
            paint(vol[bl], soft_occupancy(sphere(xs[bl], y[bl], z[bl], c["centre"], c["radius"]), iso), F32(c["hu"]))
    if m.pineal:
        c = m.pineal
        bl = block(c["centre"], c["radius"] + 3)
        if bl is not None:
            paint(vol[bl], soft_occupancy(sphere(xs[bl], y[bl], z[bl], c["centre"], c["radius"]), iso), F32(c["hu"]))
    for c in m.basal_ganglia:
        bl = block(c["centre"], max(c["semi"]) + 3)
        if bl is not None:
            paint(vol[bl], soft_occupancy(ellipsoid(xs[bl], y[bl], z[bl], c["centre"], c["semi"]), iso), F32(c["hu"]))
    for c in m.falx_plaques:
        centre = (0.0, c["y"], c["z"])
        bl = block(centre, max(c["semi"]) + 3)
        if bl is not None:
            d = ellipsoid(x[bl], y[bl], z[bl], centre, c["semi"])
            np.maximum(d, f.cavity[bl], out=d)
            paint(vol[bl], soft_occupancy(d, iso), F32(c["hu"]))
    if m.vessel:
        v = m.vessel
        p1, p2 = np.asarray(v["p1"]), np.asarray(v["p2"])
        bl = block((p1 + p2) / 2, np.linalg.norm(p2 - p1) / 2 + 4)
        if bl is not None:
            d = capsule(xs[bl], y[bl], z[bl], p1, p2, v["radius"])
            paint(vol[bl], soft_occupancy(d, iso), F32(v["hu"]))
