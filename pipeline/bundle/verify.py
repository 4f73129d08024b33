"""``ichct bundle verify``: every check a bundle must pass before it is shared.

:func:`verify_bundle` returns one :class:`CheckResult` per check:

* required files present;
* ``configs/metadata.json`` valid against the metadata schema (MONAI ``verify_metadata``, offline:
  the schema ships with ichct as package data, or ``--schema PATH``);
* every config and the documented combinations parse: ``@`` references exist, every
  ``_target_`` resolves, every ``imports`` entry imports, every argument a ``_target_`` is given is
  one it takes (a misspelt key is named, with the argument meant), and the transforms, the
  network and the inferers are built, so a value they refuse (a window without a width, a
  negative spacing) fails here, naming its entry, before anything runs;
* network input/output as ``network_data_format`` declares (MONAI ``verify_net_in_out``);
* ``models/model.pt`` loads with ``torch.load(..., weights_only=True)`` into ``network_def``;
* ``large_files.yml`` lists files that exist with the stated hash;
* ``load_bundle`` reads the bundle (run config, weights, thresholds, training patients).

An exported bundle (code in ``scripts/``) is checked with its own folder on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import logging
import pydoc
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ichct.errors import InputError

__all__ = ["CheckResult", "verify_bundle", "default_schema", "format_table", "CONFIG_SETS"]

logger = logging.getLogger("ichct.bundle")

#: Config file combinations that docs/bundles.md documents (each must parse as one).
CONFIG_SETS: tuple[tuple[str, ...], ...] = (
    ("configs/inference.json",),
    ("configs/train.json",),
    ("configs/evaluate.json",),
    ("configs/train.json", "configs/evaluate.json"),
    ("configs/train.json", "configs/multi_gpu_train.json"),
)


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str


def default_schema() -> Path:
    """The metadata schema shipped inside the package (``ichct/pipeline/bundle/schema``)."""
    return Path(str(resources.files("ichct.pipeline.bundle").joinpath("schema/bundle_metadata.schema.json")))


@contextlib.contextmanager
def bundle_imports(root: Path) -> Iterator[None]:
    """Make the bundle's ``scripts`` package importable (and forget it afterwards)."""

    def purge() -> None:
        for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
            del sys.modules[k]

    purge()
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(root))
        purge()


def _parser(root: Path, files: Sequence[str]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(root / f) for f in files])
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    return parser


#: Keys of a ``_target_`` entry that MONAI reads itself rather than passing to the target.
_RESERVED_KEYS = frozenset({"_target_", "_disabled_", "_requires_", "_desc_", "_mode_"})
#: Entries built by :func:`_check_values`: the transforms of every ``Compose``, the networks and the inferers.
_BUILT = re.compile(r"(^|#)((pre|post)processing#transforms#\d+|network_def|inferer)$")


def _shown(id_: str) -> str:
    """A config id as the configs write it (``train#preprocessing``; MONAI may keep ``::`` inside)."""
    return id_.replace("::", "#")


def _unknown_arguments(id_: str, target: Any, conf: Mapping[str, Any]) -> list[str]:
    """Problems of the arguments of one ``_target_`` entry that its callable does not take."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to compare with
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    names = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    problems = []
    for key in conf:
        if key in _RESERVED_KEYS or key in names:
            continue
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (it takes: {', '.join(names)})"
        problems.append(f"{_shown(id_)}: {conf['_target_']} has no argument {key!r}{hint}")
    return problems


def _check_values(parser: Any, items: Mapping[str, Any]) -> list[str]:
    """Build the transforms, networks and inferers; the entries whose values they refuse."""
    problems = []
    for id_, item in items.items():
        if not _BUILT.search(_shown(id_)) or not isinstance(item.get_config(), Mapping):
            continue
        try:
            parser.get_parsed_content(id_, instantiate=True)
        except Exception as exc:  # noqa: BLE001 - a constructor may raise anything for a bad value
            cause = exc
            while cause.__cause__ is not None:  # MONAI wraps the constructor's error
                cause = cause.__cause__
            problems.append(f"{_shown(id_)}: {item.get_config().get('_target_')}: {type(cause).__name__}: {cause}")
    return problems


def _check_configs(root: Path, files: Sequence[str]) -> str:
    """Parse a config combination: references, targets, their arguments, imports, and the values of
    the transforms, networks and inferers; returns a summary."""
    from monai.bundle import ConfigComponent
    from monai.bundle.reference_resolver import ReferenceResolver

    parser = _parser(root, files)
    parser.parse(reset=True)
    items = parser.ref_resolver.items
    problems: list[str] = []
    n_targets = 0
    for id_, item in items.items():
        conf = item.get_config()
        for ref in ReferenceResolver.find_refs_in_config(conf, id_):
            if ref not in items:
                problems.append(f"{_shown(id_)}: reference @{_shown(ref)} does not exist")
        if isinstance(item, ConfigComponent) and ConfigComponent.is_instantiable(conf) and not item.is_disabled():
            n_targets += 1
            try:
                name = item.resolve_module_name()
                target = pydoc.locate(name) if isinstance(name, str) else name
                if target is None:
                    raise ModuleNotFoundError(str(conf.get("_target_")))
            except Exception as exc:  # noqa: BLE001 - MONAI raises several kinds
                problems.append(f"{_shown(id_)}: _target_ {conf.get('_target_')!r} does not resolve ({exc})")
                continue
            problems += _unknown_arguments(id_, target, conf)
    for stmt in parser.get("imports", []) or []:
        if isinstance(stmt, str) and stmt.startswith("$import "):
            try:
                exec(stmt[1:], {})  # only import statements
            except ImportError as exc:
                problems.append(f"imports: {stmt!r} fails ({exc})")
    if not problems:
        problems = _check_values(parser, items)
    if problems:
        raise InputError("; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    return f"{len(items)} items, {n_targets} targets resolved, their arguments and values checked"


def _check_weights(root: Path) -> str:
    from ichct.pipeline.bundle.package import WEIGHTS
    from ichct.pipeline.core.weights import load_checkpoint, model_state_dict

    path = root / WEIGHTS
    state = model_state_dict(load_checkpoint(path), path)
    net = _parser(root, ["configs/inference.json"]).get_parsed_content("network_def")
    net.load_state_dict(state, strict=True)
    size = path.stat().st_size / 2**20
    return f"{len(state)} tensors, {sum(int(t.numel()) for t in state.values()):,} values, {size:.2f} MB, strict load OK"


def _check_large_files(root: Path) -> str:
    import yaml

    from ichct.pipeline.core.files import sha256_file

    doc = yaml.safe_load((root / "large_files.yml").read_text(encoding="utf-8")) or {}
    entries = doc.get("large_files")
    if not isinstance(entries, list) or not entries:
        raise InputError("large_files.yml: needs a non-empty 'large_files' list")
    for e in entries:
        p = root / str(e.get("path", ""))
        if not p.is_file():
            raise FileNotFoundError(f"{e.get('path')}: listed in large_files.yml but missing "
                                    f"(fetch: python -m monai.bundle download_large_files --bundle_path {root})")
        if e.get("hash_type", "sha256") == "sha256" and e.get("hash_val") and sha256_file(p) != e["hash_val"]:
            raise InputError(f"{e.get('path')}: sha256 differs from large_files.yml")
    return f"{len(entries)} file(s) present with matching hashes"


@contextlib.contextmanager
def _monai_scripts_quiet():
    """MONAI's bundle scripts (and its schema download helper) log at INFO to *stdout*; keep that off
    stdout, where the check table goes, unless ichct logs at debug level (-v)."""
    noisy = [logging.getLogger(name) for name in ("monai.bundle.scripts", "monai.apps")]
    levels = [lg.level for lg in noisy]
    if not logger.isEnabledFor(logging.DEBUG):
        for lg in noisy:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)


def _check_metadata(root: Path, schema: Path) -> str:
    from monai.bundle import verify_metadata

    if not schema.is_file():
        raise FileNotFoundError(f"{schema}: metadata schema not found")
    with warnings.catch_warnings(), _monai_scripts_quiet():  # a local schema has no hash to check against
        warnings.filterwarnings("ignore", message="No hash value provided")
        verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(schema))
    meta = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    return f"version {meta.get('version')}, schema {schema.name}"


def _check_net(root: Path) -> str:
    from monai.bundle import verify_net_in_out

    with _monai_scripts_quiet():
        verify_net_in_out(net_id="network_def", meta_file=str(root / "configs" / "metadata.json"),
                          config_file=str(root / "configs" / "inference.json"), device="cpu", n=1, p=1, any=4,
                          bundle_root=str(root))
    return "input/output channels and dtype as in network_data_format"


def _check_load(root: Path) -> str:
    from ichct.pipeline.bundle.package import load_bundle

    m = load_bundle(root)
    keys = m.train_patient_keys
    return f"{m.kind} model, rule {m.rule.name if m.rule else None}, {len(keys)} training patient keys"


def verify_bundle(bundle_dir: str | Path, schema: str | Path | None = None) -> list[CheckResult]:
    """Run every check on a bundle folder; never raises for a failing check.

    Parameters
    ----------
    bundle_dir
        The bundle.
    schema
        Metadata JSON Schema (default: :func:`default_schema`).
    """
    from ichct.pipeline.bundle.package import REQUIRED_FILES

    root = Path(bundle_dir).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a bundle directory")
    schema_path = Path(schema) if schema is not None else default_schema()
    results: list[CheckResult] = []

    def run(name: str, fn: Callable[[], str]) -> None:
        try:
            results.append(CheckResult(name, True, fn()))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row of the table
            msg = " ".join(str(exc).split())
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {msg}"[:500]))

    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    results.append(CheckResult("required files", not missing,
                               f"missing: {', '.join(missing)}" if missing else f"{len(REQUIRED_FILES)} present"))
    have = set(REQUIRED_FILES) - set(missing)
    with bundle_imports(root):
        if "configs/metadata.json" in have:
            run("metadata schema", lambda: _check_metadata(root, schema_path))
        for files in CONFIG_SETS:
            if all(f in have for f in files):
                run("config parse: " + " + ".join(Path(f).name for f in files),
                    lambda files=files: _check_configs(root, files))  # type: ignore[misc]
        if {"configs/metadata.json", "configs/inference.json"} <= have:
            run("network in/out", lambda: _check_net(root))
        if {"models/model.pt", "configs/inference.json"} <= have:
            run("weights (weights_only=True)", lambda: _check_weights(root))
        if "large_files.yml" in have:
            run("large_files.yml", lambda: _check_large_files(root))
        if {"models/model.pt", "models/run_config.json"} <= have:
            run("load_bundle", lambda: _check_load(root))
    return results


def format_table(results: Sequence[CheckResult]) -> str:
    """A plain-text pass/fail table."""
    width = max(len(r.name) for r in results)
    lines = [f"{'check'.ljust(width)}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{r.name.ljust(width)}  {'PASS' if r.ok else 'FAIL'}    {r.detail}" for r in results]
    n_fail = sum(not r.ok for r in results)
    lines.append(f"bundle {'FAILED' if n_fail else 'OK'}: {len(results) - n_fail} of {len(results)} checks passed")
    return "\n".join(lines)
