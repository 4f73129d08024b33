"""CT-level validation of the training stage: scores, AUCs and the thresholds chosen on them.

:class:`ValidationCollector` is attached to the validation engine of ``ichct train`` and wrapped
by the bundles' :class:`~ichct.pipeline.bundle.components.ValidationScores`, so both compute the
key metric and choose thresholds the same way: seg scores the blood volume of the ``seg_volume``
rule (and its peak probability, ``seg_peak``, beside it), cls the ``consecutive`` rule on slice
probabilities (and the other slice rules beside it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ichct.pipeline.decision import (SLICE_RULES, DecisionRule, choose_threshold, ct_scores, peak_probability_scores,
                                    probability_threshold, voxel_volume_ml)
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.evaluate.metrics_ct import roc_auc_known_labels

__all__ = ["ValidationCollector"]


class ValidationCollector:
    """Collects CT-level scores of the validation fold and puts AUCs into ``engine.state.metrics``.

    Parameters
    ----------
    kind
        ``"seg"`` or ``"cls"``.
    cfg
        The resolved training config (``rule_k``, ``threshold_method``; seg: ``min_component_ml``,
        ``num_classes``, ``spacing_mm``).
    gather
        Under ``torchrun``, where each rank validates a share of the fold: a function that returns
        an object of every rank (:meth:`ichct.pipeline.train.distributed.World.gather_objects`);
        the scores of every rank are then pooled before the AUCs and thresholds.

    Examples
    --------
    >>> from ichct.pipeline.models.config import resolve_config
    >>> c = ValidationCollector("seg", resolve_config("seg"))
    >>> c.scores, c.labels = [[0.0], [3.0], [1.0]], [[0.0], [1.0], [0.0]]
    >>> c.metrics()
    {'val_auc_any': 1.0}
    """

    def __init__(self, kind: str, cfg: Mapping[str, Any], gather: Callable[[Any], list[Any]] | None = None) -> None:
        self.kind, self.cfg, self.gather = kind, cfg, gather
        if kind == "cls":
            self.rule = DecisionRule("consecutive", threshold=0.5, k=int(cfg["rule_k"]))
            # the other slice rules are scored too, so their thresholds are chosen on validation as well
            self.other_rules = {name: DecisionRule(name, threshold=0.5, k=int(cfg["rule_k"]))
                                for name in SLICE_RULES if name != self.rule.name}
        else:
            self.rule = DecisionRule("seg_volume", threshold=1.0, min_component_ml=float(cfg["min_component_ml"]),
                                     num_seg_classes=int(cfg["num_classes"]))
            self.voxel_ml = voxel_volume_ml(cfg["spacing_mm"])
        self.scores: list[list[float]] = []
        self.labels: list[list[float]] = []
        self.other_scores: dict[str, list[list[float]]] = {}

    def attach(self, engine) -> None:
        """Reset at every validation epoch, collect every iteration, compute the AUCs at its end."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.compute)

    def reset(self, engine=None) -> None:
        """Forget the scores of the previous validation."""
        self.scores, self.labels, self.other_scores = [], [], {}

    def update(self, engine) -> None:
        """Add the CT-level scores and labels of the engine's current batch."""
        out = engine.state.output
        ct = engine.state.batch["ct"].cpu().numpy()
        if self.kind == "cls":
            pred = out["pred"]["logits"] if isinstance(out["pred"], Mapping) else out["pred"]
            probs = torch.sigmoid(pred.float()).cpu().numpy()
            lengths = out["label"]["lengths"].tolist()
            for b, n in enumerate(lengths):
                self.add_study(probs[b, : int(n)], ct[b].tolist())
        else:
            probs = torch.softmax(out["pred"].float(), dim=1).cpu().numpy()
            seg = probs.argmax(axis=1)
            for b in range(seg.shape[0]):
                sc = ct_scores(self.rule, segmentation=seg[b], voxel_volume_ml=self.voxel_ml)
                self.scores.append([float(sc.get("any", 0.0))])
                self.labels.append([float(ct[b][0])])
                self.other_scores.setdefault("seg_peak", []).append([peak_probability_scores(probs[b])["any"]])

    def add_study(self, slice_probs: np.ndarray, ct_labels: Sequence[float]) -> None:
        """Add a classified study: its ``(S, 6)`` slice probabilities and its six CT-level labels
        (negative: unknown, left out of that label's threshold).

        Examples
        --------
        >>> from ichct.pipeline.models.config import resolve_config
        >>> c = ValidationCollector("cls", resolve_config("cls"))
        >>> c.add_study(np.full((5, 6), 0.9), [1, 0, 0, 0, 0, 1])
        >>> c.add_study(np.full((5, 6), 0.2), [0, 0, 0, 0, 0, 0])
        >>> c.metrics()["val_auc_any"]
        1.0
        """
        if self.kind != "cls":
            raise ValueError("add_study takes a classifier's slice probabilities")
        self.scores.append([ct_scores(self.rule, slice_probs=slice_probs)[s] for s in LABEL_NAMES])
        self.labels.append([float(v) for v in ct_labels])
        for name, rule in self.other_rules.items():
            osc = ct_scores(rule, slice_probs=slice_probs)
            self.other_scores.setdefault(name, []).append([osc[s] for s in LABEL_NAMES])

    def metrics(self) -> dict[str, float]:
        """``val_auc_any`` (and for cls ``val_auc_mean``, over the labels with both classes) of the
        collected scores; NaN without scores."""
        s, y = np.asarray(self.scores), np.asarray(self.labels)
        out = {"val_auc_any": roc_auc_known_labels(s[:, 0], y[:, 0]) if len(s) else float("nan")}
        if self.kind == "cls":
            aucs = [roc_auc_known_labels(s[:, j], y[:, j]) for j in range(len(LABEL_NAMES))] if len(s) else []
            good = [a for a in aucs if not math.isnan(a)]
            out["val_auc_mean"] = float(np.mean(good)) if good else float("nan")
        return out

    def compute(self, engine) -> None:
        """Put :meth:`metrics` into ``engine.state.metrics`` (first pooling the scores of every rank)."""
        if self.gather is not None:
            self._pool(self.gather((self.scores, self.labels, self.other_scores)))
        engine.state.metrics.update(self.metrics())

    def _pool(self, shares: list[tuple[list, list, dict[str, list]]]) -> None:
        """The scores of every rank's share of the validation fold, concatenated in rank order."""
        self.scores = [row for share in shares for row in share[0]]
        self.labels = [row for share in shares for row in share[1]]
        self.other_scores = {name: [row for share in shares for row in share[2].get(name, [])]
                             for name in shares[0][2]}

    def decision_rule(self, epoch: int | None, fold: int | None, chosen_on: str | None = None) -> DecisionRule:
        """Thresholds chosen on the collected validation scores (Youden by default); ``chosen_on``
        names the studies when they are not the validation fold ``fold``."""
        method = str(self.cfg["threshold_method"]) if self.kind == "cls" else "youden"  # seg configs have no choice
        meta = {"chosen_on": chosen_on or f"validation fold {fold}", "method": method, "epoch": epoch,
                "n_val": len(self.scores)}
        return self._cls_rule(method, meta) if self.kind == "cls" else self._seg_rule(method, meta)

    def _thresholds(self, scores: np.ndarray, method: str, fell_back: list[str]) -> dict[str, float]:
        """One threshold per label on ``scores`` ``(n, 6)``; 0.5 (named in ``fell_back``) where none can be chosen."""
        y = np.asarray(self.labels)
        th: dict[str, float] = {}
        for j, name in enumerate(LABEL_NAMES):
            keep = y[:, j] >= 0
            try:
                t = choose_threshold(scores[keep, j], y[keep, j] > 0, method=method)
            except ValueError:
                t, _ = 0.5, fell_back.append(name)
            th[name] = probability_threshold(t)
        return th

    def _cls_rule(self, method: str, meta: dict[str, Any]) -> DecisionRule:
        fallback: list[str] = []
        other = {name: self._thresholds(np.asarray(sc, dtype=np.float64), method, [])
                 for name, sc in self.other_scores.items()}
        threshold = self._thresholds(np.asarray(self.scores, dtype=np.float64), method, fallback)
        # thresholds of the other slice rules, chosen on the same scores
        return DecisionRule("consecutive", threshold=threshold, k=self.rule.k,
                            meta={**meta, "fallback_0.5": fallback, "other_rules": other})

    def _seg_rule(self, method: str, meta: dict[str, Any]) -> DecisionRule:
        s, y = np.asarray(self.scores, dtype=np.float64), np.asarray(self.labels)
        fallback: list[str] = []
        keep = y[:, 0] >= 0
        try:
            t = choose_threshold(s[keep, 0], y[keep, 0] > 0, method=method)
        except ValueError:
            t = 0.0
        if t <= 0:
            t, fallback = self.voxel_ml, ["any"]
        other = {}
        if self.other_scores.get("seg_peak"):  # the peak probability's threshold, chosen on the same studies
            peak = np.asarray(self.other_scores["seg_peak"], dtype=np.float64)
            try:
                other["seg_peak"] = {"any": probability_threshold(choose_threshold(peak[keep, 0], y[keep, 0] > 0,
                                                                                   method=method))}
            except ValueError:
                pass  # one class only: seg_peak keeps the default threshold
        return DecisionRule("seg_volume", threshold=float(t), min_component_ml=self.rule.min_component_ml,
                            num_seg_classes=self.rule.num_seg_classes,
                            meta={**meta, "unit": "mL", "fallback_one_voxel": fallback, "other_rules": other})
