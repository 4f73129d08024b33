"""Spatial normalisation: orientation to RAS (``ToRAS``) and resampling to a spacing (``ResampleToSpacing``).

Both are thin subclasses of MONAI transforms (``Orientation(d)`` and ``Spacing(d)``), so they work
on the ``MetaTensor`` affine, support lazy resampling and are inverted by ``Invertd``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import Orientation, Orientationd, Spacing, Spacingd
from monai.utils import GridSampleMode, GridSamplePadMode, ensure_tuple

from .crop import voxel_spacing

RAS = "RAS"
ORTHOGONAL_SNAP_TOLERANCE = 1e-4  # largest direction-cosine error treated as storage rounding


def orthogonalised_affine(affine: Any, tolerance: float = ORTHOGONAL_SNAP_TOLERANCE) -> np.ndarray | None:
    """The affine with its direction cosines made exactly orthonormal, or None when no change is due.

    NIfTI keeps affines in float32, so an oblique (e.g. gantry-tilt corrected) grid comes back with
    direction cosines orthogonal only to about 1e-7. MONAI ``Spacing`` places its output grid at
    the input's corner only when the two grids' axes agree to 1e-8, and centres it otherwise, so
    such rounding moved the resampled grid by up to a voxel. Directions within ``tolerance`` of
    orthonormal are replaced by the nearest orthonormal ones (polar decomposition), spacing and
    origin kept; a genuinely sheared affine (a tilted stack kept as acquired) is left alone.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        return None
    spacing = voxel_spacing(a)
    if np.any(spacing <= 0):
        return None
    direction = a[:3, :3] / spacing
    u, _, vt = np.linalg.svd(direction)
    nearest = u @ vt
    error = float(np.max(np.abs(nearest - direction)))
    if error <= 1e-12 or error > tolerance:  # exact to float64 already, or a real shear
        return None
    out = a.copy()
    out[:3, :3] = nearest * spacing
    return out


def _with_orthogonal_affine(img: Any) -> Any:
    """``img`` (a copy when changed) whose affine is exactly orthogonal; see :func:`orthogonalised_affine`."""
    if not isinstance(img, MetaTensor) or img.pending_operations:
        return img
    snapped = orthogonalised_affine(img.affine)
    if snapped is None:
        return img
    out = img.clone()
    out.affine = torch.as_tensor(snapped, dtype=torch.float64)
    return out


def spacing_tuple(spacing_mm: Sequence[float] | float) -> tuple[float, ...]:
    """``spacing_mm`` as a tuple of floats, refused unless every value is a positive number.

    Examples
    --------
    >>> spacing_tuple([2, 2, 3])
    (2.0, 2.0, 3.0)
    >>> spacing_tuple([2.0, 0.0])
    Traceback (most recent call last):
    ...
    ValueError: spacing_mm must be positive numbers (mm), got [2.0, 0.0]
    """
    values = ensure_tuple(spacing_mm)
    try:
        out = tuple(float(s) for s in values)
    except (TypeError, ValueError):
        out = ()
    if not out or not all(np.isfinite(s) and s > 0 for s in out):
        raise ValueError(f"spacing_mm must be positive numbers (mm), got {spacing_mm!r}")
    return out


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

    Examples
    --------
    An LAS image (first axis runs to the left) is flipped along that axis:

    >>> import torch
    >>> from monai.data import MetaTensor
    >>> from ichct.transforms import ToRAS
    >>> img = MetaTensor(torch.arange(24.0).reshape(1, 4, 3, 2), affine=torch.diag(torch.tensor([-1.0, 1.0, 2.0, 1.0])))
    >>> out = ToRAS()(img)
    >>> out.shape, out.affine.diagonal().tolist(), out[0, :, 0, 0].tolist()
    (torch.Size([1, 4, 3, 2]), [1.0, 1.0, 2.0, 1.0], [18.0, 12.0, 6.0, 0.0])
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

    Examples
    --------
    >>> import torch
    >>> from monai.data import MetaTensor
    >>> from ichct.transforms import ToRASd
    >>> lps = torch.diag(torch.tensor([-1.0, -1.0, 5.0, 1.0]))  # LPS-ordered voxel axes, RAS affine
    >>> data = {k: MetaTensor(torch.zeros(1, 4, 3, 2), affine=lps) for k in ("image", "label")}
    >>> out = ToRASd(["image", "label"])(data)
    >>> out["image"].affine.diagonal().tolist(), out["label"].affine.diagonal().tolist()
    ([1.0, 1.0, 5.0, 1.0], [1.0, 1.0, 5.0, 1.0])
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

    Examples
    --------
    Three 5 mm slices (10 mm from first to last) become six 2 mm slices; 1 mm in plane is kept:

    >>> import torch
    >>> from monai.data import MetaTensor
    >>> from ichct.transforms import ResampleToSpacing
    >>> img = MetaTensor(torch.zeros(1, 6, 6, 3), affine=torch.diag(torch.tensor([1.0, 1.0, 5.0, 1.0])))
    >>> out = ResampleToSpacing((1.0, 1.0, 2.0))(img)
    >>> out.shape, out.affine.diagonal().tolist()
    (torch.Size([1, 6, 6, 6]), [1.0, 1.0, 2.0, 1.0])
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
        self.spacing_mm = spacing_tuple(spacing_mm)
        interp = mode if mode is not None else (GridSampleMode.NEAREST if label else GridSampleMode.BILINEAR)
        super().__init__(pixdim=self.spacing_mm, mode=interp, padding_mode=padding_mode, dtype=dtype, lazy=lazy)

    def __call__(self, data_array: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """MONAI ``Spacing`` on ``data_array`` with float32-rounded direction cosines made orthonormal."""
        return super().__call__(_with_orthogonal_affine(data_array), *args, **kwargs)


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

    Examples
    --------
    The label map is resampled with nearest neighbour, so it keeps its label values:

    >>> import torch
    >>> from monai.data import MetaTensor
    >>> from ichct.transforms import ResampleToSpacingd
    >>> affine = torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0]))
    >>> label = torch.zeros(1, 4, 4, 2)
    >>> label[0, 1:3, 1:3] = 3.0
    >>> data = {"image": MetaTensor(torch.rand(1, 4, 4, 2), affine=affine), "label": MetaTensor(label, affine=affine)}
    >>> out = ResampleToSpacingd("image", spacing_mm=1.0, label_keys="label")(data)
    >>> out["image"].shape, out["label"].shape, out["label"].unique().tolist()
    (torch.Size([1, 7, 7, 6]), torch.Size([1, 7, 7, 6]), [0.0, 3.0])
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
        self.spacing_mm = spacing_tuple(spacing_mm)
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
        # the same Spacing, with the orthonormal-direction guard of ResampleToSpacing
        self.spacing_transform = ResampleToSpacing(self.spacing_mm, dtype=dtype, lazy=lazy)
