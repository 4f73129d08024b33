"""``ichct postprocess``: a thin layer over :func:`ichct.pipeline.postprocess.determine_postprocessing`."""

from __future__ import annotations

import argparse
import json
import sys

from ichct.pipeline.cli.arg_types import fraction, non_negative_float, non_negative_int


def _values(text: str) -> list[float]:
    """A comma-separated list of numbers within [0, 1]."""
    return [fraction(part) for part in text.split(",") if part.strip()]


def _volumes(text: str) -> list[float]:
    """A comma-separated list of volumes >= 0 (mL), or ``none`` (an empty list: no sweep)."""
    if text.strip().lower() == "none":
        return []
    return [non_negative_float(part) for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "postprocess", parents=[common],
        help="choose a segmenter's confidence filter, minimum component volume and seg_peak threshold (a "
             "classifier's thresholds) on held-out studies",
        description="Predict every study of a manifest split with a segmentation run or bundle once, score each "
                    "candidate min_component_confidence (predicted blood components whose mean blood probability "
                    "is below it become background) against the reference masks, and choose the largest value "
                    "whose Dice on studies with blood and lesion-level sensitivity stay within the tolerances of "
                    "no filter (with --max-false-blood-ml, raised to the smallest value within that false-blood "
                    "budget); then, at that value, the smallest min_component_ml (predicted components under it "
                    "are dropped) whose false-positive lesions per scan stay within --max-fp-per-scan and whose "
                    "Dice stays within --dice-tolerance of the run's own value. Writes postprocessing.json (the "
                    "sweeps and the rules) beside the model's config and the values into it (a bundle's configs "
                    "are regenerated); the same studies choose the "
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
    p.add_argument("--min-component-ml", type=_volumes, default=None, metavar="V1,V2,...",
                   help="candidate minimum component volumes in mL, at least the lesion definition's 0.05 (default: "
                        "0.05, 0.1, 0.15, 0.2, 0.3, 0.5; the run's own value is added); none: keep the run's")
    p.add_argument("--max-fp-per-scan", type=non_negative_float, default=0.5,
                   help="false-positive lesions per scan a chosen minimum component volume may cost (default 0.5)")
    p.add_argument("--max-false-blood-ml", type=non_negative_float, default=None, metavar="ML",
                   help="false-blood budget: raise the chosen confidence value to the smallest whose 95th percentile "
                        "of predicted blood on the studies without blood is within ML mL (default: none; the "
                        "studies must include some without blood)")
    p.add_argument("--dry-run", action="store_true", help="report the sweep and the choice; write nothing")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from ichct.pipeline.postprocess import DEFAULT_CONFIDENCES, DEFAULT_MIN_COMPONENTS_ML, determine_postprocessing

    minima = DEFAULT_MIN_COMPONENTS_ML if args.min_component_ml is None else args.min_component_ml
    record = determine_postprocessing(args.model_dir, args.manifest, split=args.split, fold=args.fold,
                                      values=args.values or DEFAULT_CONFIDENCES, dice_tolerance=args.dice_tolerance,
                                      sensitivity_tolerance=args.sensitivity_tolerance, min_components_ml=minima,
                                      max_fp_per_scan=args.max_fp_per_scan,
                                      max_false_blood_ml=args.max_false_blood_ml, apply=not args.dry_run,
                                      device=args.device)
    sys.stdout.write(json.dumps(record) + "\n")
    return 0
