"""Read one DICOM CT series into a HU volume with its world affine.

``read_dicom_series(folder)`` is the single entry point used by ``ichct convert``, by the MONAI
reader :class:`ichct.transforms.io.DicomSeriesReader` and by everything downstream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .discovery import FolderScan, default_workers, scan_folder
from .errors import DicomIngestError
from .geometry import StackGeometry, lps_to_ras, stack_geometry
from .headers import (
    BITS_STORED_ASSUMED,
    MODALITY_ASSUMED,
    PIXEL_REPRESENTATION_ASSUMED,
    SQUARE_PIXELS_ASSUMED,
    UNREADABLE_RESCALE,
    SliceHeader,
)
from .hu_check import RULE_NONE, HuCheck, check_hu, unwrap
from .validation import STAND_IN_SERIES_PREFIX, nonconforming_uid_summary
from .pixels import AIR_HU, lossless_int16_possible, read_stack, rescale_of
from .pseudonym import patient_key, salt_id
from .series import (
    SeriesGroup,
    choose_default,
    describe_no_candidate,
    group_series,
    readable_on_request,
    short_syntax_name,
    transfer_syntax_name,
)

logger = logging.getLogger(__name__)
_uid_note_logged = False  # see _log_uid_note


@dataclass
class DicomVolume:
    """A CT series as a volume in Hounsfield units.

    Attributes
    ----------
    hu_volume
        Array indexed ``[i, j, k]`` = (column, row, slice), int16 when exact, else float32.
    affine_lps
        Voxel-to-world affine in DICOM patient coordinates (LPS, mm). ``affine_ras`` is the same
        in RAS, the convention of NIfTI and of MONAI's ``MetaTensor``.
    info
        Sidecar description (JSON-ready; no patient name, ID or birth date).

    Examples
    --------
    Made by :func:`read_dicom_series`, so not run here::

        vol = read_dicom_series("/data/head_ct/study_1")
        vol.hu_volume.shape, vol.spacing_mm   # (512, 512, 32), (0.45, 0.45, 5.0)
        vol.affine_ras                        # the affine for NIfTI / MetaTensor
        vol.info["kernel"], vol.series_uid
    """

    hu_volume: np.ndarray
    affine_lps: np.ndarray
    series: SeriesGroup
    geometry: StackGeometry
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def affine_ras(self) -> np.ndarray:
        return lps_to_ras(self.affine_lps)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine_lps[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def series_uid(self) -> str:
        return self.series.series_uid


def select_series(scan: FolderScan, series_uid: str | None = None) -> tuple[SeriesGroup, list[SeriesGroup], str]:
    """Pick the series to read: the given UID or the default rule. Returns (group, all, why).

    Raises :class:`DicomIngestError` when the folder holds no usable series or not ``series_uid``.

    Examples
    --------
    Needs a DICOM folder, so not run here::

        scan = scan_folder("/data/head_ct/study_1")
        group, groups, why = select_series(scan)
        why        # "default rule: axial CT, soft kernel 'H30s', 32 slices of 5.0 mm"
        group, _, why = select_series(scan, series_uid=groups[-1].series_uid)
    """
    groups = group_series(scan.headers)
    if not groups:
        detail = ""
        if scan.skipped:
            first = scan.skipped[0]
            detail = (f" ({len(scan.skipped)} file(s) skipped as not DICOM or unreadable; the first, "
                      f"{Path(first.path).name}: {first.reason})")
        raise DicomIngestError(scan.root, f"no DICOM image files found{detail}")
    if series_uid:
        matches = [g for g in groups if series_uid in (g.group_id, g.series_uid)]
        if not matches:
            raise DicomIngestError(scan.root, f"no series with UID {series_uid}; run `ichct info` to list them")
        group = next((g for g in matches if g.group_id == series_uid), matches[0])
        if not readable_on_request(group):
            raise DicomIngestError(scan.root, f"series {series_uid} cannot be read as a CT volume: {group.excluded_reason}")
        return group, groups, "chosen with --series"
    group = choose_default(groups)
    if group is None:
        raise DicomIngestError(scan.root, describe_no_candidate(groups))
    why = (
        f"default rule: {'derived ' if group.is_derived else ''}axial CT, {group.kernel_class} kernel "
        f"'{group.kernel}', {group.n_slices} slices of {group.slice_thickness_mm or group.slice_spacing_mm} mm"
    )
    return group, groups, why


def _first_cause(causes: Sequence[tuple[str, str]]) -> str:
    """The first undecodable file and why, as a suffix for an error message ('' when none).

    Examples
    --------
    >>> _first_cause([("/ct/IM2.dcm", "x"), ("/ct/IM1.dcm", "RuntimeError: no plugin:   gdcm: bad header")])
    ' (2 file(s); the first, IM1.dcm: RuntimeError: no plugin: gdcm: bad header)'
    >>> _first_cause([])
    ''
    """
    if not causes:
        return ""
    path, why = sorted(causes)[0]
    return f" ({len(causes)} file(s); the first, {Path(path).name}: {' '.join(str(why).split())})"


_MIXED_HINT = "; put each series in a folder of its own (ichct groups files without SeriesInstanceUID by folder)"


def check_stand_in_stack(root: str | Path, series_uid: str, geometry: StackGeometry,
                         headers: Sequence[SliceHeader], advice: str = _MIXED_HINT) -> None:
    """Refuse a stand-in series (files without SeriesInstanceUID, grouped by folder) that is not one stack.

    Files of several series in one folder, all without SeriesInstanceUID and with the same plane,
    matrix and pixel spacing, fall into one stand-in series. Read as one volume they would be a
    mix of images (of different patients, for a flat archive folder). One acquisition's slices lie
    on one line (straight, or evenly sheared by a gantry tilt) at steps that are whole multiples of
    one spacing (a missing file leaves a gap of two steps); anything else raises
    :class:`DicomIngestError` naming the folder and why, ending with ``advice`` (default: put each
    series in a folder of its own). Series with a UID of their own pass.

    Examples
    --------
    Needs a DICOM folder, so not run here::

        scan = scan_folder("/archive/flat_folder")
        group, _, _ = select_series(scan)
        check_stand_in_stack(scan.root, group.series_uid, stack_geometry(group.headers), group.headers)
    """
    if not series_uid.startswith(STAND_IN_SERIES_PREFIX) or geometry.n_slices < 3:
        return
    dz = geometry.positions_mm - geometry.positions_mm[0]
    offsets = geometry.inplane_offsets_mm
    slope = (offsets.T @ dz) / float(dz @ dz)  # the tilt model: offsets linear in the position
    jump = np.abs(offsets - np.outer(dz, slope)).max(axis=1)
    worst = int(np.argmax(jump))
    if jump[worst] > max(geometry.pixel_spacing_mm):
        name = Path(headers[geometry.order[worst]].path).name
        raise DicomIngestError(root, f"series {series_uid}: its files have no SeriesInstanceUID and do not form "
                                     f"one stack: {name} lies {jump[worst]:.1f} mm off the line of the other slices; "
                                     f"files of several series seem mixed in one folder{advice}")
    steps_mm = np.diff(geometry.positions_mm)
    steps = steps_mm / geometry.slice_spacing_mm
    if np.any(np.abs(steps - np.rint(steps)) > 0.1):
        raise DicomIngestError(root, f"series {series_uid}: its files have no SeriesInstanceUID and their slice "
                                     f"steps ({steps_mm.min():.2f} to {steps_mm.max():.2f} mm) are not whole multiples of one "
                                     f"spacing; files of several series seem mixed in one folder{advice}")


def _header_notes(root: str | Path, group: SeriesGroup, groups: list[SeriesGroup]) -> list[str]:
    """Warnings (also logged) about what the chosen series' headers lacked and how it was read."""
    left_out = _left_out_notes(group, groups)  # logs its own notes, first
    notes: list[str] = []
    headers = group.headers
    if group.series_uid.startswith(STAND_IN_SERIES_PREFIX):
        notes.append("its files have no SeriesInstanceUID: they were taken as one series by folder, study, series "
                     f"number, kernel and slice thickness (series key {group.series_uid})")
    if any(h.extra.get(MODALITY_ASSUMED) for h in headers):
        notes.append("its files have neither Modality nor SOPClassUID: taken as CT (they carry a RescaleIntercept)")
    square = [h for h in headers if h.extra.get(SQUARE_PIXELS_ASSUMED)]
    if square:
        notes.append(f"PixelSpacing has one value ({square[0].extra[SQUARE_PIXELS_ASSUMED]}, e.g. in "
                     f"{Path(square[0].path).name}) on {len(square)} of {len(headers)} file(s), where DICOM "
                     "gives two (row, column): read as square pixels")
    no_bits = sum(1 for h in headers if h.extra.get(BITS_STORED_ASSUMED))
    if no_bits:
        notes.append(f"BitsStored absent or empty on {no_bits} file(s): all of BitsAllocated "
                     f"({headers[0].bits_allocated}) taken as stored bits")
    no_representation = [h for h in headers if h.extra.get(PIXEL_REPRESENTATION_ASSUMED)]
    if no_representation:
        how = ("two's complement (16-bit values from 32768 up, read unsigned, would lie above the CT scale)"
               if no_representation[0].pixel_representation == 1 else "unsigned")
        notes.append(f"PixelRepresentation absent or empty on {len(no_representation)} file(s): pixels read as {how}")
    for note in notes:
        logger.warning("%s: %s", root, note)
    return left_out + notes


def read_dicom_series(
    path: str | Path,
    series_uid: str | None = None,
    tilt_correction: bool = True,
    resample_uneven: bool = True,
    workers: int | None = None,
    scan: FolderScan | None = None,
    progress: bool = False,
) -> DicomVolume:
    """Read a CT series from a folder of DICOM files as one HU volume.

    Parameters
    ----------
    path
        Folder (searched recursively; any file names; DICOMDIR allowed) or one DICOM file (an
        enhanced multi-frame CT).
    series_uid
        Read this series instead of the default choice (see :mod:`ichct.transforms.dicom.series`).
    tilt_correction
        Resample a gantry-tilted (sheared) stack onto a regular grid. When False the volume keeps
        the acquired slices and the affine holds the shear (store it as a NIfTI sform).
    resample_uneven
        Resample stacks with gaps or uneven spacing onto a uniform slice spacing. When False such
        a stack raises :class:`DicomIngestError` instead of being stacked as if uniform.
    workers
        Threads for reading files.
    scan
        A :class:`FolderScan` already made of ``path`` (saves a second header pass).
    progress
        Show progress bars (tqdm, stderr) for header reading and pixel decoding.

    Raises
    ------
    DicomIngestError
        Not CT, empty folder, no usable series, a single slice, undecodable pixel data...

    Examples
    --------
    Needs a DICOM folder, so not run here::

        from ichct.transforms.dicom import read_dicom_series

        vol = read_dicom_series("/data/head_ct/study_1")     # the default series
        vol.hu_volume.shape, vol.spacing_mm
        vol.info["selection"]   # why this series, e.g. "default rule: axial CT, soft kernel 'H30s', ..."
        vol = read_dicom_series("/data/head_ct/study_1", series_uid="1.2.840.113619.2.55.3.1")
    """
    scan = scan if scan is not None else scan_folder(path, workers=workers, progress=progress)
    group, groups, why = select_series(scan, series_uid)
    headers = group.headers
    _refuse_unreadable_rescale(headers)
    n_workers = workers or default_workers()
    warnings = _header_notes(scan.root, group, groups)

    failed_paths: list[str] = []
    causes: list[tuple[str, str]] = []  # (file, why) of every frame that could not be decoded
    for _attempt in range(2):
        geometry = stack_geometry(headers)
        if geometry.n_slices < 2:
            raise DicomIngestError(scan.root, f"series {group.series_uid} has a single slice position; a volume needs at least two")
        check_stand_in_stack(scan.root, group.series_uid, geometry, headers)
        order = geometry.order
        lossless = lossless_int16_possible([headers[i] for i in order])
        stack, n_padded, failed = read_stack(headers, order, workers=n_workers, want_int16=lossless, progress=progress,
                                             on_error=lambda path, err: causes.append((path, err)))
        if not failed:
            break
        bad = {order[p] for p in failed}
        failed_paths.extend(headers[i].path for i in sorted(bad))
        headers = [h for i, h in enumerate(headers) if i not in bad]
        if len(headers) < 2:
            raise DicomIngestError(scan.root, f"series {group.series_uid}: pixel data of its files cannot be "
                                              f"decoded{_first_cause(causes)}")
    else:
        raise DicomIngestError(scan.root, f"series {group.series_uid}: pixel data cannot be decoded "
                                          f"consistently{_first_cause(causes)}")
    hu_check = check_hu(stack, [headers[i] for i in order], scan.root, group.series_uid)
    if hu_check.air_hu is None and any(h.extra.get(BITS_STORED_ASSUMED) for h in headers):
        # without air to check against, 12-bit two's-complement values read as 16 bits (air at
        # +3072 HU) would pass as they are
        raise DicomIngestError(scan.root, f"series {group.series_uid}: BitsStored is absent or empty and no air "
                                          "near -1000 HU was found with all allocated bits as stored bits, so how "
                                          "many bits hold the value cannot be told (e.g. 12-bit two's complement); "
                                          f"{Path(headers[order[0]].path).name} and the others need BitsStored")
    no_rescale = sum(1 for i in geometry.order if headers[i].rescale_slope is None or headers[i].rescale_intercept is None)
    if no_rescale:
        warnings.append(f"RescaleSlope/RescaleIntercept missing on {no_rescale} slice(s): stored values were taken as HU (slope 1, intercept 0)")
    zero_slope = sum(1 for i in geometry.order if headers[i].rescale_slope == 0)
    if zero_slope:
        warnings.append(f"RescaleSlope 0 on {zero_slope} slice(s) (it would map every pixel to one value): taken as 1")
    if failed_paths:
        warnings.append(f"{len(failed_paths)} slice file(s) with undecodable pixel data were left out: " + ", ".join(Path(p).name for p in failed_paths[:10]))
    uid_note = nonconforming_uid_summary(headers)
    if uid_note:  # one line per series instead of pydicom's warning per file
        warnings.append(uid_note)
        _log_uid_note(group.series_uid, uid_note)

    if hu_check.warning:
        warnings.append(hu_check.warning)

    stack, duplicates_info = _merge_duplicates(stack, headers, geometry, n_workers, warnings, hu_check)
    if duplicates_info["averaged"] and group.series_uid.startswith(STAND_IN_SERIES_PREFIX):
        raise DicomIngestError(scan.root, f"series {group.series_uid}: its files have no SeriesInstanceUID and "
                                          f"{duplicates_info['averaged']} slice position(s) hold differing images: "
                                          f"files of several series seem mixed in one folder{_MIXED_HINT}")

    tilt_corrected = False
    if geometry.sheared and tilt_correction:
        stack = _correct_shear(stack, geometry)
        tilt_corrected = True
        warnings.append(f"gantry tilt of {geometry.tilt_deg:.2f} degrees corrected by resampling onto a regular grid")
    elif geometry.sheared:
        warnings.append(f"gantry tilt of {geometry.tilt_deg:.2f} degrees kept: the affine is sheared")

    resampled = False
    grid_positions = geometry.positions_mm
    if not geometry.uniform:
        if not resample_uneven:
            raise DicomIngestError(scan.root, f"series {group.series_uid} has gaps or uneven slice spacing ({_spacing_text(geometry)}); refusing to stack it as if uniform")
        grid_positions = geometry.grid_positions_mm()
        stack = _resample_along_normal(stack, geometry.positions_mm, grid_positions)
        resampled = True
        warnings.append(f"uneven slice spacing ({_spacing_text(geometry)}) resampled onto a uniform {geometry.grid_step_mm:.3f} mm grid")

    affine_lps = geometry.affine_lps(
        sheared=geometry.sheared and not tilt_correction,
        step_mm=geometry.grid_step_mm if resampled else None,
    )

    hu_volume = stack.transpose(2, 1, 0)  # (slices, rows, cols) -> (cols i, rows j, slices k), F-ordered view
    used = [headers[i] for i in geometry.order]
    info = _sidecar(scan, group, used, geometry, hu_volume, affine_lps, why, tilt_corrected, resampled,
                    grid_positions, n_padded, duplicates_info, warnings, tilt_correction, hu_check)
    for w in warnings:
        logger.debug("%s: %s", group.series_uid, w)
    return DicomVolume(hu_volume=hu_volume, affine_lps=affine_lps, series=group, geometry=geometry, info=info)


def _refuse_unreadable_rescale(headers: list[SliceHeader]) -> None:
    """Raise :class:`DicomIngestError`, naming the first such file, when a slice's RescaleSlope or
    RescaleIntercept is present but not a number: taking it as absent (slope 1, intercept 0)
    would give wrong HU without a word."""
    for h in headers:
        bad = h.extra.get(UNREADABLE_RESCALE)
        if bad:
            what = ", ".join(f"{keyword} {text!r}" for keyword, text in bad.items())
            raise DicomIngestError(h.path, f"{what} is not a number, so its HU cannot be computed; fix the header "
                                           "or re-export the series")


def _left_out_notes(group: SeriesGroup, groups: list[SeriesGroup]) -> list[str]:
    """A warning per other stack of ``group``'s series (frames that cannot share its grid), naming
    why and a few of its files: such frames are left out of the volume, never silently."""
    notes = []
    for other in groups:
        if other is group or other.series_uid != group.series_uid:
            continue
        names = ", ".join(Path(h.path).name for h in other.headers[:5]) + (", ..." if len(other.headers) > 5 else "")
        reason = other.excluded_reason or "another matrix, orientation or pixel spacing"
        notes.append(f"{len(other.headers)} frame(s) of this series left out ({reason}): {names}")
        logger.warning("series %s: %s", group.series_uid, notes[-1])
    return notes


def _spacing_text(geometry: StackGeometry) -> str:
    diffs = np.diff(geometry.positions_mm)
    parts = [f"spacing {diffs.min():.3f}-{diffs.max():.3f} mm"]
    if geometry.gaps:
        parts.append(f"{len(geometry.gaps)} gap(s), {sum(g['missing_slices'] for g in geometry.gaps)} missing slice(s)")
    return ", ".join(parts)


def _merge_duplicates(
    stack: np.ndarray, headers: list[SliceHeader], geometry: StackGeometry, workers: int, warnings: list[str],
    hu_check: HuCheck | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Slices sharing a position: identical copies are dropped; differing ones are averaged.

    The duplicates get the HU correction that ``hu_check`` applied to the kept slices. Returns the
    (possibly float32) stack and a summary for the sidecar.
    """
    info: dict[str, Any] = {"count": len(geometry.duplicates), "identical": 0, "averaged": 0}
    if not geometry.duplicates:
        return stack, info
    position_of = {idx: p for p, idx in enumerate(geometry.order)}
    others = [other for _kept, other in geometry.duplicates]
    extra, _, failed = read_stack(headers, others, workers=workers, want_int16=stack.dtype == np.int16)
    if hu_check is not None and hu_check.rule != RULE_NONE:
        unwrap(extra, [headers[i] for i in others])
    differing: dict[int, list[np.ndarray]] = {}
    for n, (kept, _other) in enumerate(geometry.duplicates):
        if n in failed:
            continue
        p = position_of[kept]
        if np.array_equal(extra[n], stack[p]):
            info["identical"] += 1
        else:
            differing.setdefault(p, []).append(extra[n].astype(np.float32))
    if differing:
        stack = stack.astype(np.float32, copy=False)
        for p, planes in differing.items():
            stack[p] = (stack[p] + sum(planes)) / (1 + len(planes))
        info["averaged"] = len(differing)
    if info["identical"]:
        warnings.append(f"{info['identical']} duplicate slice(s) with identical pixels at the same position were dropped")
    if info["averaged"]:
        warnings.append(f"{info['averaged']} slice position(s) held differing images (overlapping stacks); they were averaged")
    return stack, info


def _correct_shear(stack: np.ndarray, geometry: StackGeometry) -> np.ndarray:
    """Shift each slice in-plane so that all slices share the first slice's in-plane origin."""
    from scipy import ndimage  # imported here: only tilted stacks need it

    row_sp, col_sp = geometry.pixel_spacing_mm
    out = np.empty(stack.shape, dtype=np.float32)
    for k in range(stack.shape[0]):
        u, v = geometry.inplane_offsets_mm[k]
        shift = (v / row_sp, u / col_sp)  # axes: (row index j, column index i)
        if abs(shift[0]) < 1e-6 and abs(shift[1]) < 1e-6:
            out[k] = stack[k]
        else:
            ndimage.shift(stack[k].astype(np.float32, copy=False), shift, output=out[k], order=1, mode="constant", cval=AIR_HU, prefilter=False)
    return out


def _resample_along_normal(stack: np.ndarray, positions: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of slices from their true positions onto a uniform grid."""
    out = np.empty((grid.size,) + stack.shape[1:], dtype=np.float32)
    upper = np.clip(np.searchsorted(positions, grid, side="left"), 1, positions.size - 1)
    lower = upper - 1
    span = positions[upper] - positions[lower]
    weight = np.clip((grid - positions[lower]) / np.where(span > 0, span, 1.0), 0.0, 1.0)
    for m in range(grid.size):
        w = float(weight[m])
        a = stack[lower[m]].astype(np.float32, copy=False)
        if w <= 1e-6:
            out[m] = a
        elif w >= 1 - 1e-6:
            out[m] = stack[upper[m]]
        else:
            out[m] = a * (1 - w) + stack[upper[m]].astype(np.float32, copy=False) * w
    return out


def _sidecar(scan, group, used, geometry, hu_volume, affine_lps, why, tilt_corrected, resampled, grid_positions,
             n_padded, duplicates_info, warnings, tilt_correction, hu_check) -> dict[str, Any]:
    from ichct import __version__

    first = used[0]
    rescales = [rescale_of(h) for h in used]
    slopes = sorted({s for s, _ in rescales})
    intercepts = sorted({i for _, i in rescales})
    affine_ras = lps_to_ras(affine_lps)
    spacing = [float(v) for v in np.linalg.norm(affine_lps[:3, :3], axis=0)]
    missing = sum(g["missing_slices"] for g in geometry.gaps)
    return {
        "ichct_version": __version__,
        "series_uid": group.series_uid,
        "study_uid": first.study_uid,
        "frame_of_reference_uid": first.frame_of_reference_uid,
        "series_number": first.series_number,
        "series_description": first.series_description,
        "modality": first.modality,
        "manufacturer": first.manufacturer,
        "patient_key": patient_key(first.patient_id),
        "salt_id": salt_id(),
        "selection": why,
        "units": "HU",
        "dtype": str(hu_volume.dtype),
        "shape": [int(v) for v in hu_volume.shape],
        "spacing_mm": spacing,
        "affine_ras": np.round(affine_ras, 6).tolist(),
        "space": "RAS",
        "pixel_spacing_mm": list(geometry.pixel_spacing_mm),
        "slice_thickness_mm": first.slice_thickness_mm,
        "slice_spacing_mm": float(geometry.slice_spacing_mm),
        "kernel": first.convolution_kernel,
        "transfer_syntax_uid": first.transfer_syntax_uid,
        "transfer_syntax": transfer_syntax_name(first.transfer_syntax_uid),
        "transfer_syntax_short": short_syntax_name(first.transfer_syntax_uid),
        "source_file_count": len({h.path for h in used}),
        "source_slice_count": len(group.headers),
        "slice_count": int(hu_volume.shape[2]),
        "tilt": {
            "detected": bool(geometry.sheared),
            "angle_deg": round(float(geometry.tilt_deg), 4),
            "header_gantry_tilt_deg": first.gantry_tilt_deg,
            "corrected": bool(tilt_corrected),
            "sheared_affine_kept": bool(geometry.sheared and not tilt_correction),
        },
        "spacing_uniform": bool(geometry.uniform),
        "gaps": geometry.gaps,
        "missing_slices": int(missing),
        "resampled_to_uniform_spacing": bool(resampled),
        "duplicates": {k: v for k, v in duplicates_info.items() if not k.startswith("_")},
        "rescale": {"slopes": slopes, "intercepts": intercepts, "varies_between_slices": len(rescales) > 0 and (len(slopes) > 1 or len(intercepts) > 1)},
        "padding_voxels_set_to_air": int(n_padded),
        "hu_check": hu_check.to_dict(),
        "skipped_files": len(scan.skipped),
        "warnings": list(warnings),
    }


def _log_uid_note(series_uid: str, note: str) -> None:
    """Warn of a series' non-conforming UIDs once per process (every series' warnings are logged at
    debug level anyway, and each keeps the note in its own warnings).

    Public archives rename every UID (RSNA's ``ID_<hex>``): a warning per series would be one line
    per study of a cohort.
    """
    global _uid_note_logged
    if not _uid_note_logged:
        _uid_note_logged = True
        logger.warning("series %s: %s (later series with non-conforming UIDs: debug level only)", series_uid, note)
