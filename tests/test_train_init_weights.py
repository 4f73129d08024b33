"""``ichct train --init-weights``: a run that starts from a trained model's weights (fine-tuning)."""

from __future__ import annotations

import json

import pytest
import torch

from ichct.errors import InputError
from ichct.pipeline.core.weights import load_checkpoint
from ichct.pipeline.train.engine import train
from ichct.pipeline.train.record import check_split

from test_train_pipeline import CLS_CFG, FOLD, SEG_CFG, cohort, runs, set_test_env  # noqa: F401 (fixtures)

#: a learning rate too small to move any weight: the run's weights stay its initial ones
FROZEN = {"lr": 1e-12, "weight_decay": 0.0}


def _max_difference(a: dict, b: dict) -> float:
    """Largest difference of the learned weights (batch-norm running statistics move at any learning rate)."""
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a
               if a[k].is_floating_point() and ".running_" not in k)


def test_run_starts_from_the_given_runs_weights_and_records_them(runs, cohort, tmp_path):
    source, _ = runs["seg"]
    with pytest.MonkeyPatch.context() as mp:
        set_test_env(mp, cohort["base"] / "env")
        train("seg", cohort["manifest"], FOLD, tmp_path / "tuned", epochs=1, config={**SEG_CFG, **FROZEN}, seed=1,
              init_weights=source)
        fresh = train("seg", cohort["manifest"], FOLD, tmp_path / "fresh", epochs=1, config={**SEG_CFG, **FROZEN},
                      seed=1)
    start = load_checkpoint(source / "best.pt")["model"]
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")["model"]
    assert _max_difference(start, tuned) < 1e-6
    assert fresh["epochs"] == 1 and _max_difference(start, load_checkpoint(tmp_path / "fresh" / "last.pt")["model"]) > 1e-3

    cfg = json.loads((tmp_path / "tuned" / "config.json").read_text())
    init = cfg["init_weights"]
    assert init["path"] == str((source / "best.pt").resolve()) and init["kind"] == "seg"
    assert len(init["sha256"]) == 64 and init["describes"] == f"run {source.name} (best.pt)"
    assert f"--init-weights {source.resolve()}" in cfg["command"]
    record = json.loads((tmp_path / "tuned" / "train_patients.json").read_text())
    assert record["initial_weights"] == json.loads((source / "train_patients.json").read_text())
    assert "init_weights" not in json.loads((tmp_path / "fresh" / "config.json").read_text())


def test_a_plain_state_dict_file_is_accepted(runs, cohort, tmp_path):
    source, _ = runs["cls"]
    weights = tmp_path / "weights.pt"
    torch.save(load_checkpoint(source / "best.pt")["model"], weights)
    with pytest.MonkeyPatch.context() as mp:
        set_test_env(mp, cohort["base"] / "env")
        train("cls", cohort["manifest"], FOLD, tmp_path / "tuned", epochs=1, config={**CLS_CFG, **FROZEN}, seed=0,
              init_weights=weights)
    assert _max_difference(torch.load(weights, weights_only=True),
                           load_checkpoint(tmp_path / "tuned" / "last.pt")["model"]) < 1e-6
    cfg = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert cfg["init_weights"]["describes"] == "file weights.pt"
    assert "initial_weights" not in json.loads((tmp_path / "tuned" / "train_patients.json").read_text())


def test_evaluation_refuses_the_patients_of_the_initial_weights():
    """A fine-tuned model's record nests its initial weights' record; both sets of patients leak."""
    record = {"salt_id": "s", "patient_keys": ["p-new"], "validation": {"patient_keys": ["p-val"]},
              "initial_weights": {"salt_id": "s", "patient_keys": ["p-old"], "validation": {"patient_keys": ["p-new"]}}}
    entries = [{"patient_key": k} for k in ("p-new", "p-old", "p-val", "p-test")]
    check = check_split(record, entries, "s")
    assert check.leaked == {"p-new", "p-old"} and check.validation == {"p-val"}


@pytest.mark.parametrize("case", ["other_kind", "other_network", "missing", "not_weights"])
def test_bad_initial_weights_are_refused_before_anything_is_written(case, runs, cohort, tmp_path):
    source = {"other_kind": runs["cls"][0], "other_network": runs["seg"][0], "missing": tmp_path / "nothing",
              "not_weights": tmp_path / "notes.pt"}[case]
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    cfg = {**SEG_CFG, "network": {"channels": [4, 8], "strides": [2], "num_res_units": 0}} if case == "other_network" \
        else SEG_CFG
    expected = {"other_kind": "is a cls model; a seg run needs seg weights",
                "other_network": "initial weights do not fit the run's network", "missing": "initial weights not found",
                "not_weights": "cannot be read as weights"}[case]
    with pytest.MonkeyPatch.context() as mp, pytest.raises(InputError, match=expected) as err:
        set_test_env(mp, cohort["base"] / "env")
        train("seg", cohort["manifest"], FOLD, tmp_path / "run", epochs=1, config=cfg, init_weights=source)
    assert str(source) in str(err.value)
    assert not (tmp_path / "run").exists()


def test_cli_refuses_init_weights_with_resume(run_cli, runs, tmp_path):
    source, _ = runs["seg"]
    res = run_cli("train", "seg", "--manifest", "m.json", "--fold", "0", "--out", tmp_path / "run", "--resume",
                  "--init-weights", source)
    assert res.code == 2 and "--init-weights starts a new run" in res.err


def test_bundle_of_a_fine_tuned_run_says_where_its_weights_started(runs, cohort, tmp_path):
    """The README of a bundle packaged from a fine-tuned run names the source; a run fine-tuned from a
    bundle records the bundle's name and version and its training record."""
    from ichct.pipeline.bundle.package import package_bundle

    source, _ = runs["seg"]
    with pytest.MonkeyPatch.context() as mp:
        set_test_env(mp, cohort["base"] / "env")
        train("seg", cohort["manifest"], FOLD, tmp_path / "tuned", epochs=1, config=SEG_CFG, seed=0,
              init_weights=source)
        package_bundle(tmp_path / "tuned", tmp_path / "bundle", name="tuned_seg", version="1.2.3")
        readme = (tmp_path / "bundle" / "docs" / "README.md").read_text()
        sha = json.loads((tmp_path / "tuned" / "config.json").read_text())["init_weights"]["sha256"]
        assert f"starting from the weights of run {source.name} (best.pt) (sha256 {sha[:12]})" in readme
        train("seg", cohort["manifest"], FOLD, tmp_path / "again", epochs=1, config=SEG_CFG, seed=0,
              init_weights=tmp_path / "bundle")
    init = json.loads((tmp_path / "again" / "config.json").read_text())["init_weights"]
    assert init["describes"] == "bundle tuned_seg 1.2.3"
    nested = json.loads((tmp_path / "again" / "train_patients.json").read_text())["initial_weights"]
    assert nested["initial_weights"] == json.loads((source / "train_patients.json").read_text())


def _ensemble_file(runs, tmp_path):
    """An ensemble's state dict of two members (the seg run's weights, and the same plus one) in a .pt file."""
    one = load_checkpoint(runs["seg"][0] / "best.pt")["model"]
    second = {k: (v + 1 if v.is_floating_point() else v) for k, v in one.items()}
    path = tmp_path / "ensemble.pt"
    torch.save({**{f"members.0.{k}": v for k, v in one.items()}, **{f"members.1.{k}": v for k, v in second.items()}},
               path)
    return path, second


def test_a_member_of_an_ensemble_starts_a_one_network_run(runs, cohort, tmp_path):
    """``MODEL#N``: member N of an ensemble (the committed segmenter is one) as a one-network run's start."""
    path, second = _ensemble_file(runs, tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        set_test_env(mp, cohort["base"] / "env")
        train("seg", cohort["manifest"], FOLD, tmp_path / "tuned", epochs=1, config={**SEG_CFG, **FROZEN}, seed=1,
              init_weights=f"{path}#2")
    assert _max_difference(second, load_checkpoint(tmp_path / "tuned" / "last.pt")["model"]) < 1e-6
    init = json.loads((tmp_path / "tuned" / "config.json").read_text())["init_weights"]
    assert init["member"] == 2 and init["describes"] == "file ensemble.pt, member 2"
    assert init["path"] == str(path.resolve())


@pytest.mark.parametrize("case", ["whole_ensemble", "no_such_member", "not_an_ensemble"])
def test_ensemble_members_asked_for_wrongly_are_refused(case, runs, cohort, tmp_path):
    path, _ = _ensemble_file(runs, tmp_path)
    source, expected = {"whole_ensemble": (str(path), "an ensemble of 2 networks: start from one of them with "
                                                      r"--init-weights MODEL#1 \(members 1-2\)"),
                        "no_such_member": (f"{path}#3", "the ensemble has members 1-2, not 3"),
                        "not_an_ensemble": (f"{runs['seg'][0]}#1", "one network, not an ensemble")}[case]
    with pytest.MonkeyPatch.context() as mp, pytest.raises(InputError, match=expected):
        set_test_env(mp, cohort["base"] / "env")
        train("seg", cohort["manifest"], FOLD, tmp_path / "run", epochs=1, config=SEG_CFG, init_weights=source)
    assert not (tmp_path / "run").exists()


def test_every_member_of_the_committed_segmenter_fits_its_network():
    """The committed segmenter (0.10.0) is an ensemble: each member loads into one network of its arguments."""
    from ichct.pipeline.models.config import resolve_config
    from ichct.pipeline.models.network_factory import build_network
    from ichct.pipeline.train.init_weights import load_init_weights
    from test_bundle_provenance import REPO

    bundle = REPO / "bundles" / "ich_ct_segmentation"
    members = json.loads((bundle / "models" / "run_config.json").read_text())["config"]["network"]["members"]
    assert len(members) == 3
    for i, args in enumerate(members, start=1):
        init = load_init_weights(f"{bundle}#{i}", "seg")
        init.load_into(build_network("seg", resolve_config("seg", {"network": args})))
        assert init.source["describes"].endswith(f", member {i}")
