"""The names that bundle configs give MONAI: every ``_target_`` of the committed (published) bundles
still resolves, they use no private name but the allowed deprecated aliases, and bundles packaged
now use public names only."""

from __future__ import annotations

import json
import pydoc
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_architecture import ALLOWED_PRIVATE

from ichct.pipeline.bundle.configs import bundle_configs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "bundles").glob("*/configs/*.json"))
RUN_CONFIGS = sorted((REPO / "bundles").glob("*/models/run_config.json"))
ICHCT_NAME = re.compile(r"(?<![\w.])ichct(?:\.\w+)+")  # as ichct.pipeline.bundle.code finds them


def targets(config: Any) -> Iterator[str]:
    """Every ``_target_`` string of a config, through nested dicts and lists."""
    if isinstance(config, dict):
        if isinstance(config.get("_target_"), str):
            yield config["_target_"]
        for value in config.values():
            yield from targets(value)
    elif isinstance(config, list):
        for value in config:
            yield from targets(value)


def strings(config: Any) -> Iterator[str]:
    """Every string of a config (``_target_`` values, ``$`` expressions, references)."""
    if isinstance(config, dict):
        for value in config.values():
            yield from strings(value)
    elif isinstance(config, list):
        for value in config:
            yield from strings(value)
    elif isinstance(config, str):
        yield config


def private_names(config: Any) -> set[str]:
    """The ``ichct.`` names of a config with a private part (``ichct.pipeline.train.engine._x``)."""
    return {m.group(0) for s in strings(config) for m in ICHCT_NAME.finditer(s)
            if any(p.startswith("_") and not p.startswith("__") for p in m.group(0).split("."))}


def _full_name(target: str) -> str:
    """The dotted name MONAI instantiates: short names are looked up in MONAI's components."""
    from monai.bundle.config_item import ComponentLocator

    if "." in target:
        return target
    module = ComponentLocator().get_component_module_name(target)
    module = module[0] if isinstance(module, list) else module
    return f"{module}.{target}" if module else target


ALLOWED_NAMES = {f"{module}.{name}" for module, name in ALLOWED_PRIVATE}


def test_there_are_committed_configs() -> None:
    assert len(CONFIGS) == 10 and len(RUN_CONFIGS) == 2  # 5 JSON configs in each of the two bundles


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_target_of_a_committed_config_resolves(path: Path) -> None:
    config = json.loads(path.read_text(encoding="utf-8"))
    unresolved = sorted({t for t in targets(config) if pydoc.locate(_full_name(t)) is None})
    assert not unresolved, f"{path}: _target_ that no longer resolves: {unresolved}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_committed_configs_use_no_private_name_but_allowed_aliases(path: Path) -> None:
    config = json.loads(path.read_text(encoding="utf-8"))
    assert private_names(config) <= ALLOWED_NAMES, private_names(config) - ALLOWED_NAMES


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.parent.parent.name)
def test_new_bundles_use_public_names_only(path: Path) -> None:
    """``ichct bundle package`` generates configs without private names (the published ones keep theirs)."""
    for name, config in bundle_configs(json.loads(path.read_text(encoding="utf-8"))).items():
        assert not private_names(config), (name, private_names(config))
        assert all(pydoc.locate(_full_name(t)) is not None for t in targets(config)), name


def test_the_allowed_private_targets_are_still_named_by_a_published_config() -> None:
    """An allowed alias that no committed config names any more can go (and leave the allow-list)."""
    named = set().union(*(private_names(json.loads(p.read_text(encoding="utf-8"))) for p in CONFIGS))
    assert ALLOWED_NAMES <= named, ALLOWED_NAMES - named
