"""Metrics of the three tasks, as plain JSON-able dicts (thin wrappers over scikit-learn/numpy).

- single-label classification: accuracy, macro-F1, per-class F1, confusion matrix, ECE and NLL;
- multi-label tagging: mAP and ROC-AUC (macro over the classes where they are defined), micro/macro-F1 at 0.5,
  per-class average precision;
- ratings: per-dimension Pearson r, R2, MSE and MAE, and their means.

Each task in :mod:`heads.tasks` owns one of these functions; callers normally go through ``task.metrics``.
scikit-learn is imported on first use so that ``import heads`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "classification_metrics",
    "multilabel_metrics",
    "rating_metrics",
    "expected_calibration_error",
    "negative_log_likelihood",
    "softmax",
    "sigmoid",
]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits. Shapes: [N, C] -> [N, C]."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function, stable for large magnitudes."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| weighted by the
    bin's share of the samples.

    Shapes:
        probs: [N, C] probabilities; labels: [N] integer classes.
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes under the softmax of ``logits``.

    Shapes:
        logits: [N, C]; labels: [N] integer classes.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float((log_norm - z[np.arange(len(labels)), labels]).mean())


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, object]:
    """Accuracy, macro-F1, per-class F1, confusion matrix, ECE and NLL of single-label predictions.

    Shapes:
        logits: [N, C]; labels: [N].
    """
    from sklearn.metrics import confusion_matrix, f1_score

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    n_classes = logits.shape[1]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(n_classes)]
    pred = logits.argmax(axis=1)
    classes = list(range(n_classes))
    per_class = f1_score(labels, pred, labels=classes, average=None, zero_division=0)
    return {
        "accuracy": float((pred == labels).mean()),
        "macro_f1": float(f1_score(labels, pred, labels=classes, average="macro", zero_division=0)),
        "per_class_f1": {name: float(v) for name, v in zip(names, per_class)},
        "confusion_matrix": confusion_matrix(labels, pred, labels=classes).tolist(),
        "ece": expected_calibration_error(softmax(logits), labels),
        "nll": negative_log_likelihood(logits, labels),
        "class_names": names,
        "n": int(len(labels)),
    }


def multilabel_metrics(
    logits: np.ndarray, targets: np.ndarray, class_names: Sequence[str] | None = None, threshold: float = 0.5
) -> dict[str, object]:
    """mAP, ROC-AUC, micro/macro-F1 at ``threshold`` and per-class average precision of multi-label predictions.

    mAP and ROC-AUC are macro averages over the classes where they are defined (AP: at least one positive;
    ROC-AUC: at least one positive and one negative); ``n_scored_classes`` says how many that was. Targets are
    binarised at 0.5 (soft targets from mixup or label smoothing count as their nearest label).

    Shapes:
        logits: [N, C]; targets: [N, C] in [0, 1].
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    logits = np.asarray(logits, dtype=np.float64)
    truth = (np.asarray(targets, dtype=np.float64) >= 0.5).astype(np.int64)
    if logits.shape != truth.shape or logits.ndim != 2:
        raise ValueError(
            f"multi-label logits and targets must both be [N, C], got {logits.shape} and {truth.shape}"
        )
    n_classes = logits.shape[1]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(n_classes)]
    probs = sigmoid(logits)
    positives = truth.sum(axis=0)
    has_pos = positives > 0
    has_both = has_pos & (positives < len(truth))
    ap = np.full(n_classes, np.nan)
    auc = np.full(n_classes, np.nan)
    for c in range(n_classes):
        if has_pos[c]:
            ap[c] = average_precision_score(truth[:, c], probs[:, c])
        if has_both[c]:
            auc[c] = roc_auc_score(truth[:, c], probs[:, c])
    pred = (probs >= threshold).astype(np.int64)
    return {
        "map": float(np.nanmean(ap)) if has_pos.any() else float("nan"),
        "roc_auc": float(np.nanmean(auc)) if has_both.any() else float("nan"),
        "micro_f1": float(f1_score(truth, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, pred, average="macro", zero_division=0)),
        "per_class_ap": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, ap)},
        "n_scored_classes": int(has_pos.sum()),
        "class_names": names,
        "n": int(len(truth)),
    }


def rating_metrics(
    preds: np.ndarray, targets: np.ndarray, dimension_names: Sequence[str] | None = None
) -> dict[str, object]:
    """Per-dimension Pearson r, R2, MSE and MAE of multi-output regression, and their means.

    A dimension whose predictions or targets are constant gets r = 0 (undefined correlation).

    Shapes:
        preds, targets: [N, D].
    """
    from sklearn.metrics import r2_score

    preds = np.asarray(preds, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n_dims = preds.shape[1]
    names = list(dimension_names) if dimension_names is not None else [f"dim_{i}" for i in range(n_dims)]
    pc = preds - preds.mean(axis=0)
    tc = targets - targets.mean(axis=0)
    denom = np.sqrt((pc**2).sum(axis=0) * (tc**2).sum(axis=0))
    r = np.divide((pc * tc).sum(axis=0), denom, out=np.zeros(n_dims), where=denom > 0)
    r2 = np.array([r2_score(targets[:, d], preds[:, d]) if len(targets) > 1 else 0.0 for d in range(n_dims)])
    mse = ((preds - targets) ** 2).mean(axis=0)
    mae = np.abs(preds - targets).mean(axis=0)
    return {
        "mean_r": float(r.mean()),
        "mean_r2": float(r2.mean()),
        "mse": float(mse.mean()),
        "mae": float(mae.mean()),
        "per_dimension": {
            name: {"r": float(r[d]), "r2": float(r2[d]), "mse": float(mse[d]), "mae": float(mae[d])}
            for d, name in enumerate(names)
        },
        "n": int(len(targets)),
    }
