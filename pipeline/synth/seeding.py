"""Deterministic random streams and DICOM UIDs, derived from the cohort seed.

Every random draw of the generator comes from ``rng(seed, ...)`` with a key naming what it is for
(patient index, study index, purpose), so that results do not depend on the number of worker
processes or on the order in which patients are generated.
"""

from __future__ import annotations

import zlib

import numpy as np
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

UID_PREFIX = PYDICOM_ROOT_UID  # "1.2.826.0.1.3680043.8.498."


def _key(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode("utf-8"))
    return int(part)


def rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator for one purpose: ``rng(seed, "patient", 3)`` is always the same stream."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(_key(k) for k in keys)]))


def make_uid(seed: int, *parts: int | str) -> str:
    """A valid DICOM UID that depends only on the seed and ``parts`` (reruns give the same UID)."""
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=["ichct-synth", str(int(seed)), *(str(p) for p in parts)]))


def stratified_flags(gen: np.random.Generator, n: int, p: float) -> np.ndarray:
    """``n`` booleans with ``floor(n*p)`` or ``ceil(n*p)`` True (randomised rounding), shuffled."""
    count = int(np.floor(n * p + gen.random()))
    flags = np.zeros(n, dtype=bool)
    flags[:min(count, n)] = True
    gen.shuffle(flags)
    return flags


def stratified_choice(gen: np.random.Generator, n: int, shares: dict[str, float]) -> list[str]:
    """``n`` category names whose counts follow ``shares`` as closely as possible, shuffled."""
    names = list(shares)
    weights = np.asarray([max(0.0, shares[k]) for k in names], dtype=float)
    weights = weights / weights.sum()
    exact = weights * n
    counts = np.floor(exact).astype(int)
    remainder = exact - counts
    # hand the leftover items to the largest remainders, ties broken at random
    order = np.lexsort((gen.random(len(names)), -remainder))
    for idx in order[: n - int(counts.sum())]:
        counts[idx] += 1
    out = [name for name, c in zip(names, counts) for _ in range(int(c))]
    gen.shuffle(out)
    return out


def stratified_subtypes(gen: np.random.Generator, n: int, probs: dict[str, float]) -> list[set[str]]:
    """Subtype sets for ``n`` positive studies.

    Each subtype is held by a stratified share ``probs[s]`` of the studies (Latin-hypercube style:
    one uniform draw per study in its own stratum), independently between subtypes; a study left
    with none gets one subtype drawn in proportion to ``probs``.
    """
    names = list(probs)
    out: list[set[str]] = [set() for _ in range(n)]
    if n == 0:
        return out
    for name in names:
        u = (gen.permutation(n) + gen.random(n)) / n
        for i in np.nonzero(u < probs[name])[0]:
            out[int(i)].add(name)
    weights = np.asarray([probs[k] for k in names], dtype=float)
    weights = weights / weights.sum()
    for s in out:
        if not s:
            s.add(names[int(gen.choice(len(names), p=weights))])
    return out
