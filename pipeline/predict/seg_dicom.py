"""Write a predicted label map as a DICOM Segmentation (highdicom) referencing its source CT series.

The label map lives on the ingest grid (``ichct convert``: tilt corrected, gaps resampled). A SEG
frame must instead lie on a source instance's own pixel grid, so every frame is sampled from the
label map at the world position (LPS) of each source pixel, nearest neighbour:
``index = inv(affine) @ (IPP + col * col_spacing * row_cosine + row * row_spacing * col_cosine)``.
This maps label slices to the right SOP instance whatever the file order, and follows a gantry
tilt (each tilted instance is shifted in-plane against the corrected grid). Frames that line up
with a grid slice (the usual, untilted case) are copied instead of resampled.

Segments, one per label of the model (:func:`segment_descriptions`); category "Morphologically
abnormal structure" (SCT 49755003, DICOM CID 7150). Segmented property types (SNOMED CT):

=================  ======================================  ===========================================
label              type (SCT)                              source of the code
=================  ======================================  ===========================================
any (binary)       1386000 Intracranial hemorrhage         pydicom ``codes.SCT.IntracranialHemorrhage``
intraparenchymal   274100004 Cerebral hemorrhage           SNOMED CT "Cerebral hemorrhage" (intracerebral)
subarachnoid       21454007 Subarachnoid intracranial      SNOMED CT
                   hemorrhage
subdural           35486000 Subdural hemorrhage            SNOMED CT
intraventricular   50960005 Hemorrhage + anatomic region   pydicom ``codes.SCT.Hemorrhage`` (CID 7151)
                   35764002 Brain ventricle                and ``codes.SCT.BrainVentricle``
epidural           50960005 Hemorrhage + anatomic region   pydicom ``codes.SCT.Hemorrhage`` and
                   18545000 Dura mater                     ``codes.SCT.DuraMater``; label says epidural
=================  ======================================  ===========================================

Epidural and intraventricular hemorrhage are post-coordinated (morphology + site, both codes from
the DICOM content mapping resource shipped with pydicom) rather than given a pre-coordinated
disorder code that could not be checked against a SNOMED CT release here.

The SEG carries the source's patient and study modules (DICOM requires them); nothing of them is
logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ichct.pipeline.core.labels import SUBTYPES
from ichct.pipeline.predict.seg_sources import SegSourceError, SegSources, complete_seg_sources
from ichct.transforms.dicom.geometry import stack_geometry
from ichct.transforms.dicom.validation import quiet_pydicom_values

__all__ = ["SEGMENT_CODES", "SegmentCode", "segment_descriptions", "labels_on_source_frames", "write_seg_dicom",
           "seg_source_warnings"]

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Series number given to SEG series written by ichct.
SEG_SERIES_NUMBER = 9001


@dataclass(frozen=True)
class SegmentCode:
    """Coded meaning of one segment: label, property type and an optional anatomic region."""

    label: str
    type_code: tuple[str, str, str]  # (value, scheme, meaning)
    region_code: tuple[str, str, str] | None = None


#: Segment coding per label name (``"any"`` for binary models, else the subtype names).
SEGMENT_CODES: dict[str, SegmentCode] = {
    "any": SegmentCode("Intracranial hemorrhage", ("1386000", "SCT", "Intracranial hemorrhage")),
    "epidural": SegmentCode("Epidural hemorrhage", ("50960005", "SCT", "Hemorrhage"),
                            ("18545000", "SCT", "Dura mater")),
    "intraparenchymal": SegmentCode("Intraparenchymal hemorrhage", ("274100004", "SCT", "Cerebral hemorrhage")),
    "intraventricular": SegmentCode("Intraventricular hemorrhage", ("50960005", "SCT", "Hemorrhage"),
                                    ("35764002", "SCT", "Brain ventricle")),
    "subarachnoid": SegmentCode("Subarachnoid hemorrhage",
                                ("21454007", "SCT", "Subarachnoid intracranial hemorrhage")),
    "subdural": SegmentCode("Subdural hemorrhage", ("35486000", "SCT", "Subdural hemorrhage")),
}


def segment_labels(num_classes: int) -> list[str]:
    """Label names of segments 1..n: ``["any"]`` for a binary model, the five subtypes for 6 classes."""
    if num_classes == 2:
        return ["any"]
    if num_classes == len(SUBTYPES) + 1:
        return list(SUBTYPES)
    raise ValueError(f"num_classes must be 2 or {len(SUBTYPES) + 1}, got {num_classes}")


def segment_descriptions(num_classes: int, algorithm_name: str, algorithm_version: str) -> list[Any]:
    """highdicom ``SegmentDescription`` for every label of a 2- or 6-class model (segment i = label i)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(name=algorithm_name, version=algorithm_version,
                                              family=codes.cid7162.ArtificialIntelligence)
    out = []
    for number, name in enumerate(segment_labels(num_classes), start=1):
        sc = SEGMENT_CODES[name]
        region = [hd.sr.CodedConcept(*sc.region_code)] if sc.region_code else None
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=sc.label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=hd.sr.CodedConcept(*sc.type_code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
            anatomic_regions=region, tracking_id=f"ichct {name}", tracking_uid=hd.UID()))
    return out


def _frame_geometry(header: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IPP, column step, row step) in LPS mm of one source frame (a ``SliceHeader``)."""
    if header.image_position_mm is None or header.image_orientation is None or header.pixel_spacing_mm is None:
        raise SegSourceError(header.path, "no slice geometry (ImagePositionPatient/ImageOrientationPatient/PixelSpacing); "
                                          "a DICOM SEG cannot place its frames")
    o = np.asarray(header.image_orientation, dtype=np.float64)
    row_sp, col_sp = (float(v) for v in header.pixel_spacing_mm)
    return np.asarray(header.image_position_mm, dtype=np.float64), o[:3] * col_sp, o[3:] * row_sp


def labels_on_source_frames(labels: np.ndarray, affine_ras: np.ndarray, headers: Sequence[Any]) -> np.ndarray:
    """Sample a label map at every pixel of every source frame (nearest neighbour).

    Parameters
    ----------
    labels
        ``(X, Y, Z)`` label map on the grid of ``affine_ras``.
    affine_ras
        Voxel-to-world affine of ``labels`` (RAS, as written to ``mask.nii.gz``).
    headers
        One ``SliceHeader`` per source frame (position, orientation, spacing, rows, columns).

    Returns
    -------
    numpy.ndarray
        ``(n_frames, rows, columns)`` labels, frame ``f`` on ``headers[f]``'s pixel grid; pixels
        outside the label map are 0.
    """
    from scipy import ndimage

    lab = np.asarray(labels)
    inv = np.linalg.inv(_LPS_FROM_RAS @ np.asarray(affine_ras, dtype=np.float64))
    rows, cols = int(headers[0].rows), int(headers[0].columns)
    out = np.zeros((len(headers), rows, cols), dtype=lab.dtype)
    for f, h in enumerate(headers):
        if (int(h.rows), int(h.columns)) != (rows, cols):
            raise SegSourceError(h.path, f"{h.rows}x{h.columns} pixels, other frames of the series have {rows}x{cols}")
        ipp, step_c, step_r = _frame_geometry(h)
        origin = inv[:3, :3] @ ipp + inv[:3, 3]
        du, dv = inv[:3, :3] @ step_c, inv[:3, :3] @ step_r  # index change per column / per row
        k = origin[2]
        aligned = (np.allclose(du, [1, 0, 0], atol=1e-4) and np.allclose(dv, [0, 1, 0], atol=1e-4)
                   and np.allclose(origin, np.rint(origin), atol=1e-3))
        if aligned:
            kk = int(np.rint(k))
            if not 0 <= kk < lab.shape[2]:
                continue
            i0, j0 = int(np.rint(origin[0])), int(np.rint(origin[1]))
            xs, ys = slice(max(0, i0), min(lab.shape[0], i0 + cols)), slice(max(0, j0), min(lab.shape[1], j0 + rows))
            if xs.start < xs.stop and ys.start < ys.stop:
                out[f, ys.start - j0:ys.stop - j0, xs.start - i0:xs.stop - i0] = lab[xs, ys, kk].T
            continue
        jj, ii = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
        coords = origin[:, None, None] + du[:, None, None] * ii + dv[:, None, None] * jj  # (3, rows, cols)
        out[f] = ndimage.map_coordinates(lab, coords.reshape(3, -1), order=0, mode="constant", cval=0).reshape(rows, cols)
    return out


def _same_position(a: Any, b: Any) -> bool:
    """True when two frame headers lie at the same ImagePositionPatient (copies of one instance)."""
    pa, pb = a.image_position_mm, b.image_position_mm
    return pa is not None and pb is not None and bool(np.allclose(pa, pb, atol=1e-3))


def _source_datasets(headers: Sequence[Any]) -> tuple[list[Any], list[Any], list[str]]:
    """Source datasets (no pixel data), the frame headers in the order the SEG needs them, and the
    file of each dataset.

    Single-frame series: one dataset per instance, frames in the same order. An enhanced
    (multi-frame) CT: its one dataset, frames in file order.
    """
    from ichct.transforms.dicom.pixels import read_dataset

    multi = [h for h in headers if h.is_multiframe]
    if multi:
        paths = {h.path for h in headers}
        if len(multi) != len(headers) or len(paths) != 1:
            raise SegSourceError(multi[0].path, "the series mixes multi-frame and single-frame files; no SEG can "
                                                "reference it as one source")
        ds = read_dataset(multi[0].path, stop_before_pixels=True)
        n = int(getattr(ds, "NumberOfFrames", len(multi)))
        by_frame = {int(h.frame_index): h for h in multi}
        if sorted(by_frame) != list(range(n)):
            raise SegSourceError(multi[0].path, "frames without geometry; no SEG can reference them")
        return [ds], [by_frame[i] for i in range(n)], [multi[0].path]
    seen: dict[str, Any] = {}
    for h in headers:
        first = seen.setdefault(h.sop_instance_uid, h)
        if h.sop_instance_uid and first is not h and not _same_position(first, h):
            # an anonymiser that wrote one UID into every file: the SEG could reference only one of them
            raise SegSourceError(h.path, f"its SOPInstanceUID {h.sop_instance_uid} is also that of "
                                         f"{Path(first.path).name} at another position; a DICOM SEG cannot tell "
                                         "the instances apart")
    ordered = list(seen.values())
    return [read_dataset(h.path, stop_before_pixels=True) for h in ordered], ordered, [h.path for h in ordered]


def write_seg_dicom(labels: np.ndarray, affine_ras: np.ndarray, headers: Sequence[Any], out_path: str | Path, *,
                    num_classes: int, algorithm_name: str = "ichct", algorithm_version: str | None = None,
                    model_name: str = "ichct") -> dict[str, Any]:
    """Write ``labels`` as a binary DICOM Segmentation referencing the source instances of ``headers``.

    Parameters
    ----------
    labels
        ``(X, Y, Z)`` integer label map (0 background, i = segment i) on ``affine_ras`` (RAS).
    affine_ras
        Voxel-to-world affine of ``labels``.
    headers
        ``SliceHeader`` of every frame of the source series (:func:`ichct.transforms.dicom.select_series`).
    out_path
        The ``.dcm`` to write.
    num_classes
        2 (one "Intracranial hemorrhage" segment) or 6 (five subtype segments).
    algorithm_name, algorithm_version, model_name
        Algorithm identification and ManufacturerModelName of the SEG.

    Returns
    -------
    dict
        ``{"sop_instance_uid", "series_instance_uid", "n_frames", "segments": [...],
        "referenced_instances", "source_headers"}`` (JSON-ready; ``source_headers`` says what the
        source lacked and what the SEG got instead, :meth:`.seg_sources.SegSources.describe`).

    Raises
    ------
    ichct.pipeline.predict.seg_sources.SegSourceError
        A source series that a SEG cannot reference (names the file and why).
    """
    from ichct import __version__

    version = algorithm_version or __version__
    if not headers:
        raise ValueError("no source instances to reference")
    names = segment_labels(num_classes)
    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() > len(names)):
        raise ValueError(f"label values must lie in 0..{len(names)} for a {num_classes}-class model")
    with quiet_pydicom_values():
        datasets, frames, paths = _source_datasets(headers)
        spacing = None if frames[0].is_multiframe else stack_geometry(frames).slice_spacing_mm
        sources = complete_seg_sources(datasets, paths, spacing)
        pixel = labels_on_source_frames(lab, affine_ras, frames).astype(np.uint8)
        seg = _segmentation(sources, pixel, num_classes, algorithm_name, version, model_name)
        seg.save_as(str(out_path))
    return {"sop_instance_uid": str(seg.SOPInstanceUID), "series_instance_uid": str(seg.SeriesInstanceUID),
            "n_frames": int(seg.NumberOfFrames), "segments": [SEGMENT_CODES[n].label for n in names],
            "referenced_instances": len({h.sop_instance_uid for h in frames}), "source_headers": sources.describe()}


def seg_source_warnings(source_headers: dict[str, Any]) -> list[str]:
    """Report warnings for what the SEG's source headers lacked (see :mod:`.seg_sources`)."""
    out = []
    if source_headers.get("frame_of_reference_source") == "generated":
        out.append("the source series has no FrameOfReferenceUID: seg.dcm is in a new frame of reference "
                   f"{source_headers['frame_of_reference_uid']} (recorded in outputs.seg_dicom_source)")
    if source_headers.get("seg_slice_thickness_mm") is not None:
        out.append("the source series has no SliceThickness: seg.dcm's pixel measures give the measured slice "
                   f"spacing, {source_headers['seg_slice_thickness_mm']} mm")
    return out


def _segmentation(sources: SegSources, pixel: np.ndarray, num_classes: int, algorithm_name: str, version: str,
                  model_name: str) -> Any:
    """The highdicom ``Segmentation`` object (binary, one segment per label) over completed sources."""
    import highdicom as hd

    try:
        seg = hd.seg.Segmentation(
            source_images=sources.datasets, pixel_array=pixel, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(num_classes, algorithm_name, version),
            series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="ichct", manufacturer_model_name=model_name[:64], software_versions=f"ichct {version}",
            device_serial_number="none", content_label="ICH", content_description="ichct hemorrhage segmentation",
            series_description="ichct ICH segmentation (research use, not for diagnosis)",
            omit_empty_frames=bool(pixel.any()))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom refuses the source headers
        raise SegSourceError(sources.paths[0] if sources.paths else "source series",
                             f"a DICOM SEG cannot reference this series: {exc}") from exc
    # Type 2 in the Content Identification Macro: present, empty (the creator is the algorithm,
    # named in each segment's AlgorithmIdentification, not a person).
    seg.ContentCreatorName = ""
    return seg
