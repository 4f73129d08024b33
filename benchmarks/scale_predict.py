"""``predict --batch`` throughput on Dask (issue 24, part 2): studies per minute.

Generates a synthetic cohort (``ichct.pipeline.synth``, 128 x 128 x 32 DICOM studies, written once
into the work folder and reused) and predicts it with the shipped bundles (seg + cls, no overlays),
warm file cache, runs alternated, median of the repeats:

* peer: today's one-process ``predict --batch``: a plain loop calling
  :func:`ichct.pipeline.predict.run.predict` per study in this process, torch's default threads
  (models loaded beforehand);
* :func:`ichct.pipeline.predict.batch.predict_batch` on a started LocalCluster of 1 and of 2
  single-threaded workers (goal: 2 workers >= 1.7x 1 worker; each worker loads the models once,
  inside the timing);
* the default setup (a LocalCluster sized to the machine), once on a started cluster and once end
  to end as ``ichct predict --batch`` runs it (cluster start included); goal >= 1.3x the peer.

Quick: 12 studies, full: 60 studies; median of 3. The started clusters are warmed up first (imports done,
models loaded on every worker), as the peer's process is; the end-to-end row includes all of that. Run:
``python benchmarks/scale_predict.py [--full] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def make_cohort(work_dir: Path, n_studies: int) -> Path:
    """A batch list of ``n_studies`` synthetic 128 x 128 x 32 DICOM studies (written once per size)."""
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    root = work_dir / f"cohort_{n_studies}"
    if not (root / "cohort.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        cfg = SynthConfig(n_patients=n_studies, seed=24, matrix=128, slices=32, follow_up_fraction=0.0,
                          bone_fraction=0.0, scout_fraction=0.0, tilt_fraction=0.0)
        generate_cohort(cfg, root, workers=2)
    studies = sorted(p for p in (root / "dicom").iterdir() if p.is_dir())[:n_studies]
    listing = work_dir / f"list_{n_studies}.csv"
    listing.write_text("path\n" + "\n".join(str(p) for p in studies) + "\n", encoding="utf-8")
    return listing


def _head(listing: Path, n: int) -> Path:
    """A list of the first ``n`` studies of ``listing`` (to warm the workers up)."""
    lines = listing.read_text(encoding="utf-8").splitlines()
    head = listing.with_name(f"{listing.stem}_head{n}.csv")
    head.write_text("\n".join(lines[:n + 1]) + "\n", encoding="utf-8")
    return head


def _peer(listing: Path, out: Path, models: list[Any]) -> None:
    from ichct.pipeline.predict.batch import read_batch_list
    from ichct.pipeline.predict.run import predict

    for sid, path in read_batch_list(listing):
        predict(path, out / sid, models, overlays=False, models_source="shipped")


def _batch(listing: Path, out: Path, models: list[Any], client: Any = None, spec: Any = None) -> None:
    from ichct.pipeline.predict.batch import predict_batch

    res = predict_batch(listing, out, models, overlays=False, models_source="shipped", client=client, cluster=spec,
                        progress=False)
    if res["n_failed"]:
        raise RuntimeError(f"{res['n_failed']} studies failed: {res['rows']}")


def _timed(fn: Callable[[Path], None], scratch: Path) -> float:
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    fn(out)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return elapsed


def _setups(listing: Path, models: list[Any], clients: dict[str, Any]) -> dict[str, Callable[[Path], None]]:
    from ichct.pipeline.core.cluster import ClusterSpec

    return {
        "peer: one process, loop over predict()": lambda out: _peer(listing, out, models),
        "dask 1 worker x 1 thread": lambda out: _batch(listing, out, models, client=clients["1"]),
        "dask 2 workers x 1 thread": lambda out: _batch(listing, out, models, client=clients["2"]),
        "dask default (started cluster)": lambda out: _batch(listing, out, models, client=clients["default"]),
        "dask default (end to end, cluster start)": lambda out: _batch(listing, out, models, spec=ClusterSpec()),
    }


def run(work_dir: Path, quick: bool) -> list[dict[str, Any]]:
    """Measure every setup; the table rows (studies/min, ratios and goals)."""
    from contextlib import ExitStack

    from ichct.pipeline.core.cluster import ClusterSpec, dask_client, usable_cores
    from ichct.pipeline.predict.run import load_default_models

    n_studies, repeats = (12, 3) if quick else (60, 3)
    work_dir.mkdir(parents=True, exist_ok=True)
    listing = make_cohort(work_dir, n_studies)
    models = load_default_models()
    scratch = Path(tempfile.mkdtemp(prefix="scale_predict_", dir=work_dir))
    times: dict[str, list[float]] = {}
    with ExitStack() as stack:
        clients = {"1": stack.enter_context(dask_client(ClusterSpec(workers=1))),
                   "2": stack.enter_context(dask_client(ClusterSpec(workers=2))),
                   "default": stack.enter_context(dask_client(ClusterSpec()))}
        setups = _setups(listing, models, clients)
        _peer(listing, scratch / "warm", models)  # warm the file cache and this process
        warm = _head(listing, 4)
        for key, client in clients.items():  # as warm as the peer: imports done, models loaded on every worker
            _batch(warm, scratch / f"warm-{key}", models, client=client)
        for _ in range(repeats):  # runs alternated
            for name, fn in setups.items():
                times.setdefault(name, []).append(_timed(fn, scratch))
    shutil.rmtree(scratch, ignore_errors=True)
    rate = {name: n_studies * 60.0 / statistics.median(ts) for name, ts in times.items()}
    one, peer = rate["dask 1 worker x 1 thread"], rate["peer: one process, loop over predict()"]
    goals = {"dask 2 workers x 1 thread": (one, "vs 1 worker", 1.7),
             "dask default (started cluster)": (peer, "vs peer", 1.3),
             "dask default (end to end, cluster start)": (peer, "vs peer", 1.3)}
    rows = []
    for name, r in rate.items():
        ref, against, goal = goals.get(name, (None, "", None))
        rows.append({"setup": name, "studies": n_studies, "cores": usable_cores(), "repeats": repeats,
                     "median_s": round(statistics.median(times[name]), 2), "studies_per_min": round(r, 1),
                     "ratio": "" if ref is None else round(r / ref, 2), "against": against,
                     "goal": "" if goal is None else f">= {goal}x",
                     "met": "" if goal is None or ref is None else ("yes" if r / ref >= goal else "NO")})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as an aligned text table."""
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="60 studies, median of 3 (default: quick, 12 studies)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ichct_scale_predict")
    args = parser.parse_args(argv)
    print_table(run(args.work, quick=not args.full))
    return 0


if __name__ == "__main__":
    sys.exit(main())
