"""``ichct demo``: the main job on the embedded default data.

With nothing but the installed package it writes a small synthetic head-CT cohort as real DICOM
(:mod:`ichct.pipeline.synth`), reads every study back through the same ingest path a user's data
takes (``ichct info`` / ``ichct convert``), checks that each voxel label map lies on the converted
grid, builds and checks a patient-level split manifest, and prints what was read. Later stages
(training, evaluation, bundles, predict) join the demo as they are built.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ichct.pipeline.ingest import convert_series, folder_info
from ichct.pipeline.manifests import build_manifest, check_manifests
from ichct.pipeline.synth.cohort import default_workers, generate_cohort
from ichct.pipeline.synth.config import SynthConfig

logger = logging.getLogger(__name__)


@dataclass
class DemoSettings:
    """Sizes of the demo cohort; ``quick`` is what the test suite runs."""

    n_patients: int = 6
    matrix: int = 128
    slices: int = 24
    seed: int = 2026

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(n_patients=3, matrix=96, slices=16)


def run_demo(out_dir: str | Path, settings: DemoSettings | None = None, workers: int | None = None) -> dict[str, Any]:
    """Generate the synthetic cohort under ``out_dir`` and ingest every study.

    Returns a summary with one row per study (series read, shape, spacing, tilt, blood volume)
    and the paths of the artefacts.
    """
    settings = settings or DemoSettings()
    out = Path(out_dir)
    start = time.perf_counter()
    config = SynthConfig(n_patients=settings.n_patients, seed=settings.seed, matrix=settings.matrix, slices=settings.slices)
    cohort = generate_cohort(config, out / "synthetic", workers=workers or default_workers(), overwrite=True)
    synth_seconds = time.perf_counter() - start
    rows = []
    for study in cohort["studies"]:
        study_dir = out / "synthetic" / Path(study["series_dir"]).parent
        info = folder_info(study_dir)
        target = out / "volumes" / f"{study['study_uid']}.nii.gz"
        volume = convert_series(study_dir, target)
        label = nib.load(out / "synthetic" / study["label"])
        aligned = label.shape == volume.hu_volume.shape and np.allclose(label.affine, volume.affine_ras, atol=1e-3)
        if not aligned:
            raise RuntimeError(f"label map {study['label']} is not on the converted grid of {study_dir}")
        rows.append({
            "study": study["study_uid"][-10:],
            "series_found": len(info["series"]),
            "series_read": volume.info["series_description"] or volume.series_uid[-10:],
            "shape": "x".join(map(str, volume.hu_volume.shape)),
            "spacing_mm": "x".join(f"{s:.2f}" for s in volume.spacing_mm),
            "tilt_deg": round(volume.info["tilt"]["angle_deg"], 1),
            "syntax": volume.info["transfer_syntax_short"],
            "blood_ml": round(float(study["volumes_ml"]["any"]), 2),
            "subtypes": ",".join(k for k, v in study["ct_labels"].items() if v and k != "any") or "-",
        })
    manifest_path = out / "manifest.json"
    manifest = build_manifest("synth", out / "synthetic", manifest_path, folds=2, test_fraction=0.25,
                              seed=settings.seed, name="demo", cache=False)
    report = check_manifests([manifest_path], cache=False)
    if not report.ok:
        raise RuntimeError("demo manifest failed its checks: " + "; ".join(report.problems))
    return {
        "out_dir": str(out),
        "manifest": str(manifest_path),
        "manifest_counts": {
            "patients": len({e["patient_key"] for e in manifest["training"] + manifest["test"]}),
            "training": len(manifest["training"]),
            "test": len(manifest["test"]),
            "folds": manifest["num_folds"],
        },
        "cohort": str(out / "synthetic" / "cohort.json"),
        "volumes": str(out / "volumes"),
        "n_patients": settings.n_patients,
        "n_studies": len(rows),
        "synth_seconds": round(synth_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "studies": rows,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of what the demo read."""
    keys = ["study", "series_found", "series_read", "shape", "spacing_mm", "tilt_deg", "syntax", "blood_ml", "subtypes"]
    rows = [[str(r[k]) for k in keys] for r in summary["studies"]]
    widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
    lines = [
        f"ichct demo: {summary['n_patients']} synthetic patients, {summary['n_studies']} studies "
        f"(generated in {summary['synth_seconds']} s, total {summary['total_seconds']} s)",
        "  ".join(k.ljust(w) for k, w in zip(keys, widths)),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines += [
        f"cohort (DICOM, labels, cohort.json, slice_labels.csv): {Path(summary['cohort']).parent}",
        f"converted HU volumes + sidecars: {summary['volumes']}",
        "split manifest (checked: no patient in two splits): {manifest} "
        "({training} training studies in {folds} folds, {test} test studies, {patients} patients)".format(
            manifest=summary["manifest"], **summary["manifest_counts"]),
    ]
    return "\n".join(lines)
