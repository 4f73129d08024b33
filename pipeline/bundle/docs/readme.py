"""A bundle's ``docs/README.md``: the model zoo's template (package data) filled from the run's config,
its training record, its configs and the measured numbers."""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ichct.pipeline.bundle.docs.phrases import seg_postprocessing_text
from ichct.pipeline.bundle.docs.provenance import (data_source, describe_training_data, intended_use,
                                                   training_data_summary)
from ichct.pipeline.bundle.docs.recipe import ensemble_members, reproduce_text
from ichct.pipeline.bundle.steps import REFERENCES, postprocessing_steps, preprocessing_table, training_steps
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.models.config import saved_run_config
from ichct.pipeline.models.network_factory import is_ensemble, network_name

__all__ = ["README_TEMPLATE", "bundle_readme"]


# --------------------------------------------------------------------------------------------
# docs/README.md
# --------------------------------------------------------------------------------------------


def _window_note(cfg: Mapping[str, Any]) -> str:
    """`` (mean of the last N validations)`` when the run chose best.pt on a running mean."""
    window = int(cfg["best_window"])
    return f" (mean of the last {window} validations)" if window > 1 else ""


def _fmt(entry: Any, digits: int = 3) -> str:
    if not isinstance(entry, Mapping) or entry.get("value") is None:
        return "n/a"
    v, lo, hi = entry.get("value"), entry.get("ci_low"), entry.get("ci_high")
    if lo is None or hi is None:
        return f"{float(v):.{digits}f}"
    return f"{float(v):.{digits}f} [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def _performance(kind: str, metrics: Mapping[str, Any] | None) -> list[str]:
    """The Performance section: where the numbers were measured, then the metrics table of ``kind``."""
    if not metrics:
        return ["Not measured yet: run `ichct evaluate --bundle` (see below) and package again with `--evaluation`."]
    lines = [f"Measured with `ichct evaluate --bundle` on the **{metrics.get('split')}** split of "
             f"`{metrics.get('manifest', {}).get('path', '').rsplit('/', 1)[-1]}`: {metrics.get('n_studies')} studies of "
             f"{metrics.get('n_patients')} patients none of whom the model saw in training; value [95% CI] from a "
             f"patient-level bootstrap ({metrics.get('n_boot')} resamples). The full report is "
             "[evaluation/report.md](evaluation/report.md) and the numbers "
             "[evaluation/metrics.json](evaluation/metrics.json).",
             ""]
    if kind == "seg":
        return lines + _seg_metrics_table(metrics)
    return lines + _cls_metrics_table(metrics)


def _other_performance(kind: str, others: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One subsection per other evaluation: where it was measured, then the same table."""
    lines: list[str] = []
    for name, metrics in others.items():
        manifest = str(metrics.get("manifest", {}).get("path", "")).rsplit("/", 1)[-1]
        lines += ["", f"### {name.replace('_', ' ').capitalize()}", "",
                  f"`ichct evaluate --bundle` on the **{metrics.get('split')}** split of `{manifest}`: "
                  f"{metrics.get('n_studies')} studies of {metrics.get('n_patients')} patients, value [95% CI] from "
                  f"{metrics.get('n_boot')} patient-level bootstrap resamples. Report: "
                  f"[evaluation_{name}/report.md](evaluation_{name}/report.md).", ""]
        lines += _seg_metrics_table(metrics) if kind == "seg" else _cls_metrics_table(metrics)
    return lines


def _seg_metrics_table(metrics: Mapping[str, Any]) -> list[str]:
    """Segmentation metrics (any blood) and the CT-level blood-volume rule, one table."""
    ct = metrics.get("ct_level") or {}
    seg = (metrics.get("segmentation") or {}).get("any") or {}
    lines = ["Segmentation metrics on the input's own (ingest) grid, as inference writes the label map:", "",
             "| metric (any blood) | value [95% CI] |", "|---|---|"]
    for key, label in (("dice_positive", "Dice, studies with blood"),
                       ("dice", "Dice, all studies (a false positive on a negative study counts 0)"),
                       ("hd95_mm", "HD95 (mm)"), ("assd_mm", "mean surface distance (mm)"),
                       ("fp_per_scan", "false-positive components per scan"),
                       ("abs_volume_error_ml", "absolute volume error (mL)")):
        if key in seg:
            lines.append(f"| {label} | {_fmt(seg[key])} |")
    rule = ct.get("any", {}).get("seg_volume", {})
    for key, label in (("roc_auc", "CT-level ROC AUC (blood volume)"), ("sensitivity", "CT-level sensitivity"),
                       ("specificity", "CT-level specificity")):
        if key in rule:
            lines.append(f"| {label} | {_fmt(rule[key])} |")
    peak = ct.get("any", {}).get("seg_peak", {})  # evaluations since the seg_peak rule
    for key, label in (("roc_auc", "CT-level ROC AUC (peak blood probability, `seg_peak`)"),
                       ("sensitivity", "CT-level sensitivity (`seg_peak`)"),
                       ("specificity", "CT-level specificity (`seg_peak`)")):
        if key in peak:
            lines.append(f"| {label} | {_fmt(peak[key])} |")
    return lines


def _cls_metrics_table(metrics: Mapping[str, Any]) -> list[str]:
    """CT-level metrics of the classifier's ``consecutive`` rule, one row per label."""
    ct = metrics.get("ct_level") or {}
    lines = ["CT level, `consecutive` rule with the thresholds stored in `models/thresholds.json`:", "",
             "| subtype | ROC AUC | PR AUC | sensitivity | specificity |", "|---|---|---|---|---|"]
    for st in LABEL_NAMES:
        r = (ct.get(st) or {}).get("consecutive")
        if r:
            lines.append(f"| {st} | {_fmt(r.get('roc_auc'))} | {_fmt(r.get('pr_auc'))} | {_fmt(r.get('sensitivity'))} | "
                         f"{_fmt(r.get('specificity'))} |")
    return lines


def _device(run_config: Mapping[str, Any]) -> str:
    dev = str(run_config.get("device") or "cpu")
    return "CPU" if dev == "cpu" else "GPU" if dev.startswith("cuda") else dev


def _epochs(n: Any) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _training_run(run_config: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    """``58 epochs in 298 s under a 5.0-minute budget`` (no budget clause when the run had none), and
    the weights it started from when it was fine-tuned."""
    epochs, train_s = training.get("epochs"), training.get("train_s")
    budget = run_config["config"].get("max_minutes")
    if budget is not None:
        text = f"{epochs} epochs in {'n/a' if train_s is None else train_s} s under a {budget}-minute budget"
    else:
        text = (f"trained for {_epochs(epochs)}" + ("" if train_s is None else f" in {train_s} s")
                + ", no time budget")
    init = run_config.get("init_weights")
    if isinstance(init, Mapping):
        text += (f", starting from the weights of {init.get('describes') or Path(str(init.get('path'))).name} "
                 f"(sha256 {str(init.get('sha256'))[:12]}) instead of a random draw")
    return text


def _limitations(run_config: Mapping[str, Any], td: Mapping[str, Any], training: Mapping[str, Any]) -> list[str]:
    if td.get("synthetic"):
        data = ("- Trained and tested on synthetic head CTs only; the numbers above do not transfer to real scanners "
                "or patients. Retrain on real, properly licensed data before drawing any conclusion.")
    else:
        data = (f"- Trained on {training_data_summary(td)} only; the numbers above hold for the evaluated split and "
                "do not transfer to other scanners, sites or populations without an evaluation there. Using these "
                "weights is subject to the training data's licence (data_license.txt).")
    budget = run_config["config"].get("max_minutes")
    size = (f"- A small CPU-sized network under a {float(budget):g}-minute training budget: a pipeline check, not a "
            "tuned model." if budget is not None else
            f"- Trained for {_epochs(training.get('epochs'))} with no time budget; how good it is is only what the "
            "Performance section measures.")
    return [data, size]


#: The bundle README's Markdown, ``string.Template`` placeholders filled by :func:`bundle_readme` (package data).
README_TEMPLATE = "templates/bundle_README.md"


def bundle_readme(run_config: Mapping[str, Any], metadata: Mapping[str, Any], *, bundle_name: str,
                  training: Mapping[str, Any], metrics: Mapping[str, Any] | None,
                  training_data: Mapping[str, Any] | None = None, configs: Mapping[str, Any] | None = None,
                  training_curves: bool = False, other_metrics: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """``docs/README.md`` following the model zoo's template.

    The text is ``pipeline/bundle/templates/bundle_README.md`` (:data:`README_TEMPLATE`) with its
    ``${placeholders}`` filled: each section's values come from one small function below.

    Parameters
    ----------
    run_config
        The run's ``config.json``.
    metadata
        The bundle's ``metadata.json``.
    bundle_name
        Folder name of the bundle (``ich_ct_segmentation``).
    training
        ``{"epochs": trained epochs, "best_epoch", "best_metric", "key_metric", "train_s"}``.
    metrics
        ``metrics.json`` of the bundle's evaluation, or None.
    training_data
        :func:`describe_training_data` of the run (default: derived from ``run_config`` here).
    configs
        The bundle's configs (default: :func:`~ichct.pipeline.bundle.configs.bundle_configs` of
        ``run_config``); the Preprocessing section lists their steps.
    training_curves
        ``docs/training_curves.png`` exists (the run's ``training_curves.png``): shown.
    other_metrics
        ``{NAME: metrics.json}`` of other evaluations (``docs/evaluation_<NAME>/``), each with a table.

    Returns
    -------
    str
        The README's Markdown.
    """
    from importlib import resources

    from ichct.pipeline.bundle.configs import bundle_configs

    kind = str(run_config["kind"])
    cfg = saved_run_config(kind, run_config["config"])
    td = describe_training_data(run_config) if training_data is None else training_data
    configs = bundle_configs(run_config) if configs is None else configs
    fields = {"name": metadata["name"], "bundle_name": bundle_name, "kind": kind,
              **_overview_fields(kind, cfg, metadata),
              "data": _data_paragraph(td),
              **_steps_fields(configs),
              **_training_fields(run_config, cfg, training),
              "training_curves": ("\n\n![Training curves: loss and validation metrics per epoch](training_curves.png)"
                                  if training_curves else ""),
              "reproduce": reproduce_text(kind, run_config, td, bundle_name),
              "performance": "\n".join(_performance(kind, metrics) + _other_performance(kind, other_metrics or {})),
              **_how_to_run_fields(kind, cfg, metadata),
              **_code_fields(configs),
              "limitations": "\n".join(_limitations(run_config, td, training)),
              "intended_use": str(metadata.get("intended_use") or intended_use(td)),
              "references": "\n".join(f"- {r}" for r in metadata.get("references") or REFERENCES)}
    text = resources.files("ichct.pipeline.bundle").joinpath(README_TEMPLATE).read_text(encoding="utf-8")
    return string.Template(text).substitute(fields)


def _steps_fields(configs: Mapping[str, Any]) -> dict[str, str]:
    """The Preprocessing section: inference's steps as a table, what training adds, the postprocessing."""
    inference = configs["inference"]["preprocessing"]["transforms"]
    return {"preprocessing_table": preprocessing_table(inference),
            "training_preprocessing": training_steps(inference, configs["train"]["train"]["preprocessing"]["transforms"]),
            "postprocessing": postprocessing_steps(configs["inference"]["postprocessing"]["transforms"])}


def _code_fields(configs: Mapping[str, Any]) -> dict[str, str]:
    """How much code ``ichct bundle export`` puts into ``scripts/`` for these configs."""
    from ichct.pipeline.bundle.vendor import bundle_code, export_size

    files, lines = export_size(bundle_code(configs.values()))
    return {"scripts_modules": f"{files}", "scripts_lines": f"{lines:,}"}


def _overview_fields(kind: str, cfg: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, str]:
    """Model overview: the description, the input and output tensors and the network."""
    inp = metadata["network_data_format"]["inputs"]["image"]
    out = metadata["network_data_format"]["outputs"]["pred"]
    shape = (f"patches of {inp['spatial_shape']}" if inp["is_patch_data"]
             else f"shape {inp['spatial_shape']} (H, W, slices)")
    return {"description": f"{metadata['description']}",
            "input_channels": f"{inp['num_channels']}",
            "input_channel_defs": "; ".join(inp["channel_def"].values()),
            "input_shape": shape,
            "output_channels": f"{out['num_channels']}",
            "output_channel_defs": ", ".join(f"{k}: {v}" for k, v in out["channel_def"].items()),
            "network_class": network_name(kind, cfg),
            "network_config": f"{cfg['network']}"}


def _data_paragraph(td: Mapping[str, Any]) -> str:
    """The Data section: what the model was trained on and whose licence applies."""
    return data_source(td) + (" No patient data is included or was used. See [data_license.txt](data_license.txt)."
                              if td.get("synthetic") else
                              " Its licence and data-use terms apply to these weights: see "
                              "[data_license.txt](data_license.txt).")


def _training_fields(run_config: Mapping[str, Any], cfg: Mapping[str, Any],
                     training: Mapping[str, Any]) -> dict[str, str]:
    """Training configuration: fold, seed, device, how long, the best validation and the optimizer
    (an ensemble: its members instead)."""
    if is_ensemble(cfg):
        return {"training_paragraph": _ensemble_paragraph(run_config)}
    best = training.get("best_metric")
    return {"training_paragraph": (
        f"Trained with `ichct train {run_config['kind']}` on fold {run_config.get('fold')} of the manifest (other "
        f"folds train, fold {run_config.get('fold')} validates), seed {run_config.get('seed')}, "
        f"{_device(run_config)} ({_training_run(run_config, training)}; best validation {training.get('key_metric')} "
        f"{'n/a' if best is None else f'{float(best):.3f}'}{_window_note(cfg)} at epoch {training.get('best_epoch')}). "
        f"Optimizer AdamW (lr {cfg['lr']}, weight decay {cfg['weight_decay']}), cosine schedule, batch size "
        f"{cfg['batch_size']}. " + _RECORDS_TEXT)}


_RECORDS_TEXT = ("The run's resolved configuration is `training_config` in `configs/train.json` and `config` in "
                 "`models/run_config.json`; the CT-level thresholds are in `models/thresholds.json` with where each was "
                 "chosen (`meta.chosen_on`: the validation fold; `meta.other_rules_chosen_on`, when present: the "
                 "held-out studies a threshold was chosen on after training), the training patients' salted keys in "
                 "`models/train_patients.json` (evaluation refuses them).")


def _ensemble_paragraph(run_config: Mapping[str, Any]) -> str:
    """What an ensemble (``ichct ensemble``) is made of, member by member."""
    members = ensemble_members(run_config)
    listed = "; ".join(
        f"{i}. {m.get('describes')} (fold {m.get('fold')} of `{Path(str(m.get('manifest') or 'its manifest')).name}`, "
        f"weights sha256 {str(m.get('weights_sha256'))[:12]})" for i, m in enumerate(members, start=1))
    common = ("`models/train_patients.json` holds every member's training patients (evaluation refuses them all); "
              "`ensemble` in `models/run_config.json` says where each member came from.")
    if run_config.get("kind") == "cls":
        return (f"An ensemble of {len(members)} slice classifiers assembled by `ichct ensemble` (the mean of their "
                f"slice probabilities, `ichct.networks.ClassifierEnsemble`): {listed}. The inference settings are the "
                "first member's; the thresholds are chosen for the ensemble by `ichct postprocess` "
                f"(`models/postprocessing.json`; `meta.chosen_on` in `models/thresholds.json`). {common}")
    return (f"An ensemble of {len(members)} segmenters assembled by `ichct ensemble` (the mean of their class "
            f"probabilities, `ichct.networks.SegmentationEnsemble`): {listed}. The inference settings and the stored "
            "`seg_volume` rule are the first member's; the confidence filter, the minimum component volume and the "
            "`seg_peak` threshold are chosen for the ensemble by `ichct postprocess` (`models/postprocessing.json`, "
            f"`meta.other_rules_chosen_on` in `models/thresholds.json`). {common}")


def _prediction_files(kind: str, cfg: Mapping[str, Any]) -> str:
    """What inference writes into ``OUT``."""
    if kind != "seg":
        return ("`OUT/<study>_slices.csv` (probability of each label per slice, reader order) and "
                "`OUT/<study>_ct.json` (CT-level score, threshold and call per subtype)")
    post = seg_postprocessing_text(cfg, names=True)
    return "`OUT/<study>_seg.nii.gz`: the label map (uint8) on the input's own grid and affine" + (f"; {post}" if post else "")


def _how_to_run_fields(kind: str, cfg: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, str]:
    """How to run: the export shapes (the classifier is traced with 16 slices), the outputs, the transforms."""
    inp = metadata["network_data_format"]["inputs"]["image"]
    channels = int(inp["num_channels"])
    onnx_shape = [1, channels, *(int(v) if v != "*" else 16 for v in inp["spatial_shape"])]
    if kind == "cls":
        torchscript = (f" --use_trace True --input_shape \"[1, {channels}, "
                       + ", ".join(str(int(v)) for v in cfg["in_plane"]) + ", 16]\"")
        converter = (" --converter_kwargs \"{'dynamo': False, 'input_names': ['image'], 'output_names': ['pred'], "
                     "'dynamic_axes': {'image': {4: 'slices'}, 'pred': {2: 'slices'}}}\"")
    else:
        torchscript = converter = ""
    return {"torchscript_args": torchscript, "prediction_files": _prediction_files(kind, cfg),
            "transforms_prefix": "seg" if kind == "seg" else "cls",
            "onnx_input_shape": f"{onnx_shape}", "onnx_converter_args": converter}
