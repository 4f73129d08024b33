"""The phantom and the acquisition model, checked on small noiseless renders."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from ichct.pipeline.synth import dicom_writer
from ichct.pipeline.synth.acquisition import VENDORS
from ichct.pipeline.synth.anatomy import sample_head
from ichct.pipeline.synth.grid import PartialVolume, Pose, reader_grid, rotation_matrix, stack_layout
from ichct.pipeline.synth.lesions import Lesion, sample_lesion
from ichct.pipeline.synth.mimics import Mimics
from ichct.pipeline.synth.noise import BONE, SOFT, reconstruct
from ichct.pipeline.synth.phantom import render
from ichct.pipeline.synth.seeding import rng
from ichct.transforms.dicom.geometry import stack_geometry
from ichct.transforms.dicom.headers import SliceHeader


def _setup(seed=1, matrix=128, slices=24, thickness=5.0, tilt=0.0, z_mid=0.0):
    gen = rng(seed, "test")
    head = sample_head(gen)
    pose = Pose(rotation_matrix(4.0, 6.0, -3.0), np.array([2.0, -4.0, -80.0]))
    layout = stack_layout(matrix, slices, 250.0, thickness, tilt, pose.to_world(np.array([0.0, 0.0, z_mid])))
    pv = PartialVolume(layout.pixel_spacing[0], thickness, pose.rotation.T @ layout.normal)
    return gen, head, pose, layout, pv


def test_tilted_stack_grid_matches_the_reader_geometry():
    _, _, _, layout, _ = _setup(tilt=17.0)
    headers = [
        SliceHeader(path=f"{k}", frame_index=None, series_uid="1", sop_instance_uid=str(k), sop_class_uid="", modality="CT",
                    transfer_syntax_uid="", rows=layout.rows, columns=layout.columns,
                    image_orientation=tuple(float(v) for v in layout.iop_text),
                    image_position_mm=tuple(float(v) for v in layout.ipp_text[k]),
                    pixel_spacing_mm=tuple(float(v) for v in layout.pixel_spacing_text))
        for k in reversed(range(layout.n_slices))
    ]
    geometry = stack_geometry(headers)
    assert geometry.sheared and layout.sheared
    assert abs(geometry.tilt_deg) == pytest.approx(17.0, abs=0.05)
    np.testing.assert_allclose(layout.convert_grid.affine, geometry.affine_lps(sheared=False), atol=1e-6)
    np.testing.assert_allclose(layout.acquired_grid.affine, geometry.affine_lps(sheared=True), atol=1e-3)
    flat = stack_layout(64, 8, 250.0, 5.0, 0.0, np.zeros(3))
    assert not flat.sheared
    np.testing.assert_allclose(reader_grid(flat.iop, flat.ipp[::-1], flat.pixel_spacing, 64, 64).affine, flat.acquired_grid.affine, atol=1e-6)


def test_tissues_have_ct_densities():
    _, head, pose, layout, pv = _setup(matrix=160, thickness=2.5)
    out = render(head, Mimics(), [], pose, layout.acquired_grid, pv)
    hu = out.hu
    assert not out.label.any()
    assert 8.0 <= head.gm_hu - head.wm_hu <= 12.0 and 35 <= head.gm_hu <= 41
    assert (np.abs(hu - head.gm_hu) < 1.0).sum() > 1000, "grey matter"
    assert (np.abs(hu - head.wm_hu) < 1.0).sum() > 5000, "white matter"
    assert (np.abs(hu - head.csf_hu) < 1.0).sum() > 500, "CSF / ventricles"
    assert ((hu > 700) & (hu < 1500)).sum() > 2000, "diploe"
    assert (hu > 1450).sum() > 500, "cortical bone"
    assert (hu < -950).sum() > 10000, "air"
    # partial volume: edges between brain and bone take intermediate values
    assert ((hu > 200) & (hu < 600)).sum() > 500


def test_heads_differ_between_patients():
    a, b = sample_head(rng(1, "p")), sample_head(rng(2, "p"))
    assert a.a != b.a and a.gyri[0].tolist() != b.gyri[0].tolist()


def test_mimics_reach_blood_density_without_labels():
    _, head, pose, layout, pv = _setup()
    base = render(head, Mimics(sinus_hu=45.0), [], pose, layout.acquired_grid, pv)
    mimics = Mimics(
        choroid=[{"centre": [s * 16.0, 26.0, 7.0], "radius": 3.0, "hu": 250.0} for s in (-1, 1)],
        pineal={"centre": [0.0, 20.0, -1.0], "radius": 2.5, "hu": 300.0},
        sinus_hu=72.0,
        vessel={"name": "basilar", "p1": [0.0, 4.0, head.z_pf + 8.0], "p2": [0.0, 0.0, -30.0], "radius": 1.8, "hu": 65.0},
    )
    out = render(head, mimics, [], pose, layout.acquired_grid, pv)
    inside = out.depth > 8
    blood_range = lambda v: ((v >= 55) & (v <= 95) & inside).sum()  # noqa: E731
    assert blood_range(out.hu) > blood_range(base.hu) + 100
    assert not out.label.any()


def _lesion(head, subtype, seed=4):
    return sample_lesion(subtype, head, rng(seed, subtype), (-20.0, 40.0), lambda c: True)


@pytest.mark.parametrize("subtype", ["epidural", "subdural", "intraparenchymal", "intraventricular", "subarachnoid"])
def test_each_subtype_is_blood_in_its_compartment(subtype):
    _, head, pose, layout, pv = _setup(slices=32)
    lesion = _lesion(head, subtype)
    out = render(head, Mimics(), [lesion], pose, layout.acquired_grid, pv)
    value = {"epidural": 1, "intraparenchymal": 2, "intraventricular": 3, "subarachnoid": 4, "subdural": 5}[subtype]
    mask = out.label == value
    assert mask.sum() > 5
    assert set(np.unique(out.label)) == {0, value}
    assert 55 <= out.hu[mask].mean() <= 92


def test_intraventricular_blood_is_dependent():
    gen, head, pose, layout, pv = _setup(slices=32)
    lesion = Lesion("intraventricular", "layering", 75.0, {"parts": ["atrium-1", "atrium+1", "occipital-1", "occipital+1", "body-1", "body+1"],
                                                           "depth": 10.0, "anchor": [0, 30, 6]})
    out = render(head, Mimics(), [lesion], pose, layout.acquired_grid, pv)
    wy = layout.acquired_grid.world_coord(1)
    blood = out.label == 3
    assert blood.any()
    # all the blood lies below a fluid level: posterior (world +y, dependent for a supine patient)
    ventricles = (np.abs(out.hu - head.csf_hu) < 1.0) & (out.depth > 30)
    assert wy[blood].min() > np.percentile(wy[ventricles], 50)


def test_labels_do_not_depend_on_the_grid():
    _, head, pose, layout, pv = _setup(tilt=15.0, slices=24)
    lesions = [_lesion(head, s) for s in ("epidural", "intraparenchymal", "subarachnoid")]
    acquired = render(head, Mimics(), lesions, pose, layout.acquired_grid, pv, with_hu=False).label
    corrected = render(head, Mimics(), lesions, pose, layout.convert_grid, pv, with_hu=False).label
    # the same planes, shifted in-plane: the labelled volume is the same to within a few percent
    assert acquired.any()
    assert abs(int((acquired > 0).sum()) - int((corrected > 0).sum())) <= 0.05 * (acquired > 0).sum()


def test_kernels_shape_the_noise():
    gen = rng(0, "noise")
    flat = np.zeros((4, 128, 128), dtype=np.float32)
    soft = reconstruct(flat, 0.5, SOFT, 5.0, None, gen)
    bone = reconstruct(flat, 0.5, BONE, 40.0, None, gen)
    assert soft.std() == pytest.approx(5.0, rel=0.1) and bone.std() == pytest.approx(40.0, rel=0.1)

    def neighbour_correlation(img):
        return float(np.corrcoef(img[:, :, :-1].ravel(), img[:, :, 1:].ravel())[0, 1])

    assert neighbour_correlation(soft) > 0.4  # spatially correlated (blotchy)
    assert neighbour_correlation(bone) < neighbour_correlation(soft)


def test_jpeg2000_fallback_without_gdcm(tmp_path, monkeypatch):
    monkeypatch.setattr(dicom_writer, "HAVE_GDCM", False)
    vendor = VENDORS[0]
    study = dicom_writer.StudyHeader("SYN0001", "SYNTH^0001", "19600101", "F", "060Y", "1.2.3", "00011", "SYNA0001",
                                     "20200101", "101500", "1.2.4", vendor, "ichct-synth")
    stored = rng(0, "j2k").integers(-1000, 2000, (2, 32, 32)).astype(np.int16)
    series = dicom_writer.SeriesHeader(
        "1.2.5", 2, "AXIAL", ("ORIGINAL", "PRIMARY", "AXIAL"), "STANDARD", "101600", 120, 250.0, 5.0, 0.0, 250.0,
        [(40.0, 80.0)], ("1", "0", "0", "0", "1", "0"), ("0.5", "0.5"), [("0", "0", "0"), ("0", "0", "5")], [0.0, 5.0],
        ["1.2.6.1", "1.2.6.2"], [1, 2], -1024)
    paths = dicom_writer.write_series(tmp_path, study, series, stored, "jpeg_lossless")
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
        assert np.array_equal(ds.pixel_array, stored[k])
