"""Multi-task rating head (PercePiano's 19 perceptual dimensions by default, or any number).

pooling -> shared trunk (Linear, activation, dropout per hidden size) -> one output per dimension, either from a
shared output layer or from a small MLP per dimension -> optionally ``lo + (hi - lo) * sigmoid(z)`` so that the
ratings stay in the label range. The loss is a weighted mean of per-dimension losses, optionally with learned
uncertainty weighting (Kendall, Gal & Cipolla 2018): ``sum_i w_i * (exp(-s_i) * L_i + s_i) / 2 / sum_i w_i``
with ``s_i`` the learned log-variance of dimension ``i``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.base import BackboneOutput

from .classification import ACTIVATIONS, mlp_trunk
from .pooling import POOLINGS, build_pooling
from .registry import Head, HeadConfig, register_head
from .tasks import RATING, Task

__all__ = ["PERCEPIANO_DIMENSIONS", "REGRESSION_LOSSES", "RatingConfig", "RatingHead", "PerDimensionOutput"]

# The 19 PercePiano dimensions, in the order of the label vectors (shared/data/README.md).
PERCEPIANO_DIMENSIONS: tuple[str, ...] = (
    "Timing (stable-unstable)",
    "Articulation (short-long)",
    "Articulation (soft/cushioned-hard/solid)",
    "Pedal (sparse/dry-saturated/wet)",
    "Pedal (clean-blurred)",
    "Timbre (even-colorful)",
    "Timbre (shallow-rich)",
    "Timbre (bright-dark)",
    "Timbre (soft-loud)",
    "Dynamic (sophisticated/mellow-raw/crude)",
    "Dynamic (little-large dynamic range)",
    "Music making (fast-slow paced)",
    "Music making (flat-spacious)",
    "Music making (disproportioned-balanced)",
    "Music making (pure-dramatic/expressive)",
    "Emotion & mood (optimistic/pleasant-dark)",
    "Emotion & mood (low-high energy)",
    "Emotion & mood (honest-imaginative)",
    "Interpretation (unsatisfactory/doubtful-convincing)",
)

# Element-wise regression losses (no reduction).
REGRESSION_LOSSES: Mapping[str, Callable[[Tensor, Tensor], Tensor]] = MappingProxyType(
    {
        "mse": lambda p, t: F.mse_loss(p, t, reduction="none"),
        "l1": lambda p, t: F.l1_loss(p, t, reduction="none"),
        "huber": lambda p, t: F.huber_loss(p, t, reduction="none", delta=0.1),
    }
)


@dataclass
class RatingConfig(HeadConfig):
    """Config of the ``rating`` head.

    Attributes:
        num_outputs: rating dimensions (19 for PercePiano).
        labels: dimension names; :data:`PERCEPIANO_DIMENSIONS` when there are 19, ``dim_<i>`` otherwise.
        pooling, attention_heads: see :mod:`heads.pooling`.
        hidden_sizes: widths of the shared trunk (empty: the pooled vector feeds the outputs directly).
        activation: one of ``heads.classification.ACTIVATIONS``.
        dropout: after each trunk layer.
        per_dimension_heads: a small MLP (width ``per_dimension_hidden``) per dimension instead of one shared
            output layer.
        label_range: ``(lo, hi)`` to bound outputs with a scaled sigmoid, or None for unbounded outputs.
        loss: element-wise loss, one of :data:`REGRESSION_LOSSES` (``huber`` with delta 0.1).
        loss_weights: one weight per dimension (default all 1).
        uncertainty_weighting: learn one log-variance per dimension and weight the losses with it.
    """

    num_outputs: int = 19
    pooling: str = "pooled"
    attention_heads: int = 1
    hidden_sizes: tuple[int, ...] = (256,)
    activation: str = "gelu"
    dropout: float = 0.1
    per_dimension_heads: bool = False
    per_dimension_hidden: int = 32
    label_range: tuple[float, float] | None = (0.0, 1.0)
    loss: str = "mse"
    loss_weights: tuple[float, ...] | None = None
    uncertainty_weighting: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden_sizes = tuple(self.hidden_sizes)
        checks = [
            (self.pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}"),
            (self.activation in ACTIVATIONS, f"activation must be one of {', '.join(ACTIVATIONS)}"),
            (
                self.loss in REGRESSION_LOSSES,
                f"loss must be one of {', '.join(REGRESSION_LOSSES)}, got {self.loss!r}",
            ),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (
                all(h >= 1 for h in self.hidden_sizes),
                f"hidden_sizes must be positive, got {list(self.hidden_sizes)}",
            ),
            (
                self.per_dimension_hidden >= 1,
                f"per_dimension_hidden must be positive, got {self.per_dimension_hidden}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.label_range is not None:
            self.label_range = (float(self.label_range[0]), float(self.label_range[1]))
            if not self.label_range[0] < self.label_range[1]:
                raise ValueError(f"label_range must be (lo, hi) with lo < hi, got {self.label_range}")
        if self.loss_weights is not None:
            self.loss_weights = tuple(float(w) for w in self.loss_weights)
            if len(self.loss_weights) != self.num_outputs:
                raise ValueError(
                    f"got {len(self.loss_weights)} loss_weights for {self.num_outputs} dimensions"
                )
            if any(w < 0 or not math.isfinite(w) for w in self.loss_weights) or sum(self.loss_weights) <= 0:
                raise ValueError(
                    f"loss_weights must be finite, >= 0 and not all 0, got {list(self.loss_weights)}"
                )

    @staticmethod
    def default_labels(n: int) -> tuple[str, ...]:
        return (
            PERCEPIANO_DIMENSIONS if n == len(PERCEPIANO_DIMENSIONS) else tuple(f"dim_{i}" for i in range(n))
        )


class PerDimensionOutput(nn.Module):
    """One two-layer MLP per output dimension, evaluated for all dimensions at once.

    Shapes:
        x: [B, in_dim] -> [B, num_outputs].
    """

    def __init__(self, in_dim: int, hidden: int, num_outputs: int, activation: str) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_outputs, in_dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_outputs, hidden))
        self.w2 = nn.Parameter(torch.empty(num_outputs, hidden))
        self.b2 = nn.Parameter(torch.empty(num_outputs))
        self.act = ACTIVATIONS[activation]()
        for weight, bias, fan_in in ((self.w1, self.b1, in_dim), (self.w2, self.b2, hidden)):
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per dimension
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.act(torch.einsum("bi,nik->bnk", x, self.w1) + self.b1)
        return torch.einsum("bnk,nk->bn", hidden, self.w2) + self.b2


@register_head("rating", RatingConfig)
class RatingHead(Head):
    """Shared trunk + per-dimension outputs, optionally bounded to the label range. See the module docstring."""

    config: RatingConfig

    @property
    def task(self) -> Task:
        """Always ``rating``."""
        return RATING

    def __init__(self, in_dim: int, config: RatingConfig) -> None:
        super().__init__(in_dim, config)
        self.pooling = build_pooling(config.pooling, in_dim, config.attention_heads)
        self.trunk, width = mlp_trunk(in_dim, config.hidden_sizes, config.activation, config.dropout)
        self.out: nn.Module = (
            PerDimensionOutput(width, config.per_dimension_hidden, config.num_outputs, config.activation)
            if config.per_dimension_heads
            else nn.Linear(width, config.num_outputs)
        )
        weights = torch.tensor(config.loss_weights or [1.0] * config.num_outputs)
        self.register_buffer("loss_weights", weights / weights.sum(), persistent=False)
        self.log_vars = (
            nn.Parameter(torch.zeros(config.num_outputs)) if config.uncertainty_weighting else None
        )

    def pool(self, output: BackboneOutput) -> Tensor:
        """Shapes: -> [B, in_dim]."""
        self.check_input(output)
        return self.pooling(output)

    def project(self, pooled: Tensor) -> Tensor:
        """Shapes: [B, in_dim] -> [B, num_outputs], in ``label_range`` when it is set."""
        z = self.out(self.trunk(pooled))
        if self.config.label_range is None:
            return z
        lo, hi = self.config.label_range
        return lo + (hi - lo) * torch.sigmoid(z)

    def dimension_losses(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Batch-mean loss of each dimension. Shapes: prediction, target [B, n] -> [n]."""
        if target.shape != prediction.shape:
            raise ValueError(
                f"rating targets must be [B, {self.config.num_outputs}], got {list(target.shape)}"
            )
        target = target.to(prediction.dtype)
        if not torch.isfinite(target).all():
            raise ValueError("rating targets must be finite")
        if self.config.label_range is not None:
            lo, hi = self.config.label_range
            if (target < lo).any() or (target > hi).any():
                raise ValueError(
                    f"rating targets must lie in label_range [{lo}, {hi}], got [{float(target.min())}, "
                    f"{float(target.max())}]; rescale them or change label_range"
                )
        return REGRESSION_LOSSES[self.config.loss](prediction, target).mean(dim=0)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Weighted (and optionally uncertainty-weighted) mean of :meth:`dimension_losses`. Shapes: -> []."""
        losses = self.dimension_losses(prediction, target)
        if self.log_vars is not None:
            losses = 0.5 * (torch.exp(-self.log_vars) * losses + self.log_vars)
        return (self.loss_weights.to(losses.dtype) * losses).sum()
