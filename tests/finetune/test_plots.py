"""Plots by task through the registry: which files each task gets, what the new multi-label figures show, and
clear errors for tasks without plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import finetune.plots as plots
from heads.tasks import MULTI_LABEL, RATING, SINGLE_LABEL, Task

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Each figure a plot function saves, by file name (still written to disk)."""
    seen: dict[str, Any] = {}
    save = plots._save

    def spy(fig: Any, path: str | Path) -> Path:
        seen[Path(path).name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return seen


def test_each_task_gets_its_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 3))
    single = SINGLE_LABEL.metrics(logits, np.arange(12) % 3, ["a", "b", "c"])
    written = plots.plot_evaluation(
        SINGLE_LABEL, logits, np.arange(12) % 3, single, ["a", "b", "c"], tmp_path / "s"
    )
    assert written == [tmp_path / "s" / "confusion_matrix.png", tmp_path / "s" / "reliability.png"]

    tags = (rng.random((12, 3)) < 0.5).astype(np.float32)
    multi = MULTI_LABEL.metrics(logits, tags, ["a", "b", "c"])
    written = plots.plot_evaluation("multi_label", logits, tags, multi, ["a", "b", "c"], tmp_path / "m")
    assert written == [tmp_path / "m" / "average_precision.png", tmp_path / "m" / "reliability.png"]

    ratings = rng.random((12, 2))
    scores = RATING.metrics(ratings + 0.1 * rng.normal(size=(12, 2)), ratings, ["x", "y"])
    written = plots.plot_evaluation(RATING, ratings, ratings, scores, ["x", "y"], tmp_path / "r")
    assert written == [tmp_path / "r" / "ratings.png"]
    for path in tmp_path.rglob("*.png"):
        assert path.read_bytes()[:8] == PNG, path


def test_multilabel_reliability_pools_all_clip_class_pairs(tmp_path: Path, figures: dict[str, Any]) -> None:
    # 8 (clip, class) pairs: four at p=0.05 of which one is present, four at p=0.95 of which three are
    probs = np.array([[0.05, 0.95]] * 4)
    tags = np.array([[1, 1], [0, 1], [0, 1], [0, 0]], dtype=np.float32)
    plots.plot_multilabel_reliability(probs, tags, tmp_path / "rel.png")
    heights = [bar.get_height() for bar in figures["rel.png"].axes[0].patches]
    assert heights[0] == pytest.approx(0.25) and heights[9] == pytest.approx(0.75)
    assert all(np.isnan(h) for h in heights[1:9])


def test_average_precision_bars_show_each_class_and_its_chance(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    plots.plot_average_precision(
        {"a": 0.9, "b": None, "c": 0.4}, tmp_path / "ap.png", chance=[0.5, 0.0, 0.25]
    )
    ax = figures["ap.png"].axes[0]
    assert [bar.get_height() for bar in ax.patches] == [0.9, 0.0, 0.4]  # no bar for a class without positives
    mean_line, chance = ax.lines
    assert mean_line.get_ydata()[0] == pytest.approx(0.65)
    assert list(chance.get_ydata()) == [0.5, 0.0, 0.25]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {
        "average precision",
        "mAP 0.650",
        "chance (positive rate)",
    }


def test_loss_curves_show_the_selection_metric(tmp_path: Path, figures: dict[str, Any]) -> None:
    history = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.8, "eval/loss": 0.9, "eval/map": 0.6}]
    plots.plot_loss_curves(history, tmp_path / "a.png", metric="map")
    plots.plot_loss_curves(history, tmp_path / "b.png", metric="loss")  # already on the loss axis
    plots.plot_loss_curves(history, tmp_path / "c.png", metric="mean_r")  # not logged: nothing to add
    assert [len(figures[n].axes) for n in ("a.png", "b.png", "c.png")] == [2, 1, 1]
    assert figures["a.png"].axes[1].get_ylabel() == "eval/map"


def test_tasks_without_plots_and_double_registration_are_refused(tmp_path: Path) -> None:
    class Ordinal(Task):  # a task that is not registered anywhere
        name = "ordinal"

    with pytest.raises(
        KeyError, match=r"no plots are registered for the 'ordinal' task \(registered: multi_label, rating"
    ):
        plots.plot_evaluation(Ordinal(), np.zeros((2, 2)), np.zeros(2), {}, ["a", "b"], tmp_path)
    with pytest.raises(ValueError, match="plots for task 'rating' are registered twice"):
        plots.register_task_plots("rating")(lambda *args: [])
    assert set(plots.TASK_PLOTS) == {"single_label", "multi_label", "rating"}


def _outside(fig: Any, legend: Any, ax: Any) -> bool:
    fig.canvas.draw()
    return not legend.get_window_extent().overlaps(ax.get_window_extent())


def test_confusion_matrix_and_reliability_titles_carry_their_numbers(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 3)) * 2
    labels = rng.integers(0, 3, 40)
    metrics = SINGLE_LABEL.metrics(logits, labels, ["a", "b", "c"])
    plots.plot_evaluation(SINGLE_LABEL, logits, labels, metrics, ["a", "b", "c"], tmp_path)
    correct = int(np.trace(metrics["confusion_matrix"]))
    assert (
        figures["confusion_matrix.png"].axes[0].get_title()
        == f"accuracy {correct / 40:.3f} ({correct} of 40)"
    )
    ax = figures["reliability.png"].axes[0]
    assert ax.get_title() == f"ECE {metrics['ece']:.3f} (40 clips; bin counts on the bars)"
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    counts = np.bincount(
        np.clip(np.digitize(probs.max(1), np.linspace(0, 1, 16)[1:-1], right=True), 0, 14), minlength=15
    )
    assert [int(t.get_text()) for t in ax.texts] == [int(c) for c in counts if c] and sum(counts) == 40
    assert _outside(figures["reliability.png"], ax.get_legend(), ax)


def test_legends_sit_off_the_data(tmp_path: Path, figures: dict[str, Any]) -> None:
    history = [{"step": s, "loss": 1.0 / s} for s in range(1, 20)] + [
        {"step": 19, "eval/loss": 0.2, "eval/accuracy": 0.9}
    ]
    plots.plot_loss_curves(history, tmp_path / "loss.png", metric="accuracy")
    fig = figures["loss.png"]
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["train loss", "eval loss", "eval/accuracy"]
    assert _outside(fig, legend, fig.axes[0])
    plots.plot_average_precision({"a": 0.9, "b": 0.2}, tmp_path / "ap.png", chance=[0.5, 0.5])
    ap = figures["ap.png"].axes[0]
    assert _outside(figures["ap.png"], ap.get_legend(), ap)


def test_stream_timeline_draws_segments_truth_and_only_the_leading_labels(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    times = np.arange(1.0, 6.0, 0.5)
    values = np.tile([0.6, 0.3, 0.1, 0.0], (len(times), 1))
    values[5:] = [0.2, 0.7, 0.1, 0.0]  # "b" leads from 3.5 s; "c" and "d" never lead
    track = plots.StreamTrack(
        times, values, [(1.0, 3.5, "a"), (3.5, 5.5, "b")], [(0.0, 3.0, "a"), (3.0, 6.0, "d")]
    )
    path = plots.plot_stream_timeline(
        {"one": track, "two": plots.StreamTrack(times, values)}, "abcd", tmp_path / "t.png"
    )
    assert path == tmp_path / "t.png" and path.read_bytes()[:8] == PNG
    first, second = figures["t.png"].axes
    assert [t.get_text() for t in first.get_legend().get_texts()] == ["a", "b", "d"]  # d names a true segment
    assert [t.get_text() for t in second.get_legend().get_texts()] == ["a", "b"]
    assert len(first.patches) == 4 and len(second.patches) == 0  # 2 reported + 2 true bands
    assert first.get_ylim() == (0.0, 1.0) and first.get_xlim() == pytest.approx((1.0, 5.5))
    assert (
        first.get_title() == "one   (bands: reported label; top strip: truth)" and second.get_title() == "two"
    )
