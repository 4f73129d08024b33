"""Shared helpers of every stage: atomic writes, the compute device, logging, the label vocabulary, files.

Modules:

* ``atomic`` - write files and folders so that a crash never leaves a partial output;
* ``devices`` - the torch device a stage runs on, checked before any work;
* ``logging_setup`` - logging of the CLI commands (verbosity, known library warnings);
* ``labels`` - the hemorrhage label names (``LABEL_NAMES``: "any" + 5 subtypes; ``SUBTYPES``);
* ``files`` - small file helpers (``sha256_file``);
* ``weights`` - model weights: checkpoints read (``weights_only``) and written atomically, state dicts unwrapped;
* ``exports`` - the lazy ``__getattr__`` behind every stage package's exports;
* ``cluster`` - the Dask cluster cohort work runs on (a LocalCluster or a user's scheduler);
* ``study_tasks`` - one Dask task per study, results written atomically with completion records.
"""

from __future__ import annotations

from typing import Any

from .exports import load_export

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "atomic_path": "atomic",
    "write_json_atomic": "atomic",
    "temp_dir_beside": "atomic",
    "replace_dir": "atomic",
    "torch_device": "devices",
    "configure_logging": "logging_setup",
    "hide_known_library_warnings": "logging_setup",
    "verbosity_of": "logging_setup",
    "LABEL_NAMES": "labels",
    "SUBTYPES": "labels",
    "LABEL_VALUES": "labels",
    "sha256_file": "files",
    "load_export": "exports",
    "ClusterSpec": "cluster",
    "ClusterError": "cluster",
    "dask_client": "cluster",
    "StudyTask": "study_tasks",
    "run_study_tasks": "study_tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name)
