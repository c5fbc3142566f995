"""Pooling a backbone's token sequence into one clip vector.

``BackboneOutput.sequence`` is ``[B, L, D]`` with ``L = T' * F'`` tokens in time-major order, so
``sequence.view(B, T', F', D)`` is the token grid. Poolings (all ``BackboneOutput -> [B, D]``):

- ``pooled``: the backbone's own clip embedding (CLS/distillation tokens, CNN14's global pooling);
- ``mean``: mean over all tokens;
- ``attention``: softmax attention with learned queries over all tokens;
- ``freq_time``: mean over the F' tokens of each time column, then attention over time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
from torch import Tensor, nn

from backbones.base import BackboneOutput

__all__ = [
    "AttentionPool",
    "PooledPooling",
    "MeanPooling",
    "AttentionPooling",
    "FreqTimePooling",
    "POOLINGS",
    "build_pooling",
    "time_columns",
]


def time_columns(output: BackboneOutput) -> Tensor:
    """Average the F' tokens of each time column of the grid.

    Shapes:
        output.sequence: [B, T' * F', D] -> [B, T', D].
    """
    b, length, dim = output.sequence.shape
    t, f = output.grid
    if t * f != length:
        raise ValueError(f"token grid {output.grid} does not match a sequence of {length} tokens")
    return output.sequence.reshape(b, t, f, dim).mean(dim=2)


class AttentionPool(nn.Module):
    """Multi-head attention pooling with learned queries (one per head, over ``dim // num_heads`` channels).

    The queries start at zero, so an untrained pool is the mean over the sequence.

    Shapes:
        x: [B, L, dim] -> [B, dim].
    """

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim={dim} must be a positive multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.zeros(num_heads, dim // num_heads))

    def forward(self, x: Tensor) -> Tensor:
        b, length, dim = x.shape
        heads = x.reshape(b, length, self.num_heads, dim // self.num_heads)
        scores = torch.einsum("blhc,hc->bhl", heads, self.query) / math.sqrt(dim // self.num_heads)
        weights = scores.softmax(dim=-1)
        return torch.einsum("bhl,blhc->bhc", weights, heads).reshape(b, dim)


class PooledPooling(nn.Module):
    """The backbone's own clip embedding. Shapes: -> [B, D]."""

    def forward(self, output: BackboneOutput) -> Tensor:
        return output.pooled


class MeanPooling(nn.Module):
    """Mean over all tokens. Shapes: [B, L, D] -> [B, D]."""

    def forward(self, output: BackboneOutput) -> Tensor:
        return output.sequence.mean(dim=1)


class AttentionPooling(nn.Module):
    """Learned-query attention over all tokens. Shapes: [B, L, D] -> [B, D]."""

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        self.attend = AttentionPool(dim, num_heads)

    def forward(self, output: BackboneOutput) -> Tensor:
        return self.attend(output.sequence)


class FreqTimePooling(nn.Module):
    """Mean over frequency within each time column, then attention (or mean) over time.

    Shapes:
        output.sequence: [B, T' * F', D] -> [B, D].
    """

    def __init__(self, dim: int, num_heads: int = 1, over_time: str = "attention") -> None:
        super().__init__()
        if over_time not in ("attention", "mean"):
            raise ValueError(f"over_time must be 'attention' or 'mean', got {over_time!r}")
        self.attend = AttentionPool(dim, num_heads) if over_time == "attention" else None

    def forward(self, output: BackboneOutput) -> Tensor:
        columns = time_columns(output)
        return columns.mean(dim=1) if self.attend is None else self.attend(columns)


POOLINGS: Mapping[str, Callable[[int, int], nn.Module]] = MappingProxyType(
    {
        "pooled": lambda dim, heads: PooledPooling(),
        "mean": lambda dim, heads: MeanPooling(),
        "attention": lambda dim, heads: AttentionPooling(dim, heads),
        "freq_time": lambda dim, heads: FreqTimePooling(dim, heads),
    }
)


def build_pooling(name: str, dim: int, num_heads: int = 1) -> nn.Module:
    """Pooling ``name`` (one of :data:`POOLINGS`) for width ``dim``."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")
    return POOLINGS[name](dim, num_heads)
