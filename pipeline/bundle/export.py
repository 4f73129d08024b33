"""``ichct bundle export``: a self-contained model-zoo folder (or zip) of a bundle.

The ichct definitions the configs reach (:func:`ichct.pipeline.bundle.vendor.bundle_code`: the DICOM
reader, the transforms, the network, the decision rule, the bundle's components and, for
``evaluate.json``, the metrics, bootstrap, report and leakage-guard code) are written into the
export's ``scripts/ichct/``, each module pruned to what is reached, with its imports rewritten, and
every config is regenerated with ``ichct.`` names moved to ``scripts.ichct.``; so the exported
bundle runs with MONAI and the packages its ``metadata.json`` lists, without ichct installed.
``models/train_patients.json`` (the training patients' keys) travels with the weights, so evaluation
still refuses leaked patients. ``--weights RUN_DIR/best.pt`` replaces the weights by those of
another run of the same architecture and preprocessing; everything that describes the weights then
comes from that run alone: ``models/run_config.json`` (its config.json: fold, seed, manifest,
training config), ``thresholds.json``, ``train_patients.json``, ``docs/training/metrics.csv`` and
the docs generated from them. A run whose files disagree with each other (another fold or manifest)
is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ichct.errors import InputError, read_json
from ichct.pipeline.postprocess.run import POSTPROCESSING_FILE

__all__ = ["export_bundle"]


def _same_model(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Config keys that differ between two runs' configs and change the network or preprocessing."""
    from ichct.pipeline.models.network_factory import network_kwargs

    diffs = []
    if a.get("kind") != b.get("kind"):
        return ["kind"]
    ca, cb = a["config"], b["config"]
    if network_kwargs(a["kind"], ca) != network_kwargs(b["kind"], cb):
        diffs.append("network")
    for k in ("windows", "spacing_mm", "crop", "patch", "in_plane", "num_classes", "sw_batch_size", "sw_overlap"):
        if ca.get(k) != cb.get(k):
            diffs.append(k)
    return diffs


def _check_run_files(run: Path, other: Mapping[str, Any]) -> None:
    """Refuse a run whose ``thresholds.json`` or ``train_patients.json`` is of another fold or manifest."""
    fold, sha = other.get("fold"), other.get("manifest_sha256")
    problems = []
    record = read_json(run / "train_patients.json", "training record")
    if isinstance(record, Mapping):
        if record.get("fold") is not None and fold is not None and int(record["fold"]) != int(fold):
            problems.append(f"train_patients.json is of fold {record['fold']}, config.json of fold {fold}")
        if record.get("manifest_sha256") and sha and record["manifest_sha256"] != sha:
            problems.append("train_patients.json is of another manifest (sha256) than config.json")
    rule = read_json(run / "thresholds.json", "decision rule")
    chosen = ((rule.get("meta") or {}).get("chosen_on") if isinstance(rule, Mapping) else None)
    if chosen and fold is not None and str(chosen).startswith("validation fold ") \
            and str(chosen) != f"validation fold {fold}":
        problems.append(f"thresholds.json was chosen on {chosen}, config.json validates fold {fold}")
    if problems:
        raise InputError(run, f"the run's files describe different runs ({'; '.join(problems)}); the exported "
                              "bundle would mix them: export the weights of a complete, unmodified training run")


def _replace_weights(tmp: Path, weights: Path, run_config: dict[str, Any]) -> dict[str, Any]:
    """Put the ``model`` state dict of a training checkpoint into ``tmp/models`` with its run's files.

    Parameters
    ----------
    tmp
        The bundle copy being exported (its ``models/`` and ``docs/`` are rewritten).
    weights
        ``RUN_DIR/best.pt`` (or another checkpoint) of a run with the bundle's network and preprocessing.
    run_config
        The bundle's ``models/run_config.json``.

    Returns
    -------
    dict
        The new ``run_config.json``: the weights' run's ``config.json`` (kind, fold, seed, device,
        manifest, manifest sha256, training config, versions) with the bundle's name, version and
        changelog, and that run's checkpoint, epoch, weights sha256, training summary and training
        data. Nothing of the bundle's original run is kept.

    Raises
    ------
    FileNotFoundError
        The checkpoint, its run's ``config.json``, ``thresholds.json`` or ``train_patients.json`` is missing.
    ichct.errors.InputError
        Another network or preprocessing, weights or run files that cannot be read or do not fit, or run
        files of different runs.
    """
    from ichct.pipeline.bundle.package import TRAINING_CURVES, training_summary
    from ichct.pipeline.core.weights import load_checkpoint, model_state_dict
    from ichct.pipeline.bundle.docs import describe_training_data, training_data_summary
    from ichct.pipeline.models.inference import read_run_config
    from ichct.pipeline.models.network_factory import build_network

    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing")
    run = weights.parent
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing; --weights must be a checkpoint inside a training run folder")
    other = read_run_config(cfg_path)
    diffs = _same_model(run_config, other)
    if diffs:
        raise InputError(weights, f"its run differs from the bundle in {', '.join(diffs)}; package that run as its "
                                  "own bundle (ichct bundle package) instead")
    ck = load_checkpoint(weights)
    state = model_state_dict(ck, weights)
    net = build_network(run_config["kind"], run_config["config"])
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise InputError(weights, f"weights do not fit the bundle's network: {exc}") from exc
    for need in ("thresholds.json", "train_patients.json"):
        if not (run / need).is_file():
            raise FileNotFoundError(f"{run / need}: missing; the weights' decision rule and training patients "
                                    "must travel with them")
    _check_run_files(run, other)
    for need in ("thresholds.json", "train_patients.json"):
        shutil.copyfile(run / need, tmp / "models" / need)
    # the record of how the confidence filter was chosen belongs to the weights it was chosen for
    (tmp / "models" / POSTPROCESSING_FILE).unlink(missing_ok=True)
    if (run / POSTPROCESSING_FILE).is_file():
        shutil.copyfile(run / POSTPROCESSING_FILE, tmp / "models" / POSTPROCESSING_FILE)
    buf = io.BytesIO()
    torch.save(state, buf)
    (tmp / "models" / "model.pt").write_bytes(buf.getvalue())
    # the weights' own run describes them: its config.json whole, never a mix with the bundle's run
    rc = {k: v for k, v in other.items() if k != "bundle"}
    if rc.get("manifest") and not os.path.isabs(rc["manifest"]):
        rc["manifest"] = str((run / rc["manifest"]).resolve())
    training_data = describe_training_data(other, base=run)
    old = dict(run_config.get("bundle") or {})
    version = str(old.get("version", "0.1.0"))
    changelog = dict(old.get("changelog") or {})
    note = (f"exported with the weights of run `{run.resolve().name}` ({weights.name}), trained on "
            f"{training_data_summary(training_data)}")
    changelog[version] = f"{changelog[version]}; {note}" if changelog.get(version) else note
    rc["bundle"] = {**{k: old[k] for k in ("name", "display_name") if k in old}, "version": version,
                    "changelog": changelog, "source_run": run.resolve().name, "checkpoint": weights.stem,
                    "epoch": int(ck["epoch"]) if isinstance(ck, Mapping) and "epoch" in ck else None,
                    "weights_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                    "training": training_summary(run, rc["kind"], ck if isinstance(ck, Mapping) else {}),
                    "training_data": training_data}
    # the evaluation in docs/ measured the old weights, and docs/training/ and the curves logged the old run
    shutil.rmtree(tmp / "docs" / "evaluation", ignore_errors=True)
    shutil.rmtree(tmp / "docs" / "training", ignore_errors=True)
    (tmp / "docs" / TRAINING_CURVES).unlink(missing_ok=True)
    if (run / "metrics.csv").is_file():
        (tmp / "docs" / "training").mkdir(parents=True)
        shutil.copyfile(run / "metrics.csv", tmp / "docs" / "training" / "metrics.csv")
    if (run / TRAINING_CURVES).is_file():
        shutil.copyfile(run / TRAINING_CURVES, tmp / "docs" / TRAINING_CURVES)
    return rc


def export_bundle(bundle_dir: str | Path, dest: str | Path, *, zip_file: bool = False,
                  weights: str | Path | None = None) -> dict[str, Any]:
    """Write a self-contained copy of a bundle to ``dest`` (a folder, or ``dest`` as a ``.zip``).

    Parameters
    ----------
    bundle_dir
        An ichct bundle (``ichct bundle package``).
    dest
        Output folder (must not exist or be empty); with ``zip_file`` the zip file to write
        (``.zip`` appended when missing), holding the bundle under its folder name.
    zip_file
        Write a zip instead of a folder.
    weights
        A training checkpoint (``RUN_DIR/best.pt``) of the same architecture and preprocessing to
        ship instead of the bundle's weights. Its run's ``config.json``, ``thresholds.json``,
        ``train_patients.json`` and ``metrics.csv`` come along and are all the exported bundle says
        about its training (fold, seed, manifest, epochs, budget); the bundle keeps its name and
        version, and its changelog notes the exchange. The bundle's evaluation is dropped (it
        measured the old weights).

    Returns
    -------
    dict
        Summary: output path, copied modules, required packages.
    """
    from ichct.pipeline.core.atomic import replace_dir, temp_dir_beside
    from ichct.pipeline.bundle.package import REQUIRED_FILES, write_bundle_files
    from ichct.pipeline.bundle.vendor import bundle_code, export_size, vendor
    from ichct.pipeline.bundle.configs import bundle_configs
    from ichct.pipeline.models.inference import read_run_config

    src = Path(bundle_dir)
    missing = [f for f in REQUIRED_FILES if not (src / f).is_file()]
    if not src.is_dir() or missing:
        raise FileNotFoundError(f"{src}: not a complete ichct bundle (missing: {', '.join(missing) or 'folder'})")
    out = Path(dest)
    if zip_file and out.suffix != ".zip":
        out = out.with_name(out.name + ".zip")
    if out.exists() and (zip_file or not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "exists; choose another destination")
    work = temp_dir_beside(out)
    try:
        name = src.resolve().name
        tmp = work / name
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("__pycache__", "scripts", "eval", "predictions",
                                                                "*.ts", "*.onnx", ".*"))
        rc = read_run_config(src / "models" / "run_config.json", "bundle run config")
        if weights is not None:
            rc = _replace_weights(tmp, Path(weights), rc)
        if rc.get("manifest") and not os.path.isabs(rc["manifest"]):
            # the default manifest path is relative to the original bundle: keep it valid where possible
            rc["manifest"] = str((src.resolve() / rc["manifest"]).resolve())
        (tmp / "models" / "run_config.json").write_text(json.dumps(rc, indent=2) + "\n", encoding="utf-8")
        kept = bundle_code(bundle_configs(rc).values())
        written = vendor(kept, tmp / "scripts")
        ev = tmp / "docs" / "evaluation" / "metrics.json"
        evaluation = read_json(ev, "evaluation (metrics.json)") if ev.is_file() else None
        write_bundle_files(tmp, rc, evaluation, exported=True)
        meta = json.loads((tmp / "configs" / "metadata.json").read_text(encoding="utf-8"))
        if zip_file:
            part = work / out.name
            with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for f in sorted(tmp.rglob("*")):
                    if f.is_file():
                        zf.write(f, f.relative_to(work).as_posix())
            os.replace(part, out)
        else:
            replace_dir(tmp, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"out": str(out), "zip": zip_file, "modules": len([w for w in written if w.endswith(".py")]),
            "scripts_lines": export_size(kept)[1], "required_packages_version": meta["required_packages_version"],
            "weights_replaced": weights is not None}
