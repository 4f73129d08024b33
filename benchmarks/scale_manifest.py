"""Flat-folder scale of ``manifest build --source rsna`` (issue 24, part 4).

Writes a flat RSNA-layout folder of N small files (64x64, RSNA's attribute set) with
``tests/foreign_dicom.py``'s ``write_rsna_layout`` into the work folder, then measures, warm file
cache, runs alternated, median of 3:

* peer: a single-process ``pydicom.dcmread(f, stop_before_pixels=True)`` loop over the files;
* ichct's header scan (:func:`ichct.pipeline.manifests.scan.scan_files`, header + pixel hash in one
  read per file) on 1 and 2 Dask workers (goal with 2: >= 1.5x the peer);
* ``build_manifest`` end to end (scan, pixel hashes for the leak check, split, links, checks) on 1
  and 2 workers (goal: >= 0.5x the peer), no pixel-hash cache; a first build each time (the output
  of the previous repeat is removed before the timing: a rebuild also deletes the link folder it
  replaces, one ``unlink`` per file).

Quick: 10,000 files; full: 100,000. Each row also estimates the RSNA training set (752,803 files)
at the measured rate. Run: ``python benchmarks/scale_manifest.py [--full] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

RSNA_FILES = 752_803
FILES_PER_SERIES = 40


def make_folder(work_dir: Path, n_files: int) -> Path:
    """The data set root (written once per size; reused when present)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from foreign_dicom import write_rsna_layout

    root = work_dir / f"rsna_flat_{n_files}"
    if not (root / "stage_2_train.csv").exists():
        write_rsna_layout(root, n_series=n_files // FILES_PER_SERIES, files_per_series=FILES_PER_SERIES, rows=64,
                          keep_truth=False)
    return root


def _peer(files: list[Path]) -> None:
    import pydicom

    from ichct.transforms.dicom.validation import quiet_pydicom_values

    with quiet_pydicom_values():
        for f in files:
            pydicom.dcmread(f, stop_before_pixels=True)


def _row(stage: str, workers: str, n_files: int, seconds: list[float], peer_rate: float | None, goal: str) -> dict:
    rate = n_files / statistics.median(seconds)
    return {"stage": stage, "workers": workers, "files": n_files, "median_s": round(statistics.median(seconds), 2),
            "files_per_s": round(rate), "ratio_to_peer": round(rate / peer_rate, 2) if peer_rate else 1.0,
            "goal": goal, "rsna_752803_files_min": round(RSNA_FILES / rate / 60, 1)}


def run(work_dir: Path, quick: bool) -> list[dict]:
    """Table rows: peer, header scan with 1 and 2 workers, build_manifest end to end with 1 and 2 workers."""
    from ichct.pipeline.core.cluster import ClusterSpec, dask_client
    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.manifests.scan import scan_files
    from ichct.transforms.dicom.discovery import list_candidate_files

    n_files = 10_000 if quick else 100_000
    work_dir = Path(work_dir)
    root = make_folder(work_dir, n_files)
    files = list_candidate_files(root / "stage_2_train")
    _peer(files)  # warm the file cache
    times: dict[str, list[float]] = {}

    def timed(key: str, fn) -> None:
        start = time.perf_counter()
        fn()
        times.setdefault(key, []).append(time.perf_counter() - start)

    with dask_client(ClusterSpec(workers=1)) as one, dask_client(ClusterSpec(workers=2)) as two:
        clients = {"1": one, "2": two}
        for repeat in range(3):  # alternated: each round runs every measurement once
            timed("peer", lambda: _peer(files))
            for w, client in clients.items():
                timed(f"scan{w}", lambda c=client: scan_files(files, client=c))
            for w, client in clients.items():
                out = work_dir / f"build{w}" / "rsna.json"
                shutil.rmtree(out.parent, ignore_errors=True)  # a first build: no earlier link folder to delete
                os.sync()  # and the deletion written out before the timing starts
                timed(f"build{w}", lambda c=client, o=out: build_manifest("rsna", root, o, cache=False, client=c,
                                                                          command="benchmark"))
    peer_rate = n_files / statistics.median(times["peer"])
    return [
        _row("peer: pydicom dcmread(stop_before_pixels) loop", "1 process", n_files, times["peer"], None, "-"),
        _row("ichct header scan (+ pixel hash)", "1", n_files, times["scan1"], peer_rate, "-"),
        _row("ichct header scan (+ pixel hash)", "2", n_files, times["scan2"], peer_rate, ">= 1.5x"),
        _row("build_manifest end to end", "1", n_files, times["build1"], peer_rate, "-"),
        _row("build_manifest end to end", "2", n_files, times["build2"], peer_rate, ">= 0.5x"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="100,000 files (default: 10,000)")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ichct_scale_manifest_"))
    rows = run(work, quick=not args.full)
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))


if __name__ == "__main__":
    main()
