"""Signed-distance building blocks (mm, negative inside) and partial-volume painting.

All functions take float32 coordinate arrays of any (matching) shape and return float32 arrays.
Distances of ellipsoids are first-order approximations (exact on the surface, good within a few
centimetres of it), which is all that edges and layered shells need.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
EPS = F32(1e-6)


def soft_occupancy(d: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Fraction of a voxel inside a surface at signed distance ``d`` (linear ramp of ``width``)."""
    out = np.divide(d, width, dtype=np.float32) if np.ndim(width) else d * F32(1.0 / float(width))
    np.subtract(F32(0.5), out, out=out)
    return np.clip(out, 0.0, 1.0, out=out)


def slab_occupancy(d: np.ndarray, inner: float | np.ndarray, outer: float | np.ndarray,
                   width: float | np.ndarray) -> np.ndarray:
    """Fraction of a voxel inside the slab ``inner < d < outer`` of a distance field ``d``.

    The voxel's footprint is the linear ramp of ``width`` along ``d`` of :func:`soft_occupancy`;
    the slab's share of it is the difference of the two faces' ramps. A slab thinner than the
    footprint thus keeps its true partial-volume weight ``(outer - inner) / width`` (the integral
    over ``d`` is the slab's thickness), where ``soft_occupancy(shell(d, inner, outer), width)``
    reaches only about one half at any thickness below the footprint.

    Parameters
    ----------
    d : np.ndarray
        Distance field (mm), float32.
    inner, outer : float or np.ndarray
        The slab's faces (``inner < outer``; an empty slab gives 0).
    width : float or np.ndarray
        Footprint of the voxel along ``d`` (mm), as for :func:`soft_occupancy`.

    Returns
    -------
    np.ndarray
        Occupancy in [0, 1], float32, the shape of ``d``.

    Example
    -------
    A 0.1 mm plate seen by 1 mm voxels: a tenth of the voxel at the plate, nothing 1 mm away,
    where the min-of-ramps of a shell gives more than half:

    >>> d = np.array([-1.0, 0.0, 1.0], dtype=np.float32)
    >>> [round(float(v), 3) for v in slab_occupancy(d, -0.05, 0.05, 1.0)]
    [0.0, 0.1, 0.0]
    >>> round(float(soft_occupancy(shell(d, -0.05, 0.05), 1.0)[1]), 3)
    0.55
    """
    out = soft_occupancy(np.subtract(d, outer, dtype=np.float32), width)
    out -= soft_occupancy(np.subtract(d, inner, dtype=np.float32), width)
    return np.maximum(out, F32(0.0), out=out)


def paint(vol: np.ndarray, occupancy: np.ndarray, value: float | np.ndarray) -> None:
    """Blend ``value`` into ``vol`` in place by ``occupancy`` (partial-volume painter's step)."""
    delta = np.subtract(value, vol, dtype=np.float32)
    delta *= occupancy
    vol += delta


def shell(d: np.ndarray, inner: float | np.ndarray, outer: float | np.ndarray) -> np.ndarray:
    """Signed distance of the shell ``inner < d < outer`` of a distance field ``d``."""
    a = np.subtract(inner, d, dtype=np.float32)
    b = np.subtract(d, outer, dtype=np.float32)
    return np.maximum(a, b, out=a)


def local(x, y, z, centre, rot: np.ndarray | None = None):
    """Coordinates relative to ``centre``, optionally rotated into a local frame (``rot`` rows)."""
    dx = x - F32(centre[0])
    dy = y - F32(centre[1])
    dz = z - F32(centre[2])
    if rot is None:
        return dx, dy, dz
    r = np.asarray(rot, dtype=np.float32)
    return (r[0, 0] * dx + r[0, 1] * dy + r[0, 2] * dz,
            r[1, 0] * dx + r[1, 1] * dy + r[1, 2] * dz,
            r[2, 0] * dx + r[2, 1] * dy + r[2, 2] * dz)


def ellipsoid(x, y, z, centre, semi, rot: np.ndarray | None = None, slice_dir: np.ndarray | None = None):
    """Approximate signed distance to an ellipsoid (and, with ``slice_dir``, ``|n . slice_dir|``).

    ``rot`` rows are the ellipsoid's axes in head coordinates. Returns ``d`` or ``(d, cos)``.
    """
    u, v, w = local(x, y, z, centre, rot)
    ax, ay, az = (F32(s) for s in semi)
    u /= ax
    v /= ay
    w /= az
    r = u * u
    r += v * v
    r += w * w
    np.sqrt(r, out=r)
    gu, gv, gw = u / ax, v / ay, w / az
    g = gu * gu
    g += gv * gv
    g += gw * gw
    np.sqrt(g, out=g)
    g += EPS
    d = r - F32(1.0)
    d *= r
    d /= g
    if slice_dir is None:
        return d
    s = np.asarray(slice_dir, dtype=float)
    if rot is not None:
        s = np.asarray(rot, dtype=float) @ s
    cos = gu * F32(s[0])
    cos += gv * F32(s[1])
    cos += gw * F32(s[2])
    cos /= g
    np.abs(cos, out=cos)
    return d, cos


def sphere(x, y, z, centre, radius: float) -> np.ndarray:
    u, v, w = local(x, y, z, centre)
    d = u * u
    d += v * v
    d += w * w
    np.sqrt(d, out=d)
    d -= F32(radius)
    return d


def capsule(x, y, z, p1, p2, radius: float | tuple[float, float]) -> np.ndarray:
    """Distance to a segment ``p1``-``p2`` minus a radius (linearly varying when a pair is given)."""
    p1 = np.asarray(p1, dtype=float)
    p2 = np.asarray(p2, dtype=float)
    axis = p2 - p1
    length2 = float(axis @ axis)
    u, v, w = local(x, y, z, p1)
    t = u * F32(axis[0] / length2)
    t += v * F32(axis[1] / length2)
    t += w * F32(axis[2] / length2)
    np.clip(t, 0.0, 1.0, out=t)
    u -= t * F32(axis[0])
    v -= t * F32(axis[1])
    w -= t * F32(axis[2])
    d = u * u
    d += v * v
    d += w * w
    np.sqrt(d, out=d)
    if isinstance(radius, tuple):
        d -= F32(radius[0]) + t * F32(radius[1] - radius[0])
    else:
        d -= F32(radius)
    return d


def wave_field(x, y, z, k: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Band-limited random field: ``sqrt(2/K) * sum cos(k_i . p + phase_i)`` (unit variance)."""
    out = np.zeros(np.shape(x), dtype=np.float32)
    for kv, ph in zip(k, phase):
        arg = x * F32(kv[0])
        arg += y * F32(kv[1])
        arg += z * F32(kv[2])
        arg += F32(ph)
        np.cos(arg, out=arg)
        out += arg
    out *= F32(np.sqrt(2.0 / max(len(k), 1)))
    return out


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> None:
    """``a = smin(a, b)`` in place: a minimum blended over ``k`` mm (merges touching shapes smoothly)."""
    hh = np.abs(a - b)
    np.subtract(F32(k), hh, out=hh)
    np.maximum(hh, F32(0.0), out=hh)
    hh *= hh
    hh *= F32(0.25 / k)
    np.minimum(a, b, out=a)
    a -= hh


def sigmoid(t: np.ndarray) -> np.ndarray:
    """Logistic function, float32 (``0.5 * (1 + tanh(t / 2))``)."""
    out = np.multiply(t, F32(0.5), dtype=np.float32)
    np.tanh(out, out=out)
    out += F32(1.0)
    out *= F32(0.5)
    return out


def random_rotation(gen: np.random.Generator, max_deg: float = 180.0) -> np.ndarray:
    """A random rotation matrix (rows = local axes) with angles up to ``max_deg`` about each axis."""
    a, b, c = np.radians(gen.uniform(-max_deg, max_deg, 3))
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    rx = np.array([[1.0, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1.0, 0], [-np.sin(c), 0, np.cos(c)]])
    return ry @ rx @ rz
