"""The header scan of ``manifest build`` as Dask tasks: each file read once, header and pixel hash together.

A flat folder of hundreds of thousands of slices (RSNA's 752,803 files) is cut into batches of a
few thousand paths; each batch is one Dask task (:func:`scan_batch`) that reads every file's
bytes once, parses the header from them (:func:`~ichct.transforms.dicom.discovery.read_file_headers`,
plain elements decoded straight from their bytes) and hashes the pixel data from the same bytes
(:func:`.hashing.pixel_digest_from_bytes`). The batches' results come back in the order of the
file list, so the scan (and the manifest built from it) does not depend on the number of workers.
A handful of files is scanned in this process: starting a cluster would cost more than the scan.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any
from urllib.parse import urlsplit

from ichct.errors import InputError
from ichct.pipeline.core.cluster import ClusterSpec, dask_client
from ichct.transforms.dicom import SkippedFile, SliceHeader
from ichct.transforms.dicom.discovery import read_file_headers
from ichct.transforms.dicom.validation import quiet_pydicom_values

from .hashing import HashCache, pixel_digest_from_bytes

logger = logging.getLogger(__name__)

#: Paths per Dask task (at most): big enough that a task's overhead is small, small enough to
#: spread a folder over the workers and keep each result small.
BATCH_FILES = 2000
#: Below this many files the scan runs in this process (unless a client is given).
IN_PROCESS_BELOW = 1500
#: The mark of a pixel hash that failed: the rest of the entry is the reason.
FAILED = "!"


@dataclass
class FileScan:
    """What a scan of a file list found.

    ``digests`` maps each readable file's path to its pixel hash (``"!reason"`` when its pixel
    data could not be read); ``seconds`` is the scan's wall time.
    """

    headers: list[SliceHeader] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    n_files: int = 0
    seconds: float = 0.0
    workers: int = 0
    #: one copy of each repeating header value (see :func:`_share_values`)
    shared: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def files_per_s(self) -> float:
        return self.n_files / self.seconds if self.seconds > 0 else 0.0


def scan_batch(paths: Sequence[str], with_pixels: bool) -> list[tuple[Any, ...]]:
    """One Dask task: ``(headers or skip reason, pixel hash, size, mtime_ns, real path)`` for each file of
    ``paths``, in order.

    Compact for the trip back to the client: the path is not repeated (the client has ``paths``; the
    headers name the very same string), the real path is None where it is the path itself, and
    size and mtime (the pixel-hash cache key) are None without ``with_pixels``.

    Examples
    --------
    >>> scan_batch(["/nonexistent/ID_0.dcm"], with_pixels=True)[0][0].startswith("unreadable file")
    True
    """
    with quiet_pydicom_values():
        return [_scan_file(path, with_pixels) for path in paths]


def _scan_file(path: str, with_pixels: bool) -> tuple[Any, ...]:
    try:
        data, stat = _read_file(path)
    except OSError as exc:
        return f"unreadable file ({type(exc).__name__}: {exc.strerror or exc})", None, None, None, None
    got = read_file_headers(path, data, fast=True)
    if got.skipped is not None:
        return got.skipped.reason, None, None, None, None
    for header in got.headers:
        if header.path == path:
            header.path = path  # the same string object: pickled once
    if not with_pixels:
        return got.headers, None, None, None, None
    try:
        digest = pixel_digest_from_bytes(path, data, got.headers[0], got.pixel_offset)
    except InputError as exc:
        digest = FAILED + exc.reason
    real = _real_path(path)
    return got.headers, digest, stat.st_size, stat.st_mtime_ns, (None if real == path else real)


def _read_file(path: str) -> tuple[bytes, os.stat_result]:
    """The file's bytes and its status (as read: the pixel-hash cache key), with plain system calls."""
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = os.fstat(fd)
        data = os.read(fd, stat.st_size + 1)  # a short read of a regular file is its end
        if len(data) > stat.st_size:  # it grew since fstat: read to its end
            data += b"".join(iter(partial(os.read, fd, 1 << 20), b""))
    finally:
        os.close(fd)
    return data, stat


def _real_path(path: str) -> str:
    """``os.path.realpath(path)``, resolving each folder once (a flat folder has one)."""
    if os.path.islink(path):
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    return os.path.join(_real_folder(folder), name)


@lru_cache(maxsize=64)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def scan_files(files: Sequence[str | os.PathLike[str]], *, with_pixels: bool = True, cache: HashCache | None = None,
               cluster: ClusterSpec | None = None, client: Any = None, workers: int | None = None,
               batch_files: int | None = None, in_process_below: int | None = None) -> FileScan:
    """Read every file's header (and pixel hash) once, as Dask tasks of ``batch_files`` paths.

    Parameters
    ----------
    files
        The files, in the order the results keep.
    with_pixels
        Also hash each file's pixel data (see :mod:`.hashing`), from the same bytes.
    cache
        Pixel-hash cache that receives every hash (for a later ``manifest check``).
    cluster, client
        Where the tasks run: a connected ``distributed.Client``, else a cluster started for the
        scan from ``cluster`` (default: a LocalCluster sized to the machine). Without a client or
        a scheduler address, fewer than ``in_process_below`` files are scanned in this process.
    workers
        Worker processes of the LocalCluster started when neither ``cluster`` nor ``client`` is given.

    Examples
    --------
    >>> scan_files([]).n_files
    0
    """
    paths = [os.fspath(f) for f in files]
    cluster = cluster or (ClusterSpec(workers=workers) if workers else None)
    batch_files = batch_files or BATCH_FILES
    in_process_below = IN_PROCESS_BELOW if in_process_below is None else in_process_below
    scan = FileScan(n_files=len(paths))
    start = time.perf_counter()
    if client is None and len(paths) < in_process_below and not (cluster and cluster.resolved_scheduler()):
        _merge(scan, paths, scan_batch(paths, with_pixels), cache)
        scan.workers = 1
    else:
        with _client(cluster, client) as active:
            scan.workers = max(1, len(active.nthreads()))
            for batch, result in _run_batches(active, paths, with_pixels, batch_files, scan.workers, cluster):
                _merge(scan, batch, result, cache)
    scan.seconds = time.perf_counter() - start
    for skipped in scan.skipped:
        if not skipped.reason.startswith("DICOMDIR"):
            logger.warning("skipped %s: %s", skipped.path, skipped.reason)
    logger.info("header scan: %d file(s) in %.1f s (%.0f files/s) on %d worker(s)", scan.n_files, scan.seconds,
                scan.files_per_s, scan.workers)
    return scan


@contextmanager
def _client(cluster: ClusterSpec | None, client: Any) -> Iterator[Any]:
    with (nullcontext(client) if client is not None else dask_client(cluster or ClusterSpec())) as active:
        yield active


def _run_batches(client: Any, paths: list[str], with_pixels: bool, batch_files: int, n_workers: int,
                 cluster: ClusterSpec | None) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
    """Each batch's paths and result, in the order of ``paths`` (at least a few batches per worker)."""
    size = max(1, min(batch_files, -(-len(paths) // (4 * n_workers))))
    batches = [paths[i:i + size] for i in range(0, len(paths), size)]
    futures = client.map(scan_batch, batches, with_pixels=with_pixels, pure=False)
    if cluster is not None and cluster.progress:
        from distributed import progress

        progress(futures, notebook=False)
    direct = _direct_to_workers(client)
    for batch, future in zip(batches, futures):
        yield batch, client.gather(future, direct=direct)
        future.release()


def _direct_to_workers(client: Any) -> bool | None:
    """Fetch results straight from the workers (not through the scheduler) when all of them run on this
    machine (a LocalCluster): one network hop and one copy less per batch. Else the client's own choice."""
    if getattr(client, "direct_to_workers", None) is not None:
        return bool(client.direct_to_workers)
    addresses = [client.scheduler.address, *client.nthreads()]
    return all(urlsplit(str(a)).hostname in _LOOPBACK for a in addresses) or None


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _merge(scan: FileScan, paths: list[str], results: list[tuple[Any, ...]], cache: HashCache | None) -> None:
    """Add a batch's results (:func:`scan_batch`) for ``paths`` to ``scan``."""
    rows = []
    for path, (headers, digest, size, mtime_ns, real) in zip(paths, results, strict=True):
        if type(headers) is str:
            scan.skipped.append(SkippedFile(path, headers))
            continue
        for header in headers:
            _share_values(header, scan.shared)
        scan.headers.extend(headers)
        if digest is not None:
            scan.digests[headers[0].path if headers and headers[0].path == path else path] = digest
            if size is not None and not digest.startswith(FAILED):
                rows.append((real or path, size, mtime_ns, digest))
    if cache is not None and rows:
        cache.put_stat_rows("dicom", rows)


#: Header fields whose values repeat across a series' files: each distinct value is kept once.
_SHARED_FIELDS = ("series_uid", "sop_class_uid", "modality", "transfer_syntax_uid", "image_type", "convolution_kernel",
                  "series_description", "study_uid", "frame_of_reference_uid", "patient_id", "patient_name",
                  "manufacturer", "rescale_type", "image_orientation", "pixel_spacing_mm")


def _share_values(header: SliceHeader, shared: dict[Any, Any]) -> None:
    """Replace ``header``'s repeating values by the equal value seen first (one copy per series, not per file)."""
    for name in _SHARED_FIELDS:
        value = getattr(header, name)
        if value is not None:
            setattr(header, name, shared.setdefault(_share_key(value), value))


def _share_key(value: Any) -> Any:
    """``value`` itself, with the signs of its zeros where it holds any (``-0.0 == 0.0``, but is kept as read)."""
    if type(value) is tuple and 0.0 in value:
        return value, tuple(math.copysign(1.0, v) if type(v) is float else v for v in value)
    return value
