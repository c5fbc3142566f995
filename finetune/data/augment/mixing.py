"""Mixing augmentations: :class:`Mixup` (inputs of any shape) and :class:`SpecMix` (band-wise, features).

Targets are mixed alike: integer labels become one-hot, float targets (one-hot, soft labels or ratings) are
mixed as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .draws import _expand, _rand
from .features import SpecAugment, SpecAugmentConfig


class Mixed(NamedTuple):
    """A mixed batch: ``inputs = lam * x + (1 - lam) * x[perm]`` (per example; SpecMix: region-wise, ``lam``
    the kept fraction) and ``targets`` mixed with the same ``lam``."""

    inputs: Tensor
    targets: Tensor
    lam: Tensor
    perm: Tensor


def _mix_targets(targets: Tensor, lam: Tensor, perm: Tensor, num_classes: int | None) -> Tensor:
    if not targets.is_floating_point():
        if num_classes is None:
            raise ValueError("integer labels need num_classes in the config to be mixed as one-hot vectors")
        targets = F.one_hot(targets.long(), num_classes).float()
    lam = _expand(lam, targets)
    return lam * targets + (1 - lam) * targets[perm]


def _draw_perm(b: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.argsort(_rand((b,), generator, device))


def _chosen(b: int, p: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Which of ``b`` examples are mixed (each with probability ``p``). Shapes: -> bool [B]."""
    return _rand((b,), generator, device) < p


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")


@dataclass(frozen=True)
class MixupConfig:
    """``lam ~ Beta(alpha, alpha)`` per example, for a fraction ``p`` of the examples (the others stay as they
    are); ``num_classes`` one-hot encodes integer labels (a model fills it in from its head). ``stage`` says
    where a model mixes: the ``waveform`` before its front-end, or the front-end ``features`` (spectrogram mixup).
    """

    alpha: float = 0.4
    num_classes: int | None = None
    p: float = 1.0
    stage: Literal["waveform", "features"] = "waveform"

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        _check_p(self.p)
        if self.stage not in ("waveform", "features"):
            raise ValueError(f"stage must be 'waveform' or 'features', got {self.stage!r}")


class Mixup(nn.Module):
    """Mixup (Zhang et al. 2018) of inputs of any shape and their targets.

    Shapes:
        x ``[B, ...]``, targets ``[B]`` (int) or ``[B, C]`` (float) -> :class:`Mixed` with targets ``[B, C]``.
    """

    def __init__(self, config: MixupConfig = MixupConfig()) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> Mixed:
        b = x.shape[0]
        # Beta draws through numpy, seeded from the torch generator (torch's Beta takes no generator).
        seed = int(
            torch.randint(
                0, 2**62, (1,), generator=generator, device=generator.device if generator else "cpu"
            )
        )
        lam = np.random.default_rng(seed).beta(self.config.alpha, self.config.alpha, b)
        lam = torch.from_numpy(lam).to(device=x.device, dtype=torch.float32)
        perm = _draw_perm(b, generator, x.device)
        if self.config.p < 1.0:  # unchosen examples keep lam = 1: themselves, unmixed
            lam = torch.where(_chosen(b, self.config.p, generator, x.device), lam, torch.ones_like(lam))
        lam_x = _expand(lam, x)
        return Mixed(
            lam_x * x + (1 - lam_x) * x[perm],
            _mix_targets(targets, lam, perm, self.config.num_classes),
            lam,
            perm,
        )


@dataclass(frozen=True)
class SpecMixConfig:
    """SpecMix (Kim et al. 2021): per example, ``freq_bands`` and ``time_bands`` bands (widths up to the given
    fractions of the axis) are taken from another example of the batch; for a fraction ``p`` of the examples
    (the others stay as they are)."""

    freq_bands: int = 2
    max_freq_fraction: float = 0.2
    time_bands: int = 2
    max_time_fraction: float = 0.2
    num_classes: int | None = None
    p: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_freq_fraction", "max_time_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.freq_bands < 0 or self.time_bands < 0:
            raise ValueError(f"band counts must be >= 0, got {self.freq_bands}, {self.time_bands}")
        _check_p(self.p)


class SpecMix(nn.Module):
    """Band-wise mixing of features; each example's ``lam`` is the fraction of its own cells kept.

    Shapes:
        x ``[B, ..., F, T]``, targets ``[B]`` or ``[B, C]`` -> :class:`Mixed`.
    """

    def __init__(self, config: SpecMixConfig = SpecMixConfig()) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> Mixed:
        if x.ndim < 3:
            raise ValueError(f"expected features [B, ..., F, T], got shape {list(x.shape)}")
        c = self.config
        f, t = x.shape[-2], x.shape[-1]
        bands = SpecAugment(
            SpecAugmentConfig(
                c.freq_bands,
                (0, int(c.max_freq_fraction * f)),
                c.time_bands,
                (0, int(c.max_time_fraction * t)),
            )
        )
        fm, tm = bands.masks(x, generator)
        region = fm[:, :, None] | tm[:, None, :]  # [B, F, T], True = from the partner
        perm = _draw_perm(x.shape[0], generator, x.device)
        if c.p < 1.0:  # unchosen examples take no band from their partner
            region &= _chosen(x.shape[0], c.p, generator, x.device)[:, None, None]
        lam = 1.0 - region.float().mean(dim=(1, 2))
        region = region.reshape(x.shape[0], *([1] * (x.ndim - 3)), f, t)
        return Mixed(
            torch.where(region, x[perm], x), _mix_targets(targets, lam, perm, c.num_classes), lam, perm
        )
