"""Training benchmark: both models on the committed synthetic manifest, fold 0, within a time budget.

For each device (CPU; CUDA too when ``torch.cuda.is_available()``) and each model (``seg``, ``cls``)
it trains with the default config and ``max_minutes`` (default 5) on
``data_manifests/synth_default.json`` fold 0 (the default cohort is generated into
``data/synth_default`` first when missing), each run in its own process so the peak memory is that
run's, then scores the best checkpoint on the manifest's TEST split:

* seg: Dice of blood (label > 0) per test study with blood, averaged; sliding-window inference
  (the training patch, Gaussian blending) on the preprocessed grid (RAS, training spacing, brain
  crop) -- not on the original DICOM grid. Also the CT-level ROC AUC of the segmented blood volume.
* cls: CT-level ROC AUC of ``any`` under the ``consecutive`` rule (``k`` of the run's
  ``thresholds.json``) via :func:`ichct.pipeline.decision.ct_scores`; rank-formula AUC.

Prints one table row per run: epochs, time per epoch, total training time (training loop incl.
validation; data caching is listed apart), peak RSS (``resource.getrusage`` maxrss of the run's
process; CUDA: also ``torch.cuda.max_memory_allocated``), best validation metric and test metrics.

Run: ``python benchmarks/train.py [--minutes 5] [--kinds seg,cls] [--devices cpu,cuda] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "data_manifests" / "synth_default.json"
FOLD = 0


def ensure_data() -> None:
    """Generate the default cohort into data/synth_default when it is missing."""
    from ichct.pipeline.synth import DEFAULT_COHORT_DIR, default_cohort, generate_cohort

    target = REPO / DEFAULT_COHORT_DIR
    if (target / "cohort.json").exists():
        return
    print(f"generating the default synthetic cohort into {target} ...", file=sys.stderr)
    generate_cohort(default_cohort(), target, workers=min(8, os.cpu_count() or 1))


def seg_test(run: Path, device: str) -> dict[str, float]:
    """Test Dice (studies with blood) and CT-level AUC(any) of a seg run's best.pt on the test split."""
    import torch
    from monai.inferers import SlidingWindowInferer

    from ichct.pipeline.decision import DecisionRule, ct_scores, voxel_volume_ml
    from ichct.pipeline.manifests import load_manifest
    from ichct.pipeline.evaluate.metrics_ct import roc_auc_known_labels
    from ichct.pipeline.models.network_factory import build_network
    from ichct.pipeline.core.weights import load_checkpoint
    from ichct.pipeline.models.data import seg_items, seg_transforms

    cfg = json.loads((run / "config.json").read_text())["config"]
    model = build_network("seg", cfg).to(device)
    model.load_state_dict(load_checkpoint(run / "best.pt")["model"])
    model.eval()
    rule = DecisionRule.load(run / "thresholds.json")
    vml = voxel_volume_ml(cfg["spacing_mm"])
    tf = seg_transforms(cfg, train=False)
    inferer = SlidingWindowInferer(roi_size=[int(p) for p in cfg["patch"]], sw_batch_size=int(cfg["sw_batch_size"]),
                                   overlap=float(cfg["sw_overlap"]), mode="gaussian")
    dices, scores, labels = [], [], []
    for item in seg_items(load_manifest(MANIFEST, "test", check=False), int(cfg["num_classes"])):
        d = tf(item)
        with torch.no_grad():
            logits = inferer(torch.as_tensor(d["image"])[None].to(device), model)
        pred = torch.argmax(logits, dim=1)[0].cpu().numpy() > 0
        gt = np.asarray(d["label"])[0] > 0
        if gt.any():
            dices.append(2.0 * float((pred & gt).sum()) / float(pred.sum() + gt.sum()))
        sc = ct_scores(rule, segmentation=pred.astype(np.int64), voxel_volume_ml=vml)
        scores.append(float(sc.get("any", 0.0)))
        labels.append(float(item["ct"][0]))
    return {"test_dice": float(np.mean(dices)) if dices else float("nan"), "n_test_pos": len(dices),
            "test_auc_any": roc_auc_known_labels(scores, labels), "n_test": len(scores)}


def cls_test(run: Path, device: str) -> dict[str, float]:
    """CT-level AUC(any) (``consecutive`` rule) of a cls run's best.pt on the test split."""
    import torch

    from ichct.pipeline.decision import DecisionRule, ct_scores
    from ichct.pipeline.manifests import load_manifest
    from ichct.pipeline.evaluate.metrics_ct import roc_auc_known_labels
    from ichct.pipeline.models.network_factory import build_network
    from ichct.pipeline.core.weights import load_checkpoint
    from ichct.pipeline.models.data import cls_items, cls_transforms

    cfg = json.loads((run / "config.json").read_text())["config"]
    model = build_network("cls", cfg).to(device)
    model.load_state_dict(load_checkpoint(run / "best.pt")["model"])
    model.eval()
    rule = DecisionRule.load(run / "thresholds.json")
    assert rule.name == "consecutive"
    tf = cls_transforms(cfg, train=False)
    scores, labels = [], []
    for item in cls_items(load_manifest(MANIFEST, "test", check=False)):
        d = tf(item)
        with torch.no_grad():
            out = model(torch.as_tensor(d["image"])[None].to(device))
            out = out["logits"] if isinstance(out, dict) else out
            probs = torch.sigmoid(out.float())[0].cpu().numpy()
        scores.append(float(ct_scores(rule, slice_probs=probs)["any"]))
        labels.append(float(item["ct"][0]))
    return {"test_auc_any": roc_auc_known_labels(scores, labels), "n_test": len(scores)}


def run_one(kind: str, device: str, minutes: float, out: Path, seed: int) -> dict:
    """Train + test one model in this process; returns the table row."""
    import torch

    from ichct.pipeline.train.engine import read_metrics, train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    summary = train(kind, MANIFEST, FOLD, out, device=device, seed=seed, max_minutes=minutes)
    wall = time.perf_counter() - t0
    rows = read_metrics(out / "metrics.csv")
    key = summary["key_metric"]
    test = seg_test(out, device) if kind == "seg" else cls_test(out, device)
    row = {"kind": kind, "device": device, "epochs": summary["epochs"], "epoch_s": summary["epoch_time_s"],
           "train_s": summary["train_time_s"], "cache_s": wall - summary["train_time_s"],
           "stopped_by_budget": summary["stopped_by_budget"],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
           "val_metric": key, "val_best": summary["best_metric"], "best_epoch": summary["best_epoch"],
           "val_last": float(rows[-1][key]) if rows else float("nan"), **test}
    if device.startswith("cuda"):
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def _fmt(v, nd=3):
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.{nd}f}"
    return str(v)


def print_table(rows: list[dict], minutes: float) -> None:
    head = ["model", "device", "epochs", "s/epoch", "train s", "cache s", "peak RSS MB", "val (best)",
            "test metric", "target", "met"]
    lines = []
    for r in rows:
        if r["kind"] == "seg":
            test = f"Dice {_fmt(r['test_dice'])} (n={r['n_test_pos']}); AUC(any) {_fmt(r['test_auc_any'])}"
            target, ok = "Dice >= 0.70", r["test_dice"] >= 0.70
        else:
            test = f"AUC(any) {_fmt(r['test_auc_any'])} (n={r['n_test']})"
            target, ok = "AUC >= 0.95", r["test_auc_any"] >= 0.95
        ok = ok and r["train_s"] <= minutes * 60 + 1
        mem = _fmt(r["peak_rss_mb"], 0) + (f" (GPU {_fmt(r['peak_gpu_mb'], 0)})" if "peak_gpu_mb" in r else "")
        lines.append([r["kind"], r["device"], str(r["epochs"]), _fmt(r["epoch_s"], 1), _fmt(r["train_s"], 0),
                      _fmt(r["cache_s"], 0), mem, f"{r['val_metric']} {_fmt(r['val_best'])}", test, target,
                      "yes" if ok else "no"])
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for x in lines:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(x, widths)) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model (default 5)")
    parser.add_argument("--kinds", default="seg,cls")
    parser.add_argument("--devices", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="keep the run folders under this directory")
    parser.add_argument("--_one", nargs=3, metavar=("KIND", "DEVICE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._one:  # child process: one run, its row as the last stdout line
        kind, device, out = args._one
        row = run_one(kind, device, args.minutes, Path(out), args.seed)
        print("ROW " + json.dumps(row))
        return 0

    import torch

    ensure_data()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ichct-train-bench-"))
    rows = []
    try:
        for device in devices:
            for kind in args.kinds.split(","):
                out = base / f"{kind}_{device}"
                if out.exists():
                    shutil.rmtree(out)
                cmd = [sys.executable, str(Path(__file__).resolve()), "--minutes", str(args.minutes),
                       "--seed", str(args.seed), "--_one", kind, device, str(out)]
                proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
                sys.stdout.flush()
                found = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
                if proc.returncode != 0 or not found:
                    print(f"{kind} on {device} failed (exit {proc.returncode})", file=sys.stderr)
                    continue
                rows.append(json.loads(found[-1][4:]))
                print(f"{kind} {device}: {json.dumps(rows[-1])}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nichct train benchmark: {MANIFEST.relative_to(REPO)} fold {FOLD}, default configs, "
          f"budget {args.minutes:g} min per model, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs\n")
    print_table(rows, args.minutes)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
