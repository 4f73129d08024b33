"""Ingest stage: describe a DICOM folder and convert series to NIfTI volumes in HU.

``folder_info`` backs ``ichct info`` and ``convert_series`` / ``convert_all_series`` back
``ichct convert``. Outputs are written atomically: a failure never leaves a partial file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ichct.errors import InputError
from ichct.pipeline.core.atomic import atomic_path, write_json_atomic
from ichct.transforms.dicom import (
    DicomIngestError,
    DicomVolume,
    check_stand_in_stack,
    choose_default,
    group_series,
    read_dicom_series,
    readable_on_request,
    scan_folder,
    stack_geometry,
)

logger = logging.getLogger(__name__)


def folder_info(path: str | Path, workers: int | None = None) -> dict[str, Any]:
    """Describe every series in a DICOM folder and which one ``convert`` would choose.

    Returns a JSON-ready dict: ``{"folder", "n_files", "skipped": [...], "series": [...],
    "default_series_uid"}``. No patient identifiers are included.
    """
    scan = scan_folder(path, workers=workers)
    groups = group_series(scan.headers)
    default = choose_default(groups)
    series = []
    for g in groups:
        summary = g.summary()
        summary["default"] = default is not None and g.group_id == default.group_id
        summary.update(_geometry_summary(scan.root, g))
        series.append(summary)
    return {
        "folder": str(path),
        "n_files": scan.n_files_seen,
        "skipped": [{"file": s.path, "reason": s.reason} for s in scan.skipped],
        "series": series,
        "default_series_uid": default.group_id if default else None,
    }


def _geometry_summary(root: str | Path, group) -> dict[str, Any]:
    """Tilt, gaps and spacing regularity of a group, from headers alone (empty when not a stack), and
    ``refused``: why ``convert`` would refuse it as one stack (a stand-in series mixing several), else None."""
    headers = group.headers
    if len(headers) < 2 or any(h.image_position_mm is None or h.image_orientation is None or h.pixel_spacing_mm is None for h in headers):
        return {"tilt_deg": None, "uniform_spacing": None, "missing_slices": None, "duplicate_positions": None,
                "refused": None}
    geometry = stack_geometry(headers)
    try:
        check_stand_in_stack(root, group.series_uid, geometry, headers)
        refused = None
    except DicomIngestError as exc:
        refused = exc.reason
    return {
        "tilt_deg": round(float(geometry.tilt_deg), 3),
        "uniform_spacing": bool(geometry.uniform),
        "missing_slices": int(sum(g["missing_slices"] for g in geometry.gaps)),
        "duplicate_positions": len(geometry.duplicates),
        "refused": refused,
    }


def sidecar_path(nifti_path: str | Path) -> Path:
    """``out.nii.gz`` -> ``out.json`` (the BIDS-style sidecar next to the volume)."""
    p = Path(nifti_path)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + ".json")
    return p.with_name(name + ".json")


def nifti_image(volume: DicomVolume) -> nib.Nifti1Image:
    """The NIfTI image ``ichct convert`` writes for a volume: HU in the reader's dtype, RAS affine.

    An orthogonal affine goes into both qform and sform (code 1, scanner). A sheared affine (gantry
    tilt kept with ``--no-tilt-correction``) cannot be a qform: it is stored as the sform only,
    with qform code 0, so readers that honour the sform (nibabel, ITK >= 5.x via sform) keep it.
    """
    affine = volume.affine_ras
    data = volume.hu_volume
    img = nib.Nifti1Image(data, affine)
    header = img.header
    header.set_data_dtype(data.dtype)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b"ichct HU volume"
    set_nifti_geometry(img, affine)
    if data.dtype == np.int16:
        header.set_slope_inter(1.0, 0.0)
    return img


def write_nifti(volume: DicomVolume, out_path: str | Path) -> Path:
    """Write a volume as NIfTI in RAS world coordinates (:func:`nifti_image`), plus its JSON sidecar, atomically."""
    out_path = Path(out_path)
    if not (out_path.name.endswith(".nii.gz") or out_path.name.endswith(".nii")):
        raise InputError(out_path, "output must end in .nii.gz or .nii")
    img = nifti_image(volume)
    sidecar = sidecar_path(out_path)
    with atomic_path(out_path) as tmp:
        nib.save(img, tmp)
        write_json_atomic(sidecar, volume.info)
    return out_path


def _is_orthogonal(affine: np.ndarray, tol: float = 1e-4) -> bool:
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    gram = axes.T @ axes
    return bool(np.allclose(gram, np.eye(3), atol=tol))


def set_nifti_geometry(img: nib.Nifti1Image, affine_ras: np.ndarray) -> None:
    """The NIfTI geometry convention of every file ichct writes on a series grid.

    sform code 1 always; qform code 1 when the axes are orthogonal, else qform code 0 (a qform
    cannot hold the shear of an uncorrected gantry tilt), so every reader lands on the sform.
    """
    affine = np.asarray(affine_ras, dtype=np.float64)
    if _is_orthogonal(affine):
        img.set_qform(affine, code=1)
    else:
        img.set_qform(None, code=0)
    img.set_sform(affine, code=1)


def convert_series(
    folder: str | Path,
    out_path: str | Path,
    series_uid: str | None = None,
    tilt_correction: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> DicomVolume:
    """Read one series (default choice or ``series_uid``) and write it as NIfTI + sidecar."""
    volume = read_dicom_series(folder, series_uid=series_uid, tilt_correction=tilt_correction, workers=workers, progress=progress)
    write_nifti(volume, out_path)
    logger.debug("wrote %s (%s, %s voxels, spacing %s mm)", out_path, volume.hu_volume.dtype,
                "x".join(map(str, volume.hu_volume.shape)), ", ".join(f"{s:.3f}" for s in volume.spacing_mm))
    return volume


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "series"


def convert_all_series(
    folder: str | Path,
    out_dir: str | Path,
    tilt_correction: bool = True,
    workers: int | None = None,
) -> list[tuple[str, Path | None, str | None]]:
    """Convert every CT volume series in ``folder`` into ``out_dir``.

    Returns ``(group_id, path or None, error or None)`` per series. Series that cannot be a volume
    (reports, scouts of one slice, other modalities) are listed with their reason and skipped.
    """
    scan = scan_folder(folder, workers=workers)
    groups = group_series(scan.headers)
    if not groups:
        raise DicomIngestError(folder, "no DICOM image files found")
    results: list[tuple[str, Path | None, str | None]] = []
    out_dir = Path(out_dir)
    for g in groups:
        if not readable_on_request(g):
            results.append((g.group_id, None, g.excluded_reason))
            continue
        number = f"{g.first.series_number:03d}_" if g.first.series_number is not None else ""
        name = _safe_name(f"{number}{g.first.series_description or 'series'}_{g.group_id[-12:]}")
        target = out_dir / f"{name}.nii.gz"
        try:
            volume = read_dicom_series(folder, series_uid=g.group_id, tilt_correction=tilt_correction, workers=workers, scan=scan)
            write_nifti(volume, target)
            results.append((g.group_id, target, None))
        except DicomIngestError as exc:
            results.append((g.group_id, None, exc.reason))
    if not any(path for _, path, _ in results):
        raise DicomIngestError(folder, "no series could be converted: " + "; ".join(f"{uid}: {err}" for uid, _, err in results))
    return results
