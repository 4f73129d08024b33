"""HU sanity check of a decoded series: does air sit where air belongs (about -1000 HU)?

Why
---
A CT series whose stored values are mapped to HU wrongly still decodes without any error, and
every later step (windowing, the model, volumes in mL) silently works on wrong numbers. Air is the
one reference every head CT carries, so it is what is checked. Refusing data merely because it
has no air would reject legitimate inputs (test phantoms, tightly cropped volumes), so a rule
acts only on positive evidence of a wrong mapping; anything else passes unchanged.

How
---
Statistics come from a strided subsample of the volume (every 4th row and column of a 512 x 512
slice, at most 64 slices), after the declared per-slice rescale. Padding outside the field of
view never counts as air: values at or below -1500 HU (scanners write -2000, -2048 or -3024 there)
and, on slices that declare ``PixelPaddingValue``, the -1024 HU the reader wrote for it, are left
out. "Air" is the band [-1150, -850] HU. Three outcomes, recorded under ``hu_check`` in the sidecar:

``none``
    Air near -1000 HU, or no air at all (nothing to check against): values are passed unchanged.

``12-bit two's-complement wrap`` (the bit count is the series' BitsStored)
    Some files, among them part of the RSNA 2019 intracranial haemorrhage challenge data, declare
    unsigned pixels (PixelRepresentation 0) with BitsStored < 16 and a RescaleIntercept above
    -100, yet hold the HU as two's-complement numbers of BitsStored bits: true HU ``h`` is stored
    as ``(h - intercept) mod 2**BitsStored``, so air (-1000) is stored near 3096 and reads as
    about +3096 HU. Detected when every slice has that header pattern, the declared reading holds
    (almost) no air (< 0.1 % of the sampled voxels), at least 1 % of voxels read above +2000 HU,
    and at least 1 % would fall in the air band if the stored values were read as two's
    complement. Correction: every value at or above ``2**(BitsStored-1) * slope + intercept``
    (a stored value with its sign bit set) has ``2**BitsStored * slope`` subtracted, per slice
    with that slice's own rescale, which is reading the pixels as PixelRepresentation 1. After
    the correction the air median must lie within [-1080, -920] HU and fewer voxels may sit just
    below the air band (-1500..-1150 HU) than in it; otherwise the series is refused. True values
    above ``2**(BitsStored-1) - 1 + intercept`` HU (metal) cannot be told apart and read negative.

refused: air at 0 HU
    Stored values that are unsigned CT numbers (air at 0, water at about +1024) read with a
    RescaleIntercept of 0 or none: no value below -50 HU, at least 1 % of voxels within
    [-50, 50] HU and at least 10 % within [980, 1100] HU (brain, blood, CSF), every slice's
    intercept 0 or missing. Such a series raises :class:`DicomIngestError`. It is not corrected
    because the offset is not knowable from the pixels: both 1000 and 1024 are in use, and a
    24 HU error is the difference between brain and fresh blood.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DicomIngestError
from .headers import SliceHeader
from .pixels import AIR_HU, rescale_of

RULE_NONE = "none"
AIR_BAND_HU = (-1150.0, -850.0)
AIR_VERIFY_HU = (-1080.0, -920.0)
PADDING_AT_OR_BELOW_HU = -1500.0
WRAP_MAX_INTERCEPT = -100.0
HIGH_HU = 2000.0
MIN_SHARE = 0.01
NO_AIR_SHARE = 0.001
ZERO_BAND_HU = (-50.0, 50.0)
TISSUE_BAND_HU = (980.0, 1100.0)
MIN_TISSUE_SHARE = 0.10
SAMPLE_INPLANE = 128  # sampled rows and columns per slice (at most about this many)
SAMPLE_SLICES = 64


def wrap_rule_name(bits_stored: int) -> str:
    """The rule's name as recorded in the sidecar, e.g. ``"12-bit two's-complement wrap"``."""
    return f"{bits_stored}-bit two's-complement wrap"


@dataclass
class HuCheck:
    """Outcome of :func:`check_hu`, written to the sidecar as ``hu_check``.

    Attributes
    ----------
    rule
        ``"none"`` or the name of the correction applied.
    air_hu
        Median HU of the sampled air voxels (after any correction), None without air.
    air_fraction
        Share of the sampled in-field-of-view voxels that are air.
    sampled_voxels, padding_voxels_excluded
        Voxels of the subsample used, and those left out as padding.
    detail
        One sentence saying what was seen and done.
    warning
        A line for the sidecar's ``warnings`` when a rule fired, else None.
    """

    rule: str
    air_hu: float | None
    air_fraction: float
    sampled_voxels: int
    padding_voxels_excluded: int
    detail: str
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready sidecar entry."""
        return {"rule": self.rule, "air_hu": self.air_hu, "air_fraction": self.air_fraction,
                "sampled_voxels": self.sampled_voxels, "padding_voxels_excluded": self.padding_voxels_excluded,
                "detail": self.detail}


@dataclass
class _Sample:
    """Sampled in-field-of-view values: as declared, and as read with the wrap rule (or None)."""

    declared: np.ndarray
    wrapped: np.ndarray | None
    n_padding: int


def wrap_parameters(frames: Sequence[SliceHeader]) -> list[tuple[float, float]] | None:
    """Per-frame ``(threshold_hu, span_hu)`` of the wrap rule, or None when it does not apply.

    The rule applies only when every frame declares unsigned pixels, one BitsStored below 16 and
    below BitsAllocated, a positive slope and an intercept above -100. A value at or above
    ``threshold_hu`` had its sign bit set when stored; reading it as two's complement subtracts
    ``span_hu``.
    """
    if not frames:
        return None
    bits = {h.bits_stored for h in frames}
    if len(bits) != 1:
        return None
    nbits = bits.pop()
    params = []
    for h in frames:
        slope, intercept = rescale_of(h)
        if h.pixel_representation != 0 or not 2 <= nbits < min(16, h.bits_allocated) or slope <= 0:
            return None
        if intercept <= WRAP_MAX_INTERCEPT:
            return None
        params.append(((2 ** (nbits - 1) - 0.5) * slope + intercept, float(2**nbits) * slope))
    return params


def unwrap(stack: np.ndarray, frames: Sequence[SliceHeader]) -> bool:
    """Apply the wrap correction in place to ``stack`` (slices, rows, columns) read from ``frames``.

    Returns False (and leaves the stack alone) when the rule does not apply to these frames.
    """
    params = wrap_parameters(frames)
    if params is None:
        return False
    integral = np.issubdtype(stack.dtype, np.integer)
    for k, (threshold, span) in enumerate(params):
        plane = stack[k]
        step = np.asarray(round(span) if integral else span, dtype=stack.dtype)
        np.subtract(plane, step, out=plane, where=plane >= (math.ceil(threshold) if integral else threshold))
    return True


def _sample(stack: np.ndarray, frames: Sequence[SliceHeader], params: list[tuple[float, float]] | None) -> _Sample:
    """Strided subsample of the in-field-of-view values (see the module docstring)."""
    n, rows, cols = stack.shape
    step = max(1, math.ceil(min(rows, cols) / SAMPLE_INPLANE))
    kstep = max(1, math.ceil(n / SAMPLE_SLICES))
    declared, wrapped, n_padding = [], [], 0
    for k in range(0, n, kstep):
        plane = stack[k, ::step, ::step].astype(np.float32).ravel()
        keep = plane > PADDING_AT_OR_BELOW_HU
        if frames[k].pixel_padding_value is not None:
            keep &= plane != np.float32(AIR_HU)
        n_padding += int(plane.size - np.count_nonzero(keep))
        values = plane[keep]
        declared.append(values)
        if params is not None:
            threshold, span = params[k]
            wrapped.append(np.where(values >= threshold, values - np.float32(span), values))
    return _Sample(_concat(declared), _concat(wrapped) if params is not None else None, n_padding)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def _share(values: np.ndarray, lo: float, hi: float) -> float:
    return float(np.count_nonzero((values >= lo) & (values <= hi))) / values.size if values.size else 0.0


def _air(values: np.ndarray) -> tuple[float | None, float]:
    """(median HU of the air voxels or None, air share) of in-field-of-view values."""
    lo, hi = AIR_BAND_HU
    air = values[(values >= lo) & (values <= hi)]
    share = air.size / values.size if values.size else 0.0
    return (round(float(np.median(air)), 1) if air.size else None), round(share, 5)


def _refuse_air_at_zero(s: _Sample, frames: Sequence[SliceHeader], where: str | Path, series_uid: str) -> None:
    """Raise when the values look like unsigned CT numbers read with intercept 0 (see module doc)."""
    values = s.declared
    if values.size == 0 or any(h.rescale_intercept not in (None, 0.0) for h in frames):
        return
    if float(values.min()) < ZERO_BAND_HU[0]:
        return
    if _share(values, *ZERO_BAND_HU) < MIN_SHARE or _share(values, *TISSUE_BAND_HU) < MIN_TISSUE_SHARE:
        return
    zero = values[(values >= ZERO_BAND_HU[0]) & (values <= ZERO_BAND_HU[1])]
    tissue = values[(values >= TISSUE_BAND_HU[0]) & (values <= TISSUE_BAND_HU[1])]
    intercept = "missing" if any(h.rescale_intercept is None for h in frames) else "0"
    raise DicomIngestError(where, (
        f"series {series_uid}: air sits at about {float(np.median(zero)):.0f} HU after rescale, tissue at about "
        f"+{float(np.median(tissue)):.0f}: RescaleIntercept ({intercept}) is probably wrong (expected about -1024); "
        "fix the header (RescaleIntercept -1024, or -1000 if that is the scanner's offset) or re-export the series "
        "from the scanner or PACS, then convert again"))


def _wrap_evidence(s: _Sample) -> bool:
    """True when the declared reading has no air but the two's-complement reading has (module doc)."""
    if s.wrapped is None or s.declared.size == 0:
        return False
    return (_share(s.declared, *AIR_BAND_HU) < NO_AIR_SHARE
            and _share(s.declared, HIGH_HU, np.inf) >= MIN_SHARE
            and _share(s.wrapped, *AIR_BAND_HU) >= MIN_SHARE)


def _wrap_outcome(stack: np.ndarray, frames: Sequence[SliceHeader], s: _Sample, where: str | Path,
                  series_uid: str) -> HuCheck:
    """Verify the wrap correction on the sample, apply it to ``stack`` and describe it."""
    assert s.wrapped is not None
    after = s.wrapped[s.wrapped > PADDING_AT_OR_BELOW_HU]
    air_hu, air_share = _air(after)
    below = _share(after, PADDING_AT_OR_BELOW_HU, AIR_BAND_HU[0] - 1e-3)
    rule = wrap_rule_name(frames[0].bits_stored)
    high = 100.0 * _share(s.declared, HIGH_HU, np.inf)
    intercepts = sorted({rescale_of(h)[1] for h in frames})
    seen = (f"PixelRepresentation 0, BitsStored {frames[0].bits_stored}, RescaleIntercept "
            f"{'/'.join(f'{c:g}' for c in intercepts)}; {high:.1f}% of voxels read above +{HIGH_HU:.0f} HU "
            "and none as air")
    if air_hu is None or not AIR_VERIFY_HU[0] <= air_hu <= AIR_VERIFY_HU[1] or below > air_share:
        found = f"air at {air_hu:.0f} HU" if air_hu is not None else "no air"
        raise DicomIngestError(where, (
            f"series {series_uid}: the pixel values look wrapped ({seen}), but reading them as two's complement "
            f"does not put air at -1000 HU either ({found}, {100 * below:.1f}% of voxels between -1500 and "
            f"-1150 HU); refusing to guess the HU mapping"))
    unwrap(stack, frames)
    detail = (f"{seen}; stored values with the sign bit set were read as two's complement "
              f"(PixelRepresentation 1): air now at {air_hu:.0f} HU")
    warning = (f"HU corrected by the rule '{rule}': {seen}; the pixel data was read as signed, which puts air at "
               f"{air_hu:.0f} HU")
    n_padding = s.n_padding + int(s.wrapped.size - after.size)
    return HuCheck(rule, air_hu, air_share, int(after.size), n_padding, detail, warning)


def check_hu(stack: np.ndarray, frames: Sequence[SliceHeader], where: str | Path, series_uid: str) -> HuCheck:
    """Check (and, by a documented rule, correct in place) the HU of a decoded slice stack.

    Parameters
    ----------
    stack
        HU array (slices, rows, columns) as :func:`~ichct.transforms.dicom.pixels.read_stack`
        returns it, before any resampling; corrected in place when a rule fires.
    frames
        The header of each plane of ``stack``, in the same order.
    where, series_uid
        Folder and series named in error messages.

    Returns
    -------
    HuCheck
        What was found and done (see the module docstring for the rules).

    Raises
    ------
    DicomIngestError
        Air at 0 HU (intercept missing or 0), or a wrap that the correction does not explain.
    """
    s = _sample(stack, frames, wrap_parameters(frames))
    _refuse_air_at_zero(s, frames, where, series_uid)
    if _wrap_evidence(s):
        return _wrap_outcome(stack, frames, s, where, series_uid)
    air_hu, air_share = _air(s.declared)
    if s.declared.size == 0:
        detail = "no voxel inside the field of view to check"
    elif air_hu is None:
        detail = "no air in the field of view (a phantom or a cropped volume): nothing to check against; " \
                 "values unchanged"
    else:
        detail = f"air at {air_hu:.0f} HU; values unchanged"
    return HuCheck(RULE_NONE, air_hu, air_share, int(s.declared.size), s.n_padding, detail)
