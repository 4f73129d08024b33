"""Deprecated module path: side-by-side training lives in :mod:`ichct.pipeline.train.side_by_side`.

Kept because the README of ichct 0.1 documented
``from ichct.pipeline.train_side_by_side import train_side_by_side``.
"""

from ichct.pipeline.train.side_by_side import threads_for, train_sharing_threads, train_side_by_side  # noqa: F401
