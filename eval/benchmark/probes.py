"""Probes on fixed features, with hyper-parameters chosen on the validation split only.

- ``linear``: scikit-learn logistic regression (single-label: multinomial; multi-label: one binary model per
  tag) or ridge regression (ratings) on standardised features, over a grid of C / alpha;
- ``mlp``: a one-hidden-layer torch MLP (ReLU, dropout, Adam) over a grid of widths and learning rates, and the
  epoch, all picked on validation;
- ``prior``: no features: the training class frequencies (majority baseline) or the training mean (ratings).

Features are crop rows; a clip's prediction is the mean of its crops' logits (or ratings). :func:`select_probe`
takes the training and validation splits and nothing else, so a probe selected on test data cannot be built:
the test split only ever reaches :meth:`Probe.predict`, after selection.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from backbones.config import StrictConfig
from heads.tasks import Task

from .features import stack_crops
from .scoring import BOOTSTRAP_METRICS, task_loss

__all__ = ["PROBES", "Probe", "ProbeConfig", "ProbeData", "clip_mean", "select_probe"]

logger = logging.getLogger(__name__)


@dataclass
class ProbeConfig(StrictConfig):
    """The probes' hyper-parameter grids (each point is fitted on train and scored on validation).

    Attributes:
        linear_c: inverse regularisation strengths of the logistic regressions (strongest first).
        ridge_alpha: ridge penalties (strongest first).
        mlp_hidden, mlp_lr: MLP widths and Adam learning rates; every pair is tried.
        mlp_epochs: most epochs; the best epoch on validation is kept.
        mlp_batch_size, mlp_dropout, mlp_weight_decay: MLP training settings.
        max_iter: iterations of the logistic regression solver.
    """

    linear_c: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
    ridge_alpha: tuple[float, ...] = (10000.0, 1000.0, 100.0, 10.0, 1.0, 0.1)
    mlp_hidden: tuple[int, ...] = (256, 1024)
    mlp_lr: tuple[float, ...] = (1e-3, 1e-2)
    mlp_epochs: int = 100
    mlp_batch_size: int = 256
    mlp_dropout: float = 0.1
    mlp_weight_decay: float = 1e-4
    max_iter: int = 2000


@dataclass(frozen=True)
class ProbeData:
    """One split's features: crop rows, the clip of each row, and per-clip targets and ids.

    Shapes:
        x: [M, D]; clip_index: [M]; targets: [N] or [N, C].
    """

    x: np.ndarray
    clip_index: np.ndarray
    targets: np.ndarray
    ids: tuple[str, ...]

    @classmethod
    def build(cls, arrays: Sequence[np.ndarray], targets: np.ndarray, ids: Sequence[str]) -> ProbeData:
        """From per-clip ``[k, D]`` arrays (see :func:`~.features.stack_crops`)."""
        x, clip = (
            stack_crops(arrays) if len(arrays) else (np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
        )
        return cls(x, clip, np.asarray(targets), tuple(ids))

    @property
    def row_targets(self) -> np.ndarray:
        """Each crop row's clip target."""
        return self.targets[self.clip_index]


def clip_mean(values: np.ndarray, clip_index: np.ndarray, n_clips: int) -> np.ndarray:
    """Mean of each clip's rows. Shapes: [M, C], [M] -> [n_clips, C]."""
    sums = np.zeros((n_clips, values.shape[1]), dtype=np.float64)
    np.add.at(sums, clip_index, values)
    return (sums / np.bincount(clip_index, minlength=n_clips)[:, None]).astype(np.float32)


class Probe:
    """A fitted probe: per-clip logits (classification) or ratings from crop rows."""

    def predict_rows(self, x: np.ndarray) -> np.ndarray:
        """Per-row outputs. Shapes: [M, D] -> [M, C]."""
        raise NotImplementedError

    def predict(self, data: ProbeData) -> np.ndarray:
        """Per-clip outputs: the mean over each clip's crops. Shapes: -> [N, C]."""
        return clip_mean(self.predict_rows(data.x), data.clip_index, len(data.ids))


@dataclass
class _Standardised(Probe):
    mean: np.ndarray
    scale: np.ndarray
    rows: Callable[[np.ndarray], np.ndarray]

    def predict_rows(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.rows((x - self.mean) / self.scale), dtype=np.float32)


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-8, scale, 1.0)


def _smoothed_logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


# ---------------------------------------------------------------------------------------------- the families


def _linear_grid(config: ProbeConfig, task: Task) -> Iterator[dict[str, Any]]:
    if task.name == "rating":
        yield from ({"alpha": a} for a in config.ridge_alpha)
    else:
        yield from ({"C": c} for c in config.linear_c)


def _fit_linear(
    params: Mapping[str, Any],
    train: ProbeData,
    validation: ProbeData,
    task: Task,
    metric: str,
    config: ProbeConfig,
    seed: int,
) -> Probe:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge

    mean, scale = _standardiser(train.x)
    x, y = (train.x - mean) / scale, train.row_targets
    if task.name == "rating":
        model = Ridge(alpha=params["alpha"]).fit(x, y)
        return _Standardised(mean, scale, model.predict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if task.name == "single_label":
            n_classes = int(max(train.targets.max(), validation.targets.max())) + 1
            model = LogisticRegression(C=params["C"], max_iter=config.max_iter).fit(x, y)
            present = model.classes_.astype(np.int64)

            def rows(z: np.ndarray) -> np.ndarray:
                out = np.full((len(z), n_classes), np.log(1e-12), dtype=np.float64)
                out[:, present] = model.predict_log_proba(z)
                return out

            return _Standardised(mean, scale, rows)
        columns: list[Any] = []
        for c in range(y.shape[1]):
            yc = (y[:, c] >= 0.5).astype(np.int64)
            if yc.min() == yc.max():  # a tag always or never present in training: its smoothed frequency
                columns.append(float(_smoothed_logit((yc.sum() + 0.5) / (len(yc) + 1.0))))
            else:
                columns.append(LogisticRegression(C=params["C"], max_iter=config.max_iter).fit(x, yc))

    def tag_rows(z: np.ndarray) -> np.ndarray:
        return np.stack(
            [np.full(len(z), m) if isinstance(m, float) else m.decision_function(z) for m in columns], axis=1
        )

    return _Standardised(mean, scale, tag_rows)


def _mlp_grid(config: ProbeConfig, task: Task) -> Iterator[dict[str, Any]]:
    for hidden in config.mlp_hidden:
        for lr in config.mlp_lr:
            yield {"hidden": hidden, "lr": lr}


_LOSSES: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = MappingProxyType(
    {
        "single_label": lambda out, y: nn.functional.cross_entropy(out, y.long()),
        "multi_label": nn.functional.binary_cross_entropy_with_logits,
        "rating": nn.functional.mse_loss,
    }
)


@dataclass
class _TorchProbe(Probe):
    """An MLP on standardised features; rating outputs are standardised targets, mapped back on prediction."""

    mean: np.ndarray
    scale: np.ndarray
    net: nn.Module
    best_epoch: int
    target_mean: np.ndarray | float = 0.0
    target_scale: np.ndarray | float = 1.0

    @torch.no_grad()
    def predict_rows(self, x: np.ndarray) -> np.ndarray:
        self.net.eval()
        z = torch.as_tensor((x - self.mean) / self.scale, dtype=torch.float32)
        return self.net(z).numpy() * self.target_scale + self.target_mean


def _fit_mlp(
    params: Mapping[str, Any],
    train: ProbeData,
    validation: ProbeData,
    task: Task,
    metric: str,
    config: ProbeConfig,
    seed: int,
) -> Probe:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    mean, scale = _standardiser(train.x)
    x = torch.as_tensor((train.x - mean) / scale, dtype=torch.float32)
    y = torch.as_tensor(train.row_targets, dtype=torch.float32)
    target_mean, target_scale = 0.0, 1.0
    if task.name == "rating":  # regress standardised ratings: an untrained output then sits near the mean
        target_mean, target_scale = _standardiser(train.row_targets)
        y = (y - torch.as_tensor(target_mean, dtype=torch.float32)) / torch.as_tensor(
            target_scale, dtype=torch.float32
        )
    n_out = int(max(train.targets.max(), validation.targets.max())) + 1 if y.ndim == 1 else y.shape[1]
    net = nn.Sequential(
        nn.Linear(x.shape[1], params["hidden"]),
        nn.ReLU(),
        nn.Dropout(config.mlp_dropout),
        nn.Linear(params["hidden"], n_out),
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=params["lr"], weight_decay=config.mlp_weight_decay)
    loss_fn = _LOSSES[task.name]
    probe = _TorchProbe(mean, scale, net, 0, target_mean, target_scale)
    best, best_state = None, None
    for epoch in range(1, config.mlp_epochs + 1):
        net.train()
        for idx in torch.randperm(len(x), generator=generator).split(config.mlp_batch_size):
            optimiser.zero_grad()
            loss_fn(net(x[idx]), y[idx]).backward()
            optimiser.step()
        score = _score(probe, validation, task, metric)
        if _improves(task, metric, score, best):
            best, best_state, probe.best_epoch = (
                score,
                {k: v.clone() for k, v in net.state_dict().items()},
                epoch,
            )
    if best_state is not None:
        net.load_state_dict(best_state)
    return probe


def _fit_prior(
    params: Mapping[str, Any],
    train: ProbeData,
    validation: ProbeData,
    task: Task,
    metric: str,
    config: ProbeConfig,
    seed: int,
) -> Probe:
    t = train.targets
    if task.name == "single_label":
        n_classes = int(max(t.max(), validation.targets.max())) + 1
        freq = (np.bincount(t, minlength=n_classes) + 1e-3) / (len(t) + 1e-3 * n_classes)
        const = np.log(freq)
    elif task.name == "multi_label":
        const = _smoothed_logit(((t >= 0.5).sum(axis=0) + 0.5) / (len(t) + 1.0))
    else:
        const = t.mean(axis=0)
    return _Standardised(np.zeros(1), np.ones(1), lambda z: np.tile(const, (len(z), 1)))


@dataclass(frozen=True)
class ProbeFamily:
    """A kind of probe: its hyper-parameter grid and how one grid point is fitted (on train; validation only
    for early stopping)."""

    grid: Callable[[ProbeConfig, Task], Iterator[dict[str, Any]]]
    fit: Callable[[Mapping[str, Any], ProbeData, ProbeData, Task, str, ProbeConfig, int], Probe]


PROBES: Mapping[str, ProbeFamily] = MappingProxyType(
    {
        "linear": ProbeFamily(_linear_grid, _fit_linear),
        "mlp": ProbeFamily(_mlp_grid, _fit_mlp),
        "prior": ProbeFamily(lambda config, task: iter([{}]), _fit_prior),
    }
)


def _score(probe: Probe, data: ProbeData, task: Task, metric: str) -> tuple[float, float]:
    """(``metric``, task loss) of ``probe`` on ``data``."""
    pred = probe.predict(data)
    fast = BOOTSTRAP_METRICS[task.name].get(metric)  # the same values as task.metrics, without scikit-learn
    value = (
        fast(pred[None], data.targets[None])[0]
        if fast is not None
        else task.metrics(pred, data.targets)[metric]
    )
    return float(value), task_loss(task, pred, data.targets)


def _improves(task: Task, metric: str, score: tuple[float, float], best: tuple[float, float] | None) -> bool:
    """Better ``metric``, or the same value and a lower loss (accuracy on a small validation set ties often)."""
    if best is None or task.is_better(metric, score[0], best[0]):
        return True
    return score[0] == best[0] and score[1] < best[1]


def select_probe(
    kind: str,
    train: ProbeData,
    validation: ProbeData,
    task: Task,
    metric: str,
    config: ProbeConfig | None = None,
    seed: int = 0,
) -> tuple[Probe, dict[str, Any]]:
    """Fit every grid point of probe ``kind`` on ``train``, keep the best on ``validation`` by ``metric``.

    A tie on ``metric`` goes to the lower validation loss, then to the earlier grid point (the stronger
    regularisation). There is deliberately no test argument.

    Returns:
        The chosen probe and a record: the grid with each point's validation score, and the chosen point.

    Raises:
        KeyError: unknown ``kind``.
        ValueError: ``metric`` is not one of the task's metrics, or a split is empty.
    """
    if kind not in PROBES:
        raise KeyError(f"unknown probe {kind!r}; known: {', '.join(PROBES)}")
    task.check_metric(metric)
    if not len(train.ids) or not len(validation.ids):
        raise ValueError(
            f"probes need training and validation clips, got {len(train.ids)} and {len(validation.ids)}"
        )
    config = config or ProbeConfig()
    family = PROBES[kind]
    best: tuple[tuple[float, float], Probe, dict[str, Any]] | None = None
    grid = []
    for params in family.grid(config, task):
        probe = family.fit(params, train, validation, task, metric, config, seed)
        score = _score(probe, validation, task, metric)
        point = {**params, "validation": score[0], "validation_loss": score[1]}
        if isinstance(probe, _TorchProbe):
            point["epoch"] = probe.best_epoch
        grid.append(point)
        if _improves(task, metric, score, best[0] if best is not None else None):
            best = (score, probe, point)
    assert best is not None
    logger.info("%s probe: chose %s (validation %s %.4f)", kind, best[2], metric, best[0][0])
    return best[1], {"kind": kind, "metric": metric, "grid": grid, "chosen": best[2]}
