"""``ichct bundle package|verify|export|refresh``."""

from __future__ import annotations

import argparse
import json
import sys

from ichct.pipeline.cli.arg_types import fraction


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("bundle", parents=[common], help="MONAI model bundles: package, verify, export",
                              description="MONAI model bundles (model-zoo layout) of ichct models.")
    sub = p.add_subparsers(dest="bundle_command", metavar="ACTION")
    sub.required = True

    pk = sub.add_parser("package", parents=[common], help="turn a training run into a bundle folder",
                        description="Write a bundle folder from a training run (ichct train): weights of best.pt as "
                                    "models/model.pt, the run's config, thresholds and training patients, every "
                                    "config generated from the run's config, metadata, docs and license.")
    pk.add_argument("run_dir", help="training run directory")
    pk.add_argument("bundle_dir", help="bundle folder to write (must not exist or be empty unless --force)")
    pk.add_argument("--name", default=None, help="display name in metadata.json (default by model kind)")
    pk.add_argument("--version", default="0.1.0", help="semantic version of the bundle (default: 0.1.0)")
    pk.add_argument("--change", default=None, metavar="TEXT",
                    help="changelog entry of this version; repackaging over an existing bundle (--force) keeps the "
                         "entries of its other versions")
    pk.add_argument("--evaluation", default=None, metavar="EVAL_DIR",
                    help="output of `ichct evaluate --bundle` for these weights: its numbers go into the docs and "
                         "metadata, metrics.json and report.md into docs/evaluation/ (an evaluation of a run, "
                         "`ichct evaluate --run`, does not record its weights and is refused)")
    pk.add_argument("--also-evaluated", action="append", default=[], metavar="NAME=EVAL_DIR", type=_named_dir,
                    help="another `ichct evaluate --bundle` of these weights (e.g. shifted_domain=eval/shift): kept in "
                         "docs/evaluation_NAME/ and shown in the README's Performance section (repeatable)")
    pk.add_argument("--checkpoint", default="best", choices=("best", "last"))
    pk.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    _inference_arguments(pk)
    pk.set_defaults(func=run_package)

    vf = sub.add_parser("verify", parents=[common], help="run every bundle check; exit 1 on any failure",
                        description="Check a bundle: required files, metadata schema, every config (references, "
                                    "targets, their arguments and values), network input/output, weights "
                                    "(weights_only=True), large_files.yml, load_bundle. Prints a pass/fail table.")
    vf.add_argument("bundle_dir")
    vf.add_argument("--schema", default=None, metavar="PATH",
                    help="metadata JSON Schema (default: the copy shipped with ichct)")
    vf.add_argument("--json", action="store_true", help="print the results as JSON")
    vf.set_defaults(func=run_verify)

    ex = sub.add_parser("export", parents=[common], help="self-contained zoo folder or zip (runs without ichct)",
                        description="Copy a bundle with the ichct code its configs need vendored into scripts/ and the "
                                    "configs rewritten to use it, so it runs with MONAI and the packages its "
                                    "metadata lists, without ichct.")
    ex.add_argument("bundle_dir")
    ex.add_argument("dest", help="output folder (or zip file with --zip)")
    ex.add_argument("--zip", action="store_true", help="write a zip file")
    ex.add_argument("--weights", default=None, metavar="RUN_DIR/best.pt",
                    help="ship these weights (a checkpoint of a run with the same network and preprocessing); "
                         "the export then describes that run alone: its config.json (fold, seed, manifest, training "
                         "config), thresholds.json, train_patients.json and metrics.csv")
    ex.set_defaults(func=run_export)

    rf = sub.add_parser("refresh", parents=[common], help="regenerate a bundle's configs and docs; weights unchanged",
                        description="Rewrite a bundle's configs, metadata.json, docs/README.md and licences with this "
                                    "ichct's generator, from its models/run_config.json and the numbers of "
                                    "docs/evaluation/metrics.json (or of --evaluation, which replaces it); models/ is "
                                    "kept as it is.")
    rf.add_argument("bundle_dir")
    rf.add_argument("--version", default=None, help="new semantic version (default: keep the bundle's)")
    rf.add_argument("--change", default=None, metavar="TEXT", help="changelog entry of that version")
    rf.add_argument("--evaluation", default=None, metavar="EVAL_DIR",
                    help="a new `ichct evaluate --bundle` of these weights: replaces docs/evaluation/ and the numbers")
    rf.add_argument("--also-evaluated", action="append", default=[], metavar="NAME=EVAL_DIR", type=_named_dir,
                    help="a new other evaluation of these weights: replaces docs/evaluation_NAME/ (repeatable)")
    _inference_arguments(rf)
    rf.set_defaults(func=run_refresh)


def _inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tta-mirror-axes``, ``--brain-reference-hu``, ``--classifier-slice-gate`` and ``--sw-overlap``: inference
    settings a bundle can change after training."""
    parser.add_argument("--tta-mirror-axes", default=None, type=_mirror_axes, metavar="AXES",
                        help="test-time mirroring: comma-separated spatial axes whose mirrored inputs inference "
                             "averages over (0: the axis training flips; 'none': off); default: keep the model's")
    parser.add_argument("--brain-reference-hu", default=None, type=_optional_hu, metavar="HU",
                        help="brain-referenced HU: shift every image so that its brain tissue's median HU is this "
                             "(30: the synthetic cohorts'; 'none': off); default: keep the model's. Evaluate the "
                             "bundle again after changing either")
    parser.add_argument("--classifier-slice-gate", default=None, type=fraction, metavar="P",
                        help="a segmenter's gate beside a classifier: predicted blood components on slices whose "
                             "classifier p(any) all lie below P are dropped (0: off); default: keep the model's")
    parser.add_argument("--sw-overlap", default=None, type=float, metavar="F",
                        help="a segmenter's sliding-window overlap, from 0 to below 1 (0.5: each voxel in up to "
                             "8 patches; 0.75: up to 64, slower); default: keep the model's")


def _inference_settings(args: argparse.Namespace) -> dict[str, object]:
    settings: dict[str, object] = {}
    if args.tta_mirror_axes is not None:
        settings["tta_mirror_axes"] = args.tta_mirror_axes
    if args.brain_reference_hu is not None:
        settings["brain_reference_hu"] = None if args.brain_reference_hu == "none" else args.brain_reference_hu
    if args.classifier_slice_gate is not None:
        settings["classifier_slice_gate"] = args.classifier_slice_gate
    if args.sw_overlap is not None:
        settings["sw_overlap"] = args.sw_overlap
    return settings


def _mirror_axes(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []
    try:
        return [int(a) for a in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated axes (e.g. 0 or 0,1) or 'none', got {text!r}") from None


def _optional_hu(text: str) -> float | str:
    if text.strip().lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of HU or 'none', got {text!r}") from None


def _named_dir(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=EVAL_DIR, got {text!r}")
    return name, folder


def run_package(args: argparse.Namespace) -> int:
    from ichct.pipeline.bundle.package import package_bundle

    summary = package_bundle(args.run_dir, args.bundle_dir, name=args.name, version=args.version,
                             changelog={args.version: args.change} if args.change else None,
                             evaluation=args.evaluation, force=args.force, checkpoint=args.checkpoint,
                             also_evaluated=dict(args.also_evaluated), inference=_inference_settings(args))
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ichct.pipeline.bundle.verify import format_table, verify_bundle

    results = verify_bundle(args.bundle_dir, schema=args.schema)
    if args.json:
        sys.stdout.write(json.dumps([r.__dict__ for r in results], indent=2) + "\n")
    else:
        sys.stdout.write(format_table(results) + "\n")
    return 0 if all(r.ok for r in results) else 1


def run_export(args: argparse.Namespace) -> int:
    from ichct.pipeline.bundle.export import export_bundle

    summary = export_bundle(args.bundle_dir, args.dest, zip_file=args.zip, weights=args.weights)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def run_refresh(args: argparse.Namespace) -> int:
    from ichct.pipeline.bundle.package import refresh_bundle

    summary = refresh_bundle(args.bundle_dir, version=args.version, change=args.change, evaluation=args.evaluation,
                             also_evaluated=dict(args.also_evaluated), inference=_inference_settings(args))
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0
