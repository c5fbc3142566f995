"""Scoring: the resampled metrics equal the task metrics, the bootstrap interval on known cases, pooling over
cells, calibration before/after, and a cell's full score."""

from __future__ import annotations

import numpy as np
import pytest

from eval.benchmark.scoring import (
    BOOTSTRAP_METRICS,
    binary_ece,
    bootstrap,
    calibration_scores,
    score_predictions,
    task_loss,
)
from heads.metrics import classification_metrics, multilabel_metrics, rating_metrics
from heads.tasks import MULTI_LABEL, RATING, SINGLE_LABEL


def test_resampled_metrics_equal_the_task_metrics_with_ties_and_constant_targets() -> None:
    rng = np.random.default_rng(0)
    logits = np.round(rng.normal(size=(57, 6)), 1)  # rounded: many tied scores
    tags = (rng.random((57, 6)) < 0.3).astype(np.float64)
    tags[:, 0] = 0.0  # a tag with no positive: left out of mAP and ROC-AUC
    want = multilabel_metrics(logits, tags)
    for name in ("map", "roc_auc"):
        got = BOOTSTRAP_METRICS["multi_label"][name](logits[None], tags[None])
        np.testing.assert_allclose(got, [want[name]], rtol=0, atol=1e-12)
    labels = rng.integers(0, 6, 57)
    want = classification_metrics(logits, labels)
    for name in ("accuracy", "macro_f1"):
        got = BOOTSTRAP_METRICS["single_label"][name](logits[None], labels[None])
        np.testing.assert_allclose(got, [want[name]], rtol=0, atol=1e-12)
    targets = rng.random((57, 4))
    targets[:, 3] = 0.5  # constant dimension: R2 as scikit-learn defines it, r = 0
    preds = targets + 0.3 * rng.normal(size=targets.shape)
    want = rating_metrics(preds, targets)
    for name in ("mean_r2", "mean_r", "mae"):
        got = BOOTSTRAP_METRICS["rating"][name](preds[None], targets[None])
        np.testing.assert_allclose(got, [want[name]], rtol=0, atol=1e-12)


def test_bootstrap_interval_of_a_known_accuracy() -> None:
    labels = np.zeros(400, dtype=np.int64)
    right = np.tile([[2.0, 0.0]], (400, 1))
    half = right.copy()
    half[200:] = [0.0, 2.0]  # 200 of 400 correct: accuracy 0.5, standard error 0.025
    low, high = bootstrap([([half], labels)], BOOTSTRAP_METRICS["single_label"]["accuracy"], 2000, seed=1)
    assert abs(low - (0.5 - 1.96 * 0.025)) < 0.006 and abs(high - (0.5 + 1.96 * 0.025)) < 0.006
    assert bootstrap([([right], labels)], BOOTSTRAP_METRICS["single_label"]["accuracy"], 200) == (1.0, 1.0)
    again = bootstrap([([half], labels)], BOOTSTRAP_METRICS["single_label"]["accuracy"], 2000, seed=1)
    assert again == (low, high)  # seeded: reproducible


def test_pooling_averages_cells_on_the_same_resampled_clips() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 80)
    a, b = rng.normal(size=(80, 3)), rng.normal(size=(80, 3))
    acc = BOOTSTRAP_METRICS["single_label"]["accuracy"]
    one = bootstrap([([a], labels)], acc, 300, seed=5)
    assert bootstrap([([a, a], labels)], acc, 300, seed=5) == pytest.approx(one, abs=1e-12)
    # two folds: each replicate resamples each fold within itself and averages the three cells
    pooled = bootstrap([([a, b], labels), ([a], labels)], acc, 300, seed=5)
    draws = np.random.default_rng(5)
    idx = [draws.integers(0, 80, size=(300, 80)) for _ in range(2)]
    values = (
        acc(a[idx[0]], labels[idx[0]]) + acc(b[idx[0]], labels[idx[0]]) + acc(a[idx[1]], labels[idx[1]])
    ) / 3
    assert pooled == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)
    with pytest.raises(ValueError, match="replicates must be >= 1, got 0"):
        bootstrap([([a], labels)], acc, 0)


def test_binary_ece_on_known_cases() -> None:
    outcomes = np.r_[np.ones(80), np.zeros(20)]
    assert binary_ece(np.full(100, 0.8), outcomes) == pytest.approx(0.0, abs=1e-12)
    assert binary_ece(np.full(100, 0.9), np.r_[np.ones(50), np.zeros(50)]) == pytest.approx(0.4, abs=1e-12)


def test_calibration_fitted_on_validation_repairs_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        true = rng.normal(size=(n, 5)) * 1.5
        probs = np.exp(true) / np.exp(true).sum(axis=1, keepdims=True)
        labels = np.array([rng.choice(5, p=p) for p in probs])
        return 3.0 * true, labels  # logits 3x too sharp

    (val_logits, val_labels), (test_logits, test_labels) = draw(3000), draw(2000)
    scores, calibrated = calibration_scores(SINGLE_LABEL, val_logits, val_labels, test_logits, test_labels)
    assert scores["temperature"] == pytest.approx(3.0, rel=0.05) and scores["fitted_on"] == "validation"
    assert scores["after"]["ece"] < 0.5 * scores["before"]["ece"]
    assert scores["after"]["nll"] < scores["before"]["nll"]
    np.testing.assert_allclose(calibrated, test_logits / scores["temperature"], rtol=1e-9)
    assert task_loss(SINGLE_LABEL, calibrated, test_labels) == pytest.approx(scores["after"]["nll"], rel=1e-9)


def test_a_cells_score_holds_task_metrics_calibration_and_intervals() -> None:
    rng = np.random.default_rng(2)
    tags = (rng.random((40, 4)) < 0.4).astype(np.float32)
    logits = 4.0 * (tags - 0.5) + rng.normal(size=tags.shape)
    metrics, calibrated = score_predictions(MULTI_LABEL, list("abcd"), (logits, tags), (logits, tags), 200)
    assert metrics["map"] == multilabel_metrics(logits, tags)["map"]
    assert set(metrics["ci95"]) == {"map", "roc_auc"} and metrics["ci95"]["map"][0] <= metrics["map"]
    assert metrics["calibration"]["before"]["nll"] == pytest.approx(task_loss(MULTI_LABEL, logits, tags))
    assert calibrated is not None and calibrated.shape == logits.shape
    ratings = rng.random((30, 2))
    metrics, calibrated = score_predictions(RATING, ["x", "y"], (ratings, ratings), (ratings, ratings), 50)
    assert calibrated is None and "calibration" not in metrics
    assert metrics["mean_r2"] == 1.0 and metrics["ci95"]["mean_r2"] == [1.0, 1.0]
