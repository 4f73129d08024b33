"""Lazy package exports: a stage package names its public API without importing its modules up front.

A stage's ``__init__`` lists ``{name: submodule}`` and defines ``__getattr__`` with :func:`load_export`;
``from ichct.pipeline.train import train`` then imports ``ichct.pipeline.train.engine`` on first use,
so importing one light module of a stage (``ichct.pipeline.core.labels``) stays as light as it was.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["load_export"]


def load_export(package: str, exports: Mapping[str, str], name: str) -> Any:
    """The object ``name`` of ``package``, from the submodule ``exports[name]`` (relative to the package).

    Raises :class:`AttributeError` for a name the package does not export (as a missing attribute would).
    """
    if name not in exports:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module, _, attr = exports[name].partition(":")
    return getattr(importlib.import_module(f".{module}", package), attr or name)
