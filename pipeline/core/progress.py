"""One status line per task on the console: redrawn in place on a terminal, plain lines otherwise.

:class:`ProgressLines` shows the state of several tasks at once (two models training side by side,
say). On a terminal each task has one line (``name  42% |██████    | text``) that is redrawn in
place (tqdm), and ichct's log messages are printed above the lines. When the stream is not a
terminal (a log file, a pipe, CI) a plain ``[name] text`` line is written at a task's first
milestone, then at most every ``interval_s`` seconds per task, and at its end.

Examples
--------
>>> import io
>>> out = io.StringIO()
>>> with ProgressLines(out, interval_s=60) as lines:
...     lines.update("seg", 0.0, "starting", milestone=True)
...     lines.update("seg", 0.5, "epoch 1/2", milestone=True)  # within 60 s of the last line: not written
...     lines.update("seg", 1.0, "done", final=True)
>>> print(out.getvalue(), end="")
[seg] starting
[seg] done
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import ExitStack
from typing import Any, TextIO

__all__ = ["ProgressLines", "is_terminal", "text_bar"]


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal that can redraw a line (not ``TERM=dumb``)."""
    try:
        return bool(stream.isatty()) and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _terminal_size(stream: Any) -> tuple[int, int]:
    """Columns and lines of the terminal ``stream`` writes to (0 when unknown)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return 0, 0
    return size.columns, size.lines


def text_bar(fraction: float, width: int = 16, ascii_only: bool = False) -> str:
    """A progress bar of ``width`` characters filled to ``fraction`` (clipped to 0..1).

    Examples
    --------
    >>> text_bar(0.5, 8, ascii_only=True)
    '####    '
    >>> text_bar(1.5, 4)
    '████'
    """
    filled = round(min(1.0, max(0.0, float(fraction))) * width)
    return ("#" if ascii_only else "█") * filled + " " * (width - filled)


class ProgressLines:
    """Status lines of named tasks on ``stream`` (default ``sys.stderr``).

    Parameters
    ----------
    stream
        Where the lines go.
    interval_s
        Not on a terminal: the least seconds between two plain lines of one task (its first
        milestone and its end are always written).
    terminal
        Redraw lines in place (default: whether ``stream`` is a terminal, :func:`is_terminal`).

    Use it as a context manager: on a terminal, the log messages of the ``ichct`` logger are
    printed above the lines while it is open, and the lines stay on screen when it closes.
    """

    def __init__(self, stream: TextIO | None = None, interval_s: float = 30.0, terminal: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = is_terminal(self.stream) if terminal is None else bool(terminal)
        self.interval_s = float(interval_s)
        self._bars: dict[str, Any] = {}
        self._written_at: dict[str, float] = {}
        self._stack = ExitStack()
        encoding = str(getattr(self.stream, "encoding", None) or "").lower().replace("-", "")
        self._ascii = encoding not in ("utf8", "")

    def __enter__(self) -> ProgressLines:
        if self.terminal:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._stack.enter_context(logging_redirect_tqdm(loggers=[logging.getLogger("ichct")]))
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self._stack.close()

    def update(self, name: str, fraction: float, text: str, *, milestone: bool = False, final: bool = False) -> None:
        """Show ``text`` (and, on a terminal, a bar at ``fraction``) as the state of task ``name``.

        Not on a terminal, a line is written for ``final`` updates and for ``milestone`` updates
        (the task's first, then one per ``interval_s``); other updates only redraw a terminal.
        """
        if self.terminal:
            self._draw(name, fraction, text)
            return
        now = time.monotonic()
        last = self._written_at.get(name)
        if final or (milestone and (last is None or now - last >= self.interval_s)):
            self._written_at[name] = now
            self.stream.write(f"[{name}] {text}\n")
            self.stream.flush()

    def _draw(self, name: str, fraction: float, text: str) -> None:
        """Redraw the terminal line of ``name`` (created below the others on its first update)."""
        from tqdm import tqdm

        bar = self._bars.get(name)
        if bar is None:
            # a terminal that reports no size (0 x 0, e.g. a bare pty) is taken as 120 x 24: tqdm would
            # draw nothing there
            size_known = min(_terminal_size(self.stream)) > 0
            bar = tqdm(file=self.stream, position=len(self._bars), leave=True, dynamic_ncols=size_known,
                       ncols=None if size_known else 120, nrows=None if size_known else 24, bar_format="{desc}",
                       desc=name)
            self._bars[name] = bar
        width = max(len(n) for n in self._bars)
        percent = round(100 * min(1.0, max(0.0, fraction)))
        bar.set_description_str(f"{name:<{width}} {percent:3d}% |{text_bar(fraction, ascii_only=self._ascii)}| {text}",
                                refresh=True)
