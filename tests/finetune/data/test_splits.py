"""Index splits: stratification, group-disjointness, k-fold coverage, the held-out test set, argument checks."""

from __future__ import annotations

from collections import Counter

import pytest

from finetune.data.lazy import DataError
from finetune.data.splits import check_disjoint, holdout_kfold, kfold, min_clips_per_class, split_indices

LABELS = [c for c in "abcd" for _ in range(50)]  # 4 classes x 50
GROUPS = [f"artist{i // 5}" for i in range(200)]  # 40 artists of 5 tracks, each artist within one class


def test_split_indices_stratified_and_seeded() -> None:
    parts = split_indices(200, (0.8, 0.1, 0.1), labels=LABELS, seed=3)
    assert sorted(parts["train"] + parts["validation"] + parts["test"]) == list(range(200))
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [160, 20, 20]
    assert Counter(LABELS[i] for i in parts["test"]) == {c: 5 for c in "abcd"}
    assert Counter(LABELS[i] for i in parts["validation"]) == {c: 5 for c in "abcd"}
    assert split_indices(200, (0.8, 0.1, 0.1), labels=LABELS, seed=3) == parts
    assert split_indices(200, (0.8, 0.1, 0.1), labels=LABELS, seed=4)["test"] != parts["test"]


def test_split_indices_group_disjoint() -> None:
    parts = split_indices(200, (0.8, 0.1, 0.1), labels=LABELS, groups=GROUPS, seed=0)
    assert sorted(sum(parts.values(), [])) == list(range(200))
    artists = {k: {GROUPS[i] for i in v} for k, v in parts.items()}
    assert not artists["train"] & artists["test"] and not artists["train"] & artists["validation"]
    assert not artists["validation"] & artists["test"]
    assert 15 <= len(parts["test"]) <= 25 and 15 <= len(parts["validation"]) <= 30
    assert set(Counter(LABELS[i] for i in parts["test"])) == set("abcd")  # stratified: every class in test


def test_split_indices_zero_fraction_and_bad_fractions() -> None:
    parts = split_indices(50, (0.8, 0.0, 0.2), seed=0)
    assert parts["validation"] == [] and len(parts["test"]) == 10
    with pytest.raises(ValueError, match="summing to 1"):
        split_indices(10, (0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="labels has 3 entries for 10 rows"):
        split_indices(10, labels=["a", "b", "c"])
    with pytest.raises(
        DataError,
        match=r"^cannot take a 10% group-disjoint part of 12 clips in 3 groups: it is one of 10 folds of whole groups, "
        r"so it needs at least 10 groups; add groups or change the fractions$",
    ):
        split_indices(12, (0.8, 0.1, 0.1), groups=[i % 3 for i in range(12)])


def test_too_small_for_the_fractions_says_how_many_clips_each_class_needs() -> None:
    assert [min_clips_per_class(c, (0.8, 0.1, 0.1)) for c in (2, 3, 10)] == [6, 8, 10]
    for classes, fractions in (
        (2, (0.8, 0.1, 0.1)),
        (3, (0.8, 0.1, 0.1)),
        (10, (0.8, 0.1, 0.1)),
        (4, (0.6, 0.2, 0.2)),
        (4, (0.8, 0.2, 0.0)),
    ):
        need = min_clips_per_class(
            classes, fractions
        )  # exactly the smallest balanced set scikit-learn splits
        split_indices(classes * need, fractions, labels=[i % classes for i in range(classes * need)])
        with pytest.raises(DataError, match=f"each class needs at least {need} clips"):
            split_indices(
                classes * (need - 1), fractions, labels=[i % classes for i in range(classes * (need - 1))]
            )
    with pytest.raises(
        DataError,
        match=r"^cannot split 19 clips of 4 classes into train/validation/test \(0\.8, 0\.1, 0\.1\) stratified by class "
        r"\(scikit-learn: The least populated classes in y have only 1 member.*\)\. With these fractions each class "
        r"needs at least 8 clips \(32 in all\); the smallest class, 'd', has 1\. Add clips, drop or merge small "
        r"classes, or change the fractions$",
    ):
        split_indices(19, labels=["a", "b", "c"] * 6 + ["d"])
    with pytest.raises(
        DataError, match=r"^cannot split 1 clips into \(0\.8, 0\.1, 0\.1\) \(scikit-learn: With n_samples=1"
    ):
        split_indices(1)


def test_kfold_too_few_clips_per_class() -> None:
    with pytest.raises(
        DataError,
        match=r"^cannot make 10 folds of 30 clips \(scikit-learn: n_splits=10 cannot be greater than the number of "
        r"members in each class\.\)\. Each of the 10 test folds takes a share of every class, so a class needs at "
        r"least 10 clips; the smallest, 'a', has 3\. Lower n_folds or add clips$",
    ):
        kfold(30, 10, 0, labels=list("abcdefghij") * 3)


@pytest.mark.parametrize("use_groups", [False, True])
def test_kfold_covers_every_row_once(use_groups: bool) -> None:
    groups = GROUPS if use_groups else None
    tests = []
    for f in range(5):
        parts = kfold(200, 5, f, labels=LABELS, groups=groups, seed=1)
        assert not set(parts["train"]) & set(parts["test"])
        assert len(parts["train"]) + len(parts["test"]) == 200
        if use_groups:
            assert not {GROUPS[i] for i in parts["train"]} & {GROUPS[i] for i in parts["test"]}
        else:
            assert Counter(LABELS[i] for i in parts["test"]) == {c: 10 for c in "abcd"}
        tests += parts["test"]
    assert sorted(tests) == list(range(200))


def test_kfold_checks_arguments() -> None:
    with pytest.raises(ValueError, match=r"fold_index must be in \[0, 5\), got 5"):
        kfold(20, 5, 5)
    with pytest.raises(ValueError, match="n_folds must be at least 2"):
        kfold(20, 1, 0)
    with pytest.raises(ValueError, match="5 folds need at least 5 groups, got 2"):
        kfold(20, 5, 0, groups=[i % 2 for i in range(20)])


def test_holdout_kfold_fixed_test_balanced_folds() -> None:
    groups = [f"g{i % 23}" for i in range(400)]
    folds = [holdout_kfold(groups, 4, f, test_fraction=0.15, seed=5) for f in range(4)]
    test = folds[0]["test"]
    assert all(f["test"] == test for f in folds)  # the test set does not depend on the fold
    assert len(test) >= 0.15 * 400 and len(test) < 0.15 * 400 + 18  # whole groups, stops once over 15%
    vals = [set(f["validation"]) for f in folds]
    assert sum(len(v) for v in vals) == 400 - len(test) and len(set().union(*vals)) == 400 - len(test)
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 18  # dealt largest group first to the smallest fold
    for f in folds:
        by_part = {k: {groups[i] for i in v} for k, v in f.items()}
        assert not (by_part["train"] & by_part["test"]) | (by_part["train"] & by_part["validation"])
        assert sorted(f["train"] + f["validation"] + f["test"]) == list(range(400))
    assert holdout_kfold(groups, 4, 0, seed=6)["test"] != test


def test_holdout_kfold_checks_arguments() -> None:
    with pytest.raises(ValueError, match="4 folds need at least 4 groups outside the test set, got 2"):
        holdout_kfold(["a", "b", "c"] * 3, 4, 0, test_fraction=0.2)
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\)"):
        holdout_kfold(["a", "b"], 2, 0, test_fraction=1.0)


def test_check_disjoint_names_the_clash() -> None:
    check_disjoint({"train": ["a", "b"], "test": ["c"]}, what="artist")
    with pytest.raises(
        ValueError, match=r"1 artist\(s\) appear in more than one split: 'b' \(train and test\)"
    ):
        check_disjoint({"train": ["a", "b"], "test": ["b", "c"]}, what="artist")
