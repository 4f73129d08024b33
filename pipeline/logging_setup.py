"""Logging configuration shared by the CLI commands."""

from __future__ import annotations

import logging
import sys


def configure_logging(verbosity: int = 0) -> None:
    """Route ichct's logs to stderr: ``-1`` quiet (errors), ``0`` warnings+info, ``>=1`` debug."""
    level = logging.ERROR if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(levelname)s: %(message)s"))
    root = logging.getLogger("ichct")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbosity <= 0:
        for noisy in ("pydicom", "monai", "ignite"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
