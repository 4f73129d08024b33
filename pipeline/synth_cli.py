"""``ichct synth``: write a synthetic head-CT cohort (DICOM, label maps, RSNA labels, manifest)."""

from __future__ import annotations

import argparse
import logging
import sys

from ichct.pipeline.synth.config import DEFAULT_SUBTYPE_PROB, SUBTYPES, SynthConfig

logger = logging.getLogger("ichct.synth")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not within [0, 1]")
    return value


def _subtype_prob(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in SUBTYPES:
        raise argparse.ArgumentTypeError(f"expected NAME=P with NAME one of {', '.join(SUBTYPES)} (got {text!r})")
    return name, _fraction(value)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "synth", parents=[common], help="generate a synthetic head-CT cohort (DICOM + labels)",
        description="Generate procedural head CT studies as real DICOM with voxel label maps on the `ichct convert` grid, "
                    "RSNA-style slice labels (slice_labels.csv) and a cohort.json manifest. Same seed, same bytes.",
    )
    p.add_argument("out_dir", help="output folder (created; must be empty unless --overwrite replaces a previous cohort)")
    p.add_argument("--patients", type=_positive_int, default=10, help="number of patients (default 10)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--matrix", type=_positive_int, default=256, help="image matrix (rows = columns, default 256)")
    p.add_argument("--slices", type=_positive_int, default=32, help="slices per axial series (default 32)")
    p.add_argument("--workers", type=_positive_int, default=None, help="worker processes (default: one per CPU, at most 8)")
    p.add_argument("--positive-fraction", type=_fraction, default=0.5, help="share of patients with hemorrhage (default 0.5)")
    p.add_argument("--subtype-prob", type=_subtype_prob, action="append", default=[], metavar="NAME=P",
                   help="P(subtype | positive), repeatable; defaults: "
                        + ", ".join(f"{k}={v:g}" for k, v in DEFAULT_SUBTYPE_PROB.items()))
    p.add_argument("--follow-up-fraction", type=_fraction, default=0.25, help="share of patients with a second study (default 0.25)")
    p.add_argument("--preview", action="store_true", help="also write a PNG contact sheet per study under OUT/preview/")
    p.add_argument("--overwrite", action="store_true", help="replace a previous synth cohort in OUT_DIR")
    p.add_argument("--dry-run", action="store_true", help="plan the cohort and print its make-up; write nothing")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from ichct.pipeline.synth import expected_prevalence, generate_cohort, plan_cohort
    from ichct.pipeline.synth.cohort import default_workers

    try:
        config = SynthConfig(
            n_patients=args.patients, seed=args.seed, matrix=args.matrix, slices=args.slices,
            positive_fraction=args.positive_fraction, subtype_prob=dict(args.subtype_prob),
            follow_up_fraction=args.follow_up_fraction, preview=args.preview,
        )
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    if args.dry_run:
        plan = plan_cohort(config)
        n = len(plan)
        logger.info("%d patient(s), %d with a follow-up study, %d positive", n, sum(a.follow_up for a in plan), sum(a.positive for a in plan))
        expected = expected_prevalence(config)
        for name in SUBTYPES:
            have = sum(name in a.subtypes for a in plan)
            logger.info("  %-17s %4d patient(s) (%.1f%%; expected %.1f%%)", name, have, 100.0 * have / n, 100.0 * expected[name])
        return 0
    try:
        cohort = generate_cohort(config, args.out_dir, workers=args.workers or default_workers(), overwrite=args.overwrite)
    except FileExistsError as exc:
        logger.error("%s", exc)
        return 1
    n_studies = len(cohort["studies"])
    positives = sum(s["ct_labels"]["any"] for s in cohort["studies"])
    sys.stdout.write(f"{args.out_dir}: {config.n_patients} patient(s), {n_studies} studies ({positives} with hemorrhage); "
                     f"see cohort.json and slice_labels.csv\n")
    return 0
