"""Signal-processing helpers beside the resampler: FFT convolution, band-limited FFT resampling, a
phase-vocoder time stretch and a pitch shift built from them. Batched torch, on any device.

Time-stretch is a phase vocoder (STFT, magnitudes interpolated between frames, phases advanced by each bin's
measured frequency and locked to the nearest spectral peak, inverse STFT). Pitch-shift stretches by the pitch
ratio and resamples back to the input length with the band-limited FFT resampler, so frequencies scale by the
ratio and the length is kept. (For resampling between sample rates use :mod:`finetune.data.resample`: a
windowed-sinc filter that streams; :func:`fft_resample` treats the signal as periodic.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fft_convolve", "fft_resample", "pitch_shift", "time_stretch"]


def _check_wave(x: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 2:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a float waveform batch [B, N], got {got}")


def fft_convolve(x: Tensor, ir: Tensor) -> Tensor:
    """Causal convolution through the FFT, cut to the input length.

    Shapes:
        x ``[B, N]``, ir ``[B, L]`` or ``[L]`` -> ``[B, N]``.
    """
    n = x.shape[-1] + ir.shape[-1] - 1
    return torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(ir.to(x.dtype), n=n), n=n)[
        ..., : x.shape[-1]
    ]


def _stft_parts(n_fft: int, hop: int, device: torch.device) -> tuple[Tensor, Tensor]:
    window = torch.hann_window(n_fft, device=device)
    omega = 2 * math.pi * torch.arange(n_fft // 2 + 1, device=device, dtype=torch.float64) * hop / n_fft
    return window, omega


def _lock_to_peaks(phase: Tensor, mag: Tensor, analysis: Tensor) -> Tensor:
    """Identity phase locking (Laroche & Dolson 1999): every bin takes the synthesis phase of its nearest
    spectral peak plus its analysis phase offset from that peak, which keeps the bins of one partial coherent.

    Shapes:
        phase, mag ``[B, F, T]``, analysis (complex) ``[B, F, T]`` -> ``[B, F, T]``.
    """
    n_bins = mag.shape[-2]
    idx = torch.arange(n_bins, device=mag.device)[:, None].expand_as(mag)
    padded = F.pad(mag, (0, 0, 1, 1), value=-1.0)
    is_peak = (mag >= padded[..., :-2, :]) & (mag > padded[..., 2:, :])
    left = torch.cummax(torch.where(is_peak, idx, -1), dim=-2).values
    right = torch.cummin(torch.where(is_peak, idx, 2 * n_bins).flip(-2), dim=-2).values.flip(-2)
    use_left = (left >= 0) & ((idx - left <= right - idx) | (right >= n_bins))
    nearest = torch.where(use_left, left, torch.where(right < n_bins, right, idx))
    offset = torch.angle(analysis).double()
    return phase.gather(-2, nearest) + offset - offset.gather(-2, nearest)


def time_stretch(x: Tensor, rate: float, n_fft: int = 1024, hop: int = 256) -> Tensor:
    """Phase-vocoder time stretch with identity phase locking; ``rate > 1`` is faster (shorter), same pitch.

    Shapes:
        x ``[B, N]`` -> ``[B, round(N / rate)]``.
    """
    _check_wave(x)
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    n = x.shape[-1]
    window, omega = _stft_parts(n_fft, hop, x.device)
    spec = torch.stft(x.float(), n_fft, hop, window=window, center=True, return_complex=True)  # [B, F, T]
    spec = F.pad(spec, (0, 2))  # zero frames so that frame t + 1 always exists
    steps = torch.arange(0, spec.shape[-1] - 2, rate, device=x.device, dtype=torch.float64)
    i0 = steps.floor().long()
    frac = (steps - i0).float()
    mag = (1 - frac) * spec[..., i0].abs() + frac * spec[..., i0 + 1].abs()
    # Phase advance per output frame: the measured frequency of each bin between frames i0 and i0 + 1.
    expected = omega[:, None]
    delta = torch.angle(spec[..., i0 + 1]).double() - torch.angle(spec[..., i0]).double() - expected
    delta = delta - 2 * math.pi * torch.round(delta / (2 * math.pi)) + torch.remainder(expected, 2 * math.pi)
    phase = torch.cat([torch.angle(spec[..., :1]).double(), delta[..., :-1]], -1).cumsum(-1)
    phase = _lock_to_peaks(phase, mag, spec[..., i0])
    out = torch.polar(mag, torch.remainder(phase, 2 * math.pi).float())
    return torch.istft(out, n_fft, hop, window=window, center=True, length=round(n / rate)).to(x.dtype)


def fft_resample(x: Tensor, length: int) -> Tensor:
    """Band-limited (periodic) resampling to ``length`` samples by truncating or zero-padding the spectrum.

    Shapes:
        x ``[B, N]`` -> ``[B, length]``.
    """
    n = x.shape[-1]
    spec = torch.fft.rfft(x)
    bins = length // 2 + 1
    spec = spec[..., :bins] if bins <= spec.shape[-1] else F.pad(spec, (0, bins - spec.shape[-1]))
    return torch.fft.irfft(spec, n=length) * (length / n)


def pitch_shift(x: Tensor, semitones: float, n_fft: int = 1024, hop: int = 256) -> Tensor:
    """Shift pitch by ``semitones`` keeping the length: stretch by the ratio, then resample back.

    Shapes:
        x ``[B, N]`` -> ``[B, N]``.
    """
    ratio = 2 ** (semitones / 12)
    return fft_resample(time_stretch(x, 1 / ratio, n_fft, hop), x.shape[-1])
