"""Deprecated module path: the bundle components live in :mod:`ichct.pipeline.bundle.components`.

Kept because the published bundles (``bundles/*/configs/*.json``, 0.1.0 and 0.2.0) name
``ichct.pipeline.bundle_components.*`` as ``_target_``; bundles packaged now name the new module.
"""

from ichct.pipeline.bundle.components import (  # noqa: F401 - re-exported for published configs
    RunFilesWriter,
    SaveSliceProbabilitiesd,
    ThresholdsSaver,
    ValidationEveryAndLast,
    ValidationScores,
    dice_output_transform,
    study_items,
)
