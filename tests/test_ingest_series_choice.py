"""Category 2: several series in one folder; the default choice and ``--series``."""

from __future__ import annotations

import json

import dicom_factory as fac
import pytest


def _series_by_uid(info: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in info["series"]:
        out.setdefault(s["series_uid"], []).append(s)
    return out


def test_info_json_flags_default_and_exclusions(study_folder, run_cli):
    res = run_cli("info", study_folder.root, "--json")
    assert res.code == 0, res.err
    info = json.loads(res.out)
    fac.assert_no_phi(res.out, res.err)
    sf = study_folder
    by_uid = _series_by_uid(info)
    assert info["default_series_uid"] == sf.soft.series_uid
    defaults = [s for s in info["series"] if s["default"]]
    assert len(defaults) == 1 and defaults[0]["series_uid"] == sf.soft.series_uid
    soft = by_uid[sf.soft.series_uid][0]
    assert soft["n_slices"] == 20 and soft["excluded_reason"] is None and soft["plane"] == "axial"
    assert soft["kernel_class"] == "soft"
    # candidates that are not the default
    assert by_uid[sf.bone.series_uid][0]["default"] is False
    assert by_uid[sf.bone.series_uid][0]["kernel_class"] == "sharp"
    assert by_uid[sf.derived_axial.series_uid][0]["default"] is False
    # excluded, each with a reason
    mr = by_uid[sf.mr.series_uid][0]
    assert mr["excluded_reason"] and "MR" in mr["excluded_reason"]
    scouts = by_uid[sf.scout_uid]
    assert len(scouts) == 2, "a two-plane localizer is two image stacks"
    assert {s["plane"] for s in scouts} == {"sagittal", "coronal"}
    assert all("localizer" in (s["excluded_reason"] or "").lower() for s in scouts)
    dose = by_uid[sf.dose_uid][0]
    assert "secondary capture" in (dose["excluded_reason"] or "").lower()
    coronal = by_uid[sf.coronal.series_uid][0]
    assert coronal["plane"] == "coronal" and "not axial" in (coronal["excluded_reason"] or "")
    skipped = {s["file"] for s in info["skipped"]}
    assert {str(sf.junk[k]) for k in ("text", "jpeg", "truncated")} <= skipped
    assert info["n_files"] >= 20 + 24 + 26 + 26 + 12 + 2 + 1 + 3


def test_info_table_marks_default(study_folder, run_cli):
    res = run_cli("info", study_folder.root)
    assert res.code == 0, res.err
    marked = [line for line in res.out.splitlines() if line.startswith("*")]
    assert len(marked) == 1 and study_folder.soft.series_uid in marked[0]
    fac.assert_no_phi(res.out, res.err)


def test_default_convert_picks_original_soft_series(study_folder, tmp_path, run_cli):
    out = tmp_path / "ct.nii.gz"
    res = run_cli("convert", study_folder.root, out)
    assert res.code == 0, res.err
    side = fac.read_sidecar(out)
    assert side["series_uid"] == study_folder.soft.series_uid
    assert side["kernel"] == "STANDARD"
    data, affine, _ = fac.load_nifti(out)
    assert data.shape == (64, 60, 20)
    fac.assert_exact(data, affine, study_folder.soft)


@pytest.mark.parametrize("which", ["bone", "derived_axial", "coronal"])
def test_series_option_reads_another_series(study_folder, tmp_path, run_cli, which):
    spec = getattr(study_folder, which)
    out = tmp_path / f"{which}.nii.gz"
    res = run_cli("convert", study_folder.root, out, "--series", spec.series_uid)
    assert res.code == 0, res.err
    side = fac.read_sidecar(out)
    assert side["series_uid"] == spec.series_uid
    data, affine, _ = fac.load_nifti(out)
    assert data.shape == (spec.cols, spec.rows, spec.n)
    fac.assert_exact(data, affine, spec)
    results = fac.marker_centroids(data, affine, series=spec)
    assert len(results) >= 2
    assert all(r.error_mm <= 1.5 for r in results)


@pytest.mark.parametrize("uid_attr, reason", [(None, "no series with UID"), ("dose_uid", "secondary capture"),
                                              ("mr", "not CT")])
def test_series_option_rejects_unusable_or_unknown(study_folder, tmp_path, run_cli, uid_attr, reason):
    if uid_attr is None:
        uid = "1.2.3.4.5.6.7.8.9"
    else:
        value = getattr(study_folder, uid_attr)
        uid = value if isinstance(value, str) else value.series_uid
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = run_cli("convert", study_folder.root, out_dir / "x.nii.gz", "--series", uid)
    assert res.code == 1
    assert reason in res.err and str(study_folder.root) in res.err
    assert fac.tree_listing(out_dir) == []


@pytest.mark.parametrize("soft_kernel, sharp_kernel", [("STANDARD", "BONE"), ("H31s", "H70h"), ("Hr38", "Hr64"),
                                                        ("SOFT", "LUNG")])
def test_soft_kernel_beats_thinner_sharp_kernel(tmp_path, soft_kernel, sharp_kernel):
    from ichct.transforms.dicom import read_dicom_series

    study = fac.Study(key=f"k-{soft_kernel}")
    sharp = fac.make_stack(16, 2.5, key=f"sharp-{sharp_kernel}", kernel=sharp_kernel, description="HEAD", series_number=2)
    soft = fac.make_stack(10, 5.0, key=f"soft-{soft_kernel}", kernel=soft_kernel, description="HEAD", series_number=3)
    fac.write_series(tmp_path / "d", sharp, study=study)
    fac.write_series(tmp_path / "d", soft, study=study)
    vol = read_dicom_series(tmp_path / "d")
    assert vol.series_uid == soft.series_uid
    fac.assert_exact(vol.hu_volume, vol.affine_ras, soft)


def test_all_series_converts_every_ct_volume(study_folder, tmp_path, run_cli):
    out_dir = tmp_path / "all"
    res = run_cli("convert", study_folder.root, "--all-series", out_dir)
    assert res.code == 0, res.err
    files = fac.tree_listing(out_dir)
    niftis = [f for f in files if f.endswith(".nii.gz")]
    assert len(niftis) == 4, files  # soft, bone, derived axial, coronal reformat
    assert len([f for f in files if f.endswith(".json")]) == 4
    assert not [f for f in files if f.startswith(".") or "partial" in f], files
    specs = {s.series_uid: s for s in (study_folder.soft, study_folder.bone, study_folder.derived_axial, study_folder.coronal)}
    seen = set()
    for name in niftis:
        path = out_dir / name
        side = fac.read_sidecar(path)
        spec = specs[side["series_uid"]]
        seen.add(spec.series_uid)
        data, affine, _ = fac.load_nifti(path)
        fac.assert_exact(data, affine, spec)
        fac.assert_no_phi((out_dir / name.replace(".nii.gz", ".json")).read_text())
    assert seen == set(specs)


def test_files_without_series_uid_still_form_series(tmp_path):
    """A public archive dropped SeriesInstanceUID (and SOPInstanceUID, SeriesNumber): the files still
    make series, told apart by kernel and thickness, and the soft one is read, with a warning."""
    import pydicom

    from ichct.transforms.dicom import read_dicom_series, scan_folder, select_series

    study = fac.Study(key="no-series-uid")
    sharp = fac.make_stack(16, 2.5, key="nouid-sharp", kernel="BONE", description="HEAD")
    soft = fac.make_stack(10, 5.0, key="nouid-soft", kernel="STANDARD", description="HEAD")
    for spec in (sharp, soft):
        for path in fac.write_series(tmp_path / "d", spec, study=study):
            ds = pydicom.dcmread(path)
            for keyword in ("SeriesInstanceUID", "SOPInstanceUID", "SeriesNumber"):
                delattr(ds, keyword)
            ds.save_as(path)
    group, groups, _ = select_series(scan_folder(tmp_path / "d"))
    assert sorted(g.n_slices for g in groups) == [10, 16] and group.n_slices == 10
    assert all(g.series_uid.startswith("no-SeriesInstanceUID-") for g in groups)
    vol = read_dicom_series(tmp_path / "d")
    fac.assert_exact(vol.hu_volume, vol.affine_ras, soft)
    assert any("no SeriesInstanceUID" in w for w in vol.info["warnings"])
    assert not any("non-conforming UIDs" in w for w in vol.info["warnings"])  # the key is ichct's, not the file's


@pytest.mark.parametrize("name", ["AAA.dcm", "ZZZ.dcm"], ids=["listed_first", "listed_last"])
@pytest.mark.parametrize("kind", ["secondary_capture", "derived", "localizer"])
def test_odd_image_filed_in_the_series_is_left_out(tmp_path, name, kind):
    """A screenshot, a derived image (MIP) or an axial scout filed under the series' UID with the
    same plane and matrix is neither stacked into the volume (its pixels are not the slice's) nor,
    listed first, allowed to exclude the whole series."""
    import pydicom

    from ichct.transforms.dicom import read_dicom_series

    spec = fac.make_stack(10, 5.0, key=f"odd-{kind}")
    paths = fac.write_series(tmp_path / "dcm", spec)
    ds = pydicom.dcmread(paths[4])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = fac.deterministic_uid("odd", kind)
    if kind == "secondary_capture":
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.ImageType = ["DERIVED", "SECONDARY"]
    elif kind == "derived":
        ds.ImageType = ["DERIVED", "SECONDARY", "MIP"]
        ds.ImagePositionPatient[2] += 2.5  # between two slices
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImagePositionPatient[2] += 1.0
    ds.PixelData = (ds.pixel_array * 0 + 1500).astype(ds.pixel_array.dtype).tobytes()  # 476 HU everywhere
    ds.save_as(tmp_path / "dcm" / name)
    vol = read_dicom_series(tmp_path / "dcm")
    assert vol.hu_volume.shape[2] == 10
    fac.assert_exact(vol.hu_volume, vol.affine_ras, spec)
    assert any("left out" in w and name in w for w in vol.info["warnings"])


_GROUPING_KEYS = ("SeriesInstanceUID", "StudyInstanceUID", "SeriesNumber", "ConvolutionKernel", "SliceThickness",
                  "FrameOfReferenceUID")


def _without_series_keys(paths) -> None:
    """Drop what tells series apart, as bare archive files lack it (they fall into one stand-in series)."""
    import pydicom

    for p in paths:
        ds = pydicom.dcmread(p)
        for keyword in _GROUPING_KEYS:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(p)


@pytest.mark.parametrize("layout", ["other_fov", "same_fov_interleaved", "same_positions"])
def test_series_without_uids_mixed_in_one_folder_are_refused_not_stacked(tmp_path, run_cli, layout):
    """Two series without SeriesInstanceUID (nor study, number, kernel, thickness) in one folder, same plane,
    matrix and spacing: they became one stand-in series and one volume (a 'tilt' corrected, 'missing slices'
    filled, or images averaged) with only the generic stand-in warning. They are now refused, naming why."""
    offsets_a = [(k - 7.5) * 5.0 for k in range(16)]
    other = fac.Phantom(hematoma_semi_axes=(22.0, 18.0, 15.0))
    if layout == "other_fov":
        b = fac.make_stack(offsets_mm=[o + 1.0 for o in offsets_a], key="mixed-b", center_shift=(12.0, 9.0, 0.0))
    elif layout == "same_fov_interleaved":
        b = fac.make_stack(offsets_mm=[o + 2.0 for o in offsets_a], key="mixed-b")
    else:  # another head at the very same positions: differing images at each position
        b = fac.make_stack(offsets_mm=offsets_a, key="mixed-b", phantom=other)
    paths = fac.write_series(tmp_path / "dcm", fac.make_stack(offsets_mm=offsets_a, key="mixed-a"))
    paths += fac.write_series(tmp_path / "dcm", b, seed=1, phantom=other if layout == "same_positions" else fac.DEFAULT_PHANTOM)
    _without_series_keys(paths)
    res = run_cli("convert", tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert res.code == 1, res.err
    assert "no SeriesInstanceUID" in res.err and "several series seem mixed" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "o.nii.gz").exists()
    if layout != "same_positions":  # info says so too, from the headers alone (same positions: only the pixels tell)
        info = json.loads(run_cli("info", tmp_path / "dcm", "--json").out)
        default = next(s for s in info["series"] if s["default"])
        assert "several series seem mixed" in default["refused"]
        text = run_cli("info", tmp_path / "dcm").out
        assert "refused: series" in text and "which convert refuses" in text


@pytest.mark.parametrize("tilt_deg, missing", [(0.0, ()), (15.0, ()), (0.0, (6,))])
def test_one_series_without_uids_still_reads_tilted_or_with_a_missing_file(tmp_path, run_cli, tilt_deg, missing):
    """The stand-in series check refuses mixes only: a gantry tilt (offsets linear in z) or a missing
    file (a step of two spacings) of one series is read as before."""
    offsets = [(k - 9.5) * 5.0 for k in range(20) if k not in missing]
    spec = fac.make_stack(offsets_mm=offsets, key=f"one-bare-{tilt_deg}-{len(missing)}", tilt_deg=tilt_deg)
    paths = fac.write_series(tmp_path / "dcm", spec)
    _without_series_keys(paths)
    res = run_cli("convert", tmp_path / "dcm", tmp_path / "o.nii.gz")
    assert res.code == 0, res.err
    side = fac.read_sidecar(tmp_path / "o.nii.gz")
    assert side["series_uid"].startswith("no-SeriesInstanceUID-") and side["missing_slices"] == len(missing)
    info = json.loads(run_cli("info", tmp_path / "dcm", "--json").out)
    assert [s["refused"] for s in info["series"]] == [None]
    assert side["tilt"]["corrected"] == (tilt_deg != 0.0)
