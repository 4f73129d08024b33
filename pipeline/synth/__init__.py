"""Synthetic head-CT cohort generator (the embedded default data)."""
