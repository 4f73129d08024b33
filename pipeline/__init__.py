"""Stages of the ichct pipeline and the CLI, one package (or module) per stage.

* ``ingest`` (DICOM -> NIfTI), ``synth/`` (synthetic cohorts), ``manifests/`` (split manifests);
* ``models/`` - the recipe shared by training, inference and bundles; ``core/`` - shared helpers;
* ``train/``, ``evaluate/``, ``predict/``, ``bundle/`` - the stages; ``decision/`` - CT-level rules;
* ``demo`` - every stage end to end; ``cli/`` - the ``ichct`` command.

Every CLI subcommand is a thin layer over a function of this package that can be called from
Python as well.
"""
