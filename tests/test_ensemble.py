"""``ichct ensemble``: trained segmenters (or classifiers) averaged as one model that every later stage takes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from eval_helpers import CLS_CFG, SEG_CFG, eval_setup, set_env
from ichct.errors import InputError


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    """The shared tiny cohort, its fold-0 segmenter, and a second segmenter trained on fold 0's patients."""
    from ichct.pipeline.train.engine import train

    base = eval_setup(tmp_path_factory)
    other = base["base"] / "seg_fold1"
    if not (other / "best.pt").is_file():
        with pytest.MonkeyPatch.context() as mp:
            set_env(mp, base["base"] / "env")
            train("seg", base["manifest"], 1, other, epochs=1, config=SEG_CFG, seed=1)
    other_cls = base["base"] / "cls_seed1"  # fold 0 as the first classifier, so fold 0 validates both
    if not (other_cls / "best.pt").is_file():
        with pytest.MonkeyPatch.context() as mp:
            set_env(mp, base["base"] / "env")
            aux = {**CLS_CFG, "network": {**CLS_CFG["network"], "aux_seg": True, "seg_to_head": True}}
            train("cls", base["manifest"], 0, other_cls, epochs=1, config=aux, seed=1)
    return {**base, "other": other, "other_cls": other_cls}


def test_network_returns_the_log_of_the_members_mean_probabilities():
    from ichct.networks import SegmentationEnsemble, ich_unet3d

    torch.manual_seed(0)
    members = [{"channels": [4, 8], "strides": [2], "num_res_units": 0}, {"channels": [6, 12], "strides": [2]}]
    net = SegmentationEnsemble(3, 2, members).eval()
    x = torch.randn(2, 3, 16, 16, 8)
    singles = [ich_unet3d(3, 2, **kw).eval() for kw in members]
    for single, member in zip(singles, net.members):
        single.load_state_dict(member.state_dict())
    expected = torch.stack([torch.softmax(s(x), 1) for s in singles]).mean(0)
    with torch.no_grad():
        out = net(x)
        scripted = torch.jit.script(net)(x)  # MONAI's ckpt_export
    assert torch.allclose(torch.softmax(out, 1), expected, atol=1e-6)
    assert torch.allclose(out.exp(), expected, atol=1e-6)  # already normalised: log-probabilities
    assert torch.allclose(scripted, out, atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        SegmentationEnsemble(3, 2, members[:1])
    with pytest.raises(ValueError, match="deep_supervision"):
        SegmentationEnsemble(3, 2, [members[0], {**members[1], "deep_supervision": True}])


def test_cli_assembles_a_run_that_postprocess_package_and_evaluate_take(setup, run_cli, tmp_path):
    from ichct.networks import SegmentationEnsemble
    from ichct.pipeline.bundle.package import load_bundle
    from ichct.pipeline.models.inference import load_run

    ens = tmp_path / "ens"
    r = run_cli("ensemble", "--member", setup["seg"], "--member", setup["other"], "--out", ens, "-q")
    assert r.code == 0, r.err
    assert json.loads(r.out)["members"] == ["run seg (best.pt)", "run seg_fold1 (best.pt)"]
    model = load_run(ens)
    assert isinstance(model.network, SegmentationEnsemble) and len(model.network.members) == 2
    first, second = load_run(setup["seg"]), load_run(setup["other"])
    x = torch.randn(1, 3, 32, 32, 16)
    with torch.no_grad():
        mean = (torch.softmax(first.network(x), 1) + torch.softmax(second.network(x), 1)) / 2
        assert torch.allclose(torch.softmax(model.network(x), 1), mean, atol=1e-5)
    config = json.loads((ens / "config.json").read_text())
    assert [m["source"] for m in config["ensemble"]["members"]] == [str(setup["seg"].resolve()),
                                                                    str(setup["other"].resolve())]
    assert config["command"].startswith("ichct ensemble --member")
    assert [m["weights_sha256"] for m in config["ensemble"]["members"]] == [
        hashlib.sha256((run / "best.pt").read_bytes()).hexdigest() for run in (setup["seg"], setup["other"])]
    # the first member's seg_volume rule, no seg_peak threshold chosen for another model's probabilities
    rule = json.loads((ens / "thresholds.json").read_text())
    assert rule["name"] == "seg_volume" and "seg_peak" not in rule["meta"].get("other_rules", {})
    r = run_cli("postprocess", ens, "--manifest", setup["manifest"], "--split", "test", "--values", "0.6", "-q")
    assert r.code == 0, r.err
    assert "seg_peak" in json.loads((ens / "thresholds.json").read_text())["meta"]["other_rules"]
    bundle = tmp_path / "bundle"
    r = run_cli("bundle", "package", ens, bundle, "-q")
    assert r.code == 0, r.err
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["network_def"]["_target_"] == "ichct.networks.SegmentationEnsemble"
    assert isinstance(load_bundle(bundle).network, SegmentationEnsemble)
    readme = (bundle / "docs" / "README.md").read_text()
    assert "Ensemble segmentation (the mean class probabilities of 2 3D U-Nets)" in readme
    assert "1. run seg (best.pt) (fold 0 of" in readme and "2. run seg_fold1 (best.pt) (fold 1 of" in readme
    assert "`ichct ensemble --member MEMBER1 --member MEMBER2 --out RUN`" in readme
    r = run_cli("bundle", "verify", bundle)  # MONAI's verify_net_in_out and a strict weights_only load
    assert r.code == 0, r.out + r.err
    r = run_cli("evaluate", "--bundle", bundle, "--manifest", setup["manifest"], "--split", "test",
                "--out", tmp_path / "eval", "--bootstrap", "20", "-q")
    assert r.code == 0, r.err
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_every_members_training_patients_are_refused(setup, run_cli, tmp_path):
    from ichct.pipeline.manifests import load_manifest
    from ichct.pipeline.train.record import check_split, manifest_salt_id

    ens = tmp_path / "ens"
    assert run_cli("ensemble", "--member", setup["seg"], "--member", setup["other"], "--out", ens, "-q").code == 0
    record = json.loads((ens / "train_patients.json").read_text())
    fold0 = load_manifest(setup["manifest"], "validation", fold=0, check=False)
    salt = manifest_salt_id(setup["manifest"])
    # fold 0 validated the first member; the second member trained on it
    assert not check_split(json.loads((setup["seg"] / "train_patients.json").read_text()), fold0, salt).leaked
    assert check_split(record, fold0, salt).leaked == {str(e["patient_key"]) for e in fold0}
    r = run_cli("postprocess", ens, "--manifest", setup["manifest"], "--split", "validation", "--fold", "0")
    assert r.code == 1 and "trained the model" in r.err


def test_members_that_cannot_be_averaged_are_refused(setup, run_cli, tmp_path):
    from ichct.pipeline.ensemble import assemble_ensemble

    out = tmp_path / "ens"
    with pytest.raises(InputError, match="at least two"):
        assemble_ensemble([setup["seg"]], out)
    r = run_cli("ensemble", "--member", setup["seg"], "--member", setup["cls"], "--out", out)
    assert r.code == 1 and str(setup["cls"]) in r.err and "must be of one kind" in r.err
    coarse = tmp_path / "coarse"
    shutil.copytree(setup["seg"], coarse)
    config = json.loads((coarse / "config.json").read_text())
    config["config"]["spacing_mm"] = [4.0, 4.0, 5.0]
    (coarse / "config.json").write_text(json.dumps(config))
    r = run_cli("ensemble", "--member", setup["seg"], "--member", coarse, "--out", out)
    assert r.code == 1 and str(coarse) in r.err and "preprocesses its input unlike" in r.err
    r = run_cli("ensemble", "--member", setup["seg"], "--member", tmp_path / "nothing", "--out", out)
    assert r.code == 1 and "nothing" in r.err
    assert not out.exists() and not list(tmp_path.glob(".ens.*"))  # nothing written, nothing partial
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = run_cli("ensemble", "--member", setup["seg"], "--member", setup["other"], "--out", out)
    assert r.code == 1 and "--force" in r.err and (out / "keep.txt").is_file()


def test_classifier_network_returns_the_logit_of_the_members_mean_probabilities():
    from ichct.networks import ClassifierEnsemble, SliceSequenceClassifier
    from ichct.pipeline.bundle.network import ChannelFirstClassifierEnsemble

    torch.manual_seed(0)
    members = [{"encoder": "small", "feature_dim": 8, "rnn_hidden": 4},
               {"encoder": "small", "feature_dim": 12, "rnn_hidden": 6, "aux_seg": True, "seg_to_head": True}]
    net = ClassifierEnsemble(3, 6, members).eval()
    singles = [SliceSequenceClassifier(3, 6, **kw).eval() for kw in members]
    for single, member in zip(singles, net.members):
        single.load_state_dict(member.state_dict())
    x = torch.randn(2, 3, 32, 32, 5)
    with torch.no_grad():
        outs = [s(x, lengths=[5, 3]) for s in singles]
        expected = torch.stack([torch.sigmoid(o["logits"] if isinstance(o, dict) else o) for o in outs]).mean(0)
        out = net(x, lengths=[5, 3])
    assert out.shape == (2, 5, 6)
    assert torch.allclose(torch.sigmoid(out)[0], expected[0], atol=1e-6)
    assert torch.allclose(torch.sigmoid(out)[1, :3], expected[1, :3], atol=1e-6)
    assert out[1, 3:].abs().sum() == 0  # padding slices hold 0, as a member's do
    bundle_net = ChannelFirstClassifierEnsemble(3, 6, members).eval()
    bundle_net.load_state_dict(net.state_dict())  # the same keys: models/model.pt loads into either
    with torch.no_grad():
        assert torch.allclose(bundle_net(x[:1]), net(x[:1]).transpose(1, 2), atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        ClassifierEnsemble(3, 6, members[:1])


def test_classifier_ensemble_gets_its_own_thresholds_and_ships_as_a_bundle(setup, run_cli, tmp_path):
    from ichct.networks import ClassifierEnsemble
    from ichct.pipeline.bundle.package import load_bundle
    from ichct.pipeline.models.inference import load_run

    ens = tmp_path / "ens"
    r = run_cli("ensemble", "--member", setup["cls"], "--member", setup["other_cls"], "--out", ens, "-q")
    assert r.code == 0, r.err
    model = load_run(ens)
    assert model.kind == "cls" and isinstance(model.network, ClassifierEnsemble)
    first = json.loads((setup["cls"] / "thresholds.json").read_text())
    rule = json.loads((ens / "thresholds.json").read_text())
    assert rule["threshold"] == first["threshold"] and "ichct postprocess" in rule["meta"]["ensemble"]
    # the ensemble's thresholds, chosen on fold 0 (which validated both members)
    r = run_cli("postprocess", ens, "--manifest", setup["manifest"], "-q")
    assert r.code == 0, r.err
    record = json.loads(r.out)
    stored = json.loads((ens / "thresholds.json").read_text())
    assert record["thresholds"] == stored and "validation fold 0" in stored["meta"]["chosen_on"]
    assert record["previous"]["threshold"] == first["threshold"]
    bundle = tmp_path / "bundle"
    assert run_cli("bundle", "package", ens, bundle, "-q").code == 0
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["network_def"]["_target_"] == "ichct.pipeline.bundle.network.ChannelFirstClassifierEnsemble"
    train_cfg = json.loads((bundle / "configs" / "train.json").read_text())
    assert train_cfg["network_def"]["_target_"] == "ichct.networks.ClassifierEnsemble"
    assert isinstance(load_bundle(bundle).network, ClassifierEnsemble)
    readme = (bundle / "docs" / "README.md").read_text()
    assert "Ensemble of 2 slice-sequence classifiers" in readme and "An ensemble of 2 slice classifiers" in readme
    r = run_cli("bundle", "verify", bundle)  # MONAI's verify_net_in_out and a strict weights_only load
    assert r.code == 0, r.out + r.err
    exported = tmp_path / "exported"
    r = run_cli("bundle", "export", bundle, exported, "-q")
    assert r.code == 0, r.err
    r = run_cli("bundle", "verify", exported)
    assert r.code == 0, r.out + r.err
    ev = tmp_path / "eval"
    r = run_cli("evaluate", "--bundle", bundle, "--manifest", setup["manifest"], "--split", "test", "--out", ev,
                "--bootstrap", "20", "-q")
    assert r.code == 0, r.err
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["model"]["rules"]["consecutive"]["threshold"] == stored["threshold"]
    # MONAI's bundle runner fine-tunes the members together on their mean (configs/train.json)
    before = (bundle / "models" / "model.pt").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
                           "--epochs", "1", "--manifest", str(setup["manifest"])], cwd=bundle, capture_output=True,
                          text=True, env={**os.environ, "MPLBACKEND": "Agg"}, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (bundle / "models" / "model.pt").read_bytes() != before
    assert isinstance(load_bundle(bundle).network, ClassifierEnsemble)
