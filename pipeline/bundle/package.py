"""MONAI model bundles of ichct models: :func:`load_bundle` and :func:`package_bundle`.

A bundle folder (model-zoo layout)::

    configs/  metadata.json inference.json train.json evaluate.json multi_gpu_train.json logging.conf
    docs/     README.md data_license.txt evaluation/ (metrics.json, report.md, plots) training/metrics.csv
    models/   model.pt (a plain state dict) run_config.json thresholds.json train_patients.json
              [postprocessing.json: how ichct postprocess chose the post-processing or thresholds]
    LICENSE   large_files.yml

``models/run_config.json`` is the training run's ``config.json`` (manifest path relative to the
bundle) plus a ``bundle`` section; every config is generated from it by
:func:`ichct.pipeline.bundle.configs.bundle_configs`. ``load_bundle`` returns the same
:class:`~ichct.pipeline.models.inference.LoadedModel` as ``load_run``, so ``evaluate`` and ``predict``
use a bundle exactly like a run directory.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ichct.errors import InputError, read_json
from ichct.pipeline.core.atomic import replace_dir, temp_dir_beside, write_json_atomic
from ichct.pipeline.core.devices import torch_device
from ichct.pipeline.models.config import DATA_ACCESS_KEYS
from ichct.pipeline.models.inference import LoadedModel, network_and_rule, read_run_config
from ichct.pipeline.postprocess.run import POSTPROCESSING_FILE
from ichct.pipeline.core.files import sha256_file
from ichct.pipeline.core.weights import load_checkpoint, model_state_dict

logger = logging.getLogger("ichct.bundle")

__all__ = ["REQUIRED_FILES", "CONFIG_FILES", "WEIGHTS", "load_bundle", "load_model_dir", "package_bundle",
           "write_bundle_files", "default_bundle_name", "training_summary",
           "MAX_COMMITTED_WEIGHTS_MB", "TRAINING_CURVES", "refresh_bundle", "with_inference_settings", "INFERENCE_KEYS"]

CONFIG_FILES = ("configs/inference.json", "configs/train.json", "configs/evaluate.json", "configs/multi_gpu_train.json")
WEIGHTS = "models/model.pt"
REQUIRED_FILES = ("configs/metadata.json", *CONFIG_FILES, "configs/logging.conf", "docs/README.md",
                  "docs/data_license.txt", "LICENSE", "large_files.yml", WEIGHTS, "models/run_config.json",
                  "models/thresholds.json", "models/train_patients.json")
MAX_COMMITTED_WEIGHTS_MB = 20.0
#: The training curves of a run (``RUN_DIR/training_curves.png``), kept as ``docs/training_curves.png``.
TRAINING_CURVES = "training_curves.png"
_PIXEL_PLUGINS = ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pyjpegls", "python-gdcm")
#: Packages that MONAI loads by name for what the configs do: NIfTI in and out (``NibabelReader``,
#: ``SaveImaged``), TensorBoard event files (``TensorBoardStatsHandler``), the ``python -m monai.bundle``
#: entry point.
_LOADED_BY_MONAI = ("nibabel", "tensorboard", "fire")


def default_bundle_name(kind: str) -> str:
    """Folder name of the default bundle of a model kind."""
    return {"seg": "ich_ct_segmentation", "cls": "ich_ct_classification"}[kind]


def load_bundle(bundle_dir: str | Path, device: str = "cpu") -> LoadedModel:
    """Load an ichct bundle as a :class:`~ichct.pipeline.models.inference.LoadedModel`.

    The network is rebuilt from ``models/run_config.json`` (training's constructor) and
    ``models/model.pt`` is loaded with ``torch.load(..., weights_only=True)``; the decision rule
    comes from ``models/thresholds.json``. ``run_dir`` of the result is the bundle's ``models/``
    folder, so ``train_patient_keys`` reads ``models/train_patients.json``; ``bundle_dir`` is the
    bundle.

    Raises
    ------
    NotADirectoryError, FileNotFoundError
        Not a folder, or a file is missing.
    ichct.errors.InputError
        A config or weights that cannot be read or do not fit (a ``ValueError``).
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a bundle directory")
    models = root / "models"
    rc_path = models / "run_config.json"
    if not rc_path.is_file():
        raise FileNotFoundError(f"{rc_path}: missing (not an ichct bundle?)")
    run_config = read_run_config(rc_path, "bundle run config")
    kind = run_config["kind"]
    weights = root / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing")
    dev = torch_device(device)
    state = model_state_dict(load_checkpoint(weights, map_location=dev), weights)  # InputError when unreadable
    cfg = dict(run_config["config"])
    net, rule = network_and_rule(kind, cfg, state, dev, weights_path=weights, config_path=rc_path,
                                 thresholds_path=models / "thresholds.json")
    epoch = (run_config.get("bundle") or {}).get("epoch")
    return LoadedModel(kind=kind, run_dir=models.resolve(), run_config=run_config, config=cfg, network=net, rule=rule,
                       device=dev, checkpoint=WEIGHTS, epoch=None if epoch is None else int(epoch),
                       bundle_dir=root.resolve())


def load_model_dir(model_dir: str | Path, device: str = "cpu") -> LoadedModel:
    """A training run (``config.json``, its best checkpoint) or a bundle (``models/run_config.json``).

    Raises
    ------
    ichct.errors.InputError
        ``model_dir`` is neither; or what :func:`load_bundle` and ``load_run`` raise.

    Examples
    --------
    >>> load_model_dir("bundles/ich_ct_segmentation").kind  # doctest: +SKIP
    'seg'
    """
    from ichct.pipeline.models.inference import load_run

    folder = Path(model_dir)
    if (folder / "models" / "run_config.json").is_file():
        return load_bundle(folder, device=device)
    if (folder / "config.json").is_file():
        return load_run(folder, device=device)
    raise InputError(folder, "not a training run (config.json) or a bundle (models/run_config.json)")


# --------------------------------------------------------------------------------------------
# Packaging a training run
# --------------------------------------------------------------------------------------------


def training_summary(run: Path, kind: str, ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The ``bundle.training`` section of ``models/run_config.json``: how the weights were trained.

    Parameters
    ----------
    run
        The training run folder (its ``metrics.csv``, when present, gives epochs and seconds).
    kind
        ``"seg"`` or ``"cls"`` (names the key metric).
    ckpt
        The checkpoint of the packaged weights (``epoch``, ``best_epoch``, ``best_metric``).

    Returns
    -------
    dict
        ``epochs``, ``train_s``, ``best_epoch``, ``key_metric`` and ``best_metric``.
    """
    from ichct.pipeline.train.engine import KEY_METRIC

    rows: list[dict[str, str]] = []
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    best = ckpt.get("best_metric")
    return {"epochs": int(rows[-1]["epoch"]) if rows else ckpt.get("epoch"),
            "train_s": round(float(rows[-1]["time_s"])) if rows and rows[-1].get("time_s") else None,
            "best_epoch": ckpt.get("best_epoch", ckpt.get("epoch")), "key_metric": KEY_METRIC[kind],
            "best_metric": None if best is None else float(best)}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _core_requirements() -> set[str] | None:
    """Normalized names of ichct's own requirements (not those of an optional extra); None when unknown."""
    from importlib import metadata

    try:
        requires = metadata.requires("ichct") or []
    except metadata.PackageNotFoundError:
        return None
    return {_normalized(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r}


def _required_packages(configs: Mapping[str, Any], exported: bool) -> dict[str, str]:
    """``required_packages_version``: what the configs' code imports (and ichct requires; an import of an
    optional extra's package is on a path the bundle does not take), pydicom's pixel plugins, and what
    MONAI loads by name (:data:`_LOADED_BY_MONAI`)."""
    import ichct
    from ichct.pipeline.bundle.code import installed_versions, third_party
    from ichct.pipeline.bundle.vendor import bundle_code

    req = third_party(bundle_code(configs.values()).modules)
    core = _core_requirements()
    if core is not None:
        req = {dist: version for dist, version in req.items() if _normalized(dist) in core}
    installed = installed_versions()
    extra = (_PIXEL_PLUGINS if "pydicom" in req else ()) + _LOADED_BY_MONAI
    req.update({p: installed[p] for p in extra if p in installed})
    if not exported:
        req["ichct"] = ichct.__version__
    return dict(sorted(req.items(), key=lambda kv: kv[0].lower()))


def _large_files(weights_sha: str, size_mb: float) -> str:
    return (f"# Model weights of this bundle ({size_mb:.2f} MB). Weights over "
            f"{MAX_COMMITTED_WEIGHTS_MB:g} MB are never committed to git: publish them elsewhere, put the\n"
            "# address in `url` and fetch them with `python -m monai.bundle download_large_files --bundle_path .`.\n"
            "# With the file present, that command only checks its hash.\n"
            "large_files:\n"
            f"  - path: \"{WEIGHTS}\"\n"
            "    url: \"\"\n"
            f"    hash_val: \"{weights_sha}\"\n"
            "    hash_type: \"sha256\"\n")


def write_bundle_files(root: Path, run_config: Mapping[str, Any], evaluation: Mapping[str, Any] | None,
                       exported: bool = False) -> None:
    """Write configs, metadata, docs, LICENSE and ``large_files.yml`` of a bundle whose ``models/`` exists.

    Parameters
    ----------
    root
        The bundle folder (``models/model.pt`` written already).
    run_config
        ``models/run_config.json``: the run's config plus the ``bundle`` section (``name``,
        ``display_name``, ``version``, ``changelog``, ``training`` summary, ``training_data``).
        What the docs say the model was trained on comes from its manifest
        (:func:`ichct.pipeline.bundle.docs.describe_training_data`; a relative manifest path is
        relative to ``root``).
    evaluation
        ``metrics.json`` of the bundle's evaluation, or None.
    exported
        Configs import the code from ``scripts/`` (``ichct bundle export``) instead of ``ichct``.
    """
    import monai
    import numpy

    from ichct.pipeline.bundle.vendor import rewrite_config
    from ichct.pipeline.bundle.configs import LOGGING_CONF, bundle_configs
    from ichct.pipeline.bundle.docs import apache_license, bundle_metadata, bundle_readme, data_license, \
        describe_training_data

    info = dict(run_config.get("bundle") or {})
    info.setdefault("name", root.resolve().name)
    info.setdefault("version", "0.1.0")
    info.setdefault("changelog", {info["version"]: "initial release"})
    configs = plain_configs = bundle_configs(run_config)
    required = _required_packages(configs, exported)
    if exported:
        configs = {k: rewrite_config(v) for k, v in configs.items()}
    versions = {"monai": monai.__version__, "torch": torch.__version__.split("+")[0], "numpy": numpy.__version__}
    td = describe_training_data(run_config, base=root)
    meta = bundle_metadata(run_config, version=info["version"], changelog=info["changelog"], versions=versions,
                           required_packages=required, name=info.get("display_name"), evaluation=evaluation,
                           training_data=td)
    for sub in ("configs", "docs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / "configs" / "metadata.json", meta)
    for key, cfg in configs.items():
        write_json_atomic(root / "configs" / f"{key}.json", cfg)
    (root / "configs" / "logging.conf").write_text(LOGGING_CONF, encoding="utf-8")
    (root / "docs" / "README.md").write_text(
        bundle_readme(run_config, meta, bundle_name=info["name"], training=info.get("training") or {},
                      metrics=evaluation, training_data=td, configs=plain_configs,
                      training_curves=(root / "docs" / TRAINING_CURVES).is_file(),
                      other_metrics=other_evaluations(root)), encoding="utf-8")
    (root / "docs" / "data_license.txt").write_text(data_license(td), encoding="utf-8")
    (root / "LICENSE").write_text(apache_license(), encoding="utf-8")
    weights = root / WEIGHTS
    (root / "large_files.yml").write_text(_large_files(sha256_file(weights), weights.stat().st_size / 2**20),
                                          encoding="utf-8")


#: ``docs/evaluation_<NAME>/``: another evaluation of the bundle's weights (``package --also-evaluated``).
OTHER_EVALUATION_PREFIX = "evaluation_"


def other_evaluations(root: Path) -> dict[str, dict[str, Any]]:
    """``{NAME: metrics.json}`` of the bundle's other evaluations (``docs/evaluation_<NAME>/``), by name."""
    out = {}
    for folder in sorted((root / "docs").glob(f"{OTHER_EVALUATION_PREFIX}*")):
        if (folder / "metrics.json").is_file():
            out[folder.name[len(OTHER_EVALUATION_PREFIX):]] = read_json(folder / "metrics.json", "evaluation (metrics.json)")
    return out


def _copy_evaluation(eval_dir: Path, dest: Path) -> None:
    """``metrics.json``, ``report.md`` and the plots of an evaluation folder into ``dest`` (created)."""
    dest.mkdir(parents=True)
    for f in sorted(eval_dir.iterdir()):
        if f.is_file() and (f.suffix in (".png", ".md") or f.name == "metrics.json"):
            shutil.copyfile(f, dest / f.name)


def _checked_others(others: Mapping[str, str | Path] | None, kind: str, weights_sha: str, dest: Path,
                    checkpoint: str) -> dict[str, Path]:
    """Validated ``{NAME: EVAL_DIR}`` of ``--also-evaluated``: names of letters, digits, ``_`` and ``-``;
    each an evaluation of these weights."""
    out = {}
    for name, folder in dict(others or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise InputError(f"--also-evaluated: {name!r} is not a name of letters, digits, '_' and '-'")
        _check_evaluation(Path(folder), kind, weights_sha, dest=dest, checkpoint=checkpoint)
        out[name] = Path(folder)
    return out


def _refuse_occupied(dest: Path, force: bool) -> None:
    """A ``dest`` that holds anything is replaced only with ``force``."""
    if dest.exists() and not force and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest}: exists and is not an empty folder (pass --force to replace it)")


def _swap_in(tmp: Path, dest: Path, force: bool) -> None:
    """Rename the finished ``tmp`` folder onto ``dest`` (replacing it only with ``force``)."""
    _refuse_occupied(dest, force)  # again: something may have appeared while ``tmp`` was filled
    replace_dir(tmp, dest)


def _check_evaluation(eval_dir: Path, kind: str, weights_sha: str, dest: Path | None = None,
                      checkpoint: str = "best") -> dict[str, Any]:
    """The ``metrics.json`` of ``eval_dir`` if it evaluates exactly the weights being packaged (``weights_sha``).

    Only an evaluation of a bundle (``ichct evaluate --bundle``) records the sha256 of the weights
    it ran; an evaluation of a run directory (``--run``) names the run and checkpoint but not the
    weights, which may have changed since, so it is refused with what to do instead.

    Raises
    ------
    FileNotFoundError
        No ``metrics.json``.
    ichct.errors.InputError
        An evaluation of another model, of a run rather than a bundle, of other weights, or on
        training patients.
    """
    mpath = eval_dir / "metrics.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath}: missing (run `ichct evaluate --bundle BUNDLE ... --out {eval_dir}` first)")
    metrics = read_json(mpath, "evaluation (metrics.json)")
    if not isinstance(metrics, Mapping):
        raise InputError(mpath, "not an ichct evaluation (metrics.json of `ichct evaluate`)")
    runs = (metrics.get("model") or {}).get("runs") or {}
    entry = runs.get(kind) or {}
    bundle = str(dest) if dest is not None else "BUNDLE"
    manifest = (metrics.get("manifest") or {}).get("path") or "MANIFEST"
    todo = (f"package without --evaluation, run `ichct evaluate --bundle {bundle} --manifest {manifest} --split "
            f"{metrics.get('split') or 'test'} --out EVAL_DIR`, then package again with --evaluation EVAL_DIR")
    if not entry:
        raise InputError(f"{mpath}: evaluates no {kind} model (it evaluates: {', '.join(sorted(runs)) or 'nothing'}); "
                         f"{todo}")
    got = entry.get("weights_sha256")
    if got is None and not entry.get("bundle_dir"):
        raise InputError(f"{mpath}: this evaluation was made from run {entry.get('run_dir', '?')} "
                         f"({entry.get('checkpoint', '?')} checkpoint), not from a bundle of the weights being "
                         "packaged; an evaluation of a run does not record which weights it ran, so it cannot be "
                         f"matched to them: {todo}")
    if got != weights_sha:
        raise InputError(f"{mpath}: evaluates other weights than this run's {checkpoint} checkpoint "
                         f"(bundle {entry.get('bundle_dir', '?')}, weights sha256 {got} vs {weights_sha}); {todo}")
    if metrics.get("allow_overlap"):
        raise InputError(f"{mpath}: evaluated on training patients (--allow-overlap); not a valid performance report")
    return metrics


def _merged_changelog(dest: Path, version: str, changelog: Mapping[str, str] | None,
                      trained_on: str = "the synthetic default cohort") -> dict[str, str]:
    """The new version's entries on top of those of the bundle being replaced (newest first).

    ``trained_on`` words the default first entry ("initial release: trained on ...").
    """
    earlier: dict[str, str] = {}
    meta = dest / "configs" / "metadata.json"
    if meta.is_file():
        try:
            old = dict(json.loads(meta.read_text(encoding="utf-8")).get("changelog") or {})
            earlier = {str(k): str(v) for k, v in old.items()}
        except (ValueError, TypeError, AttributeError):  # an unreadable old changelog is not carried over
            earlier = {}
    earlier.pop(version, None)
    new = dict(changelog or {})
    if version not in new:
        new[version] = "retrained" if earlier else f"initial release: trained on {trained_on}"
    return {**new, **earlier}


#: Config keys of how a trained model reads and predicts that can change after training: test-time
#: mirroring, brain-referenced HU, a segmenter's classifier slice gate and its sliding-window overlap
#: (``ichct bundle package|refresh`` set them; evaluate the bundle again).
INFERENCE_KEYS = ("tta_mirror_axes", "brain_reference_hu", "classifier_slice_gate", "sw_overlap")


def with_inference_settings(run_config: Mapping[str, Any], settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``run_config`` with the :data:`INFERENCE_KEYS` of ``settings`` set in its training config (each
    checked like any config value; ``null`` turns ``brain_reference_hu`` off, ``[]`` the mirroring).

    Parameters
    ----------
    run_config
        A run's ``config.json`` or a bundle's ``models/run_config.json`` (``kind``, ``config``).
    settings
        ``{key: value}``; None or empty: unchanged.

    Returns
    -------
    dict
        A new dict.

    Examples
    --------
    >>> rc = with_inference_settings({"kind": "seg", "config": {}}, {"tta_mirror_axes": [0], "brain_reference_hu": 30})
    >>> rc["config"]
    {'tta_mirror_axes': [0], 'brain_reference_hu': 30.0}
    >>> with_inference_settings({"kind": "cls", "config": {}}, {"tta_mirror_axes": [2]})
    Traceback (most recent call last):
    ...
    ichct.errors.InputError: training config: config key 'tta_mirror_axes' must be a list of distinct spatial axes from 0 to 1 (may be empty), got [2]
    """
    from ichct.pipeline.models.config import resolve_config

    out = copy.deepcopy(dict(run_config))
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(INFERENCE_KEYS))
    if unknown:
        raise ValueError(f"not an inference setting: {unknown[0]!r} (one of {', '.join(INFERENCE_KEYS)})")
    if settings:
        checked = resolve_config(str(out.get("kind")), settings)
        out["config"] = {**dict(out.get("config") or {}), **{k: checked[k] for k in settings}}
    return out


def package_bundle(run_dir: str | Path, bundle_dir: str | Path, *, name: str | None = None, version: str = "0.1.0",
                   changelog: Mapping[str, str] | None = None, evaluation: str | Path | None = None,
                   force: bool = False, checkpoint: str = "best",
                   also_evaluated: Mapping[str, str | Path] | None = None,
                   inference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Turn a training run (``ichct train``) into a bundle folder.

    Parameters
    ----------
    run_dir
        The run: ``config.json``, ``best.pt`` (or ``last.pt``), ``thresholds.json``,
        ``train_patients.json``, ``metrics.csv``.
    bundle_dir
        The bundle folder to write (must not exist or be empty unless ``force``). Written into a
        temporary folder beside it and renamed at the end: nothing partial is ever left.
    name
        Display name in ``metadata.json`` (default by model kind).
    version, changelog
        Semantic version and ``{version: change}``. Entries of other versions in the ``metadata.json``
        of a bundle being replaced (``force``) are kept. Without an entry for ``version``: "initial
        release" when there is no earlier one, else "retrained".
    evaluation
        Folder written by ``ichct evaluate --bundle`` for a bundle of this run's weights: its
        numbers go into ``metadata.json`` and ``docs/README.md``, and ``metrics.json``,
        ``report.md`` and plots are kept in ``docs/evaluation/``. An evaluation of the run itself
        (``ichct evaluate --run``) records no weights sha256 and is refused, saying what to run.
    force
        Replace an existing bundle folder.
    checkpoint
        ``"best"`` or ``"last"``.
    also_evaluated
        ``{NAME: EVAL_DIR}``: other evaluations of these weights (another cohort, a shifted domain),
        each kept in ``docs/evaluation_<NAME>/`` and shown in the README's Performance section.
    inference
        Inference settings of the bundle (:func:`with_inference_settings`: ``tta_mirror_axes``,
        ``brain_reference_hu``); the others as the run was trained.

    Returns
    -------
    dict
        Summary (paths, weights sha256 and size).

    Notes
    -----
    What the docs and ``metadata.json`` say the model was trained on is derived from the run's
    manifest (:func:`ichct.pipeline.bundle.docs.describe_training_data`: file name, ``source``,
    sha256, fold) and stored as ``bundle.training_data`` in ``models/run_config.json``; the
    wording of the synthetic default cohort is kept only for that manifest.
    """
    from ichct.pipeline.bundle.docs import describe_training_data, training_data_summary
    from ichct.pipeline.models.inference import load_run

    run = Path(run_dir)
    dest = Path(bundle_dir)
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise InputError(f"--version must be semantic (MAJOR.MINOR.PATCH), got {version!r}")
    model = load_run(run, device="cpu", checkpoint=checkpoint)  # validates config.json and the weights
    for need in ("thresholds.json", "train_patients.json"):
        if not (run / need).is_file():
            raise FileNotFoundError(f"{run / need}: missing; a bundle needs it")
    ckpt = load_checkpoint(run / f"{checkpoint}.pt")
    state = model_state_dict(ckpt, run / f"{checkpoint}.pt")
    buf = io.BytesIO()
    torch.save(state, buf)
    weights_bytes = buf.getvalue()
    weights_sha = hashlib.sha256(weights_bytes).hexdigest()
    metrics = (_check_evaluation(Path(evaluation), model.kind, weights_sha, dest=dest, checkpoint=checkpoint)
               if evaluation is not None else None)
    others = _checked_others(also_evaluated, model.kind, weights_sha, dest, checkpoint)
    # what the model was trained on, from the run's manifest (its path is absolute in config.json)
    training_data = describe_training_data(model.run_config, base=run)

    _refuse_occupied(dest, force)  # before any work
    changelog = _merged_changelog(dest, version, changelog, trained_on=training_data_summary(training_data))
    tmp = temp_dir_beside(dest)
    try:
        models = tmp / "models"
        models.mkdir()
        (models / "model.pt").write_bytes(weights_bytes)
        for f in ("thresholds.json", "train_patients.json"):
            shutil.copyfile(run / f, models / f)
        if (run / POSTPROCESSING_FILE).is_file():  # how ichct postprocess chose the confidence filter or thresholds
            shutil.copyfile(run / POSTPROCESSING_FILE, models / POSTPROCESSING_FILE)
        rc = dict(model.run_config)
        # where the training data was cached (a path on the training machine) is no part of the model
        rc["config"] = {k: v for k, v in dict(rc.get("config") or {}).items() if k not in DATA_ACCESS_KEYS}
        rc = with_inference_settings(rc, inference)
        if rc.get("manifest"):
            rc["manifest"] = os.path.relpath(Path(rc["manifest"]).resolve(), dest.resolve()).replace(os.sep, "/")
        rc["bundle"] = {"name": dest.name, "display_name": name, "version": version,
                        "changelog": changelog,
                        "source_run": run.resolve().name, "checkpoint": checkpoint, "epoch": model.epoch,
                        "weights_sha256": weights_sha, "training": training_summary(run, model.kind, ckpt),
                        "training_data": training_data}
        write_json_atomic(models / "run_config.json", rc)
        if (run / "metrics.csv").is_file():
            (tmp / "docs" / "training").mkdir(parents=True)
            shutil.copyfile(run / "metrics.csv", tmp / "docs" / "training" / "metrics.csv")
        if (run / TRAINING_CURVES).is_file():  # the run's loss and validation curves (ichct train writes them)
            (tmp / "docs").mkdir(exist_ok=True)
            shutil.copyfile(run / TRAINING_CURVES, tmp / "docs" / TRAINING_CURVES)
        if metrics is not None:
            _copy_evaluation(Path(evaluation), tmp / "docs" / "evaluation")  # type: ignore[arg-type]
        for other, folder in others.items():
            _copy_evaluation(folder, tmp / "docs" / f"{OTHER_EVALUATION_PREFIX}{other}")
        write_bundle_files(tmp, rc, metrics)
        _swap_in(tmp, dest, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size_mb = len(weights_bytes) / 2**20
    if size_mb > MAX_COMMITTED_WEIGHTS_MB:
        logger.warning("%s: weights are %.1f MB (> %g MB): do not commit them; see large_files.yml",
                       dest / WEIGHTS, size_mb, MAX_COMMITTED_WEIGHTS_MB)
    return {"bundle_dir": str(dest), "kind": model.kind, "version": version, "weights_sha256": weights_sha,
            "weights_mb": round(size_mb, 3), "evaluation": None if metrics is None else str(evaluation)}


# --------------------------------------------------------------------------------------------
# Regenerating an existing bundle's files
# --------------------------------------------------------------------------------------------


def _new_evaluations(root: Path, kind: str, sha: str, evaluation: str | Path | None,
                     also_evaluated: Mapping[str, str | Path] | None) -> tuple[dict[str, Any] | None, dict[str, Path]]:
    """The checked ``metrics.json`` of a new main evaluation (or None) and the checked other ones, by name."""
    metrics = (_check_evaluation(Path(evaluation), kind, sha, dest=root, checkpoint="bundle")
               if evaluation is not None else None)
    return metrics, _checked_others(also_evaluated, kind, sha, root, "bundle")


def _swap_evaluations(docs: Path, evaluation: str | Path | None, others: Mapping[str, Path]) -> None:
    """Replace ``docs/evaluation/`` and ``docs/evaluation_<NAME>/`` with the given evaluation folders."""
    targets = ([(Path(evaluation), docs / "evaluation")] if evaluation is not None else []) + [
        (folder, docs / f"{OTHER_EVALUATION_PREFIX}{name}") for name, folder in others.items()]
    for source, target in targets:
        shutil.rmtree(target, ignore_errors=True)
        _copy_evaluation(source, target)


def refresh_bundle(bundle_dir: str | Path, *, version: str | None = None, change: str | None = None,
                   evaluation: str | Path | None = None,
                   also_evaluated: Mapping[str, str | Path] | None = None,
                   inference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Regenerate a bundle's configs, metadata, docs and licences from its ``models/``; the weights stay.

    What ``ichct bundle package`` writes besides ``models/`` and the copied run files (the
    evaluation in ``docs/evaluation/``, the training log and curves) is rewritten by the current
    generator from ``models/run_config.json``, with the numbers of ``docs/evaluation/metrics.json``.
    Written into a copy of the bundle beside it that replaces the bundle at the end.

    Parameters
    ----------
    bundle_dir
        The bundle.
    version, change
        A new version (``MAJOR.MINOR.PATCH``) and its changelog entry (recorded in
        ``models/run_config.json`` too); without them the version stays.
    evaluation, also_evaluated
        New evaluations of the bundle's weights (``ichct evaluate --bundle``) that replace
        ``docs/evaluation/`` and ``docs/evaluation_<NAME>/``, for example after ``ichct
        postprocess`` changed its post-processing.
    inference
        New inference settings (:func:`with_inference_settings`), recorded in
        ``models/run_config.json``; the others stay. Its evaluations are those given: evaluate the
        bundle again after changing them.

    Raises
    ------
    ichct.errors.InputError
        Not a bundle, a version that is not semantic, or an evaluation of other weights (its
        numbers would describe another model).
    """
    root = Path(bundle_dir)
    rc_path = root / "models" / "run_config.json"
    if not (root / WEIGHTS).is_file() or not rc_path.is_file():
        raise FileNotFoundError(f"{root}: not an ichct bundle (needs {WEIGHTS} and models/run_config.json)")
    if version is not None and not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise InputError(f"--version must be semantic (MAJOR.MINOR.PATCH), got {version!r}")
    rc = read_json(rc_path, "bundle run config")
    read_run_config(rc_path, "bundle run config")  # kind and training config checked
    rc = with_inference_settings(rc, inference)
    sha = sha256_file(root / WEIGHTS)
    new_metrics, others = _new_evaluations(root, rc["kind"], sha, evaluation, also_evaluated)
    ev_path = root / "docs" / "evaluation" / "metrics.json"
    metrics = new_metrics if new_metrics is not None else (
        read_json(ev_path, "evaluation (metrics.json)") if ev_path.is_file() else None)
    measured = ((metrics or {}).get("model") or {}).get("runs", {}).get(rc["kind"], {}).get("weights_sha256")
    if measured is not None and measured != sha:
        raise InputError(ev_path, f"evaluates other weights (sha256 {measured}) than {WEIGHTS} ({sha})")
    info = dict(rc.get("bundle") or {})
    if version is not None or change is not None:
        new_version = version or str(info.get("version", "0.1.0"))
        info["changelog"] = {new_version: change or "regenerated configs and docs", **{
            k: v for k, v in dict(info.get("changelog") or {}).items() if k != new_version}}
        info["version"] = new_version
        rc["bundle"] = info
    tmp = temp_dir_beside(root)
    try:
        shutil.copytree(root, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        write_json_atomic(tmp / "models" / "run_config.json", rc)
        _swap_evaluations(tmp / "docs", evaluation, others)
        write_bundle_files(tmp, rc, metrics)
        replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"bundle_dir": str(root), "kind": rc["kind"], "version": info.get("version"), "weights_sha256": sha}
