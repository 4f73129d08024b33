"""Brain-referenced HU: shift a head CT so that its brain tissue sits at a fixed HU level.

Why: a CT number is only as good as the scanner's water calibration. Scanners and protocols differ
by a few HU over the whole image (the synthetic vendors by -2.5 to +3 HU), and a model that reads
blood as "brighter than about 50 HU" calls a normal brain a few HU too bright "blood" far more
often: on 60 studies of the shifted-domain benchmark (+4 HU) the committed classifier's
specificity fell from 0.93 to 0.63 with another 4 HU added
(docs/benchmarks.md#brain-referenced-hu-2026-12-06). The median of intracranial soft tissue (grey and white matter, 15 to 45 HU by default; CSF, blood and
calcification fall outside the range and barely move it) is a reference inside every head CT: this
transform shifts the whole image by ``reference_hu`` minus that median, so the model sees every
scan as one calibration. Blood stays blood: the contrast between blood and brain is unchanged.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform

from ichct.transforms.crop import BODY_HU, SKULL_HU, brain_mask

__all__ = ["brain_tissue_level", "ReferenceBrainHU", "ReferenceBrainHUd", "DEFAULT_TISSUE_RANGE_HU"]

#: HU range of the voxels whose median is the brain's level: grey and white matter (about 25-40 HU at
#: any calibration a few HU off), without CSF (0-15), acute blood (50-90) or calcification.
DEFAULT_TISSUE_RANGE_HU = (15.0, 45.0)
_RECENTRE_STEPS = 3


def brain_tissue_level(hu: NdarrayOrTensor, tissue_range_hu: Sequence[float] = DEFAULT_TISSUE_RANGE_HU,
                       min_voxels: int = 1000, skull_threshold: float = SKULL_HU,
                       body_threshold: float = BODY_HU) -> float | None:
    """Median HU of the intracranial voxels within ``tissue_range_hu`` of a 3D head CT.

    Parameters
    ----------
    hu
        3D HU volume (no channel axis), axial slices along the last axis.
    tissue_range_hu
        ``(low, high)``: only voxels strictly between them count at first; the range is then
        recentred on the median found, three times, keeping its width.
    min_voxels
        Fewer such voxels (no brain in the image): None.
    skull_threshold, body_threshold
        HU thresholds of :func:`~ichct.transforms.crop.brain_mask`.

    Returns
    -------
    float or None
        The median, or None without enough brain tissue.

    Examples
    --------
    >>> import numpy as np
    >>> hu = np.full((20, 20, 4), -1000.0, dtype=np.float32)
    >>> hu[2:18, 2:18] = 1000.0      # skull
    >>> hu[3:17, 3:17] = 34.0        # brain, 4 HU brighter than usual
    >>> hu[8:10, 8:10] = 70.0        # a small bleed: outside the tissue range
    >>> brain_tissue_level(hu, min_voxels=100)
    34.0
    """
    lo, hi = (float(v) for v in tissue_range_hu)
    volume = hu.detach().cpu().numpy() if isinstance(hu, torch.Tensor) else np.asarray(hu)
    brain = volume[brain_mask(volume, skull_threshold, body_threshold)]
    level = None
    for _ in range(_RECENTRE_STEPS + 1):
        values = brain[(brain > lo) & (brain < hi)]
        if values.size < max(int(min_voxels), 1):
            return level
        level = float(np.median(values))
        # the range, recentred on the level: a fixed range would cut one tail of a brain a few HU off
        # its centre and pull the level back towards it
        lo, hi = level - (hi - lo) / 2, level + (hi - lo) / 2
    return level


class ReferenceBrainHU(Transform):
    """Shift a channel-first HU image so that its brain tissue's median HU is ``reference_hu``.

    Parameters
    ----------
    reference_hu
        The level brain tissue is moved to (30 HU: the median of the committed synthetic cohorts).
    tissue_range_hu, min_voxels
        See :func:`brain_tissue_level`; without enough brain tissue the image is returned unchanged.
    max_shift_hu
        The shift is clipped to +-this (a scan far off is not a calibration error to undo).

    Notes
    -----
    The level is measured on channel 0 and the same shift is added to every channel; shape,
    dtype, meta and affine are kept. The shift applied is kept in a ``MetaTensor``'s meta as
    ``brain_hu_shift`` (0.0 when there was no brain to measure), the level measured as
    ``brain_tissue_hu`` (NaN without one).

    Examples
    --------
    >>> import torch
    >>> hu = torch.full((1, 20, 20, 4), -1000.0)
    >>> hu[0, 2:18, 2:18] = 1000.0
    >>> hu[0, 3:17, 3:17] = 36.0
    >>> out = ReferenceBrainHU(reference_hu=30.0, min_voxels=100)(hu)
    >>> float(out[0, 10, 10, 0]), float(out[0, 0, 0, 0])  # brain at 30 HU, air 6 HU lower too
    (30.0, -1006.0)
    """

    backend = [torch.Tensor.__module__, np.ndarray.__module__]

    def __init__(self, reference_hu: float = 30.0, tissue_range_hu: Sequence[float] = DEFAULT_TISSUE_RANGE_HU,
                 max_shift_hu: float = 15.0, min_voxels: int = 1000) -> None:
        lo, hi = (float(v) for v in tissue_range_hu)
        if not lo < hi:
            raise ValueError(f"tissue_range_hu must be (low, high) with low < high, got {list(tissue_range_hu)}")
        if max_shift_hu < 0:
            raise ValueError(f"max_shift_hu must be >= 0, got {max_shift_hu}")
        self.reference_hu, self.tissue_range_hu = float(reference_hu), (lo, hi)
        self.max_shift_hu, self.min_voxels = float(max_shift_hu), int(min_voxels)

    def measure(self, img: NdarrayOrTensor) -> tuple[float | None, float]:
        """``(level, shift)``: the brain tissue level of ``img`` (None without enough brain tissue) and
        the shift (HU) this transform adds to it (0.0 without a level, else clipped)."""
        level = brain_tissue_level(img[0], self.tissue_range_hu, self.min_voxels)
        return level, self.shift_for(level)

    def shift_for(self, level: float | None) -> float:
        """The shift (HU) for a brain tissue ``level`` (0.0 for None), clipped to +-``max_shift_hu``."""
        if level is None:
            return 0.0
        return float(np.clip(self.reference_hu - level, -self.max_shift_hu, self.max_shift_hu))

    def shift_hu(self, img: NdarrayOrTensor) -> float:
        """The shift (HU) this transform adds to ``img``."""
        return self.measure(img)[1]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        level, shift = self.measure(img)
        out = img + shift if shift else img
        if hasattr(out, "meta"):
            out.meta["brain_hu_shift"] = shift
            out.meta["brain_tissue_hu"] = float("nan") if level is None else level
        return out


class ReferenceBrainHUd(MapTransform):
    """Dictionary twin of :class:`ReferenceBrainHU` (images only: labels are not shifted).

    Parameters
    ----------
    keys
        Keys of the HU images.
    reference_hu, tissue_range_hu, max_shift_hu, min_voxels
        See :class:`ReferenceBrainHU`.
    allow_missing_keys
        Skip keys absent from the data instead of raising.

    Examples
    --------
    >>> import numpy as np
    >>> hu = np.full((1, 20, 20, 4), -1000.0, dtype=np.float32)
    >>> hu[0, 2:18, 2:18] = 1000.0
    >>> hu[0, 3:17, 3:17] = 26.0
    >>> out = ReferenceBrainHUd("image", min_voxels=100)({"image": hu})["image"]
    >>> float(out[0, 10, 10, 0])
    30.0
    """

    backend = ReferenceBrainHU.backend

    def __init__(self, keys: KeysCollection, reference_hu: float = 30.0,
                 tissue_range_hu: Sequence[float] = DEFAULT_TISSUE_RANGE_HU, max_shift_hu: float = 15.0,
                 min_voxels: int = 1000, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.shifter = ReferenceBrainHU(reference_hu, tissue_range_hu, max_shift_hu, min_voxels)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.shifter(d[key])
        return d
