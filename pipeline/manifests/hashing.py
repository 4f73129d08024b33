"""Content hashes of image pixel data, so that a copy of a series under new UIDs is still recognised.

* DICOM: each file's decoded pixel array (dtype, shape and values; raw PixelData bytes when no
  decoder is available) is hashed; the series hash is the SHA-256 of the sorted file hashes, so
  file names, UIDs, headers and file order do not matter.
* NIfTI: the voxel array (dtype, shape and values) from ``nibabel``'s ``dataobj``.

Hashes are cached per file, keyed by real path, size and modification time, in a small SQLite
database: ``$ICHCT_CACHE_DIR`` or ``$XDG_CACHE_HOME/ichct`` or ``~/.cache/ichct``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ichct.errors import USER_PATH_ERRORS, InputError
from ichct.transforms.dicom.headers import SliceHeader
from ichct.transforms.dicom.validation import quiet_pydicom_values

logger = logging.getLogger(__name__)

CACHE_ENV = "ICHCT_CACHE_DIR"
_HASH_VERSION = "v1"


def default_cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "ichct"


class HashCache:
    """Per-file hash cache (SQLite). ``HashCache(None)`` or a cache that cannot be opened is a no-op."""

    def __init__(self, folder: str | Path | None) -> None:
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if folder is None:
            return
        try:
            folder = Path(folder)
            folder.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(folder / "pixel_hashes.sqlite"), timeout=30, check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, digest TEXT)")
            self._db.execute("CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, value TEXT)")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            logger.debug("pixel hash cache disabled: %s", exc)
            self._db = None

    @classmethod
    def default(cls) -> HashCache:
        return cls(default_cache_dir())

    @staticmethod
    def _key(path: Path, kind: str) -> tuple[str, int, int]:
        real = os.path.realpath(path)
        st = os.stat(real)
        return f"{_HASH_VERSION}:{kind}:{real}", st.st_size, st.st_mtime_ns

    def get(self, path: Path, kind: str) -> str | None:
        if self._db is None:
            return None
        key, size, mtime = self._key(path, kind)
        with self._lock:
            try:
                row = self._db.execute("SELECT size, mtime_ns, digest FROM hashes WHERE path = ?", (key,)).fetchone()
            except sqlite3.Error:
                return None
        if row and row[0] == size and row[1] == mtime:
            return str(row[2])
        return None

    def put_many(self, items: Iterable[tuple[Path, str, str]]) -> None:
        if self._db is None:
            return
        rows = []
        for path, kind, digest in items:
            with contextlib.suppress(OSError):
                key, size, mtime = self._key(path, kind)
                rows.append((key, size, mtime, digest))
        if not rows:
            return
        with self._lock:
            try:
                self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", rows)
                self._db.commit()
            except sqlite3.Error as exc:
                logger.debug("pixel hash cache not updated: %s", exc)

    def put_stat_rows(self, kind: str, rows: Iterable[tuple[str, int, int, str]]) -> None:
        """Store hashes whose files were already looked at: ``(real path, size, mtime_ns, digest)`` rows."""
        if self._db is None:
            return
        values = [(f"{_HASH_VERSION}:{kind}:{real}", size, mtime, digest) for real, size, mtime, digest in rows]
        with self._lock:
            try:
                self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", values)
                self._db.commit()
            except sqlite3.Error as exc:
                logger.debug("pixel hash cache not updated: %s", exc)

    def get_fact(self, key: str) -> str | None:
        """A cached value derived from files (the key must change when the files do)."""
        if self._db is None:
            return None
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM facts WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error:
                return None
        return str(row[0]) if row else None

    def put_fact(self, key: str, value: str) -> None:
        if self._db is None:
            return
        with self._lock:
            try:
                self._db.execute("INSERT OR REPLACE INTO facts VALUES (?, ?)", (key, value))
                self._db.commit()
            except sqlite3.Error as exc:
                logger.debug("cache not updated: %s", exc)

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()
            self._db = None


def files_signature(files: Iterable[str | Path]) -> str:
    """Changes whenever one of ``files`` is replaced, edited, added or removed."""
    h = hashlib.sha256()
    for p in sorted({os.path.realpath(f) for f in files}):
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _array_digest(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def dicom_file_digest(path: str | Path, data: bytes | None = None) -> str:
    """Hash of one DICOM file's decoded pixel data (raw PixelData bytes when it cannot be decoded).

    ``data``: the file's bytes when already read (parsed from memory instead of the file).
    """
    import pydicom

    try:
        with quiet_pydicom_values():
            ds = pydicom.dcmread(str(path) if data is None else io.BytesIO(data))
    except USER_PATH_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - InvalidDicomError, a truncated file, a malformed element
        raise InputError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(path, "no pixel data")
    try:
        return _array_digest(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - no decoder for this transfer syntax: fall back to the stored bytes
        logger.debug("%s: pixel data not decoded (%s); hashing the stored bytes", path, exc)
        return "raw:" + hashlib.sha256(bytes(ds.PixelData)).hexdigest()


def pixel_digest_from_bytes(path: str | Path, data: bytes, header: SliceHeader, pixel_offset: int) -> str:
    """:func:`dicom_file_digest` of a file already read into ``data`` and parsed up to its pixel data.

    The common case (one frame of native little-endian integers, one sample per pixel) is hashed
    straight from the stored bytes, masked and sign-extended to ``BitsStored`` as pydicom decodes
    them, so the digest equals :func:`dicom_file_digest`'s; every other file is decoded by pydicom
    from ``data``.

    Examples
    --------
    Needs a DICOM file, so not run here::

        got = read_file_headers(path, data, fast=True)
        pixel_digest_from_bytes(path, data, got.headers[0], got.pixel_offset) == dicom_file_digest(path)
    """
    stored = _native_pixels(data, header, pixel_offset)
    if stored is None:
        return dicom_file_digest(path, data)
    return _array_digest(stored)


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_LITTLE_ENDIAN_NATIVE = {"1.2.840.10008.1.2": True, "1.2.840.10008.1.2.1": False}  # syntax -> implicit VR


def _native_pixels(data: bytes, h: SliceHeader, offset: int) -> np.ndarray | None:
    """The pixel array pydicom would decode, from the stored bytes; None when not the simple case."""
    implicit = _LITTLE_ENDIAN_NATIVE.get(h.transfer_syntax_uid)
    bits, stored_bits = h.bits_allocated, h.bits_stored
    if (implicit is None or h.frame_index is not None or h.number_of_frames != 1 or h.samples_per_pixel != 1
            or bits not in (8, 16, 32) or not 1 <= stored_bits <= bits or data[offset:offset + 4] != _PIXEL_DATA_TAG):
        return None
    if implicit:
        start, length = offset + 8, int.from_bytes(data[offset + 4:offset + 8], "little")
    elif data[offset + 4:offset + 6] in (b"OB", b"OW"):
        start, length = offset + 12, int.from_bytes(data[offset + 8:offset + 12], "little")
    else:
        return None
    n_bytes = h.rows * h.columns * (bits // 8)
    if n_bytes == 0 or length == 0xFFFFFFFF or length < n_bytes or len(data) < start + n_bytes:
        return None
    values = np.frombuffer(data, dtype=f"<u{bits // 8}", count=h.rows * h.columns, offset=start).reshape(h.rows, h.columns)
    if stored_bits < bits:
        values = values & np.array((1 << stored_bits) - 1, dtype=values.dtype)
    if h.pixel_representation != 1:
        return values
    signed = values.view(f"<i{bits // 8}")
    if stored_bits < bits:
        sign = 1 << (stored_bits - 1)
        signed = ((values ^ sign).astype(np.int64) - sign).astype(f"<i{bits // 8}")
    return signed


def nifti_digest(path: str | Path) -> str:
    """Hash of a NIfTI file's voxel array."""
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except USER_PATH_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - ImageFileError, a truncated gzip, a wrong header
        raise InputError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    return _array_digest(data)


def combine(digests: Sequence[str]) -> str:
    """Order-independent hash of a set of file hashes."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def dicom_series_digest(files: Sequence[str | Path], cache: HashCache | None = None, workers: int | None = None) -> str:
    """Hash of a DICOM series: SHA-256 of the sorted per-file pixel hashes."""
    digests = dicom_file_digests(files, cache, workers)
    return combine(list(digests.values()))


def dicom_file_digests(files: Sequence[str | Path], cache: HashCache | None = None, workers: int | None = None) -> dict[str, str]:
    """Per-file pixel hashes (cached); raises the first file's error when one cannot be read."""
    paths = sorted({str(f) for f in files})
    out: dict[str, str] = {}
    todo: list[str] = []
    for p in paths:
        cached = cache.get(Path(p), "dicom") if cache is not None else None
        if cached:
            out[p] = cached
        else:
            todo.append(p)
    if todo:
        n = workers or max(2, min(16, (os.cpu_count() or 2) * 2))
        if n <= 1 or len(todo) < 4:
            fresh = [dicom_file_digest(p) for p in todo]
        else:
            with ThreadPoolExecutor(max_workers=n) as pool:
                fresh = list(pool.map(dicom_file_digest, todo))
        out.update(zip(todo, fresh))
        if cache is not None:
            cache.put_many((Path(p), "dicom", d) for p, d in zip(todo, fresh))
    return out


def nifti_digest_cached(path: str | Path, cache: HashCache | None = None) -> str:
    cached = cache.get(Path(path), "nifti") if cache is not None else None
    if cached:
        return cached
    digest = nifti_digest(path)
    if cache is not None:
        cache.put_many([(Path(path), "nifti", digest)])
    return digest
