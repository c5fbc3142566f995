"""Hand-built backbone outputs for head tests (no backbone needed)."""

from __future__ import annotations

import torch
from torch import Tensor

from backbones.base import BackboneOutput


def make_output(sequence: Tensor, grid: tuple[int, int], pooled: Tensor | None = None) -> BackboneOutput:
    """A BackboneOutput around ``sequence`` [B, T'*F', D]; ``pooled`` defaults to the token mean."""
    return BackboneOutput(
        pooled=sequence.mean(dim=1) if pooled is None else pooled,
        sequence=sequence,
        token_times=torch.arange(sequence.shape[1], dtype=torch.float32),
        grid=grid,
    )


def random_output(
    batch: int = 3, grid: tuple[int, int] = (5, 2), dim: int = 8, seed: int = 0
) -> BackboneOutput:
    g = torch.Generator().manual_seed(seed)
    return make_output(torch.randn(batch, grid[0] * grid[1], dim, generator=g), grid)


def separable_outputs(
    num_classes: int, per_class: int = 8, grid: tuple[int, int] = (6, 2), dim: int = 16, seed: int = 0
) -> tuple[BackboneOutput, Tensor]:
    """Tokens whose mean is shifted along a class-specific direction (plus noise): a linearly separable task."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    directions = torch.randn(num_classes, dim, generator=g)
    seq = torch.randn(len(labels), grid[0] * grid[1], dim, generator=g) + 1.5 * directions[labels][:, None, :]
    return make_output(seq, grid), labels
