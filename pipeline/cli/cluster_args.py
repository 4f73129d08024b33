"""The Dask options every cohort command shares (``--scheduler``, ``--workers``, ...)."""

from __future__ import annotations

import argparse
import sys

from ichct.pipeline.cli.arg_types import positive_int
from ichct.pipeline.core.cluster import DEFAULT_CONNECT_TIMEOUT_S, SCHEDULER_ENV, ClusterSpec


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the Dask options to a command's parser (read back with :func:`cluster_spec`)."""
    group = parser.add_argument_group("cluster (Dask distributed)")
    group.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help=f"address of a running Dask scheduler, e.g. tcp://head:8786 (default: ${SCHEDULER_ENV}, "
                            "else a local cluster of one worker process per core)")
    group.add_argument("--workers", type=positive_int, default=None, metavar="N",
                       help="worker processes of the local cluster (default: the usable cores)")
    group.add_argument("--worker-threads", type=positive_int, default=1, metavar="N",
                       help="torch threads per worker (default 1: N workers never oversubscribe N cores)")
    group.add_argument("--memory-limit", default="auto", metavar="SIZE",
                       help="memory limit per local worker, e.g. 4GiB (default auto: the machine's memory split "
                            "between the workers)")
    group.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT_S, metavar="S",
                       help=f"seconds to wait for --scheduler (default {DEFAULT_CONNECT_TIMEOUT_S:g})")


def cluster_spec(args: argparse.Namespace) -> ClusterSpec:
    """The :class:`ClusterSpec` of parsed :func:`add_cluster_arguments` options (progress on a terminal)."""
    memory = None if str(args.memory_limit).lower() in ("0", "none") else args.memory_limit
    show = sys.stderr.isatty() and not getattr(args, "quiet", False)
    return ClusterSpec(scheduler=args.scheduler, workers=args.workers, torch_threads=args.worker_threads,
                       memory_limit=memory, connect_timeout_s=args.connect_timeout, progress=show)
