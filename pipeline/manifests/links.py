"""Pseudonymous link folders: manifest paths that name no patient.

Public data sets often name files after the patient (PhysioNet ``ct_scans/049.nii``, BHSD
``ID_<PatientID>_ID_<StudyUID>.nii.gz``, CQ500 ``CQ500CT12 CQ500CT12/``), and RSNA keeps every slice of
every series in one flat folder. For such studies the builder writes symbolic links under a link
folder next to the manifest and puts the link paths in the manifest::

    <links>/<patient_key>/<tag>/                 DICOM series (a folder link, or a folder of file links)
    <links>/<patient_key>/<tag>_image.nii[.gz]   NIfTI image
    <links>/<patient_key>/<tag>_label.nii[.gz]   NIfTI label

``tag`` is a hash of the series UID. Links point at absolute paths; rebuilding refreshes them and
removes links that no manifest entry uses any more (real files are never touched).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .model import Record, nifti_suffix

logger = logging.getLogger(__name__)


def _tag(series_uid: str) -> str:
    return hashlib.sha256(series_uid.encode("utf-8")).hexdigest()[:12]


def _symlink(target: Path, link: Path) -> None:
    target = Path(os.path.abspath(target))
    if link.is_symlink():
        if os.readlink(link) == str(target):
            return
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a link; refusing to replace it")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link, target_is_directory=target.is_dir())


class Linker:
    """Creates the link tree for one manifest and remembers what it made."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.made: set[Path] = set()

    def link(self, record: Record, patient_key: str) -> tuple[Path, Path | None]:
        """Link ``record``'s image (and label); returns the link paths."""
        folder = self.root / patient_key
        tag = _tag(record.series_uid)
        if record.kind == "dicom":
            image = folder / tag
            if record.link_files is not None:
                if image.is_symlink():
                    image.unlink()
                image.mkdir(parents=True, exist_ok=True)
                used = set()
                for f in record.link_files:
                    name = f.name
                    n = 1
                    while name in used:
                        name = f"{f.name}.{n}"
                        n += 1
                    used.add(name)
                    _symlink(f, image / name)
                    self.made.add(image / name)
            else:
                _symlink(record.image, image)
            self.made.add(image)
        else:
            image = folder / f"{tag}_image{nifti_suffix(record.image)}"
            _symlink(record.image, image)
            self.made.add(image)
        label = None
        if record.label is not None:
            label = folder / f"{tag}_label{nifti_suffix(record.label)}"
            _symlink(record.label, label)
            self.made.add(label)
        return image, label

    def prune(self) -> int:
        """Remove links under the link folder that this build did not make, then empty folders."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=False):
            here = Path(dirpath)
            for name in filenames + dirnames:
                p = here / name
                if p.is_symlink() and p not in self.made:
                    p.unlink()
                    removed += 1
            if here != self.root and here not in self.made:
                try:
                    here.rmdir()  # only when empty
                except OSError:
                    pass
        if removed:
            logger.info("removed %d stale link(s) under %s", removed, self.root)
        return removed
