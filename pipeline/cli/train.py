"""``ichct train seg|cls``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ichct.pipeline.cli.arg_types import seed
from ichct.pipeline.train.tracking import TRACKING_CHOICES


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "train", parents=[common], help="train a segmentation or slice-classification model on one fold",
        description="Train on a manifest's training folds except FOLD, validate on FOLD every epoch; "
                    "writes config.json, metrics.csv, best.pt, last.pt, thresholds.json, train_patients.json, "
                    "training_curves.png and the tracking (--tracking) into OUT. A config or manifest that fails "
                    "its checks is refused before anything is written; config.json records the command that "
                    "trains the run again. The console shows one progress line (epoch, time left, loss, best "
                    "validation metric), redrawn on a terminal and every 30 s otherwise; -v shows every "
                    "epoch's metrics instead.")
    p.add_argument("kind", choices=("seg", "cls"), help="seg: 3D U-Net; cls: slice-sequence classifier")
    p.add_argument("--manifest", required=True, help="split manifest (checked before use)")
    p.add_argument("--fold", required=True, type=int, help="validation fold")
    p.add_argument("--out", required=True, help="run directory (created; a new run refuses one holding last.pt)")
    p.add_argument("--epochs", type=int, default=None, help="total epochs (overrides the config)")
    p.add_argument("--max-minutes", type=float, default=None, dest="max_minutes",
                   help="time budget of the training loop: stop cleanly after the last epoch that fits "
                        "(best.pt/last.pt still written; overrides config max_minutes)")
    p.add_argument("--config", default=None, help="JSON or YAML overrides of the defaults (keys, types and "
                                                   "ranges checked)")
    p.add_argument("--cache-dir", default=None, metavar="CACHE",
                   help="stream the preprocessed studies from the disk cache CACHE (`ichct preprocess --out CACHE`; "
                        "missing entries are built on demand) instead of keeping them all in RAM: memory does not "
                        "grow with the number of studies (config keys cache: disk, cache_dir; num_workers "
                        "DataLoader workers read it)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt with the saved config")
    p.add_argument("--init-weights", default=None, dest="init_weights", metavar="MODEL",
                   help="start from a trained model's weights instead of a random draw (fine-tuning): a training "
                        "run folder (its best.pt), a bundle folder or a .pt file; they must fit the run's network "
                        "(MODEL#N: member N of an ensemble, e.g. the committed segmenter's). "
                        "config.json records the source and its sha256, train_patients.json the source's training "
                        "patients (evaluation refuses them too)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the model trains (default: cpu)")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of weights, augmentation and data order (default: 0; --resume keeps the run's)")
    p.add_argument("--tracking", default="tensorboard", choices=TRACKING_CHOICES,
                   help="where loss, validation metrics, learning rate and config are tracked: tensorboard "
                        "(default; event files in OUT/tensorboard), mlflow (needs the ichct[mlflow] extra; the "
                        "store is MLFLOW_TRACKING_URI when set, else a local file store in OUT/mlruns) or none")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    if args.amp and args.device != "cuda":
        args._parser.print_usage(sys.stderr)
        sys.stderr.write("ichct train: error: --amp needs --device cuda\n")
        return 2
    if args.epochs is not None and args.epochs < 1:
        args._parser.print_usage(sys.stderr)
        sys.stderr.write("ichct train: error: --epochs must be >= 1\n")
        return 2
    if args.max_minutes is not None and not args.max_minutes > 0:
        args._parser.print_usage(sys.stderr)
        sys.stderr.write("ichct train: error: --max-minutes must be > 0\n")
        return 2
    if args.cache_dir is not None and args.resume:
        args._parser.print_usage(sys.stderr)
        sys.stderr.write("ichct train: error: --cache-dir cannot change a run on --resume (it resumes with the "
                         "cache of its config.json)\n")
        return 2
    if args.init_weights is not None and args.resume:
        args._parser.print_usage(sys.stderr)
        sys.stderr.write("ichct train: error: --init-weights starts a new run; --resume continues from OUT/last.pt\n")
        return 2
    from ichct.pipeline.train.engine import train
    from ichct.pipeline.train.progress import training_display

    config = _with_cache_dir(args.config, args.cache_dir)
    with training_display(enabled=not args.quiet and args.verbose == 0) as display:
        summary = train(args.kind, args.manifest, args.fold, args.out, epochs=args.epochs, config=config,
                        resume=args.resume, device=args.device, amp=args.amp, seed=args.seed,
                        max_minutes=args.max_minutes, tracking=args.tracking, init_weights=args.init_weights,
                        progress=display.reporter(args.kind) if display is not None else None)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _with_cache_dir(config: str | None, cache_dir: str | None) -> str | dict[str, Any] | None:
    """``--config`` with ``--cache-dir`` folded in (config keys ``cache: disk`` and ``cache_dir``)."""
    if cache_dir is None:
        return config
    from ichct.pipeline.models.config import read_config_file

    over = read_config_file(config) if config is not None else {}
    return {**over, "cache": "disk", "cache_dir": str(Path(cache_dir).expanduser().resolve())}
