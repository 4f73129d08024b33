"""The evaluation stage: ``evaluate(...)`` runs models on a manifest split and writes the report.

Modules:

* ``run`` - ``evaluate`` itself (``ichct evaluate``);
* ``predictors`` - a model under evaluation: ichct's runs/bundles or another tool's predictions;
* ``external`` (and ``external_*``) - another tool's predictions (``ichct evaluate --predictions``):
  label maps, probability CSVs, matching, thresholds, the leakage guard;
* ``compare`` - paired comparisons of two models or two decision rules;
* ``metrics_ct`` - CT-level metrics: ROC/PR AUC, RSNA log loss, calibration;
* ``metrics_seg`` - segmentation metrics per study and their summaries;
* ``lesions`` - what a lesion is for the lesion-level metrics, and one study's lesion counts;
* ``metrics_schema`` - the JSON Schema of ``metrics.json``;
* ``bootstrap`` - patient-level bootstrap confidence intervals;
* ``report`` - ``metrics.json``, ``per_case.csv``, ``report.md`` and the plots.

``ichct.pipeline.evaluate.evaluate`` is the name the published bundles' ``evaluate.json`` uses.
"""

from __future__ import annotations

from typing import Any

from ichct.pipeline.core.exports import load_export

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "evaluate": "run",
    "EvaluationOverlapError": "run",
    "ExternalOptions": "external",
    "LesionDefinition": "lesions",
    "ct_level_metrics": "metrics_ct",
    "segmentation_case_metrics": "metrics_seg",
    "segmentation_summary": "metrics_seg",
    "METRICS_SCHEMA": "metrics_schema",
    "validate_metrics": "metrics_schema",
    "bootstrap_ci": "bootstrap",
    "paired_bootstrap": "bootstrap",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name)
