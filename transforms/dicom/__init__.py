"""DICOM CT series reading: discovery, series choice, geometry, HU decoding.

The public entry points are :func:`read_dicom_series` (one series -> :class:`DicomVolume`) and
:func:`scan_folder` + :func:`group_series` (what a folder holds, for ``ichct info``).
"""

from .discovery import FolderScan, SkippedFile, scan_folder
from .errors import DicomIngestError
from .geometry import StackGeometry, lps_to_ras, stack_geometry
from .headers import SliceHeader
from .pseudonym import load_salt, patient_key, salt_id
from .reader import DicomVolume, check_stand_in_stack, read_dicom_series, select_series
from .series import SeriesGroup, choose_default, group_series, kernel_class, readable_on_request

__all__ = [
    "DicomIngestError",
    "DicomVolume",
    "FolderScan",
    "SeriesGroup",
    "SkippedFile",
    "SliceHeader",
    "StackGeometry",
    "check_stand_in_stack",
    "choose_default",
    "group_series",
    "kernel_class",
    "load_salt",
    "lps_to_ras",
    "patient_key",
    "read_dicom_series",
    "readable_on_request",
    "salt_id",
    "scan_folder",
    "select_series",
    "stack_geometry",
]
