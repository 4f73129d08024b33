"""The one check every ensemble network makes of its members' constructor arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["check_member_arguments"]


def check_member_arguments(members: Sequence[Mapping[str, Any]], constructor: str) -> None:
    """Refuse fewer than two members, or a member that is not a mapping of ``constructor``'s arguments.

    Examples
    --------
    >>> check_member_arguments([{}, {}], "ich_unet3d")
    >>> check_member_arguments([{}], "ich_unet3d")
    Traceback (most recent call last):
    ...
    ValueError: an ensemble needs a list of at least two members' arguments, got [{}]
    """
    if isinstance(members, (str, bytes, Mapping)) or len(members) < 2:
        raise ValueError(f"an ensemble needs a list of at least two members' arguments, got {members!r}")
    for i, kwargs in enumerate(members):
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"member {i}: expected a mapping of {constructor} arguments, got {type(kwargs).__name__}")
