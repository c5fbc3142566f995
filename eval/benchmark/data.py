"""Views of a task's clips: splits that can be pooled, re-folded and capped without copying audio, whose targets,
ids and file identities are read without decoding a clip; and the collate the suite batches them with.

A :class:`ClipSplit` is a list of (source data set, row) references. Real-data loaders decode audio lazily when a
row is read; the suite reads only metadata (``with_format(None)``) until it needs the audio.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import Dataset

from finetune.data import CropCollate
from heads.tasks import Task

__all__ = ["TARGET_COLUMNS", "ClipSplit", "Fold", "TaskCollate", "cap_split"]

TARGET_COLUMNS: Mapping[str, str] = MappingProxyType(
    {"single_label": "label", "multi_label": "labels", "rating": "ratings"}
)
"""The row column holding each task's targets: class index, multi-hot vector, rating vector."""

SPLITS = ("train", "validation", "test")


class ClipSplit(Dataset):
    """Rows of one or more ``datasets.Dataset`` in a given order (a torch map-style data set).

    Args:
        sources: the data sets rows are read from.
        refs: ``(source, row)`` per clip.
        task: what the targets are (their column is :data:`TARGET_COLUMNS` ``[task.name]``).
    """

    def __init__(self, sources: Sequence[datasets.Dataset], refs: np.ndarray, task: Task) -> None:
        self.sources = tuple(sources)
        self.refs = np.asarray(refs, dtype=np.int64).reshape(-1, 2)
        self.task = task
        self._plain = tuple(ds.with_format(None) for ds in self.sources)

    @classmethod
    def of(cls, dataset: datasets.Dataset, task: Task) -> ClipSplit:
        """Every row of ``dataset``, in order."""
        refs = np.stack([np.zeros(len(dataset), np.int64), np.arange(len(dataset))], axis=1)
        return cls([dataset], refs, task)

    @classmethod
    def concat(cls, parts: Sequence[ClipSplit]) -> ClipSplit:
        """The clips of ``parts`` one after the other (the parts must share their task)."""
        sources: list[datasets.Dataset] = []
        refs = []
        for part in parts:
            offset = len(sources)
            sources.extend(part.sources)
            refs.append(part.refs + np.array([offset, 0]))
        return cls(sources, np.concatenate(refs) if refs else np.zeros((0, 2)), parts[0].task)

    def select(self, positions: Sequence[int] | np.ndarray) -> ClipSplit:
        """The clips at ``positions`` (in that order)."""
        return ClipSplit(self.sources, self.refs[np.asarray(positions, dtype=np.int64)], self.task)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        source, row = self.refs[index]
        return self.sources[source][int(row)]

    def column(self, name: str) -> list[Any]:
        """Column ``name`` of every clip, read without decoding audio.

        Raises:
            KeyError: a source has no such column.
        """
        values: list[Any] = []
        cache: dict[int, list[Any]] = {}
        for source, row in self.refs:
            if source not in cache:
                plain = self._plain[source]
                if name not in plain.column_names:
                    raise KeyError(f"the data set has no {name!r} column (columns: {plain.column_names})")
                cache[source] = list(plain[name])
            values.append(cache[source][row])
        return values

    def has_column(self, name: str) -> bool:
        """Whether every source has column ``name``."""
        return all(name in plain.column_names for plain in self._plain)

    @property
    def targets(self) -> np.ndarray:
        """Per-clip targets: class indices ``[N]`` or vectors ``[N, C]`` (multi-hot tags, ratings)."""
        values = self.column(TARGET_COLUMNS[self.task.name])
        dtype = np.int64 if self.task.name == "single_label" else np.float32
        return np.asarray(values, dtype=dtype)

    @property
    def ids(self) -> list[str]:
        """Clip ids (``id`` or ``name`` column, else ``<source>:<row>``)."""
        for key in ("id", "name"):
            if self.has_column(key):
                return [str(v) for v in self.column(key)]
        return [f"{s}:{r}" for s, r in self.refs]

    def identities(self) -> list[str]:
        """A key per clip that changes when its audio does: sha1 of (path, size, mtime) for file-backed rows,
        of the samples and rate for in-memory audio."""
        if self.has_column("path"):
            out = []
            for path in self.column("path"):
                st = os.stat(path)
                out.append(_sha1(f"file\0{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}"))
            return out
        return [_audio_identity(self[i]) for i in range(len(self))]


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _audio_identity(row: Mapping[str, Any]) -> str:
    audio = np.ascontiguousarray(np.asarray(row["audio"], dtype=np.float32))
    rate = row.get("sample_rate", row.get("sampling_rate"))
    h = hashlib.sha1(audio.tobytes())
    h.update(f"\0{audio.shape}\0{rate}".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Fold:
    """One fold of a protocol: train/validation/test views plus the task and output names."""

    index: int
    train: ClipSplit
    validation: ClipSplit
    test: ClipSplit
    task: Task
    names: tuple[str, ...]

    def split(self, name: str) -> ClipSplit:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


def cap_split(
    split: ClipSplit, limit: int | None = None, per_class: int | None = None, seed: int = 0
) -> ClipSplit:
    """At most ``per_class`` clips of each class (single-label) and at most ``limit`` clips in all, drawn at
    random with ``seed``; the kept clips stay in their original order."""
    keep = np.arange(len(split))
    rng = np.random.default_rng([seed, 11])
    if per_class is not None and split.task.name == "single_label":
        labels = split.targets
        keep = np.concatenate(
            [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
        )
    if limit is not None and len(keep) > limit:
        keep = rng.permutation(keep)[:limit]
    return split.select(np.sort(keep))


@dataclass
class TaskCollate:
    """A :class:`~finetune.data.CropCollate` that also batches multi-label targets.

    ``CropCollate`` batches integer ``label`` and ``ratings`` rows; multi-hot ``labels`` rows are taken out, and
    put back per crop (``batch["labels"]`` float32 ``[M, C]``).
    """

    crop: CropCollate
    task: Task

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if self.task.name != "multi_label":
            return dict(self.crop(rows))
        key = TARGET_COLUMNS["multi_label"]
        batch = dict(self.crop([{k: v for k, v in row.items() if k != key} for row in rows]))
        hot = torch.stack([torch.as_tensor(np.asarray(row[key]), dtype=torch.float32) for row in rows])
        batch[key] = hot[batch["clip_index"]]
        return batch

    @property
    def train(self) -> bool:
        """Whether the crops are random training windows."""
        return self.crop.train

    def set_position(self, epoch: int, batches_done: int = 0) -> None:
        """Passed on to the crop collate (the training loop's exact-resume hook)."""
        self.crop.set_position(epoch, batches_done)
