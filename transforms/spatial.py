"""Spatial normalisation: orientation to RAS (``ToRAS``) and resampling to a spacing (``ResampleToSpacing``).

Both are thin subclasses of MONAI transforms (``Orientation(d)`` and ``Spacing(d)``), so they work
on the ``MetaTensor`` affine, support lazy resampling and are inverted by ``Invertd``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.config import DtypeLike, KeysCollection
from monai.transforms import Orientation, Orientationd, Spacing, Spacingd
from monai.utils import GridSampleMode, GridSamplePadMode, ensure_tuple

RAS = "RAS"


class ToRAS(Orientation):
    """Reorient a channel-first image so that its voxel axes run towards R, A and S.

    ``Orientation(axcodes="RAS", labels=None)`` with a fixed target: a permutation/flip of the
    array with the affine updated to match (no interpolation), inverted by ``Invertd``. With
    ``labels=None`` a MetaTensor whose ``meta["space"]`` is ``"LPS"`` is also put in anatomical
    R, A, S voxel order (its affine stays in LPS world coordinates).

    Parameters
    ----------
    lazy
        Defer the operation (MONAI lazy resampling).
    """

    def __init__(self, lazy: bool = False) -> None:
        super().__init__(axcodes=RAS, labels=None, lazy=lazy)


class ToRASd(Orientationd):
    """Dictionary twin of :class:`ToRAS` (``Orientationd(keys, axcodes="RAS")``).

    Parameters
    ----------
    keys
        Keys of the images and labels to reorient.
    allow_missing_keys
        Skip keys absent from the data instead of raising.
    lazy
        Defer the operation (MONAI lazy resampling).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, lazy: bool = False) -> None:
        super().__init__(keys, axcodes=RAS, labels=None, allow_missing_keys=allow_missing_keys, lazy=lazy)


class ResampleToSpacing(Spacing):
    """Resample a channel-first image to a voxel spacing in mm (MONAI ``Spacing``).

    Parameters
    ----------
    spacing_mm
        Target voxel size per spatial axis (one value for all axes, or one per axis).
    label
        The image is a label map: nearest-neighbour interpolation (values stay the label values).
        Otherwise linear (bilinear in 2D, trilinear in 3D).
    mode
        Explicit interpolation mode; overrides ``label``.
    padding_mode
        Values outside the input grid; ``"border"`` (default) repeats the edge voxels, which for
        CT keeps air as air rather than introducing 0 HU (water).
    dtype
        Computation dtype of the resampling.
    lazy
        Defer the operation (MONAI lazy resampling).
    """

    def __init__(
        self,
        spacing_mm: Sequence[float] | float,
        label: bool = False,
        mode: str | None = None,
        padding_mode: str = GridSamplePadMode.BORDER,
        dtype: DtypeLike = np.float64,
        lazy: bool = False,
    ) -> None:
        self.spacing_mm = tuple(float(s) for s in ensure_tuple(spacing_mm))
        interp = mode if mode is not None else (GridSampleMode.NEAREST if label else GridSampleMode.BILINEAR)
        super().__init__(pixdim=self.spacing_mm, mode=interp, padding_mode=padding_mode, dtype=dtype, lazy=lazy)


class ResampleToSpacingd(Spacingd):
    """Resample images (linear) and label maps (nearest) of a data dict to one spacing (``Spacingd``).

    Parameters
    ----------
    keys
        Image keys, resampled with linear interpolation.
    spacing_mm
        Target voxel size in mm (one value or one per spatial axis).
    label_keys
        Label-map keys, resampled with nearest-neighbour interpolation. They are added to
        ``keys`` when not already there; a key in both counts as a label.
    padding_mode
        See :class:`ResampleToSpacing`.
    dtype
        Computation dtype of the resampling.
    allow_missing_keys
        Skip keys absent from the data instead of raising.
    lazy
        Defer the operation (MONAI lazy resampling).
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing_mm: Sequence[float] | float,
        label_keys: KeysCollection = (),
        padding_mode: str = GridSamplePadMode.BORDER,
        dtype: DtypeLike = np.float64,
        allow_missing_keys: bool = False,
        lazy: bool = False,
    ) -> None:
        labels = tuple(ensure_tuple(label_keys))
        all_keys = tuple(ensure_tuple(keys)) + tuple(k for k in labels if k not in ensure_tuple(keys))
        modes = tuple(GridSampleMode.NEAREST if k in labels else GridSampleMode.BILINEAR for k in all_keys)
        self.spacing_mm = tuple(float(s) for s in ensure_tuple(spacing_mm))
        self.label_keys = labels
        super().__init__(
            all_keys,
            pixdim=self.spacing_mm,
            mode=modes,
            padding_mode=padding_mode,
            dtype=dtype,
            allow_missing_keys=allow_missing_keys,
            lazy=lazy,
        )
