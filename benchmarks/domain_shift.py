"""Shifted-domain benchmark: the shipped bundles on a held-out cohort rendered with unseen image formation.

Generates a synthetic cohort (:func:`ichct.pipeline.synth.generate_cohort`) that no bundle was
trained on: its own seed (default 2026; the training cohort's is 0), ``--studies`` patients with
one study each (``follow_up_fraction`` 0), half negative (``positive_fraction`` 0.5), all five
subtypes, matrix 128 and 32 slices like the training cohort, and image formation never used in
training (:class:`ichct.pipeline.synth.config.FormationShift`):

- a sharper soft-tissue kernel: MTF cut-off 0.55 cycles/mm (training: 0.45);
- 0.7x dose: noise SD x ``1 / sqrt(0.7)`` (soft and bone reconstructions);
- slice thickness 2.0 or 4.5 mm (training: 2.5, 3.0, 3.75, 5.0);
- PSF tails of 12 % over 1.6 mm (training: 9 % over 1.2 mm);
- +4 HU on every scanner's calibration offset; a 1.3 mm slice-profile blur (training: 1.0 mm).

It builds a manifest whose test split is the whole cohort (``test_fraction`` 1.0) and runs
``ichct evaluate --bundle bundles/ich_ct_segmentation --bundle bundles/ich_ct_classification
--split test``, then reads ``metrics.json`` and ``per_case.csv``.

Leakage guard: synthetic patient IDs carry the cohort's seed (``SYN2026-0001``; the training
cohort's are ``SYN0001``...), so ``ichct evaluate``'s patient-key guard sees no overlap with the
bundles' training patients and runs without ``--allow-overlap``; the benchmark also checks that no
study or series UID of the cohort is among the bundles' training UIDs.

Metrics (each with its 95 % patient-level bootstrap CI; studies = patients here):

- *specificity* and *AUC(any)* at the threshold stored with each bundle (its validation fold),
  for the classification bundle's rule, the segmentation bundle's ``seg_volume`` and
  ``seg_peak`` rules (the peak probability's threshold as ``ichct postprocess`` stored it) and the
  ``fused`` rule on both bundles (the mean of ``consecutive`` and ``seg_peak``, at the mean of their
  thresholds);
- *false blood on negatives*: median and 95th percentile over negative studies of the predicted
  blood volume (``seg:any:vol_pred_ml``, mL), CI from 2000 resamples of the negatives (seed 0);
  the segmenter predicts beside the classifier, so a segmentation bundle's
  ``classifier_slice_gate`` acts (the committed one's since 0.9.2);
- *Dice on studies with blood* (``dice_positive``);
- *lesion sensitivity* and *false-positive lesions per scan* (lesions: 26-connected components of
  at least 0.05 mL, evaluate's default).

Goals on the point estimates (PASS/FAIL): specificity >= 0.95, 95th-percentile false blood
<= 1 mL, AUC(any) >= 0.95, Dice on studies with blood >= 0.65, lesion sensitivity >= 0.6 at
<= 0.5 false-positive lesions per scan (the segmentation bundle's own operating point: its
``min_component_ml`` post-processing, no re-tuning on this cohort).

Run: ``python benchmarks/domain_shift.py [--studies 200] [--seed 2026] [--work DIR] [--out DIR]
[--quick] [--workers N] [--bundles SEG CLS] [--eval-name NAME]`` (``--bundles``: other bundles
than the shipped ones, for example an ablation's; their evaluation goes to ``--work``/NAME). ``--work`` keeps the cohort, manifest and evaluation for reruns (the
cohort is reused when its ``cohort.json`` has the same seed and parameters); ``--out`` writes
``domain_shift.json`` and ``domain_shift.md`` (the table). ``--quick`` is a 24-study smoke run.
``--no-shift`` is the control: the same held-out patients rendered with the training image
formation (thickness 2.5-5 mm, no :class:`FormationShift`), to tell the shift's effect from the
cohort's.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLES = (REPO / "bundles" / "ich_ct_segmentation", REPO / "bundles" / "ich_ct_classification")
DEFAULT_STUDIES, QUICK_STUDIES, DEFAULT_SEED = 200, 24, 2026
SHIFT = {"soft_f_cut": 0.55, "dose_factor": 0.7, "tail_fraction": 0.12, "tail_mm": 1.6, "hu_offset": 4.0,
         "ssp_blur_mm": 1.3}
SHIFT_THICKNESS_MM = (2.0, 4.5)
N_BOOT, BOOT_SEED = 2000, 0

# goals on the point estimates: (metric key, comparison, bound)
GOALS: dict[str, tuple[str, float]] = {
    "specificity": (">=", 0.95),
    "false_blood_p95_ml": ("<=", 1.0),
    "auc_any": (">=", 0.95),
    "dice_with_blood": (">=", 0.65),
    "lesion_sensitivity": (">=", 0.6),
    "fp_per_scan": ("<=", 0.5),
}


def shifted_config(n_studies: int, seed: int, shifted: bool = True) -> Any:
    """The held-out cohort's :class:`~ichct.pipeline.synth.config.SynthConfig` (``shifted=False``: the control)."""
    from ichct.pipeline.synth.config import SynthConfig

    shift: dict[str, Any] = {"thickness_choices_mm": SHIFT_THICKNESS_MM, "formation": dict(SHIFT)} if shifted else {}
    return SynthConfig(n_patients=n_studies, seed=seed, matrix=128, slices=32, positive_fraction=0.5,
                       follow_up_fraction=0.0, **shift)


def ensure_cohort(config: Any, cohort_dir: Path, workers: int) -> bool:
    """Generate the cohort unless ``cohort_dir`` holds one of the same seed and parameters; True if generated."""
    from ichct.pipeline.synth import generate_cohort

    manifest = cohort_dir / "cohort.json"
    if manifest.is_file():
        generator = json.loads(manifest.read_text(encoding="utf-8")).get("generator", {})
        if generator.get("seed") == config.seed and generator.get("parameters") == json.loads(json.dumps(config.parameters())):
            return False
    generate_cohort(config, cohort_dir, workers=workers, overwrite=True)
    return True


def training_uids(bundles: tuple[Path, ...] = BUNDLES) -> set[str]:
    """Study and series UIDs the bundles were trained and validated on."""
    out: set[str] = set()
    for bundle in bundles:
        record = json.loads((bundle / "models" / "train_patients.json").read_text(encoding="utf-8"))
        for part in (record, record.get("validation", {})):
            out.update(part.get("study_uids", []))
            out.update(part.get("series_uids", []))
    return out


def check_held_out(cohort_dir: Path, bundles: tuple[Path, ...] = BUNDLES) -> None:
    """Refuse a cohort sharing a study or series UID with the bundles' training data."""
    studies = json.loads((cohort_dir / "cohort.json").read_text(encoding="utf-8"))["studies"]
    shared = training_uids(bundles) & {uid for s in studies for uid in (s["study_uid"], s["series_uid"])}
    if shared:
        raise SystemExit(f"{len(shared)} study/series UID(s) of the cohort are in the bundles' training data")


def run_evaluation(cohort_dir: Path, work: Path, workers: int | None, bundles: tuple[Path, ...] = BUNDLES,
                   eval_name: str = "evaluation") -> Path:
    """Build the all-test manifest and run ``ichct evaluate`` (reusing a finished evaluation of the same
    cohort and bundles)."""
    from ichct.pipeline.manifests.build import build_manifest

    eval_dir = work / eval_name
    stamp = eval_dir / "cohort.sha"
    expected = _stamp(cohort_dir, bundles)
    if (eval_dir / "metrics.json").is_file() and stamp.is_file() and stamp.read_text() == expected:
        return eval_dir
    manifest = work / "domain_shift.json"
    manifest_stamp, cohort_only = work / "manifest.sha", _stamp(cohort_dir, ())
    if not (manifest.is_file() and manifest_stamp.is_file() and manifest_stamp.read_text() == cohort_only):
        manifest.unlink(missing_ok=True)
        build_manifest("synth", cohort_dir, manifest, folds=2, test_fraction=1.0, seed=0, workers=1)
        manifest_stamp.write_text(cohort_only)
    shutil.rmtree(eval_dir, ignore_errors=True)
    command = [str(Path(sys.executable).with_name("ichct")), "evaluate", "--manifest", str(manifest), "--split", "test",
               "--out", str(eval_dir), "--bootstrap", str(N_BOOT), "--seed", "0", "-q"]
    for bundle in bundles:
        command += ["--bundle", str(bundle)]
    if workers:
        command += ["--workers", str(workers)]
    subprocess.run(command, check=True)
    stamp.write_text(expected)
    return eval_dir


def _stamp(cohort_dir: Path, bundles: tuple[Path, ...]) -> str:
    """Hash of the cohort's ``cohort.json`` and of each bundle's weights and configs."""
    import hashlib

    digest = hashlib.sha256((cohort_dir / "cohort.json").read_bytes())
    for bundle in bundles:
        for path in sorted([*bundle.glob("models/*.pt"), *bundle.glob("configs/*.json")]):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def bootstrap_percentile(values: np.ndarray, q: float, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> dict[str, float]:
    """Point estimate and 95 % percentile-bootstrap CI of the ``q``-th percentile of ``values``.

    Example
    -------
    >>> out = bootstrap_percentile(np.arange(101.0), 50, n_boot=200)
    >>> out["value"], out["ci_low"] < 50 < out["ci_high"]
    (50.0, True)
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    gen = np.random.default_rng(seed)
    draws = gen.integers(0, values.size, size=(n_boot, values.size))
    boot = np.percentile(values[draws], q, axis=1)
    return {"value": float(np.percentile(values, q)), "ci_low": float(np.percentile(boot, 2.5)),
            "ci_high": float(np.percentile(boot, 97.5))}


def negative_volumes(per_case_csv: Path) -> np.ndarray:
    """Predicted blood volume (mL) of every negative study in ``per_case.csv``."""
    with per_case_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([float(r["seg:any:vol_pred_ml"]) for r in rows if float(r["label:any"]) == 0.0])


def collect_metrics(metrics: dict[str, Any], negative_ml: np.ndarray) -> list[dict[str, Any]]:
    """Table rows ``{metric, key, value, ci_low, ci_high, goal}`` from ``metrics.json`` and the negatives' volumes."""
    runs = metrics["model"]["runs"]
    rows = []
    for kind in ("cls", "seg"):
        if kind not in runs:
            continue
        # the stored rule of each bundle, the segmenter's peak probability beside its volume, and
        # after both bundles the rule on both (fused: the classifier's consecutive and seg_peak averaged)
        names = [runs[kind]["rule"]["name"], *(["seg_peak", "fused"] if kind == "seg" else [])]
        for rule in (r for r in names if r in metrics["ct_level"]["any"]):
            ct = metrics["ct_level"]["any"][rule]
            rows.append({"metric": f"CT-level specificity ({rule})", "key": "specificity", "rule": rule,
                         **_ci(ct["specificity"])})
            rows.append({"metric": f"CT-level AUC(any) ({rule})", "key": "auc_any", "rule": rule,
                         **_ci(ct["roc_auc"])})
    rows.append({"metric": "false blood per negative, median (mL)", "key": "false_blood_median_ml",
                 **bootstrap_percentile(negative_ml, 50)})
    rows.append({"metric": "false blood per negative, 95th percentile (mL)", "key": "false_blood_p95_ml",
                 **bootstrap_percentile(negative_ml, 95)})
    seg = metrics["segmentation"]["any"]
    rows.append({"metric": "Dice on studies with blood", "key": "dice_with_blood", **_ci(seg["dice_positive"])})
    rows.append({"metric": "lesion sensitivity", "key": "lesion_sensitivity", **_ci(seg["lesion_sensitivity"])})
    rows.append({"metric": "false-positive lesions per scan", "key": "fp_per_scan", **_ci(seg["fp_per_scan"])})
    for row in rows:
        row["goal"] = judge(row["key"], row["value"])
    return rows


def _ci(entry: dict[str, Any]) -> dict[str, float]:
    return {k: float(entry[k]) if entry[k] is not None else math.nan for k in ("value", "ci_low", "ci_high")}


def judge(key: str, value: float) -> str | None:
    """``"PASS"`` / ``"FAIL"`` of a point estimate against its goal; None for a metric without one.

    Example
    -------
    >>> judge("specificity", 0.97), judge("false_blood_p95_ml", 2.5), judge("fp_per_scan", 3.0)
    ('PASS', 'FAIL', None)
    """
    if key not in GOALS:
        return None
    op, bound = GOALS[key]
    if not math.isfinite(value):
        return "FAIL"
    return "PASS" if (value >= bound if op == ">=" else value <= bound) else "FAIL"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The result table (metric, estimate, 95 % CI, goal, PASS/FAIL) as markdown."""
    lines = ["| metric | estimate | 95% CI | goal | result |", "|---|---:|---|---|---|"]
    for row in rows:
        goal = " ".join((GOALS[row["key"]][0], f"{GOALS[row['key']][1]:g}")) if row["key"] in GOALS else "-"
        lines.append(f"| {row['metric']} | {row['value']:.3f} | {row['ci_low']:.3f} - {row['ci_high']:.3f} | {goal} "
                     f"| {row['goal'] or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=None, help=f"held-out studies (default {DEFAULT_STUDIES})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"cohort seed (default {DEFAULT_SEED})")
    parser.add_argument("--work", type=Path, default=None, help="keep cohort, manifest and evaluation here")
    parser.add_argument("--out", type=Path, default=None, help="write domain_shift.json and domain_shift.md here")
    parser.add_argument("--quick", action="store_true", help=f"smoke run of {QUICK_STUDIES} studies")
    parser.add_argument("--workers", type=int, default=None, help="generator processes and evaluate --workers")
    parser.add_argument("--bundles", type=Path, nargs=2, metavar=("SEG", "CLS"), default=None,
                        help="the segmentation and classification bundles to score (default: the shipped ones)")
    parser.add_argument("--eval-name", default="evaluation", help="evaluation folder under --work (default evaluation)")
    parser.add_argument("--no-shift", action="store_true",
                        help="control: the same held-out patients rendered with the training image formation")
    args = parser.parse_args(argv)
    n_studies = args.studies or (QUICK_STUDIES if args.quick else DEFAULT_STUDIES)
    start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="ichct-domain-shift-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(n_studies, args.seed, work, args.workers, shifted=not args.no_shift,
                     bundles=tuple(args.bundles) if args.bundles else BUNDLES, eval_name=args.eval_name)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    table = markdown_table(result["rows"])
    setting = f"shift {SHIFT}, thickness {SHIFT_THICKNESS_MM} mm" if not args.no_shift else "no shift (control)"
    print(f"Held-out cohort: {n_studies} studies, seed {args.seed}, {setting}; {result['wall_s']} s\n")
    print(table)
    if args.out:
        write_outputs(args.out, "domain_shift", result, table)
    return 0


def write_outputs(out: Path, stem: str, result: Any, table: str) -> None:
    """``OUT/<stem>.json`` (the result) and ``OUT/<stem>.md`` (the table) of a benchmark run."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(table + "\n", encoding="utf-8")


def run(n_studies: int, seed: int, work: Path, workers: int | None, shifted: bool = True,
        bundles: tuple[Path, ...] = BUNDLES, eval_name: str = "evaluation") -> dict[str, Any]:
    """Generate (or reuse) the cohort, evaluate the bundles on it; everything the table needs."""
    config = shifted_config(n_studies, seed, shifted)
    cohort_dir = work / "cohort"
    generated = ensure_cohort(config, cohort_dir, workers or 1)
    check_held_out(cohort_dir, bundles)
    eval_dir = run_evaluation(cohort_dir, work, workers, bundles, eval_name)
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    negatives = negative_volumes(eval_dir / "per_case.csv")
    return {"n_studies": metrics["n_studies"], "n_negative": int(negatives.size), "seed": seed,
            "shift": config.parameters().get("formation"), "thickness_choices_mm": list(config.thickness_choices_mm),
            "cohort_generated": generated,
            "lesion_definition": metrics.get("lesion_definition"), "rows": collect_metrics(metrics, negatives)}


if __name__ == "__main__":
    sys.exit(main())
