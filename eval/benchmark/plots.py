"""The benchmark's figures, per task: a comparison chart of the headline metric (mean, 95% interval, every cell as
a dot), and per model a confusion matrix summed over cells (single-label), a reliability diagram before and after
calibration over the pooled test clips (classification), and the per-dimension R2 of every model (ratings)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from finetune.plots import plot_confusion_matrix
from heads.metrics import sigmoid, softmax

from .modes import MODES
from .tasks import BenchmarkTask

__all__ = ["plot_comparison", "plot_dimension_r2", "plot_reliability_pair", "plot_task", "row_order"]


def row_order(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Baselines first, then each backbone's modes in :data:`~.modes.MODES` order (probes before fine-tuning)."""
    modes = list(MODES)

    def key(model: str) -> tuple[bool, str, int, str]:
        row = rows[model]
        mode = row.get("mode")
        return (
            row["backbone"] != "baseline",
            row["backbone"],
            modes.index(mode) if mode in modes else -1,
            model,
        )

    return sorted(rows, key=key)


def _pyplot():  # noqa: ANN202  (matplotlib's module type)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_comparison(rows: Mapping[str, Mapping[str, Any]], metric: str, path: Path) -> Path:
    """Horizontal bars of each model's mean ``metric`` with its pooled 95% interval as error bars and each cell
    as a dot; baselines in grey."""
    plt = _pyplot()
    models = row_order(rows)
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.42 * len(models)))
    for i, model in enumerate(models):
        stats = rows[model]["metrics"].get(metric)
        if stats is None:
            continue
        mean = stats["mean"]
        lo, hi = rows[model]["ci95"].get(metric, (mean, mean))
        color = "0.6" if rows[model]["backbone"] == "baseline" else "tab:blue"
        ax.barh(i, mean, color=color, alpha=0.7)
        ax.errorbar(mean, i, xerr=[[max(mean - lo, 0)], [max(hi - mean, 0)]], color="black", capsize=3, lw=1)
        ax.plot(stats["values"], [i] * len(stats["values"]), "o", color="black", ms=3)
    ax.set_yticks(range(len(models)), models)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title("bar: mean; whiskers: pooled 95% bootstrap interval; dots: cells", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _reliability(ax: Any, confidence: np.ndarray, hit: np.ndarray, title: str, n_bins: int = 10) -> None:
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    centres, freq, share = [], [], []
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            centres.append(confidence[sel].mean())
            freq.append(hit[sel].mean())
            share.append(sel.mean())
    ax.plot([0, 1], [0, 1], "--", color="0.5", lw=1)
    ax.scatter(centres, freq, s=20 + 400 * np.asarray(share), color="tab:orange", zorder=3)
    ax.plot(centres, freq, color="tab:orange")
    ax.set(xlim=(0, 1), ylim=(0, 1), title=title)


def plot_reliability_pair(
    task_kind: str, before: np.ndarray, after: np.ndarray, targets: np.ndarray, path: Path
) -> Path:
    """Reliability diagrams of raw and calibrated logits side by side: top-class confidence against accuracy
    (single-label) or every (clip, tag) probability against how often the tag is present (multi-label); marker
    size shows a bin's share of the predictions.

    Shapes:
        before, after: [N, C] logits; targets: [N] classes or [N, C] multi-hot.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for ax, logits, title in zip(axes, (before, after), ("raw", "temperature-calibrated")):
        if task_kind == "single_label":
            probs = softmax(logits)
            _reliability(ax, probs.max(axis=1), probs.argmax(axis=1) == targets.astype(np.int64), title)
            ax.set_xlabel("top-class confidence")
        else:
            _reliability(ax, sigmoid(logits).ravel(), (targets >= 0.5).ravel().astype(float), title)
            ax.set_xlabel("tag probability (every clip and tag)")
    axes[0].set_ylabel("accuracy" if task_kind == "single_label" else "how often the tag is present")
    return _save(fig, path)


def plot_dimension_r2(rows: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Grouped bars: the mean test R2 of every rating dimension for every model."""
    plt = _pyplot()
    models = [m for m in row_order(rows) if "per_dimension_r2" in rows[m]]
    dims = list(rows[models[0]]["per_dimension_r2"])
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(dims) * max(1, len(models) / 3)), 4.5))
    for i, model in enumerate(models):
        values = [rows[model]["per_dimension_r2"][d] for d in dims]
        ax.bar(np.arange(len(dims)) + i * width, values, width, label=model)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(
        np.arange(len(dims)) + 0.4 - width / 2, [d.split(" (")[0][:22] for d in dims], rotation=60, ha="right"
    )
    ax.set_ylabel("test R2 (mean over cells)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_task(
    run_dir: Path,
    task: BenchmarkTask,
    rows: Mapping[str, Mapping[str, Any]],
    entries: Sequence[Mapping[str, Any]],
    slug: Callable[[str], str],
) -> list[Path]:
    """Every figure of one task under ``run_dir/plots``; returns their paths."""
    out = run_dir / "plots"
    kind = entries[0]["task_kind"]
    files = [plot_comparison(rows, task.metric, out / f"{task.slug}-comparison.png")]
    if kind == "rating":
        files.append(plot_dimension_r2(rows, out / f"{task.slug}-r2.png"))
        return files
    for model, row in sorted(rows.items()):
        name = f"{task.slug}-{slug(model)}"
        if "confusion_matrix" in row:
            files.append(
                plot_confusion_matrix(
                    row["confusion_matrix"], entries[0]["names"], out / f"{name}-confusion.png"
                )
            )
        cells = [e for e in entries if e["model"] == model]
        arrays = [load_file(str(run_dir / "cells" / e["cell"] / "predictions.safetensors")) for e in cells]
        if all("test_calibrated" in a for a in arrays):
            before = np.concatenate([a["test_predictions"] for a in arrays])
            after = np.concatenate([a["test_calibrated"] for a in arrays])
            targets = np.concatenate([a["test_targets"] for a in arrays])
            files.append(plot_reliability_pair(kind, before, after, targets, out / f"{name}-reliability.png"))
    return files
