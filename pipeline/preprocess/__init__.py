"""The preprocessing stage: the persistent preprocessed cache (``ichct preprocess``, ``ichct train --cache-dir``).

Modules:

* ``cache`` - one study's cache entry (the deterministic prefix of the training transforms, on
  disk, keyed by the input files' content and the preprocessing config) and the streaming dataset;
* ``plans`` - which entries a model kind reads (its plans) and the data items they are built from;
* ``run`` - ``preprocess(manifest, kind, cache_dir)``: every study's entry as a Dask task.
"""

from __future__ import annotations

from typing import Any

from ichct.pipeline.core.exports import load_export

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "CachePlan": "cache",
    "DiskCacheDataset": "cache",
    "build_entry": "cache",
    "ensure_entry": "cache",
    "load_entry": "cache",
    "entry_name": "cache",
    "cache_plans": "plans",
    "cache_items": "plans",
    "preprocess": "run",
    "preprocess_tasks": "run",
    "PreprocessReport": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name)
