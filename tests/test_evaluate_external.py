"""``ichct evaluate --predictions DIR``: label maps written by another tool (NIfTI on any grid, DICOM SEG),
matched by study UID, nnU-Net case map or map CSV; missing predictions; bad input leaves nothing.

The "other tool" is the reference itself (each study's voxel label written out in some form), so a
correct reader must score it perfectly: every Dice exactly 1.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from eval_helpers import evaluate_predictions as _evaluate, read_metrics as _metrics, eval_setup, split_entries, write_label_predictions

from ichct.errors import InputError
from ichct.pipeline.evaluate.external_labels import parse_label_map
from ichct.pipeline.evaluate.external_masks import Grid, labels_on_grid


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return eval_setup(tmp_path_factory)


def _per_case(out):
    with open(out / "per_case.csv", newline="") as f:
        return {r["study_id"]: r for r in csv.DictReader(f)}


def test_label_maps_named_by_study_uid(setup, run_cli, tmp_path):
    """The reference labels as predictions: Dice 1 per subtype, AUC 1, no threshold -> no
    operating point; the report describes the external model and says training is unknown."""
    entries = split_entries(setup)
    write_label_predictions(entries, tmp_path / "preds")
    out = tmp_path / "eval"
    r = _evaluate(run_cli, setup, tmp_path / "preds", out, "--split", "all", "--trained-on", "unknown",
                  "--label-map", "ichct")
    assert r.code == 0, r.err
    doc = _metrics(out)
    assert doc["n_studies"] == len(entries) and doc["allow_overlap"] is False
    assert doc["model"]["name"] == "external:preds"
    ext = doc["model"]["external"]
    assert ext["predictions"] == str((tmp_path / "preds").resolve()) and ext["n_label_maps"] == len(entries)
    assert ext["label_map"] == {"1": "epidural", "2": "intraparenchymal", "3": "intraventricular",
                                "4": "subarachnoid", "5": "subdural"}
    positives = {st for e in entries for st, v in e["ct_labels"].items() if v}
    for cls, m in doc["segmentation"].items():
        assert m["dice"]["value"] == 1.0, cls
    seg_rule = doc["ct_level"]["any"]["seg_volume"]
    assert seg_rule["roc_auc"]["value"] == 1.0 and "any" in positives
    assert seg_rule["sensitivity"]["value"] is None and "no threshold" in seg_rule["sensitivity"]["reason"]
    assert seg_rule["threshold"]["value"] is None
    assert doc["model"]["rules"]["seg_volume"]["threshold"] is None
    assert doc["warnings"][0].startswith("the external model's training data is unknown")
    report = (out / "report.md").read_text().splitlines()
    assert report[0].startswith("**Warning: the external model's training data is unknown")
    assert any(line.startswith("Model: external predictions") for line in report)
    rows = _per_case(out)
    for e in entries:
        assert float(rows[e["study_uid"]]["seg:any:vol_pred_ml"]) == pytest.approx(
            float(rows[e["study_uid"]]["seg:any:vol_true_ml"]))
        assert not any(k.startswith("call:") for k in rows[e["study_uid"]])  # no threshold, no calls


def _permuted(arr, affine):
    """The same map with axes reordered and the first one flipped (a different voxel order, same world)."""
    moved = arr[::-1].transpose(2, 0, 1)
    index_map = np.zeros((4, 4))  # new index (k, i', j) -> old index (n - 1 - i', j, k)
    index_map[0, 1], index_map[0, 3], index_map[1, 2], index_map[2, 0], index_map[3, 3] = -1, arr.shape[0] - 1, 1, 1, 1
    return moved, affine @ index_map


def _finer(arr, affine):
    """The same map on a grid of half the in-plane spacing (every voxel split in 2 x 2)."""
    fine = arr.repeat(2, axis=0).repeat(2, axis=1)
    return fine, affine @ np.array([[0.5, 0, 0, -0.25], [0, 0.5, 0, -0.25], [0, 0, 1, 0], [0, 0, 0, 1]])


def test_label_maps_on_other_grids_are_read_by_world_coordinates(setup, run_cli, tmp_path):
    """Predictions with axes reordered and flipped, or on a finer grid, land on the study's grid exactly."""
    entries = split_entries(setup)
    preds = tmp_path / "preds"
    preds.mkdir()
    for n, e in enumerate(entries):
        img = nib.load(e["label"])
        arr, affine = (_permuted if n % 2 else _finer)(np.asarray(img.dataobj).astype(np.uint8), img.affine)
        assert arr.shape != img.shape
        nib.save(nib.Nifti1Image(arr, affine), preds / f"{e['study_uid']}.nii.gz")
    out = tmp_path / "eval"
    r = _evaluate(run_cli, setup, preds, out, "--split", "all", "--trained-on", "unknown", "--label-map", "ichct")
    assert r.code == 0, r.err
    for cls, m in _metrics(out)["segmentation"].items():
        assert m["dice"]["value"] == 1.0 and m["abs_volume_error_ml"]["value"] == 0.0, cls


def test_dicom_seg_predictions(setup, run_cli, tmp_path):
    """DICOM SEGs (highdicom, frames on the source instances, empty frames omitted) read with their
    segment labels as the label map."""
    from ichct.pipeline.models.inference import load_study_image
    from ichct.pipeline.predict.seg_dicom import write_seg_dicom

    entries = split_entries(setup, "test")
    preds = tmp_path / "seg"
    preds.mkdir()
    for e in entries:
        img, series, _ = load_study_image(e["image"])
        labels = np.asarray(nib.load(e["label"]).dataobj).astype(np.uint8)
        write_seg_dicom(labels, np.asarray(img.affine), series.headers, preds / f"{e['study_uid']}.dcm", num_classes=6)
    out = tmp_path / "eval"
    r = _evaluate(run_cli, setup, preds, out, "--trained-on", "unknown")
    assert r.code == 0, r.err
    doc = _metrics(out)
    assert set(doc["segmentation"]) == {"any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid",
                                        "subdural"}
    for cls, m in doc["segmentation"].items():
        assert m["dice"]["value"] == 1.0, cls
    assert doc["model"]["external"]["label_map"] is None  # each SEG's own segment labels


def test_bad_label_maps_are_refused_naming_the_file(setup, run_cli, tmp_path):
    """A grid that does not cover the study, no orientation codes, a value outside the map: exit 1,
    the file named, nothing written."""
    entries = split_entries(setup, "test")
    e = next(x for x in entries if x["ct_labels"]["any"])
    img = nib.load(e["label"])
    arr = np.asarray(img.dataobj).astype(np.uint8)
    assert arr.max() > 1
    cases = {}
    cropped = tmp_path / "cropped"
    write_label_predictions(entries, cropped)
    shift = np.eye(4)
    shift[2, 3] = 3
    nib.save(nib.Nifti1Image(arr[:, :, 3:], img.affine @ shift), cropped / f"{e['study_uid']}.nii.gz")
    cases["cropped"] = ("does not cover the study", ["--label-map", "ichct"])
    no_codes = tmp_path / "no_codes"
    write_label_predictions(entries, no_codes)
    bare = nib.Nifti1Image(arr, img.affine)
    bare.set_sform(img.affine, code=0)
    bare.set_qform(img.affine, code=0)
    nib.save(bare, no_codes / f"{e['study_uid']}.nii.gz")
    cases["no_codes"] = ("sform_code and qform_code are both 0", ["--label-map", "ichct"])
    cases["values"] = ("outside the label map", [])  # ichct values 1-5 read with the default binary map
    write_label_predictions(entries, tmp_path / "values", values=lambda a: (a > 0).astype(np.uint8))
    write_label_predictions([e], tmp_path / "values")
    for folder, (message, extra) in cases.items():
        out = tmp_path / f"eval_{folder}"
        r = _evaluate(run_cli, setup, tmp_path / folder, out, "--trained-on", "unknown", *extra)
        assert r.code == 1, (folder, r.err)
        assert message in r.err and f"{e['study_uid']}.nii.gz" in r.err, (folder, r.err)
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_missing_predictions(setup, run_cli, tmp_path):
    """A study without a prediction is an error listing it, or with --missing negative an empty
    mask that stays in the denominator, said first in the report."""
    entries = split_entries(setup)
    paths = write_label_predictions(entries, tmp_path / "preds", values=lambda a: (a > 0).astype(np.uint8))
    gone = next(e for e, p in zip(entries, paths) if e["ct_labels"]["any"])
    (tmp_path / "preds" / f"{gone['study_uid']}.nii.gz").unlink()
    out = tmp_path / "eval"
    r = _evaluate(run_cli, setup, tmp_path / "preds", out, "--split", "all", "--trained-on", "unknown")
    assert r.code == 1 and gone["study_uid"] in r.err and "--missing negative" in r.err, r.err
    assert not out.exists()
    r = _evaluate(run_cli, setup, tmp_path / "preds", out, "--split", "all", "--trained-on", "unknown",
                  "--missing", "negative")
    assert r.code == 0, r.err
    doc = _metrics(out)
    assert doc["n_studies"] == len(entries)
    assert doc["warnings"][0].startswith(f"1 of {len(entries)} studies have no prediction")
    assert doc["model"]["external"]["missing_studies"] == [gone["study_uid"]]
    assert (out / "report.md").read_text().splitlines()[0].startswith(f"**Warning: 1 of {len(entries)} studies")
    row = _per_case(out)[gone["study_uid"]]
    assert float(row["seg:any:vol_pred_ml"]) == 0.0 and float(row["seg:any:dice"]) == 0.0
    assert doc["segmentation"]["any"]["dice"]["value"] < 1.0
    assert doc["ct_level"]["any"]["seg_volume"]["roc_auc"]["value"] < 1.0


def _case_map(setup, entries, path, labels):
    cases = [{"case_id": f"ICH_{n:04d}", "study_uid": e["study_uid"], "patient_key": e["patient_key"],
              "split": "test" if e.get("fold") is None else "training", "fold": e.get("fold")}
             for n, e in enumerate(entries, start=1)]
    doc = {"format": "ichct-nnunet-case-map", "version": 1, "dataset_id": 501, "dataset_name": "Dataset501_ICH",
           "manifest": str(setup["manifest"]), "manifest_sha256": "0" * 64, "salt_id": setup["doc"]["salt_id"],
           "label_values": "binary", "labels": labels, "cases": cases}
    path.write_text(json.dumps(doc))
    return {e["study_uid"]: c["case_id"] for e, c in zip(entries, cases)}


def test_nnunet_case_ids_through_the_case_map(setup, run_cli, tmp_path):
    """nnU-Net's <case ID>.nii.gz files and the export's case map (its labels say 1 = hemorrhage)."""
    entries = split_entries(setup)
    case_of = _case_map(setup, entries, tmp_path / "ichct_case_map.json", {"background": 0, "hemorrhage": 1})
    preds = tmp_path / "nnunet"
    write_label_predictions(entries, preds, name=lambda e: case_of[e["study_uid"]],
                            values=lambda a: (a > 0).astype(np.uint8))
    (preds / "plans.json").write_text("{}")  # nnU-Net's own files beside its predictions are not read
    out = tmp_path / "eval"
    r = _evaluate(run_cli, setup, preds, out, "--map", tmp_path / "ichct_case_map.json", "--trained-on", "unknown")
    assert r.code == 0, r.err
    doc = _metrics(out)
    assert doc["n_studies"] == len(split_entries(setup, "test"))  # files of other splits are left out
    assert set(doc["segmentation"]) == {"any"} and doc["segmentation"]["any"]["dice"]["value"] == 1.0
    assert doc["model"]["external"]["label_map"] == {"0": "background", "1": "any"}
    # a file named by no case ID and no UID of the manifest
    write_label_predictions(entries[:1], preds, name=lambda e: "ICH_9999")
    r = _evaluate(run_cli, setup, preds, tmp_path / "eval2", "--map", tmp_path / "ichct_case_map.json",
                  "--trained-on", "unknown")
    assert r.code == 1 and "ICH_9999.nii.gz" in r.err and "case ID" in r.err, r.err


def test_map_csv(setup, run_cli, tmp_path):
    """--map CSV: study_uid,prediction rows name any file; a row of an unknown study is refused by line."""
    entries = split_entries(setup, "test")
    preds = tmp_path / "preds"
    write_label_predictions(entries, preds, name=lambda e: f"pred_{entries.index(e)}")
    rows = [f"{e['study_uid']},pred_{n}.nii.gz" for n, e in enumerate(entries)]
    (tmp_path / "map.csv").write_text("study_uid,prediction\n" + "\n".join(rows) + "\n")
    out = tmp_path / "eval"
    r = _evaluate(run_cli, setup, preds, out, "--map", tmp_path / "map.csv", "--trained-on", "unknown",
                  "--label-map", "ichct")
    assert r.code == 0, r.err
    assert _metrics(out)["segmentation"]["any"]["dice"]["value"] == 1.0
    (tmp_path / "bad.csv").write_text("study_uid,prediction\n" + rows[0] + "\n1.2.3.4,pred_1.nii.gz\n")
    r = _evaluate(run_cli, setup, preds, tmp_path / "eval2", "--map", tmp_path / "bad.csv", "--trained-on", "unknown",
                  "--label-map", "ichct")
    assert r.code == 1 and "bad.csv: line 3" in r.err and "1.2.3.4" in r.err, r.err
    (tmp_path / "cols.csv").write_text("study,file\n" + rows[0] + "\n")
    r = _evaluate(run_cli, setup, preds, tmp_path / "eval3", "--map", tmp_path / "cols.csv", "--trained-on", "unknown")
    assert r.code == 1 and "cols.csv: line 1" in r.err and "study_uid" in r.err, r.err
    assert not (tmp_path / "eval2").exists() and not (tmp_path / "eval3").exists()


def test_label_map_option_forms(tmp_path):
    """--label-map: pairs, keywords, JSON either way round; names matched loosely; bad maps refused."""
    assert parse_label_map("1=any").num_classes == 2
    assert dict(parse_label_map("2=Subdural hemorrhage,1=epidural").values) == {
        2: "subdural", 1: "epidural"}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "epidural": 1, "subdural": 2}}))
    assert dict(parse_label_map(str(tmp_path / "dataset.json")).values) == {0: "background", 1: "epidural",
                                                                            2: "subdural"}
    (tmp_path / "m.json").write_text(json.dumps({"1": "blood"}))
    assert dict(parse_label_map(str(tmp_path / "m.json")).values) == {1: "any"}
    for bad in ("1=any,2=subdural", "1=tumour", "0=any", "any", "1="):
        with pytest.raises(InputError):
            parse_label_map(bad)
    m = parse_label_map("1=subdural")
    with pytest.raises(InputError, match=r"x.nii.gz: label value\(s\) \[2\] outside the label map"):
        m.apply(np.array([0, 1, 2]), "x.nii.gz")
    with pytest.raises(InputError, match="not integers"):
        m.apply(np.array([0.0, 0.5]), "x.nii.gz")
    assert m.apply(np.array([0, 1]), "x.nii.gz").tolist() == [0, 5]


def test_labels_on_grid_nearest_neighbour_and_cover():
    """A prediction on a shifted grid: values follow the world position; half a voxel beyond the
    prediction's outermost centre is still covered, more is refused (or background for a SEG)."""
    values = np.arange(4, dtype=np.uint8).reshape(4, 1, 1)
    study = Grid((4, 1, 1), np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 0.4  # prediction voxel i at world x = i + 0.4
    assert labels_on_grid(values, shifted, study, "p.nii").ravel().tolist() == [0, 1, 2, 3]
    shifted[0, 3] = 0.6  # study voxel 0 at x = 0 lies 0.6 voxel before the first prediction centre
    with pytest.raises(InputError, match="p.nii: its grid"):
        labels_on_grid(values, shifted, study, "p.nii")
    assert labels_on_grid(values, shifted, study, "p.dcm", outside_is_background=True).ravel().tolist() == [0, 0, 1, 2]
