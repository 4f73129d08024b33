"""Synthetic head-CT cohort generator (the embedded default data).

``ichct synth OUT`` writes real CT DICOM series of procedurally generated heads (anatomy,
hemorrhages of the five RSNA subtypes, mimics, scanner variety), voxel label maps on the grid
``ichct convert`` produces, RSNA-style slice labels and a ``cohort.json`` manifest, so that models
can be trained and evaluated end to end with no downloaded data.

The *default cohort* (:data:`.config.DEFAULT_COHORT`, ``ichct synth --default-cohort``, written to
``data/synth_default/``) is the one the demo and the committed classifier train on; its split is
committed as ``data_manifests/synth_default.json``. :data:`.config.COMMITTED_COHORTS` names every
cohort with a committed manifest (``ichct synth --cohort NAME`` regenerates one into ``data/NAME/``):
the default, ``synth_large`` (what the committed segmenter trains on) and ``synth_tuning``.

Modules, one concept each:

- :mod:`.config` settings, label names, expected prevalence; :mod:`.seeding` random streams/UIDs;
- :mod:`.grid` head pose, slice stacks (gantry tilt) and voxel grids; :mod:`.shapes` distance fields;
- :mod:`.anatomy` the head; :mod:`.lesions` the hemorrhages; :mod:`.mimics` calcifications, dense
  vessels; :mod:`.phantom` renders them on a grid;
- :mod:`.acquisition` protocols; :mod:`.noise` kernels, noise, streaks; :mod:`.scout` localizers;
- :mod:`.dicom_writer` DICOM files; :mod:`.labels` label maps and RSNA labels; :mod:`.preview`
  contact sheets; :mod:`.cohort` planning, workers and manifests.
"""

from .config import (
    COMMITTED_COHORTS,
    DEFAULT_COHORT,
    DEFAULT_COHORT_DIR,
    DEFAULT_COHORT_MANIFEST,
    DEFAULT_COHORT_NAME,
    LABEL_NAMES,
    LABEL_VALUES,
    SUBTYPES,
    CommittedCohort,
    SynthConfig,
    committed_cohort,
    default_cohort,
    expected_prevalence,
)
from .cohort import GENERATOR_NAME, generate_cohort, generate_patient, plan_cohort, plan_patient, planned_studies

__all__ = [
    "COMMITTED_COHORTS",
    "CommittedCohort",
    "DEFAULT_COHORT",
    "DEFAULT_COHORT_DIR",
    "DEFAULT_COHORT_MANIFEST",
    "DEFAULT_COHORT_NAME",
    "GENERATOR_NAME",
    "LABEL_NAMES",
    "LABEL_VALUES",
    "SUBTYPES",
    "SynthConfig",
    "committed_cohort",
    "default_cohort",
    "expected_prevalence",
    "generate_cohort",
    "generate_patient",
    "plan_cohort",
    "plan_patient",
    "planned_studies",
]
