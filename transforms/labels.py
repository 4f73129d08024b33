"""Training labels: voxel label maps as the segmenter learns them, and checks that labels fit their image.

* :class:`BloodLabels` / :class:`BloodLabelsd` - a voxel label map (0 background, 1-5 the
  hemorrhage subtypes) as the training target of a ``num_classes`` model: any blood (label > 0)
  for 2 classes, the subtypes (clipped to 0..5) for 6;
* :class:`CheckSliceCountd` - the image has as many slices as the study has slice-label rows;
* :class:`CheckSameGridd` - a voxel label lies on the grid of its image.

The checks raise :class:`~ichct.errors.InputError` naming the file, so a study whose labels would
be misaligned stops training with a message instead of teaching the network wrong labels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform

from ichct.errors import InputError

__all__ = ["BloodLabels", "BloodLabelsd", "CheckSliceCountd", "CheckSameGridd"]


class BloodLabels(Transform):
    """A voxel label map as the float32 training target of a segmenter with ``num_classes`` classes.

    Parameters
    ----------
    num_classes
        2: background and any blood (every label > 0 becomes 1); 6: background and the five
        subtypes (labels clipped to 0..5).

    Examples
    --------
    >>> import torch
    >>> from ichct.transforms import BloodLabels
    >>> labels = torch.tensor([[0.0, 1.0, 3.0, 5.0]])
    >>> BloodLabels(2)(labels).tolist(), BloodLabels(6)(labels).tolist()
    ([[0.0, 1.0, 1.0, 1.0]], [[0.0, 1.0, 3.0, 5.0]])
    """

    backend = [torch.Tensor.__module__]

    def __init__(self, num_classes: int) -> None:
        if int(num_classes) not in (2, 6):
            raise ValueError(f"num_classes must be 2 (any blood) or 6 (the subtypes), got {num_classes!r}")
        self.num_classes = int(num_classes)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        t = torch.as_tensor(img)
        if self.num_classes == 2:
            return (t > 0).to(torch.float32)
        return t.clamp(0, 5).to(torch.float32)


class BloodLabelsd(MapTransform):
    """Dictionary twin of :class:`BloodLabels`.

    Examples
    --------
    >>> import torch
    >>> from ichct.transforms import BloodLabelsd
    >>> BloodLabelsd("label", num_classes=2)({"label": torch.tensor([[0.0, 4.0]])})["label"].tolist()
    [[0.0, 1.0]]
    """

    backend = BloodLabels.backend

    def __init__(self, keys: KeysCollection, num_classes: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mapper = BloodLabels(num_classes)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.mapper(d[key])
        return d


def _source(img: Any) -> str:
    """The file a loaded image came from (its MetaTensor's ``filename_or_obj``), for messages."""
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or "a study")


class CheckSliceCountd(MapTransform):
    """Refuse a study whose slice count differs from its slice-label rows (the labels would misalign).

    Parameters
    ----------
    keys
        The image key (its last axis holds the slices).
    labels_key
        Key of the ``(slices, 6)`` slice labels.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from ichct.transforms import CheckSliceCountd
    >>> item = {"image": torch.zeros(1, 4, 4, 3), "slice_labels": np.zeros((2, 6))}
    >>> CheckSliceCountd()(item)
    Traceback (most recent call last):
    ...
    ichct.errors.InputError: a study: 3 slices but 2 slice-label rows in the manifest
    """

    def __init__(self, keys: KeysCollection = "image", labels_key: str = "slice_labels") -> None:
        super().__init__(keys)
        self.labels_key = labels_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            n_img, n_lab = int(d[key].shape[-1]), int(len(d[self.labels_key]))
            if n_img != n_lab:
                raise InputError(_source(d[key]), f"{n_img} slices but {n_lab} slice-label rows in the manifest")
        return d


class CheckSameGridd(MapTransform):
    """Refuse a voxel label whose grid differs from its image's (the target would misalign).

    Parameters
    ----------
    keys
        The image key, then the label key.

    Examples
    --------
    >>> import torch
    >>> from ichct.transforms import CheckSameGridd
    >>> CheckSameGridd()({"image": torch.zeros(1, 4, 4, 3), "label": torch.zeros(1, 4, 4, 3)})["label"].shape
    torch.Size([1, 4, 4, 3])
    """

    def __init__(self, keys: KeysCollection = ("image", "label")) -> None:
        super().__init__(keys)
        if len(self.keys) != 2:
            raise ValueError(f"CheckSameGridd needs two keys (image, label), got {list(self.keys)}")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image, label = d[self.keys[0]], d[self.keys[1]]
        if tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise InputError(_source(label), f"label grid {tuple(label.shape[1:])} differs from the grid "
                                             f"{tuple(image.shape[1:])} of its image {_source(image)}")
        return d
