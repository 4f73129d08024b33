"""ichct: find intracranial hemorrhage in head CT with MONAI.

The installed namespace is ``ichct``; its sub-packages are

- ``ichct.transforms``: DICOM series reading and MONAI preprocessing transforms,
- ``ichct.networks``: the segmentation and slice-sequence classification networks,
- ``ichct.pipeline``: the stages (ingest, train, predict, evaluate) and the ``ichct`` CLI;

and ``ichct.errors`` holds :class:`~ichct.errors.IchctError`, the base of every error about bad
input (the CLI exits 1 on it; any other exception is a bug and exits 70).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
