"""MONAI integration: ``LoadDicomSeries`` / ``LoadDicomSeriesd`` give channel-first MetaTensors
whose RAS affine is the one ``ichct convert`` writes, inside Compose, Dataset and DataLoader."""

from __future__ import annotations

import dicom_factory as fac
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, ScaleIntensityRanged

from ichct.transforms import LoadDicomSeries, LoadDicomSeriesd


@pytest.fixture(scope="module")
def two_series(tmp_path_factory):
    root = tmp_path_factory.mktemp("monai")
    straight = fac.make_stack(16, 5.0, key="monai-straight")
    tilted = fac.make_stack(16, 4.0, key="monai-tilted", tilt_deg=18.0)
    fac.write_series(root / "straight", straight)
    fac.write_series(root / "tilted", tilted)
    return root, {"straight": straight, "tilted": tilted}


def _nifti(run_cli, folder, out, *extra):
    res = run_cli("convert", folder, out, *extra)
    assert res.code == 0, res.err
    return fac.load_nifti(out)


@pytest.mark.parametrize("name, tilt_correction", [("straight", True), ("tilted", True), ("tilted", False)])
def test_load_dicom_series_matches_convert(two_series, tmp_path, run_cli, name, tilt_correction):
    root, specs = two_series
    extra = () if tilt_correction else ("--no-tilt-correction",)
    data, affine, _ = _nifti(run_cli, root / name, tmp_path / "o.nii.gz", *extra)
    img = LoadDicomSeries(tilt_correction=tilt_correction)(str(root / name))
    assert isinstance(img, MetaTensor)
    assert tuple(img.shape) == (1, 64, 60, 16)
    assert img.dtype == torch.float32
    assert np.allclose(np.asarray(img.affine), affine, atol=1e-4)
    assert str(img.meta["space"]) == "RAS"
    assert np.array_equal(img.numpy()[0], data.astype(np.float32))
    assert bool(img.meta["tilt_corrected"]) == (name == "tilted" and tilt_correction)
    results = fac.marker_centroids(img.numpy()[0], np.asarray(img.affine), series=specs[name])
    assert len(results) >= 2 and all(r.error_mm <= 1.5 for r in results)


def test_load_dicom_series_keeps_int16_when_asked(two_series):
    root, specs = two_series
    img = LoadDicomSeries(dtype=None)(root / "straight")
    assert img.dtype == torch.int16
    fac.assert_exact(img.numpy()[0], np.asarray(img.affine), specs["straight"])


def test_dict_transform_in_compose(two_series):
    root, specs = two_series
    pipeline = Compose([
        LoadDicomSeriesd(keys="image"),
        ScaleIntensityRanged(keys="image", a_min=-1000.0, a_max=2000.0, b_min=0.0, b_max=1.0, clip=True),
    ])
    out = pipeline({"image": str(root / "straight"), "label": 1})
    img = out["image"]
    assert isinstance(img, MetaTensor) and tuple(img.shape) == (1, 64, 60, 16)
    assert out["label"] == 1
    hu = img.numpy()[0] * 3000.0 - 1000.0
    fac.assert_exact(hu, np.asarray(img.affine), specs["straight"], tol=0.6)


def test_dataset_and_dataloader_batch_of_two(two_series, tmp_path, run_cli):
    root, specs = two_series
    items = [{"image": str(root / "straight"), "id": "a"}, {"image": str(root / "tilted"), "id": "b"}]
    ds = Dataset(items, transform=Compose([LoadDicomSeriesd(keys="image")]))
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=0)))
    img = batch["image"]
    assert tuple(img.shape) == (2, 1, 64, 60, 16)
    assert isinstance(img, MetaTensor)
    assert tuple(img.affine.shape) == (2, 4, 4)
    assert list(batch["id"]) == ["a", "b"]
    for b, name in enumerate(("straight", "tilted")):
        data, affine, _ = _nifti(run_cli, root / name, tmp_path / f"{name}.nii.gz")
        assert np.allclose(np.asarray(img.affine[b]), affine, atol=1e-4)
        assert np.array_equal(img[b, 0].numpy(), data.astype(np.float32))
