"""Contact sheet of a study: every slice in the brain window (40/80) with label contours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ichct.pipeline.core.atomic import atomic_path

from .config import LABEL_VALUES, SUBTYPES

# RGB per subtype (epidural, intraparenchymal, intraventricular, subarachnoid, subdural)
COLOURS = {
    "epidural": (1.0, 0.2, 0.2),
    "intraparenchymal": (1.0, 0.85, 0.1),
    "intraventricular": (0.2, 0.6, 1.0),
    "subarachnoid": (0.2, 1.0, 0.3),
    "subdural": (1.0, 0.3, 1.0),
}


def _contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def contact_sheet(hu: np.ndarray, label: np.ndarray, window: tuple[float, float] = (40.0, 80.0), columns: int = 8) -> np.ndarray:
    """An RGB mosaic (float 0-1) of ``[k, j, i]`` slices, rows = image rows (anterior at the top)."""
    nk, nj, ni = hu.shape
    centre, width = window
    gray = np.clip((hu - (centre - width / 2)) / width, 0.0, 1.0)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for name in SUBTYPES:
        edge = np.stack([_contour(label[k] == LABEL_VALUES[name]) for k in range(nk)])
        rgb[edge] = COLOURS[name]
    cols = min(columns, nk)
    rows = -(-nk // cols)
    sheet = np.zeros((rows * nj, cols * ni, 3), dtype=np.float32)
    for k in range(nk):
        r, c = divmod(k, cols)
        sheet[r * nj:(r + 1) * nj, c * ni:(c + 1) * ni] = rgb[k]
    return sheet


def on_convert_grid(hu: np.ndarray, layout) -> np.ndarray:
    """Acquired slices shifted onto the (tilt-corrected) grid the labels live on, like the reader does."""
    if not layout.sheared:
        return hu
    from scipy import ndimage

    row, col = layout.iop[:3], layout.iop[3:]
    out = np.empty_like(hu)
    for k in range(hu.shape[0]):
        rel = layout.ipp[k] - layout.ipp[0]
        shift = (float(rel @ col) / layout.pixel_spacing[0], float(rel @ row) / layout.pixel_spacing[1])
        ndimage.shift(hu[k], shift, output=out[k], order=1, mode="constant", cval=-1024.0, prefilter=False)
    return out


def write_preview(path: str | Path, hu: np.ndarray, label: np.ndarray, title: str = "") -> Path:
    """Write the contact sheet as PNG (matplotlib Agg), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    sheet = contact_sheet(hu, label)
    height, width = sheet.shape[:2]
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi + 0.4), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, height / (height + 40)))
    ax.imshow(sheet, interpolation="nearest")
    ax.set_axis_off()
    fig.text(0.01, 1 - 0.2 / (height / dpi + 0.4), title + "   window 40/80", fontsize=9, va="center")
    fig.legend(handles=[Patch(color=COLOURS[n], label=n) for n in SUBTYPES], loc="upper right", ncol=5, fontsize=7, frameon=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path
