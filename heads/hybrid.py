"""The ``hybrid`` head: the pooled backbone embedding fused with a vector of hand-made clip descriptors.

The piano seed's "option D": a learned branch (the backbone) and an engineered branch (tempo, onset strength,
spectral shape, dynamics, chroma, MFCC statistics; for PercePiano also the performance MIDI's velocities,
durations, inter-onset intervals and pedalling) joined by a fusion layer. Descriptors are computed outside the
head (:mod:`finetune.descriptors`, once per clip, cached) and passed with each batch; the head standardises them
with the training set's mean and standard deviation, which it keeps as buffers (saved with the model's weights;
set them with :meth:`HybridHead.set_descriptor_stats`).

Fusion (``fusion``):

- ``concat``: ``trunk([pooled, relu(W_d d)])``, the seed's concatenation + MLP;
- ``gated``: both branches projected to ``descriptor_hidden`` width, mixed per feature by a learned gate
  ``g = sigmoid(W_g [pooled, d])``: ``trunk(g * e + (1 - g) * d')``, so the head can lean on the descriptors
  where the backbone's embedding carries little (a small or untrained backbone) and the other way round.

The head serves any task (``task``): single-label and multi-label classification (the classification losses,
soft targets included) and ratings (an element-wise regression loss, outputs optionally bounded to
``label_range``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from backbones.base import BackboneOutput

from .classification import ACTIVATIONS, classification_loss, mlp_trunk
from .pooling import POOLINGS, build_pooling
from .rating import PERCEPIANO_DIMENSIONS, REGRESSION_LOSSES
from .registry import Head, HeadConfig, register_head
from .tasks import Task, get_task

__all__ = ["FUSIONS", "HybridConfig", "HybridHead"]

FUSIONS: tuple[str, ...] = ("concat", "gated")


@dataclass
class HybridConfig(HeadConfig):
    """Config of the ``hybrid`` head.

    Attributes:
        task: ``single_label``, ``multi_label`` or ``rating``.
        descriptor_names: the descriptors, in the order of the vectors passed in (a recipe fills them in from
            ``model.descriptors``; :func:`finetune.descriptors.descriptor_names`).
        fusion: one of :data:`FUSIONS`.
        descriptor_hidden: width of the descriptor branch (and of both branches with ``gated``).
        hidden_sizes, activation, dropout: the trunk after the fusion (as the ``mlp`` head's).
        pooling, attention_heads: how the backbone's tokens become the embedding (:mod:`heads.pooling`).
        label_smoothing: classification tasks (as the ``linear`` head's).
        label_range, loss: ratings: bound outputs with a scaled sigmoid (None: unbounded) and the
            element-wise loss (``heads.rating.REGRESSION_LOSSES``).
    """

    task: str = "rating"
    descriptor_names: tuple[str, ...] = ()
    fusion: str = "concat"
    descriptor_hidden: int = 64
    hidden_sizes: tuple[int, ...] = (256,)
    activation: str = "gelu"
    dropout: float = 0.1
    pooling: str = "pooled"
    attention_heads: int = 1
    label_smoothing: float = 0.0
    label_range: tuple[float, float] | None = None
    loss: str = "mse"

    tasks: ClassVar[tuple[str, ...]] = ("single_label", "multi_label", "rating")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden_sizes = tuple(self.hidden_sizes)
        self.descriptor_names = tuple(self.descriptor_names)
        checks = [
            (self.task in self.tasks, f"task must be one of {', '.join(self.tasks)}, got {self.task!r}"),
            (self.fusion in FUSIONS, f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}"),
            (self.pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}"),
            (self.activation in ACTIVATIONS, f"activation must be one of {', '.join(ACTIVATIONS)}"),
            (self.loss in REGRESSION_LOSSES, f"loss must be one of {', '.join(REGRESSION_LOSSES)}"),
            (
                self.descriptor_hidden >= 1,
                f"descriptor_hidden must be positive, got {self.descriptor_hidden}",
            ),
            (
                all(h >= 1 for h in self.hidden_sizes),
                f"hidden_sizes must be positive, got {self.hidden_sizes}",
            ),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (
                0.0 <= self.label_smoothing < 1.0,
                f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
            ),
            (
                len(set(self.descriptor_names)) == len(self.descriptor_names),
                "descriptor_names must be unique",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.label_range is not None:
            if self.task != "rating":
                raise ValueError(
                    f"label_range bounds ratings; the {self.task} task has none (set it to null)"
                )
            self.label_range = (float(self.label_range[0]), float(self.label_range[1]))
            if not self.label_range[0] < self.label_range[1]:
                raise ValueError(f"label_range must be (lo, hi) with lo < hi, got {self.label_range}")

    def default_labels(self, n: int) -> tuple[str, ...]:  # type: ignore[override]
        if self.task == "rating":
            return (
                PERCEPIANO_DIMENSIONS
                if n == len(PERCEPIANO_DIMENSIONS)
                else tuple(f"dim_{i}" for i in range(n))
            )
        return tuple(f"class_{i}" for i in range(n))


@register_head("hybrid", HybridConfig)
class HybridHead(Head):
    """Embedding + standardised descriptors -> fusion -> trunk -> outputs (see the module docstring).

    Shapes:
        pooled: [B, in_dim]; descriptors: [B, K] with K = ``len(config.descriptor_names)`` -> [B, num_outputs].
    """

    config: HybridConfig

    def __init__(self, in_dim: int, config: HybridConfig) -> None:
        super().__init__(in_dim, config)
        k, h = len(config.descriptor_names), config.descriptor_hidden
        if k == 0:
            raise ValueError(
                "the hybrid head needs descriptor_names (a recipe fills them in from model.descriptors; in code "
                "pass descriptor_names=finetune.descriptors.descriptor_names(['audio']))"
            )
        self.register_buffer("descriptor_mean", torch.zeros(k))
        self.register_buffer("descriptor_std", torch.ones(k))
        self.pooling = build_pooling(config.pooling, in_dim, config.attention_heads)
        act = ACTIVATIONS[config.activation]
        self.descriptor_branch = nn.Sequential(nn.Linear(k, h), act(), nn.Dropout(config.dropout))
        if config.fusion == "gated":
            self.embedding_branch = nn.Sequential(nn.Linear(in_dim, h), act(), nn.Dropout(config.dropout))
            self.gate = nn.Linear(in_dim + k, h)
            fused = h
        else:
            fused = in_dim + h
        self.trunk, width = mlp_trunk(fused, config.hidden_sizes, config.activation, config.dropout)
        self.out = nn.Linear(width, config.num_outputs)

    @property
    def task(self) -> Task:
        """The configured task."""
        return get_task(self.config.task)

    @property
    def descriptor_dim(self) -> int:
        """K, the length of the descriptor vectors the head takes."""
        return len(self.config.descriptor_names)

    @torch.no_grad()
    def set_descriptor_stats(self, mean: Tensor, std: Tensor) -> None:
        """Standardise descriptors with these (the training set's) statistics; a zero ``std`` becomes 1 (a
        constant descriptor then contributes 0).

        Shapes: mean, std: [K].
        """
        k = self.descriptor_dim
        mean, std = torch.as_tensor(mean).float().flatten(), torch.as_tensor(std).float().flatten()
        if mean.shape != (k,) or std.shape != (k,):
            raise ValueError(
                f"descriptor statistics must have {k} values, got {mean.numel()} and {std.numel()}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std < 0).any():
            raise ValueError("descriptor statistics must be finite, with std >= 0")
        self.descriptor_mean.copy_(mean)
        self.descriptor_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def pool(self, output: BackboneOutput) -> Tensor:
        """Shapes: -> [B, in_dim]."""
        self.check_input(output)
        return self.pooling(output)

    def project(self, pooled: Tensor, descriptors: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Fuse the embedding with the descriptors. Shapes: [B, in_dim], [B, K] -> [B, num_outputs].

        Raises:
            ValueError: ``descriptors`` is missing, has the wrong shape or holds NaN/Inf.
        """
        d = self._standardised(descriptors, pooled.shape[0])
        if self.config.fusion == "gated":
            g = torch.sigmoid(self.gate(torch.cat([pooled, d], dim=1)))
            fused = g * self.embedding_branch(pooled) + (1 - g) * self.descriptor_branch(d)
        else:
            fused = torch.cat([pooled, self.descriptor_branch(d)], dim=1)
        z = self.out(self.trunk(fused))
        if self.config.label_range is None:
            return z
        lo, hi = self.config.label_range
        return lo + (hi - lo) * torch.sigmoid(z)

    def forward(self, output: BackboneOutput, descriptors: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Predictions for a backbone output and the clips' descriptors. Shapes: -> [B, num_outputs]."""
        return self.project(self.pool(output), descriptors)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The task's loss: cross-entropy / BCE (soft targets accepted) or the mean regression loss."""
        if self.config.task == "rating":
            if target.shape != prediction.shape:
                raise ValueError(
                    f"rating targets must be [B, {self.config.num_outputs}], got {list(target.shape)}"
                )
            return REGRESSION_LOSSES[self.config.loss](prediction, target.to(prediction.dtype)).mean()
        return classification_loss(
            prediction, target, self.config.task == "multi_label", self.config.label_smoothing
        )

    def _standardised(self, descriptors: Tensor | None, batch: int) -> Tensor:
        k = self.descriptor_dim
        if descriptors is None:
            raise ValueError(
                f"the hybrid head needs descriptors [B, {k}] with every batch (the {k} values named by "
                "head.config.descriptor_names, from finetune.descriptors, as in training)"
            )
        if descriptors.shape != (batch, k):
            raise ValueError(f"descriptors must be [B, K] = {[batch, k]}, got {list(descriptors.shape)}")
        if not bool(torch.isfinite(descriptors).all()):
            raise ValueError("descriptors hold NaN or Inf; recompute them (finetune.descriptors)")
        d = descriptors.to(self.descriptor_mean.dtype)
        return (d - self.descriptor_mean) / self.descriptor_std
