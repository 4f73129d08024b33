"""Write files so that a crash or an error never leaves a partial output behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success.

    The temporary name keeps ``final``'s suffixes (``.nii.gz``) unless ``suffix`` is given, so that
    writers choosing a format by extension behave the same.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffixes = suffix if suffix is not None else "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".partial{suffixes}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json_atomic(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Write JSON to ``path`` atomically."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=False) + "\n", encoding="utf-8")


def temp_dir_beside(final: str | Path, tag: str = "") -> Path:
    """An empty folder beside ``final`` (same file system, so the final rename is atomic) with the
    usual permissions (``mkdtemp`` makes it private); fill it, then :func:`replace_dir`.

    ``tag`` (no dots) goes into the name, ``.{final name}.{tag}.<random>.partial``, e.g. to say
    which process writes it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.{tag}." if tag else f".{final.name}."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Move the finished folder ``tmp`` onto ``final``; an existing ``final`` is replaced (callers
    decide beforehand whether that is allowed)."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, trash / final.name)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
