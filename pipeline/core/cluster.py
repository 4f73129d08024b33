"""The Dask distributed cluster that cohort work runs on: a ``LocalCluster`` or a user's running scheduler.

Every stage that works study by study over a cohort (the header scan of ``manifest build``,
``preprocess``, ``predict --batch``, the per-study inference of ``evaluate``) submits its work as Dask
tasks through :func:`dask_client`. Nothing here schedules work itself: Dask's scheduler places the
tasks, reruns those of a worker that died and enforces the workers' memory limits.

* No address (and no ``DASK_SCHEDULER_ADDRESS``): a ``LocalCluster`` of worker processes sized to
  the machine (one per usable core, one thread each, the machine's memory split between them).
* ``ClusterSpec(scheduler="tcp://host:8786")`` or ``DASK_SCHEDULER_ADDRESS``: the user's cluster
  (dask-jobqueue on SLURM, dask-kubernetes, ``dask scheduler`` + ``dask worker``). A scheduler that
  does not answer within ``connect_timeout_s`` is a :class:`ClusterError`.

Each worker's torch threads are pinned (``torch_threads``, default 1) by a worker plugin, and the
BLAS/OpenMP pools by the nanny's environment, so that N workers never oversubscribe N cores. A
worker whose ichct differs from the client's (version and source fingerprint) is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import dask
from distributed import WorkerPlugin

from ichct.errors import IchctError

LOG = logging.getLogger(__name__)

#: The environment variable Dask itself reads for a scheduler address.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: Seconds to wait for a user's scheduler before giving up (``--connect-timeout``).
DEFAULT_CONNECT_TIMEOUT_S = 30.0
#: Thread pools pinned in every worker process of a LocalCluster (read when the libraries load).
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class ClusterError(IchctError):
    """The Dask cluster cannot be used: a scheduler that does not answer, or workers of another ichct.

    Examples
    --------
    >>> raise ClusterError("Dask scheduler tcp://127.0.0.1:1 did not answer within 1 s")
    Traceback (most recent call last):
    ...
    ichct.pipeline.core.cluster.ClusterError: Dask scheduler tcp://127.0.0.1:1 did not answer within 1 s
    """


@dataclass(frozen=True)
class ClusterSpec:
    """Where cohort tasks run.

    Parameters
    ----------
    scheduler
        Address of a running Dask scheduler; None: ``DASK_SCHEDULER_ADDRESS``, else a LocalCluster.
    workers
        Worker processes of the LocalCluster (default: the usable cores); ignored with a scheduler.
    threads_per_worker
        Tasks each LocalCluster worker runs at once.
    torch_threads
        ``torch.set_num_threads`` in every worker (pinned so workers do not oversubscribe the cores).
    memory_limit
        Per-worker memory limit of the LocalCluster (Dask's syntax: ``"auto"``, ``"4GiB"``, bytes).
    connect_timeout_s
        Seconds to wait for ``scheduler`` before a :class:`ClusterError`.
    progress
        Show Dask's progress bar (on stderr) and print the dashboard link when there is one.

    Examples
    --------
    >>> ClusterSpec(workers=2).resolved_scheduler() is None or True
    True
    """

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    torch_threads: int = 1
    memory_limit: str | int | None = "auto"
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    progress: bool = False

    def resolved_scheduler(self) -> str | None:
        """The scheduler address to connect to (the argument, else ``DASK_SCHEDULER_ADDRESS``), or None."""
        return self.scheduler or os.environ.get(SCHEDULER_ENV) or None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total).

    Examples
    --------
    >>> usable_cores() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@lru_cache(maxsize=1)
def _source_digest() -> str:
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted(root.glob("**/*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("tests/", "benchmarks/", ".")) or "/." in rel:
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def ichct_fingerprint() -> str:
    """This process's ichct: the version and a digest of the package's Python sources.

    Two processes with equal fingerprints run the same code, so their results can be combined.

    Examples
    --------
    >>> import ichct
    >>> ichct_fingerprint().startswith(ichct.__version__ + "+")
    True
    """
    import ichct

    return f"{ichct.__version__}+{_source_digest()}"


def _pin_worker_threads(torch_threads: int) -> None:
    """Run on every worker (also one that joins later): pin torch's and the BLAS/OpenMP thread pools.

    torch is not imported here (a worker that never needs it starts faster): the pools read these
    variables when they load; an already imported torch is pinned directly.
    """
    for name in _THREAD_ENV:
        os.environ[name] = str(torch_threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(torch_threads)


class _PinThreads(WorkerPlugin):
    """Dask worker plugin: pins torch threads on each worker when it starts (and joins later)."""

    name = "ichct-pin-threads"

    def __init__(self, torch_threads: int) -> None:
        super().__init__()
        self.torch_threads = torch_threads

    def setup(self, worker: Any) -> None:
        _pin_worker_threads(self.torch_threads)


class _QuietLibraries(WorkerPlugin):
    """Dask worker plugin: a worker logs as the client's CLI does at the client's verbosity.

    Without ``-v`` the libraries' chatter (MONAI's optional GPU decoder plugin, the known warnings
    of :data:`~ichct.pipeline.core.logging_setup.KNOWN_WARNINGS`) is hidden in every worker as in
    the client, instead of a copy per worker on the terminal; ``-q`` keeps ichct's own warnings in.
    """

    name = "ichct-quiet-libraries"

    def __init__(self, ichct_level: int) -> None:
        super().__init__()
        self.ichct_level = ichct_level  # the client's "ichct" logger level (NOTSET: not configured)

    def setup(self, worker: Any) -> None:
        from ichct.pipeline.core.logging_setup import hide_known_library_warnings, quiet_library_loggers, verbosity_of

        if self.ichct_level == logging.NOTSET:
            return  # a library user's own logging: workers left as they are
        logging.getLogger("ichct").setLevel(self.ichct_level)
        if verbosity_of(self.ichct_level) <= 0:
            hide_known_library_warnings()
            quiet_library_loggers()


def check_worker_versions(client: Any) -> dict[str, str]:
    """Every worker's ichct fingerprint; :class:`ClusterError` when one differs from this process's.

    Parameters
    ----------
    client
        A connected ``distributed.Client``.

    Returns
    -------
    dict
        Worker address -> fingerprint (all equal to :func:`ichct_fingerprint`).

    Examples
    --------
    >>> with dask_client(ClusterSpec(workers=1)) as client:  # doctest: +SKIP
    ...     check_worker_versions(client)
    """
    mine = ichct_fingerprint()
    theirs = client.run(ichct_fingerprint)
    other = {addr: fp for addr, fp in theirs.items() if fp != mine}
    if other:
        listed = ", ".join(f"{addr} runs ichct {fp}" for addr, fp in sorted(other.items()))
        raise ClusterError(f"Dask worker(s) run another ichct than this client ({mine}): {listed}; "
                           "install the same ichct on every worker (pip install of the same version/commit)")
    return theirs


def _local_cluster(spec: ClusterSpec) -> Any:
    from distributed import LocalCluster

    n_workers = spec.workers or usable_cores()
    env = {name: str(spec.torch_threads) for name in _THREAD_ENV}
    # Dask's statistical profiler samples every worker thread 100 times a second: ~6 % of the CPU of a
    # header scan on a small machine, for the dashboard's profile page only
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=spec.threads_per_worker, processes=True,
                            memory_limit=spec.memory_limit, dashboard_address=":0", env=env,
                            host="127.0.0.1", silence_logs=logging.ERROR)


def _connect(address: str, timeout_s: float) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"Dask scheduler {address} did not answer within {timeout_s:g} s ({exc}); "
                           f"check the address (--scheduler / {SCHEDULER_ENV}) and that the scheduler "
                           "runs, or omit it to use a local cluster") from None


@contextmanager
def dask_client(spec: ClusterSpec | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` on the user's scheduler or on a new LocalCluster (closed on exit).

    Workers are checked to run this ichct and their torch threads are pinned before the client
    is handed out.

    Parameters
    ----------
    spec
        Where to run (default :class:`ClusterSpec`: a LocalCluster sized to the machine).

    Examples
    --------
    >>> with dask_client(ClusterSpec(workers=2)) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    spec = spec or ClusterSpec()
    address = spec.resolved_scheduler()
    cluster = None if address else _local_cluster(spec)
    try:
        client = _connect(address, spec.connect_timeout_s) if address else _client_of(cluster)
        try:
            client.register_plugin(_PinThreads(spec.torch_threads), name=_PinThreads.name)
            client.register_plugin(_QuietLibraries(logging.getLogger("ichct").level), name=_QuietLibraries.name)
            check_worker_versions(client)
            if spec.progress and getattr(client, "dashboard_link", None) and _has_dashboard(client):
                print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def _client_of(cluster: Any) -> Any:
    from distributed import Client

    return Client(cluster, set_as_default=False)


def _has_dashboard(client: Any) -> bool:
    """True when the scheduler serves a dashboard that works (Dask needs bokeh for it)."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        return False
    return bool(client.scheduler_info().get("services", {}).get("dashboard"))
