"""``ichct ensemble``: a thin layer over :func:`ichct.pipeline.ensemble.assemble_ensemble`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "ensemble", parents=[common], help="average several trained segmenters (or classifiers) as one model",
        description="Write a training run folder whose network is the mean of the members' probabilities "
                    "(nnU-Net's ensembling; segmenters: class probabilities, classifiers: slice probabilities): "
                    "config.json (the first member's settings, every member's network and where it came from), "
                    "best.pt (the members' weights), thresholds.json (the first member's stored rule) and "
                    "train_patients.json (every member's training patients, refused by evaluation). The members "
                    "(training runs or bundles of one kind, at least two) must preprocess alike and have the same "
                    "classes. Then choose the ensemble's confidence filter and seg_peak threshold (a classifier "
                    "ensemble: its thresholds) with ichct postprocess on held-out studies, and package it with "
                    "ichct bundle package. Prints a summary as JSON.")
    p.add_argument("--member", action="append", required=True, dest="members", metavar="RUN_OR_BUNDLE",
                   help="a training run or bundle, segmentation or classification (repeat: at least two of one "
                        "kind; the first gives the settings)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from ichct.pipeline.ensemble import assemble_ensemble

    command = "ichct ensemble " + " ".join(f"--member {shlex.quote(m)}" for m in args.members)
    command += f" --out {shlex.quote(args.out)}" + (" --force" if args.force else "")
    summary = assemble_ensemble(args.members, args.out, force=args.force, command=command)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0
