"""Probability CSVs of another tool (``ichct evaluate --predictions DIR``): reading, placement, errors, scores.

The DICOM is written by ``tests/foreign_dicom.py`` (not by ichct): an RSNA-like corpus with
``ID_<hex>`` UIDs and files written in a shuffled order (its manifest built by ichct's ``rsna``
adapter), and a series with real ``2.25.`` UIDs whose file names and InstanceNumbers follow the
shuffled write order, not the anatomy. Where a slice lies comes from the writer's geometry
(``ForeignSeries.sop_uids`` is in increasing z).
"""

from __future__ import annotations

import csv
from pathlib import Path

import foreign_dicom as fd
import numpy as np
import pydicom
import pytest

from ichct.errors import InputError
from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision import DecisionRule, ct_scores, decide
from ichct.pipeline.evaluate.external_probs import (
    ExternalProbabilities,
    fill_probability_fields,
    find_probability_csvs,
    probability_rule_names,
    read_probabilities,
)

N_SLICES = 6


def _study_uid(entry):
    return entry["study_uid"]


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    """4 RSNA-like studies of 6 slices (files and CSV rows shuffled) and their manifest entries."""
    from ichct.pipeline.manifests import build_manifest, load_manifest

    base = tmp_path_factory.mktemp("rsna_probs")
    corpus = fd.write_rsna_layout(base / "rsna", studies=4, files_per_series=N_SLICES, rows=32, pixel_spacing=7.5,
                                  positives=(True, False, True, False), seed=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ICHCT_SALT", "ichct-test-salt-0123456789abcdef")
        build_manifest("rsna", corpus.root, base / "m.json", folds=2, test_fraction=0.5, seed=0, cache=False)
        entries = load_manifest(base / "m.json", "all", cache=False)
    by_study = {s.study_uid: s for s in corpus.series}
    return corpus, entries, by_study


@pytest.fixture(scope="module")
def uid_series(tmp_path_factory):
    """One series with 2.25 UIDs in a shuffled file order, plus a duplicate instance of slice 2."""
    folder = tmp_path_factory.mktemp("uid_series") / "series"
    s = fd.write_ct_series(folder, n_slices=5, rows=32, pixel_spacing=7.5, seed=4, verify=False)
    ds = pydicom.dcmread(s.files[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = s.sop_uids[2] + ".9"
    ds.save_as(folder / "COPY_OF_SLICE", enforce_file_format=True)
    return s, {"image": str(folder), "study_uid": s.study_uid, "series_uid": s.series_uid, "patient_key": "p1",
               "ct_labels": s.ct_labels}


def _write(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _slice_rows(sop_uids, values, prefix="", order=None):
    """RSNA submission rows for the slices ``sop_uids`` (stack order) with ``values[k][j]``."""
    rows = [[f"{prefix}{sop}_{name}", repr(float(values[k][j]))] for k, sop in enumerate(sop_uids)
            for j, name in enumerate(LABEL_NAMES)]
    if order is not None:
        rows = [rows[i] for i in order]
    return rows


def _ramp(n):
    """Probabilities that tell every slice and label apart: (k + 1) / (n + 1) scaled per label."""
    return [[(k + 1) / (n + 1) * (1.0 - 0.1 * j) for j in range(len(LABEL_NAMES))] for k in range(n)]


# ---------------------------------------------------------------------------------------------
# placement along the stack
# ---------------------------------------------------------------------------------------------


def test_rsna_slice_rows_follow_the_geometry_and_the_manifest_order(rsna, tmp_path):
    from ichct.transforms.dicom import read_dicom_series

    corpus, entries, by_study = rsna
    rng = np.random.default_rng(0)
    rows = []
    for s in corpus.series:
        rows += _slice_rows(s.sop_uids, _ramp(N_SLICES))
    csv_path = _write(tmp_path / "slices.csv", ["ID", "Label"], [rows[i] for i in rng.permutation(len(rows))])
    probs = read_probabilities([csv_path], entries, _study_uid)
    assert set(probs) == {e["study_uid"] for e in entries}
    for e in entries:
        p = probs[e["study_uid"]]
        assert p.kind == "slice" and p.study_probs is None and p.source == str(csv_path)
        np.testing.assert_allclose(p.slice_probs, _ramp(N_SLICES))  # slice k is the k-th along +z
        # the converted volume stacks the same slices in the same order
        s = by_study[e["study_uid"]]
        vol = read_dicom_series(e["image"])
        z = [float((vol.affine_lps @ [0, 0, k, 1])[2]) for k in range(vol.hu_volume.shape[2])]
        np.testing.assert_allclose(z, [s.geometry.ipp(k)[2] for k in range(N_SLICES)], atol=1e-4)


def test_slice_rows_reproduce_the_manifest_slice_labels(rsna, tmp_path):
    """The challenge's own label CSV read as predictions gives each entry's ``slice_labels``."""
    corpus, entries, _ = rsna
    probs = read_probabilities([corpus.csv_path], entries, _study_uid)
    assert any(np.asarray(e["slice_labels"])[:, 0].any() for e in entries)
    for e in entries:
        np.testing.assert_array_equal(probs[e["study_uid"]].slice_probs, np.asarray(e["slice_labels"], float))


def test_real_uids_with_or_without_the_id_prefix_and_duplicates_averaged(uid_series, tmp_path):
    s, entry = uid_series
    values = _ramp(s.n_slices)
    copy = [[0.0] * len(LABEL_NAMES)]
    for prefix in ("ID_", ""):
        rows = _slice_rows(s.sop_uids, values, prefix) + _slice_rows([s.sop_uids[2] + ".9"], copy, prefix)
        path = _write(tmp_path / f"p{prefix}.csv", ["ID", "Label"], rows[::-1])
        got = read_probabilities([path], [entry], _study_uid)[s.study_uid].slice_probs
        want = np.asarray(values)
        want[2] = want[2] / 2  # the two instances at slice 2's position are averaged
        np.testing.assert_allclose(got, want)
    # the files' names and InstanceNumbers follow the shuffled write order, not the anatomy
    numbers = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in s.files]
    assert numbers != sorted(numbers)


def test_rsna_ids_with_a_doubled_prefix(rsna, tmp_path):
    corpus, entries, _ = rsna
    s = corpus.series[0]
    path = _write(tmp_path / "d.csv", ["ID", "Label"], _slice_rows(s.sop_uids, _ramp(N_SLICES), prefix="ID_"))
    probs = read_probabilities([path], entries, _study_uid)
    assert list(probs) == [s.study_uid]  # the other studies have no rows: absent
    np.testing.assert_allclose(probs[s.study_uid].slice_probs, _ramp(N_SLICES))


def test_per_study_rows_by_any_id_and_with_some_labels(rsna, tmp_path):
    _, entries, _ = rsna
    a = _write(tmp_path / "a.csv", ["study_uid", "any", "subdural"], [[entries[0]["study_uid"], "0.25", "1"]])
    b = _write(tmp_path / "b.csv", [" ID ", "subarachnoid", "any"], [[entries[1]["series_uid"], "0", "0.75"]])
    by_series = {e["series_uid"]: e["study_uid"] for e in entries}
    probs = read_probabilities([a], entries, _study_uid)
    assert probs[entries[0]["study_uid"]].study_probs == {"any": 0.25, "subdural": 1.0}
    probs = read_probabilities([b], entries, lambda e: e["series_uid"])
    p = probs[by_series[entries[1]["series_uid"]]]
    assert p.kind == "study" and p.slice_probs is None and p.source == str(b)
    assert list(p.study_probs.items()) == [("any", 0.75), ("subarachnoid", 0.0)]  # LABEL_NAMES order


def test_find_probability_csvs(tmp_path):
    for name in ("b.csv", "a.CSV", ".hidden.csv", "mask.nii.gz", "sub/c.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    assert [p.name for p in find_probability_csvs(tmp_path)] == ["a.CSV", "b.csv"]
    with pytest.raises(InputError, match="not a folder"):
        find_probability_csvs(tmp_path / "b.csv")


# ---------------------------------------------------------------------------------------------
# bad input: the error names the file and the line
# ---------------------------------------------------------------------------------------------


def _good_slice_rows(s):
    return _slice_rows(s.sop_uids, _ramp(s.n_slices))


BAD_SLICE = {
    "nan": (lambda r: r.__setitem__(3, [r[3][0], "nan"]), "line 5", "NaN"),
    "inf": (lambda r: r.__setitem__(0, [r[0][0], "inf"]), "line 2", "infinite"),
    "above one": (lambda r: r.__setitem__(7, [r[7][0], "1.5"]), "line 9", "outside [0, 1]"),
    "negative": (lambda r: r.__setitem__(1, [r[1][0], "-0.1"]), "line 3", "outside [0, 1]"),
    "text": (lambda r: r.__setitem__(2, [r[2][0], "high"]), "line 4", "not a number"),
    "empty": (lambda r: r.__setitem__(2, [r[2][0], ""]), "line 4", "empty value"),
    "duplicate": (lambda r: r.append(list(r[4])), "line 38", "again (first on line 6)"),
    "unknown sop": (lambda r: r.insert(5, ["ID_deadbeef0_any", "0.5"]), "line 7", "1 SOP instance UID(s) of no evaluated"),
    "no label": (lambda r: r.insert(0, ["ID_deadbeef0", "0.5"]), "line 2", "not ID_<SOPInstanceUID>_<label>"),
    "bad label": (lambda r: r.insert(0, [r[0][0].replace("_any", "_anything"), "0.5"]), "line 2", "_<label>"),
    "missing label": (lambda r: r.pop(6), "line 8", "no row for label(s) ['any']"),
    "partly covered": (lambda r: r.__delitem__(slice(6, 18)), "", "2 of its 6 slices have no rows"),
    "short row": (lambda r: r.__setitem__(0, [r[0][0]]), "line 2", "1 value(s) for the 2 column(s)"),
}


@pytest.mark.parametrize("case", sorted(BAD_SLICE))
def test_bad_slice_csv(rsna, tmp_path, case):
    corpus, entries, _ = rsna
    rows = _good_slice_rows(corpus.series[0])
    change, where, what = BAD_SLICE[case]
    change(rows)
    path = _write(tmp_path / "bad.csv", ["ID", "Label"], rows)
    with pytest.raises(InputError) as err:
        read_probabilities([path], entries, _study_uid)
    assert str(path) in str(err.value) and where in str(err.value) and what in str(err.value), str(err.value)


def test_unknown_uids_are_listed_with_their_lines(rsna, tmp_path):
    corpus, entries, _ = rsna
    rows = _good_slice_rows(corpus.series[0]) + [[f"ID_{i:09x}_any", "0.1"] for i in range(7)]
    path = _write(tmp_path / "u.csv", ["ID", "Label"], rows)
    with pytest.raises(InputError, match=r"7 SOP instance UID\(s\) of no evaluated study: line 38: 'ID_000000000'; "
                                         r"line 39: .* and 2 more"):
        read_probabilities([path], entries, _study_uid)
    study = _write(tmp_path / "s.csv", ["study_uid", "any"], [["nope", "0.5"], [entries[0]["study_uid"], "0.5"]])
    with pytest.raises(InputError, match=r"s\.csv: 1 study id\(s\) of no evaluated study: line 2: 'nope'"):
        read_probabilities([study], entries, _study_uid)


BAD_STUDY = {
    "no any": (["study_uid", "subdural"], [["{uid}", "0.5"]], "line 1", "without column(s) ['any']"),
    "no id": (["any", "subdural"], [["0.5", "0.5"]], "line 1", "not a probability CSV"),
    "typo": (["study_uid", "any", "subdual"], [["{uid}", "0.5", "0.5"]], "line 1", "unknown column(s) ['subdual']"),
    "two ids": (["study_uid", "id", "any"], [["{uid}", "{uid}", "0.5"]], "line 1", "both"),
    "dup column": (["study_uid", "any", "Any"], [["{uid}", "0.5", "0.5"]], "line 1", "duplicate column"),
    "nan": (["study_uid", "any"], [["{uid}", "NaN"]], "line 2", "NaN"),
    "above one": (["study_uid", "any"], [["{uid}", "2"]], "line 2", "outside [0, 1]"),
    "duplicate": (["study_uid", "any"], [["{uid}", "0.5"], ["{uid}", "0.6"]], "line 3", "again (first on line 2)"),
    "empty id": (["study_uid", "any"], [["", "0.5"]], "line 2", "empty 'study_uid'"),
    "slice extra column": (["ID", "Label", "model"], [["x_any", "0.5", "m"]], "line 1", "unknown column(s) ['model']"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDY))
def test_bad_study_csv(rsna, tmp_path, case):
    _, entries, _ = rsna
    header, rows, where, what = BAD_STUDY[case]
    rows = [[c.format(uid=entries[0]["study_uid"]) for c in r] for r in rows]
    path = _write(tmp_path / "bad.csv", header, rows)
    with pytest.raises(InputError) as err:
        read_probabilities([path], entries, _study_uid)
    assert str(path) in str(err.value) and where in str(err.value) and what in str(err.value), str(err.value)


def test_one_study_in_two_files_or_two_forms(rsna, tmp_path):
    corpus, entries, _ = rsna
    s = corpus.series[0]
    a = _write(tmp_path / "a.csv", ["study_uid", "any"], [[s.study_uid, "0.5"]])
    b = _write(tmp_path / "b.csv", ["study_uid", "any"], [[s.study_uid, "0.4"]])
    with pytest.raises(InputError, match=r"b\.csv: line 2: study .* again \(first in .*a\.csv, line 2\)"):
        read_probabilities([a, b], entries, _study_uid)
    c = _write(tmp_path / "c.csv", ["ID", "Label"], _good_slice_rows(s))
    with pytest.raises(InputError, match=r"a\.csv: study .* also has per-slice rows in .*c\.csv"):
        read_probabilities([a, c], entries, _study_uid)
    d = _write(tmp_path / "d.csv", ["ID", "Label"], _good_slice_rows(s)[:6])
    with pytest.raises(InputError, match=r"d\.csv: line 2: SOP instance .* again \(first in .*c\.csv, line 2\)"):
        read_probabilities([c, d], entries, _study_uid)


def test_unreadable_files(rsna, tmp_path):
    _, entries, _ = rsna
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    for path, what in ((empty, "empty file"), (binary, "not a readable CSV")):
        with pytest.raises(InputError, match=what) as err:
            read_probabilities([path], entries, _study_uid)
        assert str(path) in str(err.value)


def test_per_slice_rows_for_a_nifti_study_are_unknown(uid_series, tmp_path):
    s, entry = uid_series
    nifti = {**entry, "image": str(tmp_path / "ct.nii.gz"), "study_uid": "nifti-study"}
    path = _write(tmp_path / "p.csv", ["ID", "Label"], _slice_rows(s.sop_uids, _ramp(s.n_slices)))
    with pytest.raises(InputError, match=r"of no evaluated study.*1 evaluated stud\(ies\) are not DICOM"):
        read_probabilities([path], [nifti], _study_uid)


# ---------------------------------------------------------------------------------------------
# into a StudyPrediction, as ichct's classifier fills it
# ---------------------------------------------------------------------------------------------


def _prediction(n_slices):
    from ichct.pipeline.models.inference import StudyPrediction

    return StudyPrediction(image="x", original_shape=(4, 4, n_slices), original_affine=np.eye(4), n_slices=n_slices)


RULES = {
    "consecutive": DecisionRule("consecutive", threshold={name: 0.3 + 0.05 * j for j, name in enumerate(LABEL_NAMES)},
                                k=2),
    "max": DecisionRule("max", threshold=0.6),
    "topk_mean": DecisionRule("topk_mean", threshold={"any": 0.5}, k=3),
    "seg_volume": DecisionRule("seg_volume", threshold=1.0),
}


def test_fill_per_slice_probabilities_as_the_decision_functions_do(rsna):
    from ichct.pipeline.evaluate.run import study_row

    _, entries, _ = rsna
    values = np.asarray(_ramp(N_SLICES))
    pred = _prediction(N_SLICES)
    fill_probability_fields(pred, ExternalProbabilities(slice_probs=values, source="p.csv"), RULES)
    np.testing.assert_array_equal(pred.slice_probs, values)
    assert set(pred.scores) == {"consecutive", "max", "topk_mean"}  # seg_volume needs a segmentation
    for key in ("consecutive", "max"):
        assert pred.scores[key] == ct_scores(RULES[key], slice_probs=values)
        assert pred.decisions[key] == decide(RULES[key], slice_probs=values)
    assert pred.scores["topk_mean"] == ct_scores(RULES["topk_mean"], slice_probs=values)
    assert pred.decisions["topk_mean"] == {"any": decide(RULES["topk_mean"], slice_probs=values[:, :1],
                                                         subtypes=["any"])["any"]}  # called where a threshold is
    assert pred.decisions["consecutive"]["any"]["positive"] and not pred.decisions["max"]["subdural"]["positive"]
    row = study_row(entries[0], pred)  # the evaluation's per-study row takes it as it takes ichct's own
    assert row["score:max:any"] == pytest.approx(6 / 7) and row["call:consecutive:any"] == 1
    assert row["n_slices"] == N_SLICES and np.isfinite(row["slice_ll_sum"])


def test_fill_per_study_probabilities_with_the_max_rule():
    probs = ExternalProbabilities(study_probs={"any": 0.7, "intraventricular": 0.2}, source="s.csv")
    assert probability_rule_names(probs) == ("max",)
    pred = _prediction(8)
    fill_probability_fields(pred, probs, RULES)
    assert pred.slice_probs is None and set(pred.scores) == {"max"}
    assert pred.scores["max"] == {"any": 0.7, "intraventricular": 0.2}
    values = np.asarray([[0.7, 0.2]])
    assert pred.decisions["max"] == decide(RULES["max"], slice_probs=values, subtypes=["any", "intraventricular"])
    assert pred.decisions["max"]["any"] == {"score": 0.7, "threshold": 0.6, "positive": True}


def test_score_only_rules_have_scores_and_no_calls():
    values = np.asarray(_ramp(5))
    pred = _prediction(5)
    fill_probability_fields(pred, ExternalProbabilities(slice_probs=values), {}, score_only=["consecutive", "max",
                                                                                              "seg_volume"], k=2)
    assert set(pred.scores) == {"consecutive", "max"} and pred.decisions == {}
    assert pred.scores["consecutive"] == ct_scores(DecisionRule("consecutive", threshold=0.5, k=2), slice_probs=values)
    study = _prediction(5)
    fill_probability_fields(study, ExternalProbabilities(study_probs={"any": 0.1}), {}, score_only=["consecutive", "max"])
    assert study.scores == {"max": {"any": 0.1}}


def _sop_uids(paths):
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]


def test_uneven_stack_keeps_its_source_slices_in_position_order(tmp_path):
    """A stack with a gap: one row per source slice along the normal, as the manifest's ``slice_labels``
    (the reader resamples the volume onto a uniform grid, with more slices)."""
    import dicom_factory as fac

    spec = fac.make_stack(5, offsets_mm=[-12.5, -7.5, -2.5, 7.5, 12.5], key="gap", rows=16, cols=16,
                          instance_numbers="scrambled", flip_rows=True)
    paths = fac.write_series(tmp_path / "gap", spec, naming="random")  # slice order = increasing offset
    entry = {"image": str(tmp_path / "gap"), "study_uid": "gap-study"}
    path = _write(tmp_path / "p.csv", ["ID", "Label"], _slice_rows(_sop_uids(paths), _ramp(5), prefix="ID_")[::-1])
    got = read_probabilities([path], [entry], _study_uid)["gap-study"].slice_probs
    np.testing.assert_allclose(got, _ramp(5))


def test_multiframe_instances_cannot_be_addressed_per_slice(tmp_path):
    import dicom_factory as fac

    spec = fac.make_stack(4, 5.0, key="enhanced", rows=16, cols=16)
    mf = fac.write_enhanced_ct(tmp_path / "mf" / "MF000001", spec)
    entry = {"image": str(tmp_path / "mf"), "study_uid": "mf-study"}
    path = _write(tmp_path / "p.csv", ["ID", "Label"], _slice_rows(_sop_uids([mf]), _ramp(1)))
    with pytest.raises(InputError, match=r"p\.csv: line 2: .* multi-frame image of 4 slices"):
        read_probabilities([path], [entry], _study_uid)
