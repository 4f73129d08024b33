"""nnU-Net v2 ``3d_fullres`` against ichct's segmenter: same fold, same wall-clock budget, same machine.

Both train on ``data_manifests/synth_default.json`` fold 0 (nnU-Net through
``ichct manifest export-nnunet``, with the manifest's folds as ``splits_final.json``), each for the
same wall-clock budget (``--budgets``, minutes) on the same cores (``--threads``, default 2: every
process of a step is pinned to that many cores, and torch/OpenMP, nnU-Net's augmentation workers
and its export pool get that many threads). Then both segment an *independent* synthetic cohort
(the default cohort's settings with seed 1; its patients numbered after the default cohort's so
that no ``patient_key`` is shared; at least 100 studies by default; checked against the training
manifest for leaks) and are scored by ``ichct evaluate`` on it: Dice on studies with blood (95%
patient-bootstrap CI), HD95, false-positive components per scan, absolute volume error; plus
inference seconds per study and peak memory (the PSS of a step's whole process tree, sampled every
0.2 s).

What each side gets:

* nnU-Net: ``nnUNetv2_plan_and_preprocess -c 3d_fullres --verify_dataset_integrity`` (timed and
  reported apart, not part of the budget), then nnU-Net's default trainer stopped by wall clock
  (``benchmarks/nnunet_trainers/nnUNetTrainer_WallClock.py``: the recipe unchanged, its
  1000-epoch schedule cut off when the budget is spent; the clock starts after nnU-Net's start-up,
  as ichct's starts after caching); prediction with ``checkpoint_final.pth``, test-time mirroring
  as ``--mirroring`` says (nnU-Net's default is on; ``auto``: on with CUDA, off on the CPU, where
  its 8 passes per window make prediction about 8 times slower). ``--nnunet-validation on`` also
  runs nnU-Net's validation of the fold (timed apart; its predictions cannot set thresholds for
  another cohort, so the default skips it).
* ichct: ``ichct train seg --max-minutes`` (its Python function; default recipe, the learning rate
  anneals to the budget, which is checked after each epoch), ``best.pt``, no test-time augmentation.

Inference seconds per study: nnU-Net from the exported NIfTI (``nnUNetPredictor``, one process,
all studies); ichct from the DICOM folder (``predict_study``, reading and preprocessing included;
the first ``--timing-studies`` studies). Both are scored by ``ichct evaluate``: ichct's run with
``--run``, nnU-Net's predictions with ``--predictions DIR --map ichct_case_map.json --trained-on
MANIFEST`` (no thresholds for nnU-Net: the table's metrics need none).

Run: ``python benchmarks/nnunet_side_by_side.py --budgets 5,30 [--device cuda] [--work DIR]``.
A tiny end-to-end check: ``--budgets 0.5 --eval-patients 8 --min-eval-studies 1 --timing-studies 3
--bootstrap 50``. Writes ``WORK/results.json`` and ``WORK/logs/``, prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MANIFEST = REPO / "data_manifests" / "synth_default.json"
FOLD = 0
#: nnU-Net's training dataset per ``--labels``: (id, name); the evaluation cohort's dataset.
DATASETS = {"binary": (990, "ICHBIN"), "subtypes": (992, "ICH")}
EVAL_DATASET_ID, EVAL_NAME = 991, "ICHEVAL"
EVAL_DATASET = f"Dataset{EVAL_DATASET_ID}_{EVAL_NAME}"
TRAINER = "nnUNetTrainer_WallClock"
TRAINER_DIR = HERE / "nnunet_trainers"
CONFIGURATION = "3d_fullres"
EVAL_SEED = 1  # the default cohort's seed is 0


# ---------------------------------------------------------------------------------------------
# running a step: pinned cores, measured wall time and peak memory
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    """One measured step: wall seconds and peak memory (MiB, PSS) of its process tree."""

    name: str
    wall_s: float
    peak_mb: float
    result: dict[str, Any] = dataclasses.field(default_factory=dict)


class Runner:
    """Runs the benchmark's steps as child processes pinned to ``threads`` cores, with their environment."""

    def __init__(self, work: Path, threads: int, device: str, labels: str) -> None:
        self.work, self.threads, self.device, self.labels = work, threads, device, labels
        self.dataset_id, name = DATASETS[labels]
        self.dataset = f"Dataset{self.dataset_id}_{name}"
        self.cores = set(sorted(os.sched_getaffinity(0))[:threads])
        os.sched_setaffinity(0, self.cores)  # this process and every step it starts (children inherit it)
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = self._environment()

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        n = str(self.threads)
        env.update({"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
                    "nnUNet_n_proc_DA": n, "nnUNet_def_n_proc": n, "nnUNet_compile": "f",
                    "nnUNet_raw": str(self.work / "nnUNet_raw"),
                    "nnUNet_preprocessed": str(self.work / "nnUNet_preprocessed"),
                    "nnUNet_results": str(self.work / "nnUNet_results"),
                    "ICHCT_BENCH_DATASET": self.dataset, "MPLBACKEND": "Agg"})
        return env

    def run(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> Step:
        """Run ``cmd`` to the end; its output goes to ``WORK/logs/<name>.log``; a failure raises with the log's tail."""
        log = self.logs / f"{name}.log"
        result_file = self.logs / f"{name}.result.json"
        result_file.unlink(missing_ok=True)  # a previous run's
        env = {**self.env, **(extra_env or {}), "ICHCT_BENCH_RESULT": str(result_file)}
        t0 = time.perf_counter()
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            peak = _watch_peak_memory(proc)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"step {name} failed (exit {proc.returncode}); {log}:\n{tail}")
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        print(f"  {name}: {wall:.0f} s, peak {peak:.0f} MiB", file=sys.stderr)
        return Step(name, wall, peak, result)

    def worker(self, name: str, action: str, *args: str, extra_env: dict[str, str] | None = None) -> Step:
        """Run one of this script's own worker actions (``--worker ACTION ARGS``) as a measured step."""
        return self.run(name, [sys.executable, str(Path(__file__).resolve()), "--worker", action, *args], extra_env)


def _watch_peak_memory(proc: subprocess.Popen) -> float:
    """Wait for ``proc``; the peak memory (MiB) of it and its descendants together, sampled every 0.2 s.

    Each process counts with its proportional set size (PSS: pages shared with the others, such as
    the libraries of nnU-Net's forked augmentation workers, are split between them, not counted
    once per process), or its RSS where PSS cannot be read."""
    try:
        import psutil
    except ImportError:  # the largest single process instead
        import resource

        proc.wait()
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    root, peak = psutil.Process(proc.pid), 0.0
    while proc.poll() is None:
        try:
            members = [root] + root.children(recursive=True)
            peak = max(peak, sum(_memory(p) for p in members) / 2**20)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    return peak


def _memory(process) -> int:
    try:
        return process.memory_full_info().pss
    except Exception:  # noqa: BLE001 - no PSS here, or a process that just ended
        try:
            return process.memory_info().rss
        except Exception:  # noqa: BLE001
            return 0


def ichct(*args: str) -> list[str]:
    return [sys.executable, "-m", "ichct", *map(str, args)]


def write_result(obj: dict[str, Any]) -> None:
    """A worker's result for the parent (``$ICHCT_BENCH_RESULT``)."""
    Path(os.environ["ICHCT_BENCH_RESULT"]).write_text(json.dumps(obj), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# data: the training manifest, the independent evaluation cohort, the nnU-Net datasets
# ---------------------------------------------------------------------------------------------


def ensure_default_cohort() -> None:
    """Generate the default cohort into data/synth_default when missing (as benchmarks/train.py does)."""
    spec = importlib.util.spec_from_file_location("ichct_train_bench", HERE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ensure_data()


def make_eval_manifest(work: Path, extra_patients: int, min_studies: int, workers: int) -> Path:
    """An independent cohort (seed :data:`EVAL_SEED`), all test, without the default cohort's patient keys.

    The cohort is generated with ``60 + extra_patients`` patients and the first 60 are left out:
    the cohort the documented numbers were measured on (then ``ichct synth`` numbered patients
    SYN0001 ... whatever the seed, so patients 1-60 shared the training manifest's
    ``patient_key``s; identifiers now carry the seed, and the patient-key filter is a no-op kept as a check).
    """
    from ichct.pipeline.manifests import build_manifest, check_documents, read_manifest
    from ichct.pipeline.synth import DEFAULT_COHORT, generate_cohort

    target = work / "eval_manifest.json"
    if target.exists():
        return target
    cfg = dataclasses.replace(DEFAULT_COHORT, seed=EVAL_SEED, n_patients=DEFAULT_COHORT.n_patients + extra_patients)
    generate_cohort(cfg, work / "eval_cohort", workers=workers, overwrite=True)
    full = work / "eval_cohort_all.json"
    build_manifest("synth", work / "eval_cohort", full, folds=2, test_fraction=1.0, seed=0, name="eval_all")
    data = json.loads(full.read_text())
    train_data = json.loads(MANIFEST.read_text())
    used = {e["patient_key"] for e in train_data["training"] + train_data["test"]}
    data["test"] = [e for e in data["test"] if e["patient_key"] not in used]
    data.update(name="nnunet_bench_eval", numTest=len(data["test"]),
                description=f"independent synthetic cohort (seed {EVAL_SEED}, patients after the default cohort's)")
    if len(data["test"]) < min_studies:
        raise SystemExit(f"the evaluation cohort has {len(data['test'])} studies, fewer than --min-eval-studies "
                         f"{min_studies}: raise --eval-patients")
    tmp = target.with_suffix(".partial")
    tmp.write_text(json.dumps(data, indent=2))
    report = check_documents([read_manifest(MANIFEST), read_manifest(tmp)], workers=workers)
    if not report.ok:
        raise SystemExit("the evaluation cohort leaks into the training manifest:\n" + "\n".join(report.problems))
    os.replace(tmp, target)
    return target


def training_manifest(work: Path, labels: str) -> Path:
    """The manifest nnU-Net's training dataset is exported from: the committed one (``subtypes``), or
    (``binary``, the task of ichct's default segmenter) a copy whose label maps count as binary
    (absolute paths, ``label_values: binary``: the export writes 0/1)."""
    from ichct.pipeline.manifests import read_manifest

    if labels == "subtypes":
        return MANIFEST
    doc = read_manifest(MANIFEST)
    data = json.loads(json.dumps(doc.data))
    for e in data["training"] + data["test"]:
        e.update(image=str(doc.resolve(e["image"])), label=str(doc.resolve(e["label"])), label_values="binary")
    data["name"] = "synth_default_binary"
    target = work / "train_binary.json"
    target.write_text(json.dumps(data, indent=2))
    return target


def export_and_plan(runner: Runner, eval_manifest: Path) -> dict[str, Step]:
    """Both nnU-Net datasets (``ichct manifest export-nnunet``), nnU-Net's planning and preprocessing,
    and the manifest's folds copied where nnU-Net reads them."""
    raw = runner.work / "nnUNet_raw"
    steps: dict[str, Step] = {}
    if not (raw / runner.dataset).exists():
        steps["export_train"] = runner.run("export_train", ichct(
            "manifest", "export-nnunet", training_manifest(runner.work, runner.labels), raw,
            "--dataset-id", runner.dataset_id, "--name", runner.dataset.split("_", 1)[1], "-q"))
    if not (raw / EVAL_DATASET).exists():
        steps["export_eval"] = runner.run("export_eval", ichct("manifest", "export-nnunet", eval_manifest, raw,
                                                               "--dataset-id", EVAL_DATASET_ID, "--name", EVAL_NAME, "-q"))
    preprocessed = runner.work / "nnUNet_preprocessed" / runner.dataset
    if not (preprocessed / "nnUNetPlans.json").exists():
        steps["nnunet_plan"] = runner.run("nnunet_plan", [
            str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", str(runner.dataset_id), "-c",
            CONFIGURATION, "-np", str(runner.threads), "-npfp", str(runner.threads), "--verify_dataset_integrity"])
    shutil.copyfile(raw / runner.dataset / "splits_final.json", preprocessed / "splits_final.json")
    return steps


# ---------------------------------------------------------------------------------------------
# workers (child processes)
# ---------------------------------------------------------------------------------------------


def wallclock_trainer(fold: int, device: str):
    """The wall-clock trainer of the fold of ``$ICHCT_BENCH_DATASET``, built from its file.

    Not through nnU-Net's trainer search (``nnUNetv2_train -tr``, ``$nnUNet_extTrainer``): that
    imports every trainer module of nnU-Net first, some of which need a torchvision matching torch.
    """
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    spec = importlib.util.spec_from_file_location(TRAINER, TRAINER_DIR / f"{TRAINER}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / os.environ["ICHCT_BENCH_DATASET"]
    plans = load_json(str(preprocessed / "nnUNetPlans.json"))
    plans["continue_training"] = False  # what nnUNetv2_train's get_trainer_from_args adds
    return getattr(module, TRAINER)(plans=plans, configuration=CONFIGURATION, fold=fold,
                                    dataset_json=load_json(str(preprocessed / "dataset.json")), device=torch.device(device))


def worker_nnunet_train(fold: str, device: str, threads: str, validation: str) -> None:
    """nnU-Net's training of the fold with the wall-clock trainer, then (``validation`` "on") its
    validation of the fold, timed apart."""
    import torch

    torch.set_num_threads(int(threads))
    trainer = wallclock_trainer(int(fold), device)
    t0 = time.perf_counter()
    trainer.run_training()
    t1 = time.perf_counter()
    if validation == "on":
        trainer.perform_actual_validation(False)
    t2 = time.perf_counter()
    write_result({"train_s": t1 - trainer.clock_start, "startup_s": trainer.clock_start - t0,
                  "validation_s": t2 - t1 if validation == "on" else None,
                  "epochs_completed": int(trainer.current_epoch),
                  "stopped_in_epoch": trainer.stopped_in_epoch, "iterations_done": int(trainer.iterations_done),
                  "iterations_per_epoch": int(trainer.num_iterations_per_epoch),
                  "planned_epochs": int(trainer.num_epochs), "output": str(trainer.output_folder)})


def worker_nnunet_predict(images: str, out: str, device: str, threads: str, mirroring: str) -> None:
    """Predict every image of ``images`` with fold :data:`FOLD`'s ``checkpoint_final.pth``, sequentially
    (the predictor set up as nnU-Net's own fold validation sets it up)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(int(threads))
    trainer = wallclock_trainer(FOLD, device)
    trainer.initialize()
    trainer.load_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring == "on",
                                perform_everything_on_device=device != "cpu", device=torch.device(device),
                                allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                    [trainer.network.state_dict()], trainer.dataset_json, TRAINER,
                                    trainer.inference_allowed_mirroring_axes)
    n = len([p for p in Path(images).iterdir() if p.name.endswith("_0000.nii.gz")])
    Path(out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    predictor.predict_from_files_sequential(images, out, save_probabilities=False, overwrite=True)
    seconds = time.perf_counter() - t0
    write_result({"n_studies": n, "seconds": seconds, "s_per_study": seconds / max(1, n),
                  "mirroring_axes": list(trainer.inference_allowed_mirroring_axes or []) if mirroring == "on" else []})


def worker_ichct_train(run: str, minutes: str, device: str, threads: str) -> None:
    """``ichct train seg --manifest MANIFEST --fold FOLD --out RUN --max-minutes M`` (its Python function)."""
    import torch

    from ichct.pipeline.train import train

    torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    summary = train("seg", MANIFEST, FOLD, run, device=device, max_minutes=float(minutes), seed=0)
    write_result({**summary, "wall_s": time.perf_counter() - t0})


def worker_ichct_infer(run: str, manifest: str, n_studies: str, device: str, threads: str) -> None:
    """ichct's segmenter on the first ``n_studies`` test studies, from DICOM: seconds per study."""
    import torch

    from ichct.pipeline.manifests import load_manifest
    from ichct.pipeline.models.inference import load_run, predict_study

    torch.set_num_threads(int(threads))
    model = load_run(run, device=device, checkpoint="best")
    entries = load_manifest(manifest, "test", check=False)[: int(n_studies)]
    seconds = []
    for entry in entries:
        t0 = time.perf_counter()
        predict_study({"seg": model}, entry["image"])
        seconds.append(time.perf_counter() - t0)
    write_result({"n_studies": len(seconds), "seconds": sum(seconds), "s_per_study": sum(seconds) / max(1, len(seconds))})


WORKERS = {"nnunet-train": worker_nnunet_train, "nnunet-predict": worker_nnunet_predict,
           "ichct-train": worker_ichct_train, "ichct-infer": worker_ichct_infer}


# ---------------------------------------------------------------------------------------------
# one budget: train, predict, score both
# ---------------------------------------------------------------------------------------------


def nnunet_budget(runner: Runner, minutes: float, mirroring: str, validation: str) -> dict[str, Step]:
    """nnU-Net trained for ``minutes`` (results under ``WORK/nnUNet_results/<minutes>min``), then its predictions."""
    tag = f"{minutes:g}min"
    results = runner.work / "nnUNet_results" / tag
    env = {"nnUNet_results": str(results), "ICHCT_NNUNET_BUDGET_MIN": f"{minutes:g}"}
    train = runner.worker(f"nnunet_train_{tag}", "nnunet-train", str(FOLD), runner.device, str(runner.threads),
                          validation, extra_env=env)
    pred = runner.work / "predictions" / f"nnunet_{tag}"
    images = runner.work / "nnUNet_raw" / EVAL_DATASET / "imagesTs"
    predict = runner.worker(f"nnunet_predict_{tag}", "nnunet-predict", str(images), str(pred), runner.device,
                            str(runner.threads), mirroring, extra_env=env)
    return {"train": train, "predict": predict}


def ichct_budget(runner: Runner, minutes: float, eval_manifest: Path, timing_studies: int) -> dict[str, Step]:
    """ichct's segmenter trained for ``minutes`` on the same fold, then timed on the evaluation cohort."""
    tag = f"{minutes:g}min"
    run = runner.work / "ichct_runs" / f"seg_{tag}"
    shutil.rmtree(run, ignore_errors=True)
    train = runner.worker(f"ichct_train_{tag}", "ichct-train", str(run), f"{minutes:g}", runner.device,
                          str(runner.threads))
    infer = runner.worker(f"ichct_infer_{tag}", "ichct-infer", str(run), str(eval_manifest), str(timing_studies),
                          runner.device, str(runner.threads))
    return {"train": train, "predict": infer}


def score_ichct(runner: Runner, minutes: float, eval_manifest: Path, n_boot: int) -> Path:
    out = runner.work / "evaluation" / f"ichct_{minutes:g}min"
    shutil.rmtree(out, ignore_errors=True)
    runner.run(f"ichct_evaluate_{minutes:g}min", ichct(
        "evaluate", "--run", runner.work / "ichct_runs" / f"seg_{minutes:g}min", "--manifest", eval_manifest,
        "--split", "test", "--out", out, "--bootstrap", n_boot, "--device", runner.device, "-q"))
    return out


def score_nnunet(runner: Runner, minutes: float, eval_manifest: Path, n_boot: int) -> Path:
    """``ichct evaluate --predictions DIR --map CASE_MAP`` on nnU-Net's predictions (trained on the training manifest)."""
    out = runner.work / "evaluation" / f"nnunet_{minutes:g}min"
    shutil.rmtree(out, ignore_errors=True)
    runner.run(f"nnunet_evaluate_{minutes:g}min", ichct(
        "evaluate", "--predictions", runner.work / "predictions" / f"nnunet_{minutes:g}min",
        "--map", runner.work / "nnUNet_raw" / EVAL_DATASET / "ichct_case_map.json", "--trained-on", MANIFEST,
        "--label-map", "binary" if runner.labels == "binary" else "ichct",
        "--manifest", eval_manifest,
        "--split", "test", "--out", out, "--bootstrap", n_boot, "-q"))
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

SEG_METRICS = (("dice_positive", "Dice (blood)"), ("hd95_mm", "HD95 mm"), ("fp_per_scan", "FP comp./scan"),
               ("abs_volume_error_ml", "|vol err| mL"))


def seg_scores(eval_dir: Path) -> dict[str, Any]:
    """The segmentation metrics of ``metrics.json`` (class ``any``), each ``{"value", "ci_low", "ci_high"}``."""
    doc = json.loads((eval_dir / "metrics.json").read_text())
    seg = (doc.get("segmentation") or {}).get("any") or {}
    return {k: seg.get(k) for k, _ in SEG_METRICS}


def _metric_text(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "not scored"
    text = f"{m['value']:.3f}"
    if m.get("ci_low") is not None:
        text += f" ({m['ci_low']:.3f}-{m['ci_high']:.3f})"
    return text


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the runs."""
    head = ["model", "budget min", "epochs", "train s", "extra s"] + [t for _, t in SEG_METRICS] + [
        "infer s/study", "peak train MiB", "peak infer MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['budget_min']:g}", str(r["epochs"]), f"{r['train_s']:.0f}", r["extra"]]
        cells += [_metric_text(r["scores"].get(k)) for k, _ in SEG_METRICS]
        cells += [f"{r['infer_s_per_study']:.2f}", f"{r['peak_train_mb']:.0f}", f"{r['peak_infer_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nnunet_row(minutes: float, labels: str, steps: dict[str, Step], scores: dict[str, Any]) -> dict[str, Any]:
    t, p = steps["train"], steps["predict"]
    epochs = (f"{t.result['epochs_completed']} of {t.result['planned_epochs']} ({t.result['iterations_done']} "
              f"iterations; {t.result['iterations_per_epoch']} per epoch)")
    return {"model": f"nnU-Net {CONFIGURATION} ({labels})", "budget_min": minutes, "epochs": epochs,
            "train_s": t.result["train_s"],
            "extra": f"start-up {t.result['startup_s']:.0f}; fold validation "
                     + ("skipped" if t.result["validation_s"] is None else f"{t.result['validation_s']:.0f}"),
            "scores": scores, "infer_s_per_study": p.result["s_per_study"], "peak_train_mb": t.peak_mb,
            "peak_infer_mb": p.peak_mb, "mirroring_axes": p.result["mirroring_axes"]}


def ichct_row(minutes: float, steps: dict[str, Step], scores: dict[str, Any]) -> dict[str, Any]:
    t, p = steps["train"], steps["predict"]
    return {"model": "ichct seg", "budget_min": minutes, "epochs": str(t.result["epochs"]),
            "train_s": t.result["train_time_s"], "extra": f"caching {t.result['wall_s'] - t.result['train_time_s']:.0f}",
            "scores": scores, "infer_s_per_study": p.result["s_per_study"], "peak_train_mb": t.peak_mb,
            "peak_infer_mb": p.peak_mb}


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="5,30", help="training budgets in minutes, comma-separated (default 5,30)")
    parser.add_argument("--threads", type=int, default=2, help="CPU cores (and threads) of every step (default 2)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--mirroring", default="auto", choices=("auto", "on", "off"),
                        help="nnU-Net's test-time mirroring (nnU-Net's default: on, 8 passes per window in 3D); "
                             "auto (default): on with cuda, off on the CPU, where it makes prediction 8 times slower")
    parser.add_argument("--labels", default="binary", choices=("binary", "subtypes"),
                        help="what nnU-Net learns: blood vs background (default: the task of ichct's default "
                             "segmenter) or the five subtypes")
    parser.add_argument("--nnunet-validation", default="off", choices=("on", "off"),
                        help="also run nnU-Net's validation of the fold after training (timed apart; default off: "
                             "its predictions cannot set thresholds for another cohort)")
    parser.add_argument("--eval-patients", type=int, default=84,
                        help="patients of the evaluation cohort (default 84: 180 studies with the default "
                             "cohort's settings)")
    parser.add_argument("--min-eval-studies", type=int, default=100)
    parser.add_argument("--timing-studies", type=int, default=20, help="studies timed for ichct's inference")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of ichct evaluate")
    parser.add_argument("--work", default=None, help="working folder (kept; default: a new temporary folder)")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_budget(runner: Runner, minutes: float, eval_manifest: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both models at one budget: train, predict, score; their two table rows."""
    print(f"budget {minutes:g} min", file=sys.stderr)
    nn_steps = nnunet_budget(runner, minutes, args.mirroring, args.nnunet_validation)
    ic_steps = ichct_budget(runner, minutes, eval_manifest, args.timing_studies)
    ic_scores = seg_scores(score_ichct(runner, minutes, eval_manifest, args.bootstrap))
    nn_scores = seg_scores(score_nnunet(runner, minutes, eval_manifest, args.bootstrap))
    return [nnunet_row(minutes, args.labels, nn_steps, nn_scores), ichct_row(minutes, ic_steps, ic_scores)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        WORKERS[args.worker[0]](*args.worker[1:])
        return 0
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    if args.mirroring == "auto":
        args.mirroring = "on" if args.device == "cuda" else "off"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ichct-nnunet-bench-"))
    runner = Runner(work, args.threads, args.device, args.labels)
    ensure_default_cohort()
    eval_manifest = make_eval_manifest(work, args.eval_patients, args.min_eval_studies, args.threads)
    prep = export_and_plan(runner, eval_manifest)
    rows = [row for minutes in budgets for row in run_budget(runner, minutes, eval_manifest, args)]
    n_eval = len(json.loads(eval_manifest.read_text())["test"])
    report = {"threads": args.threads, "device": args.device, "mirroring": args.mirroring, "labels": args.labels,
              "eval_studies": n_eval,
              "preparation_s": {k: round(s.wall_s, 1) for k, s in prep.items()},
              "preparation_peak_mb": {k: round(s.peak_mb) for k, s in prep.items()}, "rows": rows}
    (work / "results.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"{args.device}, {args.threads} cores; evaluation cohort: {n_eval} studies; nnU-Net labels: {args.labels}, "
          f"test-time mirroring: {args.mirroring}; preparation (s): "
          + ", ".join(f"{k} {v}" for k, v in report["preparation_s"].items()))
    print(table(rows))
    print(f"\nwork folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
