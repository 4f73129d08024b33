"""Plan and generate a synthetic cohort: patients, studies, series, labels and the manifests.

``plan_cohort`` is cheap (no rendering): it fixes which patients are positive, their subtypes,
who has a follow-up study and each first study's tilt / bone / scout / compression (stratified so
that the requested shares hold even for small cohorts). ``plan_patient`` turns one assignment into
anatomy, lesions, poses and slice stacks; ``generate_patient`` renders and writes one patient;
``generate_cohort`` runs patients in worker processes and writes ``cohort.json`` and
``slice_labels.csv``. Everything is a function of the seed, never of the worker count.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ichct import __version__
from ichct.pipeline.core.atomic import atomic_path, write_json_atomic

from . import labels as lab
from .acquisition import VENDORS, Protocol, sample_protocol
from .anatomy import HeadParams, sample_head
from .config import LABEL_NAMES, SUBTYPES, FormationShift, SynthConfig
from .dicom_writer import (
    ScoutHeader,
    SeriesHeader,
    StudyHeader,
    encode_stored,
    write_scout,
    write_series,
)
from .formation import (
    SSP_BLUR_MM,
    SUBSLICES,
    Scanner,
    beam_hardening,
    centre_subslices,
    integrate_slices,
    motion_blur,
    motion_episode,
    sample_scanner,
    subslice_grid,
)
from .grid import PartialVolume, Pose, StackLayout, rotation_matrix, stack_layout
from .hard_negatives import hard_negative_flags, harden
from .lesions import Lesion, sample_lesion
from .mimics import Mimics, sample_mimics
from .noise import Streaks, add_streaks, noise_weight, reconstruct, sample_streaks
from .render_settings import render_settings
from .phantom import render
from .scout import scout_geometry, scout_image
from .seeding import make_uid, rng, stratified_choice, stratified_flags, stratified_subtypes

logger = logging.getLogger(__name__)

GENERATOR_NAME = "ichct-synth"
BASE_DATE = _dt.date(2020, 1, 6)
SOFT_SERIES_NUMBER = 2  # series number of the soft-tissue axial series (1 scout, 3 bone)
SOFT_SERIES_FOLDER = "series002_axial_brain"


def study_dir(patient_id: str, study_index: int) -> Path:
    """Folder of one study under the cohort root: ``dicom/<patient_id>/study<NN>``."""
    return Path("dicom") / patient_id / f"study{study_index:02d}"


def label_path(study_uid: str) -> Path:
    """Label map of one study under the cohort root: ``labels/<study_uid>.nii.gz``."""
    return Path("labels") / f"{study_uid}.nii.gz"


@dataclass
class PatientAssignment:
    """What the cohort plan decides for one patient (1-based ``index``)."""

    index: int
    positive: bool
    subtypes: list[str]
    follow_up: bool
    tilt: bool
    bone: bool
    scout: bool
    compression: str
    hard_negative: bool = False  # negative at the bright end of every blood mimic (see .hard_negatives)
    seed: int = 0  # the cohort's seed: part of the identifiers, so two cohorts never share a made-up patient

    @property
    def patient_id(self) -> str:
        """``SYN0001`` in the seed-0 (default) cohort, ``SYN<seed>-0001`` in any other."""
        return f"SYN{self.index:04d}" if self.seed == 0 else f"SYN{self.seed}-{self.index:04d}"

    @property
    def patient_name(self) -> str:
        return f"SYNTH^{self.index:04d}" if self.seed == 0 else f"SYNTH^{self.seed}-{self.index:04d}"


@dataclass
class StudyPlan:
    index: int  # 1-based within the patient
    study_uid: str
    frame_of_reference_uid: str
    date: str
    time: str
    protocol: Protocol
    pose: Pose
    layout: StackLayout
    lesions: list[Lesion]
    streaks: Streaks
    scanner: Scanner
    formation: FormationShift | None = None  # this study's image formation (None: the default render)


@dataclass
class PatientPlan:
    assignment: PatientAssignment
    head: HeadParams
    mimics: Mimics
    sex: str
    age: int
    studies: list[StudyPlan] = field(default_factory=list)


def plan_cohort(config: SynthConfig) -> list[PatientAssignment]:
    """Cohort-level decisions (cheap: nothing is rendered)."""
    gen = rng(config.seed, "cohort")
    n = config.n_patients
    positive = stratified_flags(gen, n, config.positive_fraction)
    subtype_sets = iter(stratified_subtypes(gen, int(positive.sum()), {s: config.subtype_prob[s] for s in SUBTYPES}))
    follow = stratified_flags(gen, n, config.follow_up_fraction)
    tilt = stratified_flags(gen, n, config.tilt_fraction)
    bone = stratified_flags(gen, n, config.bone_fraction)
    scout = stratified_flags(gen, n, config.scout_fraction)
    compression = stratified_choice(gen, n, config.compression_mix)
    hard = hard_negative_flags(positive, config.hard_negative_fraction, config.seed)
    out = []
    for i in range(n):
        subtypes = sorted(next(subtype_sets), key=SUBTYPES.index) if positive[i] else []
        out.append(PatientAssignment(index=i + 1, positive=bool(positive[i]), subtypes=subtypes, follow_up=bool(follow[i]),
                                     tilt=bool(tilt[i]), bone=bool(bone[i]), scout=bool(scout[i]), compression=compression[i],
                                     hard_negative=bool(hard[i]), seed=config.seed))
    return out


def planned_studies(config: SynthConfig) -> list[dict[str, Any]]:
    """The studies ``generate_cohort(config)`` writes, in ``cohort.json`` order, without rendering.

    One dict per study: ``patient_id``, ``study_index`` (1-based), ``study_uid``, ``series_uid``
    (the soft-tissue axial series the labels belong to), ``series_dir`` and ``label`` (as in
    ``cohort.json``) and ``positive`` (the patient's plan).
    UIDs depend only on the seed and the indices, so this names exactly what the written cohort
    holds (cheap: for checking a committed manifest against the config).
    """
    out = []
    for a in plan_cohort(config):
        for index in range(1, 3 if a.follow_up else 2):
            study_uid = make_uid(config.seed, "study", a.index, index)
            out.append({
                "patient_id": a.patient_id,
                "study_index": index,
                "study_uid": study_uid,
                "series_uid": make_uid(config.seed, "series", a.index, index, SOFT_SERIES_NUMBER),
                "series_dir": (study_dir(a.patient_id, index) / SOFT_SERIES_FOLDER).as_posix(),
                "label": label_path(study_uid).as_posix(),
                "positive": a.positive,
            })
    return out


# ----------------------------------------------------------------------------------------------
# planning one patient


def _place_stack(head: HeadParams, protocol: Protocol, config: SynthConfig, gen: np.random.Generator,
                 z_mid: float | None = None) -> tuple[Pose, StackLayout, tuple[float, float], float]:
    """Head pose and slice stack; returns (pose, layout, head-z window of the stack, z_mid)."""
    rotation = rotation_matrix(gen.uniform(-8, 8), gen.uniform(-10, 14), gen.uniform(-6, 6))
    centre = np.array([gen.uniform(-10, 10), gen.uniform(-15, 10), gen.uniform(-250, -50)])
    pose = Pose(rotation=rotation, centre=centre)
    coverage = protocol.thickness_mm * config.slices
    z_bot, z_top = head.z_pf - 6.0, head.top_z + 2.0
    span = z_top - z_bot
    if z_mid is None:
        if coverage >= span:
            z_lo = z_bot - gen.uniform(0.15, 0.6) * (coverage - span)
        else:
            lo, hi = max(z_bot - 4.0, 20.0 - coverage), min(-12.0, z_top - coverage)
            z_lo = gen.uniform(lo, hi) if hi > lo else 4.0 - coverage / 2
        z_mid = z_lo + coverage / 2
    offset = gen.uniform(-8, 8, 2)
    drift = config.slices * protocol.thickness_mm * abs(np.tan(np.radians(protocol.tilt_deg)))
    radius = max(head.b_front + 22.0, head.b_back + head.skull_mm + head.scalp_mm + 4.0, head.a + 24.0)
    needed = 2.0 * (radius + float(np.abs(offset).max()) + drift / 2 + 4.0)
    protocol.fov_mm = float(max(protocol.fov_mm, needed))
    theta = np.radians(protocol.tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(theta), -np.sin(theta)])
    mid = pose.to_world(np.array([0.0, (head.b_back - head.b_front) / 2, z_mid])) + offset[0] * row + offset[1] * col
    layout = stack_layout(config.matrix, config.slices, protocol.fov_mm, protocol.thickness_mm, protocol.tilt_deg, mid)
    margin = min(protocol.thickness_mm, 0.15 * coverage)
    return pose, layout, (z_mid - coverage / 2 + margin, z_mid + coverage / 2 - margin), z_mid


def in_stack(pose: Pose, layout: StackLayout, point_head: np.ndarray) -> bool:
    """True when a head point lies between the first and last slice (with a margin)."""
    n = layout.n_slices
    t = float((pose.to_world(np.asarray(point_head, dtype=float)) - layout.ipp[0]) @ layout.normal)
    extent = (n - 1) * layout.thickness_mm
    margin = min(layout.thickness_mm, 0.15 * extent)
    return margin <= t <= extent - margin


def plan_patient(config: SynthConfig, a: PatientAssignment) -> PatientPlan:
    """Anatomy, lesions and acquisition of every study of one patient (deterministic)."""
    gen = rng(config.seed, "patient", a.index)
    age = int(gen.integers(18, 92))
    head = sample_head(gen, age)
    mimics = sample_mimics(head, gen, negative=not a.positive)
    sex = "F" if gen.random() < 0.5 else "M"
    plan = PatientPlan(assignment=a, head=head, mimics=mimics, sex=sex, age=age)
    vendor = VENDORS[int(gen.integers(len(VENDORS)))]
    formation = study_formation(config, a.index, 1)
    protocol = sample_protocol(gen, config, tilt=a.tilt, bone=a.bone, scout=a.scout, compression=a.compression, vendor=vendor,
                               formation=formation)
    pose, layout, window, z_mid = _place_stack(head, protocol, config, gen)
    anchors: list[np.ndarray] = []
    lesions: list[Lesion] = []
    convexity_side = None  # epidural / subdural collections go on alternating sides
    for subtype in a.subtypes:
        count = 2 if gen.random() < 0.15 else 1
        for _ in range(count):
            side = -convexity_side if (convexity_side and subtype in ("epidural", "subdural")) else None
            lesion = sample_lesion(subtype, head, gen, window, lambda c: in_stack(pose, layout, c), side=side)
            if subtype in ("epidural", "subdural") and "u" in lesion.geometry:
                convexity_side = 1 if lesion.geometry["u"][0] >= 0 else -1
            lesions.append(lesion)
            anchors.append(np.asarray(lesion.geometry["anchor"]))
    day = BASE_DATE + _dt.timedelta(days=(a.index * 11) % 700)
    plan.studies.append(_study(config, a, 1, day, protocol, pose, layout, lesions, gen, formation))
    if a.follow_up:
        day2 = day + _dt.timedelta(days=int(gen.integers(1, 8)))
        same_scanner = gen.random() < 0.7
        formation2 = study_formation(config, a.index, 2)
        protocol2 = sample_protocol(gen, config, tilt=gen.random() < config.tilt_fraction, bone=gen.random() < config.bone_fraction,
                                    scout=gen.random() < config.scout_fraction,
                                    compression=str(gen.choice(list(config.compression_mix), p=_shares(config.compression_mix))),
                                    vendor=vendor if same_scanner else None, formation=formation2)
        evolved = [les.evolve(gen) for les in lesions]
        for _attempt in range(25):
            pose2, layout2, _w, _z = _place_stack(head, protocol2, config, gen, z_mid + gen.uniform(-5, 5))
            if all(in_stack(pose2, layout2, c) for c in anchors):
                break
        plan.studies.append(_study(config, a, 2, day2, protocol2, pose2, layout2, evolved, gen, formation2))
    if a.hard_negative:
        harden(plan, config.seed)
    return plan


def _shares(mix: dict[str, float]) -> np.ndarray:
    p = np.asarray(list(mix.values()), dtype=float)
    return p / p.sum()


def study_formation(config: SynthConfig, patient_index: int, study_index: int) -> FormationShift | None:
    """The image formation one study is rendered with.

    The cohort's ``formation`` (None: the default render), or with ``formation_ranges`` a shift
    drawn for this study from its own random stream (the rest of the plan is unchanged by it).

    Example
    -------
    >>> study_formation(SynthConfig(n_patients=1), 0, 1) is None
    True
    >>> varied = SynthConfig(n_patients=1, formation_ranges={"dose_factor": [0.8, 1.6]})
    >>> 0.8 <= study_formation(varied, 0, 1).dose_factor <= 1.6
    True
    """
    if config.formation_ranges is None:
        return config.formation
    return config.formation_ranges.draw(rng(config.seed, "formation", patient_index, study_index), config.formation)


def _study(config, a, index, day, protocol, pose, layout, lesions, gen, formation) -> StudyPlan:
    return StudyPlan(
        index=index,
        study_uid=make_uid(config.seed, "study", a.index, index),
        frame_of_reference_uid=make_uid(config.seed, "for", a.index, index),
        date=day.strftime("%Y%m%d"),
        time=f"{8 + (a.index * 7 + index * 3) % 10:02d}{(a.index * 13) % 60:02d}00",
        protocol=protocol,
        pose=pose,
        layout=layout,
        lesions=lesions,
        streaks=sample_streaks(gen),
        scanner=sample_scanner(gen, protocol.vendor.hu_offset + render_settings(formation).hu_offset, config.motion_fraction),
        formation=formation,
    )


# ----------------------------------------------------------------------------------------------
# generating one patient


def _series_time(study_time: str, minutes: int) -> str:
    t = _dt.datetime.strptime(study_time, "%H%M%S") + _dt.timedelta(minutes=minutes)
    return t.strftime("%H%M%S")


def generate_patient(config: SynthConfig, out_dir: str | Path, a: PatientAssignment) -> list[tuple[dict[str, Any], list[str]]]:
    """Render and write every study of one patient; returns ``(cohort record, csv rows)`` per study."""
    out_dir = Path(out_dir)
    plan = plan_patient(config, a)
    results = []
    for study in plan.studies:
        results.append(_generate_study(config, out_dir, plan, study))
    return results


def _generate_study(config: SynthConfig, out_dir: Path, plan: PatientPlan, study: StudyPlan) -> tuple[dict[str, Any], list[str]]:
    """Render one study, write its series, label map (and preview); its cohort record and csv rows."""
    a, layout = plan.assignment, study.layout
    clean, label, weight = _render_study(plan, study, render_settings(study.formation).ssp_blur_mm)
    outside = _outside_field_of_view(config.matrix)
    header = _study_header(plan, study)
    study_dir_rel = study_dir(a.patient_id, study.index)
    soft, soft_hu, series_entries = _write_soft_series(config, out_dir, plan, study, header, clean, weight, outside)
    if study.protocol.bone_kernel:
        series_entries.append(_write_bone_series(config, out_dir, plan, study, header, clean, weight, outside))
    if study.protocol.scout:
        series_entries.append(_write_scout_series(config, out_dir, plan, study, header))
    label_rel = label_path(study.study_uid)
    lab.write_label_map(out_dir / label_rel, label, layout.convert_grid)
    slices = lab.slice_labels(label)
    record = {
        "patient_id": a.patient_id,
        "study_uid": study.study_uid,
        "series_uid": soft.series_uid,
        "series_dir": (study_dir_rel / SOFT_SERIES_FOLDER).as_posix(),
        "label": label_rel.as_posix(),
        "slice_labels": slices,
        "ct_labels": lab.study_labels(slices),
        "volumes_ml": lab.volumes_ml(label, layout.convert_grid),
        "study_index": study.index,
        "study_dir": study_dir_rel.as_posix(),
        "sop_instance_uids": soft.sop_uids,
        "series": series_entries,
        "acquisition": _acquisition_record(study),
        "lesions": [les.summary() for les in study.lesions],
        "mimics": plan.mimics.names(),
        "hard_negative": a.hard_negative,
    }
    if config.preview:
        from .preview import on_convert_grid, write_preview

        write_preview(out_dir / "preview" / f"{study.study_uid}.png", on_convert_grid(soft_hu, layout), label,
                      title=f"{a.patient_id} study {study.index}: " + (", ".join(n for n in SUBTYPES if record["ct_labels"][n]) or "negative"))
    return record, lab.csv_rows(soft.sop_uids, slices)


def _render_study(plan: PatientPlan, study: StudyPlan,
                  ssp_blur_mm: float = SSP_BLUR_MM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(noise-free HU with the scanner's effects, label map on the convert grid, noise weight)``.

    The HU come from sub-slices integrated through the slice sensitivity profile
    (:mod:`.formation`); the labels from the nominal voxels' centres, on the grid that
    ``ichct convert`` returns (tilt-corrected when the stack is sheared). ``ssp_blur_mm``: the slice
    sensitivity profile's z blur (a formation shift's, else the default).
    """
    head, layout, pose, scanner = plan.head, study.layout, study.pose, study.scanner
    slice_dir = pose.rotation.T @ layout.normal
    pixel_mm = layout.pixel_spacing[0]
    pv = PartialVolume(pixel_mm=pixel_mm, thickness_mm=layout.thickness_mm, slice_dir_head=slice_dir)
    sub_pv = PartialVolume(pixel_mm=pixel_mm, thickness_mm=layout.thickness_mm / SUBSLICES, slice_dir_head=slice_dir)
    nk = layout.acquired_grid.shape[2]
    rendered = render(head, plan.mimics, study.lesions, pose, subslice_grid(layout.acquired_grid), sub_pv, with_hu=True)
    label_grid = layout.convert_grid if layout.sheared else layout.acquired_grid
    label = render(head, plan.mimics, study.lesions, pose, label_grid, pv, with_hu=False).label
    clean = integrate_slices(rendered.hu, nk, layout.thickness_mm, ssp_blur_mm)
    depth, head_z = centre_subslices(rendered.depth, nk), centre_subslices(rendered.head_z, nk)
    del rendered
    inside = depth > 0
    beam_hardening(clean, pixel_mm, scanner.beam_hardening_hu, inside)
    add_streaks(clean, layout.acquired_grid, pose, head, study.streaks, inside)
    motion_blur(clean, pixel_mm, scanner)
    clean += np.float32(scanner.hu_offset)
    weight = noise_weight(depth, head_z, head)
    return clean, label, weight


def _outside_field_of_view(matrix: int) -> np.ndarray:
    """Pixels outside the reconstruction circle of a ``matrix`` x ``matrix`` image."""
    centre = (matrix - 1) / 2.0
    yy, xx = np.mgrid[0:matrix, 0:matrix]
    return np.hypot(yy - centre, xx - centre) > matrix / 2.0


def _study_header(plan: PatientPlan, study: StudyPlan) -> StudyHeader:
    """Patient and study attributes shared by every series of the study."""
    a = plan.assignment
    return StudyHeader(
        patient_id=a.patient_id, patient_name=a.patient_name,
        birth_date=f"{int(study.date[:4]) - plan.age:04d}0101", sex=plan.sex, age=f"{plan.age:03d}Y",
        study_uid=study.study_uid, study_id=f"{a.index:04d}{study.index}", accession=f"SYNA{a.index:04d}{study.index:02d}",
        study_date=study.date, study_time=study.time, frame_of_reference_uid=study.frame_of_reference_uid,
        vendor=study.protocol.vendor, software=f"{GENERATOR_NAME} {__version__}",
    )


def _header_tilt(protocol: Protocol) -> float:
    """DICOM gantry tilt of the protocol's tilt.

    Negative when the top of the gantry leans away from the table, i.e. towards the head of a
    head-first patient, which is what lifts the anterior edge of the slice plane.
    """
    return -protocol.tilt_deg if protocol.tilt_deg else 0.0


def _axial_header(config: SynthConfig, plan: PatientPlan, study: StudyPlan, number: int, kind: str, kernel: str,
                  windows: list[tuple[float, float]]) -> SeriesHeader:
    """Header of the axial series ``number`` (``kind`` brain or bone) of a study."""
    a, protocol, layout, vendor = plan.assignment, study.protocol, study.layout, study.protocol.vendor
    order = list(range(layout.n_slices))
    return SeriesHeader(
        series_uid=make_uid(config.seed, "series", a.index, study.index, number),
        series_number=number, description=f"AXIAL {kind.upper()} {protocol.thickness_mm:g}MM",
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"), kernel=kernel, series_time=_series_time(study.time, number),
        kvp=protocol.kvp, mas=protocol.mas, thickness_mm=protocol.thickness_mm, tilt_deg=_header_tilt(protocol),
        fov_mm=protocol.fov_mm, windows=windows, iop_text=layout.iop_text, pixel_spacing_text=layout.pixel_spacing_text,
        ipp_text=[layout.ipp_text[k] for k in order], slice_locations=[layout.slice_location(k) for k in order],
        sop_uids=[make_uid(config.seed, "sop", a.index, study.index, number, k) for k in order],
        instance_numbers=[layout.n_slices - k for k in order] if vendor.descending else [k + 1 for k in order],
        rescale_intercept=vendor.intercept, padding_value=None,
        pixel_signed=vendor.signed, bits_stored=vendor.bits_stored,
    )


def _write_soft_series(config: SynthConfig, out_dir: Path, plan: PatientPlan, study: StudyPlan, header: StudyHeader,
                       clean: np.ndarray, weight: np.ndarray,
                       outside: np.ndarray) -> tuple[SeriesHeader, np.ndarray, list[dict[str, str]]]:
    """The soft-tissue (brain) reconstruction, the series the labels belong to.

    Returns its header, its HU volume and the list of series entries (this one first).
    """
    a, protocol = plan.assignment, study.protocol
    kernel = render_settings(study.formation).soft_kernel
    soft_hu = reconstruct(clean, study.layout.pixel_spacing[0], kernel, protocol.sigma_soft_hu, weight,
                          rng(config.seed, "noise", a.index, study.index, 2))
    stored, padding = encode_stored(soft_hu, protocol.vendor, outside)
    windows = [protocol.window] + ([protocol.extra_window] if protocol.extra_window else [])
    soft = _axial_header(config, plan, study, SOFT_SERIES_NUMBER, "brain", protocol.soft_kernel, windows)
    soft.padding_value = padding
    soft_rel = study_dir(a.patient_id, study.index) / SOFT_SERIES_FOLDER
    write_series(out_dir / soft_rel, header, soft, stored, protocol.compression)
    entry = {"kind": "axial_soft", "series_uid": soft.series_uid, "series_dir": soft_rel.as_posix(),
             "kernel": protocol.soft_kernel}
    return soft, soft_hu, [entry]


def _write_bone_series(config: SynthConfig, out_dir: Path, plan: PatientPlan, study: StudyPlan, header: StudyHeader,
                       clean: np.ndarray, weight: np.ndarray, outside: np.ndarray) -> dict[str, str]:
    """The bone-kernel reconstruction (series 3); its series entry."""
    a, protocol = plan.assignment, study.protocol
    kernel = render_settings(study.formation).bone_kernel
    bone_hu = reconstruct(clean, study.layout.pixel_spacing[0], kernel, protocol.sigma_bone_hu, weight,
                          rng(config.seed, "noise", a.index, study.index, 3))
    stored, padding = encode_stored(bone_hu, protocol.vendor, outside)
    del bone_hu
    bone = _axial_header(config, plan, study, 3, "bone", protocol.bone_kernel, [(500.0, 2500.0)])
    bone.padding_value = padding
    bone_rel = study_dir(a.patient_id, study.index) / "series003_axial_bone"
    write_series(out_dir / bone_rel, header, bone, stored, protocol.compression)
    return {"kind": "axial_bone", "series_uid": bone.series_uid, "series_dir": bone_rel.as_posix(),
            "kernel": protocol.bone_kernel}


def _write_scout_series(config: SynthConfig, out_dir: Path, plan: PatientPlan, study: StudyPlan,
                        header: StudyHeader) -> dict[str, str]:
    """The lateral scout (series 1); its series entry."""
    a, pose = plan.assignment, study.pose
    geom = scout_geometry(config.matrix, pose.to_world(np.array([0.0, 0.0, -20.0])))
    image = scout_image(plan.head, pose, config.matrix, geom, rng(config.seed, "scout", a.index, study.index))
    scout = ScoutHeader(series_uid=make_uid(config.seed, "series", a.index, study.index, 1), series_number=1,
                        sop_uid=make_uid(config.seed, "sop", a.index, study.index, 1, 0), description="SCOUT LATERAL",
                        spacing_text=geom["spacing_text"], iop_text=geom["iop_text"], ipp_text=geom["ipp_text"],
                        series_time=_series_time(study.time, 0), kvp=120)
    scout_rel = study_dir(a.patient_id, study.index) / "series001_scout"
    write_scout(out_dir / scout_rel, header, scout, image)
    return {"kind": "scout", "series_uid": scout.series_uid, "series_dir": scout_rel.as_posix(), "kernel": ""}


def _listed(pair: tuple[int, int] | None) -> list[int] | None:
    return None if pair is None else list(pair)


def _acquisition_record(study: StudyPlan) -> dict[str, Any]:
    """The ``acquisition`` section of a study's cohort record (with ``formation_shift`` when one is set)."""
    protocol, layout = study.protocol, study.layout
    record = {
        "manufacturer": protocol.vendor.manufacturer,
        "kernel": protocol.soft_kernel,
        "slice_thickness_mm": protocol.thickness_mm,
        "gantry_tilt_deg": round(_header_tilt(protocol), 3),
        "tilt_corrected_grid": bool(layout.sheared),
        "pixel_spacing_mm": layout.pixel_spacing[0],
        "fov_mm": round(protocol.fov_mm, 2),
        "compression": protocol.compression,
        "noise_sd_hu": round(protocol.sigma_soft_hu, 2),
        "hu_offset": round(study.scanner.hu_offset, 2),
        "motion_mm": round(study.scanner.motion_mm, 2),
        "motion_slices": _listed(motion_episode(study.scanner, layout.acquired_grid.shape[2])),
    }
    if study.formation is not None:
        record["formation_shift"] = {key: value if value is None else round(value, 4)
                                     for key, value in asdict(study.formation).items()}
    return record


# ----------------------------------------------------------------------------------------------
# the cohort


def _init_worker() -> None:
    tune_malloc()


def tune_malloc() -> None:
    """Keep freed volume-sized buffers in the heap (glibc) so that numpy temporaries are reused.

    Without it every 8 MB temporary is a fresh mmap and pays its page faults again.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def _worker(args: tuple[SynthConfig, str, PatientAssignment]):
    config, out_dir, a = args
    return a.index, generate_patient(config, out_dir, a)


def _mp_context():
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


MARKER = ".ichct-synth"  # written first, so that an interrupted run can be replaced with --overwrite


def prepare_output(out_dir: str | Path, overwrite: bool) -> Path:
    """Create ``out_dir``; an existing non-empty one must be a previous synth output and ``overwrite`` set."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        manifest = out / "cohort.json"
        ours = (out / MARKER).is_file()
        if manifest.is_file():
            try:
                ours = ours or json.loads(manifest.read_text(encoding="utf-8")).get("generator", {}).get("name") == GENERATOR_NAME
            except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not a cohort.json object
                pass
        if not overwrite or not ours:
            raise FileExistsError(f"{out} is not empty" + ("" if ours else " and holds no ichct synth cohort")
                                  + ("; pass --overwrite to replace the previous cohort" if ours else "; choose an empty folder"))
        for name in ("dicom", "labels", "preview"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for name in ("cohort.json", "slice_labels.csv"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / MARKER) as tmp:
        tmp.write_text(f"{GENERATOR_NAME} {__version__}\n", encoding="utf-8")
    return out


def generate_cohort(config: SynthConfig, out_dir: str | Path, workers: int = 1, overwrite: bool = False) -> dict[str, Any]:
    """Generate the whole cohort under ``out_dir``; returns the ``cohort.json`` content."""
    out = prepare_output(out_dir, overwrite)
    assignments = plan_cohort(config)
    workers = max(1, min(int(workers), len(assignments)))
    start = time.perf_counter()
    by_index: dict[int, list] = {}
    jobs = [(config, str(out), a) for a in assignments]
    step = max(1, len(jobs) // 10)

    def done(index: int, result) -> None:
        by_index[index] = result
        if len(by_index) % step == 0 and len(by_index) < len(jobs):
            logger.info("%d of %d patients written (%.1f s)", len(by_index), len(jobs), time.perf_counter() - start)

    if workers == 1:
        tune_malloc()
        for job in jobs:
            done(*_worker(job))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(), initializer=_init_worker) as pool:
            for index, result in pool.map(_worker, jobs, chunksize=1):
                done(index, result)
    studies, rows = [], []
    for a in assignments:
        for record, csv in by_index[a.index]:
            studies.append(record)
            rows.extend(csv)
    cohort = {
        "generator": {"name": GENERATOR_NAME, "version": __version__, "seed": int(config.seed), "parameters": config.parameters()},
        "label_names": list(LABEL_NAMES),
        "label_values": {"background": 0, **{name: i + 1 for i, name in enumerate(SUBTYPES)}},
        "studies": studies,
    }
    with atomic_path(out / "slice_labels.csv") as tmp:
        tmp.write_text("ID,Label\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    write_json_atomic(out / "cohort.json", cohort)
    elapsed = time.perf_counter() - start
    n_pos = sum(s["ct_labels"]["any"] for s in studies)
    logger.info("wrote %d patient(s), %d studies (%d positive) to %s in %.1f s (%.2f patients/s, %d worker(s))",
                len(assignments), len(studies), n_pos, out, elapsed, len(assignments) / max(elapsed, 1e-9), workers)
    return cohort


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))
