"""Deprecated module path: the training data and transforms live in :mod:`ichct.pipeline.models.data`.

Kept for the names the published bundles' ``configs/train.json`` use as ``_target_``.
"""

from ichct.pipeline.models.data import cls_collate, cls_items, cls_transforms  # noqa: F401 - re-exported
from ichct.pipeline.models.data import pos_weight_auto, seg_items, seg_transforms  # noqa: F401 - re-exported
