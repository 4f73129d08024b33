"""Patient-level split: a held-out test set and cross-validation folds, stratified by CT-level labels.

The unit of assignment is a *group*: every study of one patient, joined with any other patient's
studies that share a series UID or identical pixel data. A group goes to exactly one place (the
test set or one fold), so no patient, series or image can be on both sides of a split.

Stratification is iterative (Sechidis et al., 2011, adapted to groups): groups are placed rarest
label first; each goes to the bin that still lacks most of its rarest label, then of its other
labels, then of studies, among the bins it would not overfill; remaining ties are broken by a
seeded shuffle. Strata are the study-level
flags ``negative`` (``any`` = 0), ``any`` and the five subtypes; unknown flags (-1) count as
neither. The result is deterministic for a given seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ichct.errors import InputError

from .model import LABEL_NAMES

STRATA: tuple[str, ...] = ("negative",) + LABEL_NAMES
TEST = -1  # bin index of the test set in assign_groups' result


@dataclass
class Group:
    """Studies that must stay together; ``counts`` per stratum over its studies."""

    key: str
    n_studies: int
    counts: dict[str, int] = field(default_factory=dict)


def study_strata(ct_labels: dict[str, int]) -> dict[str, int]:
    """Stratum counts contributed by one study."""
    out = {s: 0 for s in STRATA}
    if ct_labels.get("any") == 0:
        out["negative"] = 1
    for name in LABEL_NAMES:
        if ct_labels.get(name) == 1:
            out[name] = 1
    return out


def _relative(desired: float, have: float) -> float:
    """How much of its share a bin still lacks (in studies)."""
    return desired - have


def _partition(groups: list[Group], proportions: list[float], rng: random.Random) -> list[int]:
    """Bin index per group (same order as ``groups``)."""
    n_bins = len(proportions)
    totals = {s: sum(g.counts.get(s, 0) for g in groups) for s in STRATA}
    total_n = sum(g.n_studies for g in groups)
    desired = [{s: p * totals[s] for s in STRATA} for p in proportions]
    desired_n = [p * total_n for p in proportions]
    have = [{s: 0.0 for s in STRATA} for _ in proportions]
    have_n = [0.0] * n_bins
    have_groups = [0] * n_bins
    tiebreak = list(range(len(groups)))
    rng.shuffle(tiebreak)

    def rarest(g: Group) -> str | None:
        present = [s for s in STRATA if g.counts.get(s, 0) > 0]
        return min(present, key=lambda s: (totals[s], STRATA.index(s))) if present else None

    order = sorted(
        range(len(groups)),
        key=lambda i: (totals[rarest(groups[i])] if rarest(groups[i]) else float("inf"), -groups[i].n_studies, tiebreak[i]),
    )
    bins = [0] * len(groups)
    bin_rank = list(range(n_bins))
    rng.shuffle(bin_rank)
    for i in order:
        g = groups[i]
        r = rarest(g)
        eligible = [b for b in range(n_bins) if proportions[b] > 0]
        # a bin that this group would overfill by more than half the group is a last resort
        roomy = [b for b in eligible if have_n[b] + g.n_studies <= desired_n[b] + 0.5 * g.n_studies]
        eligible = roomy or eligible

        def score(b: int) -> tuple[float, ...]:
            rare_deficit = _relative(desired[b][r], have[b][r]) if r else 0.0
            all_deficit = sum(_relative(desired[b][s], have[b][s]) for s in STRATA if g.counts.get(s, 0) > 0)
            size_deficit = _relative(desired_n[b], have_n[b])
            return (round(rare_deficit, 9), round(all_deficit, 9), round(size_deficit, 9), -bin_rank[b])

        best = max(eligible, key=score)
        bins[i] = best
        for s in STRATA:
            have[best][s] += g.counts.get(s, 0)
        have_n[best] += g.n_studies
        have_groups[best] += 1

    # Every bin that should hold something gets at least one group: move the smallest group of
    # the most populated bin (latest placed first).
    for b in range(n_bins):
        if proportions[b] <= 0 or have_groups[b] > 0:
            continue
        donor = max(range(n_bins), key=lambda x: (have_groups[x], have_n[x]))
        if have_groups[donor] <= 1:
            raise InputError("too few patients to fill every fold")
        candidates = [i for i in order if bins[i] == donor]
        move = min(reversed(candidates), key=lambda i: groups[i].n_studies)
        bins[move] = b
        have_groups[donor] -= 1
        have_groups[b] += 1
        have_n[donor] -= groups[move].n_studies
        have_n[b] += groups[move].n_studies
    return bins


def assign_groups(groups: list[Group], num_folds: int, test_fraction: float, seed: int) -> list[int]:
    """Place each group in the test set (:data:`TEST`) or a fold ``0..num_folds-1``.

    ``test_fraction`` is the share of studies aimed for in the test set (met as closely as the
    group sizes and labels allow); 0 puts everything in the folds, 1 everything in the test set.
    """
    if num_folds < 1:
        raise InputError("num_folds (--folds) must be at least 1")
    if not 0.0 <= test_fraction <= 1.0:
        raise InputError("test_fraction (--test-fraction) must be between 0 and 1")
    if not groups:
        raise InputError("nothing to split: no studies")
    ordered = sorted(range(len(groups)), key=lambda i: groups[i].key)
    rng = random.Random(f"ichct-split:{seed}")
    result = [0] * len(groups)
    if test_fraction >= 1.0:
        return [TEST] * len(groups)
    train_idx = ordered
    if test_fraction > 0.0:
        if len(groups) < num_folds + 1:
            raise InputError(f"{len(groups)} independent patient group(s) cannot fill a test set and {num_folds} fold(s)")
        bins = _partition([groups[i] for i in ordered], [test_fraction, 1.0 - test_fraction], rng)
        train_idx = []
        for i, b in zip(ordered, bins):
            if b == 0:
                result[i] = TEST
            else:
                train_idx.append(i)
        if len(train_idx) < num_folds:
            # the test set took too much: hand back its smallest groups
            test_idx = sorted((i for i in ordered if result[i] == TEST), key=lambda i: (groups[i].n_studies, groups[i].key))
            while len(train_idx) < num_folds and len(test_idx) > 1:
                i = test_idx.pop(0)
                train_idx.append(i)
            train_idx.sort(key=lambda i: groups[i].key)
    elif len(groups) < num_folds:
        raise InputError(f"{len(groups)} independent patient group(s) cannot fill {num_folds} fold(s)")
    if num_folds == 1:
        for i in train_idx:
            result[i] = 0
        return result
    bins = _partition([groups[i] for i in train_idx], [1.0 / num_folds] * num_folds, rng)
    for i, b in zip(train_idx, bins):
        result[i] = b
    return result
