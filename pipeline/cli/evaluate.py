"""``ichct evaluate``."""

from __future__ import annotations

import argparse
import json
import sys

from ichct.pipeline.cli.cluster_args import add_cluster_arguments, cluster_spec
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
                    "models_source \"shipped\" and report.md says so under its title. --predictions DIR scores "
                    "predictions another tool wrote (label maps as NIfTI or DICOM SEG, probability CSVs) with the "
                    "same metrics and report (see docs/external-models.md).")
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
    _lesion_arguments(p)
    _external_arguments(p)
    add_cluster_arguments(p)  # the per-study inference of ichct's models on Dask (16 studies or more, or --scheduler)
    p.set_defaults(func=run, _parser=p)


def _lesion_arguments(p: argparse.ArgumentParser) -> None:
    les = p.add_argument_group("lesion-level metrics (docs/evaluation.md#lesion-level-metrics)")
    les.add_argument("--lesion-connectivity", type=int, default=26, choices=(6, 18, 26), dest="lesion_connectivity",
                     help="a lesion is a connected component of this many neighbours, in reference and prediction "
                          "alike (default: 26; the decision rule's own connectivity is not affected)")
    les.add_argument("--lesion-min-ml", type=float, default=0.05, dest="lesion_min_ml", metavar="ML",
                     help="smallest lesion in mL: smaller reference components are not lesions to find, smaller "
                          "predicted ones not false positives (default: 0.05; the definition before: "
                          "--lesion-connectivity 6 --lesion-min-ml 0)")


def _lesions(args: argparse.Namespace) -> tuple[object | None, str | None]:
    """``(LesionDefinition or None, usage error or None)`` of the lesion options."""
    import math

    if not (math.isfinite(args.lesion_min_ml) and args.lesion_min_ml >= 0):
        return None, f"argument --lesion-min-ml: must be a number >= 0 (mL), got {args.lesion_min_ml:g}"
    from ichct.pipeline.evaluate.lesions import LesionDefinition

    return LesionDefinition(args.lesion_connectivity, args.lesion_min_ml), None


def _external_arguments(p: argparse.ArgumentParser) -> None:
    ext = p.add_argument_group("predictions of another tool (docs/external-models.md)")
    ext.add_argument("--predictions", default=None, metavar="DIR",
                     help="score the predictions in DIR instead of an ichct model: label maps (<study UID>.nii.gz, "
                          ".nii or DICOM SEG .dcm; nnU-Net <case ID>.nii.gz with --map) and/or probability CSVs "
                          "(per study: study_uid,any,...; per slice: RSNA ID,Label). To compare them with an ichct "
                          "run or bundle: --compare DIR MODEL")
    ext.add_argument("--trained-on", default=None, dest="trained_on", metavar="WHAT",
                     help="required with --predictions: what the tool was trained on, for the leakage guard: its "
                          "training manifest, nnU-Net's splits_final.json (with the export's case map), a list of "
                          "PatientIDs (one per line), or 'unknown' (every report then says so first)")
    ext.add_argument("--label-map", default=None, dest="label_map", metavar="SPEC",
                     help="what label values mean: VALUE=NAME pairs (1=any, or 1=epidural,2=intraparenchymal,...), "
                          "'ichct', 'binary', or a JSON file (default: the case map's labels, a SEG's segment "
                          "labels, else binary 1=any)")
    ext.add_argument("--map", default=None, dest="map_path", metavar="FILE",
                     help="how files name studies: the ichct_case_map.json of `ichct manifest export-nnunet` "
                          "(files named by case ID), or a CSV with columns study_uid,prediction "
                          "(default: files named by study UID)")
    ext.add_argument("--missing", default="error", choices=("error", "negative"),
                     help="a study without a prediction: an error listing the studies (default), or counted as an "
                          "empty mask and probability 0 (said first in the report)")
    ext.add_argument("--thresholds", default=None, metavar="FILE",
                     help="thresholds of the CT-level calls: {\"rule\": threshold} or {\"rule\": {\"label\": "
                          "threshold}} JSON, or an ichct thresholds.json (seg_volume in mL)")
    ext.add_argument("--val-predictions", action="append", default=None, dest="val_predictions", metavar="DIR",
                     help="choose the thresholds on the tool's predictions for validation studies in DIR "
                          "(repeatable; never studies of the evaluated split). Without --thresholds or "
                          "--val-predictions only AUCs, calibration and Dice are reported")


def _usage(args: argparse.Namespace, msg: str) -> int:
    args._parser.print_usage(sys.stderr)
    sys.stderr.write(f"ichct evaluate: error: {msg}\n")
    return 2


def _model_kind_of_folder(path: str) -> str | None:
    """"run" (``ichct train`` folder), "bundle" (has configs/metadata.json), "predictions" (holds label
    maps or CSVs of another tool) or None."""
    from pathlib import Path

    p = Path(path)
    if (p / "configs" / "metadata.json").is_file():
        return "bundle"
    if (p / "config.json").is_file():
        return "run"
    if p.is_dir():
        from ichct.pipeline.evaluate.external_masks import is_mask_file

        if any(c.is_file() and (is_mask_file(c) or c.suffix.lower() == ".csv") for c in p.iterdir()):
            return "predictions"
    return None


def _compare_folders(args: argparse.Namespace) -> str | None:
    """Set ``args.run``/``args.bundle``/``args.predictions`` from ``--compare A B`` of two folders;
    a usage error message, or None."""
    a, b = args.compare
    if args.run or args.bundle:
        return "--compare with two model folders replaces --run/--bundle"
    kinds = [_model_kind_of_folder(x) for x in (a, b)]
    if None in kinds:
        bad = [x for x, k in zip((a, b), kinds) if k is None]
        return (f"--compare: {bad[0]} is neither a rule ({','.join(RULES)}) nor a run, bundle or predictions "
                "folder")
    if "predictions" in kinds:
        if kinds[0] == kinds[1]:
            return "--compare: compare a predictions folder with an ichct run or bundle, not with another one"
        if args.predictions is not None:
            return "--compare with a predictions folder replaces --predictions"
        first = kinds[0] == "predictions"
        args.predictions, model = (a, b) if first else (b, a)
        args.predictions_first = first
        setattr(args, "run" if kinds[1 if first else 0] == "run" else "bundle", [model])
        return None
    if kinds[0] != kinds[1]:
        return "--compare: compare two runs or two bundles (one of each: package the run with `ichct bundle package` first)"
    if kinds[0] == "run":
        args.run = [a, b]
    else:
        args.bundle = [a, b]
    return None


def _compare_rules(args: argparse.Namespace) -> tuple[list[str] | None, str | None]:
    """``(two rules to compare or None, usage error or None)`` from ``--compare``."""
    if args.compare is None:
        return None, None
    a, b = args.compare
    if a in RULES and b in RULES:
        return [a, b], None
    if a in RULES or b in RULES:
        return None, f"--compare: give two rules or two model folders, not a mix ({a!r}, {b!r})"
    return None, _compare_folders(args)


def _external_options(args: argparse.Namespace) -> tuple[object | None, str | None]:
    """``(ExternalOptions or None, usage error or None)`` of the predictions options."""
    given = [f for f, v in (("--trained-on", args.trained_on), ("--label-map", args.label_map),
                            ("--map", args.map_path), ("--thresholds", args.thresholds),
                            ("--val-predictions", args.val_predictions)) if v is not None]
    if args.predictions is None:
        if given or args.missing != "error":
            return None, f"{(given or ['--missing'])[0]} goes with --predictions DIR"
        return None, None
    if (args.run or args.bundle) and args.predictions_first is None:
        return None, "--predictions replaces --run/--bundle; to compare them use --compare PREDICTIONS_DIR MODEL"
    if args.trained_on is None:
        return None, ("--predictions needs --trained-on: the tool's training manifest, nnU-Net splits_final.json, "
                      "a PatientID list, or 'unknown'")
    if args.thresholds is not None and args.val_predictions:
        return None, "give --thresholds or --val-predictions, not both"
    from ichct.pipeline.evaluate.external import ExternalOptions

    return ExternalOptions(trained_on=args.trained_on, label_map=args.label_map, map_path=args.map_path,
                           missing=args.missing, thresholds=args.thresholds,
                           val_predictions=tuple(args.val_predictions or ()),
                           first=args.predictions_first is not False), None


def _rules(args: argparse.Namespace) -> tuple[list[str] | None, str | None]:
    if args.rules is None:
        return None, None
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    bad = [r for r in rules if r not in RULES]
    if not rules or bad:
        return None, f"--rules: unknown rule(s) {bad or args.rules!r}; choose from {','.join(RULES)}"
    return rules, None


def _other_usage_error(args: argparse.Namespace) -> str | None:
    flag = "--run" if args.run else "--bundle"
    if len(args.run or args.bundle or []) > 2:
        return f"at most two {flag} (one seg and one cls, or two of one kind to compare)"
    if args.bootstrap < 1:  # the confidence intervals need resamples (ichct.pipeline.evaluate.bootstrap: n >= 1)
        return f"argument --bootstrap: must be >= 1, got {args.bootstrap}"
    if args.split == "validation" and args.fold is None:
        return "--split validation needs --fold"
    return None


def run(args: argparse.Namespace) -> int:
    args.predictions_first = None
    compare_rules, error = _compare_rules(args)
    external, error = (None, error) if error else _external_options(args)
    rules, error = (None, error) if error else _rules(args)
    lesions, error = (None, error) if error else _lesions(args)
    error = error or _other_usage_error(args)
    if error:
        return _usage(args, error)
    # neither a model nor predictions: the shipped demonstration bundles (evaluate logs a warning)
    source = "shipped" if not args.run and not args.bundle and args.predictions is None else "user"
    from ichct.pipeline.evaluate.run import evaluate

    summary = evaluate(args.run or [], args.manifest, args.out, split=args.split, fold=args.fold, n_boot=args.bootstrap,
                       rules=rules, seed=args.seed, allow_overlap=args.allow_overlap, device=args.device,
                       checkpoint=args.checkpoint, bundles=args.bundle or [], compare_rules=compare_rules,
                       models_source=source, predictions=args.predictions, external=external,
                       cluster=cluster_spec(args), lesions=lesions)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0
