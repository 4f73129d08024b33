"""Category 5: transfer syntaxes, compressed and not. Every one must decode to the exact HU."""

from __future__ import annotations

import dicom_factory as fac
import numpy as np
import pydicom
import pytest

from ichct.transforms.dicom import read_dicom_series


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("ts", list(fac.TRANSFER_SYNTAXES))
def test_transfer_syntax_decodes_exactly(tmp_path, ts, signed):
    spec = fac.make_stack(10, 5.0, key=f"ts-{ts}-{signed}", transfer_syntax=ts, pixel_representation=int(signed),
                          intercept=0.0 if signed else -1024.0)
    paths = fac.write_series(tmp_path / "dcm", spec)
    # the files really use the syntax (the factory also checks the round trip)
    assert str(pydicom.dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID) == fac.TRANSFER_SYNTAXES[ts]
    vol = read_dicom_series(tmp_path / "dcm")
    assert vol.info["transfer_syntax_uid"] == fac.TRANSFER_SYNTAXES[ts]
    assert vol.hu_volume.dtype == np.int16
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)


@pytest.mark.parametrize("ts", ["rle", "j2k", "jpegls1"])
def test_compressed_12_bit(tmp_path, ts):
    spec = fac.make_stack(8, 5.0, key=f"ts12-{ts}", transfer_syntax=ts, bits_stored=12, intercept=-1024.0)
    fac.write_series(tmp_path / "dcm", spec)
    vol = read_dicom_series(tmp_path / "dcm")
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)


def test_mixed_transfer_syntaxes_in_one_series(tmp_path, run_cli):
    """PACS exports sometimes mix syntaxes within a series (re-compressed instances)."""
    spec = fac.make_stack(12, 5.0, key="ts-mixed")
    keys = list(fac.TRANSFER_SYNTAXES)
    for k, s in enumerate(spec.slices):
        single = spec.with_(slices=[s], transfer_syntax=keys[k % len(keys)])
        fac.write_series(tmp_path / "dcm", single, seed=k)
    res = run_cli("convert", tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert res.code == 0, res.err
    data, affine, _ = fac.load_nifti(tmp_path / "o.nii.gz")
    assert data.shape == (64, 60, 12)
    fac.assert_exact(data, affine, spec)
