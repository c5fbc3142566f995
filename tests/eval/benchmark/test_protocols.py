"""Protocols: the fixed split, HEAR-style rotation (every clip tested once, validation on the next fold, nothing
shared), and the loader's own folds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np
import pytest

from eval.benchmark.protocols import fold_assignment, get_protocol
from eval.benchmark.tasks import BenchmarkTask
from finetune.data.registry import TaskData
from heads.tasks import SINGLE_LABEL


def _data(sizes: Mapping[str, int]) -> TaskData:
    splits, start = {}, 0
    for name, n in sizes.items():
        ids = [f"clip{start + i:03d}" for i in range(n)]
        splits[name] = datasets.Dataset.from_dict({"id": ids, "label": [(start + i) % 4 for i in range(n)]})
        start += n
    return TaskData(datasets.DatasetDict(splits), SINGLE_LABEL, ("a", "b", "c", "d"))


def _task(protocol: str, n_folds: int) -> BenchmarkTask:
    return BenchmarkTask("t", "x", {"seed": 3}, "accuracy", "genre", protocol=protocol, n_folds=n_folds)


def test_rotation_tests_every_clip_once_and_validates_on_the_next_fold() -> None:
    data = _data({"train": 50, "validation": 20, "test": 30})
    protocol = get_protocol("rotation")
    task = _task("rotation", 10)
    folds = [protocol(task, lambda overrides: data, i) for i in range(10)]
    tested = [clip for f in folds for clip in f.test.ids]
    assert sorted(tested) == [f"clip{i:03d}" for i in range(100)]
    for i, fold in enumerate(folds):
        assert fold.validation.ids == folds[(i + 1) % 10].test.ids
        parts = [set(fold.train.ids), set(fold.validation.ids), set(fold.test.ids)]
        assert sum(map(len, parts)) == 100 and len(set.union(*parts)) == 100
        counts = np.bincount(fold.test.targets, minlength=4)  # 25 clips per class: 2 or 3 in each fold
        assert len(fold.test) == 10 and set(counts.tolist()) <= {2, 3}
    assert folds[0].names == ("a", "b", "c", "d") and folds[0].task is SINGLE_LABEL
    np.testing.assert_array_equal(
        fold_assignment(100, 10, np.arange(100) % 4, 3), fold_assignment(100, 10, np.arange(100) % 4, 3)
    )
    with pytest.raises(ValueError, match="task 't' has folds 0..9, got fold 10"):
        protocol(task, lambda overrides: data, 10)
    with pytest.raises(ValueError, match="5 clips cannot fill 10 folds"):
        fold_assignment(5, 10, None, 0)


def test_fixed_uses_the_data_sets_split_and_loader_folds_pass_the_fold_index() -> None:
    data = _data({"train": 6, "validation": 2, "test": 2})
    fold = get_protocol("fixed")(_task("fixed", 1), lambda overrides: data, 0)
    assert fold.test.ids == ["clip008", "clip009"] and len(fold.train) == 6
    seen: list[dict[str, Any]] = []

    def build(overrides: Mapping[str, Any]) -> TaskData:
        seen.append(dict(overrides))
        return data

    get_protocol("loader_folds")(_task("loader_folds", 4), build, 2)
    assert seen == [{"fold_index": 2}]
    with pytest.raises(
        KeyError, match="unknown protocol 'rotate' \\(did you mean 'rotation'\\?\\); known: fixed"
    ):
        get_protocol("rotate")
    with pytest.raises(ValueError, match="task 't': the fixed protocol has one fold, got n_folds=3"):
        _task("fixed", 3)
