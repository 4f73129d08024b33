"""Where a segmenter's false blood differs from its true blood: per-component confidence.

For every study of a synthetic cohort (its ``cohort.json``), the segmenter (a training run or a
bundle) predicts class probabilities on its own grid, with the run's preprocessing; every predicted
blood component (26-connected, at least ``--min-ml``, foreground where P(blood) > 0.5) is recorded
with its volume, its mean and its maximum blood probability, and whether it touches reference
blood. It prints the false and true components' percentiles and, per ``min_component_confidence``
value, what keeping only components whose mean reaches it would give: the 95th percentile of
predicted blood on negatives (mL), Dice on studies with blood, false-positive components per scan
and the share of true components kept (model grid; an estimate of what ``ichct evaluate`` measures
on the input's grid, see docs/benchmarks.md#component-confidence-filter).

Run: ``python benchmarks/component_confidence.py MODEL COHORT_DIR [--studies UID_FILE] [--out JSON]``
(MODEL: a seg run folder or a seg bundle; ``--studies``: a text file of study UIDs to keep, for
example a validation fold's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

THRESHOLDS = (0.0, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def load_model(path: Path) -> Any:
    """A seg run folder (``config.json``) or a seg bundle (``configs/``)."""
    from ichct.pipeline.bundle.package import load_bundle
    from ichct.pipeline.models.inference import load_run

    model = load_run(path) if (path / "config.json").is_file() else load_bundle(path)
    if model.kind != "seg":
        raise SystemExit(f"{path}: a {model.kind} model; this needs a segmenter")
    return model


def study_components(model: Any, transforms: Any, image: Path, label: Path, min_ml: float) -> dict[str, Any]:
    """Predicted components of one study with their volume, mean and max blood probability, overlap."""
    from ichct.networks import sliding_window_predict

    cfg = model.config
    data = transforms({"image": str(image), "label": str(label), "ct": [0] * 6, "patient_key": ""})
    reference = np.asarray(data["label"])[0] > 0
    with torch.no_grad():
        logits = sliding_window_predict(model.network, torch.as_tensor(np.asarray(data["image"])),
                                        roi_size=[int(p) for p in cfg["patch"]], sw_batch_size=int(cfg["sw_batch_size"]),
                                        overlap=float(cfg["sw_overlap"]), mode="gaussian")
    blood = 1.0 - torch.softmax(logits.float(), 0)[0].numpy()
    voxel_ml = float(np.prod(cfg["spacing_mm"])) / 1000.0
    labels, n = ndimage.label(blood > 0.5, np.ones((3, 3, 3), dtype=bool))
    components = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[where] == index
        ml = float(inside.sum()) * voxel_ml
        if ml >= min_ml:
            p = blood[where][inside]
            components.append({"ml": ml, "mean": float(p.mean()), "max": float(p.max()),
                               "true": bool(reference[where][inside].any()),
                               "overlap_ml": float(reference[where][inside].sum()) * voxel_ml})
    return {"true_ml": float(reference.sum()) * voxel_ml, "components": components}


def sweep(studies: list[dict[str, Any]], thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict[str, float]]:
    """What keeping components with mean probability >= each threshold gives, over the studies."""
    n_true = sum(c["true"] for s in studies for c in s["components"])
    rows = []
    for t in thresholds:
        negatives, dices, false, kept_true = [], [], 0, 0
        for s in studies:
            kept = [c for c in s["components"] if c["mean"] >= t]
            predicted = sum(c["ml"] for c in kept)
            false += sum(not c["true"] for c in kept)
            kept_true += sum(c["true"] for c in kept)
            if s["true_ml"] > 0:
                dices.append(2 * sum(c["overlap_ml"] for c in kept) / (predicted + s["true_ml"]))
            else:
                negatives.append(predicted)
        rows.append({"min_component_confidence": t, "p95_false_blood_ml": float(np.percentile(negatives, 95)) if negatives else float("nan"),
                     "dice_with_blood": float(np.mean(dices)) if dices else float("nan"),
                     "fp_components_per_scan": false / len(studies), "true_components_kept": kept_true / max(n_true, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("cohort", type=Path, help="a synthetic cohort folder (cohort.json)")
    parser.add_argument("--studies", type=Path, default=None, help="a file of study UIDs to keep, one per line")
    parser.add_argument("--min-ml", type=float, default=0.2, help="smallest component counted (default 0.2 mL)")
    parser.add_argument("--out", type=Path, default=None, help="write the components and the sweep as JSON")
    args = parser.parse_args(argv)
    from ichct.pipeline.models.data import seg_transforms

    model = load_model(args.model)
    transforms = seg_transforms(model.config, train=False)
    records = json.loads((args.cohort / "cohort.json").read_text(encoding="utf-8"))["studies"]
    if args.studies:
        keep = set(args.studies.read_text(encoding="utf-8").split())
        records = [r for r in records if r["study_uid"] in keep]
    start = time.perf_counter()
    studies = [study_components(model, transforms, args.cohort / r["series_dir"], args.cohort / r["label"], args.min_ml)
               for r in records]
    for kind in (False, True):
        cs = [c for s in studies for c in s["components"] if c["true"] is kind]
        if cs:
            print(f"{'true' if kind else 'false'} components: {len(cs)}, volume median {np.median([c['ml'] for c in cs]):.2f} mL, "
                  f"mean probability p25/p50/p75 {np.percentile([c['mean'] for c in cs], [25, 50, 75]).round(2).tolist()}, "
                  f"max probability median {np.median([c['max'] for c in cs]):.2f}")
    rows = sweep(studies)
    print("| min_component_confidence | p95 false blood (mL) | Dice with blood | FP components/scan | true components kept |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['min_component_confidence']:g} | {r['p95_false_blood_ml']:.2f} | {r['dice_with_blood']:.3f} | "
              f"{r['fp_components_per_scan']:.2f} | {r['true_components_kept']:.2f} |")
    print(f"{len(studies)} studies in {time.perf_counter() - start:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"studies": studies, "sweep": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
