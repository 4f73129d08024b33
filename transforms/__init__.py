"""MONAI transforms for head CT: DICOM series loading and preprocessing.

This package never imports :mod:`ichct.pipeline`. Names are imported lazily so that the DICOM
reader (``ichct.transforms.dicom``) can be used without importing MONAI and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "DicomIngestError": "dicom",
    "DicomVolume": "dicom",
    "read_dicom_series": "dicom",
    "scan_folder": "dicom",
    "DicomSeriesReader": "io",
    "LoadDicomSeries": "io",
    "LoadDicomSeriesd": "io",
    "CropHead": "crop",
    "CropHeadd": "crop",
    "HeadSelector": "crop",
    "InPlaneHeadCrop": "crop",
    "InPlaneHeadCropd": "crop",
    "brain_mask": "crop",
    "head_mask": "crop",
    "voxel_spacing": "crop",
    "RemoveSmallComponents": "components",
    "RemoveSmallComponentsd": "components",
    "component_structure": "components",
    "large_component_mask": "components",
    "SuppressUncertainComponents": "confidence",
    "SuppressUncertainComponentsd": "confidence",
    "confident_component_mask": "confidence",
    "to_background": "confidence",
    "predicted_foreground": "confidence",
    "unit_interval": "confidence",
    "SuppressQuietSliceComponents": "slice_gate",
    "SuppressQuietSliceComponentsd": "slice_gate",
    "components_on_scored_slices": "slice_gate",
    "ReferenceBrainHU": "brain_reference",
    "ReferenceBrainHUd": "brain_reference",
    "brain_tissue_level": "brain_reference",
    "StripSkull": "skull_strip",
    "StripSkulld": "skull_strip",
    "DEFAULT_WINDOWS": "intensity",
    "HUWindow": "intensity",
    "HUWindowd": "intensity",
    "MultiWindow": "intensity",
    "MultiWindowd": "intensity",
    "LoadCT": "loading",
    "LoadCTd": "loading",
    "ImageLoadError": "loading",
    "ct_preprocess": "presets",
    "BloodLabels": "labels",
    "BloodLabelsd": "labels",
    "CheckSliceCountd": "labels",
    "CheckSameGridd": "labels",
    "labels_on_grid": "grid_labels",
    "ResampleToSpacing": "spatial",
    "ResampleToSpacingd": "spatial",
    "ToRAS": "spatial",
    "ToRASd": "spatial",
    "RandDictTwin": "domain",
    "RandHUOffset": "domain",
    "RandHUOffsetd": "domain",
    "RandHUNoise": "domain",
    "RandHUNoised": "domain",
    "RandSliceThickness": "domain",
    "RandSliceThicknessd": "domain",
    "add_hu": "domain",
    "simulate_slice_thickness": "domain",
    "RandPSFTail": "kernel_tail",
    "RandPSFTaild": "kernel_tail",
    "exponential_kernel": "kernel_tail",
    "psf_tail": "kernel_tail",
    "ReapplyStripd": "skull_strip",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
