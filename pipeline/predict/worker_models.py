"""Models named by where they come from, loaded once per process: what cohort tasks ship to Dask workers.

``predict --batch`` and ``evaluate`` run one Dask task per study. A task never carries a loaded
network (pickling weights from the client for every study would cost more than the inference);
it carries :class:`ModelSource` records (a run folder and checkpoint, or a bundle folder, with
the digest of their files) and calls :func:`load_sources`, which loads them once per worker
process and keeps them in a module-level cache keyed by the sources (paths and digests), so every
later study on that worker reuses them.

Examples
--------
>>> src = ModelSource("run", "/runs/seg0", kind="seg", checkpoint="best", digest="abc")
>>> ModelSource.from_json(src.to_json()) == src
True
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ichct.pipeline.core.study_tasks import content_key

__all__ = ["ModelSource", "model_source", "model_files", "load_sources", "remember_loaded"]

#: Loaded model sets per process, keyed by their sources; a few sets at most (a worker serves one cohort).
_LOADED: dict[tuple[ModelSource, ...], list[Any]] = {}
_LOCK = threading.Lock()
_MAX_SETS = 4


@dataclass(frozen=True)
class ModelSource:
    """Where one model comes from.

    Parameters
    ----------
    source
        ``"run"`` (an ``ichct train`` folder) or ``"bundle"`` (a model bundle folder).
    path
        The folder (absolute).
    kind
        ``"seg"`` or ``"cls"``.
    checkpoint
        ``best`` or ``last`` (runs).
    device
        ``cpu`` or ``cuda``.
    digest
        Content digest of the files the model is loaded from (:func:`model_files`).
    """

    source: str
    path: str
    kind: str = ""
    checkpoint: str = "best"
    device: str = "cpu"
    digest: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (inverse: :meth:`from_json`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelSource:
        """The source of a :meth:`to_json` dict."""
        return cls(**dict(data))

    def identity(self) -> dict[str, str]:
        """What the model's results depend on (no path, no device): kind, source, checkpoint, digest."""
        return {"kind": self.kind, "source": self.source, "checkpoint": self.checkpoint, "digest": self.digest}


def model_files(source: str, folder: str | Path, checkpoint: str = "best") -> list[str]:
    """The files a model is loaded from: a run's ``config.json``, checkpoint and ``thresholds.json``,
    or every file of a bundle (caches excluded).

    Examples
    --------
    >>> model_files("run", "/nonexistent")
    []
    """
    folder = Path(folder)
    if source == "run":
        names = ("config.json", f"{checkpoint}.pt", "thresholds.json")
        return [str(folder / n) for n in names if (folder / n).is_file()]
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def model_source(model: Any) -> ModelSource:
    """The :class:`ModelSource` of a loaded model (``load_run`` or ``load_bundle``), with its files' digest."""
    bundle_dir = getattr(model, "bundle_dir", None)
    source, folder = ("bundle", Path(bundle_dir)) if bundle_dir is not None else ("run", Path(model.run_dir))
    folder = folder.resolve()
    digest = content_key(model_files(source, folder, model.checkpoint))[0]
    return ModelSource(source, str(folder), kind=model.kind, checkpoint=model.checkpoint, device=str(model.device),
                       digest=digest)


def _load(src: ModelSource) -> Any:
    if src.source == "bundle":
        from ichct.pipeline.bundle.package import load_bundle

        return load_bundle(src.path, device=src.device)
    from ichct.pipeline.models.inference import load_run

    return load_run(src.path, device=src.device, checkpoint=src.checkpoint)


def load_sources(sources: Sequence[ModelSource]) -> list[Any]:
    """The loaded models of ``sources``: loaded at the first call in this process, then reused.

    Examples
    --------
    >>> load_sources([])
    []
    """
    key = tuple(sources)
    with _LOCK:
        if key not in _LOADED:
            if len(_LOADED) >= _MAX_SETS:
                _LOADED.clear()
            _LOADED[key] = [_load(s) for s in key]
        return list(_LOADED[key])


def remember_loaded(sources: Sequence[ModelSource], models: Sequence[Any]) -> None:
    """Put models this process already loaded under their sources (work run in-process reuses them)."""
    with _LOCK:
        _LOADED[tuple(sources)] = list(models)
