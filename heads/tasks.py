"""Tasks: what a head's outputs mean, how they are scored and which way is better.

A :class:`Task` is the one place that knows, for its kind of problem,

- which :class:`finetune.ModelOutput` field holds the prediction (``output_field``) and which batch key holds
  the targets (``target_key``);
- how predictions become probabilities (:meth:`Task.probabilities`: softmax, sigmoid, or none for ratings);
- its metrics (:meth:`Task.metrics`), the metric a run selects its best checkpoint on (``default_metric``) and
  the direction of every scalar metric (:meth:`Task.is_better`).

Every head exposes its task (``head.task``); the training loop, evaluation, recipes, plots, calibration and the
streaming engine read it instead of guessing from array shapes or metric names. Three tasks are registered:
``single_label`` (genres: softmax over classes), ``multi_label`` (tagging: independent sigmoids) and
``rating`` (multi-output regression such as PercePiano's 19 dimensions). A new task is one class here,
decorated with :func:`register_task`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import numpy as np
from torch import Tensor

from .metrics import classification_metrics, multilabel_metrics, rating_metrics

__all__ = [
    "Task",
    "SingleLabelTask",
    "MultiLabelTask",
    "RatingTask",
    "TASKS",
    "SINGLE_LABEL",
    "MULTI_LABEL",
    "RATING",
    "get_task",
    "list_tasks",
    "register_task",
]


class Task:
    """Base class of the tasks; subclasses set the class attributes and implement the two methods.

    Attributes:
        name: registry name.
        output_field: the :class:`finetune.ModelOutput` field holding the prediction (``logits``/``ratings``).
        target_key: the batch key holding the targets (``labels``/``ratings``).
        is_classification: predictions are class scores (probabilities exist; calibration applies).
        default_metric: what a training run selects its best checkpoint on.
        metric_names: the scalar metrics :meth:`metrics` returns (plus ``loss``, added by evaluation).
        lower_is_better: the scalar metrics for which a smaller value is better.
    """

    name: ClassVar[str]
    output_field: ClassVar[str]
    target_key: ClassVar[str]
    is_classification: ClassVar[bool]
    default_metric: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]
    lower_is_better: ClassVar[frozenset[str]]

    def probabilities(self, predictions: Tensor) -> Tensor:
        """Predictions -> probabilities (classification) or the predictions themselves (ratings).

        Shapes: [B, C] -> [B, C].
        """
        raise NotImplementedError

    def metrics(
        self, predictions: np.ndarray, targets: np.ndarray, names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """This task's metrics of ``predictions`` against ``targets``; ``names`` label the classes/dimensions.

        Shapes: predictions [N, C]; targets [N] (single-label) or [N, C].
        """
        raise NotImplementedError

    def check_metric(self, metric: str) -> None:
        """Raise a ValueError (with close names) when ``metric`` is not one of this task's scalar metrics."""
        known = (*self.metric_names, "loss")
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{metric!r} is not a {self.name} metric{hint}; choose one of {', '.join(known)}"
            )

    def is_better(self, metric: str, value: float, best: float | None) -> bool:
        """Whether ``value`` of ``metric`` improves on ``best`` (None: nothing yet, so it does).

        An undefined (NaN) value never improves, and any defined value improves on an undefined best, so one
        evaluation where a metric is undefined (e.g. ROC-AUC without negatives) cannot freeze the selection.
        """
        if math.isnan(value):
            return False
        if best is None or math.isnan(best):
            return True
        return value < best if metric in self.lower_is_better or metric == "loss" else value > best

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


T = TypeVar("T", bound=type[Task])

_TASKS: dict[str, Task] = {}
TASKS: Mapping[str, Task] = MappingProxyType(_TASKS)


def register_task(cls: T) -> T:
    """Class decorator: register one instance of a :class:`Task` subclass under ``cls.name``."""
    if cls.name in _TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls()
    return cls


def list_tasks() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def get_task(name: str | Task) -> Task:
    """The registered task called ``name`` (a :class:`Task` is returned as it is).

    Raises:
        KeyError: unknown name; the message lists the known ones and the closest match.
    """
    if isinstance(name, Task):
        return name
    if name not in _TASKS:
        close = difflib.get_close_matches(str(name), list(_TASKS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(list_tasks())}")
    return _TASKS[name]


def _metrics_with(
    fn: Callable[..., dict[str, Any]],
    predictions: np.ndarray,
    targets: np.ndarray,
    names: Sequence[str] | None,
) -> dict[str, Any]:
    return fn(np.asarray(predictions), np.asarray(targets), names)


@register_task
class SingleLabelTask(Task):
    """One class per clip (genres): softmax probabilities, integer class targets ``[N]``."""

    name = "single_label"
    output_field = "logits"
    target_key = "labels"
    is_classification = True
    default_metric = "accuracy"
    metric_names = ("accuracy", "macro_f1", "ece", "nll")
    lower_is_better = frozenset({"ece", "nll"})

    def probabilities(self, predictions: Tensor) -> Tensor:
        return predictions.softmax(dim=-1)

    def metrics(
        self, predictions: np.ndarray, targets: np.ndarray, names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        targets = np.asarray(targets)
        if targets.ndim == 2:  # soft (mixed) targets: score against their most likely class
            targets = targets.argmax(axis=1)
        return _metrics_with(classification_metrics, predictions, targets.astype(np.int64), names)


@register_task
class MultiLabelTask(Task):
    """Any number of tags per clip: independent sigmoid probabilities, multi-hot targets ``[N, C]``."""

    name = "multi_label"
    output_field = "logits"
    target_key = "labels"
    is_classification = True
    default_metric = "map"
    metric_names = ("map", "roc_auc", "micro_f1", "macro_f1")
    lower_is_better = frozenset()

    def probabilities(self, predictions: Tensor) -> Tensor:
        return predictions.sigmoid()

    def metrics(
        self, predictions: np.ndarray, targets: np.ndarray, names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        return _metrics_with(multilabel_metrics, predictions, targets, names)


@register_task
class RatingTask(Task):
    """Multi-output regression (PercePiano's 19 perceptual dimensions): targets ``[N, D]``."""

    name = "rating"
    output_field = "ratings"
    target_key = "ratings"
    is_classification = False
    default_metric = "mean_r"
    metric_names = ("mean_r", "mean_r2", "mse", "mae")
    lower_is_better = frozenset({"mse", "mae"})

    def probabilities(self, predictions: Tensor) -> Tensor:
        return predictions

    def metrics(
        self, predictions: np.ndarray, targets: np.ndarray, names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        return _metrics_with(rating_metrics, predictions, targets, names)


SINGLE_LABEL: Task = get_task("single_label")
MULTI_LABEL: Task = get_task("multi_label")
RATING: Task = get_task("rating")
