"""What a bundle's configs do, in words for its ``docs/README.md``: the steps as the configs list them.

* :func:`preprocessing_table` - a Markdown table of the ``preprocessing`` entries of a config,
  with their arguments as the JSON gives them;
* :func:`training_steps` - what ``train#preprocessing`` adds to those steps;
* :func:`postprocessing_steps` - the ``postprocessing`` entries in a line;
* :data:`REFERENCES` - the references of the README and of ``metadata.json``.

The words come from the generated configs themselves, so the README lists what the bundle runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["STEP_NOTES", "REFERENCES", "preprocessing_table", "training_steps", "postprocessing_steps", "short_name"]

#: What each transform of the bundles' configs does, by class name.
STEP_NOTES: dict[str, str] = {
    "LoadCTd": "a DICOM series folder (ichct's reader: default series, gantry tilt, HU) or a NIfTI file, "
               "channel first, RAS affine",
    "ReferenceBrainHUd": "the whole image shifted so that the median HU of its brain tissue is `reference_hu` "
                         "(brain-referenced HU)",
    "ToRASd": "orientation to RAS (a flip or permutation, no interpolation)",
    "Orientationd": "orientation to RAS (a flip or permutation, no interpolation)",
    "ScaleIntensityRanged": "HU window `a_min`..`a_max` mapped to [0, 1] (the brain window of the skull-stripped "
                            "copy)",
    "ResampleToSpacingd": "MONAI `Spacing` to `spacing_mm` (linear; labels nearest neighbour), edges repeated",
    "CropHeadd": "crop to the intracranial space (`brain`) or the head, plus `margin_mm`; inverted by `Invertd`",
    "InPlaneHeadCropd": "crop the in-plane axes to the brain (or head) box of all slices; every slice is kept",
    "CopyItemsd": "a copy of the HU image for the skull-stripped channel",
    "StripSkulld": "everything outside the intracranial space set to air (-1000 HU)",
    "HUWindowd": "one HU window (`level`, `width`) mapped to [0, 1]",
    "MultiWindowd": "one channel per HU window `name: [level, width]`, each mapped to [0, 1]",
    "ConcatItemsd": "the skull-stripped channel appended to the windows",
    "DeleteItemsd": "the copy dropped",
    "SpatialPadd": "padded to at least the training patch",
    "Resized": "in-plane size of the network; the slices are kept",
    "EnsureTyped": "float32 tensor",
    "BloodLabelsd": "voxel labels as the model's classes",
}

#: The references of every bundle's README and ``metadata.json``.
REFERENCES: tuple[str, ...] = (
    "Cardoso MJ, Li W, Brown R, et al. MONAI: An open-source framework for deep learning in healthcare. "
    "arXiv:2211.02701, 2022.",
    "MONAI Bundle specification: https://docs.monai.io/en/stable/mb_specification.html",
    "Flanders AE, Prevedello LM, Shih G, et al. Construction of a machine learning dataset through collaboration: "
    "the RSNA 2019 Brain CT Hemorrhage Challenge. Radiology: Artificial Intelligence 2020;2(3):e190211 (the six "
    "labels and the weighted log loss).",
    "Çiçek Ö, Abdulkadir A, Lienkamp SS, Brox T, Ronneberger O. 3D U-Net: learning dense volumetric segmentation "
    "from sparse annotation. MICCAI 2016.",
)


def short_name(target: str) -> str:
    """The class or function name of a ``_target_`` (``ichct.transforms.LoadCTd`` -> ``LoadCTd``)."""
    return str(target).rsplit(".", 1)[-1]


def _arguments(spec: Mapping[str, Any]) -> str:
    return ", ".join(f"`{k}={json.dumps(v, separators=(', ', ': '))}`" for k, v in spec.items() if k != "_target_")


def preprocessing_table(specs: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of transform specs: position, ``_target_``, arguments, what it does.

    Examples
    --------
    >>> print(preprocessing_table([{"_target_": "SpatialPadd", "keys": "image", "spatial_size": [64, 64, 16]}]))
    | # | `_target_` | arguments | what it does |
    |---|---|---|---|
    | 1 | `SpatialPadd` | `keys="image"`, `spatial_size=[64, 64, 16]` | padded to at least the training patch |
    """
    rows = ["| # | `_target_` | arguments | what it does |", "|---|---|---|---|"]
    for i, spec in enumerate(specs, 1):
        rows.append(f"| {i} | `{spec['_target_']}` | {_arguments(spec)} | "
                    f"{STEP_NOTES.get(short_name(spec['_target_']), '')} |")
    return "\n".join(rows)


def training_steps(inference: Sequence[Mapping[str, Any]], train: Sequence[Mapping[str, Any]]) -> str:
    """What training's preprocessing adds to inference's, in words.

    Examples
    --------
    >>> training_steps([{"_target_": "LoadCTd"}], [{"_target_": "LoadCTd"}, {"_target_": "RandFlipd"}])
    'the same steps on the image and its labels, with `RandFlipd`'
    """
    known = {short_name(s["_target_"]) for s in inference}
    added = [short_name(s["_target_"]) for s in train if short_name(s["_target_"]) not in known]
    return "the same steps on the image and its labels" + (
        ", with " + ", ".join(f"`{name}`" for name in dict.fromkeys(added)) if added else "")


def postprocessing_steps(specs: Sequence[Mapping[str, Any]]) -> str:
    """The postprocessing entries in order, each with its key arguments.

    Examples
    --------
    >>> postprocessing_steps([{"_target_": "Activationsd", "keys": "pred", "softmax": True}])
    '`Activationsd` (`softmax=true`).'
    """
    parts = []
    for spec in specs:
        args = {k: v for k, v in spec.items() if k not in ("_target_", "keys", "transform", "output_dir", "rule",
                                                             "orig_keys", "output_dtype", "print_log")}
        parts.append(f"`{short_name(spec['_target_'])}`" + (f" ({_arguments(args)})" if args else ""))
    return ", then ".join(parts) + "."
