"""MONAI loading of DICOM CT series: an ``ImageReader`` and the ``LoadDicomSeries(d)`` transforms.

``LoadDicomSeries`` behaves like MONAI's ``LoadImage``: it returns a channel-first ``MetaTensor``
(shape ``(1, X, Y, Z)``, HU) whose ``affine`` is in RAS (MONAI's convention, ``meta["space"] ==
"RAS"``), with ``original_affine``, ``spatial_shape`` and the ingest description in its meta.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImage, MapTransform
from monai.utils import MetaKeys, SpaceKeys

from .dicom import DicomVolume, read_dicom_series
from .dicom.geometry import lps_to_ras

# Scalar meta entries copied from the sidecar onto the MetaTensor (kept scalar so batches collate).
_SCALAR_META = ("series_uid", "study_uid", "patient_key", "slice_count", "source_file_count", "kernel", "transfer_syntax")


class DicomSeriesReader(ImageReader):
    """MONAI ``ImageReader`` for a folder holding a DICOM CT series (see ``read_dicom_series``).

    Parameters
    ----------
    series_uid, tilt_correction, resample_uneven, workers
        Passed to :func:`ichct.transforms.dicom.read_dicom_series`.
    affine_lps_to_ras
        Return the affine in RAS (MONAI's default for DICOM and NIfTI); else in LPS.

    Examples
    --------
    Needs a DICOM folder, so not run here::

        from monai.transforms import LoadImage
        from ichct.transforms import DicomSeriesReader

        load = LoadImage(reader=DicomSeriesReader(), image_only=True, ensure_channel_first=True)
        img = load("/data/head_ct/series_3")  # MetaTensor (1, X, Y, Z) in HU, RAS affine
        img.meta["series_uid"], img.meta["slice_count"]
    """

    def __init__(
        self,
        series_uid: str | None = None,
        tilt_correction: bool = True,
        resample_uneven: bool = True,
        workers: int | None = None,
        affine_lps_to_ras: bool = True,
    ) -> None:
        super().__init__()
        self.series_uid = series_uid
        self.tilt_correction = tilt_correction
        self.resample_uneven = resample_uneven
        self.workers = workers
        self.affine_lps_to_ras = affine_lps_to_ras

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """A directory, a DICOMDIR, or a ``.dcm`` file is ours."""
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        if len(names) != 1:
            return False
        p = Path(names[0])
        return p.is_dir() or p.name.upper() == "DICOMDIR" or p.suffix.lower() in {".dcm", ".dicom"}

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> DicomVolume:
        names = [data] if isinstance(data, (str, Path)) else list(data)
        if len(names) != 1:
            raise ValueError("DicomSeriesReader reads one folder (or one multi-frame file) at a time")
        options = dict(series_uid=self.series_uid, tilt_correction=self.tilt_correction,
                       resample_uneven=self.resample_uneven, workers=self.workers)
        options.update(kwargs)
        return read_dicom_series(names[0], **options)

    def get_data(self, img: DicomVolume) -> tuple[np.ndarray, dict]:
        affine = lps_to_ras(img.affine_lps) if self.affine_lps_to_ras else img.affine_lps.copy()
        meta: dict[str, Any] = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(img.hu_volume.shape),
            MetaKeys.SPACE: SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
            "tilt_corrected": bool(img.info["tilt"]["corrected"]),
            "ichct_ingest": json.dumps(img.info),
        }
        for key in _SCALAR_META:
            value = img.info.get(key)
            meta[key] = "" if value is None else value
        return img.hu_volume, meta


class LoadDicomSeries(LoadImage):
    """Load a DICOM CT series folder as a channel-first HU ``MetaTensor`` (RAS affine).

    Parameters
    ----------
    series_uid, tilt_correction, resample_uneven, workers, affine_lps_to_ras
        See :class:`DicomSeriesReader`.
    dtype
        Output dtype (float32 by default, like ``LoadImage``); ``None`` keeps int16 when exact.
    ensure_channel_first
        Add the channel dimension (default True).

    Examples
    --------
    Needs a DICOM folder, so not run here::

        from ichct.transforms import LoadDicomSeries

        img = LoadDicomSeries()("/data/head_ct/series_3")
        img.shape               # (1, 512, 512, 32)
        img.meta["space"]       # "RAS"
        img.meta["kernel"]      # e.g. "H30s"
    """

    def __init__(
        self,
        series_uid: str | None = None,
        tilt_correction: bool = True,
        resample_uneven: bool = True,
        workers: int | None = None,
        affine_lps_to_ras: bool = True,
        dtype: Any = np.float32,
        ensure_channel_first: bool = True,
        image_only: bool = True,
    ) -> None:
        reader = DicomSeriesReader(series_uid=series_uid, tilt_correction=tilt_correction,
                                   resample_uneven=resample_uneven, workers=workers,
                                   affine_lps_to_ras=affine_lps_to_ras)
        super().__init__(reader=reader, image_only=image_only, dtype=dtype, ensure_channel_first=ensure_channel_first)
        self.dicom_reader = reader

    def __call__(self, filename: Sequence[str | Path] | str | Path, reader: ImageReader | None = None):  # type: ignore[override]
        return super().__call__(filename, reader=reader or self.dicom_reader)


class LoadDicomSeriesd(MapTransform):
    """Dictionary twin of :class:`LoadDicomSeries`: each key holds a DICOM folder path.

    Parameters
    ----------
    keys
        Keys holding DICOM folder paths.
    series_uid, tilt_correction, resample_uneven, workers, affine_lps_to_ras, dtype, ensure_channel_first
        See :class:`LoadDicomSeries`.
    allow_missing_keys
        Skip keys absent from the data instead of raising.

    Examples
    --------
    Needs a DICOM folder, so not run here::

        from ichct.transforms import LoadDicomSeriesd

        data = LoadDicomSeriesd("image")({"image": "/data/head_ct/series_3"})
        data["image"].shape     # (1, 512, 512, 32), HU
    """

    def __init__(
        self,
        keys: KeysCollection,
        series_uid: str | None = None,
        tilt_correction: bool = True,
        resample_uneven: bool = True,
        workers: int | None = None,
        affine_lps_to_ras: bool = True,
        dtype: Any = np.float32,
        ensure_channel_first: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadDicomSeries(series_uid=series_uid, tilt_correction=tilt_correction,
                                      resample_uneven=resample_uneven, workers=workers,
                                      affine_lps_to_ras=affine_lps_to_ras, dtype=dtype,
                                      ensure_channel_first=ensure_channel_first)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
