"""read_part10_header: the header scan's parser gives dcmread's data set, or leaves the file to dcmread."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files

import foreign_dicom as fd
from ichct.transforms.dicom.part10_header import read_part10_header
from ichct.transforms.dicom.validation import quiet_pydicom_values

PYDICOM_FILES = sorted(f for f in get_testdata_files() if os.path.isfile(f))


def _elements(ds: pydicom.Dataset) -> dict:
    """Every element (nested ones too) as pydicom converts it: VR and value, or the error it raises."""
    out = {}
    for element in ds.iterall():
        try:
            out[element.tag] = (element.VR, repr(element.value))
        except Exception as exc:  # noqa: BLE001 - the same error must come from both
            out[element.tag] = ("error", type(exc).__name__)
    return out


def _compare_with_dcmread(data: bytes) -> bool:
    """True when parsed here (and then equal to dcmread's result); False when left to dcmread."""
    got = read_part10_header(data)
    if got is None:
        return False
    fp = io.BytesIO(data)
    ref = pydicom.dcmread(fp, stop_before_pixels=True)
    ds, offset = got
    assert offset == fp.tell()
    assert _elements(ds) == _elements(ref)
    assert _elements(ds.file_meta) == _elements(ref.file_meta)
    assert ds.original_encoding == ref.original_encoding
    assert ds.original_character_set == ref.original_character_set
    return True


def test_pydicom_test_files_parse_as_dcmread_parses_them():
    """pydicom's own files from many scanners and syntaxes (compressed, big endian, character sets,
    sequences, a VR mismatch): each parsed file equals dcmread's, the odd ones go to dcmread."""
    assert len(PYDICOM_FILES) > 50
    parsed, left = [], []
    with quiet_pydicom_values(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in PYDICOM_FILES:
            (parsed if _compare_with_dcmread(Path(path).read_bytes()) else left).append(Path(path).name)
    assert len(parsed) >= 0.8 * len(PYDICOM_FILES), left
    for name in ("image_dfl.dcm", "no_meta.dcm", "ExplVR_BigEndNoMeta.dcm", "meta_missing_tsyntax.dcm"):
        assert name not in parsed  # deflated, bare data sets, no transfer syntax: dcmread's cases


@pytest.mark.parametrize("options", [{"transfer_syntax": key} for key in fd.TRANSFER_SYNTAXES]
                         + [{"charset": key} for key in fd.CHARSET_SAMPLES]
                         + [{"private_tags": True}, {"deidentify": True}, {"signed": True, "bits_stored": 12}])
def test_foreign_series_parse_as_dcmread_parses_them(tmp_path, options):
    series = fd.write_ct_series(tmp_path / "s", n_slices=2, rows=32, pixel_spacing=7.5, **options)
    with quiet_pydicom_values():
        assert all(_compare_with_dcmread(Path(f).read_bytes()) for f in series.files)


@pytest.mark.parametrize("cut", [140, 200, 400])
def test_a_file_cut_in_its_header_is_left_to_dcmread_or_parsed_as_dcmread_does(tmp_path, cut):
    path = fd.write_ct_series(tmp_path / "s", n_slices=1, rows=8, pixel_spacing=30.0).files[0]
    with quiet_pydicom_values(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = Path(path).read_bytes()[:cut]
        try:
            _compare_with_dcmread(data)
        except AssertionError:
            raise
        except Exception:  # noqa: BLE001 - dcmread refuses it: then it must not have been parsed here
            assert read_part10_header(data) is None
