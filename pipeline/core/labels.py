"""The hemorrhage label vocabulary, defined once for the whole pipeline.

- ``SUBTYPES``: the five subtypes in RSNA order; voxel label value = index + 1 (0 background).
- ``LABEL_NAMES``: the six per-slice / per-study labels, ``"any"`` first, then the subtypes
  (the column order of slice probabilities, ``slice_labels`` rows and ``ct_labels``).

``ichct.networks.LABEL_NAMES`` repeats ``LABEL_NAMES`` because ``networks`` imports nothing of ichct.
The six labels were once also called ``SUBTYPES`` (``ichct.pipeline.decision.SUBTYPES``,
``ichct.networks.SUBTYPES``); those names stay importable as deprecated aliases of ``LABEL_NAMES``,
and ``SUBTYPES`` here and everywhere else means the five subtypes.
"""

from __future__ import annotations

SUBTYPES: tuple[str, ...] = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
LABEL_NAMES: tuple[str, ...] = ("any",) + SUBTYPES
LABEL_VALUES: dict[str, int] = {name: i + 1 for i, name in enumerate(SUBTYPES)}
