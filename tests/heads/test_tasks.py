"""Tasks: the registry, what each head exposes, probabilities, metric directions and the multi-label metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from heads import MULTI_LABEL, RATING, SINGLE_LABEL, build_head, get_task, list_tasks
from heads.metrics import multilabel_metrics, negative_log_likelihood


def test_registry_lists_three_tasks_and_suggests_close_names() -> None:
    assert list_tasks() == ["multi_label", "rating", "single_label"]
    assert get_task("rating") is RATING
    assert get_task(SINGLE_LABEL) is SINGLE_LABEL
    with pytest.raises(KeyError, match="Did you mean 'multi_label'"):
        get_task("multilabel")


def test_heads_expose_their_task_and_output_field() -> None:
    assert build_head("linear", 8, num_outputs=3).task is SINGLE_LABEL
    assert build_head("mlp", 8, num_outputs=3, multi_label=True).task is MULTI_LABEL
    rating = build_head("rating", 8, num_outputs=4)
    assert rating.task is RATING and rating.output_field == "ratings"
    assert build_head("crnn", 8, num_outputs=3).output_field == "logits"


def test_probabilities_follow_the_task() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    torch.testing.assert_close(SINGLE_LABEL.probabilities(logits), logits.softmax(-1), rtol=0, atol=0)
    torch.testing.assert_close(MULTI_LABEL.probabilities(logits), logits.sigmoid(), rtol=0, atol=0)
    assert RATING.probabilities(logits) is logits


def test_metric_directions_and_unknown_metrics() -> None:
    assert SINGLE_LABEL.is_better("accuracy", 0.8, 0.7) and not SINGLE_LABEL.is_better("ece", 0.2, 0.1)
    assert SINGLE_LABEL.is_better("loss", 0.5, 0.6) and SINGLE_LABEL.is_better("nll", 0.5, None)
    assert RATING.is_better("mean_r", 0.5, 0.4) and RATING.is_better("mae", 0.1, 0.2)
    assert MULTI_LABEL.default_metric == "map" and MULTI_LABEL.is_better("roc_auc", 0.9, 0.8)
    with pytest.raises(
        ValueError, match=r"'acuracy' is not a single_label metric \(did you mean 'accuracy'\?\)"
    ):
        SINGLE_LABEL.check_metric("acuracy")
    with pytest.raises(ValueError, match="not a rating metric"):
        RATING.check_metric("accuracy")


def test_an_undefined_metric_value_never_wins_the_selection() -> None:
    nan = float("nan")
    assert not MULTI_LABEL.is_better("roc_auc", nan, None)  # no best yet, but nothing to select on either
    assert not MULTI_LABEL.is_better("roc_auc", nan, 0.6) and not SINGLE_LABEL.is_better("ece", nan, 0.2)
    assert MULTI_LABEL.is_better("roc_auc", 0.1, nan) and SINGLE_LABEL.is_better("ece", 0.9, nan)


def test_multilabel_metrics_match_sklearn_and_skip_undefined_classes() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((40, 4)) < 0.4).astype(np.float32)
    truth[:, 3] = 0.0  # no positive: AP and ROC-AUC undefined for class 3
    logits = 2.0 * truth + rng.normal(size=truth.shape)
    m = multilabel_metrics(logits, truth, ["a", "b", "c", "d"])
    probs = 1 / (1 + np.exp(-logits))
    want_ap = np.mean([average_precision_score(truth[:, c], probs[:, c]) for c in range(3)])
    want_auc = np.mean([roc_auc_score(truth[:, c], probs[:, c]) for c in range(3)])
    assert m["map"] == pytest.approx(want_ap, abs=1e-12)
    assert m["roc_auc"] == pytest.approx(want_auc, abs=1e-12)
    assert m["n_scored_classes"] == 3 and m["per_class_ap"]["d"] is None
    assert 0.5 < m["map"] <= 1.0  # informative logits score above chance (the positive rate, ~0.4)
    assert MULTI_LABEL.metrics(logits, truth)["map"] == m["map"]


def test_single_label_metrics_include_nll_and_score_soft_targets_by_argmax() -> None:
    logits = np.array([[3.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    labels = np.array([0, 1, 1])
    m = SINGLE_LABEL.metrics(logits, labels, ["x", "y"])
    want = -np.mean(np.log([np.exp(3) / (np.exp(3) + 1), np.exp(1) / (np.exp(1) + 1), 1 / (np.exp(2) + 1)]))
    assert m["nll"] == pytest.approx(want, rel=1e-12) == negative_log_likelihood(logits, labels)
    assert m["accuracy"] == pytest.approx(2 / 3)
    soft = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    assert SINGLE_LABEL.metrics(logits, soft)["accuracy"] == m["accuracy"]


def test_rating_metrics_include_mae() -> None:
    preds = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 5.0]])
    targets = np.array([[1.5, 2.0], [2.0, 3.0], [3.5, 5.0]])
    m = RATING.metrics(preds, targets)
    assert m["mae"] == pytest.approx(np.abs(preds - targets).mean())
    assert m["per_dimension"]["dim_0"]["mae"] == pytest.approx(1 / 3)
