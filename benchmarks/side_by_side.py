"""Both models side by side vs one after the other, in the same wall-clock time (the demo's training stage).

Peer: the same two training runs one after the other, each with all of this process's torch threads,
their budgets scaled so that the two together take as long as the side-by-side stage
(``seg_minutes * T / (seg + cls)`` and ``cls_minutes * T / (seg + cls)``, ``T = max(seg, cls)``),
which is what ``ichct demo`` does on a GPU or a single thread. Side by side:
:func:`ichct.pipeline.train.side_by_side.train_side_by_side`, half the threads each, the
segmenter's budget shorter, the classifier taking over its threads afterwards -- the demo's
default on a multi-threaded CPU.

Both ways train on the committed synthetic manifest, fold 0, default configs, and are scored on
its test split with the helpers of ``benchmarks/train.py`` (seg Dice on studies with blood, cls
CT-level AUC(any), best checkpoints). Prints one row per way and model: epochs, wall seconds of
the whole stage (caching included), test metric; then the epoch ratios side-by-side / one after
the other.

Run: ``python benchmarks/side_by_side.py [--seg-minutes 6.5] [--cls-minutes 7.5]``
(the defaults are the demo's budgets: about 16 minutes in all).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _train_bench():
    spec = importlib.util.spec_from_file_location("ichct_train_bench", HERE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seg-minutes", type=float, default=6.5)
    parser.add_argument("--cls-minutes", type=float, default=7.5)
    parser.add_argument("--keep", default=None, help="keep the run folders under this directory")
    args = parser.parse_args(argv)

    import torch

    from ichct.pipeline.demo import DemoSettings, train_models

    bench = _train_bench()
    bench.ensure_data()
    threads = torch.get_num_threads()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ichct-sbs-bench-"))
    rows = []
    try:
        for way in ("one after the other", "side by side"):
            # the demo's own training stage (seed 0): budgets, thread split and scaling as `ichct demo`
            settings = DemoSettings(seg_minutes=args.seg_minutes, cls_minutes=args.cls_minutes,
                                    side_by_side=way == "side by side")
            runs = {kind: base / f"{way.replace(' ', '_')}_{kind}" for kind in ("seg", "cls")}
            for run in runs.values():
                shutil.rmtree(run, ignore_errors=True)
            t0 = time.perf_counter()
            summaries = train_models(bench.MANIFEST, runs, settings, "cpu")
            wall = time.perf_counter() - t0
            for kind, summary in summaries.items():
                test = bench.seg_test(runs[kind], "cpu") if kind == "seg" else bench.cls_test(runs[kind], "cpu")
                metric = (f"Dice {test['test_dice']:.3f}" if kind == "seg" else f"AUC(any) {test['test_auc_any']:.3f}")
                budget = json.loads((runs[kind] / "config.json").read_text())["config"]["max_minutes"]
                rows.append({"way": way, "kind": kind, "minutes": budget,
                             "epochs": summary["epochs"], "stage_s": wall, "test": metric})
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    print(f"torch threads: {threads}; budgets side by side: seg {args.seg_minutes} min, cls {args.cls_minutes} min")
    print("| way | model | budget min | epochs | stage wall s | test |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['way']} | {r['kind']} | {r['minutes']:.2f} | {r['epochs']} | {r['stage_s']:.0f} | {r['test']} |")
    epochs = {(r["way"], r["kind"]): r["epochs"] for r in rows}
    for kind in ("seg", "cls"):
        ratio = epochs[("side by side", kind)] / max(1, epochs[("one after the other", kind)])
        print(f"{kind}: side by side / one after the other = {ratio:.2f}x the epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
