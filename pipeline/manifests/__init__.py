"""Patient-level split manifests (MONAI datalist JSON) and dataset adapters.

* :func:`build_manifest` (``ichct manifest build``): a data set -> a manifest whose folds and test
  set share no patient, series or pixel data, stratified by CT-level labels.
* :func:`check_manifests` (``ichct manifest check``): leakage, missing/unreadable files and label
  grids, within and across manifests.
* :func:`merge_manifests` (``ichct manifest merge``): several manifests -> one, each study in its
  own split and fold, the inputs checked together first.
* :func:`load_manifest`: what training code uses; refuses a manifest that fails the checks.
* :func:`export_nnunet` (``ichct manifest export-nnunet``): a manifest -> an nnU-Net v2 raw
  dataset with the manifest's folds as ``splits_final.json`` and a case map back to the studies.

The format is described by ``schema.json`` (:func:`manifest_schema`) and in
``data_manifests/README.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .build import build_manifest
from .check import AFFINE_TOL_MM, CheckReport, ManifestDoc, check_documents, read_manifest
from .errors import ManifestError
from .hashing import HashCache
from .loader import load_manifest
from .merge import merge_manifests
from .model import LABEL_NAMES, SOURCES, SUBTYPES, UNKNOWN, Record
from .nnunet_export import NnunetExport, export_nnunet
from .schema import manifest_schema, schema_problems, validate_manifest


def check_manifests(paths: Sequence[str | Path], **kwargs) -> CheckReport:
    """Check manifest files alone and against each other (see :func:`check_documents`)."""
    return check_documents([read_manifest(p) for p in paths], **kwargs)


__all__ = [
    "AFFINE_TOL_MM",
    "CheckReport",
    "HashCache",
    "LABEL_NAMES",
    "ManifestDoc",
    "ManifestError",
    "NnunetExport",
    "Record",
    "SOURCES",
    "SUBTYPES",
    "UNKNOWN",
    "build_manifest",
    "check_documents",
    "check_manifests",
    "export_nnunet",
    "load_manifest",
    "manifest_schema",
    "merge_manifests",
    "read_manifest",
    "schema_problems",
    "validate_manifest",
]
