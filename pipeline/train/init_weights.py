"""Initial weights of a training run (``ichct train --init-weights``): fine-tune a trained model.

A run can start from the weights of a trained model of the same kind and network instead of a
random draw, as nnU-Net's ``-pretrained_weights``: a shipped bundle fine-tuned on a hospital's own
studies, or a model trained on again with a new schedule. The source is a training run folder
(its ``best.pt``), a bundle folder (``models/model.pt``) or a checkpoint file; its weights must fit
the new run's network exactly (the same layers and shapes). The new run records where its weights
came from (``config.json``'s ``init_weights``: path and sha256) and the source model's own
training record (``train_patients.json``'s ``initial_weights``), so evaluation refuses the
patients that trained the initial weights too.

An ensemble (``ichct ensemble``, the committed segmenter since 0.10.0) holds several networks; a run
of one network starts from one of them, named after the source: ``MODEL#2`` is its second member.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ichct.errors import InputError, read_json
from ichct.networks import ensemble_size, member_state_dict
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.core.weights import model_state_dict

__all__ = ["InitWeights", "load_init_weights", "member_state", "split_member", "weights_file", "weights_source"]

#: ``MODEL#N``: the N-th member (from 1) of an ensemble's weights
_MEMBER = re.compile(r"^(?P<path>.+)#(?P<member>[0-9]+)$")


@dataclass
class InitWeights:
    """Weights a run starts from: ``state`` (a state dict), ``source`` (``path``, ``sha256``, ``kind``)
    and the source model's training record (``None`` when it has none)."""

    state: dict[str, torch.Tensor]
    source: dict[str, Any]
    record: dict[str, Any] | None = field(default=None)

    def load_into(self, network: torch.nn.Module) -> None:
        """Copy the weights into ``network``; :class:`~ichct.errors.InputError` naming the source and
        the layers or shapes that differ when they do not fit."""
        try:
            network.load_state_dict(self.state)
        except RuntimeError as exc:  # missing or unexpected layers, other shapes
            detail = " ".join(str(exc).split())
            n = ensemble_size(self.state)
            hint = (f"; they are an ensemble of {n} networks: start from one of them with --init-weights MODEL#1 "
                    f"(members 1-{n})" if n and not hasattr(network, "members") else "")
            raise InputError(self.source["path"], f"initial weights do not fit the run's network{hint}: "
                                                  f"{detail[:600]}") from None


def split_member(path: str | Path) -> tuple[Path, int | None]:
    """``(model path, member)`` of ``MODEL#N`` (member N, from 1), or ``(path, None)``: a path that
    exists as written is never split.

    Examples
    --------
    >>> split_member("bundles/ich_ct_segmentation#2")
    (PosixPath('bundles/ich_ct_segmentation'), 2)
    >>> split_member("runs/seg")
    (PosixPath('runs/seg'), None)
    """
    match = _MEMBER.match(str(path))
    if match is None or Path(path).exists():
        return Path(path), None
    return Path(match["path"]), int(match["member"])


def member_state(state: dict[str, torch.Tensor], member: int, path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of ``member`` (from 1) of the ensemble ``state``, as one network's state dict;
    :class:`~ichct.errors.InputError` naming ``path`` when it is no ensemble or has no such member."""
    n = ensemble_size(state)
    if n == 0:
        raise InputError(path, f"member {member} asked for (#{member}), but the weights are one network, not an ensemble")
    if not 1 <= member <= n:
        raise InputError(path, f"the ensemble has members 1-{n}, not {member}")
    return member_state_dict(state, member - 1)


def weights_file(path: Path) -> tuple[Path, Path | None, Path | None]:
    """``(weights file, model config or None, training record or None)`` of a run, bundle or file.

    Examples
    --------
    >>> weights_file(Path("bundles/ich_ct_segmentation"))[0].as_posix()  # doctest: +SKIP
    'bundles/ich_ct_segmentation/models/model.pt'
    """
    if (path / "models" / "model.pt").is_file():  # a bundle
        models = path / "models"
        return models / "model.pt", models / "run_config.json", models / "train_patients.json"
    if (path / "best.pt").is_file():  # a training run
        return path / "best.pt", path / "config.json", path / "train_patients.json"
    if path.is_dir():
        raise InputError(path, "holds neither a training run's best.pt nor a bundle's models/model.pt")
    if not path.is_file():
        raise InputError(path, "initial weights not found (give a training run, a bundle or a .pt file)")
    return path, None, path.parent / "train_patients.json"


def weights_source(path: Path, weights: Path, sha256: str | None = None) -> dict[str, str]:
    """``path`` (the weights file), ``sha256`` and ``describes`` (:func:`_description`) of the weights
    ``weights`` of the run, bundle or file ``path``: how a run's record names the weights it used.
    ``sha256``: the file's, when the caller has already hashed its bytes.

    Examples
    --------
    >>> weights_source(Path("runs/seg"), Path("runs/seg/best.pt"))  # doctest: +SKIP
    {'path': '/abs/runs/seg/best.pt', 'sha256': '...', 'describes': 'run seg (best.pt)'}
    """
    return {"path": str(weights.resolve()), "sha256": sha256 or sha256_file(weights),
            "describes": _description(path, weights)}


def _description(path: Path, weights: Path) -> str:
    """``bundle NAME VERSION``, ``run FOLDER (best.pt)`` or ``file NAME``: what a reader of the new run's docs
    can look up."""
    if weights.parent.name == "models" and (path / "configs" / "metadata.json").is_file():
        meta = read_json(path / "configs" / "metadata.json", "bundle metadata")
        return f"bundle {meta.get('name') or path.resolve().name} {meta.get('version', '')}".strip()
    if weights.name == "best.pt" and path.is_dir():
        return f"run {path.resolve().name} (best.pt)"
    return f"file {weights.name}"


def _read_weights(weights: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in ``weights`` and the sha256 of its bytes, from one read of the file."""
    data = weights.read_bytes()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or objects weights_only refuses
        raise InputError(weights, f"cannot be read as weights ({type(exc).__name__}: {exc})") from None
    return model_state_dict(obj, weights), hashlib.sha256(data).hexdigest()


def load_init_weights(path: str | Path, kind: str) -> InitWeights:
    """Read the initial weights of a ``kind`` run from a training run, a bundle or a checkpoint file.

    Parameters
    ----------
    path
        A training run folder (``best.pt``), a bundle folder (``models/model.pt``) or a ``.pt``
        file (an ``ichct train`` checkpoint or a plain state dict), read with
        ``torch.load(..., weights_only=True)``; ``PATH#N``: member N (from 1) of an ensemble there
        (``source["member"]``), whose training record stays the whole ensemble's.
    kind
        ``"seg"`` or ``"cls"``: a run or bundle of the other kind is refused.

    Returns
    -------
    InitWeights
        The state dict, its source (``path``, ``sha256``, ``kind``) and the source's training
        record when it has one (``train_patients.json`` of the run or bundle, or beside the file).

    Raises
    ------
    ichct.errors.InputError
        Naming the path: nothing there, not weights, a model of the other kind, or a member asked
        of weights that are no ensemble or have no such member.

    Examples
    --------
    >>> load_init_weights("no_such_run", "seg")
    Traceback (most recent call last):
    ...
    ichct.errors.InputError: no_such_run: initial weights not found (give a training run, a bundle or a .pt file)
    """
    model, member = split_member(path)
    weights, config, record_path = weights_file(model)
    source_kind = read_json(config, "run config").get("kind") if config is not None and config.is_file() else None
    if source_kind is not None and source_kind != kind:
        raise InputError(path, f"is a {source_kind} model; a {kind} run needs {kind} weights")
    state, sha256 = _read_weights(weights)
    record = None
    if record_path is not None and record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))  # an ensemble's: every member's patients
    source = {**weights_source(model, weights, sha256), "kind": source_kind or kind}
    if member is not None:
        state = member_state(state, member, model)
        source.update(member=member, describes=f"{source['describes']}, member {member}")
    return InitWeights(state=state, source=source, record=record if isinstance(record, dict) else None)
