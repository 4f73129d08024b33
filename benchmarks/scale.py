"""Cohort scale (issue 24): every scale benchmark in one run, and a paper estimate for the RSNA set.

Runs, in this order, each printing its table:

* ``scale_manifest`` - ``manifest build --source rsna`` on a flat RSNA-layout folder (files/s; header
  scan and end to end, 1 and 2 Dask workers) against a single-process pydicom header loop;
* ``scale_preprocess`` - ``ichct preprocess`` throughput with 1 vs 2 workers, training peak RSS at a
  small vs a large cohort from the disk cache, epoch time from the disk vs the RAM cache;
* ``scale_predict`` - ``predict --batch`` throughput with 1 vs 2 workers and the default setup
  against a one-process loop.

Then it estimates the wall time of the RSNA 2019 ICH training set (752,803 files, about 21,700
series at 512 x 512) on N workers from the measured per-worker rates, assuming the work scales with
the number of workers (a shared file system that keeps up; the manifest's per-entry checks run in one
process and are included in the measured end-to-end rate). Per-study rates at 512 x 512 are taken as
the benchmark's 128 x 128 x 32 rates divided by 3.9, the ratio of the two sizes' ``predict --batch``
rates measured before this work (59 vs about 15 studies/min).

Run: ``python benchmarks/scale.py [--full] [--work DIR]`` (quick by default: a quarter hour on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

RSNA_FILES = 752_803
RSNA_SERIES = 21_700
SLOWDOWN_512 = 59 / 15  # predict --batch studies/min at 128x128x32 vs 512x512, one process (issue 24)
WORKER_COUNTS = (2, 16, 64, 256)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """One benchmark's rows as a Markdown table."""
    print(f"\n### {title}\n")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")


def _per_worker_rates(manifest: list[dict], preprocess: list[dict], predict: list[dict]) -> dict[str, float]:
    """Measured rates per worker with 2 workers: files/s for the manifest, studies/min for the others."""
    build = next(r for r in manifest if r["stage"].startswith("build_manifest") and r["workers"] == "2")
    prep = next(r for r in preprocess if r["measure"].startswith("preprocess"))
    pred = next(r for r in predict if r["setup"] == "dask 2 workers x 1 thread")
    return {"manifest build (files/s)": build["files_per_s"] / 2,
            "preprocess (studies/min, 512x512)": prep["value_2"] / 2 / SLOWDOWN_512,
            "predict --batch (studies/min, 512x512)": pred["studies_per_min"] / 2 / SLOWDOWN_512}


def rsna_estimate(rates: dict[str, float]) -> list[dict[str, Any]]:
    """Hours for the RSNA training set on N workers, per stage."""
    rows = []
    for stage, rate in rates.items():
        row: dict[str, Any] = {"stage": stage, "rate per worker": round(rate, 1)}
        for n in WORKER_COUNTS:
            minutes = RSNA_FILES / (rate * n) / 60 if "files" in stage else RSNA_SERIES / (rate * n)
            row[f"{n} workers (h)"] = round(minutes / 60, 2)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes (hours on 2 cores)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="ichct_scale_"))
    quick = not args.full
    import scale_manifest
    import scale_predict
    import scale_preprocess

    manifest = scale_manifest.run(work / "manifest", quick)
    print_table("manifest build --source rsna (flat folder)", manifest)
    preprocess = scale_preprocess.run(work / "preprocess", quick)
    print_table("preprocess and training from the cache", preprocess)
    predict = scale_predict.run(work / "predict", quick)
    print_table("predict --batch", predict)
    print_table("Paper estimate: RSNA 2019 training set (752,803 files, ~21,700 series)",
                rsna_estimate(_per_worker_rates(manifest, preprocess, predict)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
