"""Classification heads (genre or any label set): ``linear``, ``mlp``, ``attention`` and ``crnn``.

Single-label heads are trained with cross-entropy (integer class targets ``[B]`` or soft targets ``[B, C]``,
class probabilities such as mixup's mixed one-hot vectors), multi-label heads with binary cross-entropy on
logits (targets ``[B, C]`` in [0, 1], mixed multi-hot vectors included); both accept label smoothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.base import BackboneOutput

from .pooling import POOLINGS, AttentionPool, build_pooling, time_columns
from .registry import Head, HeadConfig, register_head
from .tasks import MULTI_LABEL, SINGLE_LABEL, Task

__all__ = [
    "GTZAN_GENRES",
    "ACTIVATIONS",
    "ClassificationConfig",
    "MLPConfig",
    "AttentionConfig",
    "CRNNConfig",
    "ClassificationHead",
    "LinearHead",
    "MLPHead",
    "AttentionHead",
    "CRNNHead",
    "classification_loss",
]

GTZAN_GENRES: tuple[str, ...] = (
    "blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock",
)  # fmt: skip

ACTIVATIONS: Mapping[str, Callable[[], nn.Module]] = MappingProxyType(
    {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
)


@dataclass
class ClassificationConfig(HeadConfig):
    """Config of the ``linear`` head; the other classification configs extend it.

    Attributes:
        multi_label: sigmoid outputs and binary cross-entropy instead of softmax and cross-entropy.
        label_smoothing: in [0, 1); for multi-label targets ``t -> t * (1 - s) + s / 2``.
        dropout: before the output layer.
        pooling: how tokens become the clip vector (see :mod:`heads.pooling`).
        attention_heads: heads of the attention pooling (when ``pooling`` uses attention).
    """

    multi_label: bool = False
    label_smoothing: float = 0.0
    dropout: float = 0.0
    pooling: str = "pooled"
    attention_heads: int = 1

    pooling_choices: ClassVar[tuple[str, ...]] = tuple(POOLINGS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pooling not in self.pooling_choices:
            raise ValueError(
                f"pooling must be one of {', '.join(self.pooling_choices)}, got {self.pooling!r}"
            )


@dataclass
class MLPConfig(ClassificationConfig):
    """``mlp`` head: pooling -> (Linear, activation, dropout) per hidden size -> Linear.

    Attributes:
        hidden_sizes: widths of the hidden layers.
        activation: one of :data:`ACTIVATIONS`.
    """

    hidden_sizes: tuple[int, ...] = (512,)
    activation: str = "gelu"
    dropout: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden_sizes = tuple(self.hidden_sizes)
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive widths, got {list(self.hidden_sizes)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")


@dataclass
class AttentionConfig(ClassificationConfig):
    """``attention`` head: learned-query attention over all tokens (or over time after a frequency mean)."""

    pooling: str = "attention"

    pooling_choices: ClassVar[tuple[str, ...]] = ("attention", "freq_time")


@dataclass
class CRNNConfig(ClassificationConfig):
    """``crnn`` head: time columns -> LayerNorm -> BiGRU -> pooling over time -> Linear.

    Attributes:
        hidden_size: GRU width per direction (the pooled vector has twice this width).
        num_layers: stacked GRU layers (``dropout`` applies between them too).
        pooling: over the GRU outputs: ``attention``, ``mean`` or ``max``.
    """

    hidden_size: int = 128
    num_layers: int = 1
    pooling: str = "attention"

    pooling_choices: ClassVar[tuple[str, ...]] = ("attention", "mean", "max")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError(
                f"hidden_size and num_layers must be positive, got {self.hidden_size}, {self.num_layers}"
            )


def classification_loss(
    logits: Tensor, target: Tensor, multi_label: bool, label_smoothing: float = 0.0
) -> Tensor:
    """Cross-entropy (single-label) or binary cross-entropy on logits (multi-label).

    Shapes:
        logits: [B, C]; target: [B] class indices or [B, C] class probabilities (single-label),
        [B, C] in [0, 1] (multi-label).
    """
    b, c = logits.shape
    if multi_label:
        if target.shape != logits.shape:
            raise ValueError(f"multi-label targets must be [B, C] = {[b, c]}, got {list(target.shape)}")
        target = target.to(logits.dtype)
        if ((target < 0) | (target > 1)).any():
            raise ValueError("multi-label targets must lie in [0, 1]")
        target = target * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits, target)
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(f"soft targets must be [B, C] = {[b, c]}, got {list(target.shape)}")
        sums = target.detach().float().sum(dim=1)
        if bool((target < 0).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            raise ValueError(
                "soft targets must be class probabilities (>= 0, each row summing to 1), got row sums in "
                f"[{float(sums.min()):.4g}, {float(sums.max()):.4g}]; pass class indices [B] for hard labels"
            )
        return F.cross_entropy(logits, target.to(logits.dtype), label_smoothing=label_smoothing)
    if target.shape != (b,):
        raise ValueError(f"class-index targets must be [B] = [{b}], got {list(target.shape)}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
        raise ValueError(
            f"class indices must be in [0, {c}), got range [{int(target.min())}, {int(target.max())}]"
        )
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def mlp_trunk(
    in_dim: int, hidden_sizes: tuple[int, ...], activation: str, dropout: float
) -> tuple[nn.Sequential, int]:
    """(Linear, activation, dropout) per hidden size; returns the stack and its output width."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*layers), width


class ClassificationHead(Head):
    """Shared loss and probabilities of the classification heads."""

    config: ClassificationConfig

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy or BCE (see :func:`classification_loss`). Shapes: prediction [B, C] -> []."""
        return classification_loss(prediction, target, self.config.multi_label, self.config.label_smoothing)

    @property
    def task(self) -> Task:
        """``multi_label`` when the config says so, else ``single_label``."""
        return MULTI_LABEL if self.config.multi_label else SINGLE_LABEL

    def probabilities(self, logits: Tensor) -> Tensor:
        """Softmax (single-label) or sigmoid (multi-label). Shapes: [B, C] -> [B, C]."""
        return self.task.probabilities(logits)


@register_head("linear", ClassificationConfig)
class LinearHead(ClassificationHead):
    """Pooling -> dropout -> Linear. The linear probe of a frozen backbone."""

    def __init__(self, in_dim: int, config: ClassificationConfig) -> None:
        super().__init__(in_dim, config)
        self.pooling = build_pooling(config.pooling, in_dim, config.attention_heads)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(in_dim, config.num_outputs)

    def pool(self, output: BackboneOutput) -> Tensor:
        """Shapes: -> [B, in_dim]."""
        self.check_input(output)
        return self.pooling(output)

    def project(self, pooled: Tensor) -> Tensor:
        """Shapes: [B, in_dim] -> [B, C]."""
        return self.fc(self.dropout(pooled))


@register_head("attention", AttentionConfig)
class AttentionHead(LinearHead):
    """Learned-query attention pooling -> dropout -> Linear."""


@register_head("mlp", MLPConfig)
class MLPHead(ClassificationHead):
    """Pooling -> hidden layers (Linear, activation, dropout) -> Linear."""

    config: MLPConfig

    def __init__(self, in_dim: int, config: MLPConfig) -> None:
        super().__init__(in_dim, config)
        self.pooling = build_pooling(config.pooling, in_dim, config.attention_heads)
        self.mlp, width = mlp_trunk(in_dim, config.hidden_sizes, config.activation, config.dropout)
        self.fc = nn.Linear(width, config.num_outputs)

    def pool(self, output: BackboneOutput) -> Tensor:
        """Shapes: -> [B, in_dim]."""
        self.check_input(output)
        return self.pooling(output)

    def project(self, pooled: Tensor) -> Tensor:
        """Shapes: [B, in_dim] -> [B, C]."""
        return self.fc(self.mlp(pooled))


@register_head("crnn", CRNNConfig)
class CRNNHead(ClassificationHead):
    """Bidirectional GRU over the token time columns (the F' tokens of a column averaged), then pooling.

    Shapes:
        output.sequence: [B, T' * F', D] -> columns [B, T', D] -> GRU [B, T', 2H] -> pooled [B, 2H] -> [B, C].
    """

    config: CRNNConfig

    def __init__(self, in_dim: int, config: CRNNConfig) -> None:
        super().__init__(in_dim, config)
        self.norm = nn.LayerNorm(in_dim)
        self.gru = nn.GRU(
            in_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        width = 2 * config.hidden_size
        self.attend = AttentionPool(width, config.attention_heads) if config.pooling == "attention" else None
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(width, config.num_outputs)

    def pool(self, output: BackboneOutput) -> Tensor:
        """Shapes: -> [B, 2 * hidden_size]."""
        self.check_input(output)
        states, _ = self.gru(self.norm(time_columns(output)))
        if self.attend is not None:
            return self.attend(states)
        return states.amax(dim=1) if self.config.pooling == "max" else states.mean(dim=1)

    def project(self, pooled: Tensor) -> Tensor:
        """Shapes: [B, 2 * hidden_size] -> [B, C]."""
        return self.fc(self.dropout(pooled))
