"""Data errors against bugs: ``ichct.errors`` and the CLI's exit codes.

A data error (an :class:`ichct.errors.IchctError`, or a missing or unusable path) exits 1 with its
message, naming the file, and no traceback; anything else is a bug and exits 70
(``EX_SOFTWARE``) with the full traceback and a line asking to report it, whatever ``-v``/``-q``.
"""

from __future__ import annotations

import json

import pytest

import ichct
from ichct.errors import USER_PATH_ERRORS, IchctError, InputError, data_error, read_json
from ichct.pipeline.cli import EXIT_DATA_ERROR, EXIT_INTERNAL_ERROR, build_parser

# ---- the classes ------------------------------------------------------------------------------


def test_input_error_message_and_fields():
    err = InputError("scan.nii.gz", "not a readable NIfTI file")
    assert str(err) == "scan.nii.gz: not a readable NIfTI file"
    assert (err.path, err.reason) == ("scan.nii.gz", "not a readable NIfTI file")
    bare = InputError("at least one --run or --bundle is needed")
    assert (bare.path, bare.reason, str(bare)) == (None, str(bare), "at least one --run or --bundle is needed")
    assert isinstance(err, IchctError) and isinstance(err, ValueError)


def test_every_data_error_class_is_an_ichct_error():
    from ichct.pipeline.evaluate.run import EvaluationOverlapError
    from ichct.pipeline.manifests import ManifestError
    from ichct.transforms.dicom import DicomIngestError
    from ichct.transforms.loading import ImageLoadError

    for err in (DicomIngestError("dcm", "no DICOM image files found"), ManifestError("m.json", ["a", "b"]),
                ImageLoadError("x.nii", "truncated"), EvaluationOverlapError(["k1"], ["runs/seg"])):
        assert isinstance(err, IchctError) and isinstance(err, ValueError), type(err)
    assert str(DicomIngestError("dcm", "no DICOM image files found")) == "dcm: no DICOM image files found"


def test_data_errors_survive_pickling():
    """Errors of a training run started in another process (``train_side_by_side``) come back whole."""
    import pickle

    from ichct.pipeline.evaluate.run import EvaluationOverlapError
    from ichct.pipeline.manifests import ManifestError
    from ichct.transforms.dicom import DicomIngestError
    from ichct.transforms.loading import ImageLoadError

    for err in (InputError("m.json", "fold 7 outside 0..1"), InputError("no model given"),
                DicomIngestError("dcm", "no DICOM image files found"), ImageLoadError("x.nii", "truncated"),
                ManifestError("labels.csv", ["a", "b"], subject="label CSV"), EvaluationOverlapError(["k1"], ["r"])):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert getattr(back, "path", None) == getattr(err, "path", None)


def test_data_error_follows_explicit_causes_only():
    cause = InputError("ct.nii.gz", "truncated")
    try:
        raise RuntimeError("applying transform <LoadCTd>") from cause  # what MONAI does
    except RuntimeError as exc:
        assert data_error(exc) is cause
    try:
        try:
            raise InputError("ct.nii.gz", "truncated")
        except InputError:
            raise KeyError("spacing")  # a bug while handling a data error: still a bug  # noqa: B904
    except KeyError as exc:
        assert data_error(exc) is None
    assert data_error(ValueError("plain")) is None
    for cls in USER_PATH_ERRORS:
        err = cls("missing.json")
        assert data_error(err) is err


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"config\.json: not a valid run config \(JSON\)"):
        read_json(bad, "run config")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"name": "\xe9"}')
    with pytest.raises(InputError, match="latin.json"):
        read_json(latin)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


# ---- data errors: exit 1, the file named, no traceback -----------------------------------------


def _data_error(res, *named):
    assert res.code == EXIT_DATA_ERROR, (res.code, res.err)
    for name in named:
        assert str(name) in res.err, f"stderr does not name {name}: {res.err!r}"
    assert "Traceback" not in res.err and "internal error" not in res.err, res.err


def test_convert_of_an_empty_folder(tmp_path, run_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    _data_error(run_cli("convert", empty, tmp_path / "ct.nii.gz"), empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_manifest_that_is_missing_or_not_json(tmp_path, run_cli):
    missing = tmp_path / "missing.json"
    res = run_cli("manifest", "check", missing)
    _data_error(res, missing)
    notjson = tmp_path / "notjson.json"
    notjson.write_text("this is not JSON\n", encoding="utf-8")
    res = run_cli("manifest", "check", notjson)
    _data_error(res, notjson)
    assert "not valid JSON" in res.out + res.err
    # the same manifest given to training: refused by load_manifest (ManifestError) before anything is written
    out = tmp_path / "run"
    res = run_cli("train", "cls", "--manifest", notjson, "--fold", "0", "--out", out)
    _data_error(res, notjson)
    assert not out.exists()
    res = run_cli("train", "cls", "--manifest", missing, "--fold", "0", "--out", out)
    _data_error(res, missing)


def test_train_with_a_bad_config_key(tmp_path, run_cli):
    manifest = tmp_path / "m.json"
    manifest.write_text("{}", encoding="utf-8")  # the config is refused before the manifest is read
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("learning_rate: 0.1\n", encoding="utf-8")
    out = tmp_path / "run"
    res = run_cli("train", "seg", "--manifest", manifest, "--fold", "0", "--out", out, "--config", cfg)
    _data_error(res, cfg, "'learning_rate'")
    cfg.write_text("lr: [oops\n", encoding="utf-8")
    res = run_cli("train", "seg", "--manifest", manifest, "--fold", "0", "--out", out, "--config", cfg)
    _data_error(res, cfg, "not valid YAML")
    res = run_cli("train", "seg", "--manifest", manifest, "--fold", "0", "--out", out, "--seed", "-1")
    assert res.code == 2 and "--seed" in res.err  # a usage error, as `ichct demo --seed` gives
    assert not out.exists()


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    from predict_helpers import write_run

    return write_run(tmp_path_factory.mktemp("errors") / "cls", "cls")


def test_text_file_given_as_a_nifti(tmp_path, run_cli, cls_run):
    src = tmp_path / "scan.nii.gz"
    src.write_text("not a NIfTI image\n", encoding="utf-8")
    res = run_cli("predict", src, tmp_path / "out", "--run", cls_run)
    _data_error(res, f"{src}: not a readable NIfTI file")
    assert not (tmp_path / "out").exists()


def test_unreadable_run_files(tmp_path, run_cli, cls_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cls_run, run)
    (run / "best.pt").write_text("not a checkpoint", encoding="utf-8")
    res = run_cli("predict", tmp_path / "whatever.nii.gz", tmp_path / "out", "--run", run)
    _data_error(res, run / "best.pt", "not a readable PyTorch checkpoint")
    shutil.copyfile(cls_run / "best.pt", run / "best.pt")
    (run / "thresholds.json").write_text('{"name": "consecutive"}', encoding="utf-8")
    res = run_cli("predict", tmp_path / "whatever.nii.gz", tmp_path / "out", "--run", run)
    _data_error(res, run / "thresholds.json", "not a valid decision rule")
    (run / "config.json").write_text("[1, 2]", encoding="utf-8")
    res = run_cli("predict", tmp_path / "whatever.nii.gz", tmp_path / "out", "--run", run)
    _data_error(res, run / "config.json", "not an ichct run config")


def test_a_data_error_wrapped_by_a_library_is_still_a_data_error(tmp_path, run_cli, monkeypatch):
    import ichct.pipeline.ingest as ingest

    def wrapped(*args, **kwargs):
        try:
            raise InputError(tmp_path / "ct.nii.gz", "truncated gzip")
        except InputError as exc:
            raise RuntimeError("applying transform <LoadCTd>") from exc

    monkeypatch.setattr(ingest, "scan_folder", wrapped)
    _data_error(run_cli("info", tmp_path), f"{tmp_path / 'ct.nii.gz'}: truncated gzip")


@pytest.mark.parametrize("exc", [FileNotFoundError, IsADirectoryError, PermissionError, FileExistsError,
                                 NotADirectoryError])
def test_user_path_os_errors_exit_1(tmp_path, run_cli, monkeypatch, exc):
    import ichct.pipeline.ingest as ingest

    def fail(*args, **kwargs):
        raise exc(f"{tmp_path}/thing: {exc.__name__}")

    monkeypatch.setattr(ingest, "scan_folder", fail)
    _data_error(run_cli("info", tmp_path), f"{tmp_path}/thing")


def test_a_full_disk_is_not_a_bug(tmp_path, run_cli, monkeypatch):
    import errno

    import ichct.pipeline.ingest as ingest

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ct.nii.gz"))

    monkeypatch.setattr(ingest, "scan_folder", full)
    _data_error(run_cli("info", tmp_path), "No space left on device", tmp_path / "ct.nii.gz")


def test_verbose_shows_where_a_data_error_was_raised(tmp_path, run_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("info", "-v", empty)
    assert res.code == 1 and str(empty) in res.err and "Traceback" in res.err, res.err
    assert "internal error" not in res.err


# ---- bugs: exit 70, the traceback and the hint, whatever -v / -q ----------------------------------


def _bug(res, message):
    assert res.code == EXIT_INTERNAL_ERROR == 70, (res.code, res.err)
    assert "Traceback (most recent call last)" in res.err, res.err
    assert message in res.err
    assert f"ichct {ichct.__version__}: internal error (a bug)" in res.err
    assert "Please report it with the command and the traceback above" in res.err
    assert res.err.rstrip().splitlines()[-1].startswith(f"ichct {ichct.__version__}: internal error"), res.err


@pytest.mark.parametrize("flags", [[], ["-v"], ["-q"]])
def test_plain_value_error_inside_info_is_a_bug(tmp_path, run_cli, monkeypatch, flags):
    import ichct.pipeline.ingest as ingest

    def broken_grouping(headers):
        raise ValueError("operands could not be broadcast together")  # e.g. NumPy inside ichct

    monkeypatch.setattr(ingest, "group_series", broken_grouping)
    (tmp_path / "notes.txt").write_text("not DICOM\n", encoding="utf-8")  # a folder with files: it is scanned
    _bug(run_cli("info", *flags, tmp_path), "ValueError: operands could not be broadcast together")


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: device-side assert"), KeyError("spacing_mm"),
                                   TypeError("unsupported operand"), AssertionError("invariant")])
def test_other_exceptions_inside_convert_are_bugs(tmp_path, run_cli, monkeypatch, error):
    import ichct.pipeline.ingest as ingest
    import ichct.transforms.dicom.reader as reader

    def broken_reader(*args, **kwargs):
        raise error

    monkeypatch.setattr(reader, "read_dicom_series", broken_reader)
    monkeypatch.setattr(ingest, "read_dicom_series", broken_reader)  # the name ingest imported
    res = run_cli("convert", tmp_path, tmp_path / "ct.nii.gz")
    _bug(res, type(error).__name__)
    assert not (tmp_path / "ct.nii.gz").exists()


def test_keyboard_interrupt_still_exits_130(tmp_path, run_cli, monkeypatch):
    import ichct.pipeline.ingest as ingest

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest, "scan_folder", interrupted)
    res = run_cli("info", tmp_path)
    assert res.code == 130 and "interrupted" in res.err and "Traceback" not in res.err


def test_help_of_every_command_lists_the_exit_codes():
    parser = build_parser()
    texts = [parser.format_help()]
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    texts.append(sub.format_help())
                    stack.append(sub)
    assert len(texts) > 10
    for text in texts:
        flat = " ".join(text.split())
        assert "1 data error" in flat and "2 usage error" in flat and "70 internal error" in flat, text


def test_cli_module_docstring_documents_the_exit_codes():
    import ichct.pipeline.cli as cli

    for words in ("0: success", "1: data error", "2: usage error", "70: internal error"):
        assert words in cli.__doc__


def test_json_of_a_manifest_check_is_not_a_bug(tmp_path, run_cli):
    """A manifest whose JSON is fine but which is no manifest: problems listed, exit 1."""
    doc = tmp_path / "list.json"
    doc.write_text(json.dumps([1, 2, 3]), encoding="utf-8")
    res = run_cli("manifest", "check", doc)
    assert res.code == 1 and "Traceback" not in res.err, res.err
