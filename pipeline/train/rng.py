"""The random state of a training run: saved in every checkpoint, restored on ``--resume``.

Every RNG a run draws from (torch, NumPy, Python, CUDA, and each ``Randomizable`` augmentation of
the training transform) as tensors, ints and lists, so that a checkpoint holding it loads with
``torch.load(..., weights_only=True)`` and a resumed run draws what the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state", "reseed"]

logger = logging.getLogger("ichct.train")


def _randomizables(transform: Any) -> list[Any]:
    """Randomizable objects of a Compose in a fixed order (top level and their direct members)."""
    from monai.transforms import Compose, Randomizable

    out: list[Any] = []
    seen: set[int] = set()

    def visit(t: Any, depth: int) -> None:
        if id(t) in seen or depth > 3:
            return
        seen.add(id(t))
        if isinstance(t, Compose):
            for sub in t.transforms:
                visit(sub, depth + 1)
            return
        if isinstance(t, Randomizable):
            out.append(t)
        for value in vars(t).values() if hasattr(t, "__dict__") else ():
            if isinstance(value, Randomizable):
                visit(value, depth + 1)

    visit(transform, 0)
    return out


def _np_state_to_list(st: tuple) -> list[Any]:
    return [str(st[0]), torch.from_numpy(np.asarray(st[1], dtype=np.int64)), int(st[2]), int(st[3]), float(st[4])]


def _np_state_from_list(st: list[Any]) -> tuple:
    return (st[0], np.asarray(st[1].numpy(), dtype=np.uint32), int(st[2]), int(st[3]), float(st[4]))


def rng_state(transform: Any = None) -> dict[str, Any]:
    """Every RNG state as tensors / ints / floats / lists (``weights_only``-loadable).

    ``transform``: the training transform, whose ``Randomizable`` members' states are included.

    Examples
    --------
    >>> state = rng_state()
    >>> first = torch.rand(2)
    >>> set_rng_state(state)
    >>> bool(torch.equal(first, torch.rand(2)))
    True
    """
    py = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _np_state_to_list(np.random.get_state()),
        "python": [int(py[0]), [int(v) for v in py[1]], py[2]],
        "transforms": [_np_state_to_list(t.R.get_state()) for t in _randomizables(transform)] if transform else [],
    }
    if torch.cuda.is_available():
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def set_rng_state(state: Mapping[str, Any], transform: Any = None) -> None:
    """Restore what :func:`rng_state` saved (the augmentations' only when ``transform`` has as many)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(_np_state_from_list(state["numpy"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if transform is not None and state.get("transforms"):
        objs = _randomizables(transform)
        if len(objs) != len(state["transforms"]):
            logger.warning("augmentation RNG states do not match the transforms; not restored")
            return
        for t, st in zip(objs, state["transforms"]):
            t.R.set_state(_np_state_from_list(st))


def reseed(seed: int, transform: Any = None) -> None:
    """Seed every RNG (MONAI's ``set_determinism``) and the augmentations of ``transform`` with ``seed``."""
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    if transform is not None:
        transform.set_random_state(seed=seed)
