"""Load a CT image or label map from a DICOM series or a NIfTI file, chosen per path.

``LoadCT`` dispatches on the path: a directory, a ``DICOMDIR`` or a ``.dcm``/``.dicom`` file is a
DICOM series (:class:`ichct.transforms.io.LoadDicomSeries`); anything else (``.nii``, ``.nii.gz``,
``.nrrd``, ...) goes to MONAI ``LoadImage`` (NiBabel for NIfTI). Either way the result is a
channel-first ``MetaTensor`` with a RAS affine. Values that are not paths (arrays, tensors,
already loaded images) pass through unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import DtypeLike, KeysCollection
from monai.transforms import LoadImage, MapTransform, Transform

from ichct.errors import InputError

from .io import LoadDicomSeries

_DICOM_SUFFIXES = {".dcm", ".dicom"}


class ImageLoadError(InputError):
    """An image file (NIfTI or other) that cannot be read; the message names the file and why.

    Examples
    --------
    >>> from ichct.transforms import ImageLoadError, LoadCT
    >>> try:
    ...     LoadCT()("no/such/scan.nii.gz")
    ... except ImageLoadError as err:
    ...     print(err)
    no/such/scan.nii.gz: no such file or folder
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(path, reason)


def is_dicom_path(path: str | os.PathLike[str]) -> bool:
    """True for a directory, a DICOMDIR or a ``.dcm``/``.dicom`` file (a DICOM series source)."""
    p = Path(path)
    return p.is_dir() or p.name.upper() == "DICOMDIR" or p.suffix.lower() in _DICOM_SUFFIXES


def _is_nifti(path: str | os.PathLike[str]) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


class LoadCT(Transform):
    """Load one CT volume (DICOM series folder or NIfTI/other image file) as a channel-first MetaTensor.

    Parameters
    ----------
    dtype
        Output dtype (float32 by default).
    series_uid, tilt_correction, resample_uneven, workers
        Passed to :class:`ichct.transforms.io.LoadDicomSeries` for DICOM input.

    Examples
    --------
    A NIfTI file (written here to a temporary folder) loads as a channel-first float32 MetaTensor:

    >>> import os, tempfile
    >>> import nibabel as nib, numpy as np
    >>> from ichct.transforms import LoadCT
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "ct.nii.gz")
    ...     nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.diag([0.5, 0.5, 5.0, 1.0])), path)
    ...     img = LoadCT()(path)
    >>> img.shape, img.dtype, img.affine.diagonal().tolist()
    (torch.Size([1, 4, 4, 2]), torch.float32, [0.5, 0.5, 5.0, 1.0])

    A DICOM series folder is read the same way, ``LoadCT()("/data/head_ct/series_3")``.
    """

    def __init__(
        self,
        dtype: DtypeLike = np.float32,
        series_uid: str | None = None,
        tilt_correction: bool = True,
        resample_uneven: bool = True,
        workers: int | None = None,
    ) -> None:
        self.dicom = LoadDicomSeries(series_uid=series_uid, tilt_correction=tilt_correction,
                                     resample_uneven=resample_uneven, workers=workers, dtype=dtype)
        self.dtype = dtype
        self.nifti = LoadImage(reader="NibabelReader", image_only=True, dtype=dtype, ensure_channel_first=True)
        self._other: LoadImage | None = None  # MONAI's reader search, built on first non-NIfTI file

    @property
    def other(self) -> LoadImage:
        """MONAI ``LoadImage`` with automatic reader choice, for files neither DICOM nor NIfTI."""
        if self._other is None:
            self._other = LoadImage(image_only=True, dtype=self.dtype, ensure_channel_first=True)
        return self._other

    def __call__(self, src: Any) -> Any:
        """Load ``src`` when it is a path; return it unchanged otherwise."""
        if not isinstance(src, (str, os.PathLike)):
            return src
        if is_dicom_path(src):
            return self.dicom(src)
        if not Path(src).exists():
            raise ImageLoadError(src, "no such file or folder")
        nifti = _is_nifti(src)
        try:
            return self.nifti(src) if nifti else self.other(src)
        except Exception as exc:  # noqa: BLE001 - truncated gzip, wrong header, no reader: name the file
            kind = "NIfTI" if nifti else "image"
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ImageLoadError(src, f"not a readable {kind} file ({type(exc).__name__}{': ' + detail if detail else ''})") from exc


class LoadCTd(MapTransform):
    """Dictionary twin of :class:`LoadCT`: each key holds a DICOM folder or an image file path.

    Parameters
    ----------
    keys
        Keys to load (images and label maps).
    dtype, series_uid, tilt_correction, resample_uneven, workers
        See :class:`LoadCT`.
    allow_missing_keys
        Skip keys absent from the data instead of raising.

    Examples
    --------
    Paths are loaded; values already loaded pass through, and missing keys are skipped when allowed:

    >>> import torch
    >>> from ichct.transforms import LoadCTd
    >>> loader = LoadCTd(["image", "label"], allow_missing_keys=True)
    >>> out = loader({"image": torch.zeros(1, 4, 4, 2)})
    >>> out["image"].shape, "label" in out
    (torch.Size([1, 4, 4, 2]), False)

    With files (not run here)::

        data = loader({"image": "/data/head_ct/series_3", "label": "labels/case_3.nii.gz"})
    """

    def __init__(
        self,
        keys: KeysCollection,
        dtype: DtypeLike = np.float32,
        series_uid: str | None = None,
        tilt_correction: bool = True,
        resample_uneven: bool = True,
        workers: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCT(dtype=dtype, series_uid=series_uid, tilt_correction=tilt_correction,
                             resample_uneven=resample_uneven, workers=workers)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
