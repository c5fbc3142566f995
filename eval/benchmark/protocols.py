"""Protocols: how a task's data becomes the train/validation/test views of fold ``i``.

- ``fixed``: the data set's own split (one fold).
- ``rotation`` (HEAR-style): every clip of every split pooled, dealt into ``n_folds`` seeded folds (stratified by
  class for single-label tasks); fold ``i`` tests on fold ``i``, validates on fold ``i + 1`` and trains on the
  rest, so every clip is tested exactly once and nothing is ever selected on the test fold.
- ``loader_folds``: the loader's own folds: its config's ``fold_index`` set to ``i`` (PercePiano: a fixed test
  set and ``n_folds`` validation folds).

A protocol is ``protocol(task, build, fold) -> Fold``, where ``build(overrides)`` returns the data set's
:class:`~finetune.data.registry.TaskData` with those config keys overridden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from backbones.config import did_you_mean
from finetune.data.registry import TaskData
from finetune.data.splits import kfold

from .data import SPLITS, ClipSplit, Fold
from .tasks import BenchmarkTask

__all__ = ["PROTOCOLS", "fold_assignment", "get_protocol", "register_protocol"]

DataBuilder = Callable[[Mapping[str, Any]], TaskData]
Protocol = Callable[[BenchmarkTask, DataBuilder, int], Fold]

_PROTOCOLS: dict[str, Protocol] = {}
PROTOCOLS: Mapping[str, Protocol] = MappingProxyType(_PROTOCOLS)
"""Registered protocols by name (read-only; add one with :func:`register_protocol`)."""


def register_protocol(name: str) -> Callable[[Protocol], Protocol]:
    """Decorator: register ``protocol(task, build, fold) -> Fold`` under ``name``."""

    def decorator(fn: Protocol) -> Protocol:
        if name in _PROTOCOLS:
            raise ValueError(f"protocol {name!r} is registered twice")
        _PROTOCOLS[name] = fn
        return fn

    return decorator


def get_protocol(name: str) -> Protocol:
    """The protocol ``name``; a KeyError lists the known ones."""
    if name not in _PROTOCOLS:
        raise KeyError(
            f"unknown protocol {name!r}{did_you_mean(name, _PROTOCOLS)}; known: {', '.join(_PROTOCOLS)}"
        )
    return _PROTOCOLS[name]


def _check_fold(task: BenchmarkTask, fold: int) -> None:
    if not 0 <= fold < task.n_folds:
        raise ValueError(f"task {task.name!r} has folds 0..{task.n_folds - 1}, got fold {fold}")


def _views(data: TaskData) -> dict[str, ClipSplit]:
    return {name: ClipSplit.of(data.splits[name], data.task) for name in SPLITS}


@register_protocol("fixed")
def fixed(task: BenchmarkTask, build: DataBuilder, fold: int) -> Fold:
    """The data set's own train/validation/test split."""
    _check_fold(task, fold)
    data = build({})
    views = _views(data)
    return Fold(fold, views["train"], views["validation"], views["test"], data.task, data.names)


def fold_assignment(n: int, n_folds: int, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """The fold (0..n_folds-1) of each of ``n`` clips: seeded, stratified by ``labels`` when given.

    Raises:
        ValueError: fewer clips than folds.
    """
    if n < n_folds:
        raise ValueError(f"{n} clips cannot fill {n_folds} folds")
    out = np.full(n, -1, dtype=np.int64)
    for i in range(n_folds):
        out[kfold(n, n_folds, i, labels=labels, seed=seed)["test"]] = i
    return out


@register_protocol("rotation")
def rotation(task: BenchmarkTask, build: DataBuilder, fold: int) -> Fold:
    """Pooled clips in ``task.n_folds`` folds: test fold ``fold``, validation fold ``fold + 1``, train the rest."""
    _check_fold(task, fold)
    if task.n_folds < 3:
        raise ValueError(f"task {task.name!r}: rotation needs at least 3 folds, got {task.n_folds}")
    data = build({})
    views = _views(data)
    pool = ClipSplit.concat([views[name] for name in SPLITS])
    labels = pool.targets if data.task.name == "single_label" else None
    folds = fold_assignment(len(pool), task.n_folds, labels, int(task.settings.get("seed", 0)))
    val_fold = (fold + 1) % task.n_folds
    return Fold(
        fold,
        pool.select(np.flatnonzero((folds != fold) & (folds != val_fold))),
        pool.select(np.flatnonzero(folds == val_fold)),
        pool.select(np.flatnonzero(folds == fold)),
        data.task,
        data.names,
    )


@register_protocol("loader_folds")
def loader_folds(task: BenchmarkTask, build: DataBuilder, fold: int) -> Fold:
    """The loader's fold ``fold`` (its config's ``fold_index``), with the loader's own test set."""
    _check_fold(task, fold)
    data = build({"fold_index": fold})
    views = _views(data)
    return Fold(fold, views["train"], views["validation"], views["test"], data.task, data.names)
