"""The ct_preprocess preset and LoadCT(d): NIfTI and DICOM input, Invertd back to the original grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom import Dataset

from ichct.transforms import DEFAULT_WINDOWS, LoadCT, LoadCTd, ct_preprocess
from ichct.transforms.crop import brain_mask
from ichct.transforms.loading import is_dicom_path
from ichct.transforms.spatial import ResampleToSpacingd, ToRASd

AIR, SCALP, SKULL, BRAIN = -1000.0, 40.0, 1000.0, 35.0


def phantom(shape, spacing) -> tuple[np.ndarray, np.ndarray]:
    """HU head phantom (scalp, skull shell, brain in air) and its brain mask, axes as fractions of the FOV."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    fov = np.array(shape) * np.array(spacing)

    def inside(frac):
        a = fov * np.asarray(frac)
        return (x / a[0]) ** 2 + (y / a[1]) ** 2 + (z / a[2]) ** 2 <= 1.0

    hu = np.full(shape, AIR, dtype=np.float32)
    hu[inside((0.32, 0.36, 0.45))] = SCALP
    hu[inside((0.29, 0.33, 0.41))] = SKULL
    brain = inside((0.24, 0.28, 0.33))
    hu[brain] = BRAIN
    return hu, brain


def spacing_of(img: MetaTensor) -> np.ndarray:
    return np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


# LPS-ordered NIfTI (i -> left, j -> posterior): ToRAS has something to do.
NII_SPACING = (1.5, 1.5, 3.0)
NII_SHAPE = (64, 72, 24)
NII_AFFINE = np.array([[-1.5, 0, 0, 47.0], [0, -1.5, 0, 53.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1]])


@pytest.fixture
def nifti_case(tmp_path: Path) -> dict:
    hu, brain = phantom(NII_SHAPE, NII_SPACING)
    image, label = tmp_path / "ct.nii.gz", tmp_path / "ct_label.nii.gz"
    nib.save(nib.Nifti1Image(hu.astype(np.int16), NII_AFFINE), str(image))
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), NII_AFFINE), str(label))
    return {"image": str(image), "label": str(label), "brain": brain}


def write_dicom_series(folder: Path, hu: np.ndarray, pixel_spacing=(1.5, 1.5), step=6.0, origin=(-48.0, -48.0, -36.0)):
    """Write ``hu`` (cols i, rows j, slices k) as an axial CT Image Storage series, stored value = HU + 1024."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    n_cols, n_rows, n_slices = hu.shape
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientID = "PHANTOM"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber, ds.InstanceNumber = 2, n_slices - k  # reverse numbering: order must come from positions
        ds.ConvolutionKernel = "STANDARD"
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * step]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = step
        ds.Rows, ds.Columns = n_rows, n_cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = (hu[:, :, k].T + 1024).astype("<u2").tobytes()  # rows x cols
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)  # no .dcm suffix on purpose


def test_loadct_dispatch(nifti_case, tmp_path):
    assert is_dicom_path(tmp_path) and is_dicom_path("x/IM1.DCM") and not is_dicom_path(nifti_case["image"])
    img = LoadCT()(nifti_case["image"])
    assert isinstance(img, MetaTensor) and tuple(img.shape) == (1, *NII_SHAPE)
    np.testing.assert_allclose(np.asarray(img.affine), NII_AFFINE)
    assert img.dtype == torch.float32
    passthrough = torch.zeros(1, 2, 2, 2)
    out = LoadCTd(keys=["image", "label"], allow_missing_keys=True)({"image": passthrough})
    assert out["image"] is passthrough


def test_preset_on_nifti(nifti_case):
    pre = ct_preprocess(spacing_mm=(1.0, 1.0, 5.0))
    steps = [type(t).__name__ for t in pre.transforms]
    assert steps == ["LoadCTd", "ToRASd", "ResampleToSpacingd", "CropHeadd", "MultiWindowd"]
    out = pre({"image": nifti_case["image"], "label": nifti_case["label"]})
    img, lab = out["image"], out["label"]
    assert isinstance(img, MetaTensor) and img.shape[0] == len(DEFAULT_WINDOWS) == 3
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    np.testing.assert_allclose(spacing_of(img), [1.0, 1.0, 5.0], atol=1e-5)
    assert nib.aff2axcodes(np.asarray(img.affine)) == ("R", "A", "S")
    assert lab.shape[0] == 1 and lab.shape[1:] == img.shape[1:]
    torch.testing.assert_close(lab.affine, img.affine)
    values = lab.numpy()
    np.testing.assert_array_equal(values, np.rint(values))
    assert set(np.unique(values)) == {0.0, 1.0}
    # the crop is tight around the brain: it holds much less than the resampled full FOV
    full_fov = np.array(NII_SHAPE) * NII_SPACING / [1.0, 1.0, 5.0]
    assert np.prod(img.shape[1:]) < 0.5 * np.prod(full_fov)
    # label brain volume (mm^3) survives resampling and cropping
    vol_in = nifti_case["brain"].sum() * np.prod(NII_SPACING)
    vol_out = values.sum() * 5.0
    assert abs(vol_out - vol_in) / vol_in < 0.1


def test_preset_inverted_back_to_original_grid(nifti_case):
    pre = ct_preprocess(spacing_mm=(1.0, 1.0, 5.0))
    out = pre({"image": nifti_case["image"], "label": nifti_case["label"]})
    # a "prediction" on the preprocessed grid: the preprocessed brain label
    out["pred"] = MetaTensor(out["label"].as_tensor().clone(), affine=out["image"].affine.clone())
    back = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(out)["pred"]
    assert tuple(back.shape) == (1, *NII_SHAPE)
    np.testing.assert_allclose(np.asarray(back.affine), NII_AFFINE, atol=1e-5)
    assert dice(back.numpy()[0] > 0.5, nifti_case["brain"]) > 0.85


def test_preset_without_label_crop_or_windows(nifti_case):
    out = ct_preprocess(spacing_mm=2.0, crop=None, windows=None)({"image": nifti_case["image"]})
    assert set(out) == {"image"}
    img = out["image"]
    assert img.shape[0] == 1  # HU kept
    assert float(img.min()) == pytest.approx(AIR, abs=1.0)
    np.testing.assert_allclose(spacing_of(img), [2.0, 2.0, 2.0], atol=1e-5)
    with pytest.raises(ValueError):
        ct_preprocess(crop="skull")


def test_preset_on_dicom_folder(tmp_path):
    shape, spacing = (64, 64, 12), (1.5, 1.5, 6.0)
    hu, brain = phantom(shape, spacing)
    write_dicom_series(tmp_path / "series", hu, pixel_spacing=spacing[:2], step=spacing[2])
    loaded = LoadCT()(str(tmp_path / "series"))
    assert tuple(loaded.shape) == (1, *shape)
    np.testing.assert_allclose(loaded.numpy()[0], hu)  # slices ordered by position, rescale applied
    assert nib.aff2axcodes(np.asarray(loaded.affine)) == ("L", "P", "S")

    pre = ct_preprocess(spacing_mm=(2.0, 2.0, 4.0), crop="brain")
    out = pre({"image": str(tmp_path / "series")})
    img = out["image"]
    assert isinstance(img, MetaTensor) and img.ndim == 4 and img.shape[0] == 3
    np.testing.assert_allclose(spacing_of(img), [2.0, 2.0, 4.0], atol=1e-5)
    assert nib.aff2axcodes(np.asarray(img.affine)) == ("R", "A", "S")
    assert img.meta["series_uid"]  # DICOM meta carried through
    # brain window: brain (35 HU) -> 0.4375 fills the middle of the crop
    centre = tuple(np.array(img.shape[1:]) // 2)
    assert float(img[0][centre]) == pytest.approx((BRAIN - 0.0) / 80.0, abs=1e-4)

    out["pred"] = MetaTensor(torch.ones(1, *img.shape[1:]), affine=img.affine.clone())
    back = Invertd(keys="pred", transform=pre, orig_keys="image")(out)["pred"]
    assert tuple(back.shape) == (1, *shape)
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(loaded.affine), atol=1e-5)
    # the pred was ones inside the crop and zero-padded back: the brain is covered
    assert (back.numpy()[0][brain_mask(hu)] > 0.5).all()


def test_spatial_steps_compose_with_loaded_tensors(nifti_case):
    loaded = LoadCTd(keys=["image", "label"])({"image": nifti_case["image"], "label": nifti_case["label"]})
    pre = ct_preprocess(spacing_mm=(1.0, 1.0, 5.0), load=False)
    assert [type(t) for t in pre.transforms][:2] == [ToRASd, ResampleToSpacingd]
    out = pre(loaded)
    assert out["image"].shape[0] == 3
    assert isinstance(pre, Compose)
