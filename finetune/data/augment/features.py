"""Feature-level augmentation: SpecAugment time and frequency masks on ``[B, ..., F, T]``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .draws import _rand, _randint


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Masks per example: ``freq_masks`` bands of ``freq_width`` bins and ``time_masks`` of ``time_width``
    frames (inclusive ranges, clipped to the feature size), filled with ``fill``."""

    freq_masks: int = 2
    freq_width: tuple[int, int] = (0, 24)
    time_masks: int = 2
    time_width: tuple[int, int] = (0, 40)
    fill: float = 0.0


class SpecAugment(nn.Module):
    """SpecAugment (Park et al. 2019) time and frequency masking.

    Shapes:
        x ``[B, ..., F, T]`` -> same.
    """

    def __init__(self, config: SpecAugmentConfig = SpecAugmentConfig()) -> None:
        super().__init__()
        self.config = config

    def masks(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The frequency mask ``[B, F]`` and time mask ``[B, T]`` (True = masked)."""
        c = self.config
        b, f, t = x.shape[0], x.shape[-2], x.shape[-1]
        return (
            self._bands(b, f, c.freq_masks, c.freq_width, generator, x.device),
            self._bands(b, t, c.time_masks, c.time_width, generator, x.device),
        )

    @staticmethod
    def _bands(
        b: int, size: int, count: int, width: tuple[int, int], gen: torch.Generator | None, dev: torch.device
    ) -> Tensor:
        mask = torch.zeros(b, size, dtype=torch.bool, device=dev)
        pos = torch.arange(size, device=dev)
        for _ in range(count):
            w = _randint(b, min(width[0], size), min(width[1], size), gen, dev)
            start = (_rand((b,), gen, dev) * (size - w + 1)).floor().long()
            mask |= (pos >= start[:, None]) & (pos < (start + w)[:, None])
        return mask

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim < 3:
            raise ValueError(f"expected features [B, ..., F, T], got shape {list(x.shape)}")
        fm, tm = self.masks(x, generator)
        mask = fm[:, :, None] | tm[:, None, :]
        return x.masked_fill(
            mask.reshape(x.shape[0], *([1] * (x.ndim - 3)), *mask.shape[1:]), self.config.fill
        )
