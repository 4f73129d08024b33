"""Shared fixtures for the ingest tests: environment isolation, CLI runner, a multi-series study."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# monai imports matplotlib, which would otherwise create a cache folder in the home directory.
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="ichct-tests-mpl-"))

import dicom_factory as fac  # noqa: E402

TEST_SALT = "ichct-test-salt-0123456789abcdef"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """No test may write into the home directory; ichct's logger state is restored after each test.

    ``ichct.pipeline.cli.main`` reconfigures the ``ichct`` logger (stderr handler, no propagation);
    tests that read logs with ``caplog`` need propagation back on.
    """
    cfg = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("ICHCT_SALT", TEST_SALT)
    monkeypatch.setenv("ICHCT_SALT_FILE", str(cfg / "salt"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    monkeypatch.setenv("ICHCT_CACHE_DIR", str(cfg / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    log = logging.getLogger("ichct")
    saved = (list(log.handlers), log.level, log.propagate)
    log.handlers[:] = []
    log.setLevel(logging.NOTSET)
    log.propagate = True
    yield
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]
    assert not (cfg / "salt").exists(), "a salt file was written although ICHCT_SALT is set"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run ``ichct`` in-process through ``ichct.pipeline.cli.main``; returns code, stdout, stderr."""
    from ichct.pipeline.cli import main

    def _run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code=code, out=captured.out, err=captured.err)

    return _run


@dataclass
class StudyFolder:
    """A realistic head-CT study folder holding several series (see :func:`study_folder`)."""

    root: Path
    study: fac.Study
    soft: fac.SeriesSpec
    bone: fac.SeriesSpec
    derived_axial: fac.SeriesSpec
    coronal: fac.SeriesSpec
    mr: fac.SeriesSpec
    scout_uid: str
    dose_uid: str
    junk: dict[str, Path] = field(default_factory=dict)
    soft_paths: list[Path] = field(default_factory=list)


@pytest.fixture(scope="session")
def study_folder(tmp_path_factory) -> StudyFolder:
    """One study: soft-kernel 5 mm axial (the diagnostic series), bone kernel 2.5 mm, a derived
    3 mm axial reformat, a derived coronal reformat, a two-plane localizer, a secondary-capture
    dose report, an MR series, and non-DICOM / truncated files; random names, nested folders.

    The thinner bone and derived series would win on slice thickness alone: the default choice
    must still be the original soft-kernel series. Read-only: tests must not modify it.
    """
    root = tmp_path_factory.mktemp("study") / "PATIENT_EXPORT"
    study = fac.Study(key="multi")
    bone = fac.make_stack(24, 2.5, key="bone", kernel="BONE", description="HEAD 2.5mm BONE", series_number=2)
    soft = fac.make_stack(20, 5.0, key="soft", kernel="STANDARD", description="HEAD 5mm STND", series_number=3,
                          instance_numbers="scrambled")
    derived = fac.make_stack(26, 3.0, key="derived", kernel="STANDARD", description="AX MPR 3mm", series_number=4,
                             image_type=("DERIVED", "SECONDARY", "REFORMATTED"))
    coronal = fac.make_stack(26, 4.0, key="coronal", plane="coronal", kernel="STANDARD", description="COR MPR 4mm",
                             series_number=5, image_type=("DERIVED", "SECONDARY", "REFORMATTED"), center_shift=(3.0, -5.0, 0.0))
    mr = fac.make_stack(12, 5.0, key="mr", modality="MR", sop_class_uid=fac.MR_IMAGE_STORAGE, description="AX T2",
                        series_number=601, image_type=("ORIGINAL", "PRIMARY", "M", "NORM"), intercept=-1024.0)
    soft_paths = fac.write_series(root, soft, study=study, subfolders=3)
    for spec in (bone, derived, coronal, mr):
        fac.write_series(root / spec.key.upper(), spec, study=study)
    scout_paths = fac.write_scout(root / "SCOUT", study=study)
    dose = fac.write_dose_report(root / "misc", study=study)
    junk = fac.write_junk(root / "misc", truncate_from=soft_paths[0])
    import pydicom

    return StudyFolder(root=root, study=study, soft=soft, bone=bone, derived_axial=derived, coronal=coronal, mr=mr,
                       scout_uid=str(pydicom.dcmread(scout_paths[0], stop_before_pixels=True).SeriesInstanceUID),
                       dose_uid=str(pydicom.dcmread(dose, stop_before_pixels=True).SeriesInstanceUID),
                       junk=junk, soft_paths=soft_paths)
