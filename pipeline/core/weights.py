"""The model weights inside a ``torch.load`` result: a plain state dict or a training checkpoint.

``ichct train`` checkpoints hold ``{"model": state dict, "epoch": ..., ...}``; bundles and other
tools' files hold the state dict itself. Every stage that reads weights (loading a run or bundle,
``--init-weights``, packaging, verifying, exporting) unwraps them here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ichct.errors import InputError

__all__ = ["model_state_dict"]


def model_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a plain state dict or a training checkpoint (``{"model": ...}``).

    Parameters
    ----------
    obj
        What ``torch.load`` returned for ``path``.
    path
        The file it came from (named in the error).

    Returns
    -------
    dict
        Parameter name -> tensor.

    Raises
    ------
    ichct.errors.InputError
        ``obj`` is neither (not a non-empty mapping of tensors).

    Examples
    --------
    >>> import torch
    >>> sorted(model_state_dict({"model": {"w": torch.zeros(1)}, "epoch": 3}, "best.pt"))
    ['w']
    >>> model_state_dict({"epoch": 3}, "best.pt")
    Traceback (most recent call last):
    ...
    ichct.errors.InputError: best.pt: not a model state dict (or a checkpoint with a 'model' entry)
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, "not a model state dict (or a checkpoint with a 'model' entry)")
    return dict(obj)
