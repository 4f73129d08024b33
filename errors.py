"""Errors that report bad input, as opposed to bugs.

Every problem with the data, a config or an argument that ichct detects is raised as an
:class:`IchctError` (usually its subclass :class:`InputError`) whose message names the file and
what is wrong with it. The ``ichct`` command prints such a message without a traceback and exits
with status 1; any other exception is a bug and exits with status 70 after its traceback
(see :mod:`ichct.pipeline.cli`).

``IchctError`` derives from :class:`ValueError`, so code that catches ``ValueError`` keeps
catching it.

Examples
--------
>>> from ichct.errors import IchctError, InputError
>>> err = InputError("scan.nii.gz", "not a readable NIfTI file")
>>> str(err), err.path, err.reason
('scan.nii.gz: not a readable NIfTI file', 'scan.nii.gz', 'not a readable NIfTI file')
>>> isinstance(err, IchctError) and isinstance(err, ValueError)
True
>>> str(InputError("--bootstrap must be >= 1, got 0"))
'--bootstrap must be >= 1, got 0'
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["ENVIRONMENT_ERRNOS", "USER_PATH_ERRORS", "IchctError", "InputError", "data_error", "read_json"]

#: OS errors about a path the user gave (missing, of the wrong type, not permitted, in the way):
#: data errors like :class:`IchctError`, not bugs.
USER_PATH_ERRORS: tuple[type[OSError], ...] = (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                               PermissionError, FileExistsError)
#: ``errno`` values of an ``OSError`` that say the machine cannot take the output (disk full, quota,
#: read-only file system): data errors too, not bugs.
ENVIRONMENT_ERRNOS: frozenset[int] = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name))


class IchctError(ValueError):
    """Bad input or a failed check: the message names the file (or option) and what is wrong.

    The base of every ichct error that is the user's to fix (a bad file, a wrong config key, a
    manifest that fails its checks, an argument out of range); the CLI exits 1 on it without a
    traceback. A bug (an internal invariant that does not hold) is never an ``IchctError``.

    Examples
    --------
    >>> raise IchctError("manifest data_manifests/x.json failed 2 check(s)")
    Traceback (most recent call last):
    ...
    ichct.errors.IchctError: manifest data_manifests/x.json failed 2 check(s)
    """


class InputError(IchctError):
    """One input (a file, folder, config key or argument) that is missing, unreadable or wrong.

    ``InputError(path, reason)`` reads ``"{path}: {reason}"``; ``InputError(message)`` is the
    message alone, for problems that are not about one file.

    Parameters
    ----------
    path_or_message
        The file or folder the problem is about (with ``reason``), or the whole message.
    reason
        What is wrong with ``path``, in words a user can act on.

    Attributes
    ----------
    path : str or None
        The file or folder, when one was given.
    reason : str
        What is wrong (the whole message when no path was given).

    Examples
    --------
    >>> err = InputError("runs/seg/config.json", "config key 'lr' is unknown")
    >>> str(err)
    "runs/seg/config.json: config key 'lr' is unknown"
    >>> InputError("at least one --run or --bundle is needed").path is None
    True
    """

    def __init__(self, path_or_message: str | os.PathLike[str], reason: str | None = None) -> None:
        if reason is None:
            self.path: str | None = None
            self.reason = str(path_or_message)
            super().__init__(self.reason)
        else:
            self.path = os.fspath(path_or_message)
            self.reason = reason
            super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the constructor's arguments (the error may cross processes, e.g. a training run)."""
        return type(self), ((self.reason,) if self.path is None else (self.path, self.reason))


def data_error(exc: BaseException) -> BaseException | None:
    """The data error that ``exc`` is or was raised from, else None (``exc`` is a bug).

    A data error is an :class:`IchctError`, one of :data:`USER_PATH_ERRORS` or an ``OSError`` with
    an ``errno`` of :data:`ENVIRONMENT_ERRNOS` (a full disk). The explicit causes
    (``raise ... from``) are followed because libraries wrap the errors of the code they call:
    MONAI raises ``RuntimeError("applying transform ...")`` from the error of a transform (e.g. an
    unreadable image in a dataset).

    Examples
    --------
    >>> try:
    ...     raise RuntimeError("applying transform LoadCTd") from InputError("ct.nii.gz", "truncated")
    ... except RuntimeError as exc:
    ...     str(data_error(exc))
    'ct.nii.gz: truncated'
    >>> data_error(KeyError("spacing")) is None
    True
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, (IchctError, *USER_PATH_ERRORS)) or (
                isinstance(cur, OSError) and cur.errno in ENVIRONMENT_ERRNOS):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__
    return None


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """The parsed content of a JSON file; :class:`InputError` naming the file when it is not JSON.

    A missing file raises ``FileNotFoundError`` as :func:`open` does (a data error too).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "config.json"
    ...     _ = path.write_text("{not json")
    ...     read_json(path, "run config")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ichct.errors.InputError: .../config.json: not a valid run config (JSON): Expecting property name ...
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a valid {what} (JSON): {exc}") from None
