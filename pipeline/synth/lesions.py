"""Hemorrhages by subtype: where they go, what shape and density they have, and their labels.

Every lesion is a signed-distance region in head coordinates intersected with the compartment
its blood lives in, so that one definition gives both the HU painting and the voxel labels on
any grid:

- epidural: biconvex lens under the inner table (thickness ``T0 * sqrt(1 - (rho/R)^2)``);
- subdural: crescent along the convexity (``T0 * (1 - (rho/R)^2)``), stopped at the midline, or
  a thin falcine collection;
- intraparenchymal: lobulated blob of 1-4 ellipsoids in brain parenchyma, with a hypodense edema
  halo;
- intraventricular: blood layering in the dependent (posterior, world +y) part of the ventricles
  below a fluid level, or a cast filling one ventricle;
- subarachnoid: blood replacing CSF in the sulci and surface CSF of a convexity region, or in the
  basal cisterns / Sylvian fissures / interhemispheric fissure.

Extra-axial collections push the brain surface in (and efface sulci); big lesions shift the
midline (:class:`.anatomy.MassEffect`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np

from .anatomy import Fields, HeadParams, callosum_z, cavity_distance
from .config import LABEL_VALUES
from .grid import Grid, Pose
from .shapes import F32, ellipsoid, paint, random_rotation, soft_occupancy, sphere, wave_field

PointFilter = Callable[[np.ndarray], bool]


@dataclass
class Lesion:
    """One hemorrhage. ``geometry`` holds plain numbers/lists (JSON-ready)."""

    subtype: str
    kind: str
    hu: float
    geometry: dict[str, Any]
    planned_ml: float = 0.0
    texture_seed: int = 0

    def summary(self) -> dict[str, Any]:
        return {"subtype": self.subtype, "kind": self.kind, "hu": round(self.hu, 1), "planned_ml": round(self.planned_ml, 2)}

    def evolve(self, gen: np.random.Generator) -> "Lesion":
        """The same hemorrhage on a follow-up scan: somewhat smaller or larger, slightly less dense."""
        geo = dict(self.geometry)
        scale = float(gen.uniform(0.7, 1.15))
        for key in ("t0", "edema"):
            if key in geo:
                geo[key] = geo[key] * scale
        if "lobes" in geo:
            geo["lobes"] = [dict(lobe, semi=[s * scale ** (1 / 3) for s in lobe["semi"]]) for lobe in geo["lobes"]]
            geo["edema"] = geo.get("edema", 3.0) * float(gen.uniform(1.0, 1.6))
        if "depth" in geo:
            geo["depth"] = max(2.0, geo["depth"] * scale)
        if "radius" in geo:
            geo["radius"] = geo["radius"] * scale ** 0.5
        hu = max(52.0, self.hu - float(gen.uniform(0, 10)))
        return replace(self, geometry=geo, hu=hu, planned_ml=self.planned_ml * scale)


# ----------------------------------------------------------------------------------------------
# sampling


def _log_uniform(gen: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(gen.uniform(np.log(lo), np.log(hi))))


def _surface_direction(h: HeadParams, gen, azimuth_deg: float, z: float) -> np.ndarray:
    """Unit direction from the head centre to the vault at height ``z`` and azimuth (0 = anterior)."""
    phi = np.radians(azimuth_deg)
    scale = np.sqrt(max(0.05, 1.0 - (z / (h.c_up if z > 0 else h.c_low)) ** 2))
    b = h.b_front if np.cos(phi) > 0 else h.b_back
    p = np.array([h.a * np.sin(phi) * scale, -b * np.cos(phi) * scale, z])
    return p / np.linalg.norm(p)


def surface_point(h: HeadParams, u: np.ndarray) -> np.ndarray:
    """Where the ray from the head centre along ``u`` meets the inner table (bisection)."""
    lo, hi = 0.0, 200.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if cavity_distance(h, (u * mid)[None])[0] < 0:
            lo = mid
        else:
            hi = mid
    return u * lo


def _azimuth(gen, weights: dict[str, float], side: int | None = None) -> float:
    """An azimuth (degrees, 0 anterior, 90 patient left) from named sectors, on ``side`` when given."""
    sectors = {"frontal": (5, 35), "temporal": (65, 115), "parietal": (35, 145), "occipital": (145, 175)}
    names = list(weights)
    p = np.asarray([weights[n] for n in names], dtype=float)
    name = names[int(gen.choice(len(names), p=p / p.sum()))]
    lo, hi = sectors[name]
    draw = 1 if gen.random() < 0.5 else -1
    return (side or draw) * float(gen.uniform(lo, hi))


def _z_range(h: HeadParams, z_window: tuple[float, float], lo_limit: float, hi_limit: float) -> tuple[float, float]:
    lo = max(z_window[0], lo_limit)
    hi = min(z_window[1], hi_limit)
    if hi < lo:
        mid = float(np.clip((z_window[0] + z_window[1]) / 2, lo_limit, hi_limit))
        return mid, mid
    return lo, hi


def sample_lesion(subtype: str, h: HeadParams, gen: np.random.Generator, z_window: tuple[float, float],
                  in_stack: PointFilter, side: int | None = None) -> Lesion:
    """Draw one lesion of ``subtype`` whose centre lies in the head-z window and in the stack.

    ``side`` (+1 patient left, -1 right) forces the side of convexity lesions (so that an epidural
    and a subdural collection do not land on top of each other).
    """
    sampler = {
        "epidural": _sample_epidural,
        "subdural": _sample_subdural,
        "intraparenchymal": _sample_iph,
        "intraventricular": _sample_ivh,
        "subarachnoid": _sample_sah,
    }[subtype]
    best = None
    for _attempt in range(40):
        lesion, centre = sampler(h, gen, z_window, side)
        lesion.geometry["anchor"] = [float(v) for v in centre]
        best = lesion
        if in_stack(centre):
            return lesion
    assert best is not None
    return best


def _hu(gen) -> float:
    return float(gen.uniform(62.0, 90.0))


def _sample_epidural(h, gen, z_window, side=None):
    volume = _log_uniform(gen, 1.0, 60.0)
    ratio = gen.uniform(0.3, 0.55)  # T0 / R
    radius = float(np.clip((3 * volume * 1000 / (2 * np.pi * ratio)) ** (1 / 3), 9.0, 55.0))
    t0 = float(np.clip(radius * ratio, 3.0, 30.0))
    z_lo, z_hi = _z_range(h, z_window, h.z_mf + 12.0, h.c_up * 0.75)
    z = float(gen.uniform(z_lo, z_hi))
    u = _surface_direction(h, gen, _azimuth(gen, {"temporal": 0.55, "frontal": 0.2, "parietal": 0.15, "occipital": 0.1}, side), z)
    centre = surface_point(h, u)
    lesion = Lesion("epidural", "lens", _hu(gen), {"u": u.tolist(), "surface_r": float(np.linalg.norm(centre)), "radius": radius, "t0": t0},
                    planned_ml=2 * np.pi * radius**2 * t0 / 3000, texture_seed=int(gen.integers(1 << 30)))
    return lesion, centre - u * t0 / 2


def _sample_subdural(h, gen, z_window, side=None):
    if gen.random() < 0.15:  # falcine (interhemispheric) collection
        y0 = float(gen.uniform(-40, 45))
        z_lo, z_hi = _z_range(h, z_window, 25.0, h.c_up * 0.8)
        z0 = float(gen.uniform(z_lo, z_hi))
        t0 = float(gen.uniform(2.5, 6.0))
        radius = float(gen.uniform(20, 45))
        lesion = Lesion("subdural", "falcine", _hu(gen), {"y0": y0, "z0": z0, "radius": radius, "t0": t0},
                        planned_ml=np.pi * radius**2 * t0 / 2000, texture_seed=int(gen.integers(1 << 30)))
        return lesion, np.array([0.0, y0, z0])
    volume = _log_uniform(gen, 3.0, 120.0)
    t0 = float(np.clip(gen.uniform(0.12, 0.3) * volume ** 0.5 * 3.0, 4.0, 24.0))
    radius = float(np.clip(np.sqrt(2 * volume * 1000 / (np.pi * t0)), 22.0, 95.0))
    z_lo, z_hi = _z_range(h, z_window, h.z_mf + 18.0, h.c_up * 0.7)
    z = float(gen.uniform(z_lo, z_hi))
    u = _surface_direction(h, gen, _azimuth(gen, {"frontal": 0.25, "parietal": 0.45, "temporal": 0.2, "occipital": 0.1}, side), z)
    centre = surface_point(h, u)
    lesion = Lesion("subdural", "crescent", _hu(gen), {"u": u.tolist(), "surface_r": float(np.linalg.norm(centre)), "radius": radius, "t0": t0,
                                                         "side": 1 if u[0] >= 0 else -1},
                    planned_ml=np.pi * radius**2 * t0 / 2000, texture_seed=int(gen.integers(1 << 30)))
    return lesion, centre - u * t0 / 2


def _sample_iph(h, gen, z_window, side=None):
    volume = _log_uniform(gen, 0.2, 70.0)
    r_eq = (3 * volume * 1000 / (4 * np.pi)) ** (1 / 3)
    side = 1 if gen.random() < 0.5 else -1
    site = str(gen.choice(["basal_ganglia", "thalamus", "lobar", "cerebellar"], p=[0.35, 0.15, 0.4, 0.1]))
    if site == "basal_ganglia":
        c = np.array([side * 23.0, -4.0, -2.0]) + gen.uniform(-4, 4, 3)
    elif site == "thalamus":
        c = np.array([side * 11.0, 10.0, 1.0]) + gen.uniform(-3, 3, 3)
        r_eq = min(r_eq, 16.0)
    elif site == "cerebellar":
        c = np.array([side * 20.0, 44.0, h.z_pf + 18.0]) + gen.uniform(-4, 4, 3)
        r_eq = min(r_eq, 18.0)
    else:
        z_lo, z_hi = _z_range(h, z_window, h.z_af + 15.0, h.c_up * 0.75)
        z = float(gen.uniform(z_lo, z_hi))
        u = _surface_direction(h, gen, _azimuth(gen, {"frontal": 0.3, "parietal": 0.4, "temporal": 0.15, "occipital": 0.15}), z)
        surf = surface_point(h, u)
        depth = min(float(np.linalg.norm(surf)) * 0.6, r_eq + float(gen.uniform(8, 18)))
        c = surf - u * depth
    lobes = []
    n_lobes = int(gen.integers(1, 5))
    for n in range(n_lobes):
        axes = r_eq * gen.uniform(0.65, 1.3, 3) * (1.0 if n == 0 else gen.uniform(0.45, 0.75))
        offset = np.zeros(3) if n == 0 else gen.normal(0, 0.45 * r_eq, 3)
        lobes.append({"centre": (c + offset).tolist(), "semi": axes.tolist(), "rot": random_rotation(gen).tolist()})
    edema = float(gen.uniform(1.5, 4.0) + 0.25 * r_eq)
    lesion = Lesion("intraparenchymal", site, _hu(gen), {"lobes": lobes, "edema": edema}, planned_ml=volume,
                    texture_seed=int(gen.integers(1 << 30)))
    return lesion, c


def _sample_ivh(h, gen, z_window, side=None):
    if gen.random() < 0.7:
        sides = [int(s) for s in ([-1, 1] if gen.random() < 0.6 else [1 if gen.random() < 0.5 else -1])]
        parts = [f"{p}{s:+d}" for s in sides for p in ("atrium", "occipital", "body")]
        lesion = Lesion("intraventricular", "layering", _hu(gen), {"parts": parts, "depth": float(gen.uniform(6.0, 28.0))},
                        texture_seed=int(gen.integers(1 << 30)))
        centre = np.array([sides[0] * 16.0, 30.0, 6.0])
    else:
        part = str(gen.choice(["third", "fourth", "body-1", "body+1", "frontal-1", "frontal+1"]))
        lesion = Lesion("intraventricular", "cast", _hu(gen), {"parts": [part]}, texture_seed=int(gen.integers(1 << 30)))
        centre = next(p.centre for p in h.vent_parts() if p.name == part)
    return lesion, centre


def _sample_sah(h, gen, z_window, side=None):
    kind = str(gen.choice(["convexity", "basal", "sylvian", "interhemispheric"], p=[0.45, 0.25, 0.2, 0.1]))
    if kind == "basal":
        c = np.array([0.0, -4.0, -24.0])
        radius = float(gen.uniform(18, 45))
    elif kind == "sylvian":
        side = 1 if gen.random() < 0.5 else -1
        c = np.array([side * 33.0, -8.0, -14.0])
        radius = float(gen.uniform(12, 28))
    elif kind == "interhemispheric":
        c = np.array([0.0, float(gen.uniform(-45, 30)), float(gen.uniform(25, 45))])
        radius = float(gen.uniform(12, 30))
    else:
        z_lo, z_hi = _z_range(h, z_window, h.z_af + 10.0, h.c_up * 0.8)
        z = float(gen.uniform(z_lo, z_hi))
        u = _surface_direction(h, gen, _azimuth(gen, {"frontal": 0.3, "parietal": 0.4, "temporal": 0.15, "occipital": 0.15}), z)
        c = surface_point(h, u) - u * 6.0
        radius = float(gen.uniform(10, 35))
    lesion = Lesion("subarachnoid", kind, _hu(gen), {"centre": c.tolist(), "radius": radius}, texture_seed=int(gen.integers(1 << 30)))
    return lesion, c


# ----------------------------------------------------------------------------------------------
# rendering

Block = Callable[[Any, float], "tuple[slice, slice, slice] | None"]


def _extra_axial_thickness(lesion: Lesion, x, y, z) -> np.ndarray:
    g = lesion.geometry
    u = np.asarray(g["u"], dtype=np.float32)
    norm = np.sqrt(x * x + y * y + z * z) + F32(1e-3)
    dx = x / norm - u[0]
    dy = y / norm - u[1]
    dz = z / norm - u[2]
    rho = np.sqrt(dx * dx + dy * dy + dz * dz)
    rho *= F32(g["surface_r"] / g["radius"])
    q = np.clip(F32(1.0) - rho * rho, 0.0, 1.0)
    if lesion.kind == "lens":
        t = np.sqrt(q)
    else:
        t = q
    t *= F32(g["t0"])
    if "side" in g:  # subdural collections stop at the falx
        t *= np.clip(x * F32(g["side"] * 0.5), 0.0, 1.0)
    return t


def _extra_axial_block(lesion: Lesion) -> tuple[np.ndarray, float]:
    g = lesion.geometry
    u = np.asarray(g["u"])
    return u * (g["surface_r"] - g["t0"] / 2), float(g["radius"] + g["t0"] + 6.0)


def midline_shift(lesions: list[Lesion]) -> float:
    """Midline shift (mm along head x) from the volume of lesions on each side."""
    push = 0.0  # mL on the left (+x) minus mL on the right
    for lesion in lesions:
        if lesion.subtype in ("epidural", "subdural") and lesion.kind != "falcine":
            push += float(np.sign(lesion.geometry["u"][0])) * lesion.planned_ml
        elif lesion.subtype == "intraparenchymal":
            push += float(np.sign(lesion.geometry["lobes"][0]["centre"][0])) * lesion.planned_ml * 1.5
    shift = float(np.clip(-0.15 * push, -12.0, 12.0))
    return shift if abs(shift) >= 1.0 else 0.0


def mass_effect(lesions: list[Lesion], x, y, z, block: Block, shift: float):
    """Extra-axial thickness field (None without collections on this grid) and the midline shift."""
    from .anatomy import MassEffect

    extra = None
    for lesion in lesions:
        if lesion.subtype in ("epidural", "subdural") and lesion.kind != "falcine":
            centre, radius = _extra_axial_block(lesion)
            bl = block(centre, radius)
            if bl is not None:
                if extra is None:
                    extra = np.zeros(x.shape, dtype=np.float32)
                extra[bl] += _extra_axial_thickness(lesion, x[bl], y[bl], z[bl])
    return MassEffect(extra_axial_mm=extra, midline_shift_mm=shift)


def _texture(lesion: Lesion, x, y, z, amplitude: float) -> np.ndarray:
    gen = np.random.default_rng(lesion.texture_seed)
    dirs = gen.normal(size=(3, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    k = dirs * (2 * np.pi / gen.uniform(12, 25, 3))[:, None]
    tex = wave_field(x, y, z, k, gen.uniform(0, 2 * np.pi, 3))
    tex *= F32(amplitude)
    tex += F32(lesion.hu)
    return tex


def render_lesions(lesions: list[Lesion], h: HeadParams, f: Fields, vol: np.ndarray | None, label: np.ndarray,
                   grid: Grid, pose: Pose, block: Block, iso: float) -> None:
    """Paint every lesion into ``vol`` (when given) and write its label value into ``label``.

    Order (later wins where regions touch): subarachnoid, intraventricular, intraparenchymal,
    subdural, epidural.
    """
    order = {"subarachnoid": 0, "intraventricular": 1, "intraparenchymal": 2, "subdural": 3, "epidural": 4}
    for lesion in sorted(lesions, key=lambda les: order[les.subtype]):
        code = np.uint8(LABEL_VALUES[lesion.subtype])
        for bl, sdf, value, edema in _lesion_regions(lesion, h, f, grid, pose, block):
            if vol is not None:
                if edema is not None:
                    d_edema, edema_hu = edema
                    paint(vol[bl], soft_occupancy(d_edema, iso), edema_hu)
                paint(vol[bl], soft_occupancy(sdf, iso), value)
            # a voxel is labelled when its centre is in the lesion and no part of it is skull
            clear = f.cavity_width[bl] * F32(0.5)
            clear += f.cavity[bl]
            lab = label[bl]
            lab[(sdf < 0) & (clear < 0)] = code


#: One painted region of a lesion: ``(block, signed distance, HU values, (edema distance, edema HU) or None)``.
Region = tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, "tuple[np.ndarray, np.float32] | None"]


def _lesion_regions(lesion: Lesion, h: HeadParams, f: Fields, grid: Grid, pose: Pose,
                    block: Block) -> Iterator[Region]:
    """The region of ``lesion`` on this grid (none when it lies outside the grid)."""
    if lesion.subtype in ("epidural", "subdural") and lesion.kind != "falcine":
        region = _extra_axial_region(lesion, f, block)
    elif lesion.kind == "falcine":
        region = _falcine_region(lesion, f, block)
    elif lesion.subtype == "intraparenchymal":
        region = _parenchymal_region(lesion, h, f, block)
    elif lesion.subtype == "intraventricular":
        region = _ventricular_region(lesion, h, f, grid, pose, block)
    elif lesion.subtype == "subarachnoid":
        region = _subarachnoid_region(lesion, f, block)
    else:
        region = None
    if region is not None:
        yield region


def _extra_axial_region(lesion: Lesion, f: Fields, block: Block) -> Region | None:
    """An epidural or subdural collection over the convexity: a layer under the inner table."""
    centre, radius = _extra_axial_block(lesion)
    bl = block(centre, radius)
    if bl is None:
        return None
    x, y, z = f.x[bl], f.y[bl], f.z[bl]
    t = _extra_axial_thickness(lesion, x, y, z)
    depth = -f.cavity[bl]
    sdf = np.maximum(-depth, depth - t)
    sdf[t <= 0] = F32(50.0)
    return bl, sdf, _texture(lesion, x, y, z, 5.0 if lesion.subtype == "subdural" else 3.0), None


def _falcine_region(lesion: Lesion, f: Fields, block: Block) -> Region | None:
    """A subdural collection along the falx, above the corpus callosum."""
    g = lesion.geometry
    c = np.array([0.0, g["y0"], g["z0"]])
    bl = block(c, g["radius"] + 5)
    if bl is None:
        return None
    x, y, z = f.x[bl], f.y[bl], f.z[bl]
    xs = x if f.x_shift is None else f.x_shift[bl]
    r2 = ((y - F32(g["y0"])) ** 2 + (z - F32(g["z0"])) ** 2) * F32(1.0 / g["radius"] ** 2)
    t = F32(g["t0"]) * np.clip(F32(1.0) - r2, 0.0, 1.0)
    sdf = np.abs(xs) - t
    np.maximum(sdf, callosum_z(y) + F32(2.0) - z, out=sdf)
    np.maximum(sdf, f.cavity[bl], out=sdf)
    sdf[t <= 0.3] = F32(50.0)
    return bl, sdf, _texture(lesion, x, y, z, 3.0), None


def _parenchymal_region(lesion: Lesion, h: HeadParams, f: Fields, block: Block) -> Region | None:
    """An intraparenchymal hematoma (union of lobes, kept in the parenchyma) with its edema."""
    g = lesion.geometry
    lobes = g["lobes"]
    c = np.asarray(lobes[0]["centre"])
    radius = max(np.linalg.norm(np.asarray(lo["centre"]) - c) + max(lo["semi"]) for lo in lobes) + g["edema"] + 4
    bl = block(c, radius)
    if bl is None:
        return None
    x, y, z = f.x[bl], f.y[bl], f.z[bl]
    blob = None
    for lobe in lobes:
        d = ellipsoid(x, y, z, lobe["centre"], lobe["semi"], np.asarray(lobe["rot"]))
        blob = d if blob is None else np.minimum(blob, d, out=blob)
    parenchyma = np.maximum(f.brain[bl], -f.ventricles[bl])
    np.maximum(parenchyma, -f.cisterns[bl], out=parenchyma)
    sdf = np.maximum(blob, parenchyma)
    d_edema = np.maximum(blob - F32(g["edema"]), parenchyma)
    edema_hu = F32(h.wm_hu - 9.0)
    return bl, sdf, _texture(lesion, x, y, z, 4.0), (d_edema, edema_hu)


def _ventricular_region(lesion: Lesion, h: HeadParams, f: Fields, grid: Grid, pose: Pose,
                        block: Block) -> Region | None:
    """Blood in some ventricle parts, filling them or layering in their dependent part."""
    g = lesion.geometry
    parts = [p for p in h.vent_parts() if p.name in g["parts"]]
    if not parts:
        return None
    c = np.mean([p.centre for p in parts], axis=0)
    radius = max(np.linalg.norm(p.centre - c) + p.radius for p in parts) + 8
    radius += 12.0 if f.x_shift is not None else 0.0
    bl = block(c, radius)
    if bl is None:
        return None
    x, y, z = f.x[bl], f.y[bl], f.z[bl]
    xs = x if f.x_shift is None else f.x_shift[bl]
    region = None
    for part in parts:
        d = part.distance(xs, y, z, grow=2.5)
        region = d if region is None else np.minimum(region, d, out=region)
    sdf = np.maximum(f.ventricles[bl], region)
    if lesion.kind == "layering":
        level = dependent_level(parts, pose) - g["depth"]
        wy = grid.world_coord(1, bl)
        np.maximum(sdf, F32(level) - wy, out=sdf)
    return bl, sdf, _texture(lesion, x, y, z, 3.0), None


def _subarachnoid_region(lesion: Lesion, f: Fields, block: Block) -> Region | None:
    """Subarachnoid blood in a sphere: in the convexity sulci and on the brain surface, or in the cisterns."""
    g = lesion.geometry
    c = np.asarray(g["centre"])
    bl = block(c, g["radius"] + 4)
    if bl is None:
        return None
    x, y, z = f.x[bl], f.y[bl], f.z[bl]
    region = sphere(x, y, z, c, g["radius"])
    if lesion.kind == "convexity":
        sulcal = np.maximum(f.sulci[bl] - F32(0.6), f.brain[bl])  # blood distends the sulci a little
        surface = np.maximum(f.cavity[bl], -f.brain[bl])
        comp = np.minimum(sulcal, surface)
    else:
        comp = f.cisterns[bl] - F32(0.4)
        np.maximum(comp, f.cavity[bl], out=comp)
    sdf = np.maximum(comp, region)
    return bl, sdf, _texture(lesion, x, y, z, 3.0), None


def dependent_level(parts, pose: Pose) -> float:
    """Highest world y (most dependent point for a supine patient) of a set of ventricle parts."""
    e_world = np.array([0.0, 1.0, 0.0])
    e_head = pose.rotation.T @ e_world
    offset = float(pose.centre @ e_world)
    return max(part.extent(e_head) for part in parts) + offset

