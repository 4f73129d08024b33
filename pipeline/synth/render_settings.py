"""The image formation a cohort is rendered with, resolved in one place.

The default render (``SynthConfig.formation`` None) or the default render with a
:class:`~ichct.pipeline.synth.config.FormationShift` applied: kernels, noise scale, calibration
offset and slice-profile blur. The generator asks :func:`render_settings` for every one of them
instead of testing the shift where it renders. Slice thickness is not here: it is drawn from
``SynthConfig.thickness_choices_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import FormationShift
from .formation import SSP_BLUR_MM
from .noise import BONE, SOFT, KernelModel, shifted_kernel

__all__ = ["RenderSettings", "render_settings"]


@dataclass(frozen=True)
class RenderSettings:
    """What a cohort's image formation resolves to.

    Attributes
    ----------
    soft_kernel, bone_kernel
        The reconstruction kernels of the soft-tissue and bone series.
    noise_scale
        Factor on every study's drawn noise SD (``1 / sqrt(dose_factor)``; 1 by default).
    hu_offset
        HU added to every study's scanner calibration offset (0 by default).
    ssp_blur_mm
        SD (mm) of the Gaussian blur of the slice sensitivity profile along z.
    """

    soft_kernel: KernelModel
    bone_kernel: KernelModel
    noise_scale: float
    hu_offset: float
    ssp_blur_mm: float


def render_settings(shift: FormationShift | None) -> RenderSettings:
    """The default render's settings, with ``shift`` applied where it sets a value.

    Example
    -------
    >>> render_settings(None).ssp_blur_mm, render_settings(None).hu_offset
    (1.0, 0.0)
    >>> shifted = render_settings(FormationShift(soft_f_cut=0.55, hu_offset=4.0, ssp_blur_mm=1.3))
    >>> shifted.soft_kernel.f_cut, shifted.hu_offset, shifted.ssp_blur_mm
    (0.55, 4.0, 1.3)
    """
    if shift is None:
        return RenderSettings(SOFT, BONE, 1.0, 0.0, SSP_BLUR_MM)
    return RenderSettings(
        soft_kernel=shifted_kernel(SOFT, shift, soft=True),
        bone_kernel=shifted_kernel(BONE, shift, soft=False),
        noise_scale=shift.noise_scale,
        hu_offset=shift.hu_offset,
        ssp_blur_mm=shift.ssp_blur_mm or SSP_BLUR_MM,
    )
