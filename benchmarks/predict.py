"""Prediction benchmark: one 512x512x32 head-CT DICOM study -> mask, SEG, report, overlays on CPU.

Writes one synthetic study (``ichct.pipeline.synth``: a positive head CT, 512 x 512 matrix, 32
slices, uncompressed) and two run folders holding the DEFAULT seg and cls architectures
(``ichct.pipeline.models.config`` defaults, built by training's constructor, random weights: the
time does not depend on the weights) into a cache folder. Then, in a fresh process, it imports
ichct, loads both runs and calls :func:`ichct.pipeline.predict.run.predict` ``--repeat`` times, and
prints the time per stage of the first (cold) call and the median of the others (warm), the
process's peak resident memory (psutil, sampled every 5 ms, and the kernel's maxrss) and the
time to import and load the models.

``--models shipped`` predicts with the committed bundles instead, with their inference settings
(brain-referenced HU measures every study's brain tissue level once per model; test-time
mirroring runs each network twice).

Targets (issue 9): <= 10 s per study and <= 2 GB peak memory on CPU, for the 32-slice study.

Run: ``python benchmarks/predict.py [--repeat 3] [--matrix 512] [--slices 32] [--models default|shipped]
[--cache DIR]`` (needs the ``bench`` extra for psutil).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

STAGES = ("read", "preprocess", "seg", "cls", "write", "total")

CHILD = textwrap.dedent(
    """
    import json, resource, statistics, sys, threading, time
    t_start = time.perf_counter()
    import psutil
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    stop = threading.Event()
    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)
    threading.Thread(target=sample, daemon=True).start()
    import torch
    from ichct.pipeline.models.inference import load_run
    from ichct.pipeline.models.shipped_models import load_shipped_models
    from ichct.pipeline.predict.run import predict
    study, runs, out, repeat, device = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]), sys.argv[5]
    if runs == ["shipped"]:
        models = load_shipped_models(device=device, warn=False)
    else:
        models = [load_run(r, device=device) for r in runs]
    t_ready = time.perf_counter()
    calls = []
    for i in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        doc = predict(study, f"{out}/run{i}", models, overwrite=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        calls.append({**doc["timings_s"], "wall": wall, "cpu": cpu})
    stop.set()
    print(json.dumps({"calls": calls, "import_and_load_s": t_ready - t_start,
                      "peak_rss_mib_psutil": peak[0] / 2**20,
                      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch_threads": torch.get_num_threads(),
                      "any": doc["findings"]["any"]["call"], "outputs": doc["outputs"]}))
    """
)


def ensure_study(cache: Path, matrix: int, slices: int) -> Path:
    """The cached synthetic study folder (generated on first use)."""
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    root = cache / f"study_{matrix}x{slices}"
    dicom = root / "dicom"
    if not dicom.is_dir():
        cfg = SynthConfig(n_patients=1, seed=7, matrix=matrix, slices=slices, positive_fraction=1.0,
                          follow_up_fraction=0.0, tilt_fraction=0.0, bone_fraction=0.0, scout_fraction=0.0,
                          compression_mix={"none": 1.0}, thickness_choices_mm=(5.0,))
        generate_cohort(cfg, root, workers=1)
    studies = sorted(p for p in dicom.glob("*/*") if p.is_dir())
    if len(studies) != 1:
        raise RuntimeError(f"{dicom}: expected one study, found {len(studies)}")
    return studies[0]


def ensure_runs(cache: Path) -> list[Path]:
    """Run folders with the default seg and cls architectures (random weights)."""
    import torch

    from ichct.pipeline.models.network_factory import build_network
    from ichct.pipeline.models.config import resolve_config

    out = []
    for kind in ("seg", "cls"):
        run = cache / f"run_{kind}_default"
        if not (run / "best.pt").is_file():
            run.mkdir(parents=True, exist_ok=True)
            cfg = resolve_config(kind)
            torch.manual_seed(0)
            torch.save({"model": build_network(kind, cfg).state_dict(), "epoch": 0}, run / "best.pt")
            (run / "config.json").write_text(json.dumps({"kind": kind, "fold": 0, "seed": 0, "config": cfg}),
                                             encoding="utf-8")
        out.append(run)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="predict calls in the measuring process (first is cold)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--models", default="default", choices=("default", "shipped"),
                    help="default architectures with random weights, or the committed bundles and their settings")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ichct_bench_predict")
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    study = ensure_study(args.cache, args.matrix, args.slices)
    runs = ensure_runs(args.cache) if args.models == "default" else ["shipped"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ichct_bench_predict_out_") as out:
        env = {**os.environ, "MPLBACKEND": "Agg"}
        res = subprocess.run([sys.executable, "-c", CHILD, str(study), ",".join(map(str, runs)), out,
                              str(args.repeat), args.device], capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        return 1
    data = json.loads(res.stdout.strip().splitlines()[-1])
    calls = data["calls"]
    warm = calls[1:] or calls

    def med(key: str) -> float:
        values = sorted(c[key] for c in warm)
        return values[len(values) // 2]

    which = ("default seg (3D U-Net) + cls (slice classifier) architectures" if args.models == "default"
             else "the committed bundles (brain-referenced HU, test-time mirroring)")
    print(f"ichct predict: {args.matrix}x{args.matrix}x{args.slices} DICOM study, {which}, {args.device}, "
          f"torch threads {data['torch_threads']}")
    print(f"{'stage':<12}{'cold s':>10}{'warm s':>10}")
    for s in STAGES:
        print(f"{s:<12}{calls[0][s]:>10.2f}{med(s):>10.2f}")
    print(f"{'import+load':<12}{data['import_and_load_s']:>10.2f}")
    print(f"{'cpu time':<12}{calls[0]['cpu']:>10.2f}{med('cpu'):>10.2f}   (process CPU seconds of the predict call; "
          f"load average before the run {load_before:.1f} on {os.cpu_count()} CPUs)")
    print(f"peak RSS: {data['peak_rss_mib_psutil']:.0f} MiB (psutil), maxrss {data['maxrss_mib']:.0f} MiB")
    ok_t = calls[0]["total"] <= 10.0
    ok_m = max(data["peak_rss_mib_psutil"], data["maxrss_mib"]) <= 2048
    print(f"targets: time <= 10 s {'met' if ok_t else 'NOT met'}; memory <= 2 GB {'met' if ok_m else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
