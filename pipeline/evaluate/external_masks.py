"""Label maps written by another tool, read onto a study's grid (``ichct evaluate --predictions DIR``).

Two formats:

NIfTI (``.nii``, ``.nii.gz``)
    Read with nibabel. The voxel-to-world affine must be stated: a file whose ``sform_code`` and
    ``qform_code`` are both 0 is refused (nibabel would only guess its orientation). A trailing
    axis of length 1 is dropped; anything else than one 3D map is refused.
DICOM SEG (``.dcm``)
    Read with highdicom (:func:`highdicom.seg.segread`, then ``get_volume(combine_segments=True)``):
    a BINARY or LABELMAP segmentation becomes a label map of segment numbers in patient (LPS)
    space, turned here to RAS. A SEG stores only the frames it needs (empty frames are usually
    omitted), so study voxels beyond its frames are background. Its segments' labels give the
    default label map (:func:`seg_label_map`).

:func:`labels_on_grid` puts a map onto the study's grid by world coordinates, nearest neighbour:
each study voxel centre takes the value of the prediction voxel it falls in. A prediction already
on the study's grid (same shape, affine within :data:`GRID_TOL_MM`) is taken as it is. A NIfTI
grid that does not cover the study (a voxel centre of the study more than half a voxel outside
it) is an error naming the file: a missing part of a prediction is never read as "no blood".

The study's grid (:func:`study_grid`) is the manifest entry's voxel label when it has one (the
manifest check keeps it on its image's grid), else the image as ichct's reader loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ichct.errors import InputError
from ichct.pipeline.evaluate.external_labels import BINARY, LabelMap, label_map_from_names, label_name

logger = logging.getLogger("ichct.evaluate")

__all__ = ["GRID_TOL_MM", "MASK_SUFFIXES", "Grid", "PredictedMask", "is_mask_file", "labels_on_grid", "read_mask", "same_grid",
           "seg_label_map", "study_grid"]

#: Largest difference of two affines (per element, mm) still read as the same grid (NIfTI is float32).
GRID_TOL_MM = 0.01
#: How far (in voxels) beyond the outermost voxel centre of a prediction a study voxel centre may lie.
COVER_TOL_VOXELS = 0.5 + 1e-3
MASK_SUFFIXES = (".nii.gz", ".nii", ".dcm")
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (X, Y, Z) and the voxel-to-world ``affine`` (RAS, mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray


@dataclass
class PredictedMask:
    """One predicted label map as read: raw ``values`` on the file's own grid (``affine``, RAS).

    ``default_map`` is what the file itself says its values mean (a SEG's segment labels, None when
    they do not say; binary for NIfTI, which says nothing), and
    ``outside_is_background`` whether voxels beyond its grid are background (SEG) or uncovered (NIfTI).
    """

    path: Path
    values: np.ndarray
    affine: np.ndarray
    kind: str  # "nifti" or "seg"
    default_map: LabelMap | None = None
    outside_is_background: bool = False


def is_mask_file(path: Path) -> bool:
    """A NIfTI or DICOM file (by name), not hidden.

    Examples
    --------
    >>> is_mask_file(Path("ICH_0001.nii.gz")), is_mask_file(Path("scores.csv"))
    (True, False)
    """
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(MASK_SUFFIXES)


def read_mask(path: str | Path) -> PredictedMask:
    """Read a predicted label map (NIfTI or DICOM SEG, by its name; see the module)."""
    p = Path(path)
    return _read_seg(p) if p.name.lower().endswith(".dcm") else _read_nifti(p)


def _read_nifti(path: Path) -> PredictedMask:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        values = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - truncated gzip, wrong header: name the file
        raise InputError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    header = img.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        raise InputError(path, "sform_code and qform_code are both 0: the file does not say where its voxels lie "
                               "(write it with the image's affine, e.g. copy the image's header)")
    while values.ndim > 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 3:
        raise InputError(path, f"not one 3D label map (shape {tuple(values.shape)})")
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_affine(path, affine)
    return PredictedMask(path, values, affine, "nifti", BINARY)


def _check_affine(path: Path, affine: np.ndarray) -> None:
    m = affine[:3, :3]
    if not np.all(np.isfinite(affine)) or abs(float(np.linalg.det(m))) < 1e-9:
        raise InputError(path, f"affine without a voxel volume: {np.round(affine, 4).tolist()}")


def _read_seg(path: Path) -> PredictedMask:
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # noqa: BLE001 - not DICOM, not a SEG: name the file
        raise InputError(path, f"not a readable DICOM Segmentation ({type(exc).__name__}: {exc})") from None
    seg_type = str(getattr(seg, "SegmentationType", ""))
    if seg_type == "FRACTIONAL":
        raise InputError(path, "a FRACTIONAL segmentation (probabilities); ichct reads BINARY or LABELMAP SEGs")
    try:
        volume = seg.get_volume(combine_segments=True, relabel=False)
    except Exception as exc:  # noqa: BLE001 - overlapping segments, frames not forming one volume
        raise InputError(path, f"its frames do not form one label volume ({type(exc).__name__}: {exc}); "
                               "ichct reads SEGs of non-overlapping segments on parallel, evenly spaced frames") from None
    affine = _RAS_FROM_LPS @ np.asarray(volume.affine, dtype=np.float64)
    _check_affine(path, affine)
    return PredictedMask(path, np.asarray(volume.array), affine, "seg", seg_label_map(seg, path), True)


def seg_label_map(seg: Any, path: str | Path) -> LabelMap | None:
    """The label map a SEG's segments state: segment number -> the subtype or ``any`` their
    labels (or property types) name; one unnamed segment means ``any``; None when unnamed
    segments are several (then ``--label-map`` must say)."""
    names: dict[int, str | None] = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        prop = getattr(item, "SegmentedPropertyTypeCodeSequence", None)
        meaning = getattr(prop[0], "CodeMeaning", "") if prop else ""
        names[number] = label_name(getattr(item, "SegmentLabel", "")) or label_name(meaning)
    if len(names) == 1 and None in names.values():
        return LabelMap({next(iter(names)): "any"}, f"{Path(path).name}: its one segment")
    if None in names.values():
        return None
    try:
        return label_map_from_names(names, f"{Path(path).name}: its segment labels")
    except InputError:  # 'any' mixed with subtypes: --label-map must say
        return None


def study_grid(entry: Mapping[str, Any]) -> Grid:
    """The grid of a manifest entry's study: its voxel label's (NIfTI header only) when it has
    one, else the image's as :func:`ichct.pipeline.models.inference.load_image` reads it."""
    label = entry.get("label")
    if label:
        import nibabel as nib

        img = nib.load(str(label))
        return Grid(tuple(int(s) for s in img.shape[:3]), np.asarray(img.affine, dtype=np.float64))
    from ichct.pipeline.models.inference import load_image

    img = load_image(entry["image"])
    return Grid(tuple(int(s) for s in img.shape[1:]), np.asarray(img.affine, dtype=np.float64))


def same_grid(shape: tuple[int, ...], affine: np.ndarray, grid: Grid) -> bool:
    """Shape equal and every affine element within :data:`GRID_TOL_MM`."""
    return tuple(shape) == tuple(grid.shape) and float(np.max(np.abs(np.asarray(affine) - grid.affine))) <= GRID_TOL_MM


def labels_on_grid(values: np.ndarray, affine: np.ndarray, grid: Grid, path: str | Path,
                   outside_is_background: bool = False) -> np.ndarray:
    """``values`` (on ``affine``) sampled at every voxel centre of ``grid``, nearest neighbour.

    Raises :class:`~ichct.errors.InputError` naming ``path`` when the prediction does not cover
    the grid, unless ``outside_is_background``.

    Examples
    --------
    A map of 2 mm voxels read onto a 1 mm grid of the same field:

    >>> coarse = np.zeros((2, 2, 1), np.uint8); coarse[1, 1, 0] = 1
    >>> fine_affine = np.eye(4); fine_affine[:3, 3] = -0.5
    >>> fine = Grid((4, 4, 1), fine_affine)
    >>> labels_on_grid(coarse, np.diag([2.0, 2.0, 1.0, 1.0]), fine, "pred.nii.gz")[..., 0].tolist()
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    """
    arr = np.asarray(values)
    if same_grid(arr.shape, affine, grid):
        return arr
    to_source = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ grid.affine
    if not outside_is_background:
        _check_cover(to_source, arr.shape, grid, path)
    # nearest neighbour at every study voxel centre; "grid-constant": background beyond the prediction's grid
    source = arr.astype(np.uint8) if arr.dtype == bool else arr.astype(arr.dtype.newbyteorder("="), copy=False)
    sampled = ndimage.affine_transform(source, to_source[:3, :3], offset=to_source[:3, 3], output_shape=grid.shape,
                                       order=0, mode="grid-constant", cval=0)
    return sampled.astype(arr.dtype, copy=False)


def _check_cover(to_source: np.ndarray, source_shape: tuple[int, ...], grid: Grid, path: str | Path) -> None:
    """Refuse a prediction whose grid leaves study voxel centres uncovered (checked at the grid's corners)."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in grid.shape], indexing="ij")).reshape(3, -1)
    at = to_source[:3, :3] @ corners + to_source[:3, 3:4]
    low = -at.min(axis=1) - COVER_TOL_VOXELS
    high = at.max(axis=1) - (np.asarray(source_shape) - 1) - COVER_TOL_VOXELS
    beyond = np.maximum(low, high)
    if np.any(beyond > 0):
        axis = int(np.argmax(beyond))
        raise InputError(path, f"its grid (shape {tuple(source_shape)}) does not cover the study's grid (shape "
                               f"{grid.shape}): study voxels lie up to {float(beyond[axis]) + 0.5:.1f} voxel(s) beyond "
                               f"it along its axis {axis}; predict on the whole study")
