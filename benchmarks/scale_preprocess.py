"""Cohort scale of the preprocessed disk cache (issue 24, part 1): three measurements.

1. ``preprocess`` throughput (studies/min) of 60 studies (quick, the default: 24) with 1 and 2
   single-threaded Dask workers (goal: 2 workers >= 1.7x 1 worker); warm clusters, alternated runs
   into fresh cache folders, median of 3.
2. Training peak RSS (the ``ichct train`` process and its DataLoader workers, sampled with psutil)
   streaming from the disk cache at 75 and 1,000 synthetic studies (quick: 40 and 200); goal: within 10 %.
3. Epoch time from the disk cache against the RAM ``CacheDataset`` at 75 studies (quick: 24), the
   default segmenter config; goal: <= 1.2x.

Usage::

    python benchmarks/scale_preprocess.py [--full] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SALT = "ichct-benchmark-salt-0123456789abcdef"
TINY_SEG = {"spacing_mm": [3.0, 3.0, 5.0], "patch": [16, 16, 8], "samples_per_volume": 1, "batch_size": 1,
            "val_interval": 1000, "network": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}


def _env(work_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"ICHCT_SALT": SALT, "ICHCT_CACHE_DIR": str(work_dir / "hash_cache"), "MPLBACKEND": "Agg",
                "OMP_NUM_THREADS": "1"})
    return env


def make_cohort(work_dir: Path, n: int, matrix: int, slices: int) -> Path:
    """A synthetic cohort of ``n`` patients and its 5-fold manifest (reused when present)."""
    base = work_dir / f"cohort_{n}_{matrix}x{slices}"
    manifest = base / "m.json"
    if manifest.exists():
        return manifest
    os.environ.update({"ICHCT_SALT": SALT, "ICHCT_CACHE_DIR": str(work_dir / "hash_cache")})
    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    cfg = SynthConfig(n_patients=n, seed=11, matrix=matrix, slices=slices, follow_up_fraction=0.0,
                      bone_fraction=0.0, scout_fraction=0.0, tilt_fraction=0.0)
    generate_cohort(cfg, base / "cohort", workers=2)
    build_manifest("synth", base / "cohort", manifest, folds=5, test_fraction=0.0, seed=0, cache=True)
    return manifest


def bench_throughput(work_dir: Path, quick: bool) -> dict[str, Any]:
    """Studies/min of ``preprocess`` with 1 and 2 workers (median of 3 alternated runs)."""
    from ichct.pipeline.core.cluster import ClusterSpec, dask_client
    from ichct.pipeline.preprocess.run import preprocess

    n = 24 if quick else 60
    manifest = make_cohort(work_dir, n, 128, 32)
    rates: dict[int, list[float]] = {1: [], 2: []}
    with dask_client(ClusterSpec(workers=1)) as one, dask_client(ClusterSpec(workers=2)) as two:
        for rep in range(3):
            for workers, client in ((1, one), (2, two)):
                out = Path(tempfile.mkdtemp(prefix=f"pre{workers}_{rep}_", dir=work_dir))
                t0 = time.perf_counter()
                report = preprocess(manifest, "seg", out, client=client)
                rates[workers].append(60 * report.counts()["done"] / (time.perf_counter() - t0))
    r1, r2 = statistics.median(rates[1]), statistics.median(rates[2])
    return {"measure": f"preprocess seg, {n} studies 128x128x32 (studies/min)", "value_1": round(r1, 1),
            "value_2": round(r2, 1), "ratio": round(r2 / r1, 2), "goal": ">= 1.7x (2 vs 1 worker)",
            "met": r2 / r1 >= 1.7}


def _peak_rss(cmd: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any], float]:
    """Run ``cmd``; its peak RSS (the process and all its children, summed) in bytes, its JSON output, seconds."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    peak = [0]

    def sample() -> None:
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                total = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
            except psutil.Error:
                continue
            peak[0] = max(peak[0], total)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return peak[0], json.loads(out.strip().splitlines()[-1]), time.perf_counter() - t0


def _train_cmd(manifest: Path, out: Path, config: Path, cache_dir: Path | None, epochs: int) -> list[str]:
    cmd = [sys.executable, "-m", "ichct", "train", "seg", "--manifest", str(manifest), "--fold", "0", "--out",
           str(out), "--epochs", str(epochs), "--config", str(config), "--tracking", "none", "-q"]
    return cmd + (["--cache-dir", str(cache_dir)] if cache_dir is not None else [])


def bench_rss(work_dir: Path, quick: bool) -> dict[str, Any]:
    """Peak RSS of one epoch from the disk cache at a small and a large cohort."""
    from ichct.pipeline.preprocess.run import preprocess

    sizes = (40, 200) if quick else (75, 1000)
    config = work_dir / "tiny_seg.json"
    config.write_text(json.dumps({**TINY_SEG, "num_workers": 2}))
    peaks = {}
    for n in sizes:
        manifest = make_cohort(work_dir, n, 32, 8)
        cache = work_dir / f"cache_{n}"
        preprocess(manifest, "seg", cache, config=json.loads(config.read_text()))  # not measured
        out = Path(tempfile.mkdtemp(prefix=f"rss{n}_", dir=work_dir))
        peaks[n], _, _ = _peak_rss(_train_cmd(manifest, out / "run", config, cache, 1), _env(work_dir))
    small, large = (peaks[n] / 2**20 for n in sizes)
    return {"measure": f"train seg peak RSS from the disk cache, {sizes[0]} vs {sizes[1]} studies (MiB)",
            "value_1": round(small, 1), "value_2": round(large, 1), "ratio": round(large / small, 3),
            "goal": "<= 1.10x", "met": large / small <= 1.10}


def bench_epoch_time(work_dir: Path, quick: bool) -> dict[str, Any]:
    """Mean epoch time (no validation in between) from RAM and from the disk cache, median of 3 alternated runs."""
    from ichct.pipeline.preprocess.run import preprocess

    n = 24 if quick else 75
    manifest = make_cohort(work_dir, n, 128, 32)
    config = work_dir / "default_seg.json"
    config.write_text(json.dumps({"val_interval": 1000}))
    cache = work_dir / f"cache_epoch_{n}"
    preprocess(manifest, "seg", cache, config=json.loads(config.read_text()))
    times: dict[str, list[float]] = {"ram": [], "disk": []}
    for rep in range(3):
        for mode in ("ram", "disk"):
            out = Path(tempfile.mkdtemp(prefix=f"ep_{mode}{rep}_", dir=work_dir))
            cmd = _train_cmd(manifest, out / "run", config, cache if mode == "disk" else None, 2)
            _, summary, _ = _peak_rss(cmd, _env(work_dir))
            times[mode].append(float(summary["epoch_time_s"]))
    ram, disk = statistics.median(times["ram"]), statistics.median(times["disk"])
    return {"measure": f"train seg epoch time, {n} studies 128x128x32, default config (s)", "value_1": round(ram, 2),
            "value_2": round(disk, 2), "ratio": round(disk / ram, 3), "goal": "<= 1.2x (disk vs RAM)",
            "met": disk / ram <= 1.2}


def run(work_dir: Path, quick: bool) -> list[dict[str, Any]]:
    """The benchmark's table rows (``value_1``/``value_2``: 1 vs 2 workers, small vs large, RAM vs disk)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for bench in (bench_throughput, bench_rss, bench_epoch_time):
        rows.append(bench(work_dir, quick))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # each row as soon as it is measured
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes: 60 studies, 75 vs 1,000 studies, 75 "
                                                             "studies (about 15 minutes on 2 cores; default: quick)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    args = parser.parse_args(argv)
    work_dir = args.work or Path(tempfile.mkdtemp(prefix="ichct-scale-preprocess-"))
    rows = run(work_dir, quick=not args.full)
    cols = ["measure", "value_1", "value_2", "ratio", "goal", "met"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
