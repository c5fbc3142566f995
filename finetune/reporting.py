"""What a recipe run says and leaves behind about its data and its test, so that a run explains itself:

- at the start, :func:`data_summary` (split sizes, clips per class and per split, hours of audio) and
  ``splits.csv`` (:func:`write_splits`: which clip went to which split);
- at the end, the test's ``predictions.csv`` (:func:`write_predictions`: one row per clip, with its target and
  the model's probabilities or ratings), the baselines a result should beat (:func:`baselines`: chance and
  majority class, or the training mean for ratings) and :func:`run_summary` (baselines, the confusion matrix,
  clips that could not be read).

Task-specific parts (baselines, prediction columns) are registries keyed by task name.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from heads.tasks import Task

from .data.registry import SPLITS, TaskData

__all__ = [
    "BASELINES",
    "PREDICTION_COLUMNS",
    "baselines",
    "data_summary",
    "row_targets",
    "run_summary",
    "write_predictions",
    "write_splits",
]

# task.target_key (the batch key) -> the row column it comes from (CropCollate's label_key / ratings_key)
_ROW_KEYS = {"single_label": "label", "multi_label": "labels", "rating": "ratings"}  # task -> row key
_SPLIT_COLUMNS = ("name", "id", "path", "label", "group", "duration")


def _metadata(split: Dataset) -> Dataset:
    """The split without in-memory audio (synthetic sets hold samples in a column) and without formatting."""
    return split.select_columns([c for c in split.column_names if c != "audio"]).with_format(None)


def row_targets(split: Dataset, task: Task) -> np.ndarray:
    """The targets of a split's rows, as the task scores them.

    Shapes:
        -> ``[N]`` class indices, or ``[N, C]`` (multi-hot tags, ratings).
    """
    key = _ROW_KEYS[task.name]
    return np.asarray(list(_metadata(split)[key]))


def _class_names(split: Dataset) -> list[str] | None:
    feature = split.features.get("label")
    names = getattr(feature, "names", None)
    return list(names) if names else None


def data_summary(data: TaskData, name: str) -> str:
    """Split sizes, classes with their clips per split (single-label sets), and hours of audio (file rows)."""
    parts = {s: _metadata(data.splits[s]) for s in SPLITS}
    sizes = " / ".join(f"{s} {len(parts[s])}" for s in SPLITS)
    total = sum(len(p) for p in parts.values())
    hours = [
        d for p in parts.values() if "duration" in p.column_names for d in p["duration"] if d is not None
    ]
    audio = f", {sum(hours) / 3600:.2f} h of audio" if hours else ""
    lines = [f"data set {name}: {total} clips ({sizes}), {len(data.names)} {data.task.name} outputs{audio}"]
    classes = _class_names(data.splits["train"])
    if classes is None or data.task.name != "single_label":
        return "\n".join(lines)
    counts = {s: Counter(parts[s]["label"]) for s in SPLITS}
    width = max(len(c) for c in ["class", *classes])
    lines.append(f"  {'class':<{width}}  " + "  ".join(f"{s:>10}" for s in SPLITS))
    for i, c in enumerate(classes):
        lines.append(f"  {c:<{width}}  " + "  ".join(f"{counts[s][i]:>10}" for s in SPLITS))
    return "\n".join(lines)


def write_splits(data: TaskData, path: str | os.PathLike[str]) -> Path:
    """``splits.csv``: one row per clip with its split and whichever of ``name``/``id``, ``path``, ``label`` (the
    class name), ``group`` and ``duration`` the data set has."""
    parts = {s: _metadata(data.splits[s]) for s in SPLITS}
    columns = [c for c in _SPLIT_COLUMNS if any(c in p.column_names for p in parts.values())]
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["split", *columns])
        writer.writeheader()
        for split, part in parts.items():
            classes = _class_names(part)
            for row in part:
                record = {"split": split, **{c: row.get(c) for c in columns}}
                if classes is not None and "label" in columns:
                    record["label"] = classes[row["label"]]
                writer.writerow(record)
    return path


# ---------------------------------------------------------------------------------------------------- baselines

Baseline = Callable[[np.ndarray, np.ndarray, Sequence[str]], dict[str, Any]]
BASELINES: dict[str, Baseline] = {}


def _register_baseline(task_name: str) -> Callable[[Baseline], Baseline]:
    def decorator(fn: Baseline) -> Baseline:
        BASELINES[task_name] = fn
        return fn

    return decorator


@_register_baseline("single_label")
def _class_baselines(train: np.ndarray, test: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    majority = Counter(train.tolist()).most_common(1)[0][0]
    return {
        "chance_accuracy": 1.0 / len(names),
        "majority_class": names[majority],
        "majority_accuracy": float((test == majority).mean()),
    }


@_register_baseline("multi_label")
def _tag_baselines(train: np.ndarray, test: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    present = test >= 0.5
    rates = present.mean(axis=0)
    return {"chance_map": float(rates[present.any(axis=0)].mean()) if present.any() else float("nan")}


@_register_baseline("rating")
def _rating_baselines(train: np.ndarray, test: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    mean = train.mean(axis=0)
    return {"train_mean_mse": float(((test - mean) ** 2).mean())}


def baselines(task: Task, train_targets: np.ndarray, test_targets: np.ndarray, names: Sequence[str]) -> dict:
    """What a trivial predictor scores on the test set (empty for a task without registered baselines):
    single-label: chance and majority-class accuracy (the majority of the training set); multi-label: the mAP of
    random scores (the mean positive rate); rating: the MSE of always predicting the training mean."""
    fn = BASELINES.get(task.name)
    return fn(np.asarray(train_targets), np.asarray(test_targets), names) if fn else {}


# ------------------------------------------------------------------------------------------------- predictions

Columns = Callable[[Sequence[str], np.ndarray, Any], dict[str, Any]]
PREDICTION_COLUMNS: dict[str, Columns] = {}


def _register_columns(task_name: str) -> Callable[[Columns], Columns]:
    def decorator(fn: Columns) -> Columns:
        PREDICTION_COLUMNS[task_name] = fn
        return fn

    return decorator


@_register_columns("single_label")
def _class_columns(names: Sequence[str], probs: np.ndarray, target: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if target is not None:
        out |= {"target": names[int(target)], "correct": int(int(np.argmax(probs)) == int(target))}
    out["predicted"] = names[int(np.argmax(probs))]
    return out | {f"p_{n}": float(p) for n, p in zip(names, probs)}


@_register_columns("multi_label")
def _tag_columns(names: Sequence[str], probs: np.ndarray, target: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if target is not None:
        out["target"] = ";".join(n for n, t in zip(names, target) if t >= 0.5)
    out["predicted"] = ";".join(n for n, p in zip(names, probs) if p >= 0.5)
    return out | {f"p_{n}": float(p) for n, p in zip(names, probs)}


@_register_columns("rating")
def _rating_columns(names: Sequence[str], values: np.ndarray, target: Any) -> dict[str, Any]:
    out = {f"pred_{n}": float(v) for n, v in zip(names, values)}
    if target is not None:
        out |= {f"true_{n}": float(t) for n, t in zip(names, target)}
    return out


def write_predictions(
    path: str | os.PathLike[str],
    task: Task,
    names: Sequence[str],
    clips: Iterable[Mapping[str, Any]],
) -> Path:
    """``predictions.csv``: one row per clip. Each clip mapping holds ``name``, ``path``, ``error`` (or None),
    ``windows``, ``output`` (what users read: probabilities or ratings, ``[C]``, None on error) and ``target``
    (None when unknown); the task's columns (:data:`PREDICTION_COLUMNS`) follow."""
    columns = PREDICTION_COLUMNS[task.name]
    rows = []
    for clip in clips:
        row: dict[str, Any] = {k: clip.get(k) for k in ("name", "path", "windows", "error")}
        if clip.get("output") is not None:
            row |= columns(names, np.asarray(clip["output"]), clip.get("target"))
        rows.append(row)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


# ----------------------------------------------------------------------------------------------------- summary


def _confusion(matrix: Sequence[Sequence[int]], names: Sequence[str]) -> list[str]:
    short, corner = [n[:10] for n in names], "true / predicted"
    width = max(len(n) for n in [corner, *names])
    cell = max(5, *(len(s) for s in short))
    lines = [f"  {corner:<{width}}  " + " ".join(f"{s:>{cell}}" for s in short)]
    lines += [f"  {n:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row) for n, row in zip(names, matrix)]
    return lines


def run_summary(metrics: Mapping[str, Any]) -> str:
    """The end-of-run lines that follow a recipe's own summary: baselines, the confusion matrix (single-label),
    and test clips or training rows that could not be read."""
    lines = []
    base = metrics.get("baselines", {})
    if "majority_accuracy" in base:
        lines.append(
            f"baselines: chance accuracy {base['chance_accuracy']:.3f}, majority class "
            f"{base['majority_class']!r} {base['majority_accuracy']:.3f}"
        )
    if "chance_map" in base:
        lines.append(f"baseline: mAP of random scores {base['chance_map']:.3f}")
    if "train_mean_mse" in base:
        lines.append(f"baseline: predicting the training mean gives MSE {base['train_mean_mse']:.4f}")
    if "confusion_matrix" in metrics:
        lines.append("confusion matrix (rows: true class, columns: predicted):")
        lines += _confusion(metrics["confusion_matrix"], metrics["class_names"])
    if metrics.get("test_errors"):
        lines.append(f"{len(metrics['test_errors'])} test clip(s) could not be read: see predictions.csv")
    if metrics.get("skipped_rows"):
        lines.append(
            f"{metrics['skipped_rows']} row(s) failed to read during training and were skipped: see skipped.jsonl"
        )
    return "\n".join(lines)
