"""Pseudonymous link folders: manifest paths that name no patient.

Public data sets often name files after the patient (PhysioNet ``ct_scans/049.nii``, BHSD
``ID_<PatientID>_ID_<StudyUID>.nii.gz``, CQ500 ``CQ500CT12 CQ500CT12/``), and RSNA keeps every slice of
every series in one flat folder. For such studies the builder writes symbolic links under a link
folder next to the manifest and puts the link paths in the manifest::

    <links>/<patient_key>/<tag>/                 DICOM series (a folder link, or a folder of file links)
    <links>/<patient_key>/<tag>_image.nii[.gz]   NIfTI image
    <links>/<patient_key>/<tag>_label.nii[.gz]   NIfTI label

``tag`` is a hash of the series UID. Links point at absolute paths.

A build makes its whole link tree in a staging folder beside ``<links>`` (:attr:`Linker.staging`;
the folders of file links several at a time, :meth:`Linker.make_folder_links`), is checked against
it, and only then swaps it in with the manifest (:meth:`Linker.swap_in`). A build that fails
leaves the old manifest's links as they were; a rebuild drops links no entry uses any more. A link
folder that holds anything but links and folders is never replaced (real files are never touched).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ichct.errors import InputError
from ichct.pipeline.core.atomic import temp_dir_beside
from ichct.pipeline.core.cluster import usable_cores

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


def check_replaceable(root: Path) -> None:
    """Raise :class:`~ichct.errors.InputError` unless ``root`` is absent or a folder of links and folders only.

    Parameters
    ----------
    root
        A link folder that a build would replace.
    """
    if not os.path.lexists(root):
        return
    if root.is_symlink() or not root.is_dir():
        raise InputError(root, "exists and is not a link folder; refusing to replace it (choose another --link-dir)")
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                raise InputError(root, f"holds {p}, which is not a link; refusing to replace the folder "
                                       "(choose another --link-dir)")


class Linker:
    """Makes one manifest's link tree in a staging folder, then swaps it in place of the old one.

    Parameters
    ----------
    root
        Where the link folder lives once installed (``<out stem>.links`` or ``--link-dir``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.staging: Path | None = None  # made on the first link
        self._old: Path | None = None  # the previous link folder, moved aside during swap_in
        self._installed = False
        self._pending: dict[Path, list[list[Path]]] = {}  # folder -> the file lists queued for it

    def link(self, record: Record, patient_key: str) -> tuple[Path, Path | None]:
        """Link ``record``'s image (and label) in the staging folder.

        A folder of file links (``record.link_files``) is queued: :meth:`make_folder_links` makes the
        queued folders together.

        Returns
        -------
        tuple
            The image and label paths the links will have once installed (under :attr:`root`).
        """
        if self.staging is None:
            self.staging = temp_dir_beside(self.root)
        image, label = self._make(record, Path(patient_key))
        return self.root / image, (self.root / label if label is not None else None)

    def _make(self, record: Record, folder: Path) -> tuple[Path, Path | None]:
        """Make the links under the staging folder; returns their paths relative to it."""
        tag = _tag(record.series_uid)
        if record.kind == "dicom":
            image = folder / tag
            if record.link_files is not None:
                self._pending.setdefault(self.staging / image, []).append(record.link_files)
            else:
                _symlink(record.image, self.staging / image)
        else:
            image = folder / f"{tag}_image{nifti_suffix(record.image)}"
            _symlink(record.image, self.staging / image)
        label = None
        if record.label is not None:
            label = folder / f"{tag}_label{nifti_suffix(record.label)}"
            _symlink(record.label, self.staging / label)
        return image, label

    def make_folder_links(self, threads: int | None = None) -> int:
        """Make the folders of file links that :meth:`link` queued; returns the number of folders.

        ``threads`` folders are filled at a time (default: the usable cores, 2 to 32): a ``symlink``
        is kernel work (inode allocation) that runs outside the interpreter's lock, and one thread
        leaves the other cores idle. Each folder is filled by one thread, in the order its lists were
        queued.
        """
        jobs, self._pending = self._pending, {}
        if not jobs:
            return 0
        threads = threads or min(32, max(2, usable_cores()))

        def fill(folder: Path) -> None:
            for files in jobs[folder]:
                self._link_files(files, folder)

        with ThreadPoolExecutor(max_workers=min(threads, len(jobs)), thread_name_prefix="ichct-links") as pool:
            for _ in pool.map(fill, jobs):  # re-raises the first error
                pass
        return len(jobs)

    @staticmethod
    def _link_files(files: list[Path], folder: Path) -> None:
        """A folder holding one link per file (names made unique); a folder made here is filled
        without checking for earlier links (one ``symlink`` call per file)."""
        try:
            folder.mkdir(parents=True)
            fresh = True
        except FileExistsError:
            fresh = False
        used: set[str] = set()
        for f in files:
            name, n = f.name, 1
            while name in used:
                name, n = f"{f.name}.{n}", n + 1
            used.add(name)
            if fresh:
                os.symlink(os.path.abspath(f), os.path.join(folder, name))
            else:
                _symlink(f, folder / name)

    def staged(self, path: Path) -> Path:
        """Where an installed link path ``path`` is while staged (other paths unchanged)."""
        if self.staging is None:
            return path
        try:
            return self.staging / Path(os.path.abspath(path)).relative_to(self.root)
        except ValueError:
            return path

    def unstaged_text(self, text: str) -> str:
        """``text`` (e.g. a problem line) with staging paths named as they will be once installed."""
        return text if self.staging is None else text.replace(str(self.staging), str(self.root))

    def swap_in(self) -> None:
        """Move the old link folder aside and the staging folder (if any) into its place.

        Undo with :meth:`roll_back`; make final with :meth:`finish`.
        """
        check_replaceable(self.root)
        if os.path.lexists(self.root):
            trash = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", suffix=".old", dir=self.root.parent))
            self._old = trash / self.root.name
            os.replace(self.root, self._old)
        if self.staging is not None:
            os.replace(self.staging, self.root)
            self._installed = True

    def roll_back(self) -> None:
        """Undo :meth:`swap_in`: the new links go, the old folder comes back."""
        if self._installed:
            shutil.rmtree(self.root)
            self._installed = False
        if self._old is not None:
            os.replace(self._old, self.root)
            self._old.parent.rmdir()
            self._old = None

    def finish(self) -> None:
        """Delete the old link folder moved aside by :meth:`swap_in` (links and folders only)."""
        if self._old is not None:
            shutil.rmtree(self._old.parent, ignore_errors=True)
            self._old = None

    def discard(self) -> None:
        """Delete the staging folder unless it was installed (call on every exit of a build)."""
        if self.staging is not None and not self._installed:
            shutil.rmtree(self.staging, ignore_errors=True)
