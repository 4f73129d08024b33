"""Find DICOM files under a folder and read their headers, in parallel, without pixel data."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from .errors import DicomIngestError
from .headers import SliceHeader, headers_from_dataset

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
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            files.append(Path(dirpath) / name)
    return files


def _read_one(path: Path) -> tuple[list[SliceHeader], SkippedFile | None]:
    if path.name.upper() in _SKIP_NAMES:
        return [], SkippedFile(str(path), "DICOMDIR index (its referenced files are read directly)")
    if path.suffix.lower() in _NOT_DICOM_SUFFIXES:
        return [], SkippedFile(str(path), "not a DICOM file (file type)")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=False)
    except InvalidDicomError:
        # Files without the 128-byte preamble + "DICM" are rare but legal in old archives.
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure means "skip this file"
            return [], SkippedFile(str(path), f"not a readable DICOM file ({type(exc).__name__})")
        if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
            return [], SkippedFile(str(path), "not a DICOM file")
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files are skipped, never fatal
        return [], SkippedFile(str(path), f"corrupt or truncated DICOM file ({type(exc).__name__}: {exc})")
    if "DirectoryRecordSequence" in ds:
        return [], SkippedFile(str(path), "DICOMDIR index (its referenced files are read directly)")
    try:
        headers = headers_from_dataset(ds, str(path))
    except Exception as exc:  # noqa: BLE001
        return [], SkippedFile(str(path), f"unreadable DICOM header ({type(exc).__name__}: {exc})")
    if not headers or not headers[0].series_uid:
        return [], SkippedFile(str(path), "DICOM file without SeriesInstanceUID")
    return headers, None


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
