"""The state-dict layout of ichct's ensembles (:class:`~ichct.networks.SegmentationEnsemble`,
:class:`~ichct.networks.ClassifierEnsemble`): member ``i``'s own keys under ``members.<i>.``, the
``nn.ModuleList`` both hold their members in. Assembling an ensemble and starting a one-network run
from one member read and write it here only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["MEMBERS_PREFIX", "ensemble_size", "ensemble_state_dict", "member_state_dict"]

#: The prefix of every member's keys in an ensemble's state dict.
MEMBERS_PREFIX = "members."


def ensemble_state_dict(member_states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One ensemble state dict from its members' own, in order.

    Examples
    --------
    >>> sorted(ensemble_state_dict([{"w": torch.zeros(1)}, {"w": torch.ones(1)}]))
    ['members.0.w', 'members.1.w']
    """
    return {f"{MEMBERS_PREFIX}{i}.{key}": value for i, state in enumerate(member_states) for key, value in state.items()}


def ensemble_size(state: Mapping[str, torch.Tensor]) -> int:
    """How many members an ensemble's state dict holds (0: one network's).

    Examples
    --------
    >>> ensemble_size({"members.0.w": torch.zeros(1), "members.1.w": torch.zeros(1)}), ensemble_size({"w": 0})
    (2, 0)
    """
    return len({key.split(".", 2)[1] for key in state if key.startswith(MEMBERS_PREFIX) and key.count(".") >= 2})


def member_state_dict(state: Mapping[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """Member ``index``'s (from 0) own state dict, out of an ensemble's (empty when it has no such member).

    Examples
    --------
    >>> member_state_dict(ensemble_state_dict([{"w": torch.zeros(1)}, {"w": torch.ones(1)}]), 1)
    {'w': tensor([1.])}
    """
    prefix = f"{MEMBERS_PREFIX}{index}."
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
