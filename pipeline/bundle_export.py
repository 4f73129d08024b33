"""``ichct bundle export``: a self-contained model-zoo folder (or zip) of a bundle.

The ichct code the configs need (:func:`ichct.pipeline.bundle_code.module_closure`) is copied
into the export's ``scripts/ichct/`` with its imports rewritten, and every config is regenerated
with ``ichct.`` names moved to ``scripts.ichct.``; so the exported bundle runs with MONAI and the
packages its ``metadata.json`` lists, without ichct installed. ``models/train_patients.json``
(the training patients' keys) travels with the weights, so evaluation still refuses leaked
patients. ``--weights RUN_DIR/best.pt`` replaces the weights (and thresholds / training patients)
by those of another run of the same architecture.
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

__all__ = ["export_bundle"]


def _same_model(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Config keys that differ between two runs' configs and change the network or preprocessing."""
    from ichct.pipeline.bundle_network import network_kwargs

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


def _replace_weights(tmp: Path, weights: Path, run_config: dict[str, Any]) -> dict[str, Any]:
    """Put the ``model`` state dict of a training checkpoint into ``tmp/models`` (with its run's files)."""
    from ichct.pipeline.bundle import _state_dict
    from ichct.pipeline.inference import _build_network

    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing")
    run = weights.parent
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing; --weights must be a checkpoint inside a training run folder")
    other = json.loads(cfg_path.read_text(encoding="utf-8"))
    diffs = _same_model(run_config, other)
    if diffs:
        raise ValueError(f"{weights}: its run differs from the bundle in {', '.join(diffs)}; package that run as its "
                         "own bundle (ichct bundle package) instead")
    ck = torch.load(weights, map_location="cpu", weights_only=True)
    state = _state_dict(ck, weights)
    net = _build_network(run_config["kind"], run_config["config"])
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{weights}: weights do not fit the bundle's network: {exc}") from exc
    for need in ("thresholds.json", "train_patients.json"):
        if not (run / need).is_file():
            raise FileNotFoundError(f"{run / need}: missing; the weights' decision rule and training patients "
                                    "must travel with them")
        shutil.copyfile(run / need, tmp / "models" / need)
    buf = io.BytesIO()
    torch.save(state, buf)
    (tmp / "models" / "model.pt").write_bytes(buf.getvalue())
    rc = dict(run_config)
    rc["fold"], rc["seed"] = other.get("fold"), other.get("seed")
    rc["manifest_sha256"] = other.get("manifest_sha256")
    rc["bundle"] = {**rc.get("bundle", {}), "source_run": run.resolve().name, "checkpoint": weights.stem,
                    "epoch": int(ck["epoch"]) if isinstance(ck, Mapping) and "epoch" in ck else None,
                    "weights_sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
    # the evaluation in docs/ measured the old weights: drop it
    shutil.rmtree(tmp / "docs" / "evaluation", ignore_errors=True)
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
        ship instead of the bundle's weights; its ``thresholds.json`` and ``train_patients.json``
        come along.

    Returns
    -------
    dict
        Summary: output path, copied modules, required packages.
    """
    from ichct.pipeline.atomic import replace_dir, temp_dir_beside
    from ichct.pipeline.bundle import REQUIRED_FILES, write_bundle_files
    from ichct.pipeline.bundle_code import config_modules, module_closure, vendor
    from ichct.pipeline.bundle_configs import bundle_configs

    src = Path(bundle_dir)
    missing = [f for f in REQUIRED_FILES if not (src / f).is_file()]
    if not src.is_dir() or missing:
        raise FileNotFoundError(f"{src}: not a complete ichct bundle (missing: {', '.join(missing) or 'folder'})")
    out = Path(dest)
    if zip_file and out.suffix != ".zip":
        out = out.with_name(out.name + ".zip")
    if out.exists() and (zip_file or not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists; choose another destination")
    work = temp_dir_beside(out)
    try:
        name = src.resolve().name
        tmp = work / name
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("__pycache__", "scripts", "eval", "predictions",
                                                                "*.ts", "*.onnx", ".*"))
        rc = json.loads((tmp / "models" / "run_config.json").read_text(encoding="utf-8"))
        if weights is not None:
            rc = _replace_weights(tmp, Path(weights), rc)
        if rc.get("manifest") and not os.path.isabs(rc["manifest"]):
            # the default manifest path is relative to the original bundle: keep it valid where possible
            rc["manifest"] = str((src.resolve() / rc["manifest"]).resolve())
        (tmp / "models" / "run_config.json").write_text(json.dumps(rc, indent=2) + "\n", encoding="utf-8")
        modules = module_closure(config_modules(bundle_configs(rc).values()))
        written = vendor(modules, tmp / "scripts")
        ev = tmp / "docs" / "evaluation" / "metrics.json"
        evaluation = json.loads(ev.read_text(encoding="utf-8")) if ev.is_file() else None
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
            "required_packages_version": meta["required_packages_version"], "weights_replaced": weights is not None}
