"""Ablation of issue 23's remedies: which of domain randomisation and hard negatives moved which number.

Every arm trains both models the way ``bundles/build_bundles.sh`` does (``ichct train seg|cls
--fold 0 --seed 0 --max-minutes 5``, one after the other, on the default cohort's patients and
splits), packages them as bundles under ``--work``/ARM/bundles, and scores them twice with
``ichct evaluate --bundle SEG --bundle CLS``: on the default test split (15 studies, the demo's
goals: Dice on studies with blood >= 0.70, AUC(any) >= 0.95) and on the shifted-domain cohort of
``benchmarks/domain_shift.py`` (200 held-out studies, image formation never used in training).

Arms (same seeds, same budget; only the named remedy differs):

- ``render``: the 0.4.0 recipe, domain randomisation off;
- ``randomisation``: the training chain's domain randomisation on (:data:`RANDOMISATION`);
- ``hard_negatives``: randomisation off, trained on the default cohort's patients rendered with
  ``--hard-negative-fraction`` :data:`HARD_NEGATIVE_FRACTION` (same patients, IDs and splits: the
  hard-negative draws use their own random streams, so only the negatives' mimics change);
- ``both``: randomisation on and the hard-negative cohort;
- ``strong``: the hard-negative cohort and stronger randomisation (:data:`STRONG`);
- ``formation``: ``strong``, trained on the hard-negative cohort rendered with
  ``--formation-variety`` (each study its own kernel, dose, PSF tails, HU offset and slice
  profile, drawn short of the shifted cohort's settings; same patients, IDs and splits);
- ``background``: ``strong`` with the segmenter's patches drawn 1:1 around blood and elsewhere
  (``pos_neg_ratio`` 1 instead of 2);
- ``larger_cohort``: ``strong`` trained on 180 other patients (seed 7, half the negatives hard;
  fold 0 of their own 5-fold split), scored on the same default test split and shifted cohort.

The render arm's row against the 0.3.x bundles (the render before issue 22) is in docs/benchmarks.md.

Run: ``python benchmarks/domain_ablation.py --work DIR [--arms render randomisation ...]
[--minutes 5] [--out DIR]``. Finished arms (their ``result.json``) are reused; ``--out`` writes
``domain_ablation.json`` and ``domain_ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import domain_shift  # noqa: E402  (the benchmark next to this one)

MANIFEST = REPO / "data_manifests" / "synth_default.json"
HARD_NEGATIVE_FRACTION = 0.5
#: The training chain's domain randomisation of the randomised arms (config key ``domain``).
RANDOMISATION: dict[str, dict[str, Any]] = {
    "psf_tail": {"prob": 0.3, "fraction": [0.02, 0.12], "length_mm": [0.8, 2.0]},
    "hu_offset": {"prob": 0.5, "offset_hu": [-6.0, 6.0]},
    "noise": {"prob": 0.3, "std_hu": [2.0, 8.0], "texture_sigma": [0.0, 1.0]},
    "slice_thickness": {"prob": 0.25, "factor": [1.0, 2.0]},
    "blur": {"prob": 0.2, "sigma": [0.25, 1.0]},
    "sharpen": {"prob": 0.2, "alpha": [0.2, 1.0], "sigma": [0.5, 1.0]},
    "bias_field": {"prob": 0.15, "coeff": [-0.02, 0.02]},
    "contrast": {"prob": 0.2, "gamma": [0.8, 1.25]},
}
#: Stronger: every effect more often and wider (the ``strong`` arm).
STRONG: dict[str, dict[str, Any]] = {
    "psf_tail": {"prob": 0.5, "fraction": [0.02, 0.2], "length_mm": [0.8, 2.5]},
    "hu_offset": {"prob": 0.5, "offset_hu": [-8.0, 8.0]},
    "noise": {"prob": 0.5, "std_hu": [2.0, 10.0], "texture_sigma": [0.0, 1.0]},
    "slice_thickness": {"prob": 0.4, "factor": [1.0, 2.0]},
    "blur": {"prob": 0.25, "sigma": [0.25, 1.0]},
    "sharpen": {"prob": 0.4, "alpha": [0.2, 1.5], "sigma": [0.5, 1.0]},
    "bias_field": {"prob": 0.2, "coeff": [-0.02, 0.02]},
    "contrast": {"prob": 0.2, "gamma": [0.8, 1.25]},
}
OFF = {name: {"prob": 0.0} for name in RANDOMISATION}


@dataclass(frozen=True)
class Arm:
    """One arm: what it trains with (everything else as ``bundles/build_bundles.sh``)."""

    randomisation: str  # off, on or strong (:data:`DOMAIN`)
    hard_negatives: bool
    formation_variety: bool = False  # the training cohort rendered with ``ichct synth --formation-variety``
    seg: dict[str, Any] = field(default_factory=dict)  # the segmenter's training-config overrides
    patients: int | None = None  # another, larger training cohort (seed LARGER_SEED) instead of the default's patients


LARGER_SEED = 7
ARMS: dict[str, Arm] = {
    "render": Arm("off", False), "randomisation": Arm("on", False), "hard_negatives": Arm("off", True),
    "both": Arm("on", True), "strong": Arm("strong", True), "formation": Arm("strong", True, formation_variety=True),
    "background": Arm("strong", True, seg={"pos_neg_ratio": 1.0}), "larger_cohort": Arm("strong", True, patients=180),
}
DOMAIN = {"off": OFF, "on": RANDOMISATION, "strong": STRONG}
KINDS = {"seg": "ich_ct_segmentation", "cls": "ich_ct_classification"}


def ichct(*args: Any) -> None:
    """Run one ``ichct`` command of this environment (quiet), failing loudly."""
    subprocess.run([str(Path(sys.executable).with_name("ichct")), *map(str, args), "-q"], check=True)


def training_manifest(work: Path, arm: Arm) -> Path:
    """The default manifest, or the arm's training cohort (hard negatives, formation variety, more patients), generated once."""
    if not arm.hard_negatives and not arm.formation_variety and arm.patients is None:
        return MANIFEST
    from ichct.pipeline.synth.config import DEFAULT_COHORT, DEFAULT_MANIFEST_SPLIT

    c = DEFAULT_COHORT
    patients, seed = (c.n_patients, c.seed) if arm.patients is None else (arm.patients, LARGER_SEED)
    parts = (("hard", arm.hard_negatives), ("varied", arm.formation_variety), (f"{patients}p", arm.patients is not None))
    name = "_".join(part for part, on in parts if on)
    cohort, manifest = work / f"{name}_cohort", work / f"{name}_manifest.json"
    if not manifest.is_file():
        ichct("synth", cohort, "--patients", patients, "--seed", seed, "--matrix", c.matrix, "--slices", c.slices,
              "--hard-negative-fraction", HARD_NEGATIVE_FRACTION if arm.hard_negatives else 0.0,
              *(["--formation-variety"] if arm.formation_variety else []), "--overwrite")
        split = DEFAULT_MANIFEST_SPLIT
        ichct("manifest", "build", "--source", "synth", "--root", cohort, "--out", manifest, "--folds", split["folds"],
              "--test-fraction", split["test_fraction"], "--seed", split["seed"])
    return manifest


def train_arm(arm_dir: Path, manifest: Path, arm: Arm, minutes: float) -> dict[str, Path]:
    """Train and package both models of one arm; the bundles' folders by kind."""
    bundles = {}
    for kind, name in KINDS.items():
        config = arm_dir / f"train_config_{kind}.json"
        overrides = {"domain": DOMAIN[arm.randomisation], **(arm.seg if kind == "seg" else {})}
        config.write_text(json.dumps(overrides, indent=2), encoding="utf-8")
        run, bundle = arm_dir / kind, arm_dir / "bundles" / name
        if not (run / "best.pt").is_file():
            shutil.rmtree(run, ignore_errors=True)
            ichct("train", kind, "--manifest", manifest, "--fold", 0, "--out", run, "--max-minutes", minutes,
                  "--seed", 0, "--config", config)
        ichct("bundle", "package", run, bundle, "--version", "0.0.0", "--force")
        bundles[kind] = bundle
    return bundles


def evaluate_test_split(arm_dir: Path, bundles: dict[str, Path]) -> Path:
    """``ichct evaluate`` of the arm's bundles on the default test split (reused when done)."""
    out = arm_dir / "eval_test"
    if not (out / "metrics.json").is_file():
        ichct("evaluate", "--bundle", bundles["seg"], "--bundle", bundles["cls"], "--manifest", MANIFEST,
              "--split", "test", "--out", out, "--bootstrap", domain_shift.N_BOOT, "--seed", 0)
    return out


def summarise(eval_dir: Path) -> dict[str, dict[str, float]]:
    """The benchmark's rows of one evaluation, keyed ``key`` (``key:rule`` for the CT-level rows)."""
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    rows = domain_shift.collect_metrics(metrics, domain_shift.negative_volumes(eval_dir / "per_case.csv"))
    return {r["key"] + (f":{r['rule']}" if r.get("rule") else ""): r for r in rows}


def run_arm(work: Path, arm: str, minutes: float, shift_work: Path) -> dict[str, Any]:
    """Train, package and score one arm (each step reused when done)."""
    arm_dir = work / arm
    arm_dir.mkdir(parents=True, exist_ok=True)
    spec = ARMS[arm]
    start = time.perf_counter()
    bundles = train_arm(arm_dir, training_manifest(work, spec), spec, minutes)
    domain_shift.run(domain_shift.DEFAULT_STUDIES, domain_shift.DEFAULT_SEED, shift_work, None,
                     bundles=(bundles["seg"], bundles["cls"]), eval_name=f"evaluation_{arm}")
    test_dir = evaluate_test_split(arm_dir, bundles)
    epochs = {kind: len((arm_dir / kind / "metrics.csv").read_text(encoding="utf-8").splitlines()) - 1 for kind in KINDS}
    result = {"arm": arm, "randomisation": spec.randomisation, "hard_negatives": spec.hard_negatives,
              "formation_variety": spec.formation_variety, "seg_overrides": spec.seg, "patients": spec.patients,
              "minutes": minutes, "epochs": epochs,
              "test_split": summarise(test_dir), "shifted": summarise(shift_work / f"evaluation_{arm}"),
              "wall_s": round(time.perf_counter() - start, 1)}
    (arm_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


COLUMNS = [("test_split", "dice_with_blood", "test Dice"), ("test_split", "auc_any:consecutive", "test AUC(any)"),
           ("shifted", "specificity:consecutive", "shifted spec. (cls)"),
           ("shifted", "specificity:seg_volume", "shifted spec. (seg)"),
           ("shifted", "auc_any:consecutive", "shifted AUC(any)"),
           ("shifted", "false_blood_p95_ml", "shifted p95 false blood (mL)"),
           ("shifted", "dice_with_blood", "shifted Dice"), ("shifted", "lesion_sensitivity", "shifted lesion sens."),
           ("shifted", "fp_per_scan", "shifted FP lesions/scan")]


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per arm, each metric with its 95 % CI."""
    lines = ["| arm (seg / cls epochs) | " + " | ".join(c[2] for c in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for r in results:
        cells = []
        for part, key, _ in COLUMNS:
            m = r[part].get(key)
            cells.append("-" if m is None else f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
        lines.append(f"| {r['arm']} ({r['epochs']['seg']} / {r['epochs']['cls']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="runs, bundles, cohorts and evaluations")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="write domain_ablation.json and .md here")
    args = parser.parse_args(argv)
    results = [run_arm(args.work, arm, args.minutes, args.work / "shifted") for arm in args.arms]
    table = markdown_table(results)
    print(table)
    if args.out:
        domain_shift.write_outputs(args.out, "domain_ablation", results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
