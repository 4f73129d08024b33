"""Synthetic cohort benchmark: patients per second of ``ichct synth`` at 1 and at all workers.

Generates the same cohort (default settings: 256x256 matrix, 32 slices, defaults for follow-ups,
bone reconstructions, scouts and compression) into temporary folders, best of ``--repeat`` runs,
and prints patients/s, studies/s, DICOM files/s and the projected time for 100 patients.

Run: ``python benchmarks/synth.py [--patients 10] [--workers-list 1,2] [--repeat 1] [--matrix 256] [--slices 32]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def run_once(patients: int, workers: int, seed: int, matrix: int, slices: int) -> tuple[float, int, int]:
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    folder = Path(tempfile.mkdtemp(prefix="ichct-synth-bench-"))
    try:
        config = SynthConfig(n_patients=patients, seed=seed, matrix=matrix, slices=slices)
        start = time.perf_counter()
        cohort = generate_cohort(config, folder / "out", workers=workers)
        elapsed = time.perf_counter() - start
        n_files = sum(1 for _ in (folder / "out" / "dicom").rglob("*.dcm"))
        return elapsed, len(cohort["studies"]), n_files
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10, help="patients per run (default 10)")
    parser.add_argument("--workers-list", default=None, help="comma-separated worker counts (default: 1 and all CPUs)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting; the best is reported (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--slices", type=int, default=32)
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    workers_list = [int(w) for w in args.workers_list.split(",")] if args.workers_list else sorted({1, cpus})

    print(f"ichct synth benchmark: {args.patients} patients, matrix {args.matrix}, {args.slices} slices, {cpus} CPU(s)")
    header = f"{'workers':>7}  {'seconds':>8}  {'patients/s':>10}  {'studies/s':>9}  {'files/s':>8}  {'100 patients':>12}"
    print(header)
    print("-" * len(header))
    for workers in workers_list:
        best = None
        for _ in range(max(1, args.repeat)):
            result = run_once(args.patients, workers, args.seed, args.matrix, args.slices)
            best = result if best is None or result[0] < best[0] else best
        elapsed, studies, files = best
        rate = args.patients / elapsed
        print(f"{workers:>7}  {elapsed:>8.2f}  {rate:>10.2f}  {studies / elapsed:>9.2f}  {files / elapsed:>8.0f}  {100 / rate:>10.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
