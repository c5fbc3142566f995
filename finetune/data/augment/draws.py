"""Seeded draws shared by the augmentations: values on the generator's device (CPU unless it is a CUDA
generator), moved to the data, one per example.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _rand(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device, normal: bool = False
) -> Tensor:
    """Uniform [0, 1) (or standard normal) draws on the generator's device, moved to ``device``."""
    where = generator.device if generator is not None else device
    fn = torch.randn if normal else torch.rand
    return fn(tuple(shape), generator=generator, device=where).to(device)


def _uniform(
    n: int, bounds: tuple[float, float], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    lo, hi = bounds
    if lo > hi:
        raise ValueError(f"range must have low <= high, got {bounds}")
    return lo + (hi - lo) * _rand((n,), generator, device)


def _randint(n: int, lo: int, hi: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Integers uniform in ``[lo, hi]`` (inclusive); ``hi`` may differ per call but not per example."""
    return (lo + (_rand((n,), generator, device) * (hi - lo + 1)).floor()).long().clamp(max=hi)


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """Per-example values ``[B]`` shaped to broadcast over ``like [B, ...]``."""
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)
