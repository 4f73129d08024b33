"""No repeated code in the package: pylint's duplicate-code check (6 or more similar lines) is clean.

Repeated blocks are where two copies of one concept drift apart; a shared helper in one public
place is the fix (see tests/test_architecture.py for where shared helpers may live).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_PARTS = ("pipeline", "transforms", "networks", "errors.py")


def test_no_duplicate_code_in_the_package(tmp_path):
    cmd = [sys.executable, "-m", "pylint", "--disable=all", "--enable=duplicate-code", "--min-similarity-lines=6",
           "--ignore-comments=yes", "--ignore-docstrings=yes", "--ignore-imports=yes", "--score=no",
           *(str(ROOT / part) for part in PACKAGE_PARTS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    report = proc.stdout + proc.stderr
    assert "R0801" not in report, "repeated code (pylint duplicate-code):\n" + report
    assert proc.returncode == 0, report  # pylint itself ran (exit 0: no message at all)
