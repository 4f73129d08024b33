"""Ready-made head-CT preprocessing: load -> RAS -> resample -> crop -> window.

The spatial steps (``ToRASd``, ``ResampleToSpacingd``, ``CropHeadd``) are invertible, so a
prediction made on the preprocessed grid is mapped back to the original grid with MONAI
``Invertd``::

    pre = ct_preprocess()
    data = pre({"image": "/path/to/dicom_folder"})
    data["pred"] = model_output  # (C, *preprocessed spatial shape)
    post = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)
    back = post(data)["pred"]    # on the grid of the loaded image
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import Compose, Transform
from monai.utils import ensure_tuple

from .crop import CropHeadd
from .intensity import DEFAULT_WINDOWS, MultiWindowd
from .loading import LoadCTd
from .spatial import ResampleToSpacingd, ToRASd


def ct_preprocess(
    keys: KeysCollection = ("image",),
    label_keys: KeysCollection = ("label",),
    spacing_mm: Sequence[float] | float = (1.0, 1.0, 5.0),
    windows: Mapping[str, tuple[float, float]] | None = DEFAULT_WINDOWS,
    crop: str | None = "brain",
    margin_mm: Sequence[float] | float = 10.0,
    allow_missing_keys: bool = True,
    load: bool = True,
) -> Compose:
    """Build the head-CT preprocessing ``Compose``.

    Parameters
    ----------
    keys
        HU image keys; each holds a DICOM series folder (or ``.dcm`` file) or a NIfTI path. The
        first one is the crop's mask source.
    label_keys
        Label-map keys (NIfTI paths on the same grid as the image): reoriented, resampled with
        nearest neighbour and cropped with the image, never windowed.
    spacing_mm
        Target voxel size in mm (RAS axes: left-right, posterior-anterior, inferior-superior).
    windows
        Ordered ``name -> (level, width)`` HU windows, one output channel each; ``None`` keeps HU.
    crop
        ``"brain"`` (intracranial space), ``"head"`` or ``None`` (no crop).
    margin_mm
        Crop margin in mm.
    allow_missing_keys
        Let items lack some keys (e.g. unlabeled cases without ``"label"``).
    load
        Start with :class:`~ichct.transforms.loading.LoadCTd`; False when the data already hold
        channel-first MetaTensors.

    Returns
    -------
    monai.transforms.Compose
        Load, ``ToRASd``, ``ResampleToSpacingd``, optionally ``CropHeadd``, optionally ``MultiWindowd``.

    Examples
    --------
    On an image already in memory (``load=False``): 2 mm voxels, cropped to the brain, three windows.

    >>> import torch
    >>> from monai.data import MetaTensor
    >>> from ichct.transforms import ct_preprocess
    >>> hu = torch.full((1, 12, 12, 4), -1000.0)
    >>> hu[0, 2:10, 2:10], hu[0, 3:9, 3:9] = 1000.0, 40.0  # skull, brain
    >>> pre = ct_preprocess(spacing_mm=2.0, margin_mm=2.0, load=False)
    >>> [type(t).__name__ for t in pre.transforms]
    ['ToRASd', 'ResampleToSpacingd', 'CropHeadd', 'MultiWindowd']
    >>> pre({"image": MetaTensor(hu, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))})["image"].shape
    torch.Size([3, 8, 8, 4])
    """
    image_keys = tuple(ensure_tuple(keys))
    labels = tuple(k for k in ensure_tuple(label_keys) if k not in image_keys)
    all_keys = image_keys + labels
    if not image_keys:
        raise ValueError("at least one image key is needed")
    if crop not in (None, "brain", "head"):
        raise ValueError(f"crop must be 'brain', 'head' or None, got {crop!r}")

    steps: list[Transform] = []
    if load:
        steps.append(LoadCTd(all_keys, allow_missing_keys=allow_missing_keys))
    steps.append(ToRASd(all_keys, allow_missing_keys=allow_missing_keys))
    steps.append(ResampleToSpacingd(image_keys, spacing_mm, label_keys=labels, allow_missing_keys=allow_missing_keys))
    if crop is not None:
        steps.append(CropHeadd(all_keys, source_key=image_keys[0], mode=crop, margin_mm=margin_mm,  # type: ignore[arg-type]
                               allow_missing_keys=allow_missing_keys))
    if windows:
        steps.append(MultiWindowd(image_keys, windows=windows, allow_missing_keys=allow_missing_keys))
    return Compose(steps)
