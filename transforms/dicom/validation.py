"""pydicom's value validation, quieted while reading archives, and summarised once per series.

pydicom warns once per element that breaks the value rules of its VR (``Invalid value for VR
UI: 'ID_6207127578'``): on a public archive, one line per file. Ingest reads with those warnings
off (:func:`quiet_pydicom_values`) and reports what matters once per series instead
(:func:`nonconforming_uid_summary`): the UIDs that are not DICOM UIDs, which ichct keeps and
references as they are.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["quiet_pydicom_values", "is_dicom_uid", "nonconforming_uid_summary"]

#: A DICOM UID (PS3.5 9.1): dot-separated numeric components, no leading zero, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@contextlib.contextmanager
def quiet_pydicom_values() -> Iterator[None]:
    """Within the block, pydicom neither validates read values nor warns about them.

    Example
    -------
    >>> with quiet_pydicom_values():
    ...     pass
    """
    import pydicom.config as cfg

    saved = cfg.settings.reading_validation_mode
    cfg.settings.reading_validation_mode = cfg.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Invalid value for VR", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"The value length \(\d+\) exceeds", category=UserWarning)
            yield
    finally:
        cfg.settings.reading_validation_mode = saved


#: Prefix of the series key given to files without SeriesInstanceUID (see
#: :func:`~ichct.transforms.dicom.discovery.stand_in_series_uid`): never a DICOM UID, never reported as one.
STAND_IN_SERIES_PREFIX = "no-SeriesInstanceUID-"


def is_dicom_uid(value: str) -> bool:
    """True for a conforming DICOM UID.

    >>> is_dicom_uid("1.2.840.10008.5.1.4.1.1.2"), is_dicom_uid("ID_6207127578")
    (True, False)
    """
    return bool(value) and len(value) <= 64 and _UID.match(value) is not None


def nonconforming_uid_summary(headers: Iterable[Any]) -> str | None:
    """One line naming the UID attributes of a series that are not DICOM UIDs, or None.

    ``headers`` are :class:`~ichct.transforms.dicom.headers.SliceHeader` records of one series.

    >>> from types import SimpleNamespace as H
    >>> nonconforming_uid_summary([H(sop_instance_uid="ID_1", series_uid="ID_9", study_uid="ID_8",
    ...                             frame_of_reference_uid="")])
    "non-conforming UIDs kept as they are (e.g. SOPInstanceUID 'ID_1'): SOPInstanceUID in 1 of 1 file(s), SeriesInstanceUID, StudyInstanceUID"
    """
    headers = list(headers)
    fields = (("SOPInstanceUID", "sop_instance_uid"), ("SeriesInstanceUID", "series_uid"),
              ("StudyInstanceUID", "study_uid"), ("FrameOfReferenceUID", "frame_of_reference_uid"))
    parts: list[str] = []
    example = ""
    for keyword, attr in fields:
        values = [str(getattr(h, attr, "") or "") for h in headers]
        bad = [v for v in values if v and not is_dicom_uid(v) and not v.startswith(STAND_IN_SERIES_PREFIX)]
        if not bad:
            continue
        example = example or f"{keyword} {bad[0]!r}"
        per_file = keyword == "SOPInstanceUID"  # one per file; the others are shared by the series
        parts.append(f"{keyword} in {len(bad)} of {len(headers)} file(s)" if per_file else keyword)
    if not parts:
        return None
    return f"non-conforming UIDs kept as they are (e.g. {example}): " + ", ".join(parts)
