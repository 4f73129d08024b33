"""Progress of training runs on the console: what a run reports, and the display that shows it.

A run of :func:`ichct.pipeline.train.engine.train` given a ``progress`` callable reports a
:class:`TrainingProgress` when it starts (before its data are cached), about once a second during
an epoch, after each epoch (once the epoch's files are written) and when it ends.
:func:`training_display` shows those reports as one line per run (:class:`ProgressLines`): the
epoch of the total, the time left (of the time budget, or estimated from the epochs so far), the
last epoch's mean loss and the best validation metric so far. Runs in other processes
(:func:`~ichct.pipeline.train.side_by_side.train_side_by_side`) send their reports to the parent,
which shows them.

Examples
--------
>>> p = TrainingProgress("seg", "training", epoch=3, max_epochs=200, elapsed_s=60.0, budget_s=390.0,
...                      time_left_s=330.0, loss=0.4321, key_metric="val_dice", best_metric=0.612, best_epoch=2)
>>> p.describe()
'epoch 3/200, 5:30 left, loss 0.4321, best val_dice 0.612 (epoch 2)'
>>> round(p.fraction, 3)  # of the time budget: it ends the run before the epochs do
0.154
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

from ichct.pipeline.core.progress import ProgressLines

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["ProgressHandler", "TrainingDisplay", "TrainingProgress", "format_duration", "training_display"]


def format_duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour.

    Examples
    --------
    >>> format_duration(75.4), format_duration(3725)
    ('1:15', '1:02:05')
    """
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@dataclass(frozen=True)
class TrainingProgress:
    """The state of a training run at one moment.

    ``state`` is ``"starting"`` (data being cached), ``"training"`` or ``"done"``; ``epoch`` counts
    the finished epochs and ``epoch_fraction`` the share of the current one; ``elapsed_s`` is the
    training loop's time (of this invocation: a resumed run gets a fresh budget); ``time_left_s``
    what is left of ``budget_s``, or of the epochs at the pace so far (None before the pace is
    known); ``loss`` the last finished epoch's mean loss; ``best_metric`` the best validation
    value of ``key_metric`` so far (None before the first validation).
    """

    kind: str
    state: str
    epoch: int
    max_epochs: int
    epoch_fraction: float = 0.0
    elapsed_s: float = 0.0
    budget_s: float | None = None
    time_left_s: float | None = None
    loss: float | None = None
    key_metric: str = ""
    best_metric: float | None = None
    best_epoch: int = 0
    stopped_by_budget: bool = False

    @property
    def fraction(self) -> float:
        """How far the run is, 0..1: of its epochs or of its time budget, whichever is further."""
        if self.state == "done":
            return 1.0
        done = (self.epoch + self.epoch_fraction) / max(1, self.max_epochs)
        if self.budget_s:
            done = max(done, self.elapsed_s / self.budget_s)
        return min(1.0, max(0.0, done))

    def describe(self) -> str:
        """The state in words (one line)."""
        if self.state == "starting":
            budget = f", time budget {format_duration(self.budget_s)}" if self.budget_s else ""
            return f"caching data; then up to {self.max_epochs} epoch{'s' if self.max_epochs != 1 else ''}{budget}"
        loss = "-" if self.loss is None or math.isnan(self.loss) else f"{self.loss:.4f}"
        best = "-" if self.best_metric is None or math.isnan(self.best_metric) else (
            f"{self.best_metric:.3f} (epoch {self.best_epoch})")
        tail = f"loss {loss}, best {self.key_metric} {best}"
        if self.state == "done":
            why = " (time budget reached)" if self.stopped_by_budget else ""
            return f"done: {self.epoch}/{self.max_epochs} epochs{why} in {format_duration(self.elapsed_s)}, {tail}"
        current = self.epoch + (1 if self.epoch_fraction > 0 else 0)
        left = "" if self.time_left_s is None else f", {format_duration(self.time_left_s)} left"
        return f"epoch {current}/{self.max_epochs}{left}, {tail}"


class ProgressHandler:
    """Reports the :class:`TrainingProgress` of a trainer to ``report``.

    Parameters
    ----------
    report
        Called with each :class:`TrainingProgress` (in the training thread).
    kind, key_metric, max_epochs, budget_s
        The run: ``"seg"``/``"cls"``, the validation metric that picks ``best.pt``, the last epoch
        and the time budget in seconds (None: none).
    every_s
        The least seconds between two reports during an epoch.

    :meth:`starting` reports before the data are cached; :meth:`attach` (after the handlers that
    validate and write the epoch's files) reports during and after each epoch and at the end, from
    the run's ``status``: an object with ``rows`` (the ``metrics.csv`` rows), ``best_metric``,
    ``best_epoch``, ``t_run`` (the loop's start, ``time.perf_counter``), ``epoch_s`` (seconds of
    each epoch) and ``budget_stop``.
    """

    def __init__(self, report: Callable[[TrainingProgress], None], kind: str, key_metric: str, max_epochs: int,
                 budget_s: float | None, every_s: float = 1.0) -> None:
        self.report, self.every_s = report, float(every_s)
        self.base = TrainingProgress(kind, "starting", epoch=0, max_epochs=int(max_epochs), budget_s=budget_s,
                                     key_metric=key_metric)
        self.status: Any = None
        self._sent_at = -math.inf

    def starting(self, epoch: int = 0) -> None:
        """Report that the run is starting (``epoch``: the finished epochs of a resumed run)."""
        self.report(replace(self.base, epoch=int(epoch)))

    def attach(self, trainer: Engine, status: Any) -> None:
        """Report on ``trainer``'s iterations (at most every ``every_s``), epochs and completion."""
        from ignite.engine import Events

        self.status = status
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.on_iteration)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.on_epoch)
        trainer.add_event_handler(Events.COMPLETED, self.on_completed)

    def finished(self, status: Any, epoch: int) -> None:
        """Report a run that has nothing left to train (a resumed run already at its last epoch)."""
        self.status = status
        self._send("done", int(epoch), 0.0)

    def on_iteration(self, engine: Engine) -> None:
        """Report the share of the epoch done (throttled)."""
        now = time.perf_counter()
        if now - self._sent_at < self.every_s:
            return
        length = max(1, int(engine.state.epoch_length or 1))
        done_in_epoch = (int(engine.state.iteration) - 1) % length + 1
        self._send("training", int(engine.state.epoch) - 1, done_in_epoch / length)

    def on_epoch(self, engine: Engine) -> None:
        """Report the epoch just finished."""
        self._send("training", int(engine.state.epoch), 0.0)

    def on_completed(self, engine: Engine) -> None:
        """Report the end of the run."""
        self._send("done", int(engine.state.epoch), 0.0)

    def _send(self, state: str, epoch: int, epoch_fraction: float) -> None:
        self._sent_at = time.perf_counter()
        self.report(self.progress(state, epoch, epoch_fraction))

    def progress(self, state: str, epoch: int, epoch_fraction: float) -> TrainingProgress:
        """The run's :class:`TrainingProgress` now, from ``status``."""
        st, base = self.status, self.base
        elapsed = 0.0 if st.t_run is None else time.perf_counter() - st.t_run
        lefts = []
        if base.budget_s:
            lefts.append(max(0.0, base.budget_s - elapsed))
        if st.epoch_s:
            lefts.append(sum(st.epoch_s) / len(st.epoch_s) * max(0.0, base.max_epochs - epoch - epoch_fraction))
        loss = float(st.rows[-1]["train_loss"]) if st.rows else None
        best = None if st.best_metric is None else float(st.best_metric)
        return replace(base, state=state, epoch=epoch, epoch_fraction=epoch_fraction, elapsed_s=elapsed,
                       time_left_s=min(lefts) if lefts else None, loss=loss, best_metric=best,
                       best_epoch=int(st.best_epoch), stopped_by_budget=bool(st.budget_stop))


class TrainingDisplay:
    """Shows the :class:`TrainingProgress` reports of named runs as :class:`ProgressLines`."""

    def __init__(self, lines: ProgressLines) -> None:
        self.lines = lines

    def report(self, name: str, progress: TrainingProgress) -> None:
        """Show run ``name``'s ``progress`` (its start and epochs are milestones, its end final)."""
        self.lines.update(name, progress.fraction, progress.describe(),
                          milestone=progress.epoch_fraction == 0, final=progress.state == "done")

    def reporter(self, name: str) -> Callable[[TrainingProgress], None]:
        """A ``progress`` callable of :func:`~ichct.pipeline.train.engine.train` for run ``name``."""
        return functools.partial(self.report, name)


@contextmanager
def training_display(enabled: bool = True, stream: TextIO | None = None,
                     interval_s: float = 30.0) -> Iterator[TrainingDisplay | None]:
    """A :class:`TrainingDisplay` on ``stream`` (default stderr) while the block runs; None when not ``enabled``.

    On a terminal one line per run is redrawn in place; otherwise a plain line per run is written
    at its start, every ``interval_s`` seconds of training and at its end.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with training_display(stream=out) as display:
    ...     display.report("cls", TrainingProgress("cls", "starting", epoch=0, max_epochs=5))
    >>> out.getvalue()
    '[cls] caching data; then up to 5 epochs\\n'
    """
    if not enabled:
        yield None
        return
    with ProgressLines(stream, interval_s=interval_s) as lines:
        yield TrainingDisplay(lines)
