"""Default configs under DDP: are 2 ranks within the run-to-run spread of one process? (issue 24, part 3)

The correctness test (``tests/test_train_distributed.py``) shows that a deterministic configuration
reaches the same weights on 2 ranks as in one process. With the default configs it cannot: each
rank draws its own augmentations and crops, Dice pools each rank's batch only (``dice_batch``), and
on the CPU the classifier's BatchNorm sees one rank's studies. What must hold instead is that the
validation metrics of 2 ranks lie within the seed-to-seed spread of one process.

For each model (the default config of ``ichct train``, fold 0 of the committed synthetic manifest,
a fixed number of epochs so that the result does not depend on the machine's speed), this trains
``--seeds`` runs in one process with the global batch ``2 x`` the per-rank batch, and as many as
2 ``torchrun`` ranks (gloo, one thread each) with the per-rank batch: the same global batch, the
same number of optimizer steps. Both stream the same preprocessed disk cache. It prints, per model
and setup, the final validation metric of every seed (segmenter: Dice; classifier: the mean AUC of
the subtypes, as its AUC(any) is 1.000 in every run), their mean and standard deviation, and the
check: the difference of the means is at most twice the one-process standard deviation.

Run: ``python benchmarks/ddp_spread.py [--seeds 0,1,2] [--kinds seg,cls] [--work DIR] [--table-only]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "data_manifests" / "synth_default.json"
BIN = Path(sys.executable).parent
#: the final validation metric compared; the classifier's AUC(any) is 1.000 in every run on fold 0's
#: validation studies (it cannot show a difference), so its mean subtype AUC is compared
METRIC = {"seg": "val_dice", "cls": "val_auc_mean"}
#: per-rank batch of the 2-rank runs; the one-process runs use twice this, the same global batch
#: (the classifier's default is 2; the segmenter's default of 1 cannot be halved, so its one-process
#: runs use 2): the batch size is the only key that differs from the defaults
RANK_BATCH = {"seg": 1, "cls": 1}
EPOCHS = {"seg": 12, "cls": 10}


def _ensure_cohort() -> None:
    if not (ROOT / "data" / "synth_default" / "cohort.json").exists():
        subprocess.run([str(BIN / "ichct"), "synth", "--default-cohort"], cwd=ROOT, check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _final_metric(run: Path, kind: str) -> float:
    """The last validated epoch's metric of ``run/metrics.csv``."""
    with open(run / "metrics.csv", newline="") as fh:
        values = [float(row[METRIC[kind]]) for row in csv.DictReader(fh)]
    return next(v for v in reversed(values) if not math.isnan(v))


def train(kind: str, seed: int, ranks: int, work: Path, cache: Path) -> tuple[float, float]:
    """One run: (final validation metric, wall seconds)."""
    out = work / f"{kind}_r{ranks}_s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    config = work / f"{kind}_r{ranks}.json"
    config.write_text(json.dumps({"batch_size": RANK_BATCH[kind] * (2 if ranks == 1 else 1)}))
    args = ["train", kind, "--manifest", str(MANIFEST), "--fold", "0", "--epochs", str(EPOCHS[kind]),
            "--seed", str(seed), "--config", str(config), "--cache-dir", str(cache), "--tracking", "none", "-q",
            "--out", str(out)]
    env = {**os.environ}
    if ranks == 1:
        cmd = [str(BIN / "ichct"), *args]
    else:
        env["OMP_NUM_THREADS"] = "1"
        cmd = [str(BIN / "torchrun"), "--nnodes", "1", "--nproc-per-node", str(ranks), "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--no-python", str(BIN / "ichct"), *args]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return _final_metric(out, kind), time.perf_counter() - start


def _row(kind: str, setup: str, values: list[float], seconds: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    cells = ", ".join(f"{v:.3f}" for v in values)
    return (f"| {kind} | {setup} | {cells} | {statistics.mean(values):.3f} | {sd:.3f} | "
            f"{statistics.mean(seconds):.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--kinds", default="seg,cls")
    parser.add_argument("--work", default=str(ROOT / "runs" / "ddp_spread"))
    parser.add_argument("--table-only", action="store_true", help="the table of the runs already in --work (no training)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    _ensure_cohort()
    lines = ["| model | setup | final validation metric per seed | mean | sd | s per run |", "|---|---|---|---|---|---|"]
    checks = []
    for kind in args.kinds.split(","):
        cache = work / "cache"
        if not args.table_only:
            subprocess.run([str(BIN / "ichct"), "preprocess", "--manifest", str(MANIFEST), "--kind", kind, "--out",
                            str(cache), "-q"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        if args.table_only:  # the metric from each run folder, the seconds from the runs' record when there is one
            saved = json.loads((work / f"{kind}.json").read_text()) if (work / f"{kind}.json").exists() else {}
            seconds = {r: [s for _, s in saved.get(str(r), [])] or [float("nan")] * len(seeds) for r in (1, 2)}
            results = {r: [(_final_metric(work / f"{kind}_r{r}_s{seed}", kind), t) for seed, t in zip(seeds, seconds[r])]
                       for r in (1, 2)}
        else:
            results = {ranks: [train(kind, seed, ranks, work, cache) for seed in seeds] for ranks in (1, 2)}
            (work / f"{kind}.json").write_text(json.dumps({str(k): v for k, v in results.items()}))
        single, ddp = ([v for v, _ in results[r]] for r in (1, 2))
        lines.append(_row(kind, f"1 process, batch {2 * RANK_BATCH[kind]}", single, [s for _, s in results[1]]))
        lines.append(_row(kind, f"2 ranks x batch {RANK_BATCH[kind]}", ddp, [s for _, s in results[2]]))
        difference, spread = abs(statistics.mean(ddp) - statistics.mean(single)), statistics.stdev(single)
        checks.append(f"{kind}: |mean difference| {difference:.3f} vs 2 x sd of one process {2 * spread:.3f}: "
                      + ("within the spread" if difference <= 2 * spread else "OUTSIDE the spread"))
    print("\n".join(lines + [""] + checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
