"""Generator settings, label names and the prevalence the cohort plan aims for.

Label values of the voxel maps (``labels/<study_uid>.nii.gz``) and the subtype order used in
``cohort.json`` and ``slice_labels.csv`` are defined here and nowhere else.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ichct.errors import InputError
from ichct.pipeline.core.labels import LABEL_NAMES, LABEL_VALUES, SUBTYPES  # noqa: F401 - re-exported

# P(subtype | positive study) before the "at least one subtype" fill-in (close to RSNA's mix).
DEFAULT_SUBTYPE_PROB: dict[str, float] = {
    "epidural": 0.12,
    "intraparenchymal": 0.42,
    "intraventricular": 0.30,
    "subarachnoid": 0.40,
    "subdural": 0.42,
}

# Transfer syntaxes a study can be written with, and their default shares.
COMPRESSIONS: tuple[str, ...] = ("none", "rle", "jpeg_lossless")
DEFAULT_COMPRESSION_MIX: dict[str, float] = {"none": 0.6, "rle": 0.2, "jpeg_lossless": 0.2}


@dataclass(frozen=True)
class FormationShift:
    """Image-formation settings that move a cohort away from the default render (a *shifted domain*).

    Every field left at ``None`` (or 1.0 / 0.0) keeps today's value; the default render has no
    shift at all (``SynthConfig.formation = None``). Slice thickness is shifted with
    ``SynthConfig.thickness_choices_mm``.

    Parameters
    ----------
    soft_f_cut : float or None
        Cut-off (cycles/mm) of the soft-tissue kernel's MTF core (default kernel: 0.45; higher is sharper).
    dose_factor : float
        Tube current-time product relative to the default protocol: noise SD scales with
        ``1 / sqrt(dose_factor)`` (soft and bone reconstructions).
    tail_fraction, tail_mm : float or None
        Point-spread function tails of both kernels: fraction of the signal and exponential
        length (default 0.09 and 1.2 mm).
    hu_offset : float
        Extra calibration offset (HU) added to every study's scanner offset.
    ssp_blur_mm : float or None
        SD (mm) of the Gaussian that blurs the slice sensitivity profile along z (default 1.0).

    Example
    -------
    >>> shift = FormationShift.from_mapping({"soft_f_cut": 0.55, "dose_factor": 0.7, "hu_offset": 4})
    >>> round(shift.noise_scale, 4), shift.hu_offset
    (1.1952, 4.0)
    """

    soft_f_cut: float | None = None
    dose_factor: float = 1.0
    tail_fraction: float | None = None
    tail_mm: float | None = None
    hu_offset: float = 0.0
    ssp_blur_mm: float | None = None

    @classmethod
    def from_mapping(cls, values: Any) -> FormationShift:
        """A validated shift from a ``dict`` (e.g. read from JSON); an unknown key is an error."""
        if isinstance(values, FormationShift):
            values.validate()
            return values
        if not isinstance(values, dict):
            raise InputError(f"formation must be a mapping of shift settings (got {type(values).__name__})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"formation: unknown key(s) {unknown}; choose from {', '.join(sorted(known))}")
        converted = {}
        for key, value in values.items():
            try:
                converted[key] = None if value is None and key not in ("dose_factor", "hu_offset") else float(value)
            except (TypeError, ValueError):
                raise InputError(f"formation.{key} must be a number (got {value!r})") from None
        shift = cls(**converted)
        shift.validate()
        return shift

    def validate(self) -> None:
        """Raise :class:`~ichct.errors.InputError` naming the first setting out of range."""
        ranges = {"soft_f_cut": (0.1, 2.0), "dose_factor": (0.05, 20.0), "tail_fraction": (0.0, 0.5),
                  "tail_mm": (0.1, 20.0), "hu_offset": (-100.0, 100.0), "ssp_blur_mm": (0.05, 10.0)}
        for key, (low, high) in ranges.items():
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
                raise InputError(f"formation.{key} must be within [{low:g}, {high:g}] (got {value!r})")

    @property
    def noise_scale(self) -> float:
        """Factor on the noise SD: ``1 / sqrt(dose_factor)``."""
        return 1.0 / math.sqrt(self.dose_factor)


# Per-study image-formation variety for training cohorts (``ichct synth --formation-variety``):
# around the default render (soft kernel 0.45 cycles/mm, dose 1, tails 9 % over 1.2 mm, slice
# profile 1.0 mm) and short of the shifted-domain benchmark's held-out settings (0.55 cycles/mm,
# 0.7x dose, 12 % over 1.6 mm, +4 HU, 1.3 mm), so that benchmark stays unseen.
DEFAULT_FORMATION_VARIETY: dict[str, tuple[float, float]] = {
    "soft_f_cut": (0.36, 0.52),
    "dose_factor": (0.8, 1.6),
    "tail_fraction": (0.05, 0.11),
    "tail_mm": (0.9, 1.5),
    "hu_offset": (-3.0, 3.0),
    "ssp_blur_mm": (0.8, 1.2),
}


@dataclass(frozen=True)
class FormationRanges:
    """Image-formation variety: every study draws its own :class:`FormationShift` from these ranges.

    Each named setting is drawn uniformly from its ``(low, high)`` range, independently per study;
    settings not named keep the cohort's ``formation`` (or the default render).

    Parameters
    ----------
    ranges : dict
        Setting name (a :class:`FormationShift` field) -> ``(low, high)``.

    Example
    -------
    >>> import numpy as np
    >>> ranges = FormationRanges.from_mapping({"dose_factor": [0.8, 1.6], "hu_offset": [-3, 3]})
    >>> shift = ranges.draw(np.random.default_rng(0))
    >>> 0.8 <= shift.dose_factor <= 1.6 and -3 <= shift.hu_offset <= 3 and shift.soft_f_cut is None
    True
    """

    ranges: dict[str, tuple[float, float]]

    @classmethod
    def from_mapping(cls, values: Any) -> FormationRanges:
        """Validated ranges from a ``dict`` of ``[low, high]`` pairs; a bad key or range names the setting."""
        if isinstance(values, FormationRanges):
            values = values.ranges
        if not isinstance(values, dict) or not values:
            raise InputError("formation_ranges must be a non-empty mapping of setting -> [low, high] "
                             f"(got {values!r})")
        known = {f.name for f in fields(FormationShift)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"formation_ranges: unknown key(s) {unknown}; choose from {', '.join(sorted(known))}")
        ranges = {key: _range(key, pair) for key, pair in values.items()}
        for bound in (0, 1):  # both ends must be valid shifts
            try:
                FormationShift.from_mapping({key: pair[bound] for key, pair in ranges.items()})
            except InputError as exc:
                raise InputError(f"formation_ranges: {exc}") from None
        return cls(ranges)

    def draw(self, gen: Any, base: FormationShift | None = None) -> FormationShift:
        """One study's shift: each ranged setting drawn uniformly (in key order), the rest from ``base``."""
        drawn = {key: float(gen.uniform(low, high)) for key, (low, high) in sorted(self.ranges.items())}
        return replace(base or FormationShift(), **drawn)

    def parameters(self) -> dict[str, list[float]]:
        """JSON-ready ``{setting: [low, high]}``."""
        return {key: list(pair) for key, pair in self.ranges.items()}


def _range(key: str, pair: Any) -> tuple[float, float]:
    """``(low, high)`` of one ranged setting; an InputError naming it when not two ordered numbers."""
    try:
        low, high = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise InputError(f"formation_ranges.{key} must be [low, high], two numbers (got {pair!r})") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise InputError(f"formation_ranges.{key} must be [low, high] with low <= high (got {pair!r})")
    return low, high


@dataclass
class SynthConfig:
    """Everything that decides a synthetic cohort; the same config and seed give the same bytes.

    Fractions marked *stratified* are met as closely as the cohort size allows (a shuffled exact
    count rather than independent coin flips), so that small cohorts still hold every case.
    """

    n_patients: int = 10
    seed: int = 0
    matrix: int = 256
    slices: int = 32
    positive_fraction: float = 0.5  # stratified, per patient (follow-ups keep their lesions)
    subtype_prob: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SUBTYPE_PROB))
    follow_up_fraction: float = 0.25  # stratified: patients with a second study
    tilt_fraction: float = 0.2  # stratified over first studies; follow-ups draw independently
    bone_fraction: float = 0.3  # studies with an extra bone-kernel reconstruction
    scout_fraction: float = 0.4  # studies with a lateral scout
    motion_fraction: float = 0.05  # studies where the patient moved during part of the scan
    hard_negative_fraction: float = 0.0  # stratified share of negative patients made hard negatives
    compression_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_COMPRESSION_MIX))
    thickness_choices_mm: tuple[float, ...] = (2.5, 3.0, 3.75, 5.0)
    preview: bool = False
    formation: FormationShift | None = None  # shifted image formation (None: the default render)
    formation_ranges: FormationRanges | None = None  # per-study formation drawn from ranges (None: one formation)

    def __post_init__(self) -> None:
        if self.formation is not None:
            self.formation = FormationShift.from_mapping(self.formation)
        if self.formation_ranges is not None:
            self.formation_ranges = FormationRanges.from_mapping(self.formation_ranges)
        self.subtype_prob = {**DEFAULT_SUBTYPE_PROB, **dict(self.subtype_prob)}
        self.compression_mix = {**{c: 0.0 for c in COMPRESSIONS}, **dict(self.compression_mix)}
        self.thickness_choices_mm = tuple(float(t) for t in self.thickness_choices_mm)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~ichct.errors.InputError` (a ``ValueError``) for settings the generator cannot honour."""
        if self.n_patients < 1:
            raise InputError(f"--patients must be >= 1 (got {self.n_patients})")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"--seed must be a non-negative integer (got {self.seed})")
        if not 32 <= self.matrix <= 1024:
            raise InputError(f"--matrix must be between 32 and 1024 (got {self.matrix})")
        if not 4 <= self.slices <= 512:
            raise InputError(f"--slices must be between 4 and 512 (got {self.slices})")
        for name, value in (("positive_fraction", self.positive_fraction), ("follow_up_fraction", self.follow_up_fraction),
                            ("tilt_fraction", self.tilt_fraction), ("bone_fraction", self.bone_fraction),
                            ("scout_fraction", self.scout_fraction), ("motion_fraction", self.motion_fraction),
                            ("hard_negative_fraction", self.hard_negative_fraction)):
            if not 0.0 <= float(value) <= 1.0:
                raise InputError(f"{name} must be within [0, 1] (got {value})")
        unknown = set(self.subtype_prob) - set(SUBTYPES)
        if unknown:
            raise InputError(f"unknown subtype(s) {sorted(unknown)}; choose from {', '.join(SUBTYPES)}")
        if any(not 0.0 <= p <= 1.0 for p in self.subtype_prob.values()):
            raise InputError("subtype probabilities must be within [0, 1]")
        if self.positive_fraction > 0 and sum(self.subtype_prob.values()) <= 0:
            raise InputError("positive studies need at least one subtype with probability > 0")
        unknown = set(self.compression_mix) - set(COMPRESSIONS)
        if unknown:
            raise InputError(f"unknown compression(s) {sorted(unknown)}; choose from {', '.join(COMPRESSIONS)}")
        if any(v < 0 for v in self.compression_mix.values()) or sum(self.compression_mix.values()) <= 0:
            raise InputError("compression shares must be >= 0 and not all zero")
        if not self.thickness_choices_mm or any(not 0.5 <= t <= 10 for t in self.thickness_choices_mm):
            raise InputError("slice thickness choices must be within [0.5, 10] mm")

    def parameters(self) -> dict[str, Any]:
        """JSON-ready parameters for ``cohort.json`` (everything but the seed; the formation keys only when set)."""
        out = asdict(self)
        out.pop("seed")
        if self.formation is None:
            out.pop("formation")
        out.pop("formation_ranges")
        if self.formation_ranges is not None:
            out["formation_ranges"] = self.formation_ranges.parameters()
        out["thickness_choices_mm"] = list(self.thickness_choices_mm)
        return out


# The default synthetic cohort: what the demo and the committed classifier train on, with its
# committed split manifest ``data_manifests/synth_default.json``. Sized for CPU training of a
# 3D U-Net and a slice classifier in minutes (60 patients, 75 studies, about 14 s with 2 workers).
# Changing any of it changes the data: rebuild the manifest (see data_manifests/README.md).
DEFAULT_COHORT_NAME = "synth_default"
# Half of its negatives are hard negatives (0.5.0): trained on them, the bundles' specificity on the
# shifted-domain benchmark rose from 0.49 to 0.76 (docs/benchmarks.md#remedies-ablation).
DEFAULT_COHORT = SynthConfig(n_patients=60, seed=0, matrix=128, slices=32, hard_negative_fraction=0.5)
# Where the default cohort lives, relative to the repository root (git-ignored, regenerated with
# ``ichct synth --default-cohort``), and its committed manifest.
DEFAULT_COHORT_DIR = "data/synth_default"
DEFAULT_COHORT_MANIFEST = "data_manifests/synth_default.json"
# How the manifest was split (``ichct manifest build --folds 5 --test-fraction 0.2 --seed 0``).
DEFAULT_MANIFEST_SPLIT: dict[str, Any] = {"folds": 5, "test_fraction": 0.2, "seed": 0}


@dataclass(frozen=True)
class CommittedCohort:
    """A named synthetic cohort whose split manifest is committed as ``data_manifests/<name>.json``.

    Its DICOM is not committed: ``ichct synth --cohort NAME`` regenerates it byte for byte into
    ``data/<name>/`` under the repository root, where the manifest's paths point.

    Examples
    --------
    >>> COMMITTED_COHORTS["synth_large"].manifest
    'data_manifests/synth_large.json'
    """

    name: str
    config: SynthConfig
    split: dict[str, Any]  # ``ichct manifest build`` options: folds, test_fraction, seed
    purpose: str

    @property
    def directory(self) -> str:
        """Where the cohort is written, relative to the repository root."""
        return f"data/{self.name}"

    @property
    def manifest(self) -> str:
        """The committed manifest, relative to the repository root."""
        return f"data_manifests/{self.name}.json"


# The segmentation bundle trains on the larger cohort (0.7.0): on the shifted-domain benchmark 180
# patients and 60 minutes cut its false-positive lesions per scan from 1.17 to 0.35 and its false
# blood p95 from 9.3 to 2.3 mL (docs/benchmarks.md#remedies-ablation).
LARGE_COHORT_NAME = "synth_large"
TUNING_COHORT_NAME = "synth_tuning"
# Two of the segmentation bundle's three networks (0.10.0) are fine-tuned on this cohort (one of
# them on its union with synth_large): per-study image formation drawn from the variety ranges taught
# the segmenter the shifted cohort's lesions (docs/benchmarks.md).
VARIETY_COHORT_NAME = "synth_variety"
COMMITTED_COHORTS: dict[str, CommittedCohort] = {
    DEFAULT_COHORT_NAME: CommittedCohort(DEFAULT_COHORT_NAME, DEFAULT_COHORT, dict(DEFAULT_MANIFEST_SPLIT),
                                         "the demo's and the committed classifier's; the default test split"),
    LARGE_COHORT_NAME: CommittedCohort(
        LARGE_COHORT_NAME, SynthConfig(n_patients=180, seed=7, matrix=128, slices=32, hard_negative_fraction=0.5),
        dict(DEFAULT_MANIFEST_SPLIT), "what the committed segmenter trains on"),
    TUNING_COHORT_NAME: CommittedCohort(
        TUNING_COHORT_NAME,
        SynthConfig(n_patients=80, seed=11, matrix=128, slices=32, hard_negative_fraction=0.5, follow_up_fraction=0.0),
        {"folds": 2, "test_fraction": 1.0, "seed": 0}, "held out whole: where `ichct postprocess` tunes"),
    VARIETY_COHORT_NAME: CommittedCohort(
        VARIETY_COHORT_NAME,
        SynthConfig(n_patients=180, seed=13, matrix=128, slices=32, hard_negative_fraction=0.5,
                    formation_ranges=dict(DEFAULT_FORMATION_VARIETY)),
        {"folds": 5, "test_fraction": 0.1, "seed": 0}, "image-formation variety: the segmenter's fine-tuning"),
}


def committed_cohort(name: str) -> CommittedCohort:
    """The committed cohort called ``name``, with a fresh copy of its config.

    Raises
    ------
    KeyError
        ``name`` is not one of :data:`COMMITTED_COHORTS` (the message lists them).

    Examples
    --------
    >>> committed_cohort("synth_tuning").config.n_patients
    80
    """
    if name not in COMMITTED_COHORTS:
        raise KeyError(f"no committed cohort {name!r}; the committed cohorts are {', '.join(COMMITTED_COHORTS)}")
    return copy.deepcopy(COMMITTED_COHORTS[name])


def default_cohort(**changes: Any) -> SynthConfig:
    """A fresh copy of :data:`DEFAULT_COHORT` (``changes``: e.g. ``preview=True``)."""
    return replace(DEFAULT_COHORT, **changes)


def expected_prevalence(config: SynthConfig) -> dict[str, float]:
    """Expected fraction of studies carrying each label under ``config`` (plan level).

    A positive study draws each subtype with ``subtype_prob``; one with none gets exactly one,
    chosen in proportion to ``subtype_prob``. Follow-up studies keep their patient's lesions, so
    study-level and patient-level prevalences are the same.
    """
    probs = config.subtype_prob
    total = sum(probs.values())
    p_none = math.prod(1.0 - probs[s] for s in SUBTYPES)
    out = {"any": config.positive_fraction}
    for s in SUBTYPES:
        share = probs[s] / total if total > 0 else 0.0
        out[s] = config.positive_fraction * (probs[s] + p_none * share)
    return out
