"""Plots people would rather look at than read: loss curves, confusion matrices, reliability diagrams,
per-dimension rating scatter and R2/correlation bars. Each function writes one PNG and returns its path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_loss_curves", "plot_confusion_matrix", "plot_reliability", "plot_ratings"]


def _pyplot():  # noqa: ANN202  (matplotlib's module type)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Training loss per step and, where present, evaluation loss and main metric."""
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
    ax.legend()
    metric_key = next((k for k in ("eval/accuracy", "eval/mean_r") if any(k in h for h in history)), None)
    if metric_key:
        ax2 = ax.twinx()
        pts = [(h["step"], h[metric_key]) for h in history if metric_key in h]
        ax2.plot(*zip(*pts), "s--", color="tab:green", label=metric_key)
        ax2.set_ylabel(metric_key)
        ax2.legend(loc="center right")
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path
) -> Path:
    """Row-normalised confusion matrix with counts in the cells."""
    plt = _pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 1.0 + 0.55 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
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


def plot_reliability(probs: np.ndarray, labels: np.ndarray, path: str | Path, n_bins: int = 10) -> Path:
    """Reliability diagram: accuracy against confidence per bin, with the diagonal of perfect calibration."""
    plt = _pyplot()
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    acc = [correct[idx == b].mean() if (idx == b).any() else np.nan for b in range(n_bins)]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(edges[:-1], acc, width=1 / n_bins, align="edge", edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend()
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
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
