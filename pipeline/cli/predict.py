"""``ichct predict``: a thin layer over :func:`ichct.pipeline.predict.run.predict` / ``predict_batch``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ichct.pipeline.cli.cluster_args import add_cluster_arguments, cluster_spec
from ichct.pipeline.decision import RULES


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "predict", parents=[common], help="predict hemorrhage on a study: mask, DICOM SEG, report, overlays",
        description="Run a segmentation and/or a classification model on one study (DICOM folder or NIfTI) and "
                    "write OUT_DIR/mask.nii.gz (labels on the original series grid), seg.dcm (DICOM SEG, DICOM "
                    "input only), report.json and overlays/*.png. With --batch LIST.csv (column 'path', optional "
                    "'id') every listed study goes to OUT_DIR/<id>/ and OUT_DIR/summary.csv lists each study's "
                    "status; the studies run as Dask tasks (a local cluster, or --scheduler), a failing study is "
                    "recorded and the rest finish, and a rerun into the same OUT_DIR skips the studies already done "
                    "with the same input and models (summary.csv column done_before). Output is written as a whole: an error "
                    "leaves nothing behind. Exit codes: 0 all studies done, 1 a bad input or any failed study "
                    "of a batch, 2 usage error, 70 internal error (a bug). Without --run and --bundle the demonstration bundles that ship "
                    "with ichct are used (ich_ct_segmentation and ich_ct_classification: trained on synthetic data "
                    "only, not validated on real scans); a warning says so and report.json has models_source "
                    "\"shipped\".")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="INPUT OUT_DIR (a DICOM folder or NIfTI file, and the output folder); with --batch only OUT_DIR")
    p.add_argument("--run", action="append", default=[], metavar="RUN_DIR",
                   help="training run directory (ichct train); give one seg and/or one cls model (default, "
                        "without --run and --bundle: the shipped demonstration bundles)")
    p.add_argument("--bundle", action="append", default=[], metavar="BUNDLE_DIR", help="model bundle directory")
    p.add_argument("--rule", default=None, choices=RULES,
                   help="CT-level decision rule (default: consecutive with a cls model, else seg_volume; fused "
                        "needs both models)")
    p.add_argument("--batch", default=None, metavar="LIST.csv", help="CSV list of studies (column path, optional id)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="checkpoint of --run models")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty OUT_DIR; with --batch: predict every listed study again")
    p.add_argument("--no-overlays", action="store_true", help="do not draw PNG overlays")
    p.add_argument("--no-seg-dicom", action="store_true",
                   help="do not write seg.dcm (without this option a study whose source series a DICOM SEG "
                        "cannot reference, e.g. files without UIDs, is written without seg.dcm, with a warning "
                        "and the reason in report.json)")
    add_cluster_arguments(p)
    p.set_defaults(func=run, _parser=p)


def _usage(args: argparse.Namespace, msg: str) -> int:
    args._parser.print_usage(sys.stderr)
    sys.stderr.write(f"ichct predict: error: {msg}\n")
    return 2


def load_models(runs: list[str], bundles: list[str], device: str, checkpoint: str = "best") -> list[Any]:
    """Load every ``--run`` (:func:`~ichct.pipeline.models.inference.load_run`) and ``--bundle``."""
    from ichct.pipeline.models.inference import load_run

    models = [load_run(r, device=device, checkpoint=checkpoint) for r in runs]
    if bundles:
        from ichct.pipeline.bundle.package import load_bundle  # imported only when bundles are used

        models += [load_bundle(b, device=device) for b in bundles]
    return models


def run(args: argparse.Namespace) -> int:
    n_paths = 1 if args.batch else 2
    if len(args.paths) != n_paths:
        want = "OUT_DIR (the batch list comes with --batch)" if args.batch else "INPUT and OUT_DIR"
        return _usage(args, f"expected {want}, got {len(args.paths)} path(s)")
    if not args.batch and (args.scheduler or args.workers):
        return _usage(args, "--scheduler and --workers go with --batch (one study runs in this process)")
    if len(args.run) + len(args.bundle) > 2:
        return _usage(args, "at most two models (one seg and one cls)")
    from ichct.pipeline.predict.run import load_default_models, predict

    if not args.run and not args.bundle:  # the shipped demonstration bundles (logs a warning)
        models, source = load_default_models(args.device), "shipped"
    else:
        models, source = load_models(args.run, args.bundle, args.device, args.checkpoint), "user"
    if args.batch:
        from ichct.pipeline.predict.batch import predict_batch

        summary = predict_batch(Path(args.batch), Path(args.paths[0]), models, args.rule, overwrite=args.overwrite,
                                progress=not args.quiet, overlays=not args.no_overlays, models_source=source,
                                seg_dicom=not args.no_seg_dicom, cluster=cluster_spec(args))
        out = {k: summary[k] for k in ("n", "n_ok", "n_failed", "n_done_before", "summary", "models_source")}
        out["failed"] = [{"id": r["id"], "error": r["error"]} for r in summary["rows"] if r["status"] != "ok"]
        sys.stdout.write(json.dumps(out) + "\n")
        return 1 if summary["n_failed"] else 0
    report = predict(Path(args.paths[0]), Path(args.paths[1]), models, args.rule, overwrite=args.overwrite,
                     overlays=not args.no_overlays, models_source=source, seg_dicom=not args.no_seg_dicom)
    f = report["findings"].get("any", {})
    sys.stdout.write(json.dumps({"out_dir": args.paths[1], "models_source": source,
                                 "rule": report["rule"]["name"], "any": {
        "call": f.get("call"), "score": f.get("score"), "volume_ml": f.get("volume_ml")},
        "timings_s": report["timings_s"]}) + "\n")
    return 0
