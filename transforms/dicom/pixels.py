"""Decode the pixel data of a slice stack into Hounsfield units.

Decoding (compressed transfer syntaxes, BitsStored < BitsAllocated, signed/unsigned pixels) is
pydicom's, with the pylibjpeg plugins (JPEG Lossless, JPEG 2000, RLE) or GDCM when present.
What is done here: per-slice RescaleSlope/RescaleIntercept (they may differ between slices),
PixelPaddingValue (and PixelPaddingRangeLimit) to air, and writing straight into one preallocated
volume so that peak memory stays close to the volume size.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from .headers import SliceHeader, assumed_pixel_representation, ensure_transfer_syntax
from .validation import quiet_pydicom_values

logger = logging.getLogger(__name__)

AIR_HU = -1024.0
INT16_MIN, INT16_MAX = -32768, 32767


def _is_integral(value: float) -> bool:
    return float(value).is_integer()


def rescale_of(h: SliceHeader) -> tuple[float, float]:
    """(slope, intercept) of a frame; a missing pair means stored values are HU (slope 1, intercept 0)."""
    slope = 1.0 if h.rescale_slope is None or h.rescale_slope == 0 else float(h.rescale_slope)
    intercept = 0.0 if h.rescale_intercept is None else float(h.rescale_intercept)
    return slope, intercept


def lossless_int16_possible(headers: list[SliceHeader]) -> bool:
    """True when every frame's rescale is integral, so HU are integers (int16 storage is exact)."""
    return all(_is_integral(s) and _is_integral(i) for s, i in map(rescale_of, headers))


def read_dataset(path: str, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """A DICOM file, also one without the 128-byte preamble or file meta (old archives).

    Public archives drop even Type 1 attributes of the Image Pixel module; what a CT image's
    pixels need is filled in as the slice header records it:

    - SamplesPerPixel: 1, and PhotometricInterpretation: MONOCHROME2 (for grey-scale pixels it
      only says how to display them, never what the stored values, hence the HU, are);
    - BitsAllocated: from the length of uncompressed pixel data (8, 16 or 32 bits a pixel);
    - BitsStored: BitsAllocated (with HighBit one less);
    - PixelRepresentation: :func:`~ichct.transforms.dicom.headers.assumed_pixel_representation`.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    ensure_transfer_syntax(ds)  # also after "DICM" with no file meta, or one without TransferSyntaxUID
    if ds.get("SamplesPerPixel") in (None, "") and str(ds.get("PhotometricInterpretation") or "MONOCHROME").startswith("MONOCHROME"):
        ds.SamplesPerPixel = 1
    if not ds.get("PhotometricInterpretation") and ds.get("SamplesPerPixel", 1) in (None, "", 1):
        ds.PhotometricInterpretation = "MONOCHROME2"
    if ds.get("BitsAllocated") in (None, ""):
        ds.BitsAllocated = _bits_allocated_from_length(ds)
    if ds.get("BitsStored") in (None, "") and ds.get("BitsAllocated") not in (None, ""):
        # all allocated bits hold the value (the header record assumes the same; the reader warns,
        # and the HU check catches a 12-bit two's complement read as 16 bits)
        ds.BitsStored, ds.HighBit = int(ds.BitsAllocated), int(ds.BitsAllocated) - 1
    if ds.get("PixelRepresentation") in (None, ""):
        ds.PixelRepresentation = assumed_pixel_representation(
            _number(ds.get("BitsStored")), _number(ds.get("RescaleSlope")), _number(ds.get("RescaleIntercept")))
    return ds


def _number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _bits_allocated_from_length(ds: pydicom.Dataset) -> int:
    """Bits a pixel from the length of uncompressed pixel data (16 when it cannot be told)."""
    element = ds.get_item("PixelData") if "PixelData" in ds else None
    pixels = (int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * int(ds.get("NumberOfFrames") or 1)
              * int(ds.get("SamplesPerPixel") or 1))
    value = getattr(element, "value", None)
    if not pixels or not isinstance(value, (bytes, bytearray)) or ds.file_meta.TransferSyntaxUID.is_compressed:
        return 16
    bits = len(value) * 8 // pixels
    return bits if bits in (8, 16, 32) else 16


class FrameSource:
    """Reads frames from files, decoding each multi-frame file once."""

    def __init__(self) -> None:
        self._multiframe_cache: dict[str, np.ndarray] = {}

    def frame(self, h: SliceHeader) -> np.ndarray:
        """The stored (not rescaled) values of one frame, shape (rows, columns)."""
        if h.frame_index is None:
            ds = read_dataset(h.path)
            arr = ds.pixel_array
            if arr.ndim == 3:  # a single-frame object stored with NumberOfFrames=1 header quirks
                arr = arr[0]
            return arr
        cached = self._multiframe_cache.get(h.path)
        if cached is None:
            ds = read_dataset(h.path)
            cached = ds.pixel_array
            if cached.ndim == 2:
                cached = cached[None]
            self._multiframe_cache[h.path] = cached
        return cached[h.frame_index]

    def preload(self, headers: list[SliceHeader]) -> None:
        """Decode each multi-frame file once up front (so threads do not race to decode it)."""
        for path in dict.fromkeys(h.path for h in headers if h.frame_index is not None):
            if path not in self._multiframe_cache:
                arr = read_dataset(path).pixel_array
                self._multiframe_cache[path] = arr[None] if arr.ndim == 2 else arr


def _as_stored(value: int, h: SliceHeader) -> int:
    """Read a padding value the way the pixels are stored (some files write -2000 as US 63536)."""
    bits = h.bits_allocated if h.bits_allocated in (8, 16, 32) else 16
    if h.pixel_representation == 1 and value >= 1 << (bits - 1):
        return value - (1 << bits)
    if h.pixel_representation == 0 and value < 0:
        return value + (1 << bits)
    return value


def padding_mask(stored: np.ndarray, h: SliceHeader) -> np.ndarray | None:
    """Boolean mask of padding pixels (outside the reconstructed field of view), or None."""
    if h.pixel_padding_value is None:
        return None
    value = _as_stored(h.pixel_padding_value, h)
    if h.pixel_padding_range_limit is not None:
        lo, hi = sorted((value, _as_stored(h.pixel_padding_range_limit, h)))
        return (stored >= lo) & (stored <= hi)
    return stored == value


def to_hu(stored: np.ndarray, h: SliceHeader) -> tuple[np.ndarray, int]:
    """Rescale one frame to HU (float32) and set padding pixels to air; returns (hu, n_padded)."""
    slope, intercept = rescale_of(h)
    hu = stored.astype(np.float32)
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    mask = padding_mask(stored, h)
    n_padded = 0
    if mask is not None:
        n_padded = int(mask.sum())
        if n_padded:
            hu[mask] = AIR_HU
    return hu, n_padded


@quiet_pydicom_values()  # pydicom would warn per file about non-conforming values while decoding
def read_stack(
    headers: list[SliceHeader],
    order: list[int],
    workers: int = 4,
    want_int16: bool = True,
    on_error=None,
    progress: bool = False,
) -> tuple[np.ndarray, int, list[int]]:
    """Decode the frames ``headers[order]`` into a (slices, rows, columns) HU array.

    Returns the array (int16 when ``want_int16`` and every value fits, else float32), the number
    of padding pixels set to air, and the positions in ``order`` whose file could not be decoded
    (their planes are left at air; the caller drops them and re-plans the geometry).

    Worker threads decode and write their plane straight into the preallocated volume, so peak
    memory is the volume plus one plane per thread.
    """
    rows, cols = headers[order[0]].rows, headers[order[0]].columns
    volume = np.empty((len(order), rows, cols), dtype=np.int16 if want_int16 else np.float32)
    source = FrameSource()
    try:
        source.preload([headers[i] for i in order])
    except Exception as exc:  # noqa: BLE001 - reported per frame below
        logger.debug("multi-frame preload failed: %s", exc)

    def work(position: int) -> tuple[int, int, str | None, bool]:
        h = headers[order[position]]
        try:
            stored = source.frame(h)
        except Exception as exc:  # noqa: BLE001 - one bad file must not sink the series
            volume[position] = AIR_HU
            return position, 0, f"{type(exc).__name__}: {exc}", False
        if stored.shape != (rows, cols):
            volume[position] = AIR_HU
            return position, 0, f"pixel matrix {stored.shape} differs from {(rows, cols)}", False
        hu, n_pad = to_hu(stored, h)
        if volume.dtype == np.int16:
            if float(hu.min()) < INT16_MIN or float(hu.max()) > INT16_MAX:
                return position, n_pad, None, True
            volume[position] = np.rint(hu)
        else:
            volume[position] = hu
        return position, n_pad, None, False

    bar = tqdm(total=len(order), desc="decoding slices", unit="slice", disable=not progress, leave=False)
    results = []
    if workers <= 1 or len(order) < 4:
        for position in range(len(order)):
            results.append(work(position))
            bar.update()
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(work, range(len(order))):
                results.append(result)
                bar.update()
    bar.close()
    if any(overflow for *_, overflow in results):
        del volume
        return read_stack(headers, order, workers=workers, want_int16=False, on_error=on_error, progress=progress)
    failed: list[int] = []
    for position, _n_pad, err, _overflow in results:
        if err is not None:
            path = headers[order[position]].path
            logger.warning("skipped %s: pixel data cannot be decoded (%s)", path, err)
            failed.append(position)
            if on_error is not None:
                on_error(path, err)
    return volume, sum(r[1] for r in results), failed
