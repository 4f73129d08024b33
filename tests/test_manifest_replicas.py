"""Small replicas of each supported data set's layout, and the adapters tested on them.

The builders here are also used by the other ``test_manifest_*`` modules. Every replica carries
fake patient identifiers that must never appear in a manifest.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import TEST_SALT

import dicom_factory as fac

# RSNA writes "ID_..." strings as UIDs; pydicom warns about each of them.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
LABELS = ("any",) + SUBTYPES


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def hash_cache_env(tmp_path, monkeypatch):
    """The pixel-hash cache goes to the test's folder, never to the home directory."""
    monkeypatch.setenv("ICHCT_CACHE_DIR", str(tmp_path / "hash-cache"))


@contextlib.contextmanager
def ichct_env(folder: Path):
    """For session fixtures (set up before the per-test environment): salt and cache isolated."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ICHCT_SALT", TEST_SALT)
        mp.setenv("ICHCT_SALT_FILE", str(folder / "salt-file"))
        mp.setenv("ICHCT_CACHE_DIR", str(folder / "hash-cache"))
        yield


def ct_labels_of(subtypes) -> dict[str, int]:
    return {"any": int(bool(subtypes)), **{s: int(s in subtypes) for s in SUBTYPES}}


def rows_of(label: np.ndarray) -> list[list[int]]:
    rows = []
    for k in range(label.shape[2]):
        present = [int((label[..., k] == v + 1).any()) for v in range(5)]
        rows.append([int(any(present))] + present)
    return rows


def small_stack(key: str, intercept: float, n: int = 6, **kw) -> fac.SeriesSpec:
    """A 24 x 24 x n axial series; ``intercept`` makes the stored pixels unique to the series."""
    kw.setdefault("description", "HEAD 5mm STND")
    return fac.make_stack(n, 5.0, key=key, rows=24, cols=24, pixel_spacing=(8.0, 8.0), intercept=intercept, **kw)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 5.0, 1.0]) if affine is None else affine), str(path))
    return path


def manifest_text(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def assert_no_raw_ids(path: Path, ids) -> None:
    text = manifest_text(path)
    for raw in ids:
        assert raw.lower() not in text.lower(), f"raw identifier {raw!r} found in {path}"


def load_monai(path: Path):
    from monai.data import load_decathlon_datalist

    doc = json.loads(manifest_text(path))
    training = load_decathlon_datalist(str(path), data_list_key="training")
    # MONAI 1.x cannot read an empty "test" list (IndexError in load_decathlon_datalist)
    test = load_decathlon_datalist(str(path), data_list_key="test") if doc["test"] else []
    return training, test


# ---------------------------------------------------------------------------------------------
# synth: cohort.json + DICOM series + NIfTI labels on the convert grid
# ---------------------------------------------------------------------------------------------


@dataclass
class Replica:
    root: Path
    raw_ids: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)


# (patient id, [subtypes of each study])
SYNTH_PATIENTS = [
    ("SYNPAT-A01", [("subdural",), ("subdural",)]),
    ("SYNPAT-A02", [()]),
    ("SYNPAT-A03", [("epidural", "subarachnoid")]),
    ("SYNPAT-A04", [(), ()]),
    ("SYNPAT-A05", [("intraparenchymal",)]),
    ("SYNPAT-A06", [()]),
    ("SYNPAT-A07", [("intraventricular", "intraparenchymal")]),
    ("SYNPAT-A08", [()]),
    ("SYNPAT-A09", [("subdural",)]),
    ("SYNPAT-A10", [()]),
]


def make_synth(root: Path, patients=SYNTH_PATIENTS, tag: str = "syn") -> Replica:
    """``cohort.json`` + one DICOM series per study (under a folder named after the patient) + labels."""
    from ichct.transforms.dicom import read_dicom_series

    studies = []
    n = 0
    for pid, study_list in patients:
        for s_i, subtypes in enumerate(study_list):
            n += 1
            study = fac.Study(key=f"{tag}-{pid}-{s_i}", patient_id=pid)
            spec = small_stack(f"{tag}-{pid}-{s_i}", intercept=-1024.0 - n)
            rel = f"studies/{pid}/study{s_i}/dicom"
            fac.write_series(root / rel, spec, study=study, naming="ordered")
            volume = read_dicom_series(root / rel)
            label = np.zeros(volume.hu_volume.shape, dtype=np.uint8)
            for j, name in enumerate(subtypes):
                v = SUBTYPES.index(name) + 1
                label[5 + j:9 + j, 6:10, 1 + v % 4] = v
            label_rel = f"labels/{pid}_{s_i}.nii.gz"
            write_nifti(root / label_rel, label, volume.affine_ras)
            studies.append({
                "patient_id": pid, "study_uid": study.study_uid, "series_uid": spec.series_uid, "series_dir": rel,
                "label": label_rel, "slice_labels": rows_of(label), "ct_labels": ct_labels_of(subtypes),
                "volumes_ml": {s: 1.0 for s in subtypes},
            })
    (root / "cohort.json").write_text(json.dumps({"generator": {"name": "replica", "seed": 0}, "studies": studies}, indent=1))
    return Replica(root, raw_ids=[p for p, _ in patients] + [fac.FAKE_BIRTH_DATE, "Zebulonqx"], info={"studies": studies})


@pytest.fixture(scope="session")
def synth_replica(tmp_path_factory) -> Replica:
    base = tmp_path_factory.mktemp("synth-replica")
    with ichct_env(base):
        return make_synth(base / "cohort")


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory, synth_replica) -> Path:
    """A manifest of the synth replica (3 folds, 25 % test) in a folder of its own. Read-only."""
    from ichct.pipeline.manifests import build_manifest

    base = tmp_path_factory.mktemp("synth-manifest")
    out = base / "data_manifests" / "synth.json"
    with ichct_env(base):
        build_manifest("synth", synth_replica.root, out, folds=3, test_fraction=0.25, seed=1)
    return out


# ---------------------------------------------------------------------------------------------
# RSNA: stage_2_train.csv + flat folder of ID_<SOP>.dcm
# ---------------------------------------------------------------------------------------------


def _rsna_id(rng: np.random.Generator, n: int) -> str:
    return "ID_" + "".join(rng.choice(list("0123456789abcdef"), size=n))


def make_rsna(root: Path, seed: int = 3) -> Replica:
    """Three patients, one with two studies; slices shuffled in one flat folder; RSNA-style IDs."""
    rng = np.random.default_rng(seed)
    flat = root / "stage_2_train"
    flat.mkdir(parents=True)
    # per patient, per study: (positive slice indices along the stack, subtype)
    patients = [[({2, 3}, "subdural"), (set(), None)], [(set(), None)], [({0, 1, 2}, "intraparenchymal")]]
    rows = []
    expected = {}
    raw_ids = []
    n = 0
    for p, studies in enumerate(patients):
        pid = _rsna_id(rng, 8)
        raw_ids.append(pid)
        for s, (positive, subtype) in enumerate(studies):
            n += 1
            study_uid, series_uid = _rsna_id(rng, 10), _rsna_id(rng, 10)
            spec = small_stack(f"rsna-{seed}-{p}-{s}", intercept=-1000.0 - n, instance_numbers="scrambled", seed=n)
            tmp = root / "tmp" / f"{p}-{s}"
            paths = fac.write_series(tmp, spec, study=fac.Study(key=f"rsna-{p}-{s}", patient_id=pid))
            order = []
            for k, path in enumerate(paths):  # paths are in slice order (k along the stack)
                ds = pydicom.dcmread(path)
                sop = _rsna_id(rng, 9)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds.SOPInstanceUID = sop
                    ds.file_meta.MediaStorageSOPInstanceUID = sop
                    ds.StudyInstanceUID = study_uid
                    ds.SeriesInstanceUID = series_uid
                    ds.save_as(flat / f"{sop}.dcm", enforce_file_format=True)
                order.append(sop)
                for name in LABELS:
                    positive_here = k in positive and name in ("any", subtype)
                    rows.append((f"{sop}_{name}", int(positive_here)))
            expected[series_uid] = {"slices": [[int(k in positive and name in ("any", subtype)) for name in LABELS] for k in range(len(paths))],
                                    "any": int(bool(positive)), "patient": pid, "study_uid": study_uid}
    rng.shuffle(rows)
    with open(root / "stage_2_train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID", "Label"])
        w.writerows(rows)
        w.writerow(rows[0])  # the real file repeats some rows
    import shutil

    shutil.rmtree(root / "tmp")
    return Replica(root, raw_ids=raw_ids + ["Zebulonqx"], info={"series": expected})


# ---------------------------------------------------------------------------------------------
# CQ500: patient folders with several series + reads.csv
# ---------------------------------------------------------------------------------------------

CQ500_FINDINGS = ("ICH", "IPH", "IVH", "SDH", "EDH", "SAH", "BleedLocation-Left", "BleedLocation-Right", "ChronicBleed",
                  "Fracture", "CalvarialFracture", "OtherFracture", "MassEffect", "MidlineShift")


def make_cq500(root: Path) -> Replica:
    # per patient: reads of R1, R2, R3 as {finding: 0/1}
    reads = {
        0: [{"ICH": 1, "SDH": 1}, {"ICH": 1, "SDH": 1, "SAH": 1}, {"ICH": 0}],
        1: [{}, {}, {}],
        2: [{"ICH": 1, "IPH": 1, "IVH": 1}, {"ICH": 1, "IPH": 1}, {"ICH": 1, "IVH": 1}],
        3: [{"ICH": 1, "EDH": 1}, {}, {}],
    }
    raw = []
    n = 0
    for number in reads:
        folder = root / f"CQ500CT{number} CQ500CT{number}" / "Unknown Study"
        study = fac.Study(key=f"cq500-{number}", patient_id=f"CQ500-CT-{number}")
        raw += [f"CQ500-CT-{number}", f"CQ500CT{number}"]
        n += 1
        soft = small_stack(f"cq500-{number}-soft", intercept=-1024.0 - 10 * n, description="CT PLAIN", kernel="STANDARD", series_number=2)
        thin_bone = small_stack(f"cq500-{number}-bone", intercept=-1024.0 - 10 * n - 1, n=8, description="CT BONE",
                                kernel="BONE", series_number=3, slice_thickness=2.5)
        fac.write_series(folder / "CT PLAIN", soft, study=study, naming="ordered")
        fac.write_series(folder / "CT BONE", thin_bone, study=study, naming="ordered")
    with open(root / "reads.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "Category"] + [f"R{r}:{f}" for r in (1, 2, 3) for f in CQ500_FINDINGS])
        for number, readers in reads.items():
            w.writerow([f"CQ500-CT-{number}", "B1" if number % 2 else "B2"] + [r.get(f, 0) for r in readers for f in CQ500_FINDINGS])
    return Replica(root, raw_ids=raw, info={"reads": reads})


# ---------------------------------------------------------------------------------------------
# NIfTI sources: PhysioNet CT-ICH, BHSD, INSTANCE 2022
# ---------------------------------------------------------------------------------------------


def _volume(rng: np.random.Generator, shape=(10, 10, 6)) -> np.ndarray:
    return rng.integers(-1000, 1000, size=shape).astype(np.int16)


def make_physionet(root: Path, numbers=(49, 50, 51, 52, 53, 54, 58, 66, 67, 68), missing=(59,), seed: int = 5) -> Replica:
    rng = np.random.default_rng(seed)
    base = root / "computed-tomography-images-for-intracranial-hemorrhage-detection-and-segmentation-1.3.1"
    rows = []
    expected = {}
    for i, number in enumerate(list(numbers) + list(missing)):
        depth = 6
        positive = {1, 2} if i % 2 == 0 else set()
        subtype_cols = ("Intraventricular", "Intraparenchymal", "Subarachnoid", "Epidural", "Subdural")
        subtype = subtype_cols[i % 5]
        mask = np.zeros((10, 10, depth), dtype=np.uint8)
        for k in range(depth):
            pos = k in positive
            rows.append({"PatientNumber": number, "SliceNumber": k + 1, **{c: int(pos and c == subtype) for c in subtype_cols},
                         "No_Hemorrhage": int(not pos), "Fracture_Yes_No": 0})
            if pos:
                mask[3:6, 3:6, k] = 255
        if number in missing:
            continue
        write_nifti(base / "ct_scans" / f"{number:03d}.nii", _volume(rng, (10, 10, depth)))
        write_nifti(base / "masks" / f"{number:03d}.nii", mask)
        expected[number] = {"positive": sorted(positive), "subtype": subtype}
    rng.shuffle(rows)
    with open(base / "hemorrhage_diagnosis_raw_ct.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return Replica(root, raw_ids=[f"{n:03d}.nii" for n in numbers] + [f"ct_scans/{n:03d}" for n in numbers], info={"expected": expected})


def make_bhsd(root: Path, n_patients: int = 10, seed: int = 7, unlabelled: int = 1, subtype_plan=None) -> Replica:
    """``images/`` + ``ground truths/`` named ``ID_<patient>_ID_<study>.nii.gz``; patient 0 has two studies."""
    rng = np.random.default_rng(seed)
    raw = []
    expected = {}
    for p in range(n_patients):
        pid = _rsna_id(rng, 8)
        raw.append(pid)
        for s in range(2 if p == 0 else 1):
            study = _rsna_id(rng, 10)
            stem = f"{pid}_{study}"
            mask = np.zeros((10, 10, 5), dtype=np.uint8)
            subtypes = subtype_plan[p] if subtype_plan is not None else ([(p % 5) + 1] if p % 2 == 0 else [])
            for j, v in enumerate(subtypes):
                mask[2 + j:4 + j, 2:4, (v + j) % 5] = v
            write_nifti(root / "images" / f"{stem}.nii.gz", _volume(rng, (10, 10, 5)))
            write_nifti(root / "ground truths" / f"{stem}.nii.gz", mask)
            expected[study] = {"patient": pid, "values": sorted(set(subtypes)), "mask": mask}
    for u in range(unlabelled):
        write_nifti(root / "images" / f"{_rsna_id(rng, 8)}_{_rsna_id(rng, 10)}.nii.gz", _volume(rng, (10, 10, 5)))
    return Replica(root, raw_ids=raw, info={"expected": expected})


def make_instance(root: Path, n: int = 8, seed: int = 11) -> Replica:
    rng = np.random.default_rng(seed)
    expected = {}
    for i in range(1, n + 1):
        case = f"{i:03d}"
        mask = np.zeros((10, 10, 5), dtype=np.uint8)
        if i % 3:
            mask[4:7, 4:7, 2] = 1
        write_nifti(root / "train_2" / "data" / f"{case}.nii.gz", _volume(rng, (10, 10, 5)))
        write_nifti(root / "train_2" / "label" / f"{case}.nii.gz", mask)
        expected[case] = int(bool(i % 3))
    return Replica(root, raw_ids=[f"{c}.nii" for c in expected] + [f"/{c}" for c in expected], info={"expected": expected})


# ---------------------------------------------------------------------------------------------
# helpers for the tests
# ---------------------------------------------------------------------------------------------


def build(source: str, root: Path, out: Path, **kw) -> dict:
    from ichct.pipeline.manifests import build_manifest

    return build_manifest(source, root, out, **kw)


def assert_valid(out: Path) -> dict:
    """Schema-valid, loads with MONAI (training and test, absolute existing paths), checks clean."""
    from ichct.pipeline.manifests import check_manifests, validate_manifest

    doc = json.loads(manifest_text(out))
    validate_manifest(doc)
    training, test = load_monai(out)
    assert len(training) == len(doc["training"]) and len(test) == len(doc["test"])
    for item in training + test:
        assert os.path.isabs(item["image"]) and os.path.exists(item["image"]), item["image"]
        if "label" in item:
            assert os.path.isabs(item["label"]) and os.path.exists(item["label"]), item["label"]
    report = check_manifests([out])
    assert report.ok, report.problems
    return doc


def all_entries(doc: dict) -> list[dict]:
    return doc["training"] + doc["test"]


# ---------------------------------------------------------------------------------------------
# adapter tests
# ---------------------------------------------------------------------------------------------


def test_synth_adapter(synth_replica, synth_manifest):
    from ichct.transforms.dicom import patient_key

    doc = assert_valid(synth_manifest)
    assert_no_raw_ids(synth_manifest, synth_replica.raw_ids)
    assert doc["source"] == "synth" and doc["num_folds"] == 3
    entries = all_entries(doc)
    assert len(entries) == len(synth_replica.info["studies"])
    by_series = {e["series_uid"]: e for e in entries}
    for s in synth_replica.info["studies"]:
        e = by_series[s["series_uid"]]
        assert e["patient_key"] == patient_key(s["patient_id"])  # the key ingest sidecars carry too
        assert e["ct_labels"] == s["ct_labels"] and e["slice_labels"] == s["slice_labels"]
        assert e["label_values"] == "ichct" and e["study_uid"] == s["study_uid"]
        # the series folders are named after the patient: the manifest points at pseudonymous links
        assert not Path(e["image"]).is_absolute() and e["image"].startswith("synth.links/")
        assert os.path.realpath(synth_manifest.parent / e["image"]) == os.path.realpath(synth_replica.root / s["series_dir"])


def test_rsna_adapter(tmp_path):
    rep = make_rsna(tmp_path / "rsna")
    out = tmp_path / "manifests" / "rsna.json"
    build("rsna", rep.root, out, folds=2, test_fraction=0.0, seed=0)
    doc = assert_valid(out)
    assert_no_raw_ids(out, rep.raw_ids)
    entries = all_entries(doc)
    assert len(entries) == 4 and not doc["test"]
    for e in entries:
        want = rep.info["series"][e["series_uid"]]
        # slice labels follow the slice normal although instance numbers and file names are scrambled
        assert e["slice_labels"] == want["slices"]
        assert e["ct_labels"]["any"] == want["any"]
        assert e["study_uid"] == want["study_uid"]
        files = sorted(os.listdir(out.parent / e["image"]))
        assert len(files) == len(want["slices"])  # a folder holding exactly this series
    keys = {}
    for e in entries:
        keys.setdefault(e["patient_key"], set()).add(e["fold"])
    assert len(keys) == 3 and all(len(f) == 1 for f in keys.values())


def test_cq500_adapter(tmp_path):
    rep = make_cq500(tmp_path / "cq500")
    out = tmp_path / "manifests" / "cq500.json"
    build("cq500", rep.root, out, folds=1, test_fraction=1.0)
    doc = assert_valid(out)
    assert_no_raw_ids(out, rep.raw_ids)
    assert not doc["training"] and len(doc["test"]) == 4
    by_cat = {}
    for e in doc["test"]:
        # the default rule picks the soft-kernel series over the thinner bone-kernel one
        assert e["series_uid"] == fac.deterministic_uid("series", f"cq500-{_cq500_number(e)}-soft")
        by_cat[_cq500_number(e)] = e
    e0 = by_cat[0]
    assert e0["ct_labels"] == {"any": 1, "epidural": 0, "intraparenchymal": 0, "intraventricular": 0, "subarachnoid": 0, "subdural": 1}
    assert e0["reader_labels"]["R2"]["subarachnoid"] == 1 and e0["reader_labels"]["R3"]["any"] == 0
    assert set(e0["reader_labels"]) == {"R1", "R2", "R3"}
    assert by_cat[2]["ct_labels"]["intraparenchymal"] == 1 and by_cat[2]["ct_labels"]["intraventricular"] == 1
    assert by_cat[3]["ct_labels"]["any"] == 0 and by_cat[3]["reader_labels"]["R1"]["epidural"] == 1
    assert by_cat[1]["source_info"] == {"category": "B1"}


def _cq500_number(entry) -> int:
    for number in range(10):
        if entry["series_uid"] == fac.deterministic_uid("series", f"cq500-{number}-soft"):
            return number
    raise AssertionError(entry["series_uid"])


def test_physionet_adapter(tmp_path):
    rep = make_physionet(tmp_path / "ct-ich")
    out = tmp_path / "manifests" / "physionet.json"
    build("physionet", rep.root, out, folds=3, test_fraction=0.2)
    doc = assert_valid(out)
    assert_no_raw_ids(out, rep.raw_ids)
    entries = all_entries(doc)
    assert len(entries) == 10  # patient 59 has no volume
    subtype_name = {"Intraventricular": "intraventricular", "Intraparenchymal": "intraparenchymal", "Subarachnoid": "subarachnoid",
                    "Epidural": "epidural", "Subdural": "subdural"}
    positives = [e for e in entries if e["ct_labels"]["any"] == 1]
    assert len(positives) == 5
    for e in entries:
        assert e["label_values"] == "binary" and len(e["slice_labels"]) == 6
        rows = e["slice_labels"]
        if e["ct_labels"]["any"]:
            assert [k for k, r in enumerate(rows) if r[0]] == [1, 2]
            named = [LABELS[i] for i in range(1, 6) if e["ct_labels"][LABELS[i]] == 1]
            assert len(named) == 1 and named[0] in subtype_name.values()
        else:
            assert all(r == [0] * 6 for r in rows)


def test_bhsd_adapter(tmp_path):
    rep = make_bhsd(tmp_path / "bhsd" / "label_192")
    out = tmp_path / "manifests" / "bhsd.json"
    build("bhsd", rep.root.parent, out, folds=3, test_fraction=0.2)
    doc = assert_valid(out)
    assert_no_raw_ids(out, rep.raw_ids)
    entries = all_entries(doc)
    assert len(entries) == 11  # 10 patients, one with two studies; the unlabelled image is left out
    for e in entries:
        want = rep.info["expected"][e["study_uid"]]
        assert e["label_values"] == "ichct"
        # BHSD label values 1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH are ichct's subtype values
        assert [SUBTYPES.index(s) + 1 for s in SUBTYPES if e["ct_labels"][s] == 1] == want["values"]
        assert e["slice_labels"] == rows_of(want["mask"])
    from ichct.transforms.dicom import patient_key

    two = [e for e in entries if e["patient_key"] == patient_key(rep.raw_ids[0])]
    assert len(two) == 2 and len({e.get("fold", "test") for e in two}) == 1


def test_instance_adapter(tmp_path):
    rep = make_instance(tmp_path / "instance")
    out = tmp_path / "manifests" / "instance.json"
    build("instance", rep.root, out, folds=2, test_fraction=0.25)
    doc = assert_valid(out)
    assert_no_raw_ids(out, rep.raw_ids)
    entries = all_entries(doc)
    assert len(entries) == 8
    assert sorted(e["ct_labels"]["any"] for e in entries) == sorted(rep.info["expected"].values())
    for e in entries:
        assert all(e["ct_labels"][s] == -1 for s in SUBTYPES)  # subtypes unknown
        assert all(r[1:] == [-1] * 5 for r in e["slice_labels"])
        assert e["label_values"] == "binary"
