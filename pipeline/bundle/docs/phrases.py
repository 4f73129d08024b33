"""A model's settings in words, shared by a bundle's metadata and its README: the encoders, the
brain-referenced HU, the test-time mirroring and the segmenter's post-processing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


__all__ = ["encoders_text", "brain_reference_text", "mirroring_text", "seg_postprocessing_text"]


def encoders_text(cfg: Mapping[str, Any]) -> str:
    """The members' slice encoders of a classifier ensemble, each named once.

    Examples
    --------
    >>> encoders_text({"network": {"members": [{"encoder": "small"}, {"encoder": "resnet10"}, {"encoder": "small"}]}})
    'small and resnet10'
    """
    names = list(dict.fromkeys(str(m.get("encoder", "densenet121")) for m in cfg["network"]["members"]))
    return " and ".join(names)


def brain_reference_text(cfg: Mapping[str, Any]) -> str:
    """How the image is brain-referenced (``brain_reference_hu``), as a sentence; empty when it is not.

    Examples
    --------
    >>> brain_reference_text({"brain_reference_hu": None})
    ''
    >>> brain_reference_text({"brain_reference_hu": 30})[:76]
    ' Each image is first shifted so that the median HU of its brain tissue is 30'
    """
    level = cfg.get("brain_reference_hu")
    if level is None:
        return ""
    return (f" Each image is first shifted so that the median HU of its brain tissue is {float(level):g} "
            "(brain-referenced HU: a scanner's calibration offset does not reach the model).")


_RAS_AXIS_NAMES = ("left-right", "front-back", "head-foot")


def mirroring_text(cfg: Mapping[str, Any], kind: str) -> str:
    """How inference mirrors its input (``tta_mirror_axes``), as a clause; empty when it does not.

    Examples
    --------
    >>> mirroring_text({"tta_mirror_axes": [0]}, "seg")
    ', averaged over the input and its mirror images (left-right; test-time mirroring)'
    >>> mirroring_text({"tta_mirror_axes": []}, "cls")
    ''
    """
    axes = [int(a) for a in cfg.get("tta_mirror_axes") or ()]
    if not axes:
        return ""
    names = [_RAS_AXIS_NAMES[a] if kind == "seg" else f"in-plane axis {a}" for a in axes]
    return f", averaged over the input and its mirror images ({', '.join(names)}; test-time mirroring)"


def seg_postprocessing_text(cfg: Mapping[str, Any], names: bool = False) -> str:
    """The segmenter's post-processing in words ("" when there is none); ``names`` adds the config keys.

    Examples
    --------
    >>> seg_postprocessing_text({"min_component_confidence": 0.7, "min_component_ml": 0.2})
    'without blood components whose mean blood probability is below 0.7 or smaller than 0.2 mL'
    """
    confidence, min_ml = float(cfg["min_component_confidence"]), float(cfg["min_component_ml"])
    parts = ([f"whose mean blood probability is below {confidence:g}"
              + (" (`min_component_confidence`)" if names else "")]
             if confidence > 0 else [])
    parts += [f"smaller than {min_ml:g} mL" + (" (`min_component_ml`)" if names else "")] if min_ml > 0 else []
    if not parts:
        return ""
    return ("blood components " + " or ".join(parts) + " are dropped") if names else (
        "without blood components " + " or ".join(parts))
