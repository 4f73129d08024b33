"""Stages of the ichct pipeline (ingest, synth, manifests, train, predict, evaluate) and the CLI.

Every CLI subcommand is a thin layer over a function of this package that can be called from
Python as well.
"""
