"""Models and studies for the ``ichct predict`` tests (a plain module, not a conftest).

* :func:`write_run` writes a training run folder (``config.json``, ``best.pt``, ``thresholds.json``)
  holding a randomly initialised network built by training's own constructor, which
  :func:`ichct.pipeline.models.inference.load_run` loads like any trained run (for I/O tests).
* :class:`BloodRangeSeg` / :class:`BloodRangeCls` are deterministic "models" that label voxels
  whose whole 3x3(x3) neighbourhood lies in the blood range of the subdural window, so that the
  prediction of a phantom study is known in world coordinates (for alignment tests). They run
  through the real inference path (preprocessing, sliding window, inversion).
* :func:`write_study` writes a phantom CT series (``dicom_factory``) with a large hematoma.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import dicom_factory as fac

SEG_CFG = {"spacing_mm": [3.0, 3.0, 5.0], "patch": [32, 32, 16], "sw_overlap": 0.25,
           "network": {"channels": [8, 16], "strides": [2], "num_res_units": 0}}
CLS_CFG = {"in_plane": [32, 32], "network": {"feature_dim": 16, "rnn_hidden": 8}}

#: The test phantom: the default head with a hematoma large enough to survive 3 x 3 x 5 mm voxels.
PHANTOM = fac.Phantom(hematoma_semi_axes=(22.0, 18.0, 15.0))
# subdural window (level 80, width 200): 50 HU -> 0.35, 80 HU -> 0.5; blood is 65 HU, brain 35 HU
_LO, _HI = 0.35, 0.5


def resolved(kind: str, overrides: dict[str, Any]) -> dict[str, Any]:
    from ichct.pipeline.models.config import resolve_config

    return resolve_config(kind, overrides)


def write_run(folder: Path, kind: str, overrides: dict[str, Any] | None = None, seed: int = 0,
              threshold: float | None = None) -> Path:
    """A run folder with random weights from :func:`ichct.pipeline.models.network_factory.build_network`."""
    from ichct.pipeline.decision import DecisionRule
    from ichct.pipeline.models.network_factory import build_network

    cfg = resolved(kind, overrides if overrides is not None else (SEG_CFG if kind == "seg" else CLS_CFG))
    torch.manual_seed(seed)
    net = build_network(kind, cfg)
    folder.mkdir(parents=True)
    torch.save({"model": net.state_dict(), "epoch": 0}, folder / "best.pt")
    (folder / "config.json").write_text(json.dumps({"kind": kind, "fold": 0, "seed": seed, "config": cfg,
                                                    "versions": {"ichct": "test"}}), encoding="utf-8")
    if kind == "cls":
        rule = DecisionRule("consecutive", threshold=threshold or 0.5, k=int(cfg["rule_k"]))
    else:
        rule = DecisionRule("seg_volume", threshold=threshold or 0.05, num_seg_classes=int(cfg["num_classes"]))
    rule.save(folder / "thresholds.json")
    return folder


def _in_range(x: torch.Tensor, dims: int) -> torch.Tensor:
    pool = F.max_pool3d if dims == 3 else F.max_pool2d
    hi = pool(x, 3, 1, 1)
    lo = -pool(-x, 3, 1, 1)
    return ((lo > _LO) & (hi < _HI)).float()


class BloodRangeSeg(torch.nn.Module):
    """3D "segmenter": label ``label`` where the subdural-window channel's 3x3x3 neighbourhood lies
    in 50..80 HU (blood); ``num_classes`` output channels."""

    def __init__(self, num_classes: int = 2, label: int = 1) -> None:
        super().__init__()
        self.num_classes, self.label = num_classes, label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = _in_range(x[:, 1:2], 3)
        out = torch.zeros((x.shape[0], self.num_classes, *x.shape[2:]), dtype=x.dtype)
        out[:, 0] = 0.5
        out[:, self.label] = fg[:, 0]
        return out


class BloodRangeCls(torch.nn.Module):
    """Slice "classifier": p(any) = p(intraparenchymal) high on slices with blood pixels, low elsewhere."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # x: (B, C, H, W, S)
        b, _, h, w, s = x.shape
        sl = x[:, 1].permute(0, 3, 1, 2).reshape(b * s, 1, h, w)
        count = _in_range(sl, 2).sum(dim=(1, 2, 3)).reshape(b, s)
        logit = 4.0 * (torch.clamp(count, max=3.0) - 0.5)
        logits = torch.full((b, s, 6), -6.0)
        logits[:, :, 0] = logit
        logits[:, :, 2] = logit
        return {"logits": logits}


def loaded(kind: str, network: torch.nn.Module, folder: Path, overrides: dict[str, Any] | None = None) -> Any:
    """A :class:`~ichct.pipeline.models.inference.LoadedModel` around ``network`` (with a run folder on disk)."""
    from ichct.pipeline.decision import DecisionRule
    from ichct.pipeline.models.inference import LoadedModel

    cfg = resolved(kind, overrides if overrides is not None else (SEG_CFG if kind == "seg" else CLS_CFG))
    folder.mkdir(parents=True, exist_ok=True)
    rule = (DecisionRule("consecutive", threshold=0.5, k=2) if kind == "cls"
            else DecisionRule("seg_volume", threshold=0.05, num_seg_classes=int(cfg["num_classes"])))
    return LoadedModel(kind=kind, run_dir=folder, run_config={"kind": kind, "config": cfg, "fold": 0, "seed": 0},
                       config=cfg, network=network.eval(), rule=rule, device=torch.device("cpu"), checkpoint="best",
                       epoch=0)


#: The same head without blood (the hematoma has the density of brain).
NEGATIVE_PHANTOM = fac.Phantom(hematoma_semi_axes=(22.0, 18.0, 15.0), hematoma_hu=35.0)


def write_study(folder: Path, key: str = "study", phantom: fac.Phantom = PHANTOM,
                **stack_kwargs: Any) -> tuple[fac.SeriesSpec, list[Path]]:
    """A phantom head CT series (scrambled file order, random names), by default with the large hematoma."""
    spec = fac.make_stack(stack_kwargs.pop("n_slices", 20), stack_kwargs.pop("spacing_mm", 5.0), key=key,
                          phantom=phantom, instance_numbers="scrambled", **stack_kwargs)
    paths = fac.write_series(folder, spec, study=fac.Study(key=key), phantom=phantom)
    return spec, paths


def hematoma_r2(world_lps: np.ndarray, grow_mm: float = 0.0) -> np.ndarray:
    """Normalised squared radius of points w.r.t. the phantom hematoma grown by ``grow_mm``."""
    c = np.asarray(PHANTOM.center) + np.asarray(PHANTOM.hematoma_offset)
    semi = np.asarray(PHANTOM.hematoma_semi_axes) + grow_mm
    d = (np.asarray(world_lps, dtype=float) - c) / semi
    return np.einsum("...i,...i->...", d, d)


def hematoma_center_lps() -> np.ndarray:
    return np.asarray(PHANTOM.center) + np.asarray(PHANTOM.hematoma_offset)
