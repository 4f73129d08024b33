"""The rule object: :class:`DecisionRule`, a rule's name, parameters and threshold(s), stored as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision.checks import check_k, check_threshold
from ichct.pipeline.decision.names import RULES

__all__ = ["DecisionRule"]


@dataclass(frozen=True)
class DecisionRule:
    """A volume-level decision rule with its threshold(s), serialisable to JSON.

    Parameters
    ----------
    name
        One of :data:`RULES`.
    threshold
        One threshold for every subtype, or a mapping subtype -> threshold. Probability in
        ``(0, 1]`` for the slice rules, ``seg_peak`` and ``fused``, mL (> 0) for ``seg_volume``. A CT
        is positive for a subtype when its score is ``>=`` the threshold.
    k
        Adjacent slices (``consecutive``, ``fused``) or slices averaged (``topk_mean``).
    min_component_ml
        ``seg_volume``: components smaller than this (mL) are ignored.
    num_seg_classes
        ``seg_volume`` with label maps: 2 or 6 (see :func:`segmentation_volumes`).
    connectivity
        ``seg_volume``: connectivity of the components (1 = 6-neighbourhood in 3D).
    meta
        Free JSON-serialisable metadata, e.g. how the threshold was chosen.

    Examples
    --------
    >>> rule = DecisionRule("consecutive", threshold=0.4, k=3)
    >>> DecisionRule.from_json(rule.to_json()) == rule
    True
    """

    name: str
    threshold: float | Mapping[str, float]
    k: int = 3
    min_component_ml: float = 0.0
    num_seg_classes: int | None = None
    connectivity: int = 1
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"rule name must be one of {RULES}, got {self.name!r}")
        object.__setattr__(self, "k", check_k(self.k))
        if isinstance(self.threshold, Mapping):
            if not self.threshold:
                raise ValueError("threshold mapping is empty")
            th = {str(s): check_threshold(v, self.name) for s, v in self.threshold.items()}
        else:
            th = check_threshold(self.threshold, self.name)
        object.__setattr__(self, "threshold", th)
        mc = float(self.min_component_ml)
        if not (math.isfinite(mc) and mc >= 0):
            raise ValueError(f"min_component_ml must be >= 0, got {self.min_component_ml!r}")
        object.__setattr__(self, "min_component_ml", mc)
        if self.num_seg_classes is not None and self.num_seg_classes not in (2, len(LABEL_NAMES)):
            raise ValueError(f"num_seg_classes must be 2, {len(LABEL_NAMES)} or None, got {self.num_seg_classes}")
        if self.connectivity not in (1, 2, 3):
            raise ValueError(f"connectivity must be 1, 2 or 3, got {self.connectivity}")
        try:
            meta = json.loads(json.dumps(dict(self.meta)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta must be JSON-serialisable: {exc}") from exc
        object.__setattr__(self, "meta", meta)

    def threshold_for(self, subtype: str) -> float:
        """Threshold of one subtype (``KeyError`` when a per-subtype mapping lacks it)."""
        if isinstance(self.threshold, Mapping):
            if subtype not in self.threshold:
                raise KeyError(f"rule {self.name!r} has no threshold for subtype {subtype!r}")
            return float(self.threshold[subtype])
        return float(self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON types only)."""
        d = dataclasses.asdict(self)
        d["threshold"] = dict(self.threshold) if isinstance(self.threshold, Mapping) else self.threshold
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionRule:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DecisionRule field(s): {sorted(unknown)}")
        return cls(**dict(data))

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DecisionRule:
        """Rule from JSON text written by :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        """Write the rule as JSON to ``path``."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> DecisionRule:
        """Read a rule saved by :meth:`save`; :class:`~ichct.errors.InputError` naming the file when it is not one."""
        from ichct.errors import InputError  # here: the decision package imports nothing of ichct but its labels

        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (ValueError, TypeError) as exc:  # not JSON, not a mapping, a field unknown, missing or out of range
            raise InputError(path, f"not a valid decision rule: {exc}") from exc
