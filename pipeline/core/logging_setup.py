"""Logging configuration shared by the CLI commands.

Loggers under :data:`DETAIL_LOGGER` (``ichct.detail``) carry detail that only ``-v`` shows, at any
level: MONAI's ``StatsHandler`` lines of each validation (``Epoch[n] Metrics -- ...``), which MONAI
always logs at INFO.

A child process (a training run beside another) hands its records to its parent through a queue
(``configure_logging(..., queue=q)``); the parent passes each to :func:`handle_forwarded`, so that
its own handlers (stderr, or the lines above a progress display) write them.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from typing import Any

#: The logger whose descendants log detail shown only with -v (whatever level they log at).
DETAIL_LOGGER = "ichct.detail"


def configure_logging(verbosity: int = 0, tag: str | None = None, queue: Any = None) -> None:
    """Route ichct's logs to stderr: ``-1`` quiet (errors only, from every logger: ichct, monai,
    ignite, ...), ``0`` warnings+info, ``>=1`` debug (and the :data:`DETAIL_LOGGER` detail).

    ``tag`` prefixes every message (``[seg] ...``): runs that log side by side stay apart.
    ``queue`` (anything with ``put_nowait``, as :class:`logging.handlers.QueueHandler` takes):
    hand the records to it instead of writing them (in a child process whose parent writes them,
    :func:`handle_forwarded`); the ``tag`` is then part of each record's message.
    """
    level = logging.ERROR if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    prefix = f"[{tag}] " if tag else ""
    if queue is not None:
        handler: logging.Handler = logging.handlers.QueueHandler(queue)
        handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"%(levelname)s %(name)s: {prefix}%(message)s" if verbosity > 0
                                               else f"%(levelname)s: {prefix}%(message)s"))
    root = logging.getLogger("ichct")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # the detail is hidden whole without -v: MONAI's StatsHandler also logs an error it then re-raises,
    # with its traceback, which the CLI reports once itself
    logging.getLogger(DETAIL_LOGGER).setLevel(logging.NOTSET if verbosity > 0 else logging.CRITICAL + 1)
    if verbosity <= 0:
        quiet_library_loggers()
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


#: Libraries whose INFO and WARNING records say nothing to an ichct user without -v.
NOISY_LIBRARIES: tuple[str, ...] = ("pydicom", "monai", "ignite")


def quiet_library_loggers() -> None:
    """Errors only from the :data:`NOISY_LIBRARIES` loggers in this process.

    Examples
    --------
    >>> saved = [logging.getLogger(name).level for name in NOISY_LIBRARIES]
    >>> quiet_library_loggers()
    >>> logging.getLogger("monai").level == logging.ERROR
    True
    >>> for name, level in zip(NOISY_LIBRARIES, saved):
    ...     logging.getLogger(name).setLevel(level)
    """
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)


def hide_known_library_warnings() -> None:
    """Ignore the :data:`KNOWN_WARNINGS` in this process."""
    import warnings

    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)


def handle_forwarded(record: logging.LogRecord) -> None:
    """Write a record a child process forwarded (``configure_logging(queue=...)``) with this
    process's handlers of its logger."""
    logging.getLogger(record.name).handle(record)


def verbosity_of(level: int) -> int:
    """The :func:`configure_logging` verbosity that gives logger level ``level``."""
    return -1 if level >= logging.ERROR else 1 if level <= logging.DEBUG else 0
