"""``training_curves.png`` of a run folder: loss, validation metrics and learning rate per epoch.

Drawn from ``metrics.csv`` alone (:func:`curve_series` picks the series out of its rows), with
matplotlib's object API on the Agg canvas, and written atomically. ``ichct train`` writes it into
the run folder when training ends (also when the time budget ends it).

Examples
--------
>>> rows = [{"epoch": "1", "train_loss": "0.9", "lr": "0.001", "val_dice": "nan"},
...         {"epoch": "2", "train_loss": "0.7", "lr": "0.0005", "val_dice": "0.41"}]
>>> series = curve_series(rows)
>>> series["train_loss"], series["val_dice"]
(([1, 2], [0.9, 0.7]), ([2], [0.41]))
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ichct.pipeline.core.atomic import atomic_path

__all__ = ["CURVES_NAME", "curve_series", "plot_training_curves"]

#: The file name in the run folder.
CURVES_NAME = "training_curves.png"

Series = tuple[list[int], list[float]]


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def curve_series(rows: Sequence[Mapping[str, Any]]) -> dict[str, Series]:
    """The curves of ``metrics.csv`` rows: column -> (epochs, values).

    ``train_loss`` and ``lr`` for every epoch, each ``val_*`` column for the epochs it was
    validated on (its value is a number there, ``nan`` or empty elsewhere). Columns without a
    value are left out.
    """
    columns = [c for c in (rows[0] if rows else {}) if c in ("train_loss", "lr") or c.startswith("val_")]
    out: dict[str, Series] = {}
    for column in columns:
        points = [(int(_number(r["epoch"])), _number(r.get(column))) for r in rows]
        points = [(e, v) for e, v in points if math.isfinite(v)]
        if points:
            out[column] = ([e for e, _ in points], [v for _, v in points])
    return out


def plot_training_curves(metrics_csv: str | Path, path: str | Path, title: str = "",
                         best_epoch: int | None = None) -> Path:
    """Draw the :func:`curve_series` of ``metrics_csv`` into the PNG ``path`` (atomically); returns ``path``.

    Three panels over the epochs: the training loss, the validation metrics (points at the
    validated epochs) and the learning rate; ``best_epoch`` (the epoch of ``best.pt``) is marked
    in each.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    with open(metrics_csv, newline="", encoding="utf-8") as f:
        series = curve_series(list(csv.DictReader(f)))
    fig = Figure(figsize=(10, 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    panels = (("training loss", ["train_loss"]), ("validation", sorted(c for c in series if c.startswith("val_"))),
              ("learning rate", ["lr"]))
    for ax, (name, columns) in zip(axes, panels):
        for column in columns:
            if column in series:
                epochs, values = series[column]
                ax.plot(epochs, values, marker="o" if name == "validation" else None, markersize=3, label=column)
        if best_epoch:
            ax.axvline(best_epoch, color="0.6", linestyle="--", linewidth=1, label=f"best.pt (epoch {best_epoch})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path
