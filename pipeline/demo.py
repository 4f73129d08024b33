"""``ichct demo``: the main job, end to end, on the embedded synthetic data.

With nothing but the installed package, :func:`run_demo`

1. writes a synthetic head-CT cohort as real DICOM (:mod:`ichct.pipeline.synth`);
2. reads every study back through the ingest path a user's data takes (``ichct convert``) and
   checks that each voxel label map lies on the converted grid;
3. builds and checks a patient-level split manifest (no patient in two splits);
4. trains the 3D U-Net segmenter and the slice-sequence classifier on fold 0 (``ichct train``);
5. evaluates both on the held-out test patients (``ichct evaluate``: bootstrap CIs, report);
6. packages both models as MONAI bundles and verifies them (``ichct bundle package/verify``);
7. runs ``ichct predict`` with the two bundles on one held-out study;

and returns a summary that :func:`format_summary` prints: where each artefact is and a metrics
table. Each stage is the same public function a user calls from Python or the CLI.

The full demo uses the default cohort (the split of ``data_manifests/synth_default.json``) and a
training time budget per model; ``--quick`` uses a tiny cohort, tiny networks and one epoch, and
is what the test suite runs.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ichct.errors import InputError
from ichct.pipeline.bundle.docs import COMMITTED_INFERENCE
from ichct.pipeline.core.atomic import atomic_path
from ichct.pipeline.core.devices import torch_device
from ichct.pipeline.ingest import convert_series, folder_info
from ichct.pipeline.manifests import HashCache, build_manifest, check_manifests
from ichct.pipeline.models.config import DEFAULTS
from ichct.pipeline.synth.cohort import default_workers, generate_cohort
from ichct.pipeline.synth.config import SynthConfig, default_cohort

logger = logging.getLogger(__name__)

#: Tiny networks and sizes of ``--quick`` (seconds per model on a laptop CPU).
QUICK_SEG_CONFIG: dict[str, Any] = {
    "spacing_mm": [4.0, 4.0, 4.0], "patch": [32, 32, 8], "samples_per_volume": 2, "batch_size": 2,
    "network": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0}, "sw_batch_size": 4,
}
#: The full demo trains both models without the domain randomisation (every effect's probability 0),
#: which the committed bundles and ``ichct train`` use by default. It is there for scanners the training
#: data never showed, and the demo scores its models on the default cohort's own test split; in the
#: demo's minutes it costs about a fifth of the segmenter's epochs and about 0.02 of its Dice (six
#: full demos without it: Dice 0.678-0.735, mean 0.712; six with it: 0.677-0.709, mean 0.688;
#: docs/benchmarks.md#demo).
DEMO_TRAIN_CONFIG: dict[str, Any] = {"domain": {effect: {"prob": 0.0} for effect in DEFAULTS["seg"]["domain"]}}

QUICK_CLS_CONFIG: dict[str, Any] = {
    "in_plane": [32, 32], "batch_size": 2,
    "network": {"feature_dim": 16, "rnn_hidden": 8},
}


@dataclass
class DemoSettings:
    """What the demo generates and how long it trains.

    ``cohort`` is the synthetic cohort (default: :func:`default_cohort`, the cohort of the
    committed manifest). ``seg_minutes`` / ``cls_minutes`` are wall-clock training budgets: on a
    CPU with two or more threads both models start side by side with half the threads each, and
    the classifier takes over the segmenter's threads when its shorter budget ends
    (:func:`~ichct.pipeline.train.side_by_side.train_side_by_side`: more epochs in the same
    minutes than one model after the other). Otherwise (a GPU, one thread, ``side_by_side=False``)
    the models train one after the other with the budgets scaled to the same total time.
    ``epochs`` is the epoch cap; ``seg_config`` / ``cls_config`` training-config overrides
    (:data:`DEMO_TRAIN_CONFIG` by default: no domain randomisation); ``seed`` seeds both models'
    training; ``n_boot`` bootstrap resamples. ``inference`` holds the bundles' inference settings
    (those of the committed bundles: test-time mirroring and brain-referenced HU), which their
    evaluation and predict use.
    """

    cohort: SynthConfig = field(default_factory=default_cohort)
    folds: int = 5
    test_fraction: float = 0.2
    split_seed: int = 0
    seg_minutes: float | None = 6.5
    cls_minutes: float | None = 7.5
    side_by_side: bool = True
    epochs: int | None = None
    seg_config: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DEMO_TRAIN_CONFIG))
    cls_config: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DEMO_TRAIN_CONFIG))
    seed: int = 0
    n_boot: int = 2000
    inference: dict[str, Any] = field(default_factory=lambda: dict(COMMITTED_INFERENCE))
    convert_all: bool = False  # full demo: ingest-check the test studies only (the rest is trained on)

    @classmethod
    def quick(cls) -> "DemoSettings":
        cohort = SynthConfig(n_patients=8, seed=2026, matrix=64, slices=12, follow_up_fraction=0.0)
        return cls(cohort=cohort, folds=2, test_fraction=0.25, seg_minutes=None, cls_minutes=None, epochs=1,
                   seg_config=dict(QUICK_SEG_CONFIG), cls_config=dict(QUICK_CLS_CONFIG), n_boot=200,
                   convert_all=True)


def _ingest_check(out: Path, cohort: dict[str, Any], study_uids: set[str] | None) -> list[dict[str, Any]]:
    """Convert studies with the user's ingest path; the synthetic label maps must lie on that grid."""
    rows = []
    for study in cohort["studies"]:
        if study_uids is not None and study["study_uid"] not in study_uids:
            continue
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
    return rows


def train_models(manifest_path: Path, runs: dict[str, Path], settings: DemoSettings,
                 device: str, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Train both models of the demo on fold 0 (side by side on a multi-threaded CPU).

    Parameters
    ----------
    manifest_path
        The cohort's manifest.
    runs
        ``{"seg": run folder, "cls": run folder}`` (either may be left out).
    settings
        Time budgets, epochs, configs and whether to train side by side.
    device
        ``"cpu"`` or a CUDA device; side by side only on a CPU with at least 2 torch threads.
        One after the other, the budgets are scaled to take the same total time.
    progress
        Show one progress line per model on stderr while they train
        (:func:`~ichct.pipeline.train.progress.training_display`).

    Returns
    -------
    dict
        Kind -> the summary :func:`ichct.pipeline.train.engine.train` returned.
    """
    import torch

    from ichct.pipeline.train.engine import train
    from ichct.pipeline.train.progress import training_display
    from ichct.pipeline.train.side_by_side import train_side_by_side

    side_by_side = settings.side_by_side and device == "cpu" and torch.get_num_threads() >= 2
    minutes = {"seg": settings.seg_minutes, "cls": settings.cls_minutes}
    if not side_by_side and None not in minutes.values():  # one after the other in the same total time
        scale = max(minutes.values()) / sum(minutes.values())
        minutes = {kind: m * scale for kind, m in minutes.items()}
    configs = {"seg": settings.seg_config, "cls": settings.cls_config}
    jobs = {kind: {"kind": kind, "manifest": manifest_path, "fold": 0, "out_dir": run_dir, "epochs": settings.epochs,
                   "config": configs[kind], "device": device, "max_minutes": minutes[kind],
                   "seed": settings.seed}
            for kind, run_dir in runs.items()}
    with training_display(enabled=progress) as display:
        if side_by_side:
            return train_side_by_side(jobs, progress=display.report if display is not None else None)
        return {kind: train(**kwargs, progress=display.reporter(kind) if display is not None else None)
                for kind, kwargs in jobs.items()}


#: Marks a demo folder (written first, so that an interrupted demo is recognised too).
MARKER = ".ichct-demo"
#: What a demo writes into its folder (besides :data:`MARKER` and the transient ``.hash-cache-*``).
DEMO_ENTRIES = ("bundles", "evaluation", "manifest.json", "predict", "runs", "synthetic", "volumes")


def _is_demo_entry(name: str) -> bool:
    return name in DEMO_ENTRIES or name == MARKER or name.startswith(".hash-cache-")


def _holds_demo(out: Path) -> bool:
    """``out`` holds an ichct demo: its marker, or (a demo written before the marker) only demo
    entries with the synthetic cohort's own marker."""
    from ichct.pipeline.synth.cohort import MARKER as SYNTH_MARKER

    if (out / MARKER).is_file():
        return True
    return (out / "synthetic" / SYNTH_MARKER).is_file() and all(_is_demo_entry(p.name) for p in out.iterdir())


def prepare_demo_folder(out_dir: str | Path, overwrite: bool = False) -> Path | None:
    """Make ``out_dir`` ready for a demo before any work: new, empty, or (``overwrite``) a previous
    demo, which is emptied. Writes :data:`MARKER`.

    Returns the topmost folder created (None when ``out_dir`` existed). Raises
    :class:`~ichct.errors.InputError` naming the folder for a non-empty one that is not a demo, a
    demo without ``overwrite``, or a demo folder that holds other files too (nothing is removed
    then); ``NotADirectoryError`` for a file.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder; choose another --out")
    created = None
    if not out.exists():
        for p in (out, *out.parents):
            if p.exists():
                break
            created = p
    elif any(out.iterdir()):
        if not _holds_demo(out):
            raise InputError(f"{out}: exists, is not empty and holds no ichct demo; choose a new or empty --out")
        if not overwrite:
            raise InputError(f"{out}: holds a previous ichct demo; pass --overwrite to replace it, "
                             "or choose another --out")
        foreign = sorted(p.name for p in out.iterdir() if not _is_demo_entry(p.name))
        if foreign:
            raise InputError(f"{out}: holds an ichct demo and other files ({', '.join(foreign[:5])}); "
                             "not replaced: move them or choose another --out")
        _empty_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / MARKER) as tmp:
        tmp.write_text("ichct demo\n", encoding="utf-8")
    return created


def _empty_folder(out: Path) -> None:
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def run_demo(out_dir: str | Path, settings: DemoSettings | None = None, workers: int | None = None,
             device: str = "cpu", overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Run every stage of the pipeline on a synthetic cohort written under ``out_dir``.

    ``progress`` shows one progress line per model on stderr while they train.

    ``out_dir`` must be new or empty, or hold a previous demo and ``overwrite`` be set
    (:func:`prepare_demo_folder`, before any work). A demo that fails leaves nothing behind: the
    folder is removed when the demo created it, emptied otherwise.

    Returns a summary (paths of the artefacts, per-stage seconds, ingest rows, metrics).
    """
    torch_device(device)  # before anything is written
    out = Path(out_dir)
    created = prepare_demo_folder(out, overwrite=overwrite)
    try:
        return _run_stages(out, settings or DemoSettings(), workers, device, progress)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        elif out.is_dir():
            _empty_folder(out)
        raise


def _run_stages(out: Path, settings: DemoSettings, workers: int | None, device: str,
                progress: bool = False) -> dict[str, Any]:
    """The demo's stages, into the prepared folder ``out``."""
    from ichct.pipeline.evaluate.run import evaluate

    start = time.perf_counter()
    seconds: dict[str, float] = {}
    with _lap(seconds, "synth"):
        cohort = generate_cohort(settings.cohort, out / "synthetic", workers=workers or default_workers(),
                                 overwrite=True)
    with _lap(seconds, "ingest+manifest"):
        manifest_path = out / "manifest.json"
        manifest = _build_demo_manifest(out, manifest_path, settings)
        test_uids = {str(e.get("study_uid")) for e in manifest["test"]}
        rows = _ingest_check(out, cohort, None if settings.convert_all else test_uids)
    with _lap(seconds, "train seg+cls"):
        runs = {kind: out / "runs" / kind for kind in ("seg", "cls")}
        train_summaries = train_models(manifest_path, runs, settings, device, progress)
    # bundles first, so that the evaluation (and its numbers in each bundle's docs) is of the
    # bundles' own weights, as `bundles/build_bundles.sh` does for the committed bundles
    with _lap(seconds, "package"):
        bundles = _package_bundles(out, runs, settings.inference)
    with _lap(seconds, "evaluate"):
        eval_dir = out / "evaluation"
        eval_summary = evaluate([], manifest_path, eval_dir, n_boot=settings.n_boot, device=device,
                                bundles=[bundles["seg"], bundles["cls"]])
    with _lap(seconds, "bundle verify"):
        verified = _package_and_verify(runs, bundles, eval_dir, settings.inference)
    with _lap(seconds, "predict"):
        predicted = _predict_held_out(out, manifest_path, manifest, bundles, device)
    return {
        "out_dir": str(out),
        "manifest": str(manifest_path),
        "manifest_counts": _manifest_counts(manifest),
        "cohort": str(out / "synthetic" / "cohort.json"),
        "volumes": str(out / "volumes"),
        "runs": {k: str(v) for k, v in runs.items()},
        "train": {k: {"epochs": s["epochs"], "best_metric": s["best_metric"], "best_epoch": s["best_epoch"],
                      "best_window": s.get("best_window", 1)}
                  for k, s in train_summaries.items()},
        "evaluation": str(eval_dir),
        "bundles": {k: str(v) for k, v in bundles.items()},
        "bundle_checks": verified,
        "predict": predicted,
        "evaluation_files": eval_summary["files"],
        "metrics": _headline_metrics(eval_dir / "metrics.json"),
        "n_patients": settings.cohort.n_patients,
        "n_studies": len(cohort["studies"]),
        "seconds": seconds,
        "synth_seconds": seconds["synth"],
        "total_seconds": round(time.perf_counter() - start, 1),
        "studies": rows,
    }


@contextmanager
def _lap(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the ``with`` block took as ``seconds[name]`` (when it ends without an error)."""
    t0 = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - t0, 1)


def _build_demo_manifest(out: Path, manifest_path: Path, settings: DemoSettings) -> dict[str, Any]:
    """Build the cohort's split manifest and check it; the manifest."""
    # a pixel-hash cache for these two steps (removed after them, so nothing is left in the demo
    # folder): the check reuses the build's hashes of every series instead of decoding them again
    with tempfile.TemporaryDirectory(prefix=".hash-cache-", dir=out) as cache_dir:
        hash_cache = HashCache(cache_dir)
        try:
            manifest = build_manifest("synth", out / "synthetic", manifest_path, folds=settings.folds,
                                      test_fraction=settings.test_fraction, seed=settings.split_seed,
                                      name="demo", cache=hash_cache)
            report = check_manifests([manifest_path], cache=hash_cache)
        finally:
            hash_cache.close()
    if not report.ok:
        raise RuntimeError("demo manifest failed its checks: " + "; ".join(report.problems))
    return manifest


def _package_bundles(out: Path, runs: dict[str, Path], inference: dict[str, Any]) -> dict[str, Path]:
    """Package each run as a MONAI bundle under ``out/bundles``; kind -> bundle folder."""
    from ichct.pipeline.bundle.package import default_bundle_name, package_bundle

    bundles = {kind: out / "bundles" / default_bundle_name(kind) for kind in runs}
    for kind, run_dir in runs.items():
        package_bundle(run_dir, bundles[kind], force=True, inference=inference)
    return bundles


def _package_and_verify(runs: dict[str, Path], bundles: dict[str, Path], eval_dir: Path,
                        inference: dict[str, Any]) -> dict[str, int]:
    """Package the bundles again with the evaluation in their docs and verify them; kind -> checks passed."""
    from ichct.pipeline.bundle.package import package_bundle
    from ichct.pipeline.bundle.verify import format_table, verify_bundle

    verified = {}
    for kind, run_dir in runs.items():
        package_bundle(run_dir, bundles[kind], force=True, evaluation=eval_dir, inference=inference)
        results = verify_bundle(bundles[kind])
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"bundle {bundles[kind]} failed verification:\n{format_table(results)}")
        verified[kind] = len(results)
    return verified


def _predict_held_out(out: Path, manifest_path: Path, manifest: dict[str, Any], bundles: dict[str, Path],
                      device: str) -> dict[str, Any]:
    """``ichct predict`` with the bundles on one held-out study; the summary's ``predict`` entry."""
    from ichct.pipeline.bundle.package import load_bundle
    from ichct.pipeline.predict.run import predict

    # a held-out study with blood when there is one, so the overlays show a mask
    study = next((e for e in manifest["test"] if e["ct_labels"].get("any") == 1), manifest["test"][0])
    study_path = Path(study["image"])
    if not study_path.is_absolute():
        study_path = (manifest_path.parent / study_path).resolve()
    models = {kind: load_bundle(path, device=device) for kind, path in bundles.items()}
    predict_dir = out / "predict" / study["study_uid"][-10:]
    report = predict(study_path, predict_dir, models, overwrite=True)
    return {"dir": str(predict_dir), "study": study["study_uid"][-10:],
            "truth_any": int(study["ct_labels"]["any"]), "call_any": _call_any(report)}


def _manifest_counts(manifest: dict[str, Any]) -> dict[str, int]:
    """Patients, training and test studies and folds of the demo's manifest."""
    return {
        "patients": len({e["patient_key"] for e in manifest["training"] + manifest["test"]}),
        "training": len(manifest["training"]),
        "test": len(manifest["test"]),
        "folds": manifest["num_folds"],
    }


def _call_any(report: dict[str, Any]) -> Any:
    """The CT-level call for "any" blood in a predict report (``None`` when absent)."""
    subtypes = report.get("subtypes") or report.get("findings") or {}
    entry = subtypes.get("any") if isinstance(subtypes, dict) else None
    return None if entry is None else entry.get("call")


def _headline_metrics(metrics_json: Path) -> list[dict[str, Any]]:
    """Rows (metric, value, 95% CI) of the evaluation's main numbers for the summary table."""
    import json

    doc = json.loads(metrics_json.read_text(encoding="utf-8"))
    rows: list[dict[str, Any]] = []

    def add(label: str, m: dict[str, Any] | None) -> None:
        if m and m.get("value") is not None:
            rows.append({"metric": label, "value": m["value"], "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high")})

    ct_any = (doc.get("ct_level") or {}).get("any") or {}
    for rule in ("consecutive", "seg_volume", "fused"):
        r = ct_any.get(rule) or {}
        for name in ("roc_auc", "sensitivity", "specificity"):
            add(f"any / {rule} / {name}", r.get(name))
    seg_any = (doc.get("segmentation") or {}).get("any") or {}
    for name in ("dice_positive", "dice", "hd95_mm", "fp_per_scan", "abs_volume_error_ml"):
        add(f"segmentation any / {name}", seg_any.get(name))
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return str(v)


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text account of what the demo did and where each artefact is."""
    keys = ["study", "series_found", "series_read", "shape", "spacing_mm", "tilt_deg", "syntax", "blood_ml", "subtypes"]
    rows = [[str(r[k]) for k in keys] for r in summary["studies"]]
    widths = [max(len(k), *(len(r[i]) for r in rows)) if rows else len(k) for i, k in enumerate(keys)]
    lines = [
        f"ichct demo: {summary['n_patients']} synthetic patients, {summary['n_studies']} studies "
        f"(generated in {summary['synth_seconds']} s, total {summary['total_seconds']} s)",
        "stage seconds: " + ", ".join(f"{k} {v}" for k, v in summary["seconds"].items()),
        "",
        f"ingest check ({len(rows)} studies read back through `ichct convert`):",
        "  ".join(k.ljust(w) for k, w in zip(keys, widths)),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    if summary.get("metrics"):
        lines += ["", f"held-out evaluation ({summary['manifest_counts']['test']} test studies, patient-level bootstrap 95% CI):"]
        mw = max(len(m["metric"]) for m in summary["metrics"])
        for m in summary["metrics"]:
            lines.append(f"  {m['metric'].ljust(mw)}  {_fmt(m['value'])}  [{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]")
    lines += [
        "",
        "artefacts:",
        f"  cohort (DICOM, labels, cohort.json, slice_labels.csv): {Path(summary['cohort']).parent}",
        f"  converted HU volumes + sidecars: {summary['volumes']}",
        "  split manifest (checked: no patient in two splits): {manifest} "
        "({training} training studies in {folds} folds, {test} test studies, {patients} patients)".format(
            manifest=summary["manifest"], **summary["manifest_counts"]),
    ]
    for kind, path in (summary.get("runs") or {}).items():
        t = summary["train"][kind]
        mean = f" (mean of the last {t['best_window']} validations)" if t.get("best_window", 1) > 1 else ""
        lines.append(f"  {kind} training run: {path} ({t['epochs']} epochs, best validation {_fmt(t['best_metric'])}{mean} "
                     f"at epoch {t['best_epoch']})")
    if summary.get("evaluation"):
        lines.append(f"  evaluation (metrics.json, report.md, per_case.csv, plots): {summary['evaluation']}")
    for kind, path in (summary.get("bundles") or {}).items():
        lines.append(f"  {kind} MONAI bundle (verified, {summary['bundle_checks'][kind]} checks passed): {path}")
    if summary.get("predict"):
        pr = summary["predict"]
        lines.append(f"  ichct predict on held-out study ...{pr['study']} (mask.nii.gz, seg.dcm, report.json, overlays/): "
                     f"{pr['dir']}  [call any={pr['call_any']}, truth any={pr['truth_any']}]")
    return "\n".join(lines)


__all__ = ["DemoSettings", "run_demo", "prepare_demo_folder", "format_summary", "train_models", "QUICK_SEG_CONFIG",
           "QUICK_CLS_CONFIG"]

