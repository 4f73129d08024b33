"""CT intensity windowing: one HU window (``HUWindow``) or a stack of windows (``MultiWindow``).

A window is given as DICOM does (WindowCenter/WindowWidth): ``level`` is the HU value mapped to
the middle of the output range and ``width`` the HU span mapped onto the full output range, so
``level - width / 2`` maps to ``out_min`` and ``level + width / 2`` to ``out_max``.

Windowing changes intensities only: the ``MetaTensor`` affine, meta and ``applied_operations``
pass through unchanged, so ``Invertd`` still inverts the spatial transforms applied before it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform

#: Default head-CT windows for hemorrhage, in channel order: name -> (level HU, width HU).
#:
#: - ``brain``: level 40, width 80 (0..80 HU; parenchyma and acute blood),
#: - ``subdural``: level 80, width 200 (-20..180 HU; thin extra-axial collections next to bone),
#: - ``soft_tissue``: level 40, width 380 (-150..230 HU; scalp, swelling, large bleeds).
DEFAULT_WINDOWS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "brain": (40.0, 80.0),
        "subdural": (80.0, 200.0),
        "soft_tissue": (40.0, 380.0),
    }
)

#: Meta key that records the window names of a ``MultiWindow`` output, comma separated.
WINDOW_NAMES_KEY = "ichct_windows"


class HUWindow(ScaleIntensityRange):
    """Map one HU window linearly onto ``[out_min, out_max]`` (MONAI ``ScaleIntensityRange``).

    Parameters
    ----------
    level
        Window centre in HU (DICOM WindowCenter).
    width
        Window width in HU (DICOM WindowWidth), > 0.
    out_min, out_max
        Output values of ``level - width/2`` and ``level + width/2``.
    clip
        Clip the output to ``[out_min, out_max]`` (HU outside the window saturate).
    dtype
        Output dtype (float32 by default).

    Examples
    --------
    The brain window (level 40, width 80) maps 0..80 HU onto 0..1:

    >>> import torch
    >>> from ichct.transforms import HUWindow
    >>> hu = torch.tensor([[-1000.0, 0.0, 20.0, 40.0, 80.0, 1000.0]])
    >>> HUWindow(level=40, width=80)(hu).tolist()
    [[0.0, 0.0, 0.25, 0.5, 1.0, 1.0]]
    """

    def __init__(
        self,
        level: float,
        width: float,
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        dtype: DtypeLike = np.float32,
    ) -> None:
        if not width > 0:
            raise ValueError(f"window width must be positive, got {width}")
        self.level = float(level)
        self.width = float(width)
        super().__init__(
            a_min=self.level - self.width / 2.0,
            a_max=self.level + self.width / 2.0,
            b_min=out_min,
            b_max=out_max,
            clip=clip,
            dtype=dtype,
        )


class HUWindowd(MapTransform):
    """Dictionary twin of :class:`HUWindow`; see it for the parameters.

    Examples
    --------
    >>> import torch
    >>> from monai.data import MetaTensor
    >>> from ichct.transforms import HUWindowd
    >>> img = MetaTensor(torch.tensor([[[[0.0, 40.0, 80.0]]]]), affine=torch.diag(torch.tensor([0.5, 0.5, 5.0, 1.0])))
    >>> out = HUWindowd("image", level=40, width=80)({"image": img})["image"]
    >>> out.flatten().tolist(), out.affine.diagonal().tolist()  # the affine passes through
    ([0.0, 0.5, 1.0], [0.5, 0.5, 5.0, 1.0])
    """

    backend = HUWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        level: float,
        width: float,
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = HUWindow(level, width, out_min=out_min, out_max=out_max, clip=clip, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d


class MultiWindow(Transform):
    """Turn a 1-channel HU image into a C-channel stack, one window per channel.

    Parameters
    ----------
    windows
        Ordered mapping ``name -> (level, width)`` in HU; the channel order follows it.
        Defaults to :data:`DEFAULT_WINDOWS` (brain, subdural, soft tissue).
    out_min, out_max, clip, dtype
        As in :class:`HUWindow`, for every window.

    Notes
    -----
    The output keeps the input's meta and affine; the window names are recorded, comma
    separated, under ``meta["ichct_windows"]``.

    Examples
    --------
    >>> import torch
    >>> from monai.data import MetaTensor
    >>> from ichct.transforms import MultiWindow
    >>> hu = MetaTensor(torch.full((1, 4, 4, 2), 60.0))  # 60 HU everywhere
    >>> out = MultiWindow()(hu)  # brain, subdural, soft tissue
    >>> out.shape, [round(v, 2) for v in out[:, 0, 0, 0].tolist()], out.meta["ichct_windows"]
    (torch.Size([3, 4, 4, 2]), [0.75, 0.4, 0.55], 'brain,subdural,soft_tissue')
    """

    backend = HUWindow.backend

    def __init__(
        self,
        windows: Mapping[str, tuple[float, float]] = DEFAULT_WINDOWS,
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        dtype: DtypeLike = np.float32,
    ) -> None:
        if not windows:
            raise ValueError("at least one window is needed")
        for name, window in windows.items():
            if isinstance(window, (str, bytes)) or np.ndim(window) != 1 or len(window) != 2:
                raise ValueError(f"window {name!r}: expected [level, width] in HU, got {window!r}")
        self.names = tuple(str(n) for n in windows)
        self.windows = tuple(
            HUWindow(level, width, out_min=out_min, out_max=out_max, clip=clip, dtype=dtype)
            for level, width in windows.values()
        )

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Window ``img`` of shape ``(1, *spatial)``; return ``(C, *spatial)``."""
        if img.shape[0] != 1:
            raise ValueError(f"MultiWindow expects a 1-channel HU image, got {img.shape[0]} channels")
        channels = [w(img) for w in self.windows]
        if isinstance(img, torch.Tensor):
            out: Any = torch.cat(channels, dim=0)  # a MetaTensor keeps the first one's meta
            if isinstance(out, MetaTensor):
                out.meta[WINDOW_NAMES_KEY] = ",".join(self.names)
            return out
        return np.concatenate(channels, axis=0)


class MultiWindowd(MapTransform):
    """Dictionary twin of :class:`MultiWindow`; see it for the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from ichct.transforms import MultiWindowd
    >>> windows = {"brain": (40.0, 80.0), "bone": (600.0, 2800.0)}
    >>> out = MultiWindowd("image", windows=windows)({"image": np.full((1, 4, 4, 2), 40.0, dtype=np.float32)})
    >>> out["image"].shape, [round(v, 2) for v in out["image"][:, 0, 0, 0].tolist()]
    ((2, 4, 4, 2), [0.5, 0.3])
    """

    backend = MultiWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        windows: Mapping[str, tuple[float, float]] = DEFAULT_WINDOWS,
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.windower = MultiWindow(windows, out_min=out_min, out_max=out_max, clip=clip, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.windower(d[key])
        return d
