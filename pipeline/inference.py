"""Deprecated module path: inference lives in :mod:`ichct.pipeline.models.inference`.

Kept: the preprocessing that the published bundles' ``configs/inference.json`` name, and
``predict_study``, which their ``docs/README.md`` names.
"""

from ichct.pipeline.models.inference import cls_eval_transforms, predict_study, seg_eval_transforms  # noqa: F401
