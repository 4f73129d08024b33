"""The model weights inside a ``torch.load`` result: a plain state dict or a training checkpoint.

``ichct train`` checkpoints hold ``{"model": state dict, "epoch": ..., ...}``; bundles and other
tools' files hold the state dict itself. Every stage that reads weights (loading a run or bundle,
``--init-weights``, packaging, verifying, exporting) reads them with :func:`load_checkpoint`
and unwraps them with :func:`model_state_dict`; training writes them with
:func:`save_checkpoint_atomic`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ichct.errors import USER_PATH_ERRORS, InputError
from ichct.pipeline.core.atomic import atomic_path

__all__ = ["model_state_dict", "load_checkpoint", "save_checkpoint_atomic"]


def save_checkpoint_atomic(obj: Mapping[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace``: never a partial file.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "last.pt"
    >>> save_checkpoint_atomic({"model": {"w": torch.zeros(2)}, "epoch": 3}, path)
    >>> load_checkpoint(path)["epoch"], sorted(p.name for p in path.parent.iterdir())
    (3, ['last.pt'])
    """
    buf = io.BytesIO()
    torch.save(dict(obj), buf)
    with atomic_path(path, suffix=".pt") as tmp:
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a ``torch.save`` file with ``weights_only=True`` (a checkpoint of :func:`save_checkpoint_atomic` or any other).

    A file that torch cannot read (truncated, not a checkpoint, objects other than tensors and
    plain containers) raises :class:`~ichct.errors.InputError` naming it; a missing one
    ``FileNotFoundError``.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except USER_PATH_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - RuntimeError (not a zip), UnpicklingError, EOFError, ...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(path, f"not a readable PyTorch checkpoint ({type(exc).__name__}"
                               f"{': ' + detail if detail else ''})") from exc


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
