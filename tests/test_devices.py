"""A stage asked for a device this machine lacks stops before any work, with a message naming it.

CUDA is switched off with ``monkeypatch`` so that these run the same on machines with and without
a GPU.
"""

from __future__ import annotations

import pytest
import torch

import predict_helpers as ph
from ichct.pipeline.core.devices import torch_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_and_bad_names():
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device(torch.device("cpu")).type == "cpu"
    for bad in ("gpu", "mps", "cuda:x"):
        with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N"):
            torch_device(bad)


def test_cuda_without_cuda_is_refused(no_cuda):
    with pytest.raises(ValueError, match="CUDA is not available on this machine.*use --device cpu"):
        torch_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        torch_device("cuda:0")


def test_cuda_index_beyond_the_machines_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert torch_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        torch_device("cuda:1")


def test_cli_stages_refuse_cuda_without_writing(no_cuda, run_cli, tmp_path):
    runs = [ph.write_run(tmp_path / "runs" / "seg", "seg"), ph.write_run(tmp_path / "runs" / "cls", "cls")]
    study = tmp_path / "study"
    ph.write_study(study, key="dev")
    out = tmp_path / "out"
    r = run_cli("predict", study, out, "--run", runs[0], "--run", runs[1], "--device", "cuda")
    assert r.code == 1 and "CUDA is not available" in r.err and "Traceback" not in r.err
    assert not out.exists()
    r = run_cli("demo", "--quick", "--out", tmp_path / "demo", "--device", "cuda")
    assert r.code == 1 and "CUDA is not available" in r.err
    assert not (tmp_path / "demo").exists()
    r = run_cli("evaluate", "--run", runs[0], "--manifest", tmp_path / "m.json", "--out", tmp_path / "ev",
                "--device", "cuda")
    assert r.code == 1 and "CUDA is not available" in r.err
    assert not (tmp_path / "ev").exists()


def test_train_refuses_cuda_before_reading_anything(no_cuda, tmp_path):
    from ichct.pipeline.train.engine import train

    with pytest.raises(ValueError, match="CUDA is not available"):
        train("seg", tmp_path / "missing.json", 0, tmp_path / "run", device="cuda")
    assert not (tmp_path / "run").exists()
