"""``ichct.pipeline.predict.run.predict``: mask on the source grid, DICOM SEG, report, overlays.

The models here are deterministic (``predict_helpers.BloodRangeSeg`` / ``BloodRangeCls``): they
mark the phantom's hematoma through the real inference path, so where the prediction must lie is
known in world coordinates.
"""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pydicom
import pytest

import dicom_factory as fac
import predict_helpers as ph
from eval_helpers import set_env
from ichct.pipeline.predict.run import predict
from ichct.pipeline.predict.report_schema import REPORT_SCHEMA, validate_report


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def models(base):
    return {"seg": ph.loaded("seg", ph.BloodRangeSeg(), base / "seg"),
            "cls": ph.loaded("cls", ph.BloodRangeCls(), base / "cls")}


@pytest.fixture(scope="module")
def study(base):
    spec, paths = ph.write_study(base / "study" / "DICOM")
    return spec, paths, base / "study"


@pytest.fixture(scope="module")
def result(base, study, models):
    with pytest.MonkeyPatch.context() as mp:
        set_env(mp, base / "env")
        logger = logging.getLogger("ichct")
        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
        logger.addHandler(handler)
        old = logger.level
        logger.setLevel(logging.DEBUG)
        try:
            doc = predict(study[2], base / "out", models)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old)
    return doc, base / "out", records


def _source_world(ds) -> np.ndarray:
    """LPS world position of every pixel of a source instance, (rows, cols, 3)."""
    o = np.asarray(ds.ImageOrientationPatient, dtype=float)
    rs, cs = (float(v) for v in ds.PixelSpacing)
    j, i = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
    return np.asarray(ds.ImagePositionPatient, dtype=float) + i[..., None] * cs * o[:3] + j[..., None] * rs * o[3:]


def test_mask_is_on_the_ingest_grid_and_at_the_hematoma(result, study, base):
    from ichct.pipeline.ingest import convert_series

    doc, out, _ = result
    convert_series(study[2], base / "ref.nii.gz")
    ref = nib.load(base / "ref.nii.gz")
    mask = nib.load(out / "mask.nii.gz")
    assert mask.shape == ref.shape
    np.testing.assert_allclose(mask.affine, ref.affine, atol=1e-5)
    assert int(mask.header["qform_code"]) == int(ref.header["qform_code"]) == 1
    assert int(mask.header["sform_code"]) == 1
    m = np.asarray(mask.dataobj)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    world = fac.voxel_world_lps(mask.affine, m.shape)
    labelled = world[m > 0]
    assert len(labelled) > 20
    assert np.mean(ph.hematoma_r2(labelled, grow_mm=3.0) <= 1.0) > 0.97  # a flipped/shifted mask fails
    nearest = np.argmin(np.linalg.norm(world - ph.hematoma_center_lps(), axis=-1))
    assert m.reshape(-1)[nearest] == 1
    mirrored = np.asarray(ph.PHANTOM.center) + np.asarray(ph.PHANTOM.hematoma_offset) * [-1, 1, 1]  # left-right
    assert m.reshape(-1)[np.argmin(np.linalg.norm(world - mirrored, axis=-1))] == 0


def test_report_is_schema_valid_and_describes_the_study(result, study, models):
    doc, out, _ = result
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == doc
    validate_report(doc)
    assert REPORT_SCHEMA["properties"]["schema_version"]["const"] == doc["schema_version"]
    assert doc["rule"]["name"] == "consecutive" and doc["input"]["format"] == "dicom"
    spec = study[0]
    assert doc["series"]["series_uid"] == spec.series_uid and "default rule" in doc["series"]["selection"]
    assert [c["chosen"] for c in doc["series"]["candidates"]] == [True]
    assert set(doc["models"]) == {"seg", "cls"}
    assert set(doc["findings"]) == {"any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"}
    any_f, iph = doc["findings"]["any"], doc["findings"]["intraparenchymal"]
    assert any_f["call"] is True and iph["call"] is True and doc["findings"]["subdural"]["call"] is False
    assert any_f["threshold"] == 0.5 == doc["thresholds"]["any"]
    # the slices that drove the call are the slices through the hematoma (reader order = along +z here)
    z = np.array([s.position[2] for s in spec.slices])
    order = np.argsort(z)
    c, semi_z = ph.hematoma_center_lps()[2], ph.PHANTOM.hematoma_semi_axes[2]
    through = {int(np.flatnonzero(order == i)[0]) for i in range(len(z)) if abs(z[i] - c) < semi_z}
    (first, last), = any_f["slice_ranges"]
    assert set(range(first, last + 1)) <= through and len(through) - (last - first + 1) <= 2
    # volumes: voxels of the written mask; ABC/2 of its largest component
    m = np.asarray(nib.load(out / "mask.nii.gz").dataobj)
    voxel_ml = float(np.prod(doc["input"]["spacing_mm"])) / 1000
    assert any_f["volume_ml"] == pytest.approx(np.count_nonzero(m) * voxel_ml)
    assert any_f["abc2"]["component_volume_ml"] == pytest.approx(any_f["volume_ml"])
    assert 0.4 < any_f["abc2"]["volume_ml"] / any_f["volume_ml"] < 2.5
    assert iph["volume_ml"] is None  # a binary segmenter says nothing about subtypes
    assert set(doc["timings_s"]) >= {"read", "preprocess", "seg", "cls", "write", "total"}
    assert doc["timings_s"]["total"] >= doc["timings_s"]["seg"] > 0
    assert doc["outputs"]["mask"] == "mask.nii.gz" and doc["outputs"]["seg_dicom"] == "seg.dcm"
    assert all((out / p).is_file() for p in doc["outputs"]["overlays"])
    assert "overlays/slice_probabilities.png" in doc["outputs"]["overlays"]
    assert len(doc["outputs"]["overlays"]) >= 2
    assert sorted(p.name for p in out.iterdir()) == ["mask.nii.gz", "overlays", "report.json", "seg.dcm"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")]  # no temp folder left


def test_no_patient_identifiers_in_report_logs_or_overlays(result):
    doc, out, records = result
    assert records, "predict logged nothing"
    fac.assert_no_phi((out / "report.json").read_text(encoding="utf-8"), "\n".join(records))
    for png in (out / "overlays").glob("*.png"):
        fac.assert_no_phi(png.read_bytes().decode("latin-1"))
    with pytest.raises(ValueError, match="patient identifiers"):
        validate_report({**doc, "series": {**doc["series"], "PatientID": "x"}})


def test_seg_dicom_references_the_source_and_marks_the_hematoma(result, study):
    import highdicom as hd

    doc, out, _ = result
    seg = hd.seg.segread(out / "seg.dcm")
    sources = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in study[1])}
    assert seg.number_of_segments == 1
    desc = seg.get_segment_description(1)
    assert desc.segmented_property_type.value == "1386000" and desc.segmented_property_type.scheme_designator == "SCT"
    assert desc.segmented_property_category.value == "49755003"
    assert desc.algorithm_identification[0].AlgorithmName == "ichct"
    raw = pydicom.dcmread(out / "seg.dcm")
    assert "ContentCreatorName" in raw and raw.ContentLabel == "ICH"  # Type 2 and Type 1 of Content Identification
    assert seg.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study[0].series_uid
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == set(sources)
    uids = list(sources)
    px = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    assert px.shape[0] == len(uids) and px.any()
    for uid, frame in zip(uids, px):
        if frame.any():
            world = _source_world(sources[uid])[frame > 0]
            assert np.all(ph.hematoma_r2(world, grow_mm=4.0) <= 1.0), uid
    # the number of SEG pixels matches the mask (same grid spacing in-plane, one frame per slice)
    m = np.asarray(nib.load(out / "mask.nii.gz").dataobj)
    assert int((px > 0).sum()) == int(np.count_nonzero(m))


def test_tilted_six_class_study_seg_frames_follow_the_tilt(base):
    """Gantry-tilted source: the mask is on the corrected grid, SEG frames on the tilted instances."""
    import highdicom as hd

    spec, paths = ph.write_study(base / "tilt", key="tilt", tilt_deg=15.0, tilt_mode="iop")
    cfg6 = {**ph.SEG_CFG, "num_classes": 6}
    seg6 = ph.loaded("seg", ph.BloodRangeSeg(num_classes=6, label=2), base / "seg6", cfg6)
    doc = predict(base / "tilt", base / "out_tilt", [seg6], overlays=False)
    out = base / "out_tilt"
    assert doc["rule"]["name"] == "seg_volume"
    assert any("gantry tilt" in w and "corrected" in w for w in doc["warnings"])
    assert doc["series"]["tilt"]["corrected"] is True
    f = doc["findings"]
    assert set(f) == {"any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"}
    assert f["intraparenchymal"]["volume_ml"] > 0 and f["intraparenchymal"]["call"] is True
    assert f["intraparenchymal"]["volume_ml"] == pytest.approx(f["any"]["volume_ml"])
    assert f["subdural"]["volume_ml"] == 0 and f["subdural"]["call"] is False and f["subdural"]["abc2"] is None
    assert doc["outputs"]["overlays"] == [] and not (out / "overlays").exists()

    seg = hd.seg.segread(out / "seg.dcm")
    types = [seg.get_segment_description(i).segmented_property_type.value for i in range(1, 6)]
    assert types == ["50960005", "274100004", "50960005", "21454007", "35486000"]
    regions = [seg.get_segment_description(i).anatomic_regions for i in (1, 3)]
    assert [r[0].value for r in regions] == ["18545000", "35764002"]  # epidural: dura mater; IVH: brain ventricle
    assert [seg.get_segment_description(i).segment_label for i in range(1, 6)] == [
        "Epidural hemorrhage", "Intraparenchymal hemorrhage", "Intraventricular hemorrhage",
        "Subarachnoid hemorrhage", "Subdural hemorrhage"]
    sources = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in paths)}
    uids = list(sources)
    px = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    assert set(np.unique(px)) == {0, 2}
    hits = 0
    for uid, frame in zip(uids, px):
        if frame.any():
            hits += 1
            world = _source_world(sources[uid])[frame > 0]
            assert np.mean(ph.hematoma_r2(world, grow_mm=4.0) <= 1.0) > 0.97, uid
    assert hits >= 2
    m = np.asarray(nib.load(out / "mask.nii.gz").dataobj)
    world = fac.voxel_world_lps(nib.load(out / "mask.nii.gz").affine, m.shape)[m > 0]
    assert np.mean(ph.hematoma_r2(world, grow_mm=3.0) <= 1.0) > 0.97


def test_nifti_input_gives_the_same_mask_and_no_seg_dicom(result, study, base, models):
    from ichct.pipeline.ingest import convert_series

    nii = base / "nifti" / "ct.nii.gz"
    convert_series(study[2], nii)
    doc = predict(nii, base / "out_nii", {"seg": models["seg"]}, rule="seg_volume", overlays=False)
    out = base / "out_nii"
    assert doc["input"]["format"] == "nifti" and doc["series"] is None
    assert doc["outputs"]["seg_dicom"] is None and "NIfTI input" in doc["outputs"]["seg_dicom_skipped"]
    assert any("no DICOM SEG" in w for w in doc["warnings"])
    assert not (out / "seg.dcm").exists()
    a, b = nib.load(out / "mask.nii.gz"), nib.load(result[1] / "mask.nii.gz")
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    ma, mb = np.asarray(a.dataobj), np.asarray(b.dataobj)
    # NIfTI keeps the affine in float32: nearest-neighbour borders may move by a voxel, nothing more
    assert np.count_nonzero(mb) > 20 and np.count_nonzero(ma != mb) <= 0.05 * np.count_nonzero(mb)
    assert doc["findings"]["any"]["probability"] is None and doc["findings"]["any"]["score_unit"] == "mL"


def test_negative_study_gives_an_empty_mask_and_seg(base, models):
    import highdicom as hd

    _, paths = ph.write_study(base / "negative", key="negative", phantom=ph.NEGATIVE_PHANTOM)
    doc = predict(base / "negative", base / "out_neg", models)
    out = base / "out_neg"
    mask = nib.load(out / "mask.nii.gz")
    assert mask.shape == tuple(doc["input"]["shape"]) and not np.asarray(mask.dataobj).any()
    f = doc["findings"]["any"]
    assert f["call"] is False and f["volume_ml"] == 0 and f["abc2"] is None
    assert f["probability"] < 0.5 and len(f["slice_ranges"]) == 1  # the window that gave the (low) score
    seg = hd.seg.segread(out / "seg.dcm")
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    assert not seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True).any()
    assert len(doc["outputs"]["overlays"]) == 2  # one key slice and the probability plot


def test_bad_arguments_are_refused_before_any_output(base, study, models):
    with pytest.raises(ValueError, match="needs a classification model"):
        predict(study[2], base / "never1", {"seg": models["seg"]}, rule="max")
    with pytest.raises(ValueError, match="segmentation and/or a classification"):
        predict(study[2], base / "never2", {})
    with pytest.raises(ValueError, match="two seg models"):
        predict(study[2], base / "never3", [models["seg"], models["seg"]])
    with pytest.raises(FileNotFoundError, match="no such file"):
        predict(base / "nothing_here", base / "never4", models)
    assert not any((base / f"never{i}").exists() for i in range(1, 5))


def test_report_says_what_brain_referenced_hu_did_and_warns_when_the_shift_is_clipped(base, study):
    """Each model with ``brain_reference_hu`` gets the brain level measured in the study (the phantom's brain:
    35 HU), its reference and the shift applied; a level further off than the step may shift (15 HU) is a
    warning that names the model and the calibration. evaluate's per_case rows carry the level and shifts."""
    from ichct.pipeline.evaluate.run import study_row
    from ichct.pipeline.models.inference import predict_study
    from ichct.pipeline.predict.run import hu_reference_warnings

    models = {"seg": ph.loaded("seg", ph.BloodRangeSeg(), base / "seg_ref", {**ph.SEG_CFG, "brain_reference_hu": 30.0}),
              "cls": ph.loaded("cls", ph.BloodRangeCls(), base / "cls_ref", {**ph.CLS_CFG, "brain_reference_hu": 10.0})}
    doc = predict(study[2], base / "out_ref", models, "seg_volume", overlays=False, seg_dicom=False)
    assert doc["hu_reference"] == {
        "seg": {"reference_hu": 30.0, "brain_tissue_hu": 35.0, "shift_hu": -5.0, "clipped": False},
        "cls": {"reference_hu": 10.0, "brain_tissue_hu": 35.0, "shift_hu": -15.0, "clipped": True}}
    warned = [w for w in doc["warnings"] if w.startswith("brain-referenced HU")]
    assert len(warned) == 1 and warned[0].startswith("brain-referenced HU (cls): the brain tissue reads 35.0 HU")
    assert "calibration" in warned[0] and "-15" in warned[0]
    assert doc["findings"]["any"]["call"] is True  # the segmenter still finds the 65 HU haematoma at 60 HU
    row = study_row({"patient_key": "p1"}, predict_study(models, study[2]), surface=False)
    assert row["brain_tissue_hu"] == 35.0 and row["hu_shift:seg"] == -5.0 and row["hu_shift:cls"] == -15.0
    assert hu_reference_warnings({"seg": {"reference_hu": 30.0, "brain_tissue_hu": None, "shift_hu": 0.0,
                                          "clipped": False},
                                  "cls": {"reference_hu": 30.0, "brain_tissue_hu": None, "shift_hu": 0.0,
                                          "clipped": False}}) == [
        "brain-referenced HU (seg, cls): too little brain tissue (15-45 HU inside the skull) to measure its level: "
        "the HU were not referenced"]
    plain = predict_study({"seg": ph.loaded("seg", ph.BloodRangeSeg(), base / "seg_plain")}, study[2])
    assert plain.hu_reference == {}  # a model without the setting is left out
    # the classifier alone (no segmenter's step to read the level from) measures it itself
    assert predict_study({"cls": models["cls"]}, study[2]).hu_reference == {"cls": doc["hu_reference"]["cls"]}


def test_seg_peak_rule_reports_the_segmenters_peak_probability(base, study, models):
    """``--rule seg_peak``: the CT-level score is the segmenter's highest 3 x 3 x 3-averaged blood
    probability (the test segmenter's logits 0.5 / 1.0 inside the haematoma: softmax 0.62), a probability
    called against the default threshold 0.5 (the test model stored none); slice ranges from the mask."""
    doc = predict(study[2], base / "out_peak", models, "seg_peak", overlays=False, seg_dicom=False)
    validate_report(doc)
    any_f = doc["findings"]["any"]
    expected = float(np.exp(1.0) / (np.exp(0.5) + np.exp(1.0)))
    assert doc["rule"]["name"] == "seg_peak" and any_f["score_unit"] == "probability"
    assert any_f["score"] == pytest.approx(expected, abs=1e-4) and any_f["probability"] == any_f["score"]
    assert any_f["threshold"] == 0.5 and any_f["call"] is True
    assert any_f["slice_ranges_source"] == "slices with segmented voxels" and any_f["slice_ranges"]


# Minimal archive headers: a SEG that cannot reference its source is left out, the rest is written.

_BARE_KEEP = {"ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
              "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
              "PhotometricInterpretation", "PixelData"}


def _rewrite(paths, folder, change, bare=False):
    """Copies of ``paths`` in ``folder`` with ``change(ds, k)`` applied; ``bare``: no preamble nor file meta."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    folder.mkdir(parents=True)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        change(ds, k)
        if bare:
            fp = DicomBytesIO()
            fp.is_little_endian, fp.is_implicit_VR = True, True
            write_dataset(fp, ds)
            (folder / p.name).write_bytes(fp.getvalue())
        else:
            ds.save_as(folder / p.name, enforce_file_format=False)
    return folder


def _keep_only_pixels_geometry_rescale(ds, k):
    for keyword in list(ds.dir()):
        if keyword not in _BARE_KEEP:
            delattr(ds, keyword)


def _drop(*keywords):
    def change(ds, k):
        for keyword in keywords:
            if keyword in ds:
                delattr(ds, keyword)
    return change


def _same_sop_uid(ds, k):
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"


@pytest.mark.parametrize("name, change, bare, words", [
    ("bare", _keep_only_pixels_geometry_rescale, True, "no StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID"),
    ("no_study_uid", _drop("StudyInstanceUID"), False, "no StudyInstanceUID"),
    ("no_sop_uid", _drop("SOPInstanceUID"), False, "no SOPInstanceUID"),
    ("one_sop_uid_for_all", _same_sop_uid, False, "cannot tell the instances apart"),
])
def test_a_source_no_seg_can_reference_gives_everything_but_seg_dcm_and_says_why(result, study, base, models, name,
                                                                                  change, bare, words):
    """Bare or UID-less archive files: mask, report and overlays as from the full headers; no seg.dcm
    (ichct invents no UIDs for the source), a warning and outputs.seg_dicom_skipped naming the file and cause.
    One SOPInstanceUID in every file used to give a one-frame SEG referencing one instance."""
    src = _rewrite(study[1], base / f"minimal_{name}", change, bare)
    doc = predict(src, base / f"out_minimal_{name}", models)
    out = base / f"out_minimal_{name}"
    assert not (out / "seg.dcm").exists() and doc["outputs"]["seg_dicom"] is None
    skipped = doc["outputs"]["seg_dicom_skipped"]
    assert words in skipped and any(f.name in skipped for f in src.iterdir()), skipped  # names the file
    assert any(w.startswith("no DICOM SEG written") and words in w for w in doc["warnings"]), doc["warnings"]
    assert doc["outputs"]["overlays"] and all((out / p).is_file() for p in doc["outputs"]["overlays"])
    a, b = nib.load(out / "mask.nii.gz"), nib.load(result[1] / "mask.nii.gz")
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert doc["findings"]["any"]["call"] == result[0]["findings"]["any"]["call"]


def test_seg_dicom_is_written_when_the_source_has_empty_type2_attributes_and_character_set(base, study, models):
    """Present-but-empty attributes (de-identification empties them; an empty SpecificCharacterSet is
    the default repertoire): highdicom refused '' as a character set and the study failed."""
    import highdicom as hd

    def empty(ds, k):
        for keyword in ("SpecificCharacterSet", "PatientName", "PatientID", "StudyDate", "Modality",
                        "FrameOfReferenceUID", "SliceThickness", "InstanceNumber", "SeriesDescription"):
            setattr(ds, keyword, "")

    src = _rewrite(study[1], base / "empty_strings", empty)
    doc = predict(src, base / "out_empty_strings", models, overlays=False)
    out = base / "out_empty_strings"
    assert doc["outputs"]["seg_dicom"] == "seg.dcm" and "seg_dicom_skipped" not in doc["outputs"]
    seg = hd.seg.segread(out / "seg.dcm")
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study[1]}
    assert {str(r.ReferencedSOPInstanceUID) for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == uids
    assert doc["outputs"]["seg_dicom_source"]["frame_of_reference_source"] == "generated"


def test_fused_rule_calls_on_both_models_and_is_refused_with_one(base, study, models):
    """``rule="fused"``: the call and score of "any" are the mean of the classifier's ``consecutive`` and the
    segmenter's ``seg_peak`` scores, against the mean of their thresholds; the slice ranges are the
    segmented slices; with one model the rule is refused before any output."""
    from ichct.pipeline.models.inference import default_rules, predict_study

    doc = predict(study[2], base / "out_fused", models, "fused", overlays=False, seg_dicom=False)
    validate_report(doc)
    assert doc["rule"]["name"] == "fused"
    pred = predict_study(models, study[2])
    rules = default_rules(models)
    f = doc["findings"]["any"]
    assert f["score"] == pytest.approx((pred.scores["consecutive"]["any"] + pred.scores["seg_peak"]["any"]) / 2)
    assert f["threshold"] == pytest.approx((rules["consecutive"].threshold_for("any") + rules["seg_peak"].threshold_for("any")) / 2)
    assert f["call"] is True and f["score_unit"] == "probability" and f["probability"] == f["score"]
    assert f["slice_ranges_source"] == "slices with segmented voxels" and f["slice_ranges"]
    with pytest.raises(ValueError, match="needs both a classification and a segmentation model"):
        predict(study[2], base / "never_fused", {"cls": models["cls"]}, rule="fused")
    assert not (base / "never_fused").exists()
