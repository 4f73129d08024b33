"""``ichct postprocess``: a thin layer over :func:`ichct.pipeline.postprocess.determine_postprocessing`."""

from __future__ import annotations

import argparse
import json
import sys

from ichct.pipeline.cli.arg_types import fraction, non_negative_int


def _values(text: str) -> list[float]:
    """A comma-separated list of numbers within [0, 1]."""
    return [fraction(part) for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "postprocess", parents=[common],
        help="choose a segmenter's confidence filter and seg_peak threshold (a classifier's thresholds) on "
             "held-out studies",
        description="Predict every study of a manifest split with a segmentation run or bundle once, score each "
                    "candidate min_component_confidence (predicted blood components whose mean blood probability "
                    "is below it become background) against the reference masks, and choose the largest value "
                    "whose Dice on studies with blood and lesion-level sensitivity stay within the tolerances of "
                    "no filter. Writes postprocessing.json (the sweep and the rule) beside the model's config and "
                    "the value into it (a bundle's configs are regenerated); the same studies choose the "
                    "threshold of the seg_peak rule (Youden), stored in thresholds.json; prints the record as "
                    "JSON. A classification run or bundle (an ensemble of classifiers above all) gets the "
                    "thresholds of its slice rules chosen again on the studies' CT-level labels, as training "
                    "chooses them on its validation fold (thresholds.json replaced; postprocessing.json keeps the "
                    "previous rule). The studies must be held out: the default is the model's validation fold; "
                    "the model's training patients are refused.")
    p.add_argument("model_dir", help="training run or bundle folder (segmentation or classification)")
    p.add_argument("--manifest", required=True, help="split manifest whose studies have reference masks")
    p.add_argument("--split", default="validation", choices=("validation", "test", "training", "all"),
                   help="studies to choose on (default: the model's validation fold)")
    p.add_argument("--fold", type=non_negative_int, default=None,
                   help="the fold of --split validation (default: the model's own)")
    p.add_argument("--values", type=_values, default=None, metavar="V1,V2,...",
                   help="candidate values within [0, 1] (default: 0, 0.5, 0.55, ..., 0.9)")
    p.add_argument("--dice-tolerance", type=fraction, default=0.01,
                   help="how much lower mean Dice on studies with blood may be than without the filter (default 0.01)")
    p.add_argument("--sensitivity-tolerance", type=fraction, default=0.02,
                   help="how much lower lesion-level sensitivity may be than without the filter (default 0.02)")
    p.add_argument("--dry-run", action="store_true", help="report the sweep and the choice; write nothing")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from ichct.pipeline.postprocess import DEFAULT_CONFIDENCES, determine_postprocessing

    record = determine_postprocessing(args.model_dir, args.manifest, split=args.split, fold=args.fold,
                                      values=args.values or DEFAULT_CONFIDENCES, dice_tolerance=args.dice_tolerance,
                                      sensitivity_tolerance=args.sensitivity_tolerance, apply=not args.dry_run,
                                      device=args.device)
    sys.stdout.write(json.dumps(record) + "\n")
    return 0
