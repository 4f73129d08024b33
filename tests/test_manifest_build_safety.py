"""``ichct manifest build`` on bad input: nothing partial left, an old manifest and its links kept,
label CSVs with missing columns refused, and the raw-identifier guard without false alarms on numbers."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_manifest_replicas import (  # noqa: F401
    hash_cache_env,
    all_entries,
    assert_valid,
    build,
    make_bhsd,
    make_cq500,
    make_physionet,
    make_rsna,
)

from ichct.pipeline.manifests import ManifestError, check_manifests
from ichct.pipeline.manifests.leaks import raw_identifier_places

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


def link_targets(folder: Path) -> dict[str, str]:
    """Every link under ``folder`` (relative path -> target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[str(p.relative_to(folder))] = os.readlink(p)
    return out


def break_one_label(bhsd_root: Path) -> Path:
    """Overwrite one mask with a volume of another shape (the build's grid check fails)."""
    mask = sorted((bhsd_root / "ground truths").iterdir())[2]
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 3), np.uint8), np.diag([0.5, 0.5, 5.0, 1.0])), str(mask))
    return mask


# ---------------------------------------------------------------------------------------------
# links: staged, checked, then swapped in with the JSON
# ---------------------------------------------------------------------------------------------


def test_rejected_rebuild_keeps_the_old_manifest_and_its_links(tmp_path):
    good = make_bhsd(tmp_path / "good", n_patients=6, unlabelled=0)
    broken = tmp_path / "broken"
    shutil.copytree(good.root, broken)
    break_one_label(broken)
    out = tmp_path / "m" / "bhsd.json"
    build("bhsd", good.root, out, folds=2, test_fraction=0.25)
    text, links = out.read_text(), link_targets(out.parent / "bhsd.links")
    assert links and all(t.startswith(str(good.root)) for t in links.values())

    with pytest.raises(ManifestError) as err:
        build("bhsd", broken, out, folds=2, test_fraction=0.25)
    assert any("label not on the image grid" in p for p in err.value.problems)
    # problems name the links as they would be installed, not the staging folder
    assert all(".partial" not in p for p in err.value.problems), err.value.problems
    assert out.read_text() == text
    assert link_targets(out.parent / "bhsd.links") == links  # not re-pointed at the rejected data
    assert sorted(p.name for p in out.parent.iterdir()) == ["bhsd.json", "bhsd.links"]  # no staging left
    assert check_manifests([out]).ok


def test_failed_build_leaves_nothing_behind(tmp_path):
    rep = make_bhsd(tmp_path / "bhsd", n_patients=6, unlabelled=0)
    break_one_label(rep.root)
    out = tmp_path / "m" / "bhsd.json"
    with pytest.raises(ManifestError):
        build("bhsd", rep.root, out, folds=2, test_fraction=0.25)
    assert list(out.parent.iterdir()) == []


def test_rebuild_swaps_in_exactly_the_new_links(tmp_path):
    rep = make_bhsd(tmp_path / "bhsd", n_patients=6, unlabelled=0)
    out = tmp_path / "m" / "bhsd.json"
    build("bhsd", rep.root, out, folds=2, test_fraction=0.25)
    before = link_targets(out.parent / "bhsd.links")
    gone = sorted((rep.root / "images").iterdir())[-1]
    gone.unlink()
    (rep.root / "ground truths" / gone.name).unlink()
    doc = build("bhsd", rep.root, out, folds=2, test_fraction=0.25)
    assert_valid(out)
    after = link_targets(out.parent / "bhsd.links")
    used = {str(Path(e[k]).relative_to("bhsd.links")) for e in all_entries(doc) for k in ("image", "label")}
    assert set(after) == used  # the removed study's links are gone, every entry's link is there
    assert len(before) - len(after) == 2 and not any(str(gone) == t for t in after.values())
    assert sorted(p.name for p in out.parent.iterdir()) == ["bhsd.json", "bhsd.links"]


def test_failure_after_the_links_are_swapped_in_rolls_both_back(tmp_path, monkeypatch):
    """The JSON and the link folder change together: if the last step fails, neither changes."""
    from ichct.pipeline.manifests.links import Linker

    rep = make_bhsd(tmp_path / "bhsd", n_patients=6, unlabelled=0)
    out = tmp_path / "m" / "bhsd.json"
    build("bhsd", rep.root, out, folds=2, test_fraction=0.25, seed=1)
    text, links = out.read_text(), link_targets(out.parent / "bhsd.links")
    (rep.root / "images" / sorted(os.listdir(rep.root / "images"))[-1]).unlink()  # the rebuild would differ
    swap_in = Linker.swap_in

    def swap_in_then_fail(self):
        swap_in(self)
        raise OSError("disk full")

    monkeypatch.setattr(Linker, "swap_in", swap_in_then_fail)
    with pytest.raises(OSError, match="disk full"):
        build("bhsd", rep.root, out, folds=2, test_fraction=0.25, seed=1)
    assert out.read_text() == text and link_targets(out.parent / "bhsd.links") == links
    assert sorted(p.name for p in out.parent.iterdir()) == ["bhsd.json", "bhsd.links"]


def test_a_link_folder_holding_real_files_is_not_replaced(tmp_path):
    rep = make_bhsd(tmp_path / "bhsd", n_patients=4, unlabelled=0)
    out = tmp_path / "m" / "bhsd.json"
    keep = out.parent / "bhsd.links" / "notes.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("mine")
    with pytest.raises(ValueError, match="notes.txt, which is not a link"):
        build("bhsd", rep.root, out, folds=1, test_fraction=0.25)
    assert keep.read_text() == "mine" and not out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["bhsd.links"]


# ---------------------------------------------------------------------------------------------
# raw-identifier guard: purely numeric identifiers
# ---------------------------------------------------------------------------------------------


def _doc(**entry) -> dict:
    return {"description": "split: 100 training studies in 5 folds, 100 test studies", "seed": 100, "numTest": 100,
            "created_by": {"command": "ichct manifest build --source instance --root /data/inst --seed 100"},
            "training": [], "test": [{"image": "inst.links/ab12/cd34_image.nii.gz", "study_uid": "1.2.100.3", **entry}]}


def test_numeric_identifiers_count_only_where_they_name_something():
    tokens = ["100", "instance2022:100", "ID_5ca7ed00"]
    assert raw_identifier_places(_doc(), tokens) == []  # numbers, free text, a UID component
    assert raw_identifier_places(_doc(image="../inst/train_2/data/100.nii.gz"), tokens) == ["test[0].image"]
    assert raw_identifier_places(_doc(source_info={"case": "100"}), tokens) == ["test[0].source_info"]
    assert raw_identifier_places(_doc(source_info={"100": 1}), tokens) == ["test[0].source_info"]  # a key
    leaky_root = _doc()
    leaky_root["created_by"]["command"] = "ichct manifest build --root '/data/cases/100' --seed 1"
    assert raw_identifier_places(leaky_root, tokens) == ["created_by"]
    # textual identifiers are still found anywhere, free text included
    leaky_text = _doc()
    leaky_text["description"] += " from ID_5ca7ed00"
    assert raw_identifier_places(leaky_text, tokens) == ["description"]


def test_patient_number_equal_to_the_seed_is_not_a_leak(tmp_path):
    rep = make_physionet(tmp_path / "ct-ich", numbers=(49, 50, 51, 52, 98, 99, 100, 101))
    out = tmp_path / "m" / "physionet.json"
    doc = build("physionet", rep.root, out, folds=3, test_fraction=0.25, seed=100)
    assert doc["seed"] == 100 and len(all_entries(doc)) == 8
    text = out.read_text()
    assert "100.nii" not in text and "ct_scans/" not in text


def test_a_root_named_after_a_patient_number_is_refused(tmp_path):
    rep = make_physionet(tmp_path / "100", numbers=(49, 50, 51, 52, 98, 99, 100, 101))
    out = tmp_path / "m" / "physionet.json"
    with pytest.raises(ValueError, match="raw patient identifier .* at created_by"):
        build("physionet", rep.root, out, folds=3, test_fraction=0.25)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# label CSVs: required columns
# ---------------------------------------------------------------------------------------------


def rename_columns(csv_path: Path, renames: dict[str, str]) -> None:
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    rows[0] = [renames.get(c, c) for c in rows[0]]
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


CSV_CASES = {
    # source: (replica maker, label CSV name, renamed columns, columns then reported missing)
    "cq500-readers": ("cq500", make_cq500, "reads.csv", {"R1:ICH": "R1-ICH", "R3:ICH": "R3-ICH"}, ["R1:ICH", "R3:ICH"]),
    "cq500-name": ("cq500", make_cq500, "reads.csv", {"name": "Name"}, ["name"]),
    "physionet-negative": ("physionet", make_physionet, "hemorrhage_diagnosis_raw_ct.csv", {"No_Hemorrhage": "NoHemorrhage"},
                           ["No_Hemorrhage"]),
    "physionet-number": ("physionet", make_physionet, "hemorrhage_diagnosis_raw_ct.csv", {"PatientNumber": "Patient Number"},
                         ["PatientNumber"]),
    "rsna": ("rsna", make_rsna, "stage_2_train.csv", {"ID": "Image", "Label": "Target"}, ["ID", "Label"]),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_label_csv_without_a_needed_column_is_refused(tmp_path, case):
    source, make, csv_name, renames, missing = CSV_CASES[case]
    rep = make(tmp_path / "data")
    csv_path = next(rep.root.rglob(csv_name))
    rename_columns(csv_path, renames)
    out = tmp_path / "m" / f"{source}.json"
    with pytest.raises(ManifestError) as err:
        build(source, rep.root, out, folds=1, test_fraction=0.25)
    message = str(err.value)
    assert str(csv_path) in message
    assert f"missing column(s) {', '.join(repr(c) for c in missing)};" in message
    assert all(repr(new) in message.split("columns found:")[1] for new in renames.values())
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_cli_names_the_csv_and_exits_1(run_cli, tmp_path):
    rep = make_physionet(tmp_path / "ct-ich")
    csv_path = next(rep.root.rglob("hemorrhage_diagnosis_raw_ct.csv"))
    rename_columns(csv_path, {"Subdural": "SDH"})
    out = tmp_path / "m" / "physionet.json"
    result = run_cli("manifest", "build", "--source", "physionet", "--root", rep.root, "--out", out)
    assert result.code == 1
    assert f"{csv_path}: missing column(s) 'Subdural'; columns found: " in result.out
    assert str(csv_path) in result.err and not out.exists()
