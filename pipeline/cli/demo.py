"""``ichct demo``."""

from __future__ import annotations

import argparse
import sys

from ichct.pipeline.cli.arg_types import seed


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("demo", parents=[common], help="run the pipeline end to end on the embedded synthetic data",
                              description="End to end on the embedded synthetic data, with nothing else installed: write a synthetic "
                                          "head-CT cohort as DICOM, ingest it and build the patient-level manifest, train the "
                                          "segmenter and the slice classifier, evaluate both on held-out patients, package and "
                                          "verify both MONAI bundles, run predict on a held-out study, and print where each "
                                          "artefact is with a metrics table. About 10 minutes on a 2-core CPU; --quick about 20 s. "
                                          "While the models train, one progress line per model (redrawn on a terminal, every 30 s "
                                          "otherwise); -v shows every epoch's metrics instead.")
    p.add_argument("--out", default="ichct_demo",
                   help="output folder, new or empty unless --overwrite (default: ./ichct_demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous demo in --out (a folder holding anything else is never replaced)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (what the test suite runs)")
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of both models' training (default 0); the cohort and its split stay the committed ones")
    p.add_argument("--workers", type=int, default=None, help="processes for data generation")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the models train and run (default: cpu; on cuda the two models train one after the "
                        "other, in the same total time)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ichct.pipeline.demo import DemoSettings, format_summary, run_demo

    settings = DemoSettings.quick() if args.quick else DemoSettings()
    settings.seed = args.seed
    summary = run_demo(args.out, settings, workers=args.workers, device=args.device, overwrite=args.overwrite,
                       progress=not args.quiet and args.verbose == 0)
    sys.stdout.write(format_summary(summary) + "\n")
    return 0
