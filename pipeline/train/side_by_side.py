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
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

# set in each child by _init_child: (number of runs, total threads, shared count of finished runs)
_CHILD: dict[str, Any] = {}


def _init_child(n_runs: int, total_threads: int, finished: Any, log_level: int | None) -> None:
    _CHILD.update(n_runs=n_runs, total_threads=total_threads, finished=finished, log_level=log_level)


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
                logger.info("%d torch thread(s) from epoch %d", threads, epoch)
            torch.set_num_threads(threads)

    follow_threads(0)
    try:
        return train(**train_kwargs, epoch_started=follow_threads)
    finally:
        with finished.get_lock():
            finished.value += 1


def _train_in_child(name: str, train_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Body of one child process: logging like the parent's, then :func:`train_sharing_threads`."""
    from ichct.pipeline.core.logging_setup import configure_logging, hide_known_library_warnings, verbosity_of

    n_runs, total, finished, log_level = (_CHILD[k] for k in ("n_runs", "total_threads", "finished", "log_level"))
    if log_level is not None:  # the parent shows ichct's messages: so does the child, tagged with its run
        configure_logging(verbosity_of(log_level), tag=name)
        logging.getLogger("ichct").setLevel(log_level)
        if verbosity_of(log_level) < 1:
            hide_known_library_warnings()
    return train_sharing_threads(train_kwargs, n_runs=n_runs, total_threads=total, finished=finished)


def train_side_by_side(runs: Mapping[str, Mapping[str, Any]], num_threads: int | None = None,
                       poll_s: float = 0.5) -> dict[str, dict[str, Any]]:
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
        How often the parent checks on the children (it stays responsive to Ctrl-C).

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
    pool = ctx.Pool(processes=len(runs), initializer=_init_child, initargs=(len(runs), total, finished, log_level))
    try:
        pending = {name: pool.apply_async(_train_in_child, (name, dict(kwargs))) for name, kwargs in runs.items()}
        results: dict[str, dict[str, Any]] = {}
        while pending:
            for name in [n for n, r in pending.items() if r.ready()]:
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
