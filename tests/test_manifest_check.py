"""``ichct manifest check`` and ``load_manifest``: planted leaks, broken files, wrong label grids, exit codes."""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from test_manifest_replicas import (  # noqa: F401
    hash_cache_env,
    all_entries,
    assert_valid,
    build,
    make_bhsd,
    make_instance,
    synth_manifest,
    synth_replica,
    write_nifti,
)

from ichct.pipeline.manifests import ManifestError, check_manifests, load_manifest
from ichct.transforms.dicom import patient_key


def variant(src: Path, name: str, edit) -> Path:
    """A copy of manifest ``src`` in the same folder (its relative paths stay valid), edited."""
    doc = json.loads(src.read_text())
    edit(doc)
    out = src.parent / name
    out.write_text(json.dumps(doc, indent=1))
    return out


def problems_of(run_cli, *manifests) -> list[str]:
    result = run_cli("manifest", "check", *manifests)
    assert result.code == 1, (result.out, result.err)
    lines = [line for line in result.out.splitlines() if line.strip()]
    assert lines
    return lines


def multi_study_patient(doc) -> str:
    counts = defaultdict(int)
    for e in all_entries(doc):
        counts[e["patient_key"]] += 1
    return next(k for k, n in sorted(counts.items()) if n > 1)


def test_clean_manifest(run_cli, synth_manifest):
    result = run_cli("manifest", "check", synth_manifest)
    assert result.code == 0, result.out
    assert "OK" in result.out and "training" in result.out
    doc = json.loads(synth_manifest.read_text())
    places = defaultdict(set)
    for e in all_entries(doc):
        places[e["patient_key"]].add(e.get("fold", "test"))
    assert all(len(p) == 1 for p in places.values())  # every study of a patient in one fold or in test
    assert sum(1 for p in places if len([e for e in all_entries(doc) if e["patient_key"] == p]) == 2) == 2


def test_patient_second_study_in_other_split(run_cli, synth_manifest):
    doc = json.loads(synth_manifest.read_text())
    key = multi_study_patient(doc)

    def move(d):
        entries = [e for e in d["training"] if e["patient_key"] == key]
        if entries:  # the patient is in training: move one study to test
            d["training"].remove(entries[0])
            entries[0].pop("fold")
            d["test"].append(entries[0])
        else:  # the patient is in test: move one study to a fold
            e = next(e for e in d["test"] if e["patient_key"] == key)
            d["test"].remove(e)
            d["training"].append({**e, "fold": 0})

    leaky = variant(synth_manifest, "leak_patient.json", move)
    lines = problems_of(run_cli, leaky)
    assert any(f"leak: patient {key}" in line and "test" in line and "training fold" in line for line in lines), lines
    assert len(lines) == 1, lines

    def two_folds(d):
        entries = [e for e in d["training"] + d["test"] if e["patient_key"] == key]
        for n, e in enumerate(entries):
            if e in d["test"]:
                d["test"].remove(e)
                d["training"].append(e)
            e["fold"] = n
    lines = problems_of(run_cli, variant(synth_manifest, "leak_folds.json", two_folds))
    assert any(f"leak: patient {key}" in line and "training fold 0" in line and "training fold 1" in line for line in lines), lines


def _copy_with_new_uids(src: Path, dst: Path) -> tuple[str, str]:
    """Copy a DICOM series under new Study/Series/SOP UIDs and another patient: same pixels."""
    dst.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for i, f in enumerate(sorted(p for p in src.iterdir() if p.is_file())):
        ds = pydicom.dcmread(f)
        sop = generate_uid()
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName = "SOMEONE-ELSE", "Else^Someone"
        ds.save_as(dst / f"copy{i:03d}.dcm", enforce_file_format=True)
    return study, series


def test_copied_series_under_new_uids_is_caught(run_cli, synth_manifest, tmp_path):
    doc = json.loads(synth_manifest.read_text())
    victim = doc["training"][0]
    src = Path(os.path.realpath(synth_manifest.parent / victim["image"]))
    study, series = _copy_with_new_uids(src, tmp_path / "copied")

    def plant(d):
        d["test"].append({"image": str(tmp_path / "copied"), "ct_labels": victim["ct_labels"],
                          "patient_key": patient_key("SOMEONE-ELSE"), "study_uid": study, "series_uid": series})

    lines = problems_of(run_cli, variant(synth_manifest, "leak_copy.json", plant))
    assert len(lines) == 1, lines
    assert "identical pixel data" in lines[0] and "test" in lines[0] and victim["series_uid"] in lines[0] and series in lines[0]


def test_same_series_uid_in_two_splits(synth_manifest):
    doc = json.loads(synth_manifest.read_text())
    victim = doc["training"][-1]

    def plant(d):
        entry = {k: v for k, v in copy.deepcopy(victim).items() if k != "fold"}
        entry["patient_key"] = patient_key("ANOTHER-ONE")
        d["test"].append(entry)

    report = check_manifests([variant(synth_manifest, "leak_series.json", plant)])
    assert any(f"series {victim['series_uid']} is in 2 splits" in p for p in report.problems), report.problems


def test_label_off_the_image_grid(run_cli, synth_manifest, tmp_path):
    doc = json.loads(synth_manifest.read_text())
    victim = next(e for e in doc["training"] if "label" in e)
    img = nib.load(str(synth_manifest.parent / victim["label"]))
    data, affine = np.asarray(img.dataobj), img.affine
    short = write_nifti(tmp_path / "short.nii.gz", data[..., :-1], affine)
    shifted_affine = affine.copy()
    shifted_affine[:3, 3] += (2.0, 0.0, 0.0)
    shifted = write_nifti(tmp_path / "shifted.nii.gz", data, shifted_affine)
    for name, label, text in (("grid_shape.json", short, "shape"), ("grid_affine.json", shifted, "affine")):
        def plant(d, label=label):
            next(e for e in d["training"] if e["series_uid"] == victim["series_uid"])["label"] = str(label)
        lines = problems_of(run_cli, variant(synth_manifest, name, plant))
        assert len(lines) == 1 and "label not on the image grid" in lines[0] and text in lines[0], lines


def test_missing_files(run_cli, synth_manifest, tmp_path):
    def plant(d):
        d["training"][0]["image"] = "nowhere/series"
        d["training"][1]["label"] = str(tmp_path / "gone.nii.gz")

    lines = problems_of(run_cli, variant(synth_manifest, "missing.json", plant))
    assert any("training[0]" in line and "image not found" in line for line in lines), lines
    assert any("training[1]" in line and "label not found" in line for line in lines), lines
    # a broken link (data moved away) is a missing file too
    rep = make_instance(tmp_path / "inst", n=4)
    out = tmp_path / "m" / "inst.json"
    build("instance", rep.root, out, folds=1, test_fraction=0.25)
    os.remove(rep.root / "train_2" / "data" / "002.nii.gz")
    (rep.root / "train_2" / "label" / "003.nii.gz").write_bytes(b"not a NIfTI file")
    lines = problems_of(run_cli, out)
    assert any("image not found" in line and "broken link" in line for line in lines), lines
    assert any("label unreadable" in line for line in lines), lines


def test_schema_and_fold_range(run_cli, synth_manifest):
    def plant(d):
        d["training"][0]["patient_id"] = "SYNPAT-A01"  # raw identifiers have no place in the schema
        d["training"][1]["fold"] = 7
        d["test"][0]["ct_labels"]["any"] = 2

    lines = problems_of(run_cli, variant(synth_manifest, "schema.json", plant))
    assert any("schema" in line and "patient_id" in line for line in lines), lines
    assert any("fold 7 outside" in line for line in lines), lines
    assert any("schema" in line and "ct_labels/any" in line for line in lines), lines


def test_leak_across_manifests_and_salts(run_cli, synth_manifest):
    doc = json.loads(synth_manifest.read_text())
    victim = doc["training"][0]

    def external(d):  # another manifest whose test set holds a training patient of the first
        d["training"] = []
        d["test"] = [{k: v for k, v in victim.items() if k != "fold"}]
        d["name"] = "external"

    other = variant(synth_manifest, "external.json", external)
    assert run_cli("manifest", "check", other).code == 0  # clean on its own
    lines = problems_of(run_cli, synth_manifest, other)
    assert any(f"leak: patient {victim['patient_key']}" in line and "synth.json" in line and "external.json" in line
               for line in lines), lines
    salted = variant(other, "other_salt.json", lambda d: d.update(salt_id="0123456789ab"))
    lines = problems_of(run_cli, synth_manifest, salted)
    assert any("salt_id differs" in line for line in lines), lines


def test_loader(synth_manifest):
    doc = json.loads(synth_manifest.read_text())
    all_train = load_manifest(synth_manifest)
    assert len(all_train) == len(doc["training"])
    for item in all_train:
        assert os.path.isabs(item["image"]) and os.path.isdir(item["image"])
        assert os.path.isabs(item["label"]) and os.path.isfile(item["label"])
    train0 = load_manifest(synth_manifest, "training", fold=0)
    val0 = load_manifest(synth_manifest, "validation", fold=0)
    assert {i["fold"] for i in val0} == {0} and 0 not in {i["fold"] for i in train0}
    assert len(train0) + len(val0) == len(all_train)
    assert not {i["patient_key"] for i in train0} & {i["patient_key"] for i in val0}
    test = load_manifest(synth_manifest, "test")
    assert len(test) == len(doc["test"]) and not {i["patient_key"] for i in test} & {i["patient_key"] for i in all_train}
    with pytest.raises(ValueError):
        load_manifest(synth_manifest, "validation")
    with pytest.raises(ValueError):
        load_manifest(synth_manifest, "training", fold=3)
    # the loader's items feed MONAI's loaders directly
    from ichct.transforms import LoadDicomSeriesd
    from monai.transforms import LoadImaged

    item = LoadImaged(keys="label", ensure_channel_first=True)(LoadDicomSeriesd(keys="image")(dict(val0[0])))
    assert tuple(item["image"].shape) == tuple(item["label"].shape)


def test_loader_refuses_a_failing_manifest(synth_manifest):
    doc = json.loads(synth_manifest.read_text())
    key = multi_study_patient(doc)

    def move(d):
        for e in d["training"] + d["test"]:
            if e["patient_key"] == key:
                e["fold"] = 2 if e in d["training"] else 0
        for e in list(d["test"]):
            if e["patient_key"] == key:
                d["test"].remove(e)
                d["training"].append(e)
        first = next(e for e in d["training"] if e["patient_key"] == key)
        first["fold"] = 1

    leaky = variant(synth_manifest, "refused.json", move)
    with pytest.raises(ManifestError) as info:
        load_manifest(leaky, "training", fold=0)
    assert "refused.json" in str(info.value) and f"patient {key}" in str(info.value)
    assert info.value.problems and all("leak" in p for p in info.value.problems)
    with pytest.raises(ManifestError):
        load_manifest(synth_manifest.parent / "does_not_exist.json")
    assert load_manifest(leaky, "training", check=False)  # the explicit opt-out


def test_identical_pixels_of_two_patients_are_kept_together(tmp_path):
    """A data set holding one volume under two patients' names: the build puts both in one place."""
    rep = make_bhsd(tmp_path / "bhsd", n_patients=8, unlabelled=0)
    images = sorted((rep.root / "images").iterdir())
    victim, twin = images[1], images[2]
    shutil.copyfile(victim, twin)
    out = tmp_path / "m" / "bhsd.json"
    doc = build("bhsd", rep.root, out, folds=3, test_fraction=0.25, seed=2)
    assert_valid(out)
    places = {}
    for e in all_entries(doc):
        if e["study_uid"] in (victim.name.split("_", 2)[2][:-7], twin.name.split("_", 2)[2][:-7]):
            places[e["study_uid"]] = e.get("fold", "test")
    assert len(places) == 2 and len(set(places.values())) == 1


def test_cli_build_and_exit_codes(run_cli, tmp_path):
    rep = make_instance(tmp_path / "instance", n=6)
    out = tmp_path / "data_manifests" / "instance.json"
    result = run_cli("manifest", "build", "--source", "instance", "--root", rep.root, "--out", out,
                     "--folds", "2", "--test-fraction", "0.3", "--seed", "4")
    assert result.code == 0, result.err
    assert "instance.json" in result.out and out.is_file()
    doc = assert_valid(out)
    assert doc["created_by"]["command"].startswith("ichct manifest build --source instance")
    assert run_cli("manifest", "check", out).code == 0
    # usage errors: 2
    assert run_cli("manifest").code == 2
    assert run_cli("manifest", "check").code == 2
    assert run_cli("manifest", "build", "--source", "nope", "--root", rep.root, "--out", out).code == 2
    assert run_cli("manifest", "build", "--source", "instance", "--root", rep.root, "--out", out, "--folds", "0").code == 2
    assert run_cli("manifest", "build", "--source", "instance", "--root", rep.root, "--out", tmp_path / "x.txt").code == 2
    assert run_cli("manifest", "build", "--source", "instance", "--root", rep.root, "--out", out, "--test-fraction", "2").code == 2
    # data errors: 1
    (tmp_path / "empty").mkdir()
    assert run_cli("manifest", "build", "--source", "physionet", "--root", tmp_path / "empty", "--out", tmp_path / "e.json").code == 1
    assert not (tmp_path / "e.json").exists()
    assert run_cli("manifest", "build", "--source", "instance", "--root", rep.root, "--out", tmp_path / "f.json", "--folds", "9").code == 1
    assert run_cli("manifest", "check", tmp_path / "missing.json").code == 1


def test_cached_hashes_follow_file_changes(run_cli, tmp_path):
    """The pixel-hash cache is keyed by size and mtime: an image overwritten after a clean check
    with a copy of another split's image is caught on the next check."""
    rep = make_instance(tmp_path / "instance", n=6)
    out = tmp_path / "m" / "instance.json"
    doc = build("instance", rep.root, out, folds=2, test_fraction=0.3, seed=1)
    assert run_cli("manifest", "check", out).code == 0
    assert (tmp_path / "hash-cache" / "pixel_hashes.sqlite").is_file()
    train_img = os.path.realpath(out.parent / doc["training"][0]["image"])
    test_img = os.path.realpath(out.parent / doc["test"][0]["image"])
    shutil.copyfile(test_img, train_img)
    lines = problems_of(run_cli, out)
    assert any("identical pixel data" in line and "test" in line for line in lines), lines


def test_leak_lines_name_the_manifest_paths_not_the_real_files(run_cli, tmp_path):
    """BHSD and RSNA file names carry the PatientID: a leak line shows the link, never its target."""
    rep = make_bhsd(tmp_path / "bhsd", n_patients=6, unlabelled=0)
    out = tmp_path / "m"
    for seed in (1, 2):
        build("bhsd", rep.root, out / f"s{seed}.json", folds=2, test_fraction=0.25, seed=seed)
    result = run_cli("manifest", "check", out / "s1.json", out / "s2.json", "--no-pixels")
    assert result.code == 1
    file_lines = [line for line in result.out.splitlines() if "leak: image file" in line]
    assert file_lines and all(f"image file {out}/s1.links/" in line for line in file_lines), file_lines
    for raw in rep.raw_ids:
        assert raw not in result.out + result.err
