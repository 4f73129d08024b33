"""MONAI model bundles of ichct models: package, load, verify and export them.

Modules:

* ``package`` - ``package_bundle`` (``ichct bundle package``), ``refresh_bundle`` (``ichct bundle
  refresh``) and ``load_bundle``;
* ``configs`` - the bundle's MONAI configs, generated from a run's resolved config: every
  transform its own entry (the specs of :mod:`ichct.pipeline.models.data`);
* ``components`` - the ``_target_`` components of those configs besides MONAI's and the transforms;
* ``evaluation`` - what ``evaluate.json`` runs besides MONAI's evaluator: leakage guard, per-case rows, report;
* ``network`` - the bundles' network definitions (``network_def``);
* ``docs`` - ``metadata.json``, ``docs/README.md`` (from ``templates/``), the licenses; ``steps`` -
  the configs' steps in words for the README;
* ``verify`` - ``verify_bundle`` (``ichct bundle verify``), against ``schema/``;
* ``export`` - ``export_bundle`` (``ichct bundle export``), with the code written by ``vendor``;
* ``code`` - the ichct modules a bundle's configs import; ``prune`` - the definitions they reach;
  ``vendor`` - those definitions written into an export's ``scripts/``.
"""

from __future__ import annotations

from typing import Any

from ichct.pipeline.core.exports import load_export

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "package_bundle": "package",
    "refresh_bundle": "package",
    "load_bundle": "package",
    "load_model_dir": "package",
    "default_bundle_name": "package",
    "REQUIRED_FILES": "package",
    "bundle_configs": "configs",
    "verify_bundle": "verify",
    "format_table": "verify",
    "export_bundle": "export",
    "bundle_metadata": "docs",
    "bundle_readme": "docs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name)
