"""MONAI transforms for head CT: DICOM series loading and preprocessing.

This package never imports :mod:`ichct.pipeline`.
"""

from .dicom import DicomIngestError, DicomVolume, read_dicom_series, scan_folder
from .io import DicomSeriesReader, LoadDicomSeries, LoadDicomSeriesd

__all__ = [
    "DicomIngestError",
    "DicomSeriesReader",
    "DicomVolume",
    "LoadDicomSeries",
    "LoadDicomSeriesd",
    "read_dicom_series",
    "scan_folder",
]
