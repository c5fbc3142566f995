"""Feature-level augmentation: SpecAugment time and frequency masks on ``[B, ..., F, T]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .draws import _rand, _randint


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Masks per example: ``freq_masks`` bands of ``freq_width`` bins and ``time_masks`` of ``time_width``
    frames (inclusive ranges, clipped to the feature size), filled with ``fill``: a number, or ``"mean"`` for
    each example's own mean (front-ends differ in scale: normalised AST/PaSST frames centre on 0, CNN14's
    log-mel is in dB, where 0 would be a loud band)."""

    freq_masks: int = 2
    freq_width: tuple[int, int] = (0, 24)
    time_masks: int = 2
    time_width: tuple[int, int] = (0, 40)
    fill: float | Literal["mean"] = "mean"

    def __post_init__(self) -> None:
        for name in ("freq_width", "time_width"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if self.freq_masks < 0 or self.time_masks < 0:
            raise ValueError(f"mask counts must be >= 0, got {self.freq_masks}, {self.time_masks}")
        if isinstance(self.fill, str) and self.fill != "mean":
            raise ValueError(f"fill must be a number or 'mean', got {self.fill!r}")


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
        mask = mask.reshape(x.shape[0], *([1] * (x.ndim - 3)), *mask.shape[1:])
        if self.config.fill == "mean":
            fill = x.detach().mean(dim=tuple(range(1, x.ndim)), keepdim=True)
            return torch.where(mask, fill, x)
        return x.masked_fill(mask, self.config.fill)
