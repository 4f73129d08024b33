"""Categories 3, 6 and 7: slice order, duplicates, gantry tilt, gaps / uneven spacing / overlap.

The truth is the phantom evaluated at the world position of every output voxel (from the NIfTI
affine), and the marker blobs' centroids in world coordinates.
"""

from __future__ import annotations

import math

import dicom_factory as fac
import numpy as np
import pytest

from ichct.transforms.dicom import read_dicom_series


def _convert(run_cli, folder, out, *extra):
    res = run_cli("convert", folder, out, *extra)
    assert res.code == 0, res.err
    data, affine, img = fac.load_nifti(out)
    return data, affine, img, fac.read_sidecar(out)


# --------------------------------------------------------------------------------------------
# 3. slice order and duplicates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("numbers", ["scrambled", "reversed"])
@pytest.mark.parametrize("stack_direction", ["head_first", "feet_first"])
def test_slice_order_comes_from_positions(tmp_path, run_cli, numbers, stack_direction):
    offsets = [(k - 9.5) * 5.0 for k in range(20)]
    if stack_direction == "feet_first":
        offsets = offsets[::-1]  # InstanceNumber 1 is now the top slice
    spec = fac.make_stack(offsets_mm=offsets, key=f"order-{numbers}-{stack_direction}", instance_numbers=numbers)
    fac.write_series(tmp_path / "dcm", spec, subfolders=2)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert data.dtype == np.int16
    fac.assert_exact(data, affine, spec)
    assert all(r.error_mm <= 1.5 for r in fac.marker_centroids(data, affine, series=spec))
    assert side["duplicates"]["count"] == 0 and side["missing_slices"] == 0


@pytest.mark.parametrize("kind", ["inplane_rotation", "prone_like", "coronal_acquisition", "sagittal_acquisition"])
def test_orientations(tmp_path, run_cli, kind):
    kwargs = {
        "inplane_rotation": dict(inplane_rotation_deg=25.0),
        "prone_like": dict(flip_rows=True, inplane_rotation_deg=180.0),
        "coronal_acquisition": dict(plane="coronal", n_slices=26, spacing_mm=4.0),
        "sagittal_acquisition": dict(plane="sagittal", n_slices=24, spacing_mm=4.0, center_shift=(-6.0, -5.0, 0.0)),
    }[kind]
    spec = fac.make_stack(key=f"orient-{kind}", **kwargs)
    fac.write_series(tmp_path / "dcm", spec)
    info = None
    if kind in ("coronal_acquisition", "sagittal_acquisition"):
        # not axial: only read when asked for explicitly
        data, affine, _, info = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz", "--series", spec.series_uid)
    else:
        data, affine, _, info = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    fac.assert_exact(data, affine, spec)
    results = fac.marker_centroids(data, affine, series=spec)
    assert len(results) >= 2 and all(r.error_mm <= 1.5 for r in results)
    assert info["tilt"]["detected"] is False


def test_duplicate_positions_are_detected_and_dropped(tmp_path, run_cli):
    base = fac.make_stack(16, 5.0, key="dups")
    dup_idx = [3, 7, 8]
    slices = list(base.slices) + [fac.SliceSpec(**{**vars(base.slices[i]), "instance_number": 100 + i}) for i in dup_idx]
    spec = base.with_(slices=slices)
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert side["duplicates"]["count"] == 3
    assert side["source_slice_count"] == 19
    assert data.shape == (64, 60, 16)
    assert data.dtype == np.int16
    fac.assert_exact(data, affine, base)


# --------------------------------------------------------------------------------------------
# 6. gantry tilt
# --------------------------------------------------------------------------------------------

TILTS = [-30.0, -17.0, 12.0, 30.0]


@pytest.mark.parametrize("mode", ["iop", "ipp"])
@pytest.mark.parametrize("tilt", TILTS)
def test_tilt_corrected(tmp_path, run_cli, tilt, mode):
    spec = fac.make_stack(20, 4.0, key=f"tilt-{tilt}-{mode}", tilt_deg=tilt, tilt_mode=mode)
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, img, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert side["tilt"]["detected"] is True
    assert side["tilt"]["corrected"] is True
    assert side["tilt"]["sheared_affine_kept"] is False
    assert abs(abs(side["tilt"]["angle_deg"]) - abs(tilt)) <= 0.5
    # the corrected grid is orthogonal, and the slice axis is the slice normal
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    assert np.allclose(axes.T @ axes, np.eye(3), atol=1e-4)
    assert data.dtype == np.float32
    pixel_diag = math.hypot(*spec.pixel_spacing)
    fac.assert_geometry(data, affine, spec, reach_mm=pixel_diag + 0.5)


@pytest.mark.parametrize("mode", ["iop", "ipp"])
@pytest.mark.parametrize("tilt", [-30.0, 30.0])
def test_tilt_kept_with_sheared_sform(tmp_path, run_cli, tilt, mode):
    spec = fac.make_stack(20, 4.0, key=f"tiltkeep-{tilt}-{mode}", tilt_deg=tilt, tilt_mode=mode)
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, img, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz", "--no-tilt-correction")
    assert side["tilt"]["detected"] is True
    assert side["tilt"]["corrected"] is False
    assert side["tilt"]["sheared_affine_kept"] is True
    sform, sform_code = img.get_sform(coded=True)
    assert int(sform_code) > 0
    assert np.allclose(affine, sform)
    axes = sform[:3, :3] / np.linalg.norm(sform[:3, :3], axis=0)
    assert not np.allclose(axes.T @ axes, np.eye(3), atol=1e-3), "affine should be sheared"
    # The slice axis is the acquired slice-to-slice step (LPS), in RAS.
    first, second = (np.asarray(s.position) for s in spec.slices[:2])
    assert np.allclose((fac.LPS_FROM_RAS @ sform)[:3, 2], second - first, atol=1e-3)
    # nothing was resampled: every voxel is exactly the phantom at its world position (through the sform)
    assert data.dtype == np.int16
    fac.assert_exact(data, sform, spec)
    results = fac.marker_centroids(data, sform, series=spec)
    assert len(results) >= 2 and all(r.error_mm <= 1.5 for r in results)


# --------------------------------------------------------------------------------------------
# 7. gaps, uneven spacing, overlapping stacks
# --------------------------------------------------------------------------------------------


def _grid_planes_along_normal(affine_ras, n_planes, normal):
    aff = fac.LPS_FROM_RAS @ affine_ras
    return np.array([(aff @ [0, 0, k, 1])[:3] @ normal for k in range(n_planes)])


def _check_resampled(data, affine, spec, side, reach_mm):
    assert side["resampled_to_uniform_spacing"] is True
    assert side["spacing_uniform"] is False
    assert data.dtype == np.float32
    # the uniform grid stays inside the acquired slab: no plane is extrapolated
    normal = spec.normal()
    acquired = np.sort(spec.positions_along_normal())
    planes = _grid_planes_along_normal(affine, data.shape[2], normal)
    assert planes.min() >= acquired[0] - 0.05 and planes.max() <= acquired[-1] + 0.05, (
        f"output planes span {planes.min():.2f}..{planes.max():.2f} mm along the normal but slices were "
        f"acquired only at {acquired[0]:.2f}..{acquired[-1]:.2f} mm")
    # output planes that coincide with an acquired slice hold exactly that slice's data
    world = fac.voxel_world_lps(affine, data.shape)
    truth = fac.DEFAULT_PHANTOM.hu(world)
    coincide = spec.distance_to_nearest_slice(world[:, :, :, :]) < 0.01
    coincide &= spec.covers(world, margin_mm=-1e-3)
    assert coincide.any()
    assert np.abs(data.astype(float) - truth)[coincide].max() <= 0.51
    fac.assert_geometry(data, affine, spec, reach_mm=reach_mm)


@pytest.mark.parametrize("missing", [[3], [3, 4]])
def test_gap_detected_and_filled_on_uniform_grid(tmp_path, run_cli, missing):
    full = [(k - 9.5) * 5.0 for k in range(20)]
    offsets = [o for k, o in enumerate(full) if k not in missing]
    spec = fac.make_stack(offsets_mm=offsets, key=f"gap-{missing}")
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert len(side["gaps"]) == 1
    gap = side["gaps"][0]
    assert gap["missing_slices"] == len(missing)
    assert abs(gap["distance_mm"] - 5.0 * (len(missing) + 1)) < 0.01
    assert side["missing_slices"] == len(missing)
    assert data.shape == (64, 60, 20)
    assert np.allclose(side["spacing_mm"], [3.9, 4.2, 5.0], atol=1e-4)
    _check_resampled(data, affine, spec, side, reach_mm=5.0 * (len(missing) + 1) / 2 + 0.5)


def test_a_frame_without_position_is_left_out_by_name(tmp_path, run_cli):
    """A file whose ImagePositionPatient an archive dropped cannot be placed: it is left out with a
    warning naming it and why, and the hole it leaves is filled like any gap."""
    import pydicom

    offsets = [(k - 9.5) * 5.0 for k in range(20)]
    paths = fac.write_series(tmp_path / "dcm", fac.make_stack(offsets_mm=offsets, key="no-ipp"))
    spec = fac.make_stack(offsets_mm=offsets[:7] + offsets[8:], key="no-ipp")  # what can be placed
    ds = pydicom.dcmread(paths[7])
    del ds.ImagePositionPatient
    ds.save_as(paths[7])
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    left_out = [w for w in side["warnings"] if "left out" in w]
    assert len(left_out) == 1 and paths[7].name in left_out[0] and "ImagePositionPatient" in left_out[0]
    assert side["missing_slices"] == 1 and data.shape == (64, 60, 20)
    _check_resampled(data, affine, spec, side, reach_mm=5.0 + 0.5)


def test_gap_in_tilted_stack(tmp_path, run_cli):
    full = [(k - 9.5) * 4.0 for k in range(20)]
    offsets = [o for k, o in enumerate(full) if k != 2]
    spec = fac.make_stack(offsets_mm=offsets, key="gap-tilt", tilt_deg=15.0)
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert side["tilt"]["corrected"] is True
    assert side["missing_slices"] == 1
    fac.assert_geometry(data, affine, spec, reach_mm=math.hypot(*spec.pixel_spacing, 4.0) + 0.5)


def test_uneven_spacing_resampled(tmp_path, run_cli):
    diffs = [5.0] * 4 + [3.0] + [5.0] * 14  # one short step: the slab is not a whole number of steps
    offsets = list(np.concatenate([[0.0], np.cumsum(diffs)]) - 45.0)
    spec = fac.make_stack(offsets_mm=offsets, key="uneven")
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert side["gaps"] == [] and side["missing_slices"] == 0
    _check_resampled(data, affine, spec, side, reach_mm=5.5)


def test_uneven_spacing_whole_steps_resampled(tmp_path, run_cli):
    diffs = [5.0] * 4 + [3.0, 7.0] + [5.0] * 13  # uneven, but the slab is a whole number of 5 mm steps
    offsets = list(np.concatenate([[0.0], np.cumsum(diffs)]) - 45.0)
    spec = fac.make_stack(offsets_mm=offsets, key="uneven-whole")
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    _check_resampled(data, affine, spec, side, reach_mm=7.5)


@pytest.mark.parametrize("n_thin, n_thick", [(6, 6), (8, 6)])
def test_two_spacing_zones_keep_the_thin_slices(tmp_path, run_cli, n_thin, n_thick):
    """One series, two protocols (GE sequential head: 2.5 mm posterior fossa, then 5 mm cerebrum):
    resampled onto the thin zone's 2.5 mm, whichever zone has more slices, and no step of the
    thick zone is reported as a gap or missing slice."""
    diffs = [2.5] * (n_thin - 1) + [5.0] * n_thick
    offsets = list(np.concatenate([[0.0], np.cumsum(diffs)]) - 20.0)
    spec = fac.make_stack(offsets_mm=offsets, key=f"zones-{n_thin}-{n_thick}")
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert side["gaps"] == [] and side["missing_slices"] == 0
    assert side["spacing_mm"][2] == pytest.approx(2.5, abs=1e-4)
    assert data.shape[2] == round(sum(diffs) / 2.5) + 1
    _check_resampled(data, affine, spec, side, reach_mm=2.75)


def test_gap_next_to_a_spacing_change_is_counted_in_local_slices(tmp_path, run_cli):
    """A missing 5 mm slice right after a 2.5 mm zone is one missing slice (judged against the
    neighbouring 5 mm steps), not three 2.5 mm ones."""
    diffs = [2.5] * 8 + [10.0] + [5.0] * 4  # the median step is 2.5 mm
    offsets = list(np.concatenate([[0.0], np.cumsum(diffs)]) - 20.0)
    spec = fac.make_stack(offsets_mm=offsets, key="zones-gap")
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert [g["missing_slices"] for g in side["gaps"]] == [1]
    assert side["gaps"][0]["distance_mm"] == pytest.approx(10.0, abs=0.01)


def test_overlapping_stacks_same_positions(tmp_path, run_cli):
    """Two acquisitions in one series overlapping by three slice positions (identical pixels)."""
    a = [(k - 11) * 5.0 for k in range(12)]
    b = [(k - 2) * 5.0 for k in range(12)]
    spec = fac.make_stack(offsets_mm=a + b, key="overlap-same")
    for s in spec.slices[12:]:
        s.acquisition_number = 2
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert side["duplicates"]["count"] == 3
    assert data.shape == (64, 60, 21)
    assert data.dtype == np.int16 and side["resampled_to_uniform_spacing"] is False
    fac.assert_exact(data, affine, spec)


def test_overlapping_stacks_interleaved(tmp_path, run_cli):
    """Two acquisitions whose overlap is offset by half a slice: uneven spacing in the overlap."""
    a = [(k - 11) * 5.0 for k in range(12)]
    b = [(k - 2) * 5.0 - 2.5 for k in range(12)]
    spec = fac.make_stack(offsets_mm=a + b, key="overlap-interleaved")
    for s in spec.slices[12:]:
        s.acquisition_number = 2
    fac.write_series(tmp_path / "dcm", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    _check_resampled(data, affine, spec, side, reach_mm=5.5)


def test_read_api_matches_cli(tmp_path, run_cli):
    spec = fac.make_stack(offsets_mm=[o for k, o in enumerate((k - 9.5) * 5.0 for k in range(20)) if k != 15],
                          key="api-vs-cli", tilt_deg=-10.0, tilt_mode="ipp")
    fac.write_series(tmp_path / "dcm", spec)
    vol = read_dicom_series(tmp_path / "dcm")
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert np.allclose(vol.affine_ras, affine, atol=1e-5)
    assert np.array_equal(np.asarray(vol.hu_volume), data)
    assert side == vol.info


# --------------------------------------------------------------------------------------------
# 8. Enhanced CT Image Storage (one multi-frame file)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["folder", "file"])
def test_enhanced_ct_per_frame_rescale_shuffled_frames(tmp_path, run_cli, target):
    spec = fac.make_stack(16, 5.0, key="enhanced", slope=[1, 2, 1], intercept=[-1024, -1024, -1000])
    path = fac.write_enhanced_ct(tmp_path / "dcm" / "MF000001", spec, shuffle_frames=True)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm" if target == "folder" else path, tmp_path / "o.nii.gz")
    assert data.shape == (64, 60, 16)
    assert data.dtype == np.int16
    assert side["source_file_count"] == 1 and side["slice_count"] == 16
    assert side["rescale"]["varies_between_slices"] is True
    fac.assert_exact(data, affine, spec, tol=1.05)
    results = fac.marker_centroids(data, affine, series=spec)
    assert len(results) >= 2 and all(r.error_mm <= 1.5 for r in results)


@pytest.mark.parametrize("ts", ["explicit", "rle"])
def test_enhanced_ct_shared_rescale(tmp_path, run_cli, ts):
    spec = fac.make_stack(14, 5.0, key=f"enhanced-shared-{ts}", transfer_syntax=ts, pixel_representation=1, intercept=0.0)
    fac.write_enhanced_ct(tmp_path / "dcm" / "MF000001", spec, per_frame_rescale=False)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    fac.assert_exact(data, affine, spec)


def test_enhanced_ct_tilted(tmp_path, run_cli):
    spec = fac.make_stack(20, 4.0, key="enhanced-tilt", tilt_deg=-22.0)
    fac.write_enhanced_ct(tmp_path / "dcm" / "MF000001", spec)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert side["tilt"]["corrected"] is True
    fac.assert_geometry(data, affine, spec, reach_mm=math.hypot(*spec.pixel_spacing) + 0.5)


def test_enhanced_ct_beside_single_frame_localizer(tmp_path, run_cli):
    spec = fac.make_stack(16, 5.0, key="enhanced-with-scout")
    fac.write_enhanced_ct(tmp_path / "dcm" / "MF000001", spec)
    fac.write_scout(tmp_path / "dcm" / "scout")
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert side["series_uid"] == spec.series_uid
    fac.assert_exact(data, affine, spec)


def test_a_pixel_spacing_with_one_value_is_read_as_square_pixels_with_a_warning(tmp_path, run_cli):
    """PixelSpacing '4' (VM 1, seen in the wild) was 'no PixelSpacing' and the series was refused:
    it is read as 4 x 4 mm (CT pixels are square) and the sidecar says so, naming a file."""
    import pydicom

    spec = fac.make_stack(12, 5.0, key="ps-vm1", pixel_spacing=(4.0, 4.0))
    paths = fac.write_series(tmp_path / "dcm", spec)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PixelSpacing = "4"
        ds.save_as(p)
    assert pydicom.dcmread(paths[0]).data_element("PixelSpacing").VM == 1
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    fac.assert_exact(data, affine, spec)
    assert side["pixel_spacing_mm"] == [4.0, 4.0]
    note = [w for w in side["warnings"] if "PixelSpacing has one value" in w]
    assert len(note) == 1 and "square pixels" in note[0] and "12 of 12" in note[0]
    assert any(p.name in note[0] for p in paths)


def test_an_enhanced_ct_pixel_spacing_with_one_value_is_read_as_square_pixels(tmp_path, run_cli):
    """The same in an enhanced CT's shared PixelMeasuresSequence: every frame is 4 x 4 mm, with the warning."""
    import pydicom

    spec = fac.make_stack(10, 5.0, key="mf-ps-vm1", pixel_spacing=(4.0, 4.0))
    path = fac.write_enhanced_ct(tmp_path / "dcm" / "MF000001", spec)
    ds = pydicom.dcmread(path)
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = "4"
    ds.save_as(path)
    data, affine, _, side = _convert(run_cli, tmp_path / "dcm", tmp_path / "o.nii.gz")
    fac.assert_exact(data, affine, spec)
    assert side["pixel_spacing_mm"] == [4.0, 4.0]
    note = [w for w in side["warnings"] if "PixelSpacing has one value" in w]
    assert len(note) == 1 and "square pixels" in note[0] and "10 of 10" in note[0]
