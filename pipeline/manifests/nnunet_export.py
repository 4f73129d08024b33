"""Export a split manifest as an nnU-Net v2 raw dataset (``ichct manifest export-nnunet``).

The dataset holds ichct's own ingest: every DICOM series is read by the ichct reader and written as
``ichct convert`` writes it (HU, RAS affine; NIfTI images are copied unchanged), every voxel label
on its image's grid as uint8. Training studies go to ``imagesTr``/``labelsTr``, test studies to
``imagesTs`` (and ``labelsTs``, which nnU-Net ignores and users score against). Cases get
pseudonymous IDs (``<name>_0001`` ...; no UID or patient data in a file name), numbered in
``patient_key``, ``study_uid`` order so that a rerun gives the same IDs. Beside ``dataset.json``:

* ``splits_final.json``: fold ``k`` validates on the training studies of the manifest's fold ``k``
  and trains on the others (nnU-Net reads it from its *preprocessed* dataset folder: copy it there
  after ``nnUNetv2_plan_and_preprocess``);
* ``ichct_case_map.json``: each case ID's study, patient key, split and fold (what
  ``ichct evaluate --map`` reads to score nnU-Net predictions against the manifest).

ichct writes plain files here and never imports nnU-Net.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ichct import __version__
from ichct.errors import InputError
from ichct.pipeline.core.atomic import replace_dir, temp_dir_beside
from ichct.pipeline.core.files import sha256_file

from .check import grid_mismatch, read_manifest
from .errors import ManifestError
from .hashing import HashCache
from .loader import load_manifest
from .model import ICHCT_LABEL_VALUES, is_nifti

if TYPE_CHECKING:
    import nibabel as nib

logger = logging.getLogger(__name__)

__all__ = ["CASE_MAP_FILE", "CASE_MAP_FORMAT", "NnunetCase", "NnunetExport", "assign_case_ids", "dataset_folder_name",
           "export_nnunet", "label_on_grid", "label_scheme", "nnunet_splits"]

CASE_MAP_FILE = "ichct_case_map.json"
CASE_MAP_FORMAT = "ichct-nnunet-case-map"
CASE_MAP_VERSION = 1
FILE_ENDING = ".nii.gz"
_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,39}")
BINARY_LABELS: dict[str, int] = {"background": 0, "hemorrhage": 1}


@dataclass(frozen=True)
class NnunetExport:
    """What :func:`export_nnunet` wrote: the dataset folder and its make-up."""

    path: Path
    n_training: int
    n_test: int
    num_folds: int
    label_values: str
    labels: dict[str, int]


@dataclass(frozen=True)
class NnunetCase:
    """One study of the export: its case ID, manifest entry (absolute paths) and split."""

    case_id: str
    entry: dict[str, Any]
    split: str  # "training" or "test"

    @property
    def fold(self) -> int | None:
        return int(self.entry["fold"]) if self.split == "training" else None


def dataset_folder_name(dataset_id: int, name: str = "ICH") -> str:
    """nnU-Net's folder name of a dataset, ``DatasetNNN_<name>``; refuses an id or name nnU-Net cannot use.

    Examples
    --------
    >>> dataset_folder_name(501)
    'Dataset501_ICH'
    >>> dataset_folder_name(7, "Synth-CT")
    'Dataset007_Synth-CT'
    """
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise InputError(f"dataset id must be an integer from 1 to 999 (nnU-Net's three digits), got {dataset_id!r}")
    if not _NAME_PATTERN.fullmatch(name):
        raise InputError(f"dataset name must start with a letter and hold only letters, digits and '-' "
                         f"(at most 40 characters), got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def export_nnunet(
    manifest: str | Path,
    out_dir: str | Path,
    dataset_id: int,
    *,
    name: str = "ICH",
    workers: int | None = None,
    cache: HashCache | None | bool = True,
) -> NnunetExport:
    """Write the manifest's studies as the nnU-Net v2 raw dataset ``out_dir/DatasetNNN_<name>``.

    The manifest is checked first (:func:`load_manifest`: a leaky or broken one is refused). The
    dataset is built in a hidden folder beside its target and renamed at the end, so a failure
    leaves nothing behind.

    Parameters
    ----------
    manifest
        Split manifest; every entry (training and test) needs a voxel ``label``.
    out_dir
        Folder that receives ``DatasetNNN_<name>`` (typically ``$nnUNet_raw``); the dataset folder
        must not exist or be empty, and no other dataset there may have the same id.
    dataset_id, name
        nnU-Net's dataset id (1-999) and name; case IDs are ``<name>_0001`` ...
    workers, cache
        Reader threads and pixel-hash cache of the manifest check and the DICOM reader.

    Raises
    ------
    ManifestError
        The manifest fails its checks.
    ichct.errors.InputError
        Entries without a voxel label (the message names the manifest and how many), a bad id or
        name, a non-empty target, another dataset with the same id, a label off its image's grid.

    Examples
    --------
    >>> export = export_nnunet("data_manifests/synth_default.json", "nnUNet_raw", 501)  # doctest: +SKIP
    >>> export.path.name, export.n_training, export.n_test  # doctest: +SKIP
    ('Dataset501_ICH', 60, 15)
    """
    folder_name = dataset_folder_name(dataset_id, name)
    target = Path(out_dir) / folder_name
    _refuse_existing(target, dataset_id)
    data = _labelled_manifest(manifest)
    manifest_sha256 = sha256_file(manifest)
    training = load_manifest(manifest, "training", workers=workers, cache=cache)
    test = load_manifest(manifest, "test", check=False)
    label_kind, labels = label_scheme(training + test, data.get("labels"))
    cases = assign_case_ids(training, test, name)
    tmp = temp_dir_beside(target)
    try:
        for case in cases:
            _write_case(tmp, case, label_kind, workers)
        num_folds = int(data.get("num_folds", 1))
        _write_json(tmp / "dataset.json", _dataset_json(manifest, data, cases, labels, label_kind))
        _write_json(tmp / "splits_final.json", nnunet_splits(cases, num_folds))
        _write_json(tmp / CASE_MAP_FILE, _case_map(manifest, manifest_sha256, data, dataset_id, folder_name, cases,
                                                    labels, label_kind))
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.debug("%s: %d training and %d test case(s), %s labels", target, len(training), len(test), label_kind)
    return NnunetExport(target, len(training), len(test), num_folds, label_kind, labels)


def _refuse_existing(target: Path, dataset_id: int) -> None:
    """A non-empty target, or another ``DatasetNNN_*`` folder with the same id beside it, is refused."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(target, "already exists and is not an empty folder; remove it or choose another "
                                 "--dataset-id/--name")
    parent = target.parent
    if parent.is_dir():
        clashes = sorted(p.name for p in parent.glob(f"Dataset{dataset_id:03d}_*") if p.name != target.name)
        if clashes:
            raise InputError(parent, f"already holds {', '.join(clashes)} with dataset id {dataset_id}; nnU-Net "
                                     f"needs one dataset per id (choose another --dataset-id)")


def _labelled_manifest(manifest: str | Path) -> dict[str, Any]:
    """The manifest's JSON, refused when it cannot be read or when entries lack a voxel ``label``."""
    doc = read_manifest(manifest)
    if doc.load_error:
        raise ManifestError(manifest, [f"{doc.name}: {doc.load_error}"])
    data = doc.data if isinstance(doc.data, dict) else {}
    entries = [e for split in ("training", "test") for e in data.get(split) or [] if isinstance(e, dict)]
    unlabelled = sum(1 for e in entries if not isinstance(e.get("label"), str) or not e["label"])
    if unlabelled:
        raise InputError(manifest, f"{unlabelled} of {len(entries)} entries have no voxel label; an nnU-Net "
                                   f"dataset needs a label map for every study (a manifest of a source with "
                                   f"voxel labels: synth, physionet, bhsd, instance)")
    return data


def label_scheme(entries: list[dict[str, Any]], manifest_labels: Any = None) -> tuple[str, dict[str, int]]:
    """``label_values`` of the export and nnU-Net's ``labels`` (name -> value).

    All entries ``ichct``: the subtype labels (from the manifest's ``labels`` when it names
    0-5, else ichct's). Any entry ``binary``: every label map becomes 0/1 (``hemorrhage``),
    also the subtype maps of a manifest that mixes both.

    Examples
    --------
    >>> label_scheme([{"label_values": "ichct"}])[1]["subdural"]
    5
    >>> label_scheme([{"label_values": "ichct"}, {"label_values": "binary"}])
    ('binary', {'background': 0, 'hemorrhage': 1})
    """
    kinds = {e.get("label_values", "ichct") for e in entries}
    if "binary" in kinds:
        if len(kinds) > 1:
            logger.warning("the manifest mixes subtype and binary label maps: all are exported as binary "
                           "(0 background, 1 hemorrhage)")
        return "binary", dict(BINARY_LABELS)
    names = dict(ICHCT_LABEL_VALUES)
    if isinstance(manifest_labels, dict) and sorted(manifest_labels) == sorted(str(k) for k in names):
        names = {int(k): str(v) for k, v in manifest_labels.items()}
    return "ichct", {names[v]: v for v in sorted(names)}


def assign_case_ids(training: list[dict[str, Any]], test: list[dict[str, Any]], prefix: str) -> list[NnunetCase]:
    """Cases numbered ``<prefix>_0001`` ... in (patient_key, study_uid, series_uid) order, training and test together.

    Examples
    --------
    >>> cases = assign_case_ids([{"patient_key": "b", "study_uid": "1", "fold": 0}],
    ...                         [{"patient_key": "a", "study_uid": "2"}], "ICH")
    >>> [(c.case_id, c.split, c.fold) for c in cases]
    [('ICH_0001', 'test', None), ('ICH_0002', 'training', 0)]
    """
    tagged = [(e, "training") for e in training] + [(e, "test") for e in test]
    tagged.sort(key=lambda t: (str(t[0].get("patient_key", "")), str(t[0].get("study_uid", "")),
                               str(t[0].get("series_uid", ""))))
    width = max(4, len(str(len(tagged))))
    return [NnunetCase(f"{prefix}_{i:0{width}d}", e, split) for i, (e, split) in enumerate(tagged, start=1)]


def nnunet_splits(cases: list[NnunetCase], num_folds: int) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json``: fold ``k`` validates on the manifest's fold ``k``, trains on the rest.

    Examples
    --------
    >>> cases = assign_case_ids([{"patient_key": "a", "study_uid": "1", "fold": 0},
    ...                          {"patient_key": "b", "study_uid": "2", "fold": 1}], [], "ICH")
    >>> nnunet_splits(cases, 2)
    [{'train': ['ICH_0002'], 'val': ['ICH_0001']}, {'train': ['ICH_0001'], 'val': ['ICH_0002']}]
    """
    training = [c for c in cases if c.split == "training"]
    return [{"train": [c.case_id for c in training if c.fold != k], "val": [c.case_id for c in training if c.fold == k]}
            for k in range(num_folds)]


def _write_case(folder: Path, case: NnunetCase, label_kind: str, workers: int | None) -> None:
    """The case's image (``images{Tr,Ts}/<id>_0000.nii.gz``) and label (``labels{Tr,Ts}/<id>.nii.gz``)."""
    import nibabel as nib

    suffix = "Tr" if case.split == "training" else "Ts"
    image_out = folder / f"images{suffix}" / f"{case.case_id}_0000{FILE_ENDING}"
    label_out = folder / f"labels{suffix}" / f"{case.case_id}{FILE_ENDING}"
    image_out.parent.mkdir(exist_ok=True)
    label_out.parent.mkdir(exist_ok=True)
    image_path = Path(case.entry["image"])
    if image_path.is_dir() or not is_nifti(image_path):
        ct_img = _converted_series(image_path, str(case.entry.get("series_uid") or "") or None, workers)
        nib.save(ct_img, image_out)
    else:
        _copy_as_gzip(image_path, image_out)
        ct_img = nib.load(str(image_out))
    nib.save(label_on_grid(Path(case.entry["label"]), ct_img, binary=label_kind == "binary"), label_out)


def _converted_series(folder: Path, series_uid: str | None, workers: int | None) -> nib.Nifti1Image:
    """The NIfTI image ``ichct convert FOLDER --series UID`` writes (the ichct reader, no sidecar)."""
    from ichct.pipeline.ingest import nifti_image
    from ichct.transforms.dicom import read_dicom_series

    return nifti_image(read_dicom_series(folder, series_uid=series_uid, workers=workers))


def _copy_as_gzip(source: Path, target: Path) -> None:
    """A NIfTI file unchanged: copied when gzipped already, else gzipped (same header, same voxels)."""
    if source.name.lower().endswith(".gz"):
        shutil.copyfile(source, target)
        return
    with open(source, "rb") as src, gzip.open(target, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)


def label_on_grid(label_path: Path, ct_img: nib.Nifti1Image, *, binary: bool) -> nib.Nifti1Image:
    """The label map as uint8 NIfTI with exactly its image's geometry (qform and sform, codes included).

    The label must lie on the image's grid (shape equal, affine within ``AFFINE_TOL_MM``);
    ``binary`` maps every non-zero value to 1.
    """
    import nibabel as nib

    label_img = nib.load(str(label_path))
    values = np.asanyarray(label_img.dataobj)
    while values.ndim > 3 and values.shape[-1] == 1:
        values = values[..., 0]
    problem = grid_mismatch((tuple(ct_img.shape[:3]), ct_img.affine), (tuple(values.shape), label_img.affine))
    if problem or values.ndim != 3:
        raise InputError(label_path, problem or f"label has {values.ndim} axes, not 3")
    values = (values > 0) if binary else np.rint(values)
    out = nib.Nifti1Image(values.astype(np.uint8), ct_img.affine)
    out.set_qform(*ct_img.get_qform(coded=True))
    out.set_sform(*ct_img.get_sform(coded=True))
    out.header.set_xyzt_units(*ct_img.header.get_xyzt_units())
    out.header.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["descrip"] = b"ichct label map"
    return out


def _dataset_json(manifest: str | Path, data: dict[str, Any], cases: list[NnunetCase], labels: dict[str, int],
                  label_kind: str) -> dict[str, Any]:
    n_training = sum(1 for c in cases if c.split == "training")
    what = "hemorrhage subtypes (ichct label values)" if label_kind == "ichct" else "hemorrhage (binary)"
    return {
        "name": str(data.get("name") or Path(manifest).stem),
        "description": f"head CT in HU exported by ichct {__version__} from the split manifest {manifest} "
                       f"(training split in imagesTr, test split in imagesTs); labels: {what}",
        "reference": "ichct manifest export-nnunet",
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": n_training,
        "numTest": len(cases) - n_training,
        "file_ending": FILE_ENDING,
    }


def _case_map(manifest: str | Path, manifest_sha256: str, data: dict[str, Any], dataset_id: int, folder_name: str,
              cases: list[NnunetCase], labels: dict[str, int], label_kind: str) -> dict[str, Any]:
    """``ichct_case_map.json``: each case ID back to its study (the contract ``ichct evaluate --map`` reads)."""
    return {
        "format": CASE_MAP_FORMAT,
        "version": CASE_MAP_VERSION,
        "dataset_id": dataset_id,
        "dataset_name": folder_name,
        "manifest": str(manifest),
        "manifest_sha256": manifest_sha256,
        "salt_id": data.get("salt_id"),
        "label_values": label_kind,
        "labels": labels,
        "cases": [{"case_id": c.case_id, "study_uid": c.entry.get("study_uid"), "patient_key": c.entry.get("patient_key"),
                   "split": c.split, "fold": c.fold} for c in cases],
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
