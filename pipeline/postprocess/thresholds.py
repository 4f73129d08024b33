"""A classifier's thresholds chosen on held-out studies (``ichct postprocess`` of a classification model).

Training chooses a classifier's slice-rule thresholds on its validation fold. A model put together
after training, an ensemble of classifiers (``ichct ensemble``), or a model whose inference
settings changed after training (brain-referenced HU, test-time mirroring) predicts other
probabilities than those thresholds were chosen on. :func:`choose_slice_thresholds` predicts held-out
studies with the model as inference runs it (:func:`~ichct.pipeline.models.inference.predict_study`)
and chooses the thresholds of every slice rule as training does
(:class:`~ichct.pipeline.train.validation.ValidationCollector`: the run's ``threshold_method``, per
label), so the stored rule fits the probabilities it is applied to.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision import DecisionRule

logger = logging.getLogger("ichct.postprocess")

__all__ = ["choose_slice_thresholds", "ct_label_vector"]


def ct_label_vector(entry: Mapping[str, Any]) -> list[float]:
    """A manifest entry's six CT-level labels in :data:`~ichct.pipeline.core.labels.LABEL_NAMES` order;
    -1 where a label is unknown.

    Examples
    --------
    >>> ct_label_vector({"ct_labels": {"any": 1, "subdural": 1, "epidural": 0}})
    [1.0, 0.0, -1.0, -1.0, -1.0, 1.0]
    """
    labels = entry.get("ct_labels") or {}
    return [-1.0 if labels.get(name) is None or float(labels[name]) < 0 else float(labels[name])
            for name in LABEL_NAMES]


def choose_slice_thresholds(model: Any, entries: Sequence[Mapping[str, Any]], chosen_on: str) -> DecisionRule:
    """Predict ``entries`` with a classifier and choose its slice rules' thresholds on them.

    Parameters
    ----------
    model
        A loaded classification run or bundle (:class:`~ichct.pipeline.models.inference.LoadedModel`),
        with its inference settings.
    entries
        Manifest entries with ``image`` and ``ct_labels``, held out from the model's training.
    chosen_on
        Where the studies came from, stored in the rule's ``meta["chosen_on"]``.

    Returns
    -------
    DecisionRule
        The ``consecutive`` rule with one threshold per label (0.5 where a label has studies of one
        class only, named in ``meta["fallback_0.5"]``) and the ``max`` and ``topk_mean``
        thresholds in ``meta["other_rules"]``, as training stores them.

    Examples
    --------
    ::

        rule = choose_slice_thresholds(load_model_dir("runs/cls_ensemble"), entries, "tuning.json test")
        rule.threshold["any"]
    """
    from ichct.pipeline.models.inference import predict_study
    from ichct.pipeline.train.validation import ValidationCollector

    collector = ValidationCollector("cls", model.config)
    for n, entry in enumerate(entries, 1):
        pred = predict_study({"cls": model}, entry["image"])
        collector.add_study(pred.slice_probs, ct_label_vector(entry))
        logger.info("postprocess: %d/%d studies predicted", n, len(entries))
    rule = collector.decision_rule(epoch=model.epoch, fold=None, chosen_on=chosen_on)
    auc = collector.metrics()["val_auc_any"]
    rule.meta["auc_any"] = None if math.isnan(auc) else auc  # NaN: the studies hold one class only
    return rule
