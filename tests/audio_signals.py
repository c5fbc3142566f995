"""Deterministic test signals: noise, swept sines, pure tones and a small 'musical' mixture (notes with
harmonics and percussive clicks), so that parity tests see realistic spectra and not only white noise; and two
measurements of them (spectral peak, RMS level)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def noise(batch: int, n: int, seed: int = 0, scale: float = 0.3) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, n, generator=g) * scale).clamp(-1, 1)


def sweep(n: int, sample_rate: int, f0: float = 20.0, f1: float | None = None, amp: float = 0.5) -> Tensor:
    """Exponential sine sweep from f0 to f1 (default 0.45 * sample_rate)."""
    f1 = f1 if f1 is not None else 0.45 * sample_rate
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    dur = n / sample_rate
    k = math.log(f1 / f0)
    phase = 2 * math.pi * f0 * dur / k * (torch.exp(t / dur * k) - 1)
    return (amp * torch.sin(phase)).float()


def music(batch: int, n: int, sample_rate: int, seed: int = 0) -> Tensor:
    """Random notes (fundamental + decaying harmonics, exponential envelopes) plus clicks."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    out = torch.zeros(batch, n, dtype=torch.float64)
    for b in range(batch):
        n_notes = 8 + int(torch.randint(0, 8, (1,), generator=g))
        for _ in range(n_notes):
            midi = 40 + float(torch.randint(0, 40, (1,), generator=g))
            f = 440.0 * 2 ** ((midi - 69) / 12)
            onset = float(torch.rand(1, generator=g)) * n / sample_rate * 0.9
            env = torch.where(t >= onset, torch.exp(-(t - onset) * 3.0), torch.zeros_like(t))
            for h in range(1, 6):
                if f * h < sample_rate / 2:
                    out[b] += 0.08 / h * env * torch.sin(2 * math.pi * f * h * (t - onset))
        clicks = torch.randint(0, n, (12,), generator=g)
        out[b, clicks] += 0.5
    return out.clamp(-1, 1).float()


def tone(freq: float, n: int, sample_rate: int, batch: int = 1) -> Tensor:
    """A unit-amplitude sine of ``freq`` Hz, ``[batch, n]``."""
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    return torch.sin(2 * math.pi * freq * t).float().repeat(batch, 1)


def peak_hz(x: Tensor, sample_rate: int) -> float:
    """Frequency of the largest bin of the Hann-windowed spectrum of ``x [N]`` (``sample_rate / N`` apart)."""
    spec = torch.fft.rfft(x * torch.hann_window(x.shape[-1])).abs()
    return int(spec.argmax()) * sample_rate / x.shape[-1]


def rms_db(x: Tensor) -> Tensor:
    """Mean power in dB along the last axis."""
    return 10 * torch.log10(x.double().square().mean(-1))
