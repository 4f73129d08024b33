"""``ichct evaluate``."""

from __future__ import annotations

import argparse
import json
import sys

from ichct.pipeline.decision import RULES


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "evaluate", parents=[common], help="evaluate trained models on a manifest split (metrics with bootstrap CIs)",
        description="Run a seg and/or a cls training run (or model bundle) on a split of a manifest (checked "
                    "before use) and write "
                    "metrics.json, per_case.csv, report.md and PNG plots into EVAL_DIR (written as a whole: nothing is "
                    "left half-written on error). Patients in a run's train_patients.json are refused unless "
                    "--allow-overlap, in which case the report says so in its first line. Thresholds: "
                    "every rule uses the threshold chosen on the run's validation fold (thresholds.json; "
                    "'max' and 'topk_mean' of runs trained before those were stored use 0.5, as metrics.json says). "
                    "Without --run, --bundle and --compare MODEL_A MODEL_B the demonstration bundles that ship with "
                    "ichct are evaluated (trained on synthetic data only): a warning says so, metrics.json has "
                    "models_source \"shipped\" and report.md says so under its title.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", action="append", default=None, metavar="RUN_DIR",
                     help="training run directory; repeat for one seg and one cls run, or give two runs of one "
                          "kind to compare them (paired bootstrap of AUC / Dice, first minus second)")
    src.add_argument("--bundle", action="append", default=None, metavar="BUNDLE_DIR",
                     help="model bundle (ichct bundle package/export); repeat like --run. Patients in the bundle's "
                          "models/train_patients.json are refused like a run's")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                   help="paired comparison (differences A - B, patient-level bootstrap, p-values): two decision "
                        "rules of the given models (e.g. --compare consecutive max), or two models, each a run or "
                        "bundle folder (instead of --run/--bundle)")
    p.add_argument("--manifest", required=True, help="split manifest")
    p.add_argument("--split", default="test", choices=("test", "training", "validation", "all"),
                   help="split to evaluate (default: test)")
    p.add_argument("--fold", type=int, default=None, help="fold of --split validation")
    p.add_argument("--out", required=True, metavar="EVAL_DIR", help="output folder (must not exist or be empty)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="patient-level bootstrap resamples, at least 1 (default: 2000)")
    p.add_argument("--rules", default=None,
                   help=f"comma-separated decision rules out of {','.join(RULES)} "
                        "(default: all that the given runs support)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--allow-overlap", action="store_true", dest="allow_overlap",
                   help="evaluate even on patients the model was trained on (flagged in every report)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="checkpoint of the runs")
    p.set_defaults(func=run, _parser=p)


def _usage(args: argparse.Namespace, msg: str) -> int:
    args._parser.print_usage(sys.stderr)
    sys.stderr.write(f"ichct evaluate: error: {msg}\n")
    return 2


def _model_kind_of_folder(path: str) -> str | None:
    """"run" (``ichct train`` folder), "bundle" (has configs/metadata.json) or None."""
    from pathlib import Path

    p = Path(path)
    if (p / "configs" / "metadata.json").is_file():
        return "bundle"
    if (p / "config.json").is_file():
        return "run"
    return None


def run(args: argparse.Namespace) -> int:
    compare_rules = None
    if args.compare is not None:
        a, b = args.compare
        if a in RULES and b in RULES:
            compare_rules = [a, b]
        elif a in RULES or b in RULES:
            return _usage(args, f"--compare: give two rules or two model folders, not a mix ({a!r}, {b!r})")
        else:
            if args.run or args.bundle:
                return _usage(args, "--compare with two model folders replaces --run/--bundle")
            kinds = [_model_kind_of_folder(x) for x in (a, b)]
            if None in kinds:
                bad = [x for x, k in zip((a, b), kinds) if k is None]
                return _usage(args, f"--compare: {bad[0]} is neither a rule ({','.join(RULES)}) nor a run or "
                                    "bundle folder")
            if kinds[0] != kinds[1]:
                return _usage(args, "--compare: compare two runs or two bundles (one of each: package the run "
                                    "with `ichct bundle package` first)")
            if kinds[0] == "run":
                args.run = [a, b]
            else:
                args.bundle = [a, b]
    source = "user"
    if not args.run and not args.bundle:  # the shipped demonstration bundles (evaluate logs a warning)
        source = "shipped"
    flag = "--run" if args.run else "--bundle"
    if len(args.run or args.bundle or []) > 2:
        return _usage(args, f"at most two {flag} (one seg and one cls, or two of one kind to compare)")
    if args.bootstrap < 1:  # the confidence intervals need resamples (ichct.pipeline.evaluate.bootstrap: n >= 1)
        return _usage(args, f"argument --bootstrap: must be >= 1, got {args.bootstrap}")
    if args.split == "validation" and args.fold is None:
        return _usage(args, "--split validation needs --fold")
    rules = None
    if args.rules is not None:
        rules = [r.strip() for r in args.rules.split(",") if r.strip()]
        bad = [r for r in rules if r not in RULES]
        if not rules or bad:
            return _usage(args, f"--rules: unknown rule(s) {bad or args.rules!r}; choose from {','.join(RULES)}")
    from ichct.pipeline.evaluate.run import evaluate

    summary = evaluate(args.run or [], args.manifest, args.out, split=args.split, fold=args.fold, n_boot=args.bootstrap,
                       rules=rules, seed=args.seed, allow_overlap=args.allow_overlap, device=args.device,
                       checkpoint=args.checkpoint, bundles=args.bundle or [], compare_rules=compare_rules,
                       models_source=source)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0
