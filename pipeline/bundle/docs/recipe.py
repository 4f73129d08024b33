"""How the committed bundles are rebuilt: ``bundles/build_bundles.sh``'s defaults and its recipe in words.

A bundle whose run is the script's (cohort, budget, seed, inference settings; or the script's
ensemble) gets the script as its "reproduce" paragraph; any other run the commands that retrain it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ichct.pipeline.bundle.docs.provenance import DEFAULT_MANIFEST_NAME, committed_cohort, synth_command
from ichct.pipeline.models.network_factory import is_ensemble
from ichct.pipeline.synth.config import DEFAULT_COHORT_NAME, LARGE_COHORT_NAME

__all__ = ["BUILD_SCRIPT", "SEG_FINETUNES", "COMMITTED_INFERENCE", "COMMITTED_SLICE_GATE", "COMMITTED_SW_OVERLAP",
           "COMMITTED_MAX_FALSE_BLOOD_ML", "ensemble_members", "reproduce_text"]


#: What ``bundles/build_bundles.sh`` trains each committed bundle on and for how long, by default
#: (``tests/test_bundle_provenance.py`` keeps the script's defaults in step). ``epochs`` None: the
#: training config's own; ``config`` the training overrides the script passes (``--config``, a file
#: of the repository; None: none): the segmenter trains with brain-referenced HU, which gave it Dice
#: 0.509 -> 0.563 on synth_large's test split (docs/benchmarks.md#published-segmentation-090-2026-12-06).
#: The classifier stays on the default cohort: trained on synth_large for an
#: hour it ranked worse in domain (AUC(any) 0.908 against 0.941 on the tuning cohort) and no better
#: on the shifted domain (0.920 both; docs/benchmarks.md#more-patients-and-a-longer-budget-2026-12-06).
BUILD_SCRIPT: dict[str, dict[str, Any]] = {
    "seg": {"cohort": LARGE_COHORT_NAME, "max_minutes": 60.0, "epochs": 1000,
            "config": "bundles/seg_train_config.json"},
    "cls": {"cohort": DEFAULT_COHORT_NAME, "max_minutes": 5.0, "epochs": None, "config": None},
}


#: The segmenter's two fine-tuned copies that ``bundles/build_bundles.sh`` (``SEG_ENSEMBLE=1``, the
#: default) averages with the run above (``ichct ensemble``, segmentation 0.10.0 and later): each starts
#: from the one before it (``--init-weights``), fold 0; shifted-domain Dice 0.631 -> 0.643 and false blood
#: p95 0.71 -> 0.16 mL against the first network alone (docs/benchmarks.md).
SEG_FINETUNES: tuple[dict[str, Any], ...] = (
    {"out": "seg_variety", "manifest": "data_manifests/synth_variety.json", "max_minutes": 60.0,
     "config": "bundles/seg_finetune_variety.json", "seed": 0},
    {"out": "seg_union", "manifest": "data_manifests/synth_large_variety.json", "max_minutes": 70.0,
     "config": "bundles/seg_finetune_union.json", "seed": 1},
)


#: The inference settings the committed bundles (and the demo's) are packaged with
#: (:data:`~ichct.pipeline.bundle.package.INFERENCE_KEYS`): test-time mirroring along the axis training
#: flips and brain-referenced HU at the committed cohorts' level (``TTA`` and ``BRAIN_HU`` of the script).
COMMITTED_INFERENCE: dict[str, Any] = {"tta_mirror_axes": [0], "brain_reference_hu": 30.0}


#: The committed segmenter's ``classifier_slice_gate`` (``SLICE_GATE`` of the script).
COMMITTED_SLICE_GATE = 0.4


#: The committed segmenter's sliding-window overlap (``SW_OVERLAP`` of the script; 0.75 since
#: segmentation 0.10.1: shifted-domain Dice 0.643 -> 0.651 at about twice the segmenter's time,
#: docs/benchmarks.md#published-segmentation-0101-overlap-075-and-a-false-blood-budget-2026-12-08).
COMMITTED_SW_OVERLAP = 0.75


#: The false-blood budget (mL) of the committed segmenter's confidence filter (``ichct postprocess
#: --max-false-blood-ml``; ``MAX_FALSE_BLOOD_ML`` of the script): the shifted-domain goal's own bound.
COMMITTED_MAX_FALSE_BLOOD_ML = 1.0


def _is_build_script_run(run_config: Mapping[str, Any], td: Mapping[str, Any]) -> bool:
    """The run is what ``bundles/build_bundles.sh`` trains by default (:data:`BUILD_SCRIPT`, fold 0, seed 0)."""
    spec = BUILD_SCRIPT.get(str(run_config.get("kind")))
    cfg = run_config["config"]
    budget = cfg.get("max_minutes")
    # a run trained with the script's overrides recorded --config in its command (the values alone may
    # have been set after training, by `ichct bundle package`)
    trained_with = spec is not None and (spec["config"] is None) == ("--config" not in str(run_config.get("command")))
    return (spec is not None and "init_weights" not in run_config and committed_cohort(td) == spec["cohort"]
            and run_config.get("fold") == 0
            and run_config.get("seed") == 0 and budget is not None and float(budget) == spec["max_minutes"]
            and spec["epochs"] in (None, cfg.get("epochs")) and trained_with and _committed_settings(run_config))


def _committed_settings(run_config: Mapping[str, Any]) -> bool:
    """The run's inference settings are the committed bundles' (:data:`COMMITTED_INFERENCE`; a segmenter's
    slice gate and sliding-window overlap too)."""
    cfg = run_config["config"]
    seg_settings = {"classifier_slice_gate": COMMITTED_SLICE_GATE, "sw_overlap": COMMITTED_SW_OVERLAP}
    return (all(cfg.get(k) == v for k, v in COMMITTED_INFERENCE.items())
            and (run_config.get("kind") != "seg" or all(cfg.get(k) == v for k, v in seg_settings.items())))


def ensemble_members(run_config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The member records of an ensemble's run config (``ensemble.members``; empty for one network).

    Examples
    --------
    >>> ensemble_members({"ensemble": {"members": [{"fold": 0}, {"fold": 0}]}}), ensemble_members({})
    ([{'fold': 0}, {'fold': 0}], [])
    """
    return list((run_config.get("ensemble") or {}).get("members") or [])


def _is_build_script_ensemble(run_config: Mapping[str, Any], td: Mapping[str, Any]) -> bool:
    """The ensemble is what ``bundles/build_bundles.sh`` assembles (:data:`SEG_FINETUNES`): a segmenter of
    the script's cohort, fold 0, with the committed inference settings and as many members as the recipe."""
    members = ensemble_members(run_config)
    return (run_config.get("kind") == "seg" and committed_cohort(td) == BUILD_SCRIPT["seg"]["cohort"]
            and len(members) == 1 + len(SEG_FINETUNES) and all(m.get("fold") == 0 for m in members)
            and _committed_settings(run_config))


def _finetune_steps(base_run: str) -> str:
    """The script's fine-tuning and ensembling commands after the run ``base_run``."""
    steps, previous = [], base_run
    for step in SEG_FINETUNES:
        out = f"runs/bundle_build/{step['out']}"
        steps.append(f"`ichct train seg --manifest {step['manifest']} --fold 0 --out {out} --init-weights {previous} "
                     f"--max-minutes {step['max_minutes']:g} --epochs 1000 --config {step['config']} --seed {step['seed']}`")
        previous = out
    members = " ".join(f"--member {m}" for m in [base_run] + [f"runs/bundle_build/{s['out']}" for s in SEG_FINETUNES])
    return (f", fine-tunes it ({', then '.join(steps)}; the cohort `ichct synth --cohort synth_variety`, the merged "
            f"manifest `ichct manifest merge`), averages the three with `ichct ensemble {members} --out "
            "runs/bundle_build/seg_ensemble`")


def _build_script_steps(kind: str, bundle_name: str, ensemble: bool = False) -> str:
    spec = BUILD_SCRIPT[kind]
    cohort, minutes = spec["cohort"], f"{spec['max_minutes']:g}"
    manifest, run, ev = f"data_manifests/{cohort}.json", f"runs/bundle_build/{kind}", f"runs/bundle_build/eval_{kind}"
    epochs = f" --epochs {spec['epochs']}" if spec["epochs"] is not None else ""
    epochs += f" --config {spec['config']}" if spec["config"] is not None else ""
    finetunes, packaged = (_finetune_steps(run), "runs/bundle_build/seg_ensemble") if ensemble else ("", run)
    bundle = f"bundles/{bundle_name}"
    post = (f"`ichct postprocess {bundle} --manifest data_manifests/synth_tuning.json --split test --max-false-blood-ml "
            f"{COMMITTED_MAX_FALSE_BLOOD_ML:g}` (the confidence filter, within a false-blood budget, and the minimum "
            "component volume, chosen on the tuning cohort), " if kind == "seg" else "")
    default_test = cohort != DEFAULT_MANIFEST_NAME
    also = (", the same on `data_manifests/synth_default.json` (the default test split)" if default_test else "")
    also_flag = f" --also-evaluated default_test={ev}_default" if default_test else ""
    mirror = ",".join(str(a) for a in COMMITTED_INFERENCE["tta_mirror_axes"]) or "none"
    level = COMMITTED_INFERENCE["brain_reference_hu"]
    gate = (f" --classifier-slice-gate {COMMITTED_SLICE_GATE:g} --sw-overlap {COMMITTED_SW_OVERLAP:g}` (test-time "
            "mirroring, brain-referenced HU, the slice gate beside a classifier, the sliding-window overlap), "
            if kind == "seg" else "` (test-time mirroring, brain-referenced HU), ")
    return (f"Reproduce these weights and the numbers below from the repository root with `bash "
            f"bundles/build_bundles.sh`: it generates the cohorts it needs (`{synth_command(cohort)}`, skipped "
            f"when `data/{cohort}` exists), then runs `ichct train {kind} --manifest {manifest} --fold 0 --out {run} "
            f"--max-minutes {minutes}{epochs} --seed 0`{finetunes}, `ichct bundle package {packaged} {bundle} --force "
            f"--tta-mirror-axes {mirror} --brain-reference-hu {level:g}{gate}{post}`ichct evaluate --bundle {bundle} --manifest "
            f"{manifest} --split test --out {ev} --bootstrap 2000 --seed 0`{also}, `ichct bundle refresh {bundle} "
            f"--evaluation {ev}{also_flag}` (these docs), "
            "the shifted-domain benchmark `benchmarks/domain_shift.py` on both bundles (`ichct bundle refresh "
            "--also-evaluated shifted_domain=...`), and `ichct bundle verify`. Training on a CPU under a time budget "
            "is not bit-reproducible across machines.")


def reproduce_text(kind: str, run_config: Mapping[str, Any], td: Mapping[str, Any], bundle_name: str) -> str:
    """The README's "reproduce" paragraph: ``bundles/build_bundles.sh`` for the script's run or ensemble,
    else the commands that train (or assemble) the model again from its recorded manifest and config.

    Parameters
    ----------
    kind
        ``"seg"`` or ``"cls"``.
    run_config
        The bundle's ``models/run_config.json``.
    td
        Its training data (:func:`~ichct.pipeline.bundle.docs.provenance.describe_training_data`).
    bundle_name
        The bundle folder's name (the commands write ``bundles/<bundle_name>``).
    """
    if is_ensemble(run_config["config"]):
        if _is_build_script_ensemble(run_config, td):
            return _build_script_steps(kind, bundle_name, ensemble=True)
        members = " ".join(f"--member MEMBER{i}" for i in range(1, len(ensemble_members(run_config)) + 1))
        what = "filter was" if kind == "seg" else "thresholds were"
        return (f"Assemble it again with `ichct ensemble {members} --out RUN` (the members above, in that order; "
                "`ensemble.members` in `models/run_config.json` says where each was), then `ichct postprocess RUN --manifest "
                f"HELD_OUT.json --split test` (the studies the {what} chosen on are in `models/postprocessing.json`), "
                "`ichct bundle package RUN BUNDLE`, `ichct evaluate --bundle BUNDLE` on held-out studies and `ichct "
                "bundle refresh BUNDLE --evaluation EVAL` for these docs.")
    if _is_build_script_run(run_config, td):
        return _build_script_steps(kind, bundle_name)
    cfg = run_config["config"]
    budget = cfg.get("max_minutes")
    cohort = committed_cohort(td)
    manifest = f"data_manifests/{cohort}.json" if cohort else "MANIFEST"
    which = "" if cohort else f"MANIFEST being the `{td.get('manifest') or 'manifest'}` above and "
    stop = f"--max-minutes {float(budget):g}" if budget is not None else f"--epochs {cfg.get('epochs')}"
    return (f"Retrain with `ichct train {kind} --manifest {manifest} --fold {run_config.get('fold')} --seed "
            f"{run_config.get('seed')} {stop} --config CONFIG --out RUN`, {which}CONFIG holding the `config` section "
            "of `models/run_config.json`, then `ichct bundle package RUN BUNDLE`, `ichct evaluate --bundle BUNDLE` on "
            "the manifest's test split and `ichct bundle package RUN BUNDLE --force --evaluation EVAL` for these docs. "
            + ("Training under a time budget is not bit-reproducible across machines."
               if budget is not None else "Training is not bit-reproducible across machines."))
