"""``ichct synth``: exit codes, outputs, previews, refusing to clobber folders."""

from __future__ import annotations

import json

import pytest

SMALL = ("--patients", "2", "--matrix", "48", "--slices", "8", "--seed", "3")


def test_synth_writes_a_cohort_with_previews(run_cli, tmp_path):
    out = tmp_path / "cohort"
    result = run_cli("synth", out, *SMALL, "--preview", "--positive-fraction", "1", "--follow-up-fraction", "0",
                     "--motion-fraction", "1")
    assert result.code == 0, result.err
    assert "2 patient(s)" in result.out
    cohort = json.loads((out / "cohort.json").read_text(encoding="utf-8"))
    assert len(cohort["studies"]) == 2 and all(s["ct_labels"]["any"] for s in cohort["studies"])
    assert cohort["generator"]["parameters"]["matrix"] == 48
    assert cohort["generator"]["parameters"]["motion_fraction"] == 1.0
    assert all(s["acquisition"]["motion_mm"] > 0 and s["acquisition"]["motion_slices"] for s in cohort["studies"])
    pngs = sorted((out / "preview").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(s["study_uid"] for s in cohort["studies"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (out / "slice_labels.csv").read_text(encoding="utf-8").startswith("ID,Label\n")
    assert [p.name for p in out.rglob(".*")] == [".ichct-synth"], "temporary files left behind"


def test_synth_refuses_a_non_empty_folder_unless_overwriting_its_own_cohort(run_cli, tmp_path):
    out = tmp_path / "cohort"
    assert run_cli("synth", out, *SMALL).code == 0
    again = run_cli("synth", out, *SMALL)
    assert again.code == 1 and "--overwrite" in again.err
    assert run_cli("synth", out, *SMALL, "--overwrite", "--patients", "1").code == 0
    cohort = json.loads((out / "cohort.json").read_text(encoding="utf-8"))
    assert {s["patient_id"] for s in cohort["studies"]} == {"SYN3-0001"}
    assert sorted(p.name for p in (out / "dicom").iterdir()) == ["SYN3-0001"]

    # an interrupted run (no cohort.json yet) can still be replaced
    (out / "cohort.json").unlink()
    assert run_cli("synth", out, *SMALL, "--overwrite").code == 0

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    refused = run_cli("synth", foreign, *SMALL, "--overwrite")
    assert refused.code == 1 and (foreign / "keep.txt").exists()


@pytest.mark.parametrize("args", [
    (),  # no output folder
    ("--patients", "0"),
    ("--patients", "many"),
    ("--matrix", "16"),
    ("--slices", "2"),
    ("--seed", "-4"),
    ("--positive-fraction", "1.5"),
    ("--motion-fraction", "-0.1"),
    ("--hard-negative-fraction", "1.5"),
    ("--subtype-prob", "bogus=0.2"),
    ("--subtype-prob", "epidural"),
    ("--workers", "0"),
])
def test_bad_arguments_exit_2(run_cli, tmp_path, args):
    out = () if args == () else (tmp_path / "out",)
    result = run_cli("synth", *out, *args)
    assert result.code == 2
    assert not (tmp_path / "out").exists()


def test_dry_run_plans_without_writing(run_cli, tmp_path, caplog):
    out = tmp_path / "out"
    result = run_cli("synth", out, "--patients", "50", "--dry-run", "--subtype-prob", "epidural=0.5")
    assert result.code == 0
    assert not out.exists()
    assert "epidural" in result.err


def test_default_cohort_option(run_cli, tmp_path, monkeypatch, caplog):
    from ichct.pipeline.synth import DEFAULT_COHORT_DIR

    monkeypatch.chdir(tmp_path)
    planned = run_cli("synth", "--default-cohort", "--dry-run")
    assert planned.code == 0 and "60 patient(s)" in planned.err
    assert "data_manifests/synth_default.json" in planned.err  # not run from the repository root
    assert not (tmp_path / DEFAULT_COHORT_DIR).exists()
    for extra in (("--patients", "3"), ("--seed", "1"), ("--matrix", "64"), ("--subtype-prob", "epidural=0.5"),
                  ("--formation-variety",), ("--formation-ranges", '{"hu_offset": [-2, 2]}')):
        refused = run_cli("synth", "--default-cohort", "--dry-run", *extra)
        assert refused.code == 2 and extra[0] in refused.err
    assert run_cli("synth", tmp_path / "named", "--default-cohort", "--dry-run").code == 0


def test_cohort_option_names_a_committed_cohort(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    planned = run_cli("synth", "--cohort", "synth_large", "--dry-run")
    assert planned.code == 0 and "180 patient(s)" in planned.err
    assert "data_manifests/synth_large.json" in planned.err and not (tmp_path / "data").exists()
    tuning = run_cli("synth", "--cohort", "synth_tuning", "--dry-run")
    assert tuning.code == 0 and "80 patient(s), 0 with a follow-up study" in tuning.err
    assert run_cli("synth", "--cohort", "synth_large", "--dry-run", "--seed", "3").code == 2
    assert run_cli("synth", "--cohort", "synth_large", "--default-cohort", "--dry-run").code == 2
    unknown = run_cli("synth", "--cohort", "synth_huge", "--dry-run")
    assert unknown.code == 2 and "synth_large" in unknown.err  # the choices are listed


def test_formation_variety_options_record_each_studys_draw(run_cli, tmp_path):
    ranges = tmp_path / "ranges.json"
    ranges.write_text(json.dumps({"hu_offset": [-2, 2], "dose_factor": [0.9, 1.1]}), encoding="utf-8")
    out = tmp_path / "varied"
    assert run_cli("synth", out, *SMALL, "--formation-ranges", ranges).code == 0
    cohort = json.loads((out / "cohort.json").read_text(encoding="utf-8"))
    assert cohort["generator"]["parameters"]["formation_ranges"] == {"hu_offset": [-2.0, 2.0], "dose_factor": [0.9, 1.1]}
    shifts = [s["acquisition"]["formation_shift"] for s in cohort["studies"]]
    assert all(-2 <= f["hu_offset"] <= 2 and 0.9 <= f["dose_factor"] <= 1.1 and f["soft_f_cut"] is None for f in shifts)
    assert len({f["hu_offset"] for f in shifts}) == len(shifts)
    preset = run_cli("synth", tmp_path / "preset", *SMALL, "--formation-variety", "--dry-run")
    assert preset.code == 0
    both = run_cli("synth", tmp_path / "both", *SMALL, "--formation-variety", "--formation-ranges", ranges)
    assert both.code == 2 and "not allowed with" in both.err


@pytest.mark.parametrize(("value", "message"), [
    ('{"dose_factor": [1.5, 0.5]}', "formation_ranges.dose_factor must be [low, high] with low <= high"),
    ('{"dose_factor": [0, 1]}', "formation.dose_factor must be within"),
    ('{"kernel": [0, 1]}', "unknown key(s) ['kernel']"),
    ('{"hu_offset": 3}', "formation_ranges.hu_offset must be [low, high], two numbers"),
    ("[1, 2]", "expected a JSON object"),
    ("missing.json", "neither a JSON object nor a JSON file"),
])
def test_bad_formation_ranges_are_refused_before_anything_is_written(run_cli, tmp_path, value, message):
    out = tmp_path / "cohort"
    result = run_cli("synth", out, *SMALL, "--formation-ranges", value)
    assert result.code == 2 and message in result.err
    assert not out.exists()
