"""PNG overlays of a prediction: key slices in the brain window with the mask outlined, and the
per-slice probabilities along the stack.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display).
Slices are shown as the reader stores them: ``volume[:, :, k].T``, i.e. DICOM rows downwards and
columns to the right (the radiological view of an axial series). Nothing identifying the patient
is drawn or stored in the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["BRAIN_WINDOW", "LABEL_COLORS", "key_slices", "write_key_slice", "write_probability_plot"]

#: (level, width) in HU.
BRAIN_WINDOW: tuple[float, float] = (40.0, 80.0)

#: Outline / line colour per label name.
LABEL_COLORS: dict[str, str] = {"any": "#ff2d2d", "epidural": "#ffb000", "intraparenchymal": "#ff2d2d",
                                "intraventricular": "#00c8ff", "subarachnoid": "#7CFC00", "subdural": "#ff5cf0"}


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def key_slices(labels: np.ndarray | None, slice_probs: np.ndarray | None, n_slices: int, max_slices: int = 4) -> list[int]:
    """Slices worth looking at, in stack order.

    With a label map: the slice of largest blood area of every label value present (largest
    first, at most ``max_slices``); with slice probabilities: the slice of highest ``any``
    probability is added. Without any finding: that slice, or the middle slice.
    """
    picks: list[int] = []
    if labels is not None and np.any(labels):
        values = [int(v) for v in np.unique(labels) if v > 0]
        areas = [(int(np.count_nonzero(labels == v, axis=(0, 1)).max()), v) for v in values]
        order = [v for _, v in sorted(areas, reverse=True)]
        any_area = np.count_nonzero(labels, axis=(0, 1))
        picks.append(int(np.argmax(any_area)))
        for v in order:
            k = int(np.argmax(np.count_nonzero(labels == v, axis=(0, 1))))
            if k not in picks:
                picks.append(k)
    if slice_probs is not None and len(slice_probs):
        k = int(np.argmax(slice_probs[:, 0]))
        if k not in picks:
            picks.append(k)
    if not picks:
        picks.append(n_slices // 2)
    return sorted(picks[:max_slices])


def write_key_slice(path: str | Path, hu_volume: np.ndarray, k: int, labels: np.ndarray | None,
                    label_names: Mapping[int, str], spacing_mm: Sequence[float], title: str) -> Path:
    """One slice in the brain window with each label's outline (a PNG at ``path``).

    Parameters
    ----------
    hu_volume
        ``(X, Y, Z)`` HU volume.
    k
        Slice index (last axis).
    labels
        ``(X, Y, Z)`` label map on the same grid, or ``None``.
    label_names
        Label value -> name (for colours and the legend).
    spacing_mm
        Voxel spacing, for the pixel aspect ratio.
    title
        Figure title (no patient information).
    """
    from matplotlib.lines import Line2D

    level, width = BRAIN_WINDOW
    img = np.asarray(hu_volume[:, :, k], dtype=np.float32).T
    aspect = float(spacing_mm[1]) / float(spacing_mm[0])
    fig = _figure(5.0, 5.4)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.92))
    ax.imshow(img, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, aspect=aspect,
              interpolation="nearest")
    handles = []
    if labels is not None:
        lab = np.asarray(labels[:, :, k]).T
        for value, name in label_names.items():
            m = lab == value
            if m.any():
                color = LABEL_COLORS.get(name, "#ff2d2d")
                ax.contour(m.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.2)
                handles.append(Line2D([], [], color=color, label=name))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.6)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    path = Path(path)
    fig.savefig(path)
    return path


def write_probability_plot(path: str | Path, slice_probs: np.ndarray, names: Sequence[str], threshold: float | None,
                           ranges: Sequence[Sequence[int]] = (), title: str = "") -> Path:
    """Per-slice probabilities of every label along the stack, with the threshold and the ranges
    that drove the ``any`` call shaded (a PNG at ``path``)."""
    p = np.asarray(slice_probs, dtype=np.float64)
    x = np.arange(p.shape[0])
    fig = _figure(7.0, 3.2)
    ax = fig.add_axes((0.09, 0.16, 0.72, 0.72))
    for a, b in ranges:
        ax.axvspan(a - 0.5, b + 0.5, color="#ffcccc", alpha=0.6, lw=0)
    for j, name in enumerate(names):
        ax.plot(x, p[:, j], color=LABEL_COLORS.get(name, "k") if name != "any" else "k",
                lw=2.0 if name == "any" else 1.0, label=name, marker="." if len(x) < 80 else None)
    if threshold is not None:
        ax.axhline(threshold, color="0.4", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set_xlim(-0.5, max(0.5, p.shape[0] - 0.5))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("slice (reader order)")
    ax.set_ylabel("probability")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    path = Path(path)
    fig.savefig(path)
    return path
