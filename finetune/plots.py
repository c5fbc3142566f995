"""Plots people would rather look at than read: loss curves, confusion matrices, reliability diagrams,
per-class average precision, per-dimension rating scatter and R2/correlation bars, and a live stream's timeline. Each ``plot_*`` function
writes one PNG and returns its path. Legends sit outside the axes (never on the data), a confusion matrix has
its accuracy in the title, and a reliability diagram its ECE in the title and each bin's count on its bar.

:func:`plot_evaluation` draws what suits a task's evaluation, through a registry keyed by task name
(:func:`register_task_plots`): ``single_label`` -> confusion matrix and reliability diagram; ``multi_label`` ->
per-class average precision and a reliability diagram over all (clip, class) pairs; ``rating`` -> the ratings
figure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from heads.tasks import Task, get_task

__all__ = [
    "TASK_PLOTS",
    "StreamTrack",
    "plot_average_precision",
    "plot_confusion_matrix",
    "plot_evaluation",
    "plot_loss_curves",
    "plot_multilabel_reliability",
    "plot_ratings",
    "plot_reliability",
    "plot_stream_timeline",
    "register_task_plots",
]

# (task, predictions [N, C], targets, metrics, names, out_dir) -> the PNGs written
TaskPlots = Callable[[Task, np.ndarray, np.ndarray, Mapping[str, Any], Sequence[str], Path], list[Path]]
_TASK_PLOTS: dict[str, TaskPlots] = {}
TASK_PLOTS: Mapping[str, TaskPlots] = MappingProxyType(_TASK_PLOTS)


def _pyplot():  # noqa: ANN202  (matplotlib's module type)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _legend_outside(ax: Any, handles: list | None = None, labels: list | None = None, **kwargs: Any) -> Any:
    """A legend to the right of the axes, off the data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(
        handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs
    )


def plot_loss_curves(
    history: Sequence[Mapping[str, Any]], path: str | Path, metric: str | None = None
) -> Path:
    """Training loss per step and, where present, evaluation loss and the evaluation ``metric`` (e.g. the
    selection metric; on a second axis). The legend sits above the axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    evals = [(h["step"], h["eval/loss"]) for h in history if "eval/loss" in h]
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    metric_key = f"eval/{metric}"
    if metric not in (None, "loss") and any(metric_key in h for h in history):
        ax2 = ax.twinx()
        pts = [(h["step"], h[metric_key]) for h in history if metric_key in h]
        ax2.plot(*zip(*pts), "s--", color="tab:green", label=metric_key)
        ax2.set_ylabel(metric_key)
        more_handles, more_labels = ax2.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(
        handles,
        labels,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.02),
        ncol=3,
        frameon=False,
        borderaxespad=0.0,
    )
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path
) -> Path:
    """Row-normalised confusion matrix with counts in the cells and the accuracy in the title."""
    plt = _pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 1.4 + 0.55 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total, correct = int(m.sum()), int(np.trace(m))
    ax.set_title(f"accuracy {correct / max(total, 1):.3f} ({correct} of {total})")
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    int(m[i, j]),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    return _save(fig, path)


def plot_reliability(probs: np.ndarray, labels: np.ndarray, path: str | Path, n_bins: int = 15) -> Path:
    """Reliability diagram of single-label predictions: accuracy against top-class confidence per bin, with the
    diagonal of perfect calibration, each bin's clip count and the ECE (the metrics' 15 bins by default).

    Shapes:
        probs: [N, C]; labels: [N] integer classes.
    """
    correct = probs.argmax(axis=1) == labels
    return _reliability(probs.max(axis=1), correct, path, n_bins, "confidence", "accuracy", "clips")


def plot_multilabel_reliability(
    probs: np.ndarray, targets: np.ndarray, path: str | Path, n_bins: int = 10
) -> Path:
    """Reliability diagram of multi-label predictions over all (clip, class) pairs: the fraction of pairs where
    the tag is present against the predicted probability, per bin, with each bin's pair count and the ECE.

    Shapes:
        probs, targets: [N, C] (targets binarised at 0.5, as the multi-label metrics do).
    """
    present = np.asarray(targets, dtype=np.float64).ravel() >= 0.5
    return _reliability(
        np.asarray(probs).ravel(), present, path, n_bins, "predicted probability", "fraction present", "pairs"
    )


def _reliability(
    confidence: np.ndarray,
    outcome: np.ndarray,
    path: str | Path,
    n_bins: int,
    xlabel: str,
    ylabel: str,
    unit: str,
) -> Path:
    plt = _pyplot()
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    rate = [outcome[idx == b].mean() if counts[b] else np.nan for b in range(n_bins)]
    # ECE as heads.metrics computes it: the count-weighted gap between each bin's rate and mean confidence
    gaps = [counts[b] * abs(rate[b] - confidence[idx == b].mean()) for b in range(n_bins) if counts[b]]
    ece = float(sum(gaps) / max(len(confidence), 1))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    bars = ax.bar(edges[:-1], rate, width=1 / n_bins, align="edge", edgecolor="k", alpha=0.7, label=ylabel)
    for bar, count in zip(bars, counts):
        if count:
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                bar.get_height() + 0.01,
                str(count),
                ha="center",
                fontsize=6,
            )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"ECE {ece:.3f} ({len(confidence)} {unit}; bin counts on the bars)")
    _legend_outside(ax)
    return _save(fig, path)


def plot_average_precision(
    per_class_ap: Mapping[str, float | None], path: str | Path, chance: Sequence[float] | None = None
) -> Path:
    """Average precision per class as bars (a class without positives has none), the mean as a line, and
    each class's chance level (its positive rate, the AP of random scores) as a tick when given."""
    plt = _pyplot()
    names = list(per_class_ap)
    ap = np.array([np.nan if v is None else v for v in per_class_ap.values()], dtype=np.float64)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(3.5 + 0.35 * len(names), 4))  # room for the legend on the right
    ax.bar(x, np.nan_to_num(ap), 0.7, label="average precision")
    if not np.isnan(ap).all():
        ax.axhline(float(np.nanmean(ap)), color="tab:red", lw=1, label=f"mAP {np.nanmean(ap):.3f}")
    if chance is not None:
        ax.plot(x, chance, "_", color="k", ms=12, mew=2, label="chance (positive rate)")
    ax.set_ylim(0, 1)
    ax.set_xticks(x, [n[:18] for n in names], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("average precision")
    _legend_outside(ax, fontsize=7)
    return _save(fig, path)


def plot_ratings(
    preds: np.ndarray,
    targets: np.ndarray,
    dimension_names: Sequence[str],
    per_dim: Mapping[str, Mapping[str, float]],
    path: str | Path,
) -> Path:
    """Predicted-vs-true scatter per dimension, and a bar chart of Pearson r and R2 per dimension."""
    plt = _pyplot()
    d = len(dimension_names)
    cols = min(5, d)
    rows = -(-d // cols) + 1
    fig = plt.figure(figsize=(3.0 * cols, 2.6 * rows))
    for k, name in enumerate(dimension_names):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.scatter(targets[:, k], preds[:, k], s=6, alpha=0.6)
        lo, hi = (
            float(min(targets[:, k].min(), preds[:, k].min())),
            float(max(targets[:, k].max(), preds[:, k].max())),
        )
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{name[:28]}\nr={per_dim[name]['r']:.2f}", fontsize=7)
        ax.tick_params(labelsize=6)
    ax = fig.add_subplot(rows, 1, rows)
    x = np.arange(d)
    ax.bar(x - 0.2, [per_dim[n]["r"] for n in dimension_names], 0.4, label="Pearson r")
    ax.bar(x + 0.2, [per_dim[n]["r2"] for n in dimension_names], 0.4, label="R2")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [n[:18] for n in dimension_names], rotation=60, ha="right", fontsize=6)
    _legend_outside(ax, fontsize=7)
    return _save(fig, path)


def register_task_plots(task_name: str) -> Callable[[TaskPlots], TaskPlots]:
    """Register ``plots(task, predictions, targets, metrics, names, out_dir) -> [paths]`` for a task name."""

    def decorator(fn: TaskPlots) -> TaskPlots:
        if task_name in _TASK_PLOTS:
            raise ValueError(f"plots for task {task_name!r} are registered twice")
        _TASK_PLOTS[task_name] = fn
        return fn

    return decorator


def plot_evaluation(
    task: Task | str,
    predictions: np.ndarray,
    targets: np.ndarray,
    metrics: Mapping[str, Any],
    names: Sequence[str],
    out_dir: str | Path,
) -> list[Path]:
    """The plots that suit ``task`` (see the module docstring), from per-clip ``predictions`` against
    ``targets`` and the ``metrics`` that ``task.metrics`` computed from them; returns the PNGs written.

    Shapes:
        predictions: [N, C]; targets: [N] (single-label) or [N, C].

    Raises:
        KeyError: no plots are registered for the task.
    """
    task = get_task(task)
    if task.name not in _TASK_PLOTS:
        raise KeyError(
            f"no plots are registered for the {task.name!r} task (registered: {', '.join(sorted(_TASK_PLOTS))}); "
            "add them with finetune.plots.register_task_plots"
        )
    return _TASK_PLOTS[task.name](task, predictions, targets, metrics, names, Path(out_dir))


def _probabilities(task: Task, predictions: np.ndarray) -> np.ndarray:
    return task.probabilities(torch.as_tensor(predictions, dtype=torch.float64)).numpy()


@register_task_plots("single_label")
def _single_label_plots(
    task: Task,
    predictions: np.ndarray,
    targets: np.ndarray,
    metrics: Mapping[str, Any],
    names: Sequence[str],
    out_dir: Path,
) -> list[Path]:
    labels = np.asarray(targets)
    if labels.ndim == 2:  # soft (mixed) targets count as their most likely class, as the task scores them
        labels = labels.argmax(axis=1)
    return [
        plot_confusion_matrix(metrics["confusion_matrix"], names, out_dir / "confusion_matrix.png"),
        plot_reliability(
            _probabilities(task, predictions), labels.astype(np.int64), out_dir / "reliability.png"
        ),
    ]


@register_task_plots("multi_label")
def _multi_label_plots(
    task: Task,
    predictions: np.ndarray,
    targets: np.ndarray,
    metrics: Mapping[str, Any],
    names: Sequence[str],
    out_dir: Path,
) -> list[Path]:
    present = np.asarray(targets, dtype=np.float64) >= 0.5
    return [
        plot_average_precision(
            metrics["per_class_ap"], out_dir / "average_precision.png", present.mean(axis=0)
        ),
        plot_multilabel_reliability(_probabilities(task, predictions), targets, out_dir / "reliability.png"),
    ]


@register_task_plots("rating")
def _rating_plots(
    task: Task,
    predictions: np.ndarray,
    targets: np.ndarray,
    metrics: Mapping[str, Any],
    names: Sequence[str],
    out_dir: Path,
) -> list[Path]:
    return [plot_ratings(predictions, targets, names, metrics["per_dimension"], out_dir / "ratings.png")]


Segment = tuple[float, float, str]  # (start s, end s, label)


@dataclass(frozen=True)
class StreamTrack:
    """One stream for :func:`plot_stream_timeline`.

    Attributes:
        times: hop times (s of stream), ``[H]``.
        values: per-hop values (e.g. smoothed probabilities), ``[H, C]`` in the order of the labels.
        segments: the reported label's segments, drawn as coloured bands.
        truth: the true segments where known (a synthetic radio), drawn as a strip above the axes.
    """

    times: np.ndarray
    values: np.ndarray
    segments: Sequence[Segment] = ()
    truth: Sequence[Segment] = ()


def plot_stream_timeline(
    tracks: Mapping[str, StreamTrack],
    labels: Sequence[str],
    path: str | Path,
    ylabel: str = "probability",
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> Path:
    """Values over time, one panel per stream, with the segments as bands in their label's colour (and the
    true segments, where given, as a strip along the top). Only the labels that lead at some hop, or name a
    segment, get a line and a legend entry, so that a 50-class model stays readable. ``ylim=None`` scales the
    axis to the values (ratings)."""
    plt = _pyplot()
    names = list(labels)
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colour = {name: cmap(i % cmap.N) for i, name in enumerate(names)}
    fig, axes = plt.subplots(len(tracks), 1, figsize=(11, 2.6 * len(tracks) + 0.6), squeeze=False)
    for ax, (title, track) in zip(axes[:, 0], tracks.items()):
        values = np.asarray(track.values, dtype=float)
        shown = set(values.argmax(axis=1).tolist()) | {
            names.index(s[2]) for s in (*track.segments, *track.truth) if s[2] in colour
        }
        for start, end, label in track.segments:
            ax.axvspan(start, end, color=colour.get(label, "grey"), alpha=0.18, lw=0)
        for start, end, label in track.truth:
            ax.axvspan(start, end, ymin=0.95, ymax=1.0, color=colour.get(label, "grey"), lw=0)
        for i in sorted(shown):
            ax.plot(track.times, values[:, i], color=colour[names[i]], lw=1.3, label=names[i])
        ax.set_xlim(float(np.min(track.times)), float(np.max(track.times)) + 1e-9)
        ax.set_ylabel(ylabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(
            title + ("   (bands: reported label; top strip: truth)" if track.truth else ""), fontsize=9
        )
        ax.grid(alpha=0.3)
        _legend_outside(ax, fontsize=7)
    axes[-1, 0].set_xlabel("stream time (s)")
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps legends placed outside the axes
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
