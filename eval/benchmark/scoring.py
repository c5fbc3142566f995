"""Scores of a cell's test predictions: the task's own metrics, calibration before and after temperature scaling
(fitted on validation, applied to test), and 95% bootstrap confidence intervals over test clips.

The bootstrap resamples test clips with replacement. For one cell that gives the interval of that cell's score;
pooled over seeds and folds (:func:`bootstrap`, several groups), each replicate resamples every fold's test clips
within that fold and averages the metric over all (seed, fold) cells, so the interval reflects the finite test
sets while the standard deviation over cells reflects training randomness and fold choice. The resampled metrics
are vectorised numpy re-implementations of the task metrics in :mod:`heads.metrics` (tests check they agree).

The intervals are plain percentile intervals. With a handful of test clips a resample repeats clips and so holds
less target variance, which drags R2 down: the R2 interval of a tiny test set leans low and may even miss the
estimate. It then says more about the test set's size than about the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from finetune.calibration import fit_calibration
from heads.metrics import expected_calibration_error, sigmoid, softmax
from heads.tasks import Task

__all__ = [
    "BOOTSTRAP_METRICS",
    "binary_ece",
    "bootstrap",
    "calibration_scores",
    "score_predictions",
    "task_loss",
]

# metric(predictions [R, n, C], targets [R, n] or [R, n, C]) -> [R]
BatchMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _accuracy(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (pred.argmax(axis=2) == y).mean(axis=1)


def _macro_f1(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    n_classes = pred.shape[2]
    hat = pred.argmax(axis=2)
    classes = np.arange(n_classes)[None, None, :]
    p, t = hat[..., None] == classes, y[..., None] == classes
    tp = (p & t).sum(axis=1)
    denom = p.sum(axis=1) + t.sum(axis=1)
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)
    return f1.mean(axis=1)


def _average_precision(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """AP per replicate with tied scores grouped (as scikit-learn's ``average_precision_score``); NaN without
    positives. Shapes: [R, n] -> [R]."""
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    tp = np.cumsum(np.take_along_axis(truth, order, axis=1), axis=1)
    rank = np.arange(1, scores.shape[1] + 1)[None, :]
    last = np.ones_like(s, dtype=bool)
    last[:, :-1] = s[:, :-1] != s[:, 1:]  # the last item of each run of tied scores
    at_last = np.where(last, tp, 0)
    before = np.concatenate([np.zeros((len(s), 1)), np.maximum.accumulate(at_last, axis=1)[:, :-1]], axis=1)
    gained = np.where(last, tp - before, 0)
    positives = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, (gained * tp / rank).sum(axis=1) / positives, np.nan)


def _map(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    truth = (y >= 0.5).astype(np.float64)
    ap = np.stack([_average_precision(pred[:, :, c], truth[:, :, c]) for c in range(pred.shape[2])], axis=1)
    with np.errstate(all="ignore"):
        return np.nanmean(ap, axis=1)


def _roc_auc(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    truth = y >= 0.5
    ranks = rankdata(pred, axis=1)  # average ranks of ties: ties count one half, as in roc_auc_score
    n_pos = truth.sum(axis=1)
    n_neg = truth.shape[1] - n_pos
    u = (ranks * truth).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
        return np.nanmean(auc, axis=1)


def _r2(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    ss_res = ((y - pred) ** 2).sum(axis=1)
    ss_tot = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    const = np.where(ss_res == 0, 1.0, 0.0)  # scikit-learn's value for a constant target
    r2 = np.divide(ss_res, ss_tot, out=np.ones_like(ss_res), where=ss_tot > 0)
    return np.where(ss_tot > 0, 1.0 - r2, const).mean(axis=1)


def _pearson(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    pc = pred - pred.mean(axis=1, keepdims=True)
    tc = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((pc**2).sum(axis=1) * (tc**2).sum(axis=1))
    r = np.divide((pc * tc).sum(axis=1), denom, out=np.zeros(denom.shape), where=denom > 0)
    return r.mean(axis=1)


def _mae(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(pred - y).mean(axis=(1, 2))


BOOTSTRAP_METRICS: Mapping[str, Mapping[str, BatchMetric]] = MappingProxyType(
    {
        "single_label": MappingProxyType({"accuracy": _accuracy, "macro_f1": _macro_f1}),
        "multi_label": MappingProxyType({"map": _map, "roc_auc": _roc_auc}),
        "rating": MappingProxyType({"mean_r2": _r2, "mean_r": _pearson, "mae": _mae}),
    }
)
"""Per task, the metrics that get bootstrap intervals, as functions over a leading replicate axis."""


def bootstrap(
    groups: Sequence[tuple[Sequence[np.ndarray], np.ndarray]],
    metric: BatchMetric,
    replicates: int = 1000,
    seed: int = 0,
    chunk: int = 100,
) -> tuple[float, float]:
    """95% percentile interval of a metric averaged over cells, resampling test clips within each group.

    Args:
        groups: per fold, the predictions of each of its cells (seeds) ``[n, C]`` and the fold's targets
            ``[n]`` or ``[n, C]``; a replicate draws ``n`` clip indices per fold and scores every cell of the
            fold on them.
        metric: from :data:`BOOTSTRAP_METRICS`.
        replicates: resamples.
        seed: the resampling's seed (results are reproducible).

    Returns:
        ``(low, high)``: the 2.5th and 97.5th percentiles of the replicate means (NaN replicates ignored).
    """
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(y), size=(replicates, len(y))) for _, y in groups]
    values = np.zeros(replicates)
    count = sum(len(preds) for preds, _ in groups)
    for start in range(0, replicates, chunk):
        sl = slice(start, start + chunk)
        for (preds, y), idx in zip(groups, draws):
            ys = np.asarray(y)[idx[sl]]
            for pred in preds:
                values[sl] += metric(np.asarray(pred, dtype=np.float64)[idx[sl]], ys)
    values /= count
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def binary_ece(probs: np.ndarray, outcomes: np.ndarray, n_bins: int = 15) -> float:
    """Calibration error of independent binary predictions (every (clip, tag) pair of a multi-label task):
    sum over equal-width probability bins of |observed frequency - mean probability| weighted by the bin's share.
    """
    p, o = np.asarray(probs, np.float64).ravel(), (np.asarray(outcomes) >= 0.5).astype(np.float64).ravel()
    bins = np.clip(np.digitize(p, np.linspace(0.0, 1.0, n_bins + 1)[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            total += sel.mean() * abs(o[sel].mean() - p[sel].mean())
    return float(total)


def task_loss(task: Task, predictions: np.ndarray, targets: np.ndarray) -> float:
    """The task's loss of per-clip predictions: NLL (softmax or per-tag sigmoid) or the mean squared error."""
    if not task.is_classification:
        return float(((np.asarray(predictions, np.float64) - targets) ** 2).mean())
    return _nll(task, predictions, targets)


def _nll(task: Task, logits: np.ndarray, targets: np.ndarray) -> float:
    if task.name == "single_label":
        p = softmax(logits)[np.arange(len(targets)), targets.astype(np.int64)]
        return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())
    p = np.clip(sigmoid(logits), 1e-12, 1 - 1e-12)
    t = (targets >= 0.5).astype(np.float64)
    return float(-(t * np.log(p) + (1 - t) * np.log1p(-p)).mean())


def _ece(task: Task, logits: np.ndarray, targets: np.ndarray) -> float:
    if task.name == "single_label":
        return expected_calibration_error(softmax(logits), targets.astype(np.int64))
    return binary_ece(sigmoid(logits), targets)


def calibration_scores(
    task: Task,
    val_logits: np.ndarray,
    val_targets: np.ndarray,
    test_logits: np.ndarray,
    test_targets: np.ndarray,
) -> tuple[dict[str, Any], np.ndarray]:
    """ECE and NLL of the test clips before and after temperature scaling fitted on the validation clips.

    Returns:
        The scores (``temperature``, ``before`` and ``after`` each with ``ece`` and ``nll``) and the calibrated
        test logits.
    """
    targets = val_targets if task.name != "single_label" else val_targets.astype(np.int64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cal = fit_calibration(val_logits, targets, task, method="temperature")
    calibrated = cal.apply(torch.as_tensor(test_logits, dtype=torch.float64)).numpy()
    scores: dict[str, Any] = {
        "method": "temperature",
        "temperature": cal.temperature,
        "fitted_on": "validation",
        "before": {
            "ece": _ece(task, test_logits, test_targets),
            "nll": _nll(task, test_logits, test_targets),
        },
        "after": {"ece": _ece(task, calibrated, test_targets), "nll": _nll(task, calibrated, test_targets)},
    }
    if caught:  # e.g. the fit did not lower the validation NLL: kept, and said in the results
        scores["warnings"] = [str(w.message) for w in caught]
    return scores, calibrated


def score_predictions(
    task: Task,
    names: Sequence[str],
    test: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    replicates: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """All test scores of one cell: ``task.metrics`` (per-class and per-dimension detail included), calibration
    (classification, given validation predictions) and a bootstrap interval per :data:`BOOTSTRAP_METRICS` entry.

    Args:
        test, validation: ``(predictions [n, C], targets)`` of each split.

    Returns:
        The scores and the calibrated test logits (None for ratings or without validation predictions).
    """
    preds, targets = test
    metrics: dict[str, Any] = task.metrics(preds, targets, list(names))
    calibrated = None
    if task.is_classification and validation is not None:
        metrics["calibration"], calibrated = calibration_scores(
            task, validation[0], validation[1], preds, targets
        )
    metrics["ci95"] = {
        name: list(bootstrap([([preds], targets)], fn, replicates, seed))
        for name, fn in BOOTSTRAP_METRICS[task.name].items()
    }
    return metrics, calibrated
