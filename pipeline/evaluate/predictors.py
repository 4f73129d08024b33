"""One model under evaluation, whoever made its predictions: ichct's models or another tool's files.

``ichct evaluate`` scores a :class:`Predictor`: something that gives a
:class:`~ichct.pipeline.models.inference.StudyPrediction` for each manifest entry, with its
decision rules, what it is (for ``metrics.json`` and ``report.md``) and the training records its
leakage guard checks. :func:`ichct_predictor` wraps ichct runs or bundles (inference through
:func:`~ichct.pipeline.models.inference.predict_study`); :func:`ichct.pipeline.evaluate.external.external_predictor`
wraps predictions another tool wrote. Everything after the predictions (per-study rows, metrics,
bootstrap, report, plots, paired comparisons) is shared.

A rule of ``rules`` may be None: its scores are evaluated without a threshold (ROC/PR AUC,
calibration), and the metrics at an operating point are reported as undefined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.decision import DecisionRule

__all__ = ["Predictor", "ichct_predictor", "model_folder", "rules_info"]

#: ``(where, training record getter)``: a getter, since reading a record may fail (a run without one).
RecordSource = tuple[str, Callable[[], Mapping[str, Any]]]


@dataclass
class Predictor:
    """A model under evaluation.

    Attributes
    ----------
    name
        Short name for the report title (``seg:run0+cls:run1``, ``external:nnunet_test``).
    where
        The folder it came from (named in paired comparisons).
    rules
        ``{rule key: DecisionRule or None}`` (None: no threshold, see the module).
    predict
        ``predict(index, entry)``: the :class:`~ichct.pipeline.models.inference.StudyPrediction`
        of the ``index``-th entry of the evaluated split.
    info
        What ``metrics.json["model"]`` says of it besides name and rules (``{"runs": ...}`` or
        ``{"external": ...}``).
    records
        Training records for the leakage guard (:func:`ichct.pipeline.train.record.check_split`).
    warnings
        Lines that head the report (e.g. missing predictions counted negative).

    Examples
    --------
    >>> p = Predictor("external:x", "/preds/x", {"max": None}, lambda i, e: None, {"external": {}})
    >>> rules_info(p.rules)
    {'max': {'name': 'max', 'threshold': None, 'chosen_on': 'no threshold (AUCs only)'}}
    """

    name: str
    where: str
    rules: dict[str, DecisionRule | None]
    predict: Callable[[int, Mapping[str, Any]], Any]
    info: dict[str, Any]
    records: list[RecordSource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def rules_info(rules: Mapping[str, DecisionRule | None]) -> dict[str, Any]:
    """``metrics.json["model"]["rules"]``: each rule's fields, or that it has no threshold."""
    return {k: r.to_dict() if r is not None else {"name": k, "threshold": None, "chosen_on": "no threshold (AUCs only)"}
            for k, r in rules.items()}


def model_folder(model: Any) -> str:
    """The folder a loaded ichct model came from: its bundle, else its run directory."""
    return str(model.bundle_dir if getattr(model, "bundle_dir", None) is not None else model.run_dir)


def _describe(model: Any) -> dict[str, Any]:
    """``LoadedModel.describe()`` plus, for a bundle, its folder, version and weights sha256."""
    out = model.describe()
    if getattr(model, "bundle_dir", None) is not None:
        from ichct.pipeline.bundle.package import WEIGHTS

        out["bundle_dir"] = str(model.bundle_dir)
        out["bundle_version"] = (model.run_config.get("bundle") or {}).get("version")
        out["weights_sha256"] = sha256_file(Path(model.bundle_dir) / WEIGHTS)
    return out


def ichct_predictor(models: Mapping[str, Any], rules: Mapping[str, DecisionRule]) -> Predictor:
    """ichct's seg and/or cls model (``{kind: LoadedModel}``) under ``rules``.

    Examples
    --------
    Needs trained models, so not run here::

        p = ichct_predictor({"seg": load_run("runs/seg0")}, {"seg_volume": rule})
        p.predict(0, entry).volumes_ml
    """
    from ichct.pipeline.models.inference import predict_study

    chosen = dict(rules)
    ordered = dict(sorted(models.items()))
    return Predictor(
        name="+".join(f"{k}:{Path(model_folder(m)).name}" for k, m in ordered.items()),
        where=model_folder(next(iter(models.values()))),
        rules=dict(chosen),
        predict=lambda i, e: predict_study(dict(models), e["image"], chosen),
        info={"runs": {k: _describe(m) for k, m in models.items()}},
        records=[(model_folder(m), lambda m=m: m.training_record) for m in models.values()],
    )
