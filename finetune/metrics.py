"""Task metrics: classification (accuracy, macro-F1, per-class F1, confusion matrix, ECE) and ratings
(per-dimension Pearson r and R2). Thin wrappers over scikit-learn/numpy that return plain JSON-able dicts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, r2_score

__all__ = ["classification_metrics", "rating_metrics", "expected_calibration_error"]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| weighted by bin size.

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


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, object]:
    """Accuracy, macro-F1, per-class F1, confusion matrix and ECE of single-label predictions.

    Shapes:
        logits: [N, C]; labels: [N].
    """
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
        "ece": expected_calibration_error(_softmax(logits), labels),
        "class_names": names,
        "n": int(len(labels)),
    }


def rating_metrics(
    preds: np.ndarray, targets: np.ndarray, dimension_names: Sequence[str] | None = None
) -> dict[str, object]:
    """Per-dimension Pearson r, R2 and MSE of multi-output regression, and their means.

    A dimension whose predictions or targets are constant gets r = 0 (undefined correlation).

    Shapes:
        preds, targets: [N, D].
    """
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
    return {
        "mean_r": float(r.mean()),
        "mean_r2": float(r2.mean()),
        "mse": float(mse.mean()),
        "per_dimension": {
            name: {"r": float(r[d]), "r2": float(r2[d]), "mse": float(mse[d])} for d, name in enumerate(names)
        },
        "n": int(len(targets)),
    }
