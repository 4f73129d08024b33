"""Ground truth from a voxel label map: the NIfTI file, per-slice and per-study labels, volumes.

The label map lives on the grid ``ichct convert`` produces for the series (``[k, j, i]`` arrays
internally, written as ``(i, j, k)`` with the RAS affine). A slice is positive for a subtype when
at least one of its voxels carries that label; "any" is the union of the subtypes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from ichct.pipeline.core.atomic import atomic_path
from ichct.transforms.dicom.geometry import lps_to_ras

from .config import LABEL_NAMES, LABEL_VALUES, SUBTYPES
from .grid import Grid


def nifti_bytes(label_kji: np.ndarray, grid: Grid) -> bytes:
    """Gzipped NIfTI-1 of a label map (uint8, qform = sform = RAS affine, code 1). Deterministic."""
    data = np.ascontiguousarray(label_kji.astype(np.uint8, copy=False)).transpose(2, 1, 0)
    affine = lps_to_ras(grid.affine)
    img = nib.Nifti1Image(data, affine)
    header = img.header
    header.set_data_dtype(np.uint8)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b"ichct synth ICH labels"
    header["intent_name"] = b"LABELS"
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def write_label_map(path: str | Path, label_kji: np.ndarray, grid: Grid) -> Path:
    """Write the label map atomically; returns the path."""
    path = Path(path)
    payload = nifti_bytes(label_kji, grid)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path


def slice_labels(label_kji: np.ndarray) -> list[list[int]]:
    """Per slice (along the convert grid's slice axis): ``[any, epidural, ..., subdural]`` as 0/1."""
    nk = label_kji.shape[0]
    present = np.zeros((nk, len(SUBTYPES)), dtype=np.int64)
    flat = label_kji.reshape(nk, -1)
    for n, name in enumerate(SUBTYPES):
        present[:, n] = (flat == LABEL_VALUES[name]).any(axis=1)
    any_ = present.max(axis=1, keepdims=True)
    return np.concatenate([any_, present], axis=1).astype(int).tolist()


def study_labels(slices: list[list[int]]) -> dict[str, int]:
    """Study-level labels: a label is 1 when any slice has it."""
    arr = np.asarray(slices, dtype=int).reshape(-1, len(LABEL_NAMES))
    return {name: int(arr[:, n].max()) if arr.size else 0 for n, name in enumerate(LABEL_NAMES)}


def volumes_ml(label_kji: np.ndarray, grid: Grid) -> dict[str, float]:
    """Volume of each label (and of any blood) in mL."""
    voxel_ml = abs(float(np.linalg.det(grid.affine[:3, :3]))) / 1000.0
    counts = np.bincount(label_kji.reshape(-1), minlength=len(SUBTYPES) + 1)
    out = {"any": round(float(counts[1:].sum()) * voxel_ml, 4)}
    for name in SUBTYPES:
        out[name] = round(float(counts[LABEL_VALUES[name]]) * voxel_ml, 4)
    return out


def csv_rows(sop_uids: list[str], slices: list[list[int]]) -> list[str]:
    """RSNA-style rows ``ID_<SOPInstanceUID>_<label>,<0|1>`` for each slice and label."""
    rows = []
    for uid, values in zip(sop_uids, slices):
        for name, v in zip(LABEL_NAMES, values):
            rows.append(f"ID_{uid}_{name},{int(v)}")
    return rows
