"""CLI conventions: usage errors exit 2 naming the flag (data errors stay 1), a closed stdout ends
quietly, ``-q`` means errors only."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import dicom_factory as fac
import pytest


@pytest.fixture
def dicom_folder(tmp_path):
    folder = tmp_path / "dcm"
    fac.write_series(folder, fac.make_stack(10, 5.0, key="cli-usage"))
    return folder


def _usage_error(res, *words):
    assert res.code == 2, (res.code, res.err)
    assert "usage: ichct" in res.err and "Traceback" not in res.err
    for w in words:
        assert w in res.err, f"{w!r} not in {res.err!r}"


# ---- convert ----------------------------------------------------------------------------------------


def test_convert_without_output_is_a_usage_error(dicom_folder, tmp_path, run_cli):
    _usage_error(run_cli("convert", dicom_folder), "OUT", "--all-series")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcm"]


@pytest.mark.parametrize("name", ["ct.txt", "ct.nrrd", "ct"])
def test_convert_output_extension_is_a_usage_error(dicom_folder, tmp_path, run_cli, name):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _usage_error(run_cli("convert", dicom_folder, out_dir / name), "argument OUT", name, ".nii.gz")
    assert fac.tree_listing(out_dir) == []


def test_convert_out_and_all_series_are_exclusive(dicom_folder, tmp_path, run_cli):
    """`out` is never silently ignored: the combination is refused before anything is read or written."""
    _usage_error(run_cli("convert", dicom_folder, tmp_path / "z.nii.gz", "--all-series", tmp_path / "all"),
                 "--all-series", "z.nii.gz", "mutually exclusive")
    _usage_error(run_cli("convert", dicom_folder, "--series", "1.2.3", "--all-series", tmp_path / "all"),
                 "--series", "--all-series")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcm"]
    # each alone still works
    res = run_cli("convert", dicom_folder, "--all-series", tmp_path / "all", "-q")
    assert res.code == 0, res.err
    assert any(p.name.endswith(".nii.gz") for p in (tmp_path / "all").iterdir())
    res = run_cli("convert", dicom_folder, tmp_path / "z.nii.gz", "-q")
    assert res.code == 0, res.err
    assert (tmp_path / "z.nii.gz").is_file()


def test_convert_data_errors_stay_exit_1(tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    res = run_cli("convert", tmp_path / "empty", tmp_path / "o.nii.gz")
    assert res.code == 1 and str(tmp_path / "empty") in res.err
    res = run_cli("convert", tmp_path / "empty", "--all-series", tmp_path / "all")
    assert res.code == 1 and str(tmp_path / "empty") in res.err


# ---- evaluate --bootstrap, manifest build --folds ------------------------------------------------------


@pytest.mark.parametrize("n", ["0", "-5"])
def test_evaluate_bootstrap_below_1_is_a_usage_error(tmp_path, run_cli, n):
    """The bootstrap needs at least one resample (ichct.pipeline.evaluate.bootstrap refuses n < 1): the CLI
    says so before any model runs, naming the flag."""
    (tmp_path / "run").mkdir()
    (tmp_path / "m.json").write_text("{}")
    res = run_cli("evaluate", "--run", tmp_path / "run", "--manifest", tmp_path / "m.json", "--out", tmp_path / "ev",
                  "--bootstrap", n)
    _usage_error(res, "--bootstrap", ">= 1", n)
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("bad_seed", ["-1", "4294967296", "one"])
def test_train_refuses_a_bad_seed_before_any_work(tmp_path, run_cli, bad_seed):
    """`ichct train --seed` takes what `ichct demo --seed` takes (0..2**32-1), refused as a usage error."""
    (tmp_path / "m.json").write_text("{}")
    res = run_cli("train", "cls", "--manifest", tmp_path / "m.json", "--fold", "0", "--out", tmp_path / "run",
                  "--seed", bad_seed)
    assert res.code == 2 and "--seed" in res.err, res.err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("folds", ["1", "0"])
def test_manifest_build_needs_two_folds(tmp_path, run_cli, folds):
    """With one fold no fold can be trained (`ichct train` validates on one and trains on the others)."""
    (tmp_path / "root").mkdir()
    res = run_cli("manifest", "build", "--source", "synth", "--root", tmp_path / "root", "--out", tmp_path / "m.json",
                  "--folds", folds)
    _usage_error(res, "--folds", "at least 2")
    assert not (tmp_path / "m.json").exists()


# ---- a closed stdout ---------------------------------------------------------------------------------


def test_closed_stdout_ends_quietly(dicom_folder, tmp_path):
    """`ichct info --json | head -1`: the reader is gone before ichct writes; no traceback, exit 1
    (Python's documented SIGPIPE handling: the rest of stdout goes to devnull)."""
    env = dict(os.environ)
    env.update(ICHCT_SALT="ichct-test-salt-subprocess", ICHCT_SALT_FILE=str(tmp_path / "salt"),
               HOME=str(tmp_path / "home"))
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to write_end fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "ichct", "info", str(dicom_folder), "--json"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    for word in ("Traceback", "BrokenPipeError", "Exception ignored"):
        assert word not in proc.stderr, proc.stderr


# ---- -q: errors only, from the libraries too ---------------------------------------------------------------


def test_quiet_silences_library_info(run_cli, tmp_path):
    """MONAI's get_logger gives a logger its own level INFO and handler (bundle scripts, StatsHandler),
    past a level set on "monai": -q still keeps their INFO out, and lets errors through."""
    from monai.apps.utils import get_logger

    from ichct.pipeline.core.logging_setup import configure_logging

    stream = io.StringIO()
    lib = get_logger("monai.ichct_test_quiet", logger_handler=logging.StreamHandler(stream))
    engine = logging.getLogger("ignite.engine.ichct_test_quiet")  # as ignite.utils.setup_logger leaves it
    engine.addHandler(logging.StreamHandler(stream))
    engine.setLevel(logging.INFO)
    try:
        configure_logging(-1)
        lib.info("library info")
        engine.info("engine info")
        lib.error("library error")
        assert "info" not in stream.getvalue() and "library error" in stream.getvalue()
        configure_logging(0)  # any other verbosity lifts it
        lib.info("library info again")
        assert "library info again" in stream.getvalue()
    finally:
        logging.disable(logging.NOTSET)
        lib.handlers.clear()
        engine.handlers.clear()
    # the CLI undoes -q when the command returns (in-process callers keep their logging)
    assert run_cli("convert", tmp_path / "missing", tmp_path / "o.nii.gz", "-q").code == 1
    assert logging.root.manager.disable == logging.NOTSET
