"""A bundle's ``configs/metadata.json``, ``docs/README.md``, ``docs/data_license.txt`` and ``LICENSE``.

All generated from the run's config and, when given, the ``metrics.json`` that
``ichct evaluate --bundle`` wrote for the bundle (the measured numbers). One module per part:

- :mod:`~ichct.pipeline.bundle.docs.provenance`: the training data, its source and licence, the
  intended use;
- :mod:`~ichct.pipeline.bundle.docs.recipe`: how ``bundles/build_bundles.sh`` rebuilds the committed
  bundles (its defaults, the committed inference settings) and the README's "reproduce" paragraph;
- :mod:`~ichct.pipeline.bundle.docs.phrases`: a model's settings in words, for both documents;
- :mod:`~ichct.pipeline.bundle.docs.metadata`: ``metadata.json``;
- :mod:`~ichct.pipeline.bundle.docs.readme`: ``docs/README.md``.
"""

from __future__ import annotations

from ichct.pipeline.bundle.docs.metadata import NAMES, TASKS, ZOO_SCHEMA_URL, bundle_metadata, key_numbers
from ichct.pipeline.bundle.docs.provenance import (DATA_LICENSE, DATA_SOURCE, DEFAULT_MANIFEST_NAME, INTENDED_USE,
                                                   SOURCE_NAMES, apache_license, committed_data_license,
                                                   committed_data_source, data_license, data_source,
                                                   describe_training_data, intended_use, training_data_summary)
from ichct.pipeline.bundle.docs.readme import README_TEMPLATE, bundle_readme
from ichct.pipeline.bundle.docs.recipe import (BUILD_SCRIPT, COMMITTED_INFERENCE, COMMITTED_MAX_FALSE_BLOOD_ML,
                                               COMMITTED_SLICE_GATE, COMMITTED_SW_OVERLAP, SEG_FINETUNES)

__all__ = ["ZOO_SCHEMA_URL", "NAMES", "TASKS", "bundle_metadata", "bundle_readme", "key_numbers", "DATA_LICENSE",
           "DATA_SOURCE", "INTENDED_USE", "SOURCE_NAMES", "apache_license", "DEFAULT_MANIFEST_NAME", "BUILD_SCRIPT",
           "SEG_FINETUNES", "COMMITTED_INFERENCE", "COMMITTED_SLICE_GATE", "COMMITTED_SW_OVERLAP",
           "COMMITTED_MAX_FALSE_BLOOD_ML",
           "committed_data_source", "committed_data_license", "describe_training_data", "data_source", "data_license",
           "intended_use", "training_data_summary", "README_TEMPLATE"]
