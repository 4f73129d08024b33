"""``ichct ensemble``: several trained models of one kind become one run folder whose network averages them.

nnU-Net's ensembling: models trained on other data, folds or seeds make partly different errors,
and the mean of their probabilities is usually better than either (docs/benchmarks.md measures it
on the shifted-domain cohort). :func:`assemble_ensemble` writes an ordinary training run folder, so
every later stage takes it as it takes one model: ``ichct postprocess`` (a segmenter's confidence
filter and ``seg_peak`` threshold, a classifier's thresholds, chosen again for the ensemble's
probabilities), ``ichct evaluate --run``, ``ichct bundle package``, ``ichct predict``.

The folder holds

* ``config.json``: the first member's run config, its network replaced by ``{"members": [each
  member's network arguments]}`` (:class:`~ichct.networks.SegmentationEnsemble`: the mean class
  probabilities of segmenters; :class:`~ichct.networks.ClassifierEnsemble`: the mean slice
  probabilities of classifiers), and ``ensemble.members``: where each member came from and the
  sha256 of its weights;
* ``best.pt``: the members' weights under ``members.<i>.``;
* ``thresholds.json``: the first member's stored decision rule (a segmenter's ``seg_volume``; a
  classifier's slice thresholds), until ``ichct postprocess`` chooses the ensemble's on held-out
  studies;
* ``train_patients.json``: the first member's training record, the others' nested as
  ``ensemble_members``, so evaluation refuses every member's training patients.

The members must preprocess alike (the same transforms and arguments: spacing or slice size,
windows, crop, brain-referenced HU) and have the same classes; inference settings (patch,
sliding-window overlap, mirroring, confidence filter) are the first member's.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ichct import __version__
from ichct.errors import InputError, read_json
from ichct.pipeline.core.atomic import replace_dir, temp_dir_beside, write_json_atomic

logger = logging.getLogger("ichct.ensemble")

__all__ = ["assemble_ensemble", "check_members"]


def check_members(models: Sequence[Any], sources: Sequence[str | Path]) -> None:
    """Refuse members that cannot be averaged: fewer than two, of another kind than the first member,
    ensembles themselves, other classes, or other preprocessing than the first member's (its windows and
    skull-stripped channel fix the input channels).

    Raises
    ------
    ichct.errors.InputError
        Naming the member and what differs.

    Examples
    --------
    >>> check_members([object()], ["runs/seg"])
    Traceback (most recent call last):
    ...
    ichct.errors.InputError: an ensemble needs at least two members, got 1 (runs/seg)
    """
    from ichct.pipeline.bundle.configs import preprocessing_specs
    from ichct.pipeline.models.network_factory import is_ensemble

    if len(models) < 2:
        raise InputError(f"an ensemble needs at least two members, got {len(models)} ({', '.join(map(str, sources))})")
    first = models[0]
    kind = first.kind
    theirs = preprocessing_specs(kind, first.config)
    for model, source in zip(models, sources):
        if model.kind != kind:
            raise InputError(source, f"is a {model.kind} model and {sources[0]} a {kind} model: the members must be "
                                     "of one kind")
        if is_ensemble(model.config):
            raise InputError(source, "is an ensemble itself; list its members instead")
        if kind == "seg" and int(model.config["num_classes"]) != int(first.config["num_classes"]):
            raise InputError(source, f"has {model.config['num_classes']} classes, {sources[0]} has "
                                     f"{first.config['num_classes']}")
        mine = preprocessing_specs(kind, model.config)
        if json.dumps(mine, sort_keys=True, default=str) != json.dumps(theirs, sort_keys=True, default=str):
            differ = next((f"step {i + 1} ({a.get('_target_')} vs {b.get('_target_')})" for i, (a, b)
                           in enumerate(zip(mine, theirs)) if a != b), f"{len(mine)} vs {len(theirs)} steps")
            raise InputError(source, f"preprocesses its input unlike {sources[0]} ({differ}): the members must "
                                     "see the same tensors")


def _member_weights(model: Any, source: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A member's state dict and where it came from, named as a fine-tuned run names its initial
    weights; the sha256 is of the very bytes the state was read from (one read of the file)."""
    from ichct.pipeline.train.init_weights import load_init_weights

    path = Path(source)
    weights = load_init_weights(path, model.kind)
    entry = {"source": str(path.resolve()), "describes": weights.source["describes"], "kind": model.kind,
             "weights_sha256": weights.source["sha256"], "fold": model.run_config.get("fold"),
             "manifest": _manifest_path(model), "network": copy.deepcopy(dict(model.config["network"]))}
    return dict(weights.state), entry


def _manifest_path(model: Any) -> str | None:
    """The member's training manifest as an absolute path (a bundle stores it relative to itself)."""
    manifest = model.run_config.get("manifest")
    if not manifest:
        return None
    base = Path(model.bundle_dir) if getattr(model, "bundle_dir", None) is not None else Path(model.run_dir)
    return str((base / str(manifest)).resolve())


def _training_record(models: Sequence[Any]) -> dict[str, Any]:
    """The first member's ``train_patients.json``, the others' nested as ``ensemble_members``."""
    records = [dict(m.training_record) for m in models]
    if not records[0]:
        raise InputError(models[0].run_dir, "has no training record (train_patients.json): evaluation could not "
                                            "refuse its training patients")
    return {**records[0], "ensemble_members": records[1:]}


def _run_config(models: Sequence[Any], entries: list[dict[str, Any]], command: str | None) -> dict[str, Any]:
    """``config.json`` of the ensemble: the first member's, with the members' networks."""
    import monai
    import torch

    from ichct.pipeline.models.config import DATA_ACCESS_KEYS

    first = models[0]
    cfg = {k: copy.deepcopy(v) for k, v in dict(first.config).items() if k not in DATA_ACCESS_KEYS}
    cfg["network"] = {"members": [copy.deepcopy(dict(m.config["network"])) for m in models]}
    rc: dict[str, Any] = {k: copy.deepcopy(v) for k, v in dict(first.run_config).items()
                          if k not in ("config", "bundle", "init_weights", "command")}
    rc.update({"kind": first.kind, "config": cfg, "manifest": entries[0]["manifest"],
               "versions": {"ichct": __version__, "torch": torch.__version__, "monai": monai.__version__},
               "ensemble": {"members": entries, "settings_of": entries[0]["describes"]}})
    if command:
        rc["command"] = command
    return rc


def assemble_ensemble(members: Sequence[str | Path], out_dir: str | Path, *, force: bool = False,
                      command: str | None = None) -> dict[str, Any]:
    """Write a run folder whose network is the mean of the ``members``' class probabilities.

    Parameters
    ----------
    members
        Training runs (their best checkpoint) or bundles of one kind, segmenters or classifiers; at
        least two, preprocessing alike. The first member gives the inference settings and the stored
        decision rule.
    out_dir
        The run folder to write (must not exist or be empty unless ``force``); written beside it and
        renamed at the end, so nothing partial is left.
    force
        Replace an existing ``out_dir``.
    command
        The command line to record (``ichct ensemble`` passes its own).

    Returns
    -------
    dict
        ``out_dir``, ``members`` (their ``describes``) and ``n_parameters``.

    Examples
    --------
    ::

        assemble_ensemble(["bundles/ich_ct_segmentation", "runs/seg_more"], "runs/seg_ensemble")
        # then: ichct postprocess runs/seg_ensemble --manifest TUNING.json --split test
        #       ichct bundle package runs/seg_ensemble bundles/my_ensemble
    """
    from ichct.networks import ensemble_state_dict
    from ichct.pipeline.bundle.package import load_model_dir
    from ichct.pipeline.models.network_factory import build_network
    from ichct.pipeline.core.weights import save_checkpoint_atomic

    dest = Path(out_dir)
    if dest.exists() and not force and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(dest, "exists and is not an empty folder (pass --force to replace it)")
    models = [load_model_dir(m) for m in members]
    check_members(models, members)
    read = [_member_weights(m, s) for m, s in zip(models, members)]
    entries = [entry for _, entry in read]
    run_config = _run_config(models, entries, command)
    network = build_network(run_config["kind"], run_config["config"])
    state = ensemble_state_dict([member_state for member_state, _ in read])
    network.load_state_dict(state)  # the members' weights fit the ensemble's layers, or this raises
    tmp = temp_dir_beside(dest)
    try:
        write_json_atomic(tmp / "config.json", run_config)
        save_checkpoint_atomic({"model": {k: v.detach().cpu() for k, v in state.items()}}, tmp / "best.pt")
        write_json_atomic(tmp / "train_patients.json", _training_record(models))
        _copy_thresholds(models[0], tmp / "thresholds.json")
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_params = int(sum(p.numel() for p in network.parameters()))
    logger.info("%s: ensemble of %s (%d parameters)", dest, ", ".join(e["describes"] for e in entries), n_params)
    return {"out_dir": str(dest), "members": [e["describes"] for e in entries], "n_parameters": n_params}


def _copy_thresholds(first: Any, path: Path) -> None:
    """The first member's ``thresholds.json``, marked as the first member's: a segmenter's ``seg_peak``
    threshold is dropped (it was chosen for that member's probabilities; ``ichct postprocess`` chooses
    the ensemble's), a classifier's thresholds are kept until ``ichct postprocess`` chooses the
    ensemble's."""
    source = Path(first.run_dir) / "thresholds.json"
    if not source.is_file():
        raise InputError(source, "missing: the ensemble takes its stored decision rule from the first member")
    doc = read_json(source, "thresholds")
    if isinstance(doc, Mapping):
        doc = dict(doc)
        meta = dict(doc.get("meta") or {})
        if first.kind == "seg":
            for key in ("other_rules", "other_rules_chosen_on"):
                if key in meta:
                    meta[key] = {k: v for k, v in dict(meta[key] or {}).items() if k != "seg_peak"}
            note = "the seg_volume rule of the first member; choose seg_peak with ichct postprocess"
        else:
            note = ("the first member's thresholds, chosen for its own probabilities; choose the ensemble's with "
                    "ichct postprocess")
        doc["meta"] = {**meta, "ensemble": note}
    write_json_atomic(path, doc)
