"""The one place that builds a run's network from its resolved training config (and its test-time mirroring).

Training (:mod:`ichct.pipeline.train.engine`), inference (:mod:`ichct.pipeline.models.inference`), the bundle
configs (:mod:`ichct.pipeline.bundle.configs`, whose ``network_def`` holds the same arguments) and
bundle export all build the network here, so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ichct.pipeline.models.config import input_channels

__all__ = ["network_kwargs", "build_network", "network_name", "mirror_kwargs", "is_ensemble"]

#: ``(kind, an ensemble?)`` -> the name in :mod:`ichct.networks` that builds the run's network.
_NETWORKS: dict[tuple[str, bool], str] = {
    ("seg", False): "ich_unet3d", ("seg", True): "SegmentationEnsemble",
    ("cls", False): "SliceSequenceClassifier", ("cls", True): "ClassifierEnsemble",
}


def is_ensemble(cfg: Mapping[str, Any]) -> bool:
    """Whether a config's network is an ensemble of trained models (``network.members``, written by
    ``ichct ensemble``): :class:`~ichct.networks.SegmentationEnsemble` or
    :class:`~ichct.networks.ClassifierEnsemble`.

    Examples
    --------
    >>> is_ensemble({"network": {"members": [{}, {}]}}), is_ensemble({"network": {"channels": [8, 16]}})
    (True, False)
    """
    return "members" in dict(cfg.get("network") or {})


def network_kwargs(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a run's network.

    Parameters
    ----------
    kind
        ``"seg"`` or ``"cls"``.
    cfg
        The resolved training config of the run.

    Returns
    -------
    dict
        ``in_channels`` (and ``out_channels`` for seg) followed by the config's ``network`` entries.

    Raises
    ------
    ValueError
        ``kind`` is neither ``"seg"`` nor ``"cls"``.
    TypeError
        The config's ``network`` sets an argument that ichct derives (``in_channels``, ``out_channels``).

    Examples
    --------
    >>> from ichct.pipeline.models.config import resolve_config
    >>> network_kwargs("seg", resolve_config("seg"))["out_channels"]
    2
    """
    if kind == "seg":
        derived = {"in_channels": input_channels(kind, cfg), "out_channels": int(cfg["num_classes"])}
    elif kind == "cls":
        derived = {"in_channels": input_channels(kind, cfg)}
    else:
        raise ValueError(f"kind must be 'seg' or 'cls', got {kind!r}")
    network = dict(cfg["network"])
    clash = sorted(set(derived) & set(network))
    if clash:  # as a call with the same keyword twice
        raise TypeError(f"got multiple values for keyword argument(s) {', '.join(map(repr, clash))}")
    return {**derived, **network}


def build_network(kind: str, cfg: Mapping[str, Any]) -> torch.nn.Module:
    """The (freshly initialised) network of a run: the constructor of ``kind`` with :func:`network_kwargs`.

    Parameters
    ----------
    kind
        ``"seg"`` (:func:`ichct.networks.ich_unet3d`) or ``"cls"``
        (:class:`ichct.networks.SliceSequenceClassifier`); their ensembles
        (:class:`~ichct.networks.SegmentationEnsemble`, :class:`~ichct.networks.ClassifierEnsemble`)
        when the config's network lists ``members``.
    cfg
        The resolved training config of the run.

    Returns
    -------
    torch.nn.Module
        The network in training mode, weights drawn from torch's RNG.

    Raises
    ------
    TypeError, ValueError
        The config's open ``network`` arguments do not fit the constructor.

    Examples
    --------
    >>> from ichct.pipeline.models.config import resolve_config
    >>> type(build_network("cls", resolve_config("cls"))).__name__
    'SliceSequenceClassifier'
    """
    import ichct.networks

    kwargs = network_kwargs(kind, cfg)  # ValueError for another kind
    return getattr(ichct.networks, network_name(kind, cfg).rpartition(".")[2])(**kwargs)


def network_name(kind: str, cfg: Mapping[str, Any]) -> str:
    """The dotted name of what builds a run's network: what :func:`build_network` calls, a bundle's
    training ``network_def`` names and its docs cite.

    Examples
    --------
    >>> network_name("cls", {"network": {"members": [{}, {}]}}), network_name("seg", {"network": {}})
    ('ichct.networks.ClassifierEnsemble', 'ichct.networks.ich_unet3d')
    """
    if kind not in ("seg", "cls"):
        raise ValueError(f"kind must be 'seg' or 'cls', got {kind!r}")
    return f"ichct.networks.{_NETWORKS[(kind, is_ensemble(cfg))]}"


def mirror_kwargs(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """Arguments of :class:`~ichct.networks.MirrorEnsembleInferer` (besides the inferer it wraps) for a
    run's ``tta_mirror_axes``; None when the run does not mirror.

    Validation (``ichct train``, a bundle's ``train.json``), inference and evaluation wrap their
    inferer with these, so thresholds are chosen on the predictions they are applied to. The
    segmenter's output is mirrored back; the classifier's per-slice logits are taken from its
    output (a dict in training) and averaged as they are.

    Examples
    --------
    >>> mirror_kwargs("cls", {"tta_mirror_axes": [0]})
    {'mirror_axes': [0], 'spatial_output': False, 'output_key': 'logits'}
    >>> mirror_kwargs("seg", {}) is None
    True
    """
    axes = [int(a) for a in cfg.get("tta_mirror_axes") or ()]
    if not axes:
        return None
    return {"mirror_axes": axes, "spatial_output": kind == "seg", "output_key": None if kind == "seg" else "logits"}
