"""Category 4 (HU decoding) and 10 (output dtype): rescale, pixel representation, BitsStored,
PixelPaddingValue, and int16 vs float32 NIfTI output."""

from __future__ import annotations

import dicom_factory as fac
import numpy as np
import pytest


def _convert(run_cli, folder, out, *extra):
    res = run_cli("convert", folder, out, *extra)
    assert res.code == 0, res.err
    data, affine, img = fac.load_nifti(out)
    return data, affine, img, fac.read_sidecar(out)


def test_per_slice_integral_rescale(tmp_path, run_cli):
    spec = fac.make_stack(12, 5.0, key="rescale-int", slope=[1, 2, 1, 1], intercept=[-1024, -1024, -1000, -1010])
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert data.dtype == np.int16
    fac.assert_exact(data, affine, spec, tol=1.0 + 0.05)  # slope 2: stored steps of 2 HU
    assert side["rescale"]["varies_between_slices"] is True
    assert side["rescale"]["slopes"] == [1.0, 2.0]
    assert sorted(side["rescale"]["intercepts"]) == [-1024.0, -1010.0, -1000.0]


def test_a_zero_rescale_slope_is_taken_as_one_and_said(tmp_path, run_cli):
    import pydicom

    spec = fac.make_stack(12, 5.0, key="slope-zero")
    paths = fac.write_series(tmp_path / "dcm", spec)
    for path in paths[:3]:
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = 0
        ds.save_as(path)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    fac.assert_exact(data, affine, spec, tol=1.05)
    assert any("RescaleSlope 0 on 3 slice(s)" in w and "taken as 1" in w for w in side["warnings"])


def test_files_without_photometric_interpretation_decode_as_grey_scale(tmp_path, run_cli):
    """An archive dropped PhotometricInterpretation: one-sample pixels decode as MONOCHROME2 (it
    never changes the stored values, so the HU are exact)."""
    import pydicom

    spec = fac.make_stack(12, 5.0, key="no-photometric")
    for path in fac.write_series(tmp_path / "dcm", spec):
        ds = pydicom.dcmread(path)
        del ds.PhotometricInterpretation
        ds.save_as(path)
    data, affine, _, _ = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    fac.assert_exact(data, affine, spec)


def test_per_slice_fractional_rescale_gives_float(tmp_path, run_cli):
    spec = fac.make_stack(12, 5.0, key="rescale-frac", slope=[0.5, 0.25, 0.5], intercept=[-1024.5, -1000.25, -1024.0])
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, img, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert data.dtype == np.float32 and img.get_data_dtype() == np.float32
    assert side["dtype"] == "float32"
    fac.assert_exact(data, affine, spec, tol=0.25 + 0.05)


@pytest.mark.parametrize("signed, bits, variant", [
    (False, 16, ""), (True, 16, ""), (False, 12, ""), (True, 12, ""),
    (False, 12, "high_bit_junk"),  # overlay-style junk above BitsStored must be ignored
    (True, 12, "not_sign_extended"),  # two's complement in 12 bits, upper 4 bits zero
])
def test_pixel_representation_and_bits_stored(tmp_path, run_cli, signed, bits, variant):
    spec = fac.make_stack(10, 5.0, key=f"bits-{signed}-{bits}-{variant}", pixel_representation=int(signed),
                          bits_stored=bits, intercept=0.0 if signed else -1024.0,
                          high_bit_junk=variant == "high_bit_junk", sign_extend=variant != "not_sign_extended")
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert data.dtype == np.int16
    fac.assert_exact(data, affine, spec)
    assert data.min() >= -1024  # nothing decoded below air


@pytest.mark.parametrize("ts", ["explicit", "implicit", "rle"])
@pytest.mark.parametrize("signed, padding, intercept", [
    (False, 1044, -1024.0),  # would read as 20 HU (tissue-like) if rescaled
    (True, -2000, 0.0),  # the common "outside FOV" value
    (True, 20, 0.0),  # would read as 20 HU
])
def test_pixel_padding_is_air_not_tissue(tmp_path, run_cli, ts, signed, padding, intercept):
    spec = fac.make_stack(8, 5.0, key=f"pad-{ts}-{signed}-{padding}", pixel_representation=int(signed),
                          intercept=intercept, padding_value=padding, fov_radius_mm=112.0, transfer_syntax=ts)
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    outside = ~spec.fov_mask().T  # (cols, rows) like the volume's (i, j)
    assert outside.sum() > 100
    padded = data[outside, :]
    assert padded.max() <= -1000, f"padding read as {np.unique(padded)} HU"
    assert side["padding_voxels_set_to_air"] == int(outside.sum()) * spec.n
    fac.assert_exact(data, affine, spec)  # inside the FOV, exact
    # no tissue-like value anywhere outside the head
    world = fac.voxel_world_lps(affine, data.shape)
    outside_head = ~fac.DEFAULT_PHANTOM.inside_head(world)
    assert data[outside_head].max() <= -999


@pytest.mark.parametrize("case, expected", [
    ("straight", "int16"), ("tilted", "float32"), ("gap", "float32"), ("fractional_slope", "float32"),
])
def test_output_dtype(tmp_path, run_cli, case, expected):
    kwargs = {
        "straight": dict(),
        "tilted": dict(tilt_deg=20.0),
        "gap": dict(offsets_mm=[(k - 5) * 5.0 for k in range(12) if k != 6]),
        "fractional_slope": dict(slope=0.5, intercept=-1024.0),
    }[case]
    spec = fac.make_stack(12, 5.0, key=f"dtype-{case}", **kwargs)
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, img, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert str(img.get_data_dtype()) == expected
    assert side["dtype"] == expected
    assert str(data.dtype) == expected
    slope, inter = img.header.get_slope_inter()
    assert slope in (None, 1.0) and inter in (None, 0.0)
    hu = np.asarray(img.get_fdata())
    assert np.array_equal(hu, data.astype(np.float64)), "scaled NIfTI values differ from stored HU"
    assert np.abs(hu).max() < 5000 and hu.min() >= -1024


def _set_raw_ds(path, keyword: str, text: bytes) -> None:
    """Store ``text`` as the raw value of a DS element (pydicom would refuse to write it)."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

    ds = pydicom.dcmread(path)
    tag = Tag(tag_for_keyword(keyword))
    ds[tag] = RawDataElement(tag, "DS", len(text), text, 0, False, True)
    ds.save_as(path)


@pytest.mark.parametrize("slope_text, intercept_text", [
    (b"0,5 ", b"-1024,0 "),  # a decimal comma (an exporter writing in its locale)
    (b"0.5\\0.5 ", b"-1024\\-1024 "),  # the value repeated
])
def test_rescale_in_a_decimal_comma_or_repeated_is_read(tmp_path, run_cli, slope_text, intercept_text):
    spec = fac.make_stack(10, 5.0, key=f"rescale-text-{slope_text!r}", slope=0.5, intercept=-1024.0)
    for path in fac.write_series(tmp_path / "dcm", spec):
        _set_raw_ds(path, "RescaleSlope", slope_text)
        _set_raw_ds(path, "RescaleIntercept", intercept_text)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    fac.assert_exact(data, affine, spec, tol=0.25 + 0.05)
    assert side["rescale"]["slopes"] == [0.5] and side["rescale"]["intercepts"] == [-1024.0]


def test_a_rescale_that_is_not_a_number_is_refused_naming_the_file(tmp_path, run_cli):
    """An unreadable RescaleSlope used to be taken as absent (slope 1): HU off by the slope, silently."""
    spec = fac.make_stack(10, 5.0, key="rescale-garbage", slope=0.5, intercept=-1024.0)
    paths = fac.write_series(tmp_path / "dcm", spec)
    _set_raw_ds(paths[3], "RescaleSlope", b"0;5 ")
    res = run_cli("convert", tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert res.code == 1 and "Traceback" not in res.err
    assert paths[3].name in res.err and "RescaleSlope '0;5' is not a number" in res.err
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("how", ["absent", "empty"])
def test_no_bits_stored_is_read_as_bits_allocated_with_a_warning(tmp_path, how):
    """BitsStored (with HighBit) dropped or emptied by an archive: pydicom refused to decode every file
    ('Missing required element'). All allocated bits are taken as stored, as the header record
    already assumed, with a warning; the HU are exact for values that fit (12-bit data here)."""
    import pydicom

    from ichct.transforms.dicom import read_dicom_series

    spec = fac.make_stack(8, 5.0, key=f"no-bits-stored-{how}", bits_stored=12, intercept=-1024.0)
    paths = fac.write_series(tmp_path / "dcm", spec)
    for p in paths:
        ds = pydicom.dcmread(p)
        for keyword in ("BitsStored", "HighBit"):
            if how == "absent":
                delattr(ds, keyword)
            else:
                ds[keyword].value = None
        ds.save_as(p)
    vol = read_dicom_series(tmp_path / "dcm")
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)
    note = [w for w in vol.info["warnings"] if "BitsStored absent or empty" in w]
    assert len(note) == 1 and "8 file(s)" in note[0] and "(16)" in note[0]


def test_no_bits_stored_with_12_bit_twos_complement_values_is_refused(tmp_path):
    """Without BitsStored, 12-bit two's-complement values read as 16 bits put air at about +3072 HU,
    and the HU check (no air near -1000) let them pass unchanged: refused, naming what is missing."""
    import pydicom

    from ichct.transforms.dicom import DicomIngestError, read_dicom_series

    paths = fac.write_series(tmp_path / "dcm", fac.make_stack(8, 5.0, key="no-bits-stored-wrap"))
    for p in paths:
        ds = pydicom.dcmread(p)
        hu = ds.pixel_array.astype(np.int32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        ds.PixelData = (np.clip(hu, -2048, 2047).astype(np.int32) & 0xFFF).astype(np.uint16).tobytes()
        ds.PixelRepresentation, ds.RescaleSlope, ds.RescaleIntercept = 0, 1, 0
        for keyword in ("BitsStored", "HighBit", "PixelPaddingValue"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(p)
    with pytest.raises(DicomIngestError, match="BitsStored is absent or empty and no air"):
        read_dicom_series(tmp_path / "dcm")


def _drop(paths, *keywords, empty=False):
    """Remove (or empty) ``keywords`` from every file, as public archives do even to Type 1 ones."""
    import pydicom

    for p in paths:
        ds = pydicom.dcmread(p)
        for keyword in keywords:
            if empty:
                ds[keyword].value = None
            else:
                delattr(ds, keyword)
        ds.save_as(p)


@pytest.mark.parametrize("empty", [False, True], ids=["absent", "empty"])
def test_files_without_samples_per_pixel_decode_as_one_sample(tmp_path, empty):
    """SamplesPerPixel (Type 1) dropped: a CT image has one sample a pixel; the HU are exact."""
    from ichct.transforms.dicom import read_dicom_series

    spec = fac.make_stack(8, 5.0, key="no-samples")
    _drop(fac.write_series(tmp_path / "dcm", spec), "SamplesPerPixel", empty=empty)
    vol = read_dicom_series(tmp_path / "dcm")
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)


@pytest.mark.parametrize("syntax", ["explicit", "implicit"])
def test_files_without_bits_allocated_take_it_from_the_pixel_data_length(tmp_path, syntax):
    """BitsAllocated dropped: uncompressed pixel data of rows x columns x 2 bytes is 16 bits a pixel
    (in implicit VR pydicom cannot even tell OB from OW without it)."""
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    from ichct.transforms.dicom import read_dicom_series

    spec = fac.make_stack(8, 5.0, key=f"no-bits-allocated-{syntax}", bits_stored=12)
    for p in fac.write_series(tmp_path / "dcm", spec):
        ds = pydicom.dcmread(p)
        del ds.BitsAllocated
        if syntax == "implicit":
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(p, enforce_file_format=True)
    vol = read_dicom_series(tmp_path / "dcm")
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)


@pytest.mark.parametrize("signed, bits, intercept, padding", [
    (True, 16, 0.0, None),         # air stored as -1000: read unsigned it would be +64,536 HU
    (True, 16, -1024.0, -2000),    # padding stored as -2000 outside the field of view
    (False, 12, -1024.0, None),    # the usual unsigned 12 bits: nothing reads differently
    (False, 16, -32768.0, None),   # unsigned with air stored near 31,768: kept unsigned
], ids=["signed-intercept-0", "signed-padding", "unsigned-12", "unsigned-offset-32768"])
@pytest.mark.parametrize("empty", [False, True], ids=["absent", "empty"])
def test_files_without_pixel_representation_read_the_hu_exactly(tmp_path, signed, bits, intercept, padding, empty):
    """PixelRepresentation (Type 1) dropped: 16-bit values from 32768 up are two's complement
    unless reading them unsigned keeps them within the CT scale (an intercept near -32768)."""
    from ichct.transforms.dicom import read_dicom_series

    spec = fac.make_stack(8, 5.0, key=f"no-pixrep-{signed}-{bits}-{intercept}", intercept=intercept,
                          pixel_representation=int(signed), bits_stored=bits, padding_value=padding)
    _drop(fac.write_series(tmp_path / "dcm", spec), "PixelRepresentation", empty=empty)
    vol = read_dicom_series(tmp_path / "dcm")
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)
    note = [w for w in vol.info["warnings"] if "PixelRepresentation absent or empty" in w]
    assert len(note) == 1 and "8 file(s)" in note[0]
    assert ("two's complement" if signed and bits == 16 else "unsigned") in note[0]
