"""The ensembling stage: several trained segmenters, or classifiers, as one model (``ichct ensemble``).

Modules:

* ``assemble`` - :func:`assemble_ensemble`: a run folder whose network averages the members'
  probabilities, which every later stage (postprocess, evaluate, bundle, predict) takes as
  one model.
"""

from __future__ import annotations

from typing import Any

from ichct.pipeline.core.exports import load_export

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "assemble_ensemble": "assemble",
    "check_members": "assemble",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name)
