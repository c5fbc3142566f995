"""Clip views: pooling and selecting rows, targets and ids without decoding, file identities, caps, and the
multi-label collate."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch

from eval.benchmark.data import ClipSplit, TaskCollate, cap_split
from finetune.data import CropCollate
from heads.tasks import MULTI_LABEL, RATING, SINGLE_LABEL


def _ds(labels: list[int], prefix: str) -> datasets.Dataset:
    audio = [np.full(800, i / 10, dtype=np.float32) for i in range(len(labels))]
    ids = [f"{prefix}{i}" for i in range(len(labels))]
    return datasets.Dataset.from_dict(
        {"audio": audio, "label": labels, "sample_rate": [8000] * len(labels), "id": ids}
    ).with_format("numpy")


def test_pooled_and_selected_views_keep_rows_targets_and_ids() -> None:
    a, b = ClipSplit.of(_ds([0, 1, 2], "a"), SINGLE_LABEL), ClipSplit.of(_ds([2, 2], "b"), SINGLE_LABEL)
    pool = ClipSplit.concat([a, b])
    assert len(pool) == 5 and pool.ids == ["a0", "a1", "a2", "b0", "b1"]
    np.testing.assert_array_equal(pool.targets, [0, 1, 2, 2, 2])
    picked = pool.select([4, 0])
    assert picked.ids == ["b1", "a0"] and picked.targets.tolist() == [2, 0]
    assert picked[0]["id"] == "b1" and float(picked[0]["audio"][0]) == pytest.approx(0.1)
    with pytest.raises(KeyError, match=r"the data set has no 'path' column \(columns: \['audio', 'label'"):
        pool.column("path")
    # in-memory audio: the identity follows the samples
    assert pool.identities()[0] != pool.identities()[1] and pool.identities() == pool.identities()


def test_file_identities_change_with_the_file(tmp_path: Path) -> None:
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.wav"))
        sf.write(paths[-1], np.zeros(800, np.float32), 8000)
    split = ClipSplit.of(datasets.Dataset.from_dict({"path": paths, "label": [0, 1]}), SINGLE_LABEL)
    before = split.identities()
    sf.write(paths[1], np.ones(900, np.float32) * 0.1, 8000)
    os.utime(paths[1], ns=(1, 1))
    after = split.identities()
    assert after[0] == before[0] and after[1] != before[1]


def test_caps_per_class_and_in_all_keep_order() -> None:
    split = ClipSplit.of(_ds([0, 0, 0, 1, 1, 2], "x"), SINGLE_LABEL)
    capped = cap_split(split, per_class=2, seed=3)
    assert np.bincount(capped.targets).tolist() == [2, 2, 1]
    assert capped.ids == sorted(capped.ids)  # the original order
    assert len(cap_split(split, limit=4)) == 4 and len(cap_split(split)) == 6
    assert cap_split(split, per_class=2, seed=3).ids == capped.ids  # seeded


def test_task_collate_batches_multi_hot_targets_per_crop() -> None:
    rows = [
        {"audio": np.zeros(1600, np.float32), "sample_rate": 8000, "labels": np.array([1, 0, 1], np.float32)},
        {"audio": np.zeros(800, np.float32), "sample_rate": 8000, "labels": np.array([0, 1, 0], np.float32)},
    ]
    collate = TaskCollate(CropCollate(8000, 0.1, train=False, crops_per_clip=2), MULTI_LABEL)
    batch = collate(rows)
    assert batch["clip_index"].tolist() == [0, 0, 1]  # a clip no longer than the window gives one crop
    assert torch.equal(batch["labels"], torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 0]], dtype=torch.float32))
    assert collate.train is False
    rated = TaskCollate(CropCollate(8000, 0.1, train=False), RATING)
    out = rated([{"audio": np.zeros(800, np.float32), "sample_rate": 8000, "ratings": [0.5, 0.25]}])
    assert out["ratings"].tolist() == [[0.5, 0.25]] and "labels" not in out
    split = ClipSplit.of(datasets.Dataset.from_dict({"labels": [[1.0, 0.0], [0.0, 1.0]]}), MULTI_LABEL)
    assert split.targets.dtype == np.float32 and split.targets.tolist() == [[1.0, 0.0], [0.0, 1.0]]
