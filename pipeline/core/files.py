"""Small helpers about files that several stages share."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_file", "files_under"]


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    str
        The hex digest (64 characters).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "empty"
    >>> p.write_bytes(b"")
    0
    >>> sha256_file(p)[:12]
    'e3b0c44298fc'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_under(path: str | Path) -> tuple[str, ...]:
    """The files a study input stands for: every file below a folder (sorted), else the path itself.

    Examples
    --------
    >>> files_under("/nonexistent.nii.gz")
    ('/nonexistent.nii.gz',)
    """
    p = Path(path)
    if p.is_dir():
        return tuple(sorted(str(f) for f in p.rglob("*") if f.is_file()))
    return (str(p),)
