"""Number types for ``argparse`` options, shared by every command (a bad value is a usage error naming it)."""

from __future__ import annotations

import argparse

__all__ = ["fraction", "non_negative_float", "non_negative_int", "positive_int", "seed"]


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    """An integer >= 1.

    Example
    -------
    >>> positive_int("3")
    3
    """
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def seed(text: str) -> int:
    """A random seed: an integer in 0..2**32-1 (what NumPy and MONAI's ``set_determinism`` take).

    Example
    -------
    >>> seed("7")
    7
    """
    value = _integer(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in 0..2**32-1, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def fraction(text: str) -> float:
    """A number within [0, 1].

    Example
    -------
    >>> fraction("0.25")
    0.25
    """
    value = _number(text)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0.

    Example
    -------
    >>> non_negative_float("0.5")
    0.5
    """
    value = _number(text)
    if not 0.0 <= value < float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value}")
    return value
