"""Errors raised by DICOM ingest."""

from __future__ import annotations

from pathlib import Path

from ichct.errors import IchctError


class DicomIngestError(IchctError):
    """Input that cannot become a trustworthy CT volume.

    The message always names the file or folder and what is wrong with it, so that the CLI can
    print it as is and exit with status 1 (an :class:`ichct.errors.IchctError`, hence also a ``ValueError``).

    Parameters
    ----------
    path
        The file or folder the problem is about.
    reason
        What is wrong, in words a user can act on.

    Examples
    --------
    >>> from ichct.transforms import DicomIngestError
    >>> err = DicomIngestError("scans/case_7", "no CT image series in the folder")
    >>> str(err), err.path
    ('scans/case_7: no CT image series in the folder', 'scans/case_7')
    >>> isinstance(err, ValueError)  # an ichct.errors.IchctError: the CLI exits with status 1
    True
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle with the constructor's arguments (the error may cross processes, e.g. a training run)."""
        return type(self), (self.path, self.reason)
