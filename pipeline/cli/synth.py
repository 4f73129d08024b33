"""``ichct synth``: write a synthetic head-CT cohort (DICOM, label maps, RSNA labels, manifest)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ichct.errors import IchctError
from ichct.pipeline.cli.arg_types import fraction, non_negative_int, positive_int
from ichct.pipeline.synth.config import (
    COMMITTED_COHORTS,
    DEFAULT_COHORT,
    DEFAULT_COHORT_NAME,
    DEFAULT_COHORT_DIR,
    DEFAULT_COHORT_MANIFEST,
    DEFAULT_FORMATION_VARIETY,
    DEFAULT_SUBTYPE_PROB,
    SUBTYPES,
    SynthConfig,
    committed_cohort,
)

logger = logging.getLogger("ichct.synth")


def _subtype_prob(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in SUBTYPES:
        raise argparse.ArgumentTypeError(f"expected NAME=P with NAME one of {', '.join(SUBTYPES)} (got {text!r})")
    return name, fraction(value)


def _formation_ranges(text: str) -> dict:
    """``--formation-ranges``: inline JSON, or the path of a JSON file, holding setting -> [low, high]."""
    inline = text.lstrip()[:1] in ("{", "[")
    if not inline and not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is neither a JSON object nor a JSON file")
    try:
        values = json.loads(text if inline else Path(text).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object or a JSON file (got {text!r}: {exc})") from None
    if not isinstance(values, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of setting -> [low, high] (got {text!r})")
    return values


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "synth", parents=[common], help="generate a synthetic head-CT cohort (DICOM + labels)",
        description="Generate procedural head CT studies as real DICOM with voxel label maps on the `ichct convert` grid, "
                    "RSNA-style slice labels (slice_labels.csv) and a cohort.json manifest. Same seed, same bytes.",
    )
    p.add_argument("out_dir", nargs="?", default=None,
                   help="output folder (created; must be empty unless --overwrite replaces a previous cohort); "
                        f"with --default-cohort it defaults to {DEFAULT_COHORT_DIR}, with --cohort NAME to data/NAME")
    named = p.add_mutually_exclusive_group()
    named.add_argument("--default-cohort", action="store_true",
                       help=f"write the default cohort ({DEFAULT_COHORT.n_patients} patients, seed {DEFAULT_COHORT.seed}, "
                            f"matrix {DEFAULT_COHORT.matrix}, {DEFAULT_COHORT.slices} slices) that "
                            f"{DEFAULT_COHORT_MANIFEST} splits (= --cohort {DEFAULT_COHORT_NAME}); cohort options "
                            "cannot be combined with it")
    named.add_argument("--cohort", choices=list(COMMITTED_COHORTS), default=None, metavar="NAME",
                       help="write a cohort whose split is committed as data_manifests/NAME.json, into data/NAME by "
                            "default: " + "; ".join(f"{n} ({c.config.n_patients} patients, seed {c.config.seed}: "
                                                    f"{c.purpose})" for n, c in COMMITTED_COHORTS.items())
                            + "; cohort options cannot be combined with it")
    p.add_argument("--patients", type=positive_int, default=None, help="number of patients (default 10)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="random seed (default 0)")
    p.add_argument("--matrix", type=positive_int, default=None, help="image matrix (rows = columns, default 256)")
    p.add_argument("--slices", type=positive_int, default=None, help="slices per axial series (default 32)")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: one per CPU, at most 8)")
    p.add_argument("--positive-fraction", type=fraction, default=None, help="share of patients with hemorrhage (default 0.5)")
    p.add_argument("--subtype-prob", type=_subtype_prob, action="append", default=[], metavar="NAME=P",
                   help="P(subtype | positive), repeatable; defaults: "
                        + ", ".join(f"{k}={v:g}" for k, v in DEFAULT_SUBTYPE_PROB.items()))
    p.add_argument("--follow-up-fraction", type=fraction, default=None, help="share of patients with a second study (default 0.25)")
    p.add_argument("--motion-fraction", type=fraction, default=None,
                   help="share of studies where the patient moved during part of the scan (default 0.05)")
    p.add_argument("--hard-negative-fraction", type=fraction, default=None,
                   help="share of negative patients at the bright end of every blood mimic (default 0)")
    variety = p.add_mutually_exclusive_group()
    variety.add_argument("--formation-variety", action="store_true",
                         help="render each study with its own image formation (soft kernel, dose, PSF tails, HU offset, "
                              "slice profile) drawn from the default ranges: "
                              + ", ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in DEFAULT_FORMATION_VARIETY.items()))
    variety.add_argument("--formation-ranges", type=_formation_ranges, default=None, metavar="JSON|FILE",
                         help='like --formation-variety with your own ranges, e.g. \'{"dose_factor": [0.5, 2]}\' '
                              "(inline JSON or a JSON file)")
    p.add_argument("--preview", action="store_true", help="also write a PNG contact sheet per study under OUT/preview/")
    p.add_argument("--overwrite", action="store_true", help="replace a previous synth cohort in OUT_DIR")
    p.add_argument("--dry-run", action="store_true", help="plan the cohort and print its make-up; write nothing")
    p.set_defaults(func=run_synth)


# cohort-shaping options: argparse dest -> SynthConfig field (unset options keep SynthConfig's defaults)
_COHORT_OPTIONS = {"patients": "n_patients", "seed": "seed", "matrix": "matrix", "slices": "slices",
                   "positive_fraction": "positive_fraction", "follow_up_fraction": "follow_up_fraction",
                   "motion_fraction": "motion_fraction", "hard_negative_fraction": "hard_negative_fraction"}


def _named_cohort(args: argparse.Namespace) -> str | None:
    """The committed cohort ``--default-cohort`` or ``--cohort NAME`` asks for, else None."""
    return DEFAULT_COHORT_NAME if args.default_cohort else args.cohort


def _config(args: argparse.Namespace) -> SynthConfig | None:
    """The cohort settings (``args.out_dir`` filled in for the default cohort), or None after a usage error."""
    given = {field: getattr(args, dest) for dest, field in _COHORT_OPTIONS.items() if getattr(args, dest) is not None}
    ranges = DEFAULT_FORMATION_VARIETY if args.formation_variety else args.formation_ranges
    if ranges is not None:
        given["formation_ranges"] = ranges
    name = _named_cohort(args)
    if name is not None:
        option = "--default-cohort" if args.default_cohort else f"--cohort {name}"
        named = [f"--{dest.replace('_', '-')}" for dest in _COHORT_OPTIONS if getattr(args, dest) is not None]
        named += ["--subtype-prob"] if args.subtype_prob else []
        named += ["--formation-variety"] if args.formation_variety else []
        named += ["--formation-ranges"] if args.formation_ranges is not None else []
        if named:
            logger.error("%s fixes the cohort; drop %s", option, ", ".join(named))
            return None
        cohort = committed_cohort(name)
        if args.out_dir is None:
            args.out_dir = cohort.directory
            if not Path(cohort.manifest).is_file():
                logger.warning("no %s in the current folder: that manifest expects the cohort in %s under "
                               "the repository root; run this there or name the folder", cohort.manifest,
                               cohort.directory)
        cohort.config.preview = args.preview
        return cohort.config
    if args.out_dir is None:
        logger.error("name an output folder (or pass --default-cohort or --cohort NAME)")
        return None
    try:
        return SynthConfig(**given, subtype_prob=dict(args.subtype_prob), preview=args.preview)
    except IchctError as exc:  # a value out of range: a usage error (anything else is a bug)
        logger.error("%s", exc)
        return None


def run_synth(args: argparse.Namespace) -> int:
    from ichct.pipeline.synth import expected_prevalence, generate_cohort, plan_cohort
    from ichct.pipeline.synth.cohort import default_workers

    config = _config(args)
    if config is None:
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
    name = _named_cohort(args)
    if name is not None:
        manifest = committed_cohort(name).manifest
        sys.stdout.write(f"the {'default ' if args.default_cohort else ''}cohort {name}: "
                         f"its split is {manifest} (`ichct manifest check {manifest}`)\n")
    return 0
