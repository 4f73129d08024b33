"""Patient-level splitting: groups stay together, folds are stratified, results are deterministic."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest
from test_manifest_replicas import SUBTYPES, hash_cache_env, all_entries, assert_valid, build, make_bhsd  # noqa: F401

from ichct.pipeline.manifests.split import TEST, Group, assign_groups, study_strata


def _groups(n: int, seed: int = 0) -> list[Group]:
    """n patients, ~40 % positive, subtypes of varying rarity, some with 2-3 studies."""
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(n):
        n_studies = int(rng.choice([1, 1, 1, 2, 3]))
        counts: Counter = Counter()
        positive = rng.random() < 0.4
        subtype = SUBTYPES[int(rng.choice(5, p=[0.1, 0.3, 0.2, 0.2, 0.2]))]
        for _ in range(n_studies):
            labels = {"any": int(positive), **{s: int(positive and s == subtype) for s in SUBTYPES}}
            counts.update(study_strata(labels))
        groups.append(Group(key=f"p{i:04d}", n_studies=n_studies, counts=dict(counts)))
    return groups


def test_assignment_is_deterministic_and_seeded():
    groups = _groups(60)
    a = assign_groups(groups, 5, 0.2, seed=7)
    assert a == assign_groups(groups, 5, 0.2, seed=7)
    assert a == assign_groups(list(reversed(groups)), 5, 0.2, seed=7)[::-1]  # input order does not matter
    assert a != assign_groups(groups, 5, 0.2, seed=8)


def test_folds_and_test_are_stratified():
    groups = _groups(200, seed=1)
    bins = assign_groups(groups, 5, 0.2, seed=0)
    studies = defaultdict(int)
    per_label = defaultdict(lambda: defaultdict(int))
    for g, b in zip(groups, bins):
        studies[b] += g.n_studies
        for label, c in g.counts.items():
            per_label[label][b] += c
    total = sum(g.n_studies for g in groups)
    assert abs(studies[TEST] / total - 0.2) < 0.04
    train_total = total - studies[TEST]
    for k in range(5):
        assert abs(studies[k] / train_total - 0.2) < 0.04, dict(studies)
    for label in ("negative", "any") + SUBTYPES:
        counts = per_label[label]
        overall = sum(counts.values())
        train = overall - counts[TEST]
        for k in range(5):
            # every fold within two studies plus 25 % of its share of each label
            assert abs(counts[k] - train / 5) <= 2 + 0.25 * train / 5, (label, dict(counts))


def test_edge_fractions_and_errors():
    groups = _groups(12)
    assert set(assign_groups(groups, 3, 1.0, seed=0)) == {TEST}
    zero = assign_groups(groups, 3, 0.0, seed=0)
    assert TEST not in zero and set(zero) == {0, 1, 2}
    assert set(assign_groups(groups, 1, 0.0, seed=0)) == {0}
    with pytest.raises(ValueError):
        assign_groups(groups[:3], 5, 0.2, seed=0)
    with pytest.raises(ValueError):
        assign_groups(groups, 3, 1.5, seed=0)


def test_every_fold_gets_a_patient_when_labels_are_lopsided():
    groups = [Group(key=f"g{i}", n_studies=1, counts={"any": 1, "subdural": 1}) for i in range(6)]
    bins = assign_groups(groups, 5, 0.0, seed=3)
    assert set(bins) == {0, 1, 2, 3, 4}


def test_built_manifest_keeps_patients_together_and_balances_labels(tmp_path):
    """40 BHSD-like patients (one with two studies): every study of a patient in one place;
    positives and each subtype spread over the folds as evenly as counts allow."""
    plan = [[(p % 5) + 1] if p % 2 == 0 else [] for p in range(40)]  # 20 positive, 4 of each subtype
    rep = make_bhsd(tmp_path / "bhsd", n_patients=40, unlabelled=0, subtype_plan=plan)
    out = tmp_path / "m" / "bhsd.json"
    doc = build("bhsd", rep.root, out, folds=4, test_fraction=0.2, seed=5)
    assert_valid(out)
    places = defaultdict(set)
    for e in all_entries(doc):
        places[e["patient_key"]].add(e.get("fold", "test"))
    assert all(len(p) == 1 for p in places.values())
    assert len(places) == 40
    folds = defaultdict(list)
    for e in doc["training"]:
        folds[e["fold"]].append(e)
    assert sorted(folds) == [0, 1, 2, 3]
    pos = [len({e["patient_key"] for e in folds[k] if e["ct_labels"]["any"] == 1}) for k in range(4)]
    assert max(pos) - min(pos) <= 1, pos
    sizes = [len(folds[k]) for k in range(4)]
    assert max(sizes) - min(sizes) <= 2, sizes
    assert 6 <= len(doc["test"]) <= 11
    for s in SUBTYPES:  # counted in patients (a patient's two studies cannot be split)
        per_fold = [len({e["patient_key"] for e in folds[k] if e["ct_labels"][s] == 1}) for k in range(4)]
        assert max(per_fold) - min(per_fold) <= 1, (s, per_fold)
    # the same seed gives the same split
    again = build("bhsd", rep.root, tmp_path / "m" / "again.json", folds=4, test_fraction=0.2, seed=5)
    assert [(e["patient_key"], e["fold"]) for e in again["training"]] == [(e["patient_key"], e["fold"]) for e in doc["training"]]
    assert json.loads(out.read_text())["seed"] == 5
