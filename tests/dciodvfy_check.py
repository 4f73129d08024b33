"""Run dciodvfy (Debian's dicom3tools) on a DICOM file and sort its findings.

The check the tests make of every SEG ichct writes: dciodvfy reports no error, except errors about
values that the SEG must copy from its source as they are (an archive's non-conforming UIDs such
as RSNA's ``ID_6207127578``), and dciodvfy's closing summary line of such value errors.
Under ``CI=true`` a missing dciodvfy fails the calling test instead of skipping it (``.ci/run``
installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

#: dciodvfy's summary line after value errors; allowed only when every value error is allowed.
VALUE_SUMMARY = "Dicom dataset contains invalid data values for Value Representations"


def dciodvfy_path() -> str:
    """The dciodvfy executable; skips the test without it, fails it under CI=true."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dciodvfy is not installed (Debian package dicom3tools; .ci/run installs it)")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    return exe


def dciodvfy_lines(path: str | Path) -> list[str]:
    """Every line dciodvfy prints about ``path`` (stdout and stderr)."""
    proc = subprocess.run([dciodvfy_path(), str(path)], capture_output=True, text=True, timeout=120)
    return [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def unexpected_errors(lines: Iterable[str], source_values: Iterable[str] = ()) -> list[str]:
    """Error lines not explained by the source's own non-conforming values.

    An error is explained when it quotes one of ``source_values`` (``"ID_..."`` or ``<ID_...>``).
    """
    values = [v for v in source_values if v]
    errors = [line for line in lines if line.startswith("Error")]
    explained = [e for e in errors if any(f'"{v}"' in e or f"<{v}>" in e for v in values)]
    out = [e for e in errors if e not in explained and VALUE_SUMMARY not in e]
    if any(VALUE_SUMMARY in e for e in errors) and not explained:
        out.append(next(e for e in errors if VALUE_SUMMARY in e))
    return out
