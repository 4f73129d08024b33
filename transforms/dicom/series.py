"""Group frame headers into series, describe them, and choose the diagnostic axial series.

Default choice (what a reader would open for a head CT), documented in docs/ingest.md:

1. Only CT image series with slice geometry and at least two slices are volume candidates.
   Excluded: other modalities (MR, SR, ...), localizers/scouts (``LOCALIZER`` in ImageType,
   a single slice, or a non-axial plane), secondary captures and dose reports (Secondary Capture
   SOP classes, no slice geometry).
2. Among the candidates, original acquisitions are preferred to derived ones (``DERIVED`` in
   ImageType: reformats, MIPs); a derived axial series is only chosen when nothing else is left.
3. Then a soft-tissue/brain reconstruction kernel beats an unknown one, which beats a bone or lung
   (sharp) kernel.
4. Then the thinnest slices, then the most slices, then the lowest series number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .headers import SECONDARY_CAPTURE_PREFIX, SliceHeader

AXIAL_MIN_ABS_NZ = 0.7  # |normal . z| above this is axial (tilted axial up to ~45 degrees included)
ORIENTATION_TOLERANCE = 1e-3  # max difference of direction cosines within one stack

_SHARP_WORDS = ("BONE", "LUNG", "EDGE", "SHARP", "DETAIL", "HIGH", "ULTRA", "INNER EAR", "IAC")
_SOFT_WORDS = ("SOFT", "STANDARD", "STND", "BRAIN", "HEAD", "SMOOTH", "NEURO", "CEREBRUM")
_SIEMENS_KERNEL = re.compile(r"^(?:[A-Z]|[A-Z][a-z])(\d{2})[a-z]?$")
_CANON_KERNEL = re.compile(r"^FC(\d{2})$", re.IGNORECASE)


def kernel_class(kernel: str, description: str = "") -> str:
    """Classify a reconstruction kernel as ``"soft"``, ``"sharp"`` or ``"unknown"``.

    Covers the common vendor spellings: GE words (STANDARD, SOFT, BONE, LUNG, DETAIL), Siemens
    letter+number kernels (H30s, Hr38, Br40 soft; H60s, Hr64, H70h sharp), Canon/Toshiba FCnn
    (FC30-FC39 and FC50+ sharp) and Philips letters (A/B/C/UA/UB/UC soft; D/E/L/Y... sharp).
    The series description breaks ties for unknown kernels ("BONE" in it means sharp).

    Examples
    --------
    >>> from ichct.transforms.dicom import kernel_class
    >>> kernel_class("H30s"), kernel_class("BONE"), kernel_class("FC64")
    ('soft', 'sharp', 'sharp')
    >>> kernel_class("X1", description="HEAD BRAIN"), kernel_class("")
    ('soft', 'unknown')
    """
    k = (kernel or "").strip()
    upper = k.upper()
    if any(w in upper for w in _SHARP_WORDS):
        return "sharp"
    if any(w in upper for w in _SOFT_WORDS):
        return "soft"
    match = _SIEMENS_KERNEL.match(k)
    if match:
        return "sharp" if int(match.group(1)) >= 50 else "soft"
    match = _CANON_KERNEL.match(k)
    if match:
        number = int(match.group(1))
        return "sharp" if 30 <= number < 40 or number >= 50 else "soft"
    if upper in {"A", "B", "C", "UA", "UB", "UC", "CB", "MB"}:
        return "soft"
    if upper in {"D", "E", "L", "EB", "EC", "YA", "YB", "YC", "YD", "YE"}:
        return "sharp"
    desc = (description or "").upper()
    if any(w in desc for w in ("BONE", "LUNG", "SHARP")):
        return "sharp"
    if any(w in desc for w in ("BRAIN", "SOFT", "STANDARD")):
        return "soft"
    return "unknown"


@dataclass
class SeriesGroup:
    """The frames of one series that share one image plane orientation, matrix and pixel spacing.

    A series whose frames have several orientations (a three-plane localizer) becomes several
    groups, each with its own ``group_id``: the series UID for the largest group, suffixed
    ``#2``, ``#3`` ... for the others.
    """

    group_id: str
    series_uid: str
    headers: list[SliceHeader]
    excluded_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> SliceHeader:
        return self.headers[0]

    @property
    def modality(self) -> str:
        return self.first.modality

    @property
    def n_slices(self) -> int:
        return len(self.headers)

    @property
    def normal(self) -> np.ndarray | None:
        return self.first.normal

    @property
    def plane(self) -> str:
        n = self.normal
        if n is None:
            return "unknown"
        axis = int(np.argmax(np.abs(n)))
        return ("sagittal", "coronal", "axial")[axis]

    @property
    def is_axial(self) -> bool:
        n = self.normal
        return n is not None and abs(float(n[2])) >= AXIAL_MIN_ABS_NZ

    @property
    def is_derived(self) -> bool:
        return bool(self.first.image_type) and self.first.image_type[0] == "DERIVED"

    @property
    def kernel(self) -> str:
        return self.first.convolution_kernel

    @property
    def kernel_class(self) -> str:
        return kernel_class(self.kernel, self.first.series_description)

    @property
    def slice_spacing_mm(self) -> float | None:
        """Median distance between neighbouring slice positions along the slice normal."""
        n = self.normal
        positions = [h.image_position_mm for h in self.headers if h.image_position_mm is not None]
        if n is None or len(positions) < 2:
            return None
        d = np.unique(np.round(np.asarray(positions) @ n, 4))
        if d.size < 2:
            return 0.0
        return float(np.median(np.diff(d)))

    @property
    def slice_thickness_mm(self) -> float | None:
        return self.first.slice_thickness_mm

    @property
    def gantry_tilt_header_deg(self) -> float | None:
        return self.first.gantry_tilt_deg

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description for ``ichct info`` (no patient identifiers)."""
        first = self.first
        spacing = self.slice_spacing_mm
        return {
            "series_uid": self.series_uid,
            "group_id": self.group_id,
            "series_number": first.series_number,
            "description": first.series_description,
            "modality": first.modality,
            "image_type": list(first.image_type),
            "plane": self.plane,
            "n_slices": self.n_slices,
            "rows": first.rows,
            "columns": first.columns,
            "pixel_spacing_mm": list(first.pixel_spacing_mm) if first.pixel_spacing_mm else None,
            "slice_spacing_mm": None if spacing is None else round(spacing, 4),
            "slice_thickness_mm": first.slice_thickness_mm,
            "gantry_tilt_header_deg": first.gantry_tilt_deg,
            "kernel": self.kernel,
            "kernel_class": self.kernel_class,
            "transfer_syntax_uid": first.transfer_syntax_uid,
            "transfer_syntax": transfer_syntax_name(first.transfer_syntax_uid),
            "transfer_syntax_short": short_syntax_name(first.transfer_syntax_uid),
            "multiframe": first.is_multiframe,
            "n_files": len({h.path for h in self.headers}),
            "excluded_reason": self.excluded_reason,
        }


_SHORT_SYNTAX = {
    "1.2.840.10008.1.2": "implicit LE",
    "1.2.840.10008.1.2.1": "explicit LE",
    "1.2.840.10008.1.2.2": "explicit BE",
    "1.2.840.10008.1.2.1.99": "deflated",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.51": "JPEG extended",
    "1.2.840.10008.1.2.5": "RLE",
}


def short_syntax_name(uid: str) -> str:
    """A short label for a transfer syntax UID (for tables)."""
    return _SHORT_SYNTAX.get(uid, transfer_syntax_name(uid))


def transfer_syntax_name(uid: str) -> str:
    """The standard name of a transfer syntax UID (the UID itself when unknown)."""
    try:
        from pydicom.uid import UID

        return UID(uid).name if uid else ""
    except Exception:  # noqa: BLE001
        return uid


def image_kind(h: SliceHeader) -> tuple[bool, bool, bool]:
    """(secondary capture, derived, localizer): what sort of image a frame is, by its own header.

    Examples
    --------
    >>> h = SliceHeader(path="1.dcm", frame_index=None, series_uid="1.2", sop_instance_uid="", rows=2, columns=2,
    ...                 sop_class_uid="1.2.840.10008.5.1.4.1.1.2", modality="CT", transfer_syntax_uid="",
    ...                 image_type=("DERIVED", "SECONDARY", "MIP"))
    >>> image_kind(h)
    (False, True, False)
    """
    return (h.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX),
            bool(h.image_type) and h.image_type[0] == "DERIVED",
            "LOCALIZER" in h.image_type or "SCOUT" in h.image_type)


def _same_stack(a: SliceHeader, b: SliceHeader) -> bool:
    """Frames that can share one voxel grid: same image kind, orientation, matrix and pixel spacing.

    Orientations are compared with a tolerance (not by rounding, which would split a series whose
    cosines straddle a rounding boundary). A frame without ImagePositionPatient never joins frames
    that have one: it becomes a group of its own (excluded), and the rest of the series stays
    readable, with the hole it leaves reported as a gap. A secondary capture, derived image or
    localizer filed in an original series (same plane and matrix) is a group of its own too: it is
    neither stacked into the volume nor allowed to decide, as the group's first frame, that the whole
    series is excluded.
    """
    if (a.rows, a.columns) != (b.rows, b.columns) or image_kind(a) != image_kind(b):
        return False
    if (a.image_position_mm is None) != (b.image_position_mm is None):
        return False
    if (a.image_orientation is None) != (b.image_orientation is None):
        return False
    if a.image_orientation is not None and b.image_orientation is not None:
        if np.max(np.abs(np.subtract(a.image_orientation, b.image_orientation))) > ORIENTATION_TOLERANCE:
            return False
    if (a.pixel_spacing_mm is None) != (b.pixel_spacing_mm is None):
        return False
    if a.pixel_spacing_mm is not None and b.pixel_spacing_mm is not None:
        if np.max(np.abs(np.subtract(a.pixel_spacing_mm, b.pixel_spacing_mm))) > 1e-3:
            return False
    return True


def group_series(headers: list[SliceHeader]) -> list[SeriesGroup]:
    """Group frames by series UID, then into stacks of one geometry, and classify each group.

    Examples
    --------
    Needs DICOM headers, so not run here::

        groups = group_series(scan_folder("/data/head_ct/study_1").headers)
        [(g.group_id, g.n_slices, g.plane, g.excluded_reason) for g in groups]
    """
    by_series: dict[str, list[SliceHeader]] = {}
    for h in headers:
        by_series.setdefault(h.series_uid, []).append(h)
    groups: list[SeriesGroup] = []
    for series_uid, members in by_series.items():
        stacks: list[list[SliceHeader]] = []
        for h in members:
            for stack in stacks:
                if _same_stack(stack[0], h):
                    stack.append(h)
                    break
            else:
                stacks.append([h])
        stacks.sort(key=lambda hs: -len(hs))
        for i, hs in enumerate(stacks):
            group_id = series_uid if i == 0 else f"{series_uid}#{i + 1}"
            group = SeriesGroup(group_id=group_id, series_uid=series_uid, headers=hs)
            group.excluded_reason = exclusion_reason(group)
            groups.append(group)
    groups.sort(key=lambda g: (g.first.series_number if g.first.series_number is not None else 1 << 30, g.group_id))
    return groups


def exclusion_reason(group: SeriesGroup) -> str | None:
    """Why a group cannot be the default volume (``None`` when it is a candidate)."""
    first = group.first
    if first.modality != "CT":
        return f"modality {first.modality or 'unknown'} is not CT"
    if first.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture (screenshot or dose report)"
    if "LOCALIZER" in first.image_type or "SCOUT" in first.image_type or "TOPOGRAM" in first.series_description.upper():
        return "localizer/scout"
    if not first.has_pixel_data or first.rows == 0:
        return "no pixel data (report or non-image object)"
    if first.image_orientation is None or any(h.image_position_mm is None for h in group.headers):
        return "no slice geometry (ImagePositionPatient/ImageOrientationPatient missing)"
    row, col = np.asarray(first.image_orientation[:3]), np.asarray(first.image_orientation[3:])
    if abs(np.linalg.norm(row) - 1) > 0.05 or abs(np.linalg.norm(col) - 1) > 0.05 or abs(row @ col) > 0.05:
        values = "\\".join(f"{v:g}" for v in first.image_orientation)
        return f"ImageOrientationPatient {values} is not two perpendicular unit vectors"
    if first.pixel_spacing_mm is None:
        return "no PixelSpacing"
    if min(first.pixel_spacing_mm) <= 0:
        values = "\\".join(f"{v:g}" for v in first.pixel_spacing_mm)
        return f"PixelSpacing {values} is not a positive size"
    if first.samples_per_pixel != 1:
        return "colour image (secondary capture)"
    if group.n_slices < 2:
        return "single slice (scout or key image)"
    if not group.is_axial:
        return f"{group.plane} plane (reformat or localizer), not axial"
    return None


def readable_on_request(group: SeriesGroup) -> bool:
    """Whether a group can still be read when asked for by UID.

    Groups excluded from the default only for their plane (a reformat) or for being a localizer
    with several slices are real volumes; other exclusions (not CT, no geometry, one slice, a
    report) make a volume impossible.

    Examples
    --------
    Needs DICOM headers, so not run here::

        groups = group_series(scan_folder("/data/head_ct/study_1").headers)
        [g.group_id for g in groups if readable_on_request(g)]   # what ``--series`` may name
    """
    reason = group.excluded_reason
    return reason is None or "not axial" in reason or reason == "localizer/scout"


def rank_key(group: SeriesGroup) -> tuple[Any, ...]:
    """Sort key: lower is better (see the module docstring for the rule)."""
    kernel_rank = {"soft": 0, "unknown": 1, "sharp": 2}[group.kernel_class]
    thickness = group.slice_thickness_mm
    spacing = group.slice_spacing_mm
    thin = thickness if thickness else (spacing if spacing else 1e9)
    number = group.first.series_number if group.first.series_number is not None else 1 << 30
    return (1 if group.is_derived else 0, kernel_rank, round(thin, 2), -group.n_slices, number)


def choose_default(groups: list[SeriesGroup]) -> SeriesGroup | None:
    """The diagnostic axial series a reader would choose, or ``None`` when there is no candidate.

    Examples
    --------
    Needs DICOM headers, so not run here::

        best = choose_default(group_series(scan_folder("/data/head_ct/study_1").headers))
        best.kernel, best.slice_thickness_mm if best is not None else None
    """
    candidates = [g for g in groups if g.excluded_reason is None]
    if not candidates:
        return None
    return min(candidates, key=rank_key)


def describe_no_candidate(groups: list[SeriesGroup]) -> str:
    """A reason sentence for a folder with DICOM but no usable CT series."""
    if not groups:
        return "no DICOM image series found"
    modalities = sorted({g.modality or "unknown" for g in groups})
    if "CT" not in modalities:
        return f"no CT series: found modality {', '.join(modalities)} (ichct reads CT only)"
    reasons = sorted({g.excluded_reason or "" for g in groups})
    return "no usable axial CT series: " + "; ".join(
        f"{sum(1 for g in groups if g.excluded_reason == r)} series excluded as {r}" for r in reasons
    )
