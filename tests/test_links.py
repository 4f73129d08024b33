"""The link folders of a manifest build: folders of file links are queued, then made several at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ichct.pipeline.manifests.links import Linker
from ichct.pipeline.manifests.model import Record


def _series(folder: Path, uid: str, names: list[str]) -> Record:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name in names:
        (folder / name).write_bytes(uid.encode())
        files.append(folder / name)
    return Record(image=folder, patient_id="p", study_uid="st", series_uid=uid, ct_labels={}, kind="dicom",
                  link_files=files)


def test_folder_links_are_queued_then_made_by_threads(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    records = [_series(flat, f"1.2.{i}", [f"s{i}_{j}.dcm" for j in range(5)]) for i in range(12)]
    linker = Linker(tmp_path / "m.links")
    images = [linker.link(rec, f"key{i % 3}")[0] for i, rec in enumerate(records)]
    staged = [linker.staged(image) for image in images]
    assert not any(p.exists() for p in staged)  # queued, not made yet

    assert linker.make_folder_links(threads=3) == 12
    for rec, folder in zip(records, staged):
        links = sorted(folder.iterdir())
        assert [p.name for p in links] == sorted(f.name for f in rec.link_files)
        assert all(p.is_symlink() and Path(os.readlink(p)) == flat / p.name for p in links)
    assert linker.make_folder_links() == 0  # nothing left queued


def test_one_folder_queued_twice_keeps_every_file_once(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    first = _series(flat, "1.2.3", ["a.dcm", "b.dcm"])
    second = _series(tmp_path / "other", "1.2.3", ["a.dcm", "c.dcm"])  # same series UID and key: same folder
    linker = Linker(tmp_path / "m.links")
    image = linker.link(first, "k")[0]
    assert linker.link(second, "k")[0] == image
    linker.make_folder_links()
    folder = linker.staged(image)
    targets = {p.name: os.readlink(p) for p in folder.iterdir()}
    assert targets == {"a.dcm": str(tmp_path / "other" / "a.dcm"), "b.dcm": str(flat / "b.dcm"),
                       "c.dcm": str(tmp_path / "other" / "c.dcm")}


def test_a_failing_folder_raises_from_its_thread(tmp_path: Path) -> None:
    rec = _series(tmp_path / "flat", "1.2.3", ["a.dcm"])
    linker = Linker(tmp_path / "m.links")
    folder = linker.staged(linker.link(rec, "k")[0])
    folder.mkdir(parents=True)
    (folder / "a.dcm").write_text("a real file")  # never replaced by a link
    with pytest.raises(FileExistsError, match="not a link"):
        linker.make_folder_links()
