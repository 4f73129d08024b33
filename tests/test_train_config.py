"""Training config: defaults, JSON/YAML overrides, validation."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from ichct.pipeline.models.config import (
    CHECKS,
    DEFAULTS,
    KINDS,
    SAVED_RUN_FALLBACKS,
    config_windows,
    input_channels,
    resolve_config,
    resolve_saved_config,
    saved_run_config,
    validate_config,
)

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_epochs_override():
    seg = resolve_config("seg")
    assert seg == DEFAULTS["seg"] and seg["num_classes"] == 2 and seg["patch"] == [64, 64, 16]
    assert seg["max_minutes"] is None and seg["loss"] == "dice_ce" and seg["spacing_mm"] == [2.0, 2.0, 3.0]
    default_epochs = DEFAULTS["cls"]["epochs"]
    cls = resolve_config("cls", epochs=3)
    assert cls["epochs"] == 3 and cls["network"]["encoder"] == "small" and default_epochs != 3
    assert cls["class_weights"][0] == 2.0 and DEFAULTS["cls"]["epochs"] == default_epochs  # not mutated
    assert cls["crop"] == "brain" and cls["network"]["aux_seg"] and cls["network"]["neighbour_slices"]
    assert resolve_config("cls", {"max_minutes": 5})["max_minutes"] == 5  # defaults untouched


def test_json_and_yaml_merge(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"lr": 0.01, "augment": {"flip_prob": 0.0}, "network": {"channels": [8, 16]}}))
    cfg = resolve_config("seg", j)
    assert cfg["lr"] == 0.01 and cfg["augment"]["flip_prob"] == 0.0
    assert cfg["augment"]["noise_prob"] == DEFAULTS["seg"]["augment"]["noise_prob"]  # deep merge
    assert cfg["network"]["channels"] == [8, 16]
    assert cfg["network"]["num_res_units"] == DEFAULTS["seg"]["network"]["num_res_units"]  # other kwargs kept
    y = tmp_path / "c.yaml"
    y.write_text("num_classes: 6\nclass_weights: [1, 2, 2, 2, 2, 2]\n")
    assert resolve_config("seg", y)["num_classes"] == 6


@pytest.mark.parametrize("kind", KINDS)
def test_saved_run_config_keeps_what_an_old_run_did(kind):
    """A saved run without a key reads it at the value it was trained with: the fallback where that
    differs from today's default, else the default; saved values always win; complete configs come
    back equal (in their key order); new runs never see the fallbacks."""
    assert set(SAVED_RUN_FALLBACKS[kind]) <= set(DEFAULTS[kind])
    assert all(DEFAULTS[kind][k] != v for k, v in SAVED_RUN_FALLBACKS[kind].items())  # else it is no fallback
    complete = resolve_config(kind)
    assert saved_run_config(kind, complete) == complete and list(saved_run_config(kind, complete)) == list(complete)
    old = {k: v for k, v in complete.items() if k not in SAVED_RUN_FALLBACKS[kind] and k != "lr"}
    migrated = saved_run_config(kind, old)
    assert migrated == {**complete, **SAVED_RUN_FALLBACKS[kind]} and migrated["lr"] == DEFAULTS[kind]["lr"]
    assert saved_run_config(kind, migrated) == migrated
    assert resolve_saved_config(kind, old) == validate_config(kind, migrated)  # --resume reads the same
    assert resolve_config(kind) == DEFAULTS[kind]


def test_old_runs_infer_as_they_did():
    """0.1.0 inferred with a sliding-window overlap of 0.25 and kept every blood component; a run
    config without those keys (or without the classifier's 4th channel and crop) still does."""
    seg = saved_run_config("seg", {"patch": [64, 64, 16]})
    assert seg["sw_overlap"] == 0.25 and seg["min_component_ml"] == 0.0 and seg["best_window"] == 1
    cls = saved_run_config("cls", {"in_plane": [80, 80]})
    assert cls["stripped_brain_channel"] is False and cls["crop"] is None
    assert input_channels("cls", {"windows": None}) == 3 and input_channels("cls", resolve_config("cls")) == 4
    assert list(config_windows({"windows": None})) == ["brain", "subdural", "soft_tissue"]


def test_fallbacks_of_saved_runs_are_defined_once():
    """No module guesses a fallback of its own for a key of SAVED_RUN_FALLBACKS (``cfg.get("sw_overlap",
    0.25)``): code reads the config that saved_run_config completed."""
    import ast

    keys = set(SAVED_RUN_FALLBACKS["seg"]) | set(SAVED_RUN_FALLBACKS["cls"])
    found = []
    for path in sorted((REPO / "pipeline").rglob("*.py")) + sorted((REPO / "transforms").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys
                    and ("cfg" in ast.unparse(node.func.value) or "config" in ast.unparse(node.func.value))):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


@pytest.mark.parametrize("over", [{"learning_rate": 1}, {"augment": {"flip": 1}}, {"num_classes": 3},
                                  {"epochs": 0}, {"patch": [96, 96]},
                                  {"max_minutes": 0}, {"max_minutes": -1}, {"loss": "dice"},
                                  {"lr": "abc"}, {"lr": 0}, {"epochs": 2.5}, {"epochs": True}, {"batch_size": "two"},
                                  {"cache_rate": 1.5}, {"num_workers": -1}, {"patch": [64, 64, "x"]},
                                  {"spacing_mm": [2, 2, 0]}, {"augment": {"flip_prob": 2}}, {"augment": 1},
                                  {"network": [16, 32]}, {"dice_batch": "yes"}, {"crop": "skull"},
                                  {"windows": {"brain": [40, 0]}}, {"class_weights": [1, 2, 3]},
                                  {"sw_overlap": 1.0}, {"min_component_ml": None}])
def test_bad_overrides_refused(over):
    with pytest.raises(ValueError):
        resolve_config("seg", over)


def test_bad_kind_and_cls_checks():
    with pytest.raises(ValueError):
        resolve_config("det")
    with pytest.raises(ValueError):
        resolve_config("cls", {"pos_weight": [1.0, 2.0]})
    assert resolve_config("cls", {"pos_weight": [1.0] * 6})["pos_weight"] == [1.0] * 6


def test_every_key_has_a_check():
    for kind in KINDS:
        assert set(CHECKS[kind]) == set(DEFAULTS[kind]), kind
        assert resolve_config(kind) == DEFAULTS[kind]  # the defaults pass their own checks unchanged


@pytest.mark.parametrize(("over", "key", "words"), [
    ({"lr": "abc"}, "lr", ("number > 0", "'abc'")),
    ({"epochs": 2.5}, "epochs", ("integer >= 1", "2.5")),
    ({"augment": {"noise_std": -1}}, "augment.noise_std", (">= 0",)),
    ({"patch": [64, 64, "x"]}, "patch[2]", ("integer",)),
    ({"lrr": 0.1}, "lrr", ("unknown", "did you mean 'lr'")),
])
def test_bad_value_names_the_file_and_the_key(tmp_path, over, key, words):
    path = tmp_path / "over.json"
    path.write_text(json.dumps(over))
    with pytest.raises(ValueError) as info:
        resolve_config("seg", path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and f"config key {key!r}" in msg, msg
    assert all(w in msg for w in words), msg


def test_values_are_coerced_to_their_type(tmp_path):
    path = tmp_path / "over.yaml"
    path.write_text("lr: 1e-3\nepochs: 3.0\nbatch_size: '4'\nmax_minutes: 2\npatch: [32.0, 32, 8]\n")
    cfg = resolve_config("seg", path)  # YAML reads 1e-3 as a string
    assert cfg["lr"] == 0.001 and isinstance(cfg["lr"], float)
    assert cfg["epochs"] == 3 and isinstance(cfg["epochs"], int) and cfg["batch_size"] == 4
    assert cfg["max_minutes"] == 2.0 and isinstance(cfg["max_minutes"], float)
    assert cfg["patch"] == [32, 32, 8] and all(isinstance(v, int) for v in cfg["patch"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        resolve_config("seg", bad)


# ---- `ichct train` with a bad config: refused before anything is written ------------------------

CLS_CFG = {"in_plane": [32, 32], "network": {"feature_dim": 16, "rnn_hidden": 8}}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """6 synthetic patients (64 x 64 x 12), 2 folds and a test set."""
    from conftest import TEST_SALT

    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    base = tmp_path_factory.mktemp("cfg_cohort")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ICHCT_SALT", TEST_SALT)
        mp.setenv("ICHCT_SALT_FILE", str(base / "env" / "salt"))
        mp.setenv("ICHCT_CACHE_DIR", str(base / "env" / "cache"))
        cfg = SynthConfig(n_patients=6, seed=5, matrix=64, slices=12, follow_up_fraction=0.0,
                          bone_fraction=0.0, scout_fraction=0.0, tilt_fraction=0.0)
        generate_cohort(cfg, base / "cohort", workers=1)
        build_manifest("synth", base / "cohort", base / "m.json", folds=2, test_fraction=0.25, seed=0, cache=False)
    return base / "m.json"


def test_cli_bad_config_writes_no_run_folder(tmp_path, run_cli, manifest):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"lr": "abc"}))
    out = tmp_path / "runs" / "bad"
    r = run_cli("train", "seg", "--manifest", manifest, "--fold", "0", "--out", out, "--epochs", "1", "--config", cfg)
    assert r.code == 1
    assert str(cfg) in r.err and "'lr'" in r.err and "'abc'" in r.err, r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "runs").exists()
    net = tmp_path / "net.json"
    net.write_text(json.dumps({"network": {"chanels": [8, 16]}}))  # open keyword arguments: checked by building
    r = run_cli("train", "cls", "--manifest", manifest, "--fold", "0", "--out", out, "--config", net)
    assert r.code == 1 and str(net) in r.err and "'network'" in r.err and "chanels" in r.err, r.err
    assert not (tmp_path / "runs").exists()


def test_failure_before_first_checkpoint_leaves_nothing(tmp_path, manifest, monkeypatch):
    """A run that fails after config.json is written, before last.pt: its folder (or its files in a
    folder that existed) is removed. config.json's command trains the run again: every flag is in it."""
    import ichct.pipeline.models.data as train_data
    from ichct.pipeline.cli import build_parser
    from ichct.pipeline.train.engine import train

    seen = {}

    def broken_loaders(kind, cfg, train_entries, val_entries):
        out = Path(seen["out"])
        seen["files"] = sorted(p.name for p in out.iterdir())
        seen["config"] = json.loads((out / "config.json").read_text())
        raise RuntimeError("loader broke")

    monkeypatch.setattr(train_data, "make_loaders", broken_loaders)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CLS_CFG))
    seen["out"] = out = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError, match="loader broke"):
        train("cls", manifest, 0, out, epochs=3, config=cfg, max_minutes=1.5, seed=7)
    assert seen["files"] == ["config.json", "train_patients.json"]
    assert not (tmp_path / "new").exists()

    argv = shlex.split(seen["config"]["command"])
    assert argv[:3] == ["ichct", "train", "cls"]
    args = build_parser().parse_args(argv[1:])
    assert (args.kind, args.fold, args.epochs, args.max_minutes, args.seed, args.device, args.amp) == \
        ("cls", 0, 3, 1.5, 7, "cpu", False)
    assert Path(args.config) == cfg.resolve() and Path(args.manifest) == Path(manifest).resolve()
    assert Path(args.out) == out

    seen["out"] = existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="loader broke"):
        train("cls", manifest, 0, existing, epochs=1, config=CLS_CFG)
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
    assert "--config" not in seen["config"]["command"]  # a mapping config is only in config.json


def test_cli_train_keeps_stdout_for_the_summary(tmp_path, run_cli, manifest):
    """MONAI's StatsHandler loggers log through ichct's stderr handler (with -v): stdout holds only the
    JSON summary, and -q leaves stderr empty."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CLS_CFG))
    r = run_cli("train", "cls", "--manifest", manifest, "--fold", "0", "--out", tmp_path / "run", "--epochs", "1",
                "--config", cfg, "-v")
    assert r.code == 0, r.err
    assert json.loads(r.out)["epochs"] == 1 and len(r.out.splitlines()) == 1, r.out
    assert "epoch 1/1: loss" in r.err and "Epoch[1] Metrics" in r.err, r.err
    r = run_cli("train", "cls", "--manifest", manifest, "--fold", "0", "--out", tmp_path / "run_q", "--epochs", "1",
                "--config", cfg, "-q")
    assert r.code == 0 and json.loads(r.out)["epochs"] == 1 and len(r.out.splitlines()) == 1, r.out
    assert r.err == "", r.err


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_validation_mirrors_when_the_config_asks(tmp_path, run_cli, manifest, monkeypatch, kind):
    """With ``tta_mirror_axes`` the validation that chooses the thresholds averages mirrored passes,
    as inference then does; the run records the key."""
    from ichct.networks.mirror import MirrorEnsembleInferer

    calls = []
    original = MirrorEnsembleInferer.__call__
    monkeypatch.setattr(MirrorEnsembleInferer, "__call__",
                        lambda self, *a, **k: calls.append(self.mirror_axes) or original(self, *a, **k))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**(CLS_CFG if kind == "cls" else {"patch": [32, 32, 8]}), "tta_mirror_axes": [0]}))
    run = tmp_path / "run"
    r = run_cli("train", kind, "--manifest", manifest, "--fold", "0", "--out", run, "--epochs", "1", "--config", cfg,
                "-q")
    assert r.code == 0, r.err
    assert calls and set(map(tuple, calls)) == {(0,)}  # every validation study, mirrored
    assert json.loads((run / "config.json").read_text())["config"]["tta_mirror_axes"] == [0]
    assert (run / "thresholds.json").is_file()
