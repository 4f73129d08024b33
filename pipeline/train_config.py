"""Deprecated module path: training configs live in :mod:`ichct.pipeline.models.config`.

Kept because the README of ichct 0.1 documented ``ichct.pipeline.train_config`` (its defaults).
"""

from ichct.pipeline.models.config import DEFAULTS, KINDS, SAVED_RUN_FALLBACKS  # noqa: F401 - re-exported
from ichct.pipeline.models.config import config_windows, input_channels, read_config_file  # noqa: F401
from ichct.pipeline.models.config import resolve_config, resolve_saved_config  # noqa: F401
from ichct.pipeline.models.config import saved_run_config, validate_config  # noqa: F401
