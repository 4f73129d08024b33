"""Procedural head anatomy: per-patient shape parameters, tissue fields and their painting.

The head is a set of signed-distance fields in head coordinates (see :mod:`.grid`):

- the cranial cavity (inner table of the skull): an egg-shaped vault cut below by a skull base
  floor with anterior, middle and posterior fossae, petrous ridges and a foramen magnum;
- skull (outer table, diploe, inner table), scalp with subcutaneous fat and temporalis muscle,
  orbits, paranasal sinuses, mastoid air cells and ears below the floor;
- CSF over the convexity, cortex and white matter with a gyral pattern (sulci from the zero set of
  a band-limited random field), interhemispheric fissure with the falx, tentorium, cerebellum with
  folia, brainstem, basal cisterns, Sylvian fissures, deep grey nuclei and the ventricles.

Values are painted in HU with partial-volume edges (:func:`.shapes.paint`); the fields that
lesions need (cavity, brain surface, sulci, cisterns, ventricles) are kept in :class:`Fields`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .grid import PartialVolume
from .shapes import (
    F32,
    capsule,
    ellipsoid,
    paint,
    shell,
    sigmoid,
    smooth_min,
    soft_occupancy,
    sphere,
    wave_field,
)

if TYPE_CHECKING:
    from .lesions import Block

FAR = F32(1000.0)  # "very far outside" for fields only evaluated in blocks
FLOOR_MAX_Z = 10.0  # no skull base floor, tentorium or petrous ridge above this head z


def _waves(gen: np.random.Generator, n: int, wavelength: tuple[float, float], z_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    dirs = gen.normal(size=(n, 3))
    dirs[:, 2] *= z_weight
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    lam = gen.uniform(*wavelength, size=n)
    return dirs * (2 * np.pi / lam)[:, None], gen.uniform(0, 2 * np.pi, n)


@dataclass
class HeadParams:
    """One patient's anatomy (mm and HU). Sampled once per patient and shared by its studies."""

    a: float  # cavity semi-axis, left-right
    b_front: float  # anterior-posterior, frontal half
    b_back: float  # occipital half
    c_up: float  # superior half
    c_low: float  # inferior half (cut by the skull base floor)
    frontal_taper: float
    skull_mm: float
    base_mm: float
    scalp_mm: float
    temporalis_mm: float
    atrophy: float
    dura_mm: float  # dura mater lining the inner table
    inner_rough_mm: float  # relief of the inner table (digital impressions, vascular grooves)
    csf_mm: float  # extra-axial CSF under the dura
    sulcal_half_mm: float
    fissure_half_mm: float
    vent_scale: float
    vent_asym: float
    gm_hu: float
    wm_hu: float
    csf_hu: float
    scalp_hu: float
    fat_hu: float
    table_hu: float
    diploe_hu: float
    falx_hu: float
    z_af: float  # anterior fossa floor
    z_mf: float  # middle fossa floor
    z_pf: float  # posterior fossa floor
    y_sr: float  # sphenoid ridge (medial end)
    y_pr: float  # petrous ridge (medial end)
    z_tent: float  # tentorium apex height
    gyri: tuple[np.ndarray, np.ndarray] = field(repr=False, default=None)  # type: ignore[assignment]
    folia: tuple[np.ndarray, np.ndarray] = field(repr=False, default=None)  # type: ignore[assignment]
    diploe_tex: tuple[np.ndarray, np.ndarray] = field(repr=False, default=None)  # type: ignore[assignment]
    inner_tex: tuple[np.ndarray, np.ndarray] = field(repr=False, default=None)  # type: ignore[assignment]

    # --- derived landmarks -------------------------------------------------------------------
    @property
    def top_z(self) -> float:
        """Head z of the vertex skin."""
        return self.c_up + self.skull_mm + self.scalp_mm

    @property
    def bottom_z(self) -> float:
        """Head z of the foramen magnum (lowest point of the cranial cavity that matters)."""
        return self.z_pf

    @property
    def outer_radius_xy(self) -> float:
        """A radius that contains the head's axial cross-sections (ears included)."""
        return max(self.a + 32.0, self.b_back + self.skull_mm + self.scalp_mm + 6.0, self.b_front + 24.0)

    def globe_centre(self, side: int) -> np.ndarray:
        return np.array([side * (self.a * 0.47), -self.b_front + 6.0, self.z_af - 15.0])

    def vent_parts(self) -> list["VentPart"]:
        """The ventricular system: per side a chain of capsules (frontal horn, body, atrium,
        occipital and temporal horns), plus the third and fourth ventricles (ellipsoids)."""
        vs = self.vent_scale
        parts: list[VentPart] = []
        for side in (-1, 1):
            f = vs * (1.0 + side * self.vent_asym)
            r_front, r_body, r_atrium = 2.8 + 2.0 * f, 2.4 + 2.3 * f, 3.2 + 2.6 * f
            p0 = np.array([side * (1.6 + r_front), -33.0, 7.0])
            p1 = np.array([side * (1.6 + r_body), -14.0, 12.0])
            p2 = np.array([side * (2.5 + r_body), 8.0, 14.0])
            p3 = np.array([side * (12.0 + 2.0 * f), 25.0, 8.0])
            p4 = np.array([side * (16.0 + 2.0 * f), 42.0 + 4.0 * f, 5.0])
            p5 = np.array([side * (27.0 + 1.5 * f), 2.0, -16.0])
            parts.append(VentPart(f"frontal{side:+d}", "cap", p0, p1, (r_front, r_body)))
            parts.append(VentPart(f"body{side:+d}", "cap", p1, p2, (r_body, r_body)))
            parts.append(VentPart(f"atrium{side:+d}", "cap", p2, p3, (r_body, r_atrium)))
            parts.append(VentPart(f"occipital{side:+d}", "cap", p3, p4, (r_atrium, 1.2 + 0.8 * f)))
            parts.append(VentPart(f"temporal{side:+d}", "cap", p3, p5, (1.6 + 1.2 * f, 1.2 + 1.0 * f)))
        parts.append(VentPart("third", "ell", np.array([0.0, 4.0, -4.0]), None, (0.8 + 1.6 * vs, 13.0, 8.0)))
        parts.append(VentPart("fourth", "ell", np.array([0.0, 28.0, self.z_pf + 18.0]), None, (4.0 + 2.0 * vs, 3.5, 6.0)))
        return parts


@dataclass
class VentPart:
    """One piece of the ventricles: a capsule ``p1``-``p2`` with radii ``size`` or an ellipsoid at
    ``p1`` with semi-axes ``size``."""

    name: str
    kind: str  # "cap" or "ell"
    p1: np.ndarray
    p2: np.ndarray | None
    size: tuple[float, ...]

    @property
    def centre(self) -> np.ndarray:
        return self.p1 if self.p2 is None else (self.p1 + self.p2) / 2

    @property
    def radius(self) -> float:
        """A sphere around ``centre`` that holds the part."""
        if self.kind == "ell":
            return float(max(self.size))
        return float(np.linalg.norm(self.p2 - self.p1) / 2 + max(self.size))

    def distance(self, x, y, z, grow: float = 0.0) -> np.ndarray:
        if self.kind == "ell":
            return ellipsoid(x, y, z, self.p1, np.asarray(self.size) + grow)
        return capsule(x, y, z, self.p1, self.p2, (self.size[0] + grow, self.size[1] + grow))

    def extent(self, direction: np.ndarray) -> float:
        """max over the part of ``p . direction`` (head coordinates, unit direction)."""
        if self.kind == "ell":
            return float(self.p1 @ direction + np.sqrt(np.sum((direction * np.asarray(self.size)) ** 2)))
        return float(max(self.p1 @ direction + self.size[0], self.p2 @ direction + self.size[1]))


def _rz(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), np.sin(a), 0.0], [-np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def sample_head(gen: np.random.Generator, age: int = 50) -> HeadParams:
    """Draw one patient's anatomy; atrophy (wide sulci, large ventricles, extra-axial CSF) grows with ``age``."""
    atrophy = float(np.clip(0.85 * max(age - 30, 0) / 60.0 + gen.normal(0.0, 0.1), 0.0, 1.0))
    b_front = gen.uniform(76, 88)
    gm = gen.uniform(34.0, 41.0)
    z_mf = gen.uniform(-50, -44)
    return HeadParams(
        a=gen.uniform(60, 69),
        b_front=b_front,
        b_back=b_front + gen.uniform(0, 8),
        c_up=gen.uniform(58, 68),
        c_low=gen.uniform(76, 90),
        frontal_taper=gen.uniform(0.04, 0.14),
        skull_mm=gen.uniform(5.0, 8.0),
        base_mm=gen.uniform(2.0, 3.5),
        scalp_mm=gen.uniform(4.0, 7.0),
        temporalis_mm=gen.uniform(3.0, 9.0),
        atrophy=atrophy,
        dura_mm=gen.uniform(0.8, 1.3),
        inner_rough_mm=gen.uniform(0.2, 0.45),
        csf_mm=max(0.0, 3.5 * atrophy - 0.6 + gen.uniform(-0.4, 0.4)),  # young brains lie against the dura
        sulcal_half_mm=0.45 + 1.4 * atrophy + gen.uniform(0, 0.3),
        fissure_half_mm=0.8 + 2.5 * atrophy,
        vent_scale=0.75 + 0.9 * atrophy + gen.uniform(-0.1, 0.25),
        vent_asym=gen.uniform(-0.12, 0.12),
        gm_hu=gm,
        wm_hu=gm - gen.uniform(10.0, 14.0),
        csf_hu=gen.uniform(2.0, 10.0),
        scalp_hu=gen.uniform(30, 50),
        fat_hu=gen.uniform(-110, -80),
        table_hu=gen.uniform(1500, 1900),
        diploe_hu=gen.uniform(750, 1050),
        falx_hu=gen.uniform(55, 90),
        z_af=gen.uniform(-30, -22),
        z_mf=z_mf,
        z_pf=gen.uniform(-69, -63),
        y_sr=gen.uniform(-20, -14),
        y_pr=gen.uniform(-5, -1),
        z_tent=gen.uniform(-22, -16),
        gyri=_waves(gen, 8, (12.0, 20.0)),
        folia=_waves(gen, 4, (6.0, 9.0), z_weight=3.0),
        diploe_tex=_waves(gen, 4, (3.0, 6.0)),
        inner_tex=_waves(gen, 6, (4.0, 10.0)),
    )


@dataclass
class MassEffect:
    """What extra-axial and intra-axial lesions do to the brain around them."""

    extra_axial_mm: np.ndarray | None = None  # thickness of collections under the inner table
    midline_shift_mm: float = 0.0  # signed, along head x (positive: towards the patient's left)


@dataclass
class Fields:
    """Distance fields (mm, negative inside) on one grid, shared by the anatomy and the lesions."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    cavity: np.ndarray  # inside the inner table of the skull
    cavity_width: np.ndarray  # partial-volume ramp width of the cavity surface
    head: np.ndarray  # skin surface
    brain: np.ndarray  # brain surface (pia), displaced by extra-axial collections
    sulci: np.ndarray  # supratentorial sulcal CSF (folia CSF below the tentorium)
    cisterns: np.ndarray  # basal cisterns, Sylvian and interhemispheric fissures
    ventricles: np.ndarray
    infratentorial: np.ndarray  # below the tentorium, behind the petrous ridges
    skull: np.ndarray  # local skull thickness
    temporalis: np.ndarray  # extra soft tissue over the temporal squama
    callosum: np.ndarray | None = None  # lowest z of the interhemispheric fissure at each voxel's y
    x_shift: np.ndarray | None = None  # head x corrected for midline shift (None: no shift)


# ----------------------------------------------------------------------------------------------
# skull base geometry (scalar-friendly: works on arrays of any shape)


def petrous_ridge_y(h: HeadParams, ax: np.ndarray) -> np.ndarray:
    """y of the petrous ridge (middle/posterior fossa boundary) at |x| = ``ax``."""
    return F32(h.y_pr) + F32(0.5) * np.maximum(ax - F32(8.0), F32(0.0))


def tentorium_z(h: HeadParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.maximum(y - F32(8.0), F32(0.0))
    out *= F32(-0.26)
    out -= F32(0.004) * x * x
    out += F32(h.z_tent)
    return out


def floor_z(h: HeadParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height of the skull base floor under each (x, y): anterior, middle, posterior fossae."""
    ax = np.abs(x)
    mid = np.exp(-(x * x) * F32(1 / 150.0))  # ~1 on the midline, 0 laterally
    z_af = F32(h.z_af) - F32(7.0) * np.exp(-(x * x) * F32(1 / 50.0)) + F32(0.002) * x * x
    z_mf = F32(h.z_mf) + F32(17.0) * mid + F32(0.002) * x * x
    dy = y - F32(45.0)
    z_pf = F32(h.z_pf) + F32(0.004) * x * x + F32(0.003) * dy * dy
    np.minimum(z_pf, F32(h.z_mf - 4.0), out=z_pf)
    s1 = sigmoid((y - (F32(h.y_sr) - F32(0.35) * ax)) * F32(1 / 3.0))
    w2 = F32(3.0) + F32(6.0) * mid
    s2 = sigmoid((y - petrous_ridge_y(h, ax)) / w2)
    z = z_mf + s2 * (z_pf - z_mf)
    z -= z_af
    z *= s1
    z += z_af
    # foramen magnum: the cavity continues down as the spinal canal
    dy = y - F32(22.0)
    z -= F32(60.0) * np.exp(-(x * x) * F32(1 / 170.0) - dy * dy * F32(1 / 260.0))
    return z


def vault_field(h: HeadParams, x, y, z, slice_dir: np.ndarray):
    """Signed distance to the vault ellipsoid (inner table) and |cos| of its normal with the slice axis."""
    taper = sigmoid((-y - F32(0.3 * h.b_front)) * F32(1.0 / (0.15 * h.b_front)))
    taper *= F32(-h.frontal_taper)
    taper += F32(1.0)
    ax = taper
    ax *= F32(h.a)
    by = (y < 0) * F32(h.b_front - h.b_back)
    by += F32(h.b_back)
    cz = (z > 0) * F32(h.c_up - h.c_low)
    cz += F32(h.c_low)
    u = x / ax
    v = y / by
    w = z / cz
    r = u * u + v * v + w * w
    np.sqrt(r, out=r)
    u /= ax
    v /= by
    w /= cz
    g = u * u + v * v + w * w
    np.sqrt(g, out=g)
    g += F32(1e-6)
    d = (r - F32(1.0)) * r / g
    cos = u * F32(slice_dir[0]) + v * F32(slice_dir[1]) + w * F32(slice_dir[2])
    cos /= g
    np.abs(cos, out=cos)
    return d, cos


def cavity_distance(h: HeadParams, points: np.ndarray) -> np.ndarray:
    """Distance of head points ``(n, 3)`` to the inner table (negative inside the cavity)."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    x, y, z = p[:, 0].copy(), p[:, 1].copy(), p[:, 2].copy()
    d, _ = vault_field(h, x, y, z, np.array([0.0, 0.0, 1.0]))
    return np.maximum(d, floor_z(h, x, y) - z)


# ----------------------------------------------------------------------------------------------
# fields and painting


def compute_fields(h: HeadParams, x: np.ndarray, y: np.ndarray, z: np.ndarray, pv: PartialVolume,
                   mass: MassEffect, block: Block) -> Fields:
    """Cavity, skin and brain fields on a grid.

    Parameters
    ----------
    h
        The patient's head shape.
    x, y, z
        Head coordinates (mm, float32) of the grid's voxels.
    pv
        Partial-volume model of the grid (ramp widths of the cavity surface).
    mass
        Mass effect of the lesions (extra-axial displacement, midline shift).
    block
        ``block(centre, radius)``: the array slices of the grid near a head point, or None.

    Returns
    -------
    Fields
        The fields the anatomy and the lesions are painted from.
    """
    low = float(z.min()) < FLOOR_MAX_Z  # the skull base only matters in chunks that reach down to it
    cavity, width, d_vault, d_floor = _cavity_field(h, x, y, z, pv, low, block)
    skull = _skull_thickness(h, x, y, z, d_vault, d_floor)
    temporalis = _temporalis(h, x, z)
    head = _skin_field(h, x, y, z, cavity, skull, temporalis, block)
    brain, efface = _brain_field(h, cavity, mass)
    x_shift = _midline_shifted_x(x, y, z, mass.midline_shift_mm)
    xs = x if x_shift is None else x_shift
    if low:
        infra = np.maximum(z - tentorium_z(h, xs, y), petrous_ridge_y(h, np.abs(x)) - F32(2.0) - y)
    else:
        infra = np.full(x.shape, FAR, dtype=np.float32)
    depth = -brain
    sulci = _sulcal_field(h, x, y, z, depth, cavity, efface)
    _add_folia(h, x, y, z, depth, infra, sulci, block)
    cisterns = np.full(x.shape, FAR, dtype=np.float32)
    ventricles = np.full(x.shape, FAR, dtype=np.float32)
    fields = Fields(x=x, y=y, z=z, cavity=cavity, cavity_width=width, head=head, brain=brain, sulci=sulci,
                    cisterns=cisterns, ventricles=ventricles, infratentorial=infra, skull=skull, temporalis=temporalis,
                    callosum=callosum_z(y), x_shift=x_shift)
    _cistern_fields(h, fields, block)
    _ventricle_field(h, fields, block, mass.midline_shift_mm)
    return fields


def _cavity_field(h: HeadParams, x, y, z, pv: PartialVolume, low: bool,
                  block: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(cavity, its ramp width, vault distance, floor distance)``: the vault cut by the skull base floor
    (only when the chunk is ``low``) with the petrous bones sticking up into it."""
    s = pv.slice_dir_head
    d_vault, cos_vault = vault_field(h, x, y, z, s)
    _roughen_inner_table(h, x, y, z, d_vault)
    width = pv.width(cos_vault)
    if low:
        d_floor = floor_z(h, x, y)
        d_floor -= z
        cavity = np.maximum(d_vault, d_floor)
        w_floor = float(pv.width(np.array([abs(s[2])], dtype=np.float32))[0])
        np.copyto(width, F32(w_floor), where=d_floor > d_vault)
    else:
        d_floor = np.full(x.shape, -FAR, dtype=np.float32)
        cavity = d_vault.copy()
    # petrous bones stick up into the cavity
    for side in (-1, 1):
        p1, p2 = petrous_segment(h, side)
        bl = block((p1 + p2) / 2, np.linalg.norm(p2 - p1) / 2 + 12)
        if bl is not None:
            dp = capsule(x[bl], y[bl], z[bl], p1, p2, (9.0, 5.0))
            np.maximum(cavity[bl], -dp, out=cavity[bl])
    return cavity, width, d_vault, d_floor


def _roughen_inner_table(h: HeadParams, x, y, z, d_vault: np.ndarray) -> None:
    """Add the inner table's relief to the vault distance (in place): mm-scale bumps and grooves
    that fade out over the skull's thickness, so the outer table stays smooth."""
    band = np.flatnonzero(np.abs(d_vault) < F32(6.0))
    if band.size == 0:
        return
    xb, yb, zb = (a.reshape(-1)[band] for a in (x, y, z))
    relief = wave_field(xb, yb, zb, *h.inner_tex)
    flat = d_vault.reshape(-1)
    relief *= F32(h.inner_rough_mm) * np.clip(F32(1.0) - np.abs(flat[band]) * F32(1 / 6.0), 0.0, 1.0)
    flat[band] += relief


def _skin_field(h: HeadParams, x, y, z, cavity: np.ndarray, skull: np.ndarray, temporalis: np.ndarray,
                block: Block) -> np.ndarray:
    """The skin surface: vault skin over skull, scalp and temporalis, the face / skull base soft tissue
    below it, and the ears."""
    head = cavity - skull
    head -= F32(h.scalp_mm)
    head -= temporalis
    lower = ellipsoid(x, y, z, (0.0, -6.0, h.z_mf - 22.0), (h.a + 12.0, h.b_front + 14.0, 45.0))
    np.minimum(head, lower, out=head)
    for side in (-1, 1):  # ears
        c = np.array([side * (h.a + 20.0), 12.0, h.z_mf + 2.0])
        bl = block(c, 30.0)
        if bl is not None:
            np.minimum(head[bl], ellipsoid(x[bl], y[bl], z[bl], c, (5.0, 14.0, 26.0)), out=head[bl])
    return head


def _brain_field(h: HeadParams, cavity: np.ndarray, mass: MassEffect) -> tuple[np.ndarray, np.ndarray | None]:
    """``(brain surface, effacement of the sulci)``: a CSF layer under the cavity, pushed in by
    extra-axial collections (effacement None without them)."""
    brain = cavity + F32(h.dura_mm + h.csf_mm)
    efface = None
    if mass.extra_axial_mm is not None:
        e = mass.extra_axial_mm
        brain += e
        brain -= F32(h.csf_mm) * np.clip(e * F32(0.5), 0.0, 1.0)
        efface = np.clip(e * F32(0.25), 0.0, 1.0)
    return brain, efface


def _midline_shifted_x(x, y, z, shift_mm: float) -> np.ndarray | None:
    """Head x corrected for a midline shift (a smooth bump around the centre), None for no shift."""
    if not abs(shift_mm) > 0.05:
        return None
    bump = np.exp(-(y * y) * F32(1 / 3600.0) - (z * z) * F32(1 / 2500.0))
    bump *= F32(shift_mm)
    return x - bump


def _sulcal_field(h: HeadParams, x, y, z, depth: np.ndarray, cavity: np.ndarray,
                  efface: np.ndarray | None) -> np.ndarray:
    """Sulci: the zero set of a band-limited field, tapering with ``depth`` below the brain surface."""
    gk, gp = h.gyri
    kmag = F32(np.mean(np.linalg.norm(gk, axis=1)))
    # only the cortical band needs the gyral field: evaluate it there and nowhere else
    sulci = np.full(x.shape, FAR, dtype=np.float32)
    band = np.flatnonzero((depth < F32(22.0)) & (cavity < F32(1.0)))
    if band.size:
        xb, yb, zb, db = (a.reshape(-1)[band] for a in (x, y, z, depth))
        # evaluate on a sphere-like shell so that sulci run perpendicular to the brain surface
        rad = np.sqrt(xb * xb + yb * yb + zb * zb)
        rad += F32(1e-3)
        scale = F32(0.45) + F32(0.55 * 70.0) / rad
        g = wave_field(xb * scale, yb * scale, zb * scale, gk, gp)
        np.abs(g, out=g)
        g /= kmag  # ~ distance (mm) to the zero set
        half = F32(h.sulcal_half_mm) * np.clip(F32(1.0) - db * F32(1 / 18.0), 0.0, 1.0)
        if efface is not None:
            half *= F32(1.0) - efface.reshape(-1)[band]
        g -= half
        np.maximum(g, db - F32(18.0), out=g)
        sulci.reshape(-1)[band] = g
    return sulci


def _add_folia(h: HeadParams, x, y, z, depth: np.ndarray, infra: np.ndarray, sulci: np.ndarray,
               block: Block) -> None:
    """Folia of the cerebellum (finer, mostly horizontal) into ``sulci`` below the tentorium."""
    fk, fp = h.folia
    bl = block((0.0, 45.0, h.z_pf + 25.0), 75.0)
    if bl is not None:
        f = np.abs(wave_field(x[bl], y[bl], z[bl], fk, fp))
        f /= F32(np.mean(np.linalg.norm(fk, axis=1)))
        f -= F32(0.35 + 0.6 * h.atrophy) * np.clip(F32(1.0) - depth[bl] * F32(1 / 10.0), 0.0, 1.0)
        np.maximum(f, depth[bl] - F32(10.0), out=f)
        sl = sulci[bl]
        np.copyto(sl, f, where=infra[bl] < 0)


def petrous_segment(h: HeadParams, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The axis of one petrous ridge in head coordinates (mm).

    The skull base and the beam-hardening streaks of the noise model
    (:mod:`ichct.pipeline.synth.noise`) follow the same ridge.

    Parameters
    ----------
    h
        The patient's anatomy.
    side
        -1 or +1: the sign of x of the ridge.

    Returns
    -------
    tuple of numpy.ndarray
        ``(lateral end, apex)``, each ``(3,)``.
    """
    lateral = np.array([side * (h.a - 8.0), h.y_pr + 0.5 * (h.a - 16.0), h.z_mf + 2.0])
    apex = np.array([side * 12.0, h.y_pr + 4.0, h.z_mf + 11.0])
    return lateral, apex


def _skull_thickness(h: HeadParams, x, y, z, d_vault, d_floor) -> np.ndarray:
    """Skull thickness: thicker frontally/occipitally, thin over the temporal squama, thick at the base."""
    ny = y * F32(1.0 / h.b_back)
    nx = x * F32(1.0 / h.a)
    t = F32(1.0) + F32(0.3) * ny * ny - F32(0.35) * nx * nx * np.clip(F32(1.0) - np.abs(z) * F32(1 / 40.0), 0.0, 1.0)
    t *= F32(h.skull_mm)
    base = np.clip((d_floor - d_vault) * F32(0.25) + F32(0.5), 0.0, 1.0)
    base *= F32(h.base_mm) - t
    t += base
    return t


def _temporalis(h: HeadParams, x, z) -> np.ndarray:
    lat = np.clip((np.abs(x) * F32(1.0 / h.a) - F32(0.55)) * F32(1 / 0.35), 0.0, 1.0)
    lat *= np.clip(F32(1.0) - np.abs(z - F32(-5.0)) * F32(1 / 45.0), 0.0, 1.0)
    lat *= F32(h.temporalis_mm)
    return lat


def _cistern_fields(h: HeadParams, f: Fields, block) -> None:
    """Basal cisterns, Sylvian fissures (minimum of their distances) into ``f.cisterns``."""
    at = 1.5 * h.atrophy
    shapes = [
        ("ell", (0.0, -12.0, -28.0), (12.0 + 2 * at, 8.0 + at, 4.5 + at), None),  # suprasellar
        ("ell", (0.0, 24.0, -16.0), (7.0 + at, 5.0 + at, 5.0), None),  # quadrigeminal
        ("ell", (0.0, 2.0, h.z_pf + 20.0), (10.0, 3.0 + at, 13.0), None),  # prepontine
        ("ell", (0.0, 60.0, h.z_pf + 4.0), (14.0, 10.0, 7.0 + at), None),  # cisterna magna
    ]
    for side in (-1, 1):
        shapes.append(("ell", (side * 27.0, -15.0, -24.0), (14.0, 1.6 + at, 4.5), _rz(side * -18)))  # Sylvian stem
        shapes.append(("ell", (side * 38.5, -2.0, -5.0), (0.7 + 0.5 * at, 16.0, 10.0), _rz(side * 8)))  # insular cistern
    for kind, c, semi, rot in shapes:
        bl = block(c, max(semi) + 4)
        if bl is None:
            continue
        d = ellipsoid(f.x[bl], f.y[bl], f.z[bl], c, semi, rot)
        np.minimum(f.cisterns[bl], d, out=f.cisterns[bl])
    # perimesencephalic (ambient) ring around the midbrain
    c = (0.0, 9.0, -24.0)
    bl = block(c, 24.0)
    if bl is not None:
        x, y, z = f.x[bl], f.y[bl], f.z[bl]
        rho = np.sqrt(x * x + (y - F32(9.0)) ** 2)
        ring = np.maximum(rho - F32(13.5 + 1.5 * h.atrophy), F32(11.0) - rho)
        np.maximum(ring, np.abs(z - F32(-24.0)) - F32(10.0), out=ring)
        np.minimum(f.cisterns[bl], ring, out=f.cisterns[bl])
    # interhemispheric fissure (above the corpus callosum, full height at the poles)
    xs = f.x if f.x_shift is None else f.x_shift
    fis = np.abs(xs) - F32(h.fissure_half_mm)
    np.maximum(fis, f.callosum - f.z, out=fis)
    np.maximum(fis, -f.infratentorial, out=fis)
    np.minimum(f.cisterns, fis, out=f.cisterns)
    # cisterns only exist inside the cavity
    np.maximum(f.cisterns, f.cavity, out=f.cisterns)


def callosum_z(y: np.ndarray) -> np.ndarray:
    """Lowest z of the interhemispheric fissure: above the corpus callosum, down to the floor at the poles.

    The anatomy's fissure and the lesions that must stay below it use the same surface.

    Parameters
    ----------
    y
        Head coordinates y (mm, anterior-posterior), any shape.

    Returns
    -------
    numpy.ndarray
        z (mm) of the surface at each ``y`` (float32).

    Examples
    --------
    >>> float(callosum_z(np.zeros(1, dtype=np.float32))[0]) > 20
    True
    """
    out = F32(22.0) + F32(0.004) * y * y
    out -= F32(200.0) * sigmoid((np.abs(y) - F32(48.0)) * F32(0.3))
    return out


def _ventricle_field(h: HeadParams, f: Fields, block, shift: float) -> None:
    for part in h.vent_parts():
        bl = block(part.centre, part.radius + 4 + abs(shift))
        if bl is None:
            continue
        xs = f.x[bl] if f.x_shift is None else f.x_shift[bl]
        smooth_min(f.ventricles[bl], part.distance(xs, f.y[bl], f.z[bl]), 2.0)


def paint_anatomy(h: HeadParams, f: Fields, pv: PartialVolume, block) -> np.ndarray:
    """The noiseless HU volume of the anatomy (no lesions, no mimics)."""
    x, y, z = f.x, f.y, f.z
    iso = pv.iso_width
    w = f.cavity_width
    vol = np.full(x.shape, F32(-1000.0), dtype=np.float32)
    # soft tissue of the head and face
    paint(vol, soft_occupancy(f.head, iso), F32(h.scalp_hu))
    thick = f.skull
    # subcutaneous fat of the scalp (vault only)
    inner = thick + f.temporalis
    inner += F32(1.2)
    outer = inner + F32(h.scalp_mm - 2.4)
    fat = shell(f.cavity, inner, outer)
    np.maximum(fat, -f.head - F32(1.0), out=fat)  # keep under the skin
    paint(vol, soft_occupancy(fat, w) * _vault_weight(h, f), F32(h.fat_hu))
    _paint_face(h, f, vol, block, iso)
    # skull: cortical tables, then diploe with trabecular texture
    paint(vol, soft_occupancy(shell(f.cavity, F32(0.0), thick), w), F32(h.table_hu))
    dip = soft_occupancy(shell(f.cavity, F32(1.4), thick - F32(1.5)), w)
    _paint_textured(vol, dip, x, y, z, h.diploe_hu, 260.0, h.diploe_tex)
    _paint_skull_base(h, f, vol, block, iso)
    # cranial cavity: dura lining the inner table, CSF under it, then brain
    paint(vol, soft_occupancy(f.cavity, w), F32(h.falx_hu))
    paint(vol, soft_occupancy(f.cavity + F32(h.dura_mm), w), F32(h.csf_hu))
    brain_occ = soft_occupancy(f.brain, w)
    paint(vol, brain_occ, F32(h.wm_hu))
    # cortex: within ~2.7 mm of CSF (brain surface or a sulcus), supratentorial
    gm = np.minimum(-f.brain, f.sulci)
    gm -= F32(2.7)
    np.maximum(gm, f.brain, out=gm)
    np.maximum(gm, -f.infratentorial, out=gm)
    paint(vol, soft_occupancy(gm, iso), F32(h.gm_hu))
    # cerebellum: cortex-dominated grey, white matter cores
    cb = np.maximum(f.infratentorial, f.brain)
    paint(vol, soft_occupancy(cb, iso), F32(h.gm_hu - 2.0))
    for side in (-1, 1):
        c = (side * 22.0, 44.0, h.z_pf + 17.0)
        bl = block(c, 20.0)
        if bl is not None:
            paint(vol[bl], soft_occupancy(ellipsoid(x[bl], y[bl], z[bl], c, (12.0, 14.0, 8.0)), iso), F32(h.wm_hu + 1.0))
    # sulcal CSF (brain only)
    sul = np.maximum(f.sulci, f.brain)
    paint(vol, soft_occupancy(sul, iso), F32(h.csf_hu))
    _paint_deep(h, f, vol, block, iso)
    paint(vol, soft_occupancy(f.cisterns, iso), F32(h.csf_hu))
    _paint_brainstem(h, f, vol, block, iso)
    paint(vol, soft_occupancy(f.ventricles, iso), F32(h.csf_hu))
    _paint_dura(h, f, vol, iso)
    # slight cupping / beam hardening: brain a few HU denser next to the inner table
    rim = np.exp(np.minimum(f.cavity, F32(0.0)) * F32(1 / 6.0))
    rim *= F32(3.0) * soft_occupancy(f.cavity, w)
    vol += rim
    return vol


def _vault_weight(h: HeadParams, f: Fields) -> np.ndarray:
    """~1 where the skin belongs to the vault (above the skull base), 0 over the face."""
    return np.clip((f.z - F32(h.z_af)) * F32(1 / 10.0), 0.0, 1.0)


def _paint_textured(vol, occ, x, y, z, mean: float, amplitude: float, waves) -> None:
    """Paint ``mean + amplitude * texture`` where ``occ > 0`` (texture only evaluated there)."""
    idx = np.flatnonzero(occ > 0)
    if idx.size == 0:
        return
    xf, yf, zf = x.reshape(-1)[idx], y.reshape(-1)[idx], z.reshape(-1)[idx]
    tex = wave_field(xf, yf, zf, *waves)
    value = F32(mean) + F32(amplitude * 0.5) * tex
    flat = vol.reshape(-1)
    cur = flat[idx]
    flat[idx] = cur + occ.reshape(-1)[idx] * (value - cur)


def _paint_face(h: HeadParams, f: Fields, vol, block, iso) -> None:
    """Orbits, sinuses, ear canals and pinnae below the anterior and middle fossae."""
    x, y, z = f.x, f.y, f.z
    for side in (-1, 1):
        g = h.globe_centre(side)
        cone_c = g + np.array([-side * 3.0, 14.0, 1.0])
        bl = block(cone_c, 34.0)
        if bl is not None:
            xb, yb, zb, vb = x[bl], y[bl], z[bl], vol[bl]
            cone = ellipsoid(xb, yb, zb, cone_c, (15.0, 22.0, 13.0), _rz(side * 12))
            paint(vb, soft_occupancy(shell(cone, F32(0.0), F32(2.2)), iso), F32(1100.0))  # orbital walls
            paint(vb, soft_occupancy(cone, iso), F32(-85.0))  # orbital fat
            apex = g + np.array([-side * 18.0, 38.0, 2.0])
            paint(vb, soft_occupancy(capsule(xb, yb, zb, g, apex, 2.4), iso), F32(38.0))  # optic nerve
            paint(vb, soft_occupancy(sphere(xb, yb, zb, g, 11.5), iso), F32(12.0))  # vitreous
            paint(vb, soft_occupancy(ellipsoid(xb, yb, zb, g + np.array([0, -9.5, 0]), (4.0, 1.8, 4.0)), iso), F32(115.0))  # lens
        # external ear canal and ear
        ear = np.array([side * (h.a + 20.0), 12.0, h.z_mf + 2.0])
        bl = block(ear, 30.0)
        if bl is not None:
            xb, yb, zb, vb = x[bl], y[bl], z[bl], vol[bl]
            canal = capsule(xb, yb, zb, ear - np.array([side * 4.0, 0, 2.0]), np.array([side * (h.a - 2.0), 10.0, h.z_mf - 2.0]), 3.2)
            paint(vb, soft_occupancy(canal, iso), F32(-950.0))
    if float(z.min()) < h.z_af:
        # subcutaneous fat of the face and neck, fat planes, mandibular rami
        low = np.clip((F32(h.z_af) - z) * F32(1 / 10.0), 0.0, 1.0)
        paint(vol, soft_occupancy(shell(f.head, F32(-9.0), F32(-2.5)), iso) * low, F32(h.fat_hu + 10.0))
        for side in (-1, 1):
            c = (side * 17.0, -4.0, h.z_mf - 32.0)
            bl = block(c, 18.0)
            if bl is not None:
                paint(vol[bl], soft_occupancy(ellipsoid(x[bl], y[bl], z[bl], c, (5.0, 11.0, 16.0)), iso), F32(h.fat_hu))
            p1 = np.array([side * (h.a - 6.0), -6.0, h.z_mf - 14.0])
            p2 = np.array([side * (h.a - 16.0), -34.0, h.z_mf - 75.0])
            bl = block((p1 + p2) / 2, np.linalg.norm(p2 - p1) / 2 + 8.0)
            if bl is not None:
                d = capsule(x[bl], y[bl], z[bl], p1, p2, 4.5)
                paint(vol[bl], soft_occupancy(d, iso), F32(1500.0))
                paint(vol[bl], soft_occupancy(d + F32(1.8), iso), F32(450.0))  # marrow
    sinuses = [
        ((0.0, h.y_sr - 4.0, h.z_mf - 10.0), (13.0, 11.0, 9.0), 0.15),  # sphenoid
        ((0.0, -h.b_front + 26.0, h.z_af - 15.0), (9.0, 18.0, 12.0), 0.6),  # ethmoid cells
        ((0.0, -h.b_front + 8.0, h.z_af + 12.0), (14.0, 8.0, 9.0), 0.2),  # frontal sinus
        ((0.0, -h.b_front + 22.0, h.z_af - 42.0), (8.0, 24.0, 16.0), 0.5),  # nasal cavity
        ((0.0, -8.0, h.z_mf - 34.0), (12.0, 7.0, 12.0), 0.0),  # nasopharynx
        ((-22.0, -h.b_front + 24.0, h.z_af - 42.0), (12.0, 15.0, 15.0), 0.08),  # maxillary sinuses
        ((22.0, -h.b_front + 24.0, h.z_af - 42.0), (12.0, 15.0, 15.0), 0.08),
    ]
    for c, semi, septa in sinuses:
        bl = block(c, max(semi) + 3)
        if bl is None:
            continue
        xb, yb, zb, vb = x[bl], y[bl], z[bl], vol[bl]
        occ = soft_occupancy(ellipsoid(xb, yb, zb, c, semi), iso)
        occ *= np.clip(f.cavity[bl] * F32(0.5), 0.0, 1.0)  # never inside the cranial cavity
        cells = wave_field(xb, yb, zb, *h.diploe_tex)
        value = np.where(np.abs(cells) < F32(septa), F32(600.0), F32(-900.0))
        paint(vb, occ, value)


def _paint_skull_base(h: HeadParams, f: Fields, vol, block, iso) -> None:
    """Petrous bones (very dense) with mastoid air cells lateral to them."""
    x, y, z = f.x, f.y, f.z
    # clivus: from the dorsum sellae down to the foramen magnum
    p1, p2 = np.array([0.0, -4.0, h.z_mf + 10.0]), np.array([0.0, 10.0, h.z_pf - 6.0])
    bl = block((p1 + p2) / 2, np.linalg.norm(p2 - p1) / 2 + 12)
    if bl is not None:
        d = capsule(x[bl], y[bl], z[bl], p1, p2, (7.0, 6.0))
        np.maximum(d, -f.cavity[bl], out=d)
        paint(vol[bl], soft_occupancy(d, iso), F32(h.diploe_hu + 200.0))
    for side in (-1, 1):
        p1, p2 = petrous_segment(h, side)
        bl = block((p1 + p2) / 2, np.linalg.norm(p2 - p1) / 2 + 12)
        if bl is not None:
            d = capsule(x[bl], y[bl], z[bl], p1, p2, (9.0, 5.0))
            paint(vol[bl], soft_occupancy(d, iso), F32(h.table_hu + 250.0))
            # inner ear: small fluid/air spaces inside the petrous bone
            ie = p1 + 0.45 * (p2 - p1)
            paint(vol[bl], soft_occupancy(sphere(x[bl], y[bl], z[bl], ie, 2.5), iso), F32(20.0))
        mast = np.array([side * (h.a - 4.0), h.y_pr + 0.5 * (h.a - 16.0) + 12.0, h.z_mf - 6.0])
        bl = block(mast, 14.0)
        if bl is not None:
            xb, yb, zb = x[bl], y[bl], z[bl]
            occ = soft_occupancy(ellipsoid(xb, yb, zb, mast, (9.0, 10.0, 11.0)), iso)
            occ *= np.clip(f.cavity[bl] * F32(0.5), 0.0, 1.0)
            cells = wave_field(xb, yb, zb, *h.diploe_tex)
            paint(vol[bl], occ, np.where(np.abs(cells) < F32(0.35), F32(900.0), F32(-850.0)))


def _paint_deep(h: HeadParams, f: Fields, vol, block, iso) -> None:
    """Deep grey nuclei and insular cortex (shifted with the midline)."""
    x, y, z = f.x, f.y, f.z
    shift = f.x_shift
    gm = F32(h.gm_hu - 1.0)
    vs = h.vent_scale
    for side in (-1, 1):
        parts = [
            ((side * (5.5 + 4.0 * vs), -18.0, 10.0), (4.5, 9.0, 7.0), None),  # caudate head
            ((side * 23.0, -4.0, -2.0), (6.0, 15.0, 9.0), _rz(side * -12)),  # lentiform
            ((side * 10.0, 10.0, 1.0), (8.0, 12.0, 8.5), None),  # thalamus
            ((side * 36.0, -2.0, -5.0), (2.6, 23.0, 14.0), None),  # insular cortex
        ]
        for c, semi, rot in parts:
            bl = block(c, max(semi) + 3)
            if bl is None:
                continue
            xs = x[bl] if shift is None else shift[bl]
            d = ellipsoid(xs, y[bl], z[bl], c, semi, rot)
            np.maximum(d, f.brain[bl], out=d)
            paint(vol[bl], soft_occupancy(d, iso), gm)


def _paint_brainstem(h: HeadParams, f: Fields, vol, block, iso) -> None:
    x, y, z = f.x, f.y, f.z
    wm = F32(h.wm_hu + 3.0)
    c = (0.0, 9.0, -24.0)
    bl = block(c, 16.0)
    if bl is not None:  # midbrain
        xb, yb, zb = x[bl], y[bl], z[bl]
        d = np.maximum(np.sqrt(xb * xb + (yb - F32(9.0)) ** 2) - F32(11.0), np.abs(zb - F32(-23.0)) - F32(11.0))
        paint(vol[bl], soft_occupancy(d, iso), wm)
    c = (0.0, 16.0, h.z_pf + 20.0)
    bl = block(c, 18.0)
    if bl is not None:  # pons
        paint(vol[bl], soft_occupancy(ellipsoid(x[bl], y[bl], z[bl], c, (14.0, 10.5, 15.0)), iso), wm)
    p1, p2 = np.array([0.0, 20.0, h.z_pf + 8.0]), np.array([0.0, 24.0, h.z_pf - 40.0])
    bl = block((p1 + p2) / 2, 28.0)
    if bl is not None:  # medulla / cord
        paint(vol[bl], soft_occupancy(capsule(x[bl], y[bl], z[bl], p1, p2, 9.0), iso), wm)
    # the fourth ventricle and cisterna magna are CSF painted afterwards


def _paint_dura(h: HeadParams, f: Fields, vol, iso) -> None:
    """Falx cerebri and tentorium: thin dense dural sheets."""
    x, y, z = f.x, f.y, f.z
    falx = np.abs(x)  # the falx is anchored to the skull: it does not follow a midline shift at the top
    if f.x_shift is not None:
        frac = np.clip((F32(55.0) - z) * F32(1 / 40.0), 0.0, 1.0)
        falx = np.abs(x + frac * (f.x_shift - x))
    falx -= F32(0.5)
    np.maximum(falx, f.callosum + F32(4.0) - z, out=falx)
    np.maximum(falx, f.cavity + F32(0.5), out=falx)
    np.maximum(falx, -f.infratentorial, out=falx)
    paint(vol, soft_occupancy(falx, iso), F32(h.falx_hu))
    if float(z.min()) >= FLOOR_MAX_Z:
        return
    tent = np.abs(z - tentorium_z(h, x, y)) - F32(0.5)
    np.maximum(tent, petrous_ridge_y(h, np.abs(x)) - y, out=tent)
    # tentorial incisura: no dura around the midbrain
    inc = F32(1.0) - (x * x * F32(1 / 200.0) + (y - F32(8.0)) ** 2 * F32(1 / 500.0))
    np.maximum(tent, inc * F32(5.0), out=tent)
    np.maximum(tent, f.cavity + F32(0.5), out=tent)
    paint(vol, soft_occupancy(tent, iso), F32(h.falx_hu))
