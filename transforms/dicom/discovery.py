"""Find DICOM files under a folder and read their headers, in parallel, without pixel data."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from .errors import DicomIngestError
from .fast_values import FastValues
from .headers import SliceHeader, ensure_transfer_syntax, file_meta_value, headers_from_dataset
from .part10_header import read_part10_header
from .validation import STAND_IN_SERIES_PREFIX, quiet_pydicom_values

logger = logging.getLogger(__name__)

# Files that are never images even when they parse as DICOM.
_SKIP_NAMES = {"DICOMDIR"}
# Suffixes that are certainly not DICOM; skipped without opening to keep scans of big trees fast.
_NOT_DICOM_SUFFIXES = {
    ".txt", ".csv", ".json", ".xml", ".html", ".htm", ".pdf", ".jpg", ".jpeg", ".png", ".gif", ".bmp",
    ".nii", ".gz", ".zip", ".md", ".py", ".log", ".ini", ".exe", ".dll", ".db", ".tsv", ".yaml", ".yml",
}


@dataclass
class SkippedFile:
    """A file that was not used, and why."""

    path: str
    reason: str


@dataclass
class FolderScan:
    """Result of scanning a folder: every frame header found and every file passed over."""

    root: str
    headers: list[SliceHeader] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    n_files_seen: int = 0


def default_workers() -> int:
    """Threads used for file I/O: enough to overlap reads, bounded for small machines."""
    return max(2, min(16, (os.cpu_count() or 2) * 2))


def list_candidate_files(root: Path) -> list[Path]:
    """All regular files under ``root`` (recursively), in a stable order."""
    if root.is_file():
        return [root]
    files: list[Path] = []
    seen_dirs: set[str] = set()
    # Symlinked series folders are common (XNAT, NAS exports, hand-made study folders): follow
    # them, but visit each real folder once so that a link loop cannot recurse forever.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            files.append(Path(dirpath) / name)
    return files


_DEFLATED = "1.2.840.10008.1.2.1.99"
_DIRECTORY_RECORDS = 0x00041220  # DirectoryRecordSequence: a DICOMDIR
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


#: Value representations of an explicit VR pixel data element (its element header is 12 bytes, not 8)
_EXPLICIT_PIXEL_VRS = frozenset({b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"})


@dataclass
class _Header:
    """A file's data set without pixel data, where reading stopped, and the bytes found there."""

    dataset: pydicom.Dataset
    stop_offset: int
    next_bytes: bytes = b""

    @property
    def pixel_element_header(self) -> int:
        """Bytes of the pixel data element's tag, VR and length, from the file itself: 12 with an
        explicit VR, else 8. The declared transfer syntax may be absent or say otherwise (a file
        meta that claims explicit VR over an implicit data set: pydicom reads it anyway)."""
        return 12 if self.next_bytes[4:6] in _EXPLICIT_PIXEL_VRS else 8


def _read_header(path: str | Path, force: bool, data: bytes | None = None) -> _Header:
    """Header without pixel data, and the file offset where reading stopped (the pixel data).

    ``data``: the file's bytes, already read (parsed from memory instead of the file, by
    :func:`.part10_header.read_part10_header` where it can: the header scan of a big folder).
    """
    if data is not None and not force:
        parsed = read_part10_header(data)
        if parsed is not None:
            return _Header(parsed[0], parsed[1], data[parsed[1]:parsed[1] + 6])
    with (open(path, "rb") if data is None else io.BytesIO(data)) as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=force)
        offset = fp.tell()
        return _Header(ds, offset, fp.read(6))


#: Image Pixel module elements (Rows, Columns, BitsAllocated): together, an image data set
_IMAGE_PIXEL_TAGS = (0x00280010, 0x00280011, 0x00280100)


def _looks_like_dicom(ds: pydicom.Dataset) -> bool:
    """Whether a data set read with ``force=True`` (no preamble, no "DICM") is DICOM, not parsed junk.

    It names its SOP class or series, or it carries the Image Pixel module: anonymised archives
    keep only pixels, geometry and rescale in some files, without any UID.
    """
    if "SOPClassUID" in ds or "SeriesInstanceUID" in ds:
        return True
    return all(tag in ds for tag in _IMAGE_PIXEL_TAGS)


def _is_image_storage(ds: pydicom.Dataset) -> bool:
    """True for SOP classes that carry pixel data (CT/MR/Enhanced/Secondary Capture Image Storage)."""
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or (getattr(meta, "MediaStorageSOPClassUID", "") if meta is not None else ""))
    try:
        return "Image Storage" in pydicom.uid.UID(sop).name
    except Exception:  # noqa: BLE001
        return False


def _truncation(header: _Header, path: str | Path, size: int | None = None,
                get: Callable[[str], Any] | None = None) -> str | None:
    """Why an image file is incomplete (cut inside its header or pixel data), or None.

    A complete image object has its pixel data after the header; a file that ends before it, or
    whose uncompressed pixel data is shorter than Rows x Columns x frames, was cut short.
    """
    ds, stop_offset = header.dataset, header.stop_offset
    get = get or ds.get
    if get("Rows") is None and not _is_image_storage(ds):
        return None  # not an image (report, DICOMDIR...)
    syntax = str((get.meta if isinstance(get, FastValues) else partial(file_meta_value, ds))("TransferSyntaxUID", "")
                 or "")
    if syntax == _DEFLATED:
        return None  # the stream was inflated into memory: offsets do not refer to the file
    size = os.stat(path).st_size if size is None else size
    remaining = size - stop_offset
    if remaining <= 8:
        return "truncated DICOM file: it ends before its pixel data"
    if syntax in _NATIVE or not syntax:
        try:
            rows, cols = int(get("Rows")), int(get("Columns"))
            bits = int(get("BitsAllocated") or 16)
            samples = int(get("SamplesPerPixel") or 1)
            frames = int(get("NumberOfFrames") or 1)
        except (TypeError, ValueError, AttributeError):
            return "incomplete DICOM header: Rows/Columns unreadable"
        needed = rows * cols * samples * frames * bits // 8
        held = remaining - header.pixel_element_header
        if held < needed:
            return f"truncated DICOM file: pixel data holds {max(held, 0)} of {needed} bytes"
    return None


@dataclass
class FileHeaders:
    """What one file gave: its frame headers, or why it was skipped; the parsed header and where its
    pixel data starts (for a caller that hashes the pixel data from the same bytes)."""

    headers: list[SliceHeader]
    skipped: SkippedFile | None
    dataset: pydicom.Dataset | None = None
    pixel_offset: int = 0


def _path_and_name(path: str | Path) -> tuple[str, str]:
    """``str(Path(path))`` (how headers and reasons name a file) and ``Path(path).name``, without building a
    Path for a string already in that form (a header scan of a big folder calls this per file)."""
    if (type(path) is str and os.sep == "/" and path not in ("", ".") and "//" not in path and "/./" not in path
            and not path.startswith("./") and not path.endswith(("/", "/."))):
        return path, path[path.rfind("/") + 1:]
    as_path = Path(path)
    return str(as_path), as_path.name


def read_file_headers(path: str | Path, data: bytes | None = None, *, fast: bool = False) -> FileHeaders:
    """Read one file's frame headers without its pixel data, as :func:`scan_folder` does for each file.

    Parameters
    ----------
    path
        The file (named in the headers and in the reason it was skipped).
    data
        The file's bytes when the caller has read them already (one read serves the header and a
        pixel hash); else the file is opened.
    fast
        Decode plain elements straight from their bytes (see :func:`~.headers.headers_from_dataset`).

    Examples
    --------
    Needs a DICOM file, so not run here::

        got = read_file_headers("/data/rsna/stage_2_train/ID_000012eaf.dcm", fast=True)
        got.skipped or got.headers[0].series_uid
    """
    path, name = _path_and_name(path)
    if name.upper() in _SKIP_NAMES:
        return FileHeaders([], SkippedFile(path, "DICOMDIR index (its referenced files are read directly)"))
    dot = name.rfind(".")  # pathlib's suffix: the last dot, not leading, not trailing
    if 0 < dot < len(name) - 1 and name[dot:].lower() in _NOT_DICOM_SUFFIXES:
        return FileHeaders([], SkippedFile(path, "not a DICOM file (file type)"))
    try:
        header = _read_header(path, False, data)
    except InvalidDicomError:
        # Files without the 128-byte preamble + "DICM" are rare but legal in old archives.
        try:
            header = _read_header(path, True, data)
        except Exception as exc:  # noqa: BLE001 - any parse failure means "skip this file"
            return FileHeaders([], SkippedFile(path, f"not a readable DICOM file ({type(exc).__name__})"))
        if not _looks_like_dicom(header.dataset):
            return FileHeaders([], SkippedFile(path, "not a DICOM file"))
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files are skipped, never fatal
        return FileHeaders([], SkippedFile(path, f"corrupt or truncated DICOM file ({type(exc).__name__}: {exc})"))
    ds, stop_offset = ensure_transfer_syntax(header.dataset), header.stop_offset  # "DICM" without file meta, too
    if _DIRECTORY_RECORDS in ds.keys():
        return FileHeaders([], SkippedFile(path, "DICOMDIR index (its referenced files are read directly)"))
    get = FastValues(ds) if fast else None
    truncated = _truncation(header, path, None if data is None else len(data), get)
    if truncated:
        return FileHeaders([], SkippedFile(path, truncated))
    try:
        headers = headers_from_dataset(ds, path, fast=get or False)
    except Exception as exc:  # noqa: BLE001
        return FileHeaders([], SkippedFile(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})"))
    if not headers:
        return FileHeaders([], SkippedFile(path, "DICOM file without images"))
    if not headers[0].series_uid:  # an archive dropped it: the file still belongs to a series
        for header in headers:
            header.series_uid = stand_in_series_uid(header)
    return FileHeaders(headers, None, ds, stop_offset)


def stand_in_series_uid(header: SliceHeader) -> str:
    """The series key of a file whose SeriesInstanceUID is absent or empty.

    Public archives drop even Type 1 attributes. Files of one folder, study, series number,
    modality, kernel and slice thickness are taken as one series (then split by geometry like any
    series); the key starts with :data:`STAND_IN_SERIES_PREFIX`, so it is never mistaken for a UID.

    Examples
    --------
    >>> from dataclasses import replace
    >>> h = SliceHeader(path="/data/ct/1.dcm", frame_index=None, series_uid="", sop_instance_uid="",
    ...                 sop_class_uid="", modality="CT", transfer_syntax_uid="", rows=2, columns=2)
    >>> key = stand_in_series_uid(h)
    >>> key.startswith(STAND_IN_SERIES_PREFIX), key == stand_in_series_uid(replace(h, path="/data/ct/2.dcm"))
    (True, True)
    """
    parts = (os.path.dirname(os.path.abspath(header.path)), header.study_uid, header.series_number, header.modality,
             header.convolution_kernel, header.slice_thickness_mm)
    digest = hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:16]
    return STAND_IN_SERIES_PREFIX + digest


def _read_one(path: Path) -> tuple[list[SliceHeader], SkippedFile | None]:
    got = read_file_headers(path)
    return got.headers, got.skipped


def scan_folder(path: str | Path, workers: int | None = None, progress: bool = False) -> FolderScan:
    """Read the headers of every DICOM file under ``path``.

    Non-DICOM, truncated or corrupt files are skipped with a warning that names the file; they
    never stop the scan.

    Parameters
    ----------
    path
        A folder (searched recursively, any file names, DICOMDIR allowed) or a single DICOM file
        (a DICOMDIR file stands for its folder).
    workers
        Threads for reading headers; default :func:`default_workers`.
    progress
        Show a progress bar (tqdm, on stderr) while reading headers.

    Raises
    ------
    DicomIngestError
        When ``path`` does not exist or holds no file at all.

    Examples
    --------
    Needs a DICOM folder, so not run here::

        from ichct.transforms.dicom import group_series, scan_folder

        scan = scan_folder("/data/head_ct/study_1", workers=4)
        len(scan.headers), [s.path for s in scan.skipped]
        for group in group_series(scan.headers):
            print(group.summary())
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise DicomIngestError(root, "does not exist")
    if root.is_file() and root.name.upper() == "DICOMDIR":
        root = root.parent
    files = list_candidate_files(root)
    scan = FolderScan(root=str(root), n_files_seen=len(files))
    if not files:
        raise DicomIngestError(root, "is empty: no files found")
    n_workers = workers or default_workers()
    bar = tqdm(total=len(files), desc="reading headers", unit="file", disable=not progress, leave=False)
    # pydicom would warn once per file about non-conforming values (RSNA's 'ID_<hex>' UIDs); the
    # reader says it once per series instead (validation.nonconforming_uid_summary).
    with quiet_pydicom_values():
        if n_workers <= 1 or len(files) < 8:
            results = []
            for f in files:
                results.append(_read_one(f))
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=n_workers) as pool:
                results = []
                for result in pool.map(_read_one, files, chunksize=16):
                    results.append(result)
                    bar.update()
    bar.close()
    for headers, skipped in results:
        scan.headers.extend(headers)
        if skipped is not None:
            scan.skipped.append(skipped)
            if not skipped.reason.startswith("DICOMDIR"):
                logger.warning("skipped %s: %s", skipped.path, skipped.reason)
    return scan
