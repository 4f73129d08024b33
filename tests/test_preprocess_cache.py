"""The persistent preprocessed cache (``ichct preprocess``, ``ichct train --cache-dir``) and its faults.

One 2-worker LocalCluster serves the module (the CLI reaches it through ``DASK_SCHEDULER_ADDRESS``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from ichct.pipeline.core.cluster import SCHEDULER_ENV, ClusterSpec, dask_client
from ichct.pipeline.core.study_tasks import read_record, run_study_tasks
from ichct.pipeline.preprocess import cache as cache_module
from ichct.pipeline.preprocess.cache import DATA_NAME, build_entry, ensure_entry, load_entry
from ichct.pipeline.preprocess.plans import cache_items, cache_plans
from ichct.pipeline.preprocess.run import preprocess, preprocess_tasks

SEG_CFG = {"spacing_mm": [3.0, 3.0, 5.0], "patch": [16, 16, 8], "samples_per_volume": 1, "batch_size": 1,
           "network": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}
CLS_CFG = {"in_plane": [24, 24], "network": {"feature_dim": 16, "rnn_hidden": 8}}
N_STUDIES = 20


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """20 small synthetic patients (32 x 32 x 8), a manifest with 2 folds and a test set (``all``: 20)."""
    from ichct.pipeline.manifests import build_manifest
    from ichct.pipeline.synth import SynthConfig, generate_cohort

    base = tmp_path_factory.mktemp("pre_cohort")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ICHCT_SALT", "ichct-test-salt-0123456789abcdef")
        mp.setenv("ICHCT_CACHE_DIR", str(base / "hash_cache"))
        cfg = SynthConfig(n_patients=N_STUDIES, seed=5, matrix=32, slices=8, follow_up_fraction=0.0,
                          bone_fraction=0.0, scout_fraction=0.0, tilt_fraction=0.0)
        generate_cohort(cfg, base / "data" / "cohort", workers=1)
        build_manifest("synth", base / "data" / "cohort", base / "data" / "m.json", folds=2, test_fraction=0.25,
                       seed=0, cache=False)
    return base / "data"


@pytest.fixture(scope="module")
def client():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fault-injecting work functions below
    with dask_client(ClusterSpec(workers=2)) as c:
        yield c


def _entries(manifest: Path, split: str = "all") -> list[dict]:
    from ichct.pipeline.manifests import load_manifest

    return load_manifest(manifest, split, check=False)


def _copy(cohort: Path, dst: Path) -> Path:
    shutil.copytree(cohort, dst)
    return dst / "m.json"


def _entry_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith("."))


def _log_build(task, staging: Path) -> dict:
    """Work function: build the entry and log that it did (one line per build) beside the cache."""
    summary = build_entry(task, staging)
    with open(staging.parent.parent / "builds.log", "a", encoding="utf-8") as fh:
        fh.write(task.name + "\n")
    return summary


def _kill_worker_once(task, staging: Path) -> dict:
    """Work function: the first study's first attempt kills its own worker process."""
    marker = staging.parent.parent / "killed.marker"
    if task.name == _victim_name(staging) and not marker.exists():
        marker.write_text(task.name)
        os._exit(1)
    return _log_build(task, staging)


def _victim_name(staging: Path) -> str:
    return (staging.parent.parent / "victim.txt").read_text().strip()


def _no_space(task, staging: Path) -> dict:
    """Work function: half the entry is written, then the disk is full."""
    (staging / DATA_NAME).write_bytes(b"\0" * 100)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(staging / DATA_NAME))


# --------------------------------------------------------------------------------------------
# Dask runs: preprocess, rerun, kill, corrupt study, full disk, worker count
# --------------------------------------------------------------------------------------------


def test_preprocess_builds_every_entry_and_a_rerun_skips_them(cohort, client, tmp_path):
    report = preprocess(cohort / "m.json", "seg", tmp_path / "cache", split="all", config=SEG_CFG, client=client)
    assert report.counts() == {"done": N_STUDIES, "skipped": 0, "failed": 0}
    (folder,) = report.folders
    entries = _entry_folders(Path(folder))
    assert len(entries) == N_STUDIES and not list(Path(folder).glob(".*.partial"))
    loaded = load_entry(entries[0])
    # the image formation is randomised on HU after the crop: the cache holds the cropped HU volume and its affine
    assert loaded["image"].shape[0] == 1 and loaded["label"].shape[1:] == loaded["image"].shape[1:]
    assert loaded["image"].pixdim.tolist() == pytest.approx([3.0, 3.0, 5.0])
    again = preprocess(cohort / "m.json", "seg", tmp_path / "cache", split="all", config=SEG_CFG, client=client)
    assert again.counts() == {"done": 0, "skipped": N_STUDIES, "failed": 0}
    other = preprocess(cohort / "m.json", "seg", tmp_path / "cache", split="all", config={**SEG_CFG, "crop": "head"},
                       client=client)  # another preprocessing config: its own folder, built anew
    assert other.folders != report.folders and other.counts()["done"] == N_STUDIES


def test_a_worker_killed_mid_study_loses_and_duplicates_nothing(cohort, client, tmp_path):
    from ichct.pipeline.models.config import resolve_config

    cfg = resolve_config("seg", SEG_CFG)
    tasks = [task for _, task in preprocess_tasks("seg", cfg, _entries(cohort / "m.json"))][:6]
    plan = cache_plans("seg", cfg)[True]
    root = tmp_path / "cache" / "entries"
    root.mkdir(parents=True)
    (tmp_path / "cache" / "victim.txt").write_text(tasks[2].name)
    outcomes = run_study_tasks(_kill_worker_once, tasks, out_root=root, config=plan.config, client=client)
    assert (tmp_path / "cache" / "killed.marker").exists()  # a worker did die
    # a study finished on the killed worker is run again by Dask, finds its entry and skips it
    assert all(o.ok for o in outcomes), outcomes
    built = (tmp_path / "cache" / "builds.log").read_text().split()
    assert sorted(built) == sorted(t.name for t in tasks)  # every study exactly once
    assert [p.name for p in _entry_folders(root)] == sorted(t.name for t in tasks)
    assert all(load_entry(root / t.name) is not None for t in tasks)


def test_a_corrupt_study_is_recorded_and_the_others_finish(cohort, client, tmp_path, run_cli, monkeypatch):
    manifest = _copy(cohort, tmp_path / "data")
    bad = Path(_entries(manifest)[7]["label"])
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # a truncated label file
    monkeypatch.setenv(SCHEDULER_ENV, client.scheduler.address)
    args = ("preprocess", "--manifest", manifest, "--kind", "seg", "--out", tmp_path / "cache", "--split", "all",
            "--config", _write_json(tmp_path / "seg.json", SEG_CFG))
    r = run_cli(*args)
    assert r.code == 1, r.err
    summary = json.loads(r.out)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (N_STUDIES - 1, 0, 1)
    (failed,) = summary["failed_studies"]
    assert bad.name in failed["reason"] and failed["study"] in r.err
    folder = Path(summary["cache_folders"][0])
    assert failed["study"] not in [p.name for p in _entry_folders(folder)] and len(_entry_folders(folder)) == 19
    again = json.loads(run_cli(*args).out)
    assert (again["done"], again["skipped"], again["failed"]) == (0, N_STUDIES - 1, 1)


def test_a_full_disk_fails_the_study_clearly_and_leaves_no_half_entry(cohort, client, tmp_path):
    from ichct.pipeline.models.config import resolve_config

    cfg = resolve_config("seg", SEG_CFG)
    tasks = [task for _, task in preprocess_tasks("seg", cfg, _entries(cohort / "m.json"))][:2]
    root = tmp_path / "cache"
    outcomes = run_study_tasks(_no_space, tasks, out_root=root, config=cache_plans("seg", cfg)[True].config,
                               client=client)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("No space left on device" in o.reason for o in outcomes)
    assert list(root.iterdir()) == []  # neither an entry nor a staging folder


def test_the_cache_does_not_depend_on_the_worker_count(cohort, client, tmp_path, run_cli, monkeypatch):
    two = preprocess(cohort / "m.json", "cls", tmp_path / "two", split="training", config=CLS_CFG, client=client)
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    r = run_cli("preprocess", "--manifest", cohort / "m.json", "--kind", "cls", "--out", tmp_path / "one",
                "--config", _write_json(tmp_path / "cls.json", CLS_CFG), "--workers", "1")
    assert r.code == 0, r.err
    one = json.loads(r.out)
    assert [Path(f).name for f in one["cache_folders"]] == [Path(f).name for f in two.folders]
    for f_one, f_two in zip(one["cache_folders"], two.folders):
        names = [p.name for p in _entry_folders(Path(f_two))]
        assert names == [p.name for p in _entry_folders(Path(f_one))] and names
        for name in names:
            assert (Path(f_one) / name / DATA_NAME).read_bytes() == (Path(f_two) / name / DATA_NAME).read_bytes()


# --------------------------------------------------------------------------------------------
# Training from the cache: truncated entries, full disk, same data as RAM
# --------------------------------------------------------------------------------------------


def _disk_loaders(kind: str, cfg_over: dict, manifest: Path, cache_dir: Path, seed: int = 0):
    from monai.utils import set_determinism

    from ichct.pipeline.models.config import resolve_config
    from ichct.pipeline.models.data import make_loaders

    entries = _entries(manifest, "training")
    cfg = resolve_config(kind, {**cfg_over, "cache": "disk", "cache_dir": str(cache_dir)} if cache_dir else cfg_over)
    set_determinism(seed=seed)
    return make_loaders(kind, cfg, entries[:4], entries[4:6])


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return bool((a == b).all()) if hasattr(a, "all") else a == b


@pytest.mark.parametrize("kind", ["seg", "cls"])
def test_training_items_from_disk_equal_those_from_ram(kind, cohort, tmp_path):
    over = SEG_CFG if kind == "seg" else CLS_CFG
    ram_ds, _, ram_val, _ = _disk_loaders(kind, over, cohort / "m.json", None)
    disk_ds, _, disk_val, _ = _disk_loaders(kind, over, cohort / "m.json", tmp_path / "cache")
    assert type(disk_ds).__name__ == "DiskCacheDataset" and len(disk_ds) == len(ram_ds) == 4
    for i in range(2):  # the same random augmentations of the same cached data
        assert _same(ram_ds[i], disk_ds[i])
    assert _same(ram_val.dataset[0], disk_val.dataset[0])  # cls: the training entry without its label
    assert "label" not in disk_val.dataset[0] or kind == "seg"


def test_a_truncated_or_corrupt_entry_is_rebuilt_never_fed(cohort, tmp_path):
    from ichct.pipeline.models.config import resolve_config

    cfg = resolve_config("seg", SEG_CFG)
    entry = _entries(cohort / "m.json")[0]
    (item,) = cache_items("seg", cfg, [entry])
    plan = cache_plans("seg", cfg)[True]
    good = ensure_entry("s0", item, plan, tmp_path)
    data = plan.folder(tmp_path) / "s0" / DATA_NAME
    whole = data.read_bytes()
    for damaged in (whole[: len(whole) // 2], whole[:-64] + b"\x7f" * 64):  # truncated; same size, other bytes
        data.write_bytes(damaged)
        assert load_entry(data.parent) is None
        assert _same(ensure_entry("s0", item, plan, tmp_path), good)
        assert data.read_bytes() == whole and read_record(data.parent) is not None


def test_a_full_disk_while_training_is_a_clear_error(cohort, tmp_path, monkeypatch):
    from ichct.errors import InputError

    def full(path, data):
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cache_module, "write_entry_file", full)
    train_ds, *_ = _disk_loaders("seg", SEG_CFG, cohort / "m.json", tmp_path / "cache")
    with pytest.raises(InputError, match="No space left on device"):
        train_ds[0]
    folder = train_ds.plans[True].folder(tmp_path / "cache")
    assert not folder.exists() or list(folder.iterdir()) == []  # neither an entry nor a staging folder


def test_disk_cache_config_needs_a_folder():
    from ichct.errors import InputError
    from ichct.pipeline.models.config import resolve_config

    with pytest.raises(InputError, match="cache_dir"):
        resolve_config("seg", {"cache": "disk"})
    with pytest.raises(InputError, match="cache"):
        resolve_config("seg", {"cache": "ssd"})


def test_train_cli_streams_from_the_cache(cohort, tmp_path, run_cli):
    cfg = _write_json(tmp_path / "seg.json", {**SEG_CFG, "num_workers": 1})
    r = run_cli("train", "seg", "--manifest", cohort / "m.json", "--fold", "0", "--out", tmp_path / "run", "--epochs",
                "1", "--config", cfg, "--cache-dir", tmp_path / "cache", "--tracking", "none", "-q")
    assert r.code == 0, r.err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["cache"] == "disk" and saved["cache_dir"] == str((tmp_path / "cache").resolve())
    (folder,) = (tmp_path / "cache").iterdir()
    assert len(_entry_folders(folder)) == len(_entries(cohort / "m.json", "training"))  # built on demand
    r = run_cli("bundle", "package", tmp_path / "run", tmp_path / "bundle", "-q")
    assert r.code == 0, r.err
    packaged = json.loads((tmp_path / "bundle" / "models" / "run_config.json").read_text())["config"]
    assert "cache_dir" not in packaged and "cache" not in packaged, "a machine-local cache path left in the bundle"
    assert str(tmp_path / "cache") not in (tmp_path / "bundle" / "models" / "run_config.json").read_text()


def _write_json(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path
