"""The prediction stage: one study (DICOM folder or NIfTI) -> mask, DICOM SEG, report and overlays.

Modules:

* ``run`` - ``predict`` (``ichct predict``);
* ``batch`` - ``predict_batch`` (``ichct predict --batch``: a list of studies as Dask tasks);
* ``worker_models`` - models named by their folders and digests, loaded once per worker process;
* ``findings`` - the per-label findings of ``report.json``;
* ``seg_dicom`` - the predicted label map as a DICOM Segmentation;
* ``seg_sources`` - the source headers a DICOM SEG references;
* ``overlays`` - PNG key slices and probability plots;
* ``report_schema`` - the JSON Schema of ``report.json``;
* ``abc2`` - the bedside ABC/2 hematoma volume estimate.
"""

from __future__ import annotations

from typing import Any

from ichct.pipeline.core.exports import load_export

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "predict": "run",
    "predict_batch": "batch",
    "DISCLAIMER": "run",
    "build_findings": "findings",
    "write_seg_dicom": "seg_dicom",
    "SegSources": "seg_sources",
    "SegSourceError": "seg_sources",
    "complete_seg_sources": "seg_sources",
    "write_key_slice": "overlays",
    "write_probability_plot": "overlays",
    "REPORT_SCHEMA": "report_schema",
    "validate_report": "report_schema",
    "abc2_estimate": "abc2",
    "ABC2Estimate": "abc2",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name)
