"""Blank everything outside the intracranial space of a HU image (skull stripping by threshold).

Why: in the brain window (40/80) acute blood (60-90 HU) and bone (> 300 HU) are both white, so a
subdural or epidural rim one or two pixels wide along the inner table looks like a slightly thicker
skull. With the skull and scalp replaced by air the same rim is a white line against black, and a
small network sees it. Extra-axial blood is inside the skull and kept: the mask is
:func:`~ichct.transforms.crop.brain_mask` (the region the skull encloses, calcifications refilled),
and a head without a closed skull (craniectomy, a cropped or already stripped image) falls back to
the head mask, i.e. only air outside the head is touched.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type

from ichct.transforms.crop import BODY_HU, SKULL_HU, HeadSelector

AIR_HU = -1000.0


class StripSkull(Transform):
    """Set voxels of a channel-first HU image outside the intracranial space to ``fill_hu``.

    Parameters
    ----------
    fill_hu
        Value written outside the mask (default -1000 HU, air: 0 in every window).
    skull_threshold, body_threshold
        HU thresholds of :func:`~ichct.transforms.crop.brain_mask`.

    Notes
    -----
    The mask comes from channel 0 and applies to every channel; shape, dtype, meta and affine are
    kept (a ``MetaTensor`` stays one).

    Examples
    --------
    >>> import torch
    >>> from ichct.transforms import StripSkull
    >>> hu = torch.full((1, 12, 12, 4), -1000.0)
    >>> hu[0, 2:10, 2:10] = 1000.0  # skull
    >>> hu[0, 3:9, 3:9] = 40.0      # brain
    >>> out = StripSkull()(hu)
    >>> out[0, :, 5, 0].tolist()  # the skull (1000 HU) on this row is now air
    [-1000.0, -1000.0, -1000.0, 40.0, 40.0, 40.0, 40.0, 40.0, 40.0, -1000.0, -1000.0, -1000.0]
    """

    backend = [torch.Tensor.__module__, np.ndarray.__module__]

    def __init__(self, fill_hu: float = AIR_HU, skull_threshold: float = SKULL_HU,
                 body_threshold: float = BODY_HU) -> None:
        self.fill_hu = float(fill_hu)
        self.selector = HeadSelector("brain", body_threshold=body_threshold, skull_threshold=skull_threshold)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        outside = ~self.selector(img)  # (1, *spatial), broadcast over the channels
        if isinstance(img, torch.Tensor):
            return img.masked_fill(torch.as_tensor(outside, device=img.device), self.fill_hu)
        return np.where(outside, np.asarray(self.fill_hu, dtype=np.asarray(img).dtype), img)


class StripSkulld(MapTransform):
    """Dictionary twin of :class:`StripSkull` (images only: labels need no stripping).

    Parameters
    ----------
    keys
        Keys of the HU images to strip.
    fill_hu, skull_threshold, body_threshold
        See :class:`StripSkull`.
    allow_missing_keys
        Skip keys absent from the data instead of raising.

    Examples
    --------
    >>> import numpy as np
    >>> from ichct.transforms import StripSkulld
    >>> hu = np.full((1, 12, 12, 4), -1000.0, dtype=np.float32)
    >>> hu[0, 2:10, 2:10] = 1000.0
    >>> hu[0, 3:9, 3:9] = 40.0
    >>> out = StripSkulld("image")({"image": hu})["image"]
    >>> int((out > 0).sum()), float(out.max())  # 6 x 6 x 4 brain voxels left, no bone
    (144, 40.0)
    """

    backend = StripSkull.backend

    def __init__(self, keys: KeysCollection, fill_hu: float = AIR_HU, skull_threshold: float = SKULL_HU,
                 body_threshold: float = BODY_HU, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.stripper = StripSkull(fill_hu, skull_threshold, body_threshold)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.stripper(d[key])
        return d


class ReapplyStripd(MapTransform):
    """Bring a stripped copy up to date after its source image changed (a random HU transform ran).

    Where the copy (``keys``) kept the image, it takes the source's new values; where it was
    stripped (it holds ``fill_hu``) it stays stripped. So an HU effect drawn on ``image`` after
    :class:`StripSkulld` made ``stripped`` shows in both, with the expensive mask not recomputed.
    A voxel of the brain that was exactly ``fill_hu`` stays so (air inside the skull; no window
    shows a few HU of change there).

    Parameters
    ----------
    keys
        Keys of the stripped copies.
    source_key
        Key of the changed image (same shape).
    fill_hu
        The value :class:`StripSkulld` wrote outside the mask.
    allow_missing_keys
        Skip keys absent from the data instead of raising.

    Example
    -------
    >>> import torch
    >>> image, stripped = torch.tensor([[5.0, 40.0, 1200.0]]), torch.tensor([[5.0, 40.0, -1000.0]])
    >>> ReapplyStripd("stripped", "image")({"image": image + 3, "stripped": stripped})["stripped"].tolist()
    [[8.0, 43.0, -1000.0]]
    """

    backend = [torch.Tensor.__module__]

    def __init__(self, keys: KeysCollection, source_key: str = "image", fill_hu: float = AIR_HU,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key, self.fill_hu = source_key, float(fill_hu)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        source = torch.as_tensor(d[self.source_key])
        for key in self.key_iterator(d):
            copy = torch.as_tensor(d[key])
            if copy.shape != source.shape:
                raise ValueError(f"{key!r} has shape {tuple(copy.shape)}, {self.source_key!r} {tuple(source.shape)}")
            plain = copy.as_subclass(torch.Tensor)
            updated = torch.where(plain != self.fill_hu, source.as_subclass(torch.Tensor).to(plain.dtype), plain)
            d[key] = convert_to_dst_type(updated, d[key])[0]  # type, meta and affine of the copy
        return d
