"""Post-hoc calibration of classification outputs, saved beside a model as ``calibration.json``.

- **Temperature scaling** (Guo et al. 2017): one scalar ``T``, logits ``z -> z / T``, fitted on the validation split by
  minimising the negative log-likelihood with L-BFGS. It changes confidence, never the ranking.
- **Vector scaling**: a per-class scale and bias, ``z -> z * s / T + b`` (the temperature is folded into ``s``).
- **Class-prior correction**: a logit bias ``log(target prior / training prior)`` that moves a single-label
  classifier trained on one class balance to another (a radio station that plays mostly pop, say).
- **Label-shift adaptation by EM** (Saerens, Latinne & Decaestecker 2002): estimates the class prior of an
  unlabelled target set from the model's calibrated probabilities; its result feeds the prior correction.

Single-label heads are fitted on the softmax cross-entropy, multi-label heads on the binary cross-entropy of every
(clip, tag) pair. A :class:`Calibration` maps raw logits to calibrated logits (:meth:`Calibration.apply`); the
task's ``probabilities`` then gives calibrated probabilities. Ratings have no probabilities and are not calibrated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from heads.metrics import expected_calibration_error, softmax
from heads.tasks import Task, get_task

__all__ = [
    "CALIBRATION_NAME",
    "METHODS",
    "Calibration",
    "CalibrationError",
    "LabelShiftResult",
    "calibration_effect",
    "em_label_shift",
    "fit_calibration",
    "prior_correction",
]

logger = logging.getLogger(__name__)

CALIBRATION_NAME = "calibration.json"
METHODS = ("temperature", "vector")
_FORMAT_VERSION = 1


class CalibrationError(ValueError):
    """Calibration cannot be fitted, applied or read as asked; the message says why and what to pass."""


@dataclass(frozen=True)
class Calibration:
    """A fitted logit correction: ``z -> z * scale / temperature + bias`` (``scale``/``bias`` per class).

    Attributes:
        task: ``single_label`` or ``multi_label``.
        num_classes: outputs of the head it was fitted for.
        temperature: divides the logits (> 0).
        scale: per-class multipliers (vector scaling), or None.
        bias: per-class additive biases (vector scaling and/or a prior correction), or None.
        labels: class names, checked against the model's when loaded beside it.
        report: how it was fitted (method, number of clips, NLL and ECE before and after).
    """

    task: str
    num_classes: int
    temperature: float = 1.0
    scale: tuple[float, ...] | None = None
    bias: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None
    report: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        task = get_task(self.task)
        if not task.is_classification:
            raise CalibrationError(f"calibration applies to classification tasks, not {self.task!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise CalibrationError(f"temperature must be a positive finite number, got {self.temperature!r}")
        for name in ("scale", "bias", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_classes:
                raise CalibrationError(f"{name} has {len(value)} entries for a {self.num_classes}-class head")

    @property
    def identity(self) -> bool:
        """Whether :meth:`apply` leaves logits unchanged."""
        return self.temperature == 1.0 and self.scale is None and self.bias is None

    def apply(self, logits: Tensor) -> Tensor:
        """Calibrated logits, same dtype and device. Shapes: [..., C] -> [..., C]."""
        if logits.shape[-1] != self.num_classes:
            raise CalibrationError(
                f"calibration fitted for {self.num_classes} classes, got logits with {logits.shape[-1]}"
            )
        z = logits / self.temperature
        if self.scale is not None:
            z = z * logits.new_tensor(self.scale)
        if self.bias is not None:
            z = z + logits.new_tensor(self.bias)
        return z

    def probabilities(self, logits: Tensor) -> Tensor:
        """Calibrated probabilities (softmax or sigmoid by task). Shapes: [..., C] -> [..., C]."""
        return get_task(self.task).probabilities(self.apply(logits))

    def with_prior(self, train_prior: Sequence[float], target_prior: Sequence[float]) -> Calibration:
        """This calibration plus a class-prior correction from ``train_prior`` to ``target_prior``."""
        if self.task != "single_label":
            raise CalibrationError("a class-prior correction applies to single-label classification only")
        shift = prior_correction(train_prior, target_prior)
        if len(shift) != self.num_classes:
            raise CalibrationError(f"priors have {len(shift)} classes, the head has {self.num_classes}")
        bias = np.asarray(self.bias if self.bias is not None else np.zeros(self.num_classes)) + shift
        report = {
            **self.report,
            "prior_correction": {"train": list(train_prior), "target": list(target_prior)},
        }
        return dataclasses.replace(self, bias=tuple(float(b) for b in bias), report=report)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (what ``calibration.json`` holds)."""
        out = dataclasses.asdict(self)
        out["report"] = dict(self.report)
        return {"format_version": _FORMAT_VERSION, **out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "calibration") -> Calibration:
        """Inverse of :meth:`to_dict`; a malformed dict raises :class:`CalibrationError` naming ``where``."""
        if not isinstance(data, Mapping):
            raise CalibrationError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format_version") != _FORMAT_VERSION:
            raise CalibrationError(
                f"{where}: format_version {data.get('format_version')!r}, this library reads {_FORMAT_VERSION}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"format_version"})
        if unknown:
            raise CalibrationError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
        kwargs = {k: v for k, v in data.items() if k in fields}
        for key in ("scale", "bias", "labels"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise CalibrationError(f"{where}: {e}") from e

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``calibration.json`` into ``directory`` (a saved model's directory); returns the file."""
        path = Path(directory) / CALIBRATION_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Calibration | None:
        """Read ``calibration.json`` from ``directory``; None when there is none."""
        path = Path(directory) / CALIBRATION_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CalibrationError(
                f"could not read {path}: {e}; delete it or fit the calibration again"
            ) from e
        return cls.from_dict(data, where=str(path))


def _loss(task: Task, logits: Tensor, targets: Tensor) -> Tensor:
    if task.name == "single_label":
        return F.cross_entropy(logits, targets)
    return F.binary_cross_entropy_with_logits(logits, targets)


def _as_tensors(task: Task, logits: Any, targets: Any) -> tuple[Tensor, Tensor]:
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if z.dim() != 2 or z.shape[0] == 0:
        raise CalibrationError(f"logits must be [N, C] with N >= 1, got shape {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise CalibrationError("logits contain NaN or Inf; calibrate a model whose outputs are finite")
    t = np.asarray(targets)
    if task.name == "single_label":
        if t.ndim != 1 or len(t) != len(z):
            raise CalibrationError(
                f"single-label targets must be [N] = [{len(z)}] class indices, got {t.shape}"
            )
        y = torch.as_tensor(t.astype(np.int64))
        if int(y.min()) < 0 or int(y.max()) >= z.shape[1]:
            raise CalibrationError(
                f"class indices must lie in [0, {z.shape[1]}), got [{int(y.min())}, {int(y.max())}]"
            )
        return z, y
    if t.shape != tuple(z.shape):
        raise CalibrationError(f"multi-label targets must be [N, C] = {list(z.shape)}, got {list(t.shape)}")
    return z, torch.as_tensor(t, dtype=torch.float64)


def _minimise(params: list[Tensor], objective: Any, max_iter: int) -> None:
    optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimiser.step(closure)


def _summary(task: Task, z: Tensor, y: Tensor) -> dict[str, float]:
    out = {"nll": float(_loss(task, z, y))}
    if task.name == "single_label":
        out["ece"] = expected_calibration_error(softmax(z.numpy()), y.numpy())
    return out


def calibration_effect(
    calibration: Calibration, logits: np.ndarray | Tensor, targets: np.ndarray | Tensor
) -> dict[str, dict[str, float]]:
    """NLL (and, single-label, ECE) of ``logits`` before and after ``calibration``, e.g. on the test split of a
    calibration fitted on validation.

    Shapes:
        logits: [N, C]; targets: [N] class indices or [N, C] multi-hot.
    """
    task = get_task(calibration.task)
    z, y = _as_tensors(task, logits, targets)
    return {"before": _summary(task, z, y), "after": _summary(task, calibration.apply(z), y)}


def fit_calibration(
    logits: np.ndarray | Tensor,
    targets: np.ndarray | Tensor,
    task: str | Task = "single_label",
    method: str = "temperature",
    labels: Sequence[str] | None = None,
    max_iter: int = 200,
) -> Calibration:
    """Fit temperature or vector scaling on held-out (validation) predictions; never fit on the test split.

    Args:
        logits: raw head outputs of the validation clips.
        targets: class indices ``[N]`` (single-label) or multi-hot ``[N, C]`` (multi-label).
        method: ``temperature`` (one scalar) or ``vector`` (per-class scale and bias).
        max_iter: L-BFGS iterations.

    Shapes:
        logits: [N, C].
    """
    task = get_task(task)
    if not task.is_classification:
        raise CalibrationError(f"calibration applies to classification tasks, not {task.name!r}")
    if method not in METHODS:
        raise CalibrationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    z, y = _as_tensors(task, logits, targets)
    before = _summary(task, z, y)
    num_classes = z.shape[1]
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    if method == "temperature":
        _minimise([log_t], lambda: _loss(task, z / log_t.exp(), y), max_iter)
        calibration = Calibration(task.name, num_classes, temperature=float(log_t.detach().exp()))
    else:
        log_s = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        _minimise([log_s, b], lambda: _loss(task, z * log_s.exp() + b, y), max_iter)
        calibration = Calibration(
            task.name,
            num_classes,
            scale=tuple(float(v) for v in log_s.detach().exp()),
            bias=tuple(float(v) for v in b.detach()),
        )
    with torch.no_grad():
        after = _summary(task, calibration.apply(z), y)
    if after["nll"] > before["nll"] + 1e-9:
        warnings.warn(
            f"{method} scaling did not lower the validation NLL ({before['nll']:.4f} -> {after['nll']:.4f}); "
            "the calibration is kept but look at the validation set's size and balance",
            stacklevel=2,
        )
    report = {"method": method, "n": len(z), "before": before, "after": after}
    return dataclasses.replace(
        calibration, labels=tuple(labels) if labels is not None else None, report=report
    )


def _prior(values: Sequence[float], name: str) -> np.ndarray:
    p = np.asarray(values, dtype=np.float64)
    if p.ndim != 1 or len(p) < 2 or not np.isfinite(p).all() or (p <= 0).any():
        raise CalibrationError(
            f"{name} must be a vector of at least 2 positive class frequencies, got {values!r}"
        )
    return p / p.sum()


def prior_correction(train_prior: Sequence[float], target_prior: Sequence[float]) -> np.ndarray:
    """The logit bias ``log(target) - log(train)`` that moves softmax outputs from one class prior to another.

    Both priors are normalised to sum to one; every class needs a positive frequency.
    """
    train, target = _prior(train_prior, "train_prior"), _prior(target_prior, "target_prior")
    if len(train) != len(target):
        raise CalibrationError(f"train_prior has {len(train)} classes, target_prior {len(target)}")
    return np.log(target) - np.log(train)


@dataclass(frozen=True)
class LabelShiftResult:
    """What :func:`em_label_shift` found.

    Attributes:
        prior: the estimated target class prior.
        probs: the input probabilities re-weighted to that prior.
        iterations: EM iterations run.
        converged: whether the prior moved less than the tolerance in the last iteration.
    """

    prior: np.ndarray
    probs: np.ndarray
    iterations: int
    converged: bool


def em_label_shift(
    probs: np.ndarray, train_prior: Sequence[float], max_iter: int = 100, tol: float = 1e-6
) -> LabelShiftResult:
    """Estimate the class prior of unlabelled target data by EM (Saerens et al. 2002).

    Alternates re-weighting each clip's (calibrated) posterior by ``target / train`` prior and re-estimating the
    target prior as the mean posterior, until the prior moves less than ``tol`` or ``max_iter`` is reached (then
    a warning says so and the last estimate is returned).

    Shapes:
        probs: [N, C] calibrated probabilities on the target data.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0 or not np.isfinite(p).all() or (p < 0).any():
        raise CalibrationError(f"probs must be finite non-negative [N, C] probabilities, got shape {p.shape}")
    train = _prior(train_prior, "train_prior")
    if len(train) != p.shape[1]:
        raise CalibrationError(f"train_prior has {len(train)} classes, probs have {p.shape[1]}")
    if max_iter < 1:
        raise CalibrationError(f"max_iter must be >= 1, got {max_iter}")
    prior, adjusted, converged, iterations = train.copy(), p, False, 0
    while iterations < max_iter and not converged:
        iterations += 1
        weighted = p * (prior / train)
        adjusted = weighted / weighted.sum(axis=1, keepdims=True)
        new_prior = adjusted.mean(axis=0)
        converged = float(np.abs(new_prior - prior).max()) < tol
        prior = new_prior
    if not converged:
        warnings.warn(
            f"label-shift EM did not converge in {max_iter} iterations (tolerance {tol}); returning the last "
            "estimate. More target clips or a better calibrated model help.",
            stacklevel=2,
        )
    logger.info(
        "label-shift EM: %d iterations, converged=%s, prior=%s", iterations, converged, np.round(prior, 4)
    )
    return LabelShiftResult(prior=prior, probs=adjusted, iterations=iterations, converged=converged)
