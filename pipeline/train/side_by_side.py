"""Several training runs at once, each in its own process with a share of the CPU threads.

On a CPU the small networks of ichct get less than twice the speed from a second thread (2-core
laptop: the segmenter ~1.6x), so two runs side by side, one thread each, get more epochs per
wall-clock minute than the same runs one after the other with both threads, and their data
caching overlaps too. When a run finishes, the runs still going take over its threads at their
next epoch, so a shorter budget for one model is a longer stretch at full speed for the other.
``benchmarks/side_by_side.py`` measures both ways on the synthetic default.

:func:`train_side_by_side` takes the keyword arguments of :func:`ichct.pipeline.train.engine.train`
per run and returns each run's summary. The processes are spawned (no fork of a process that
may hold threads); the first failure stops the others and is raised.

The children send their log records and progress reports to the parent over one queue: the
parent writes the records with its own handlers (tagged ``[name]``) and hands the reports to its
``progress`` callable (e.g. :meth:`ichct.pipeline.train.progress.TrainingDisplay.report`), so that
a progress display of all runs stays whole on one terminal.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

# set in each child by _init_child: number of runs, total threads, shared count of finished runs,
# the parent's log level, the queue to the parent and whether the parent shows progress
_CHILD: dict[str, Any] = {}


def _init_child(n_runs: int, total_threads: int, finished: Any, log_level: int | None, queue: Any,
                with_progress: bool) -> None:
    _CHILD.update(n_runs=n_runs, total_threads=total_threads, finished=finished, log_level=log_level, queue=queue,
                  with_progress=with_progress)


class _Channel:
    """One kind of message (``"log"``, ``"progress"``) of a child on the queue to the parent."""

    def __init__(self, queue: Any, kind: str, name: str) -> None:
        self.queue, self.kind, self.name = queue, kind, name

    def put_nowait(self, item: Any) -> None:
        """Send ``item`` (a :class:`~logging.handlers.QueueHandler` calls this with log records)."""
        self.queue.put((self.kind, self.name, item))

    __call__ = put_nowait  # the ``progress`` callable of train()


def threads_for(total_threads: int, n_runs: int, n_finished: int) -> int:
    """Torch threads of each run still going when ``n_finished`` of ``n_runs`` have finished."""
    return max(1, total_threads // max(1, n_runs - n_finished))


def train_sharing_threads(train_kwargs: Mapping[str, Any], *, n_runs: int, total_threads: int, finished: Any,
                          train: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train one of ``n_runs`` runs with torch threads that follow the runs still going.

    At the start and at every epoch the run takes :func:`threads_for` threads of
    ``total_threads``, given how many runs ``finished`` counts; when it ends (or fails) it counts
    itself as finished, so the others take over its share at their next epoch.

    Parameters
    ----------
    train_kwargs
        Keyword arguments of ``train`` (without ``epoch_started``).
    n_runs, total_threads
        The runs started together and the torch threads of all of them.
    finished
        A shared counter of finished runs (``multiprocessing.Value("i")``).
    train
        The training function (default :func:`ichct.pipeline.train.engine.train`).

    Returns
    -------
    dict
        The summary ``train`` returned.
    """
    import torch

    if train is None:
        from ichct.pipeline.train.engine import train

    def follow_threads(epoch: int) -> None:
        threads = threads_for(total_threads, n_runs, finished.value)
        if threads != torch.get_num_threads():
            if epoch > 1:
                logger.debug("%d torch thread(s) from epoch %d", threads, epoch)
            torch.set_num_threads(threads)

    follow_threads(0)
    try:
        return train(**train_kwargs, epoch_started=follow_threads)
    finally:
        with finished.get_lock():
            finished.value += 1


def _train_in_child(name: str, train_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Body of one child process: logging like the parent's, through the parent; then
    :func:`train_sharing_threads`, reporting progress to the parent when it shows progress."""
    from ichct.pipeline.core.logging_setup import configure_logging, hide_known_library_warnings, verbosity_of

    n_runs, total, finished, log_level, queue = (
        _CHILD[k] for k in ("n_runs", "total_threads", "finished", "log_level", "queue"))
    if log_level is not None:  # the parent shows ichct's messages: so does the child, tagged with its run
        configure_logging(verbosity_of(log_level), tag=name, queue=_Channel(queue, "log", name))
        logging.getLogger("ichct").setLevel(log_level)
        if verbosity_of(log_level) < 1:
            hide_known_library_warnings()
    kwargs = dict(train_kwargs)
    if _CHILD["with_progress"]:
        kwargs["progress"] = _Channel(queue, "progress", name)
    return train_sharing_threads(kwargs, n_runs=n_runs, total_threads=total, finished=finished)


def _deliver(queue: Any, progress: Callable[[str, Any], None] | None) -> None:
    """Hand every message waiting on ``queue`` on: log records to this process's handlers,
    progress reports to ``progress``."""
    from ichct.pipeline.core.logging_setup import handle_forwarded

    while not queue.empty():
        kind, name, item = queue.get()
        if kind == "log":
            handle_forwarded(item)
        elif progress is not None:
            progress(name, item)


def train_side_by_side(runs: Mapping[str, Mapping[str, Any]], num_threads: int | None = None,
                       poll_s: float = 0.2,
                       progress: Callable[[str, Any], None] | None = None) -> dict[str, dict[str, Any]]:
    """Train every run of ``runs`` (name -> keyword arguments of ``train``) at the same time.

    Parameters
    ----------
    runs
        Run name -> keyword arguments of :func:`ichct.pipeline.train.engine.train` (``kind``,
        ``manifest``, ``fold``, ``out_dir``, ...). Each runs in its own spawned process.
    num_threads
        Torch threads of all runs together (default: this process's ``torch.get_num_threads()``).
        They are shared evenly among the runs still going, at least 1 each; a run takes over a
        finished run's share at its next epoch.
    poll_s
        How often the parent checks on the children and hands their messages on (it stays
        responsive to Ctrl-C).
    progress
        Called in this process with ``(run name, TrainingProgress)`` for each progress report of
        a run (see :mod:`ichct.pipeline.train.progress`); None: the runs report nothing.

    Returns
    -------
    dict
        Run name -> the summary ``train`` returned.

    Raises
    ------
    Exception
        The first run's error (the other runs are stopped): the same errors as ``train``.
    """
    import torch

    if not runs:
        return {}
    total = int(num_threads) if num_threads is not None else torch.get_num_threads()
    if total < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    ichct_logger = logging.getLogger("ichct")
    log_level = ichct_logger.getEffectiveLevel() if ichct_logger.handlers else None
    logger.info("training %s side by side, %d thread(s) each", " and ".join(runs), threads_for(total, len(runs), 0))
    ctx = multiprocessing.get_context("spawn")
    finished = ctx.Value("i", 0)
    queue = ctx.SimpleQueue()  # put() returns once the message is in the pipe: none is in flight at the end
    pool = ctx.Pool(processes=len(runs), initializer=_init_child,
                    initargs=(len(runs), total, finished, log_level, queue, progress is not None))
    deliver = functools.partial(_deliver, queue, progress)
    try:
        pending = {name: pool.apply_async(_train_in_child, (name, dict(kwargs))) for name, kwargs in runs.items()}
        results: dict[str, dict[str, Any]] = {}
        while pending:
            deliver()
            for name in [n for n, r in pending.items() if r.ready()]:
                deliver()  # the run's last messages before its result (or error)
                results[name] = pending.pop(name).get()  # raises the child's error: `finally` stops the others
            if pending:
                next(iter(pending.values())).wait(poll_s)
        pool.close()
        pool.join()
        return {name: results[name] for name in runs}
    finally:
        pool.terminate()
        pool.join()


__all__ = ["train_side_by_side", "train_sharing_threads", "threads_for"]
