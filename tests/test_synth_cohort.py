"""A small synthetic cohort, checked against the DICOM standard, the reader and its own manifests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
import pydicom
import pytest
from pydicom.uid import UID, CTImageStorage

import ichct
from ichct.pipeline.synth import LABEL_NAMES, SUBTYPES, SynthConfig, generate_cohort
from ichct.transforms.dicom import read_dicom_series

# Type 1 attributes of the modules written (Patient/Study/Series have none beyond the UIDs and
# Modality), plus the conditional ones we always write (VOI LUT, Specific Character Set).
TYPE1 = (
    "SOPClassUID", "SOPInstanceUID", "SpecificCharacterSet",  # SOP Common
    "StudyInstanceUID",  # General Study
    "Modality", "SeriesInstanceUID",  # General Series
    "FrameOfReferenceUID",  # Frame of Reference
    "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",  # Image Plane
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "PixelData",  # Image Pixel
    "ImageType", "RescaleIntercept", "RescaleSlope",  # CT Image
    "WindowCenter", "WindowWidth",  # VOI LUT (1C: present)
)
TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "SeriesNumber", "PatientPosition", "PositionReferenceIndicator", "Manufacturer",
    "InstanceNumber", "SliceThickness", "KVP", "AcquisitionNumber",
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """6 patients, 96x96x16: positives with every subtype, follow-ups, tilt, bone, scout, RLE/JPEG."""
    out = tmp_path_factory.mktemp("synth") / "cohort"
    config = SynthConfig(
        n_patients=6, seed=7, matrix=96, slices=16, positive_fraction=0.67,
        subtype_prob={s: 0.6 for s in SUBTYPES}, follow_up_fraction=0.34, tilt_fraction=0.34,
        bone_fraction=0.5, scout_fraction=0.5, compression_mix={"none": 1, "rle": 1, "jpeg_lossless": 1},
    )
    manifest = generate_cohort(config, out, workers=1)
    return out, manifest


def _studies(cohort):
    return cohort[1]["studies"]


def test_cohort_covers_the_cases_the_other_tests_need(cohort):
    studies = _studies(cohort)
    assert any(abs(s["acquisition"]["gantry_tilt_deg"]) > 0 for s in studies)
    assert {s["acquisition"]["compression"] for s in studies} == {"none", "rle", "jpeg_lossless"}
    kinds = {k["kind"] for s in studies for k in s["series"]}
    assert kinds == {"axial_soft", "axial_bone", "scout"}
    patients = [s["patient_id"] for s in studies]
    assert any(patients.count(p) == 2 for p in patients), "a patient with a follow-up study"
    realized = {name for s in studies for name in SUBTYPES if s["ct_labels"][name]}
    assert realized == set(SUBTYPES)
    assert any(s["ct_labels"]["any"] == 0 for s in studies)


def test_every_file_is_valid_ct_dicom(cohort):
    root, _ = cohort
    files = sorted((root / "dicom").rglob("*.dcm"))
    assert files
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for keyword in TYPE1:
            assert keyword in ds, f"{path}: Type 1 {keyword} missing"
            value = ds[keyword].value
            assert value is not None and value != "" and (not hasattr(value, "__len__") or len(value) > 0), f"{path}: {keyword} empty"
        for keyword in TYPE2:
            assert keyword in ds, f"{path}: Type 2 {keyword} missing"
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            assert UID(ds[keyword].value).is_valid, f"{path}: invalid {keyword}"
        assert ds.Modality == "CT"
        assert str(ds.PatientName).startswith("SYNTH^") and str(ds.PatientID).startswith("SYN")
        pixels = ds.pixel_array
        assert pixels.shape == (ds.Rows, ds.Columns)
        if "LOCALIZER" not in ds.ImageType:
            assert ds.ImageType[2] == "AXIAL" and ds.ConvolutionKernel
            assert float(ds.SliceThickness) in (2.5, 3.0, 3.75, 5.0)


def test_labels_are_on_the_convert_grid(cohort):
    root, manifest = cohort
    tilted = 0
    for s in manifest["studies"]:
        volume = read_dicom_series(root / s["series_dir"])
        img = nib.load(root / s["label"])
        assert volume.series_uid == s["series_uid"]
        assert img.shape == volume.hu_volume.shape
        np.testing.assert_allclose(img.affine, volume.affine_ras, atol=1e-3)
        assert img.get_data_dtype() in (np.uint8, np.int16)
        tilted += volume.info["tilt"]["corrected"]
        if volume.info["tilt"]["corrected"]:  # the header tilt agrees with the tilt the reader measures
            assert volume.info["tilt"]["angle_deg"] == pytest.approx(s["acquisition"]["gantry_tilt_deg"], abs=0.1)
        assert volume.info["tilt"]["corrected"] == s["acquisition"]["tilt_corrected_grid"]
        assert len(s["slice_labels"]) == volume.hu_volume.shape[2]
    assert tilted >= 1


def test_lesions_have_acute_blood_density(cohort):
    """Blood reads 45-90 HU away from bone (within two pixels of the skull the inner-table glow of
    the slice profile, PSF tails and beam hardening raises everything, blood included)."""
    root, manifest = cohort
    pooled = []
    for s in manifest["studies"]:
        volume = read_dicom_series(root / s["series_dir"])
        lab = np.asarray(nib.load(root / s["label"]).dataobj)
        hu = volume.hu_volume.astype(np.float64)
        if s["ct_labels"]["any"]:
            near_bone = ndimage.binary_dilation(hu > 300, structure=np.ones((5, 5, 1), dtype=bool))
            lesion = hu[(lab > 0) & ~near_bone]
            assert lesion.size >= 20, s["study_uid"]
            assert 45.0 <= lesion.mean() <= 90.0, (s["study_uid"], lesion.mean())
            pooled.append(lesion)
            # brighter than the brain around it, which a blood-free study shows at 20-45 HU
            brain = hu[(hu > 15) & (hu < 45)]
            assert lesion.mean() > brain.mean() + 12
            # next to bone blood is brighter still, never darker
            assert hu[lab > 0].mean() >= lesion.mean() - 1.0
        else:
            assert not lab.any()
    everything = np.concatenate(pooled)
    assert 50.0 <= everything.mean() <= 85.0


def test_negative_studies_carry_mimics(cohort):
    _, manifest = cohort
    negatives = [s for s in manifest["studies"] if not s["ct_labels"]["any"]]
    assert negatives
    for s in negatives:
        assert s["mimics"], "negatives carry calcifications / dense vessels"


def test_default_series_is_the_soft_axial(cohort):
    root, manifest = cohort
    multi = 0
    for s in manifest["studies"]:
        volume = read_dicom_series(root / s["study_dir"])
        assert volume.series_uid == s["series_uid"]
        assert volume.info["kernel"] == s["acquisition"]["kernel"]
        multi += len(s["series"]) > 1
    assert multi >= 1


def test_cohort_json_schema(cohort):
    root, manifest = cohort
    on_disk = json.loads((root / "cohort.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(manifest))
    gen = on_disk["generator"]
    assert gen["name"] == "ichct-synth" and gen["version"] == ichct.__version__ and gen["seed"] == 7
    assert gen["parameters"]["matrix"] == 96 and gen["parameters"]["slices"] == 16
    assert on_disk["label_names"] == list(LABEL_NAMES)
    for s in on_disk["studies"]:
        for key, kind in (("patient_id", str), ("study_uid", str), ("series_uid", str), ("series_dir", str), ("label", str),
                          ("slice_labels", list), ("ct_labels", dict), ("volumes_ml", dict)):
            assert isinstance(s[key], kind), key
        assert not Path(s["series_dir"]).is_absolute() and (root / s["series_dir"]).is_dir()
        assert s["label"] == f"labels/{s['study_uid']}.nii.gz" and (root / s["label"]).is_file()
        assert set(s["ct_labels"]) == set(LABEL_NAMES) == set(s["volumes_ml"])
        assert all(len(row) == 6 and set(row) <= {0, 1} for row in s["slice_labels"])
        rows = np.asarray(s["slice_labels"])
        assert [s["ct_labels"][n] for n in LABEL_NAMES] == rows.max(axis=0).tolist()
        assert (rows[:, 0] == rows[:, 1:].max(axis=1)).all()
        lab = np.asarray(nib.load(root / s["label"]).dataobj)
        voxel_ml = abs(np.linalg.det(nib.load(root / s["label"]).affine[:3, :3])) / 1000
        for n, name in enumerate(SUBTYPES):
            assert s["volumes_ml"][name] == pytest.approx((lab == n + 1).sum() * voxel_ml, abs=1e-3)
            assert bool(s["ct_labels"][name]) == bool((lab == n + 1).any())
        planned = {les["subtype"] for les in s["lesions"]}
        assert planned == {name for name in SUBTYPES if s["ct_labels"][name]}


def test_slice_labels_csv_matches_label_maps(cohort):
    root, manifest = cohort
    with open(root / "slice_labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ID", "Label"]
    table = {}
    for ident, value in rows[1:]:
        prefix, uid, name = ident.split("_")
        assert prefix == "ID" and name in LABEL_NAMES and value in ("0", "1")
        table[(uid, name)] = int(value)
    n_slices = 0
    for s in manifest["studies"]:
        volume = read_dicom_series(root / s["series_dir"])
        lab = np.asarray(nib.load(root / s["label"]).dataobj)
        headers = volume.series.headers
        for k, index in enumerate(volume.geometry.order):  # the reader's slice k is this file
            uid = headers[index].sop_instance_uid
            for n, name in enumerate(SUBTYPES):
                assert table[(uid, name)] == int((lab[:, :, k] == n + 1).any())
            assert table[(uid, "any")] == int(lab[:, :, k].any())
            n_slices += 1
    assert len(rows) - 1 == 6 * n_slices == len(table)


def test_scout_is_a_localizer(cohort):
    root, _ = cohort
    scouts = sorted((root / "dicom").rglob("series001_scout/*.dcm"))
    assert scouts
    ds = pydicom.dcmread(scouts[0])
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert ds.pixel_array.max() > ds.pixel_array.min()
