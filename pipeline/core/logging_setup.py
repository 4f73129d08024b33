"""Logging configuration shared by the CLI commands."""

from __future__ import annotations

import logging
import sys


def configure_logging(verbosity: int = 0, tag: str | None = None) -> None:
    """Route ichct's logs to stderr: ``-1`` quiet (errors only, from every logger: ichct, monai,
    ignite, ...), ``0`` warnings+info, ``>=1`` debug.

    ``tag`` prefixes every message (``[seg] ...``): runs that log side by side stay apart.
    """
    level = logging.ERROR if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    prefix = f"[{tag}] " if tag else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(levelname)s %(name)s: {prefix}%(message)s" if verbosity > 0
                                           else f"%(levelname)s: {prefix}%(message)s"))
    root = logging.getLogger("ichct")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbosity <= 0:
        for noisy in ("pydicom", "monai", "ignite"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    # -q: errors only, from every logger. A level on "monai"/"ignite" does not reach all of their
    # messages: MONAI's get_logger (bundle scripts, StatsHandler, a bundle's logging.conf) gives a
    # logger its own level INFO and stdout handler. logging.disable holds below ERROR whatever a
    # library sets later; any other verbosity lifts it.
    logging.disable(logging.WARNING if verbosity < 0 else logging.NOTSET)


#: Library warnings that say nothing to an ichct user (shown again with -v): MONAI's patch sampler
#: on volumes without blood (expected: negative studies get background patches) and its optional
#: GPU DICOM decoder plugin, which ichct does not use.
KNOWN_WARNINGS: tuple[str, ...] = (
    r"Num foregrounds 0, Num backgrounds",
    r"NvImgCodecPydicomReader",
)


def hide_known_library_warnings() -> None:
    """Ignore the :data:`KNOWN_WARNINGS` in this process."""
    import warnings

    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)


def verbosity_of(level: int) -> int:
    """The :func:`configure_logging` verbosity that gives logger level ``level``."""
    return -1 if level >= logging.ERROR else 1 if level <= logging.DEBUG else 0
