"""HU sanity check (:mod:`ichct.transforms.dicom.hu_check`): air must sit near -1000 HU.

Small series are written here directly with pydicom so that the stored values can be anything a
broken archive holds: a head-like phantom (air -1000 around an ellipse of 40 HU brain with a
65 HU clot and a 1200 HU rim), stored correctly, wrapped at 12 bits (PixelRepresentation 0 with
two's-complement values, as in part of the RSNA 2019 ICH challenge data), or as unsigned CT
numbers with air at 0 and a RescaleIntercept of 0 or none.
"""

from __future__ import annotations

import json
from pathlib import Path

import dicom_factory as fac
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ichct.transforms import LoadDicomSeries, LoadDicomSeriesd
from ichct.transforms.dicom import DicomIngestError, read_dicom_series
from ichct.transforms.dicom.hu_check import RULE_NONE, wrap_rule_name

N, ROWS, COLS = 8, 64, 64
SPACING_MM = 3.5
WRAP = wrap_rule_name(12)


def head_phantom(n: int = N) -> np.ndarray:
    """True HU, shape (slices, rows, columns): air, a 1200 HU rim, 40 HU brain, a 65 HU clot."""
    j, i = np.meshgrid(np.arange(ROWS) - (ROWS - 1) / 2, np.arange(COLS) - (COLS - 1) / 2, indexing="ij")
    out = np.full((n, ROWS, COLS), -1000.0)
    for k in range(n):
        scale = 1.0 - 0.25 * abs(k - (n - 1) / 2) / n
        r = np.sqrt((i / (26 * scale)) ** 2 + (j / (22 * scale)) ** 2)
        out[k][r <= 1.0] = 1200.0
        out[k][r <= 0.85] = 40.0
        out[k][((i - 8) / 6) ** 2 + ((j + 4) / 5) ** 2 <= 1.0] = 65.0
    return out


def fov_mask(radius_px: float = 29.0) -> np.ndarray:
    """True inside a circular reconstruction field of view, shape (rows, columns)."""
    j, i = np.meshgrid(np.arange(ROWS) - (ROWS - 1) / 2, np.arange(COLS) - (COLS - 1) / 2, indexing="ij")
    return i * i + j * j <= radius_px**2


def write_series(folder: Path, stored: np.ndarray, *, signed: bool, bits_stored: int = 16,
                 intercepts: float | list[float] | None = 0.0, slope: float = 1.0,
                 padding_value: int | None = None) -> Path:
    """One CT file per slice of ``stored`` (slices, rows, columns) as given, uncompressed.

    ``intercepts=None`` writes neither RescaleIntercept nor RescaleSlope.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    per_slice = intercepts if isinstance(intercepts, list) else [intercepts] * len(stored)
    for k, plane in enumerate(stored):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = fac.CT_IMAGE_STORAGE
        ds.file_meta.MediaStorageSOPInstanceUID = sop = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = fac.CT_IMAGE_STORAGE, sop, "CT"
        ds.PatientName, ds.PatientID, ds.StudyID = "HU^Phantom", "HUPHANTOM", "1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.SeriesNumber, ds.InstanceNumber, ds.ImageType = 2, k + 1, ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ConvolutionKernel, ds.SeriesDescription = "STANDARD", "HEAD 5mm"
        ds.ImagePositionPatient = [-110.25, -110.25, 5.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [SPACING_MM, SPACING_MM], 5.0
        if per_slice[k] is not None:
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = per_slice[k], slope, "HU"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns, ds.BitsAllocated = ROWS, COLS, 16
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, int(signed)
        if padding_value is not None:
            ds.add_new(0x00280120, "SS" if signed else "US", int(padding_value))
        ds.PixelData = (np.asarray(plane, dtype=np.int64) & 0xFFFF).astype("<u2").tobytes()
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)
    return folder


def volume_of(folder: Path):
    """(HU as (slices, rows, columns), sidecar info) of the series in ``folder``."""
    vol = read_dicom_series(folder, workers=1)
    return np.asarray(vol.hu_volume).transpose(2, 1, 0), vol.info


def wrapped(hu: np.ndarray, intercepts: list[float]) -> np.ndarray:
    """Stored values of a 12-bit two's-complement file: ``(h - intercept) mod 4096`` per slice."""
    return np.stack([np.mod(np.rint(h - c).astype(np.int64), 4096) for h, c in zip(hu, intercepts)])


# --------------------------------------------------------------------------------------------
# (1) correct data passes untouched
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed, bits, intercept", [(True, 16, 0.0), (False, 12, -1024.0), (False, 16, -1000.0)])
def test_normal_data_passes_with_rule_none(tmp_path, signed, bits, intercept):
    truth = head_phantom()
    write_series(tmp_path / "dcm", truth - intercept, signed=signed, bits_stored=bits, intercepts=intercept)
    hu, info = volume_of(tmp_path / "dcm")
    assert np.array_equal(hu, truth)
    check = info["hu_check"]
    assert check["rule"] == RULE_NONE and check["air_hu"] == -1000.0
    assert check["air_fraction"] == pytest.approx(float(np.mean(truth == -1000.0)), abs=1e-4)
    assert check["sampled_voxels"] == truth.size and check["padding_voxels_excluded"] == 0
    assert not any("HU corrected" in w for w in info["warnings"])


# --------------------------------------------------------------------------------------------
# (2) 12-bit two's-complement wrap: corrected, named in the sidecar, warned about
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("intercepts", [[0.0] * N, [1.0] * N, [0.0, 1.0] * (N // 2)], ids=["c0", "c1", "mixed"])
@pytest.mark.parametrize("padding", ["none", "raw-2048", "PixelPaddingValue"])
def test_twelve_bit_wrap_is_corrected(tmp_path, intercepts, padding):
    truth = head_phantom()
    inside = fov_mask() if padding != "none" else np.ones((ROWS, COLS), dtype=bool)
    if padding != "none":  # raw: the most negative value the slice can hold, as scanners write it
        for k, c in enumerate(intercepts):
            truth[k, ~inside] = -2048.0 + c if padding == "raw-2048" else -2000.0
    stored = wrapped(truth, intercepts)
    pad_value = None
    if padding == "PixelPaddingValue":  # -2000 HU as a 0-intercept slice stores it, on every slice
        pad_value = 2096
        stored[:, ~inside] = pad_value
    write_series(tmp_path / "dcm", stored, signed=False, bits_stored=12, intercepts=intercepts, padding_value=pad_value)
    hu, info = volume_of(tmp_path / "dcm")
    assert np.array_equal(hu[:, inside], truth[:, inside])
    if padding == "raw-2048":
        assert np.array_equal(hu[:, ~inside], truth[:, ~inside])
    elif padding == "PixelPaddingValue":
        assert np.all(hu[:, ~inside] == -1024)
    check = info["hu_check"]
    assert check["rule"] == WRAP == "12-bit two's-complement wrap"
    assert check["air_hu"] == -1000.0
    assert check["air_fraction"] == pytest.approx(float(np.mean(truth[:, inside] == -1000.0)), abs=1e-4)
    assert check["padding_voxels_excluded"] == (0 if padding == "none" else int((~inside).sum()) * N)
    assert "two's complement" in check["detail"]
    assert any(WRAP in w and "air" in w for w in info["warnings"])


def test_wrap_through_cli_sidecar(tmp_path, run_cli):
    truth = head_phantom()
    write_series(tmp_path / "dcm", wrapped(truth, [0.0] * N), signed=False, bits_stored=12, intercepts=0.0)
    res = run_cli("convert", tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert res.code == 0, res.err
    data, _affine, _img = fac.load_nifti(tmp_path / "o.nii.gz")
    assert np.array_equal(np.asarray(data).transpose(2, 1, 0), truth)
    side = fac.read_sidecar(tmp_path / "o.nii.gz")
    assert side["hu_check"]["rule"] == WRAP and any(WRAP in w for w in side["warnings"])


def test_wrap_with_duplicate_slices(tmp_path):
    """Duplicates read after the check get the same correction (so they compare identical)."""
    truth = head_phantom()
    write_series(tmp_path / "dcm", wrapped(truth, [0.0] * N), signed=False, bits_stored=12)
    write_series(tmp_path / "dcm" / "copy", wrapped(truth[:1], [0.0]), signed=False, bits_stored=12)
    # the copy was written as a series of its own: move it into the first one
    first = pydicom.dcmread(tmp_path / "dcm" / "IM0000")
    dup = pydicom.dcmread(tmp_path / "dcm" / "copy" / "IM0000")
    for kw in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        setattr(dup, kw, getattr(first, kw))
    dup.save_as(tmp_path / "dcm" / "copy" / "IM0000")
    hu, info = volume_of(tmp_path / "dcm")
    assert info["duplicates"]["count"] == 1 and info["duplicates"]["identical"] == 1
    assert np.array_equal(hu, truth) and info["hu_check"]["rule"] == WRAP


# --------------------------------------------------------------------------------------------
# (3) padding outside the field of view is not air and triggers nothing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["signed-2048", "signed-3024", "PixelPaddingValue-unsigned",
                                  "PixelPaddingValue-signed"])
@pytest.mark.parametrize("content", ["head", "no-air"])
def test_padding_is_not_air(tmp_path, case, content):
    truth = head_phantom() if content == "head" else np.full((N, ROWS, COLS), 40.0)
    inside = fov_mask()
    signed = case != "PixelPaddingValue-unsigned"
    intercept = 0.0 if signed else -1024.0
    stored = np.rint(truth - intercept).astype(np.int64)
    pad_value = None
    if case.startswith("signed"):
        stored[:, ~inside] = -int(case[-4:])
    else:
        pad_value = 4000 if not signed else -2000
        stored[:, ~inside] = pad_value
    write_series(tmp_path / "dcm", stored, signed=signed, intercepts=intercept, padding_value=pad_value)
    hu, info = volume_of(tmp_path / "dcm")
    assert np.array_equal(hu[:, inside], truth[:, inside])
    check = info["hu_check"]
    assert check["rule"] == RULE_NONE
    assert check["padding_voxels_excluded"] == int((~inside).sum()) * N
    assert check["sampled_voxels"] == int(inside.sum()) * N
    if content == "no-air":
        assert check["air_hu"] is None and check["air_fraction"] == 0.0
    else:
        assert check["air_fraction"] == pytest.approx(float(np.mean(truth[:, inside] == -1000.0)), abs=1e-4)


def test_padding_in_a_wrap_pattern_header_without_air_triggers_nothing(tmp_path):
    """Header as in the wrap case (unsigned 12 bits, intercept 0) but the data is right: no air,
    PixelPaddingValue outside the field of view; nothing fires and the values are kept."""
    truth = np.full((N, ROWS, COLS), 40.0)
    truth[:, :, :8] = 1200.0
    inside = fov_mask()
    stored = np.rint(truth).astype(np.int64)
    stored[:, ~inside] = 4000
    write_series(tmp_path / "dcm", stored, signed=False, bits_stored=12, intercepts=0.0, padding_value=4000)
    hu, info = volume_of(tmp_path / "dcm")
    assert np.array_equal(hu[:, inside], truth[:, inside])
    assert info["hu_check"]["rule"] == RULE_NONE and info["hu_check"]["air_hu"] is None


# --------------------------------------------------------------------------------------------
# (4) air at 0 HU (unsigned CT numbers read with intercept 0 or none): refused
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("intercept", [0.0, None], ids=["intercept0", "missing"])
@pytest.mark.parametrize("bits, offset", [(12, 1024), (16, 1000)])
def test_air_at_zero_is_refused(tmp_path, run_cli, intercept, bits, offset):
    truth = head_phantom()
    folder = write_series(tmp_path / "scan_air0", truth + offset, signed=False, bits_stored=bits, intercepts=intercept)
    res = run_cli("convert", folder, tmp_path / "o.nii.gz")
    assert res.code == 1, res.err
    assert str(folder) in res.err
    assert f"air sits at about {offset - 1000} HU after rescale, tissue at about +{40 + offset}" in res.err
    assert "RescaleIntercept (" + ("0" if intercept == 0.0 else "missing") + ") is probably wrong" in res.err
    assert "Traceback" not in res.err
    assert not (tmp_path / "o.nii.gz").exists()
    with pytest.raises(DicomIngestError, match="expected about -1024"):
        read_dicom_series(folder, workers=1)


def test_air_at_zero_rule_needs_every_sign(tmp_path):
    """A water phantom (0 HU) with a 1000 HU insert but real air around it is legitimate."""
    truth = head_phantom()
    truth[truth == 40.0] = 0.0
    truth[truth == 65.0] = 1000.0
    truth[truth == 1200.0] = 1000.0
    write_series(tmp_path / "dcm", truth, signed=True, intercepts=0.0)
    hu, info = volume_of(tmp_path / "dcm")
    assert np.array_equal(hu, truth) and info["hu_check"]["rule"] == RULE_NONE


# --------------------------------------------------------------------------------------------
# (5) no air at all: untouched
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed, bits, intercept", [(True, 16, 0.0), (False, 12, -1024.0), (False, 12, 0.0)])
def test_constant_block_without_air_passes(tmp_path, signed, bits, intercept):
    truth = np.full((N, ROWS, COLS), 40.0)
    write_series(tmp_path / "dcm", truth - intercept, signed=signed, bits_stored=bits, intercepts=intercept)
    hu, info = volume_of(tmp_path / "dcm")
    assert np.array_equal(hu, truth)
    check = info["hu_check"]
    assert check["rule"] == RULE_NONE and check["air_hu"] is None and check["air_fraction"] == 0.0
    assert "no air" in check["detail"]


# --------------------------------------------------------------------------------------------
# (6) MONAI loaders and report.json
# --------------------------------------------------------------------------------------------


def test_monai_loaders_give_corrected_hu(tmp_path):
    truth = head_phantom()
    write_series(tmp_path / "dcm", wrapped(truth, [1.0] * N), signed=False, bits_stored=12, intercepts=1.0)
    img = LoadDicomSeries()(str(tmp_path / "dcm"))
    assert np.array_equal(img.numpy()[0], truth.transpose(2, 1, 0).astype(np.float32))
    assert json.loads(img.meta["ichct_ingest"])["hu_check"]["rule"] == WRAP
    out = LoadDicomSeriesd(keys="image", dtype=None)({"image": str(tmp_path / "dcm")})
    assert np.array_equal(out["image"].numpy()[0], truth.transpose(2, 1, 0))


def test_report_series_section_carries_hu_check(tmp_path):
    from ichct.pipeline.predict.run import series_section

    truth = head_phantom()
    write_series(tmp_path / "dcm", wrapped(truth, [0.0] * N), signed=False, bits_stored=12)
    _hu, info = volume_of(tmp_path / "dcm")
    section = series_section(info, [], None)
    assert section["hu_check"] == info["hu_check"] and section["hu_check"]["rule"] == WRAP


def test_synthetic_cohort_never_triggers_a_rule(tmp_path):
    """Every vendor of the synthetic cohort (signed/unsigned, intercept -1024/0, padding -3024,
    -2048 with PixelPaddingValue, soft and bone kernels) passes with rule none, air near -1000."""
    from ichct.pipeline.synth import SynthConfig, generate_cohort
    from ichct.transforms.dicom import scan_folder
    from ichct.transforms.dicom.series import group_series

    config = SynthConfig(n_patients=8, seed=3, matrix=64, slices=8, bone_fraction=1.0, scout_fraction=0.0)
    manifest = generate_cohort(config, tmp_path / "cohort", workers=1)
    vendors = set()
    for s in manifest["studies"]:
        folder = tmp_path / "cohort" / s["study_dir"]
        scan = scan_folder(folder, workers=1)
        for g in group_series(scan.headers):
            check = read_dicom_series(folder, series_uid=g.group_id, scan=scan, workers=1).info["hu_check"]
            assert check["rule"] == RULE_NONE and -1030 <= check["air_hu"] <= -970, check
            vendors.add(g.first.manufacturer)
    assert len(vendors) == 4


def test_wrap_that_the_rule_does_not_explain_is_refused(tmp_path, run_cli):
    """The header pattern and a wrap-like reading, but two's complement leaves most of the low
    values below the air band: refused, not guessed."""
    truth = head_phantom()
    left = truth[:, :, :44]
    left[left == -1000.0] = -1300.0  # stored 2796: reads -1300 after the rule, below the air band
    assert np.mean(truth == -1300.0) > np.mean(truth == -1000.0) > 0.01
    folder = write_series(tmp_path / "odd", wrapped(truth, [0.0] * N), signed=False, bits_stored=12)
    res = run_cli("convert", folder, tmp_path / "o.nii.gz")
    assert res.code == 1 and str(folder) in res.err
    assert "look wrapped" in res.err and "refusing to guess" in res.err
