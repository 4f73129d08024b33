"""``ichct preprocess``: a thin layer over :func:`ichct.pipeline.preprocess.run.preprocess`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ichct.pipeline.cli.cluster_args import add_cluster_arguments, cluster_spec

logger = logging.getLogger("ichct.cli")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "preprocess", parents=[common], help="preprocess a manifest's studies once into a disk cache for training",
        description="Run the deterministic part of a model's training transforms (load, RAS, resample, crop, "
                    "windows, pad) on every study of a manifest split and write each result to "
                    "OUT/<kind>-<config digest>/<series UID>/ with a completion record keyed by the study's file "
                    "content and the preprocessing config; `ichct train --cache-dir OUT` then streams from it. "
                    "The studies run as Dask tasks (a local cluster, or --scheduler); a rerun skips the entries "
                    "already done, a failing study is recorded with its reason and the rest finish, and an entry "
                    "is renamed into place only when complete. Prints a JSON summary. Exit codes: 0 every study "
                    "cached, 1 a bad input or any failed study, 2 usage error, 70 internal error (a bug).")
    p.add_argument("--manifest", required=True, help="split manifest (checked before use)")
    p.add_argument("--kind", required=True, choices=("seg", "cls"), help="whose preprocessing: seg or cls")
    p.add_argument("--out", required=True, metavar="CACHE", help="cache folder (created; shared between runs)")
    p.add_argument("--split", default="training", choices=("training", "test", "all"),
                   help="studies to preprocess (default: training, every fold)")
    p.add_argument("--config", default=None,
                   help="the training config (JSON/YAML overrides) whose preprocessing is cached: the one given "
                        "to `ichct train --config`")
    add_cluster_arguments(p)
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from ichct.pipeline.preprocess.run import preprocess

    report = preprocess(args.manifest, args.kind, args.out, split=args.split, config=args.config,
                        cluster=cluster_spec(args))
    for outcome in report.outcomes:
        if not outcome.ok:
            logger.error("%s: %s", outcome.name, outcome.reason)
    sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    return 1 if report.counts()["failed"] else 0
