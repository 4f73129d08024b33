"""Evaluation-metrics benchmark: synthetic studies, all metrics, patient-level bootstrap, timed.

No model is run: slice probabilities, label maps and predicted label maps are simulated. Per study
the per-case segmentation metrics (Dice, HD95, ASSD, volumes, lesions) are computed, CT scores of
every decision rule derived with :func:`ichct.pipeline.decision.ct_scores`; then every CT-level
metric (6 subtypes x 4 rules), the RSNA log losses, the segmentation summaries and two readers get
patient-level bootstrap CIs, and the report (metrics.json, per_case.csv, report.md, plots) is written.

Run: ``python benchmarks/evaluate.py [--studies 50] [--boot 2000] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")

from ichct.pipeline.decision import DecisionRule, ct_scores, segmentation_volumes  # noqa: E402
from ichct.pipeline.core.labels import LABEL_NAMES  # noqa: E402
from ichct.pipeline.evaluate.metrics_ct import ct_level_metrics, reader_metrics, rsna_row_losses  # noqa: E402
from ichct.pipeline.evaluate.lesions import DEFAULT_LESIONS  # noqa: E402
from ichct.pipeline.evaluate.metrics_seg import segmentation_case_metrics, segmentation_summary  # noqa: E402
from ichct.pipeline.evaluate.report import assemble_metrics, write_report  # noqa: E402

SHAPE = (48, 48, 20)
SPACING = (0.9, 0.9, 5.0)


def _blob(shape: tuple[int, ...], centre: np.ndarray, radius: np.ndarray) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius)) <= 1.0


def synth_cohort(n_studies: int = 50, seed: int = 0) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-study rows: labels, slice probabilities, reference and predicted 6-class label maps."""
    rng = np.random.default_rng(seed)
    studies, keys = [], []
    patient = 0
    while len(studies) < n_studies:
        n_for_patient = min(int(rng.choice([1, 1, 2, 3])), n_studies - len(studies))
        for j in range(n_for_patient):
            true = np.zeros(SHAPE, dtype=np.uint8)
            sub = rng.random(5) < 0.25
            slice_lab = np.zeros((SHAPE[2], 6), dtype=np.uint8)
            for i in np.flatnonzero(sub):
                c = rng.uniform([12, 12, 4], [36, 36, 16])
                r = rng.uniform([3, 3, 1.0], [8, 8, 3.0])
                m = _blob(SHAPE, c, r)
                true[m] = i + 1
            for i in range(1, 6):
                zs = np.flatnonzero((true == i).any(axis=(0, 1)))
                slice_lab[zs, i] = 1
            slice_lab[:, 0] = slice_lab[:, 1:].max(axis=1)
            # predicted map: shifted reference, some missed, occasional false-positive blob
            pred = np.roll(true, shift=int(rng.integers(-1, 2)), axis=0)
            if rng.random() < 0.15:
                pred[:] = 0
            if rng.random() < 0.2:
                pred[_blob(SHAPE, rng.uniform([10, 10, 3], [38, 38, 17]), np.array([2.5, 2.5, 1.0]))] = int(
                    rng.integers(1, 6))
            logits = rng.normal(-2.5, 1.3, size=slice_lab.shape) + 2.2 * slice_lab
            probs = 1.0 / (1.0 + np.exp(-logits))
            studies.append({"study_id": f"S{len(studies):03d}", "patient_key": f"P{patient:03d}",
                            "true": true, "pred": pred, "probs": probs, "slice_labels": slice_lab})
            keys.append(f"P{patient:03d}")
            del j
        patient += 1
    return studies, keys


RULES = {
    "max": DecisionRule("max", threshold=0.5),
    "topk_mean": DecisionRule("topk_mean", threshold=0.5, k=3),
    "consecutive": DecisionRule("consecutive", threshold=0.4, k=2),
    "seg_volume": DecisionRule("seg_volume", threshold=0.05, num_seg_classes=6),
}


def per_case_rows(studies: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """The per-study table rows (labels, scores of every rule, slice losses, seg metrics, readers)."""
    rng = np.random.default_rng(seed + 1)
    voxel_ml = float(np.prod(SPACING) / 1000.0)
    rows = []
    for s in studies:
        labels = {st: int(s["slice_labels"][:, i].max()) for i, st in enumerate(LABEL_NAMES)}
        row: dict[str, Any] = {"study_id": s["study_id"], "patient_key": s["patient_key"]}
        row.update({f"label:{k}": v for k, v in labels.items()})
        for key, rule in RULES.items():
            if key == "seg_volume":
                sc = segmentation_volumes(s["pred"], voxel_ml, 0.0, num_classes=6)
            else:
                sc = ct_scores(rule, slice_probs=s["probs"])
            row.update({f"score:{key}:{st}": v for st, v in sc.items()})
        sl = rsna_row_losses(s["probs"], s["slice_labels"])
        row["slice_ll_sum"], row["n_slices"] = float(sl.sum()), int(sl.size)
        seg = segmentation_case_metrics(s["pred"], s["true"], SPACING, num_classes=6, lesions=DEFAULT_LESIONS)
        for cls, vals in seg.items():
            row.update({f"seg:{cls}:{f}": v for f, v in vals.items()})
        for r, (se, sp) in {"A": (0.85, 0.9), "B": (0.75, 0.97)}.items():
            for st in LABEL_NAMES:
                y = labels[st]
                row[f"reader:{r}:{st}"] = int(rng.random() < (se if y else 1 - sp))
        rows.append(row)
    return rows


def to_table(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Column arrays of the per-case rows."""
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=50)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    timings: list[tuple[str, float]] = []

    t0 = time.perf_counter()
    studies, keys = synth_cohort(args.studies, args.seed)
    timings.append(("simulate studies", time.perf_counter() - t0))

    t0 = time.perf_counter()
    rows = per_case_rows(studies, args.seed)
    table = to_table(rows)
    timings.append(("per-case metrics (Dice/HD95/ASSD/lesions x6 classes, scores x4 rules)", time.perf_counter() - t0))

    t0 = time.perf_counter()
    ct, curves = ct_level_metrics(table, keys, RULES, n_boot=args.boot, seed=args.seed)
    timings.append((f"CT-level metrics + curve bands, {args.boot} resamples", time.perf_counter() - t0))

    t0 = time.perf_counter()
    seg = segmentation_summary(table, keys, n_boot=args.boot, seed=args.seed)
    timings.append((f"segmentation summaries, {args.boot} resamples", time.perf_counter() - t0))

    t0 = time.perf_counter()
    readers = reader_metrics(table, keys, ["A", "B"], n_boot=args.boot, seed=args.seed)
    timings.append((f"reader operating points, {args.boot} resamples", time.perf_counter() - t0))

    t0 = time.perf_counter()
    metrics = assemble_metrics(model={"name": "synthetic"}, manifest={"path": "synthetic"}, split="test",
                               patient_keys=keys, ct_level=ct, segmentation=seg, allow_overlap=False,
                               readers=readers, n_boot=args.boot, seed=args.seed,
                               lesion_definition=DEFAULT_LESIONS.to_dict())
    with tempfile.TemporaryDirectory(prefix="ichct-eval-bench-") as tmp:
        out = args.out or Path(tmp)
        files = write_report(metrics, rows, curves, out)
    timings.append(("metrics.json + report.md + plots", time.perf_counter() - t0))

    n_metrics = sum(len(m) for st in ct.values() for m in st.values()) + sum(len(m) for m in seg.values())
    total = sum(t for _, t in timings)
    print(f"{args.studies} studies, {len(set(keys))} patients, {args.boot} resamples, "
          f"{n_metrics} CT/segmentation metrics with CIs, {len(files)} files written")
    width = max(len(n) for n, _ in timings)
    for name, t in timings:
        print(f"  {name:<{width}}  {t:8.2f} s")
    print(f"  {'total':<{width}}  {total:8.2f} s")
    a = ct["any"]["max"]
    print("  any/max: AUC {:.3f} [{:.3f}, {:.3f}], sensitivity {:.3f} [{:.3f}, {:.3f}]".format(
        a["roc_auc"]["value"], a["roc_auc"]["ci_low"], a["roc_auc"]["ci_high"],
        a["sensitivity"]["value"], a["sensitivity"]["ci_low"], a["sensitivity"]["ci_high"]))
    lesions = seg["any"]
    print("  lesions ({}): sensitivity {:.3f} at {:.2f} false-positive lesions per scan".format(
        DEFAULT_LESIONS.describe(), lesions["lesion_sensitivity"]["value"], lesions["fp_per_scan"]["value"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
