"""Batched, seeded augmentations for waveforms ``[B, N]`` and features ``[B, F, T]``, on any device.

Every augmentation is an ``nn.Module`` configured by a frozen dataclass. Randomness comes from an optional
``torch.Generator`` passed to ``forward`` (the same generator state gives the same output); parameters are
drawn on the generator's device (CPU unless it is a CUDA generator) and moved to the data. Waveform
augmentations split into ``draw(x, generator) -> params`` (one value per example) and
``augment(x, params)``, so that the drawn values can be inspected or replayed. Mixing augmentations
(:class:`Mixup`, :class:`SpecMix`) mix targets alike: integer labels become one-hot, float targets (one-hot,
soft labels or ratings) are mixed as they are.

Time-stretch is a phase vocoder (STFT, magnitudes interpolated between frames, phases advanced by each bin's
measured frequency and locked to the nearest spectral peak, inverse STFT). Pitch-shift stretches by the pitch
ratio and resamples back to the input length with a band-limited FFT resampler, so frequencies scale by the
ratio and the length is kept. EQ is zero-phase: the magnitude response of an RBJ peaking biquad times a
spectral tilt, applied in the FFT domain.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "WAVE_AUGMENTATIONS",
    "build_wave_augment",
    "Compose",
    "ConvolveIR",
    "Eq",
    "EqConfig",
    "Gain",
    "GainConfig",
    "Mixed",
    "Mixup",
    "MixupConfig",
    "AddNoise",
    "NoiseConfig",
    "PitchShift",
    "PitchShiftConfig",
    "RandomApply",
    "SpecAugment",
    "SpecAugmentConfig",
    "SpecMix",
    "SpecMixConfig",
    "TimeStretch",
    "TimeStretchConfig",
    "fft_convolve",
    "fft_resample",
    "pitch_shift",
    "time_stretch",
]


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


def _check_wave(x: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 2:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a float waveform batch [B, N], got {got}")


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """Per-example values ``[B]`` shaped to broadcast over ``like [B, ...]``."""
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


# --------------------------------------------------------------------------------------------------- features


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


@dataclass(frozen=True)
class MixupConfig:
    """``lam ~ Beta(alpha, alpha)`` per example; ``num_classes`` one-hot encodes integer labels."""

    alpha: float = 0.4
    num_classes: int | None = None


class Mixup(nn.Module):
    """Mixup (Zhang et al. 2018) of inputs of any shape and their targets.

    Shapes:
        x ``[B, ...]``, targets ``[B]`` (int) or ``[B, C]`` (float) -> :class:`Mixed` with targets ``[B, C]``.
    """

    def __init__(self, config: MixupConfig = MixupConfig()) -> None:
        super().__init__()
        if config.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {config.alpha}")
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
    fractions of the axis) are taken from another example of the batch."""

    freq_bands: int = 2
    max_freq_fraction: float = 0.2
    time_bands: int = 2
    max_time_fraction: float = 0.2
    num_classes: int | None = None


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
        lam = 1.0 - region.float().mean(dim=(1, 2))
        region = region.reshape(x.shape[0], *([1] * (x.ndim - 3)), f, t)
        return Mixed(
            torch.where(region, x[perm], x), _mix_targets(targets, lam, perm, c.num_classes), lam, perm
        )


# -------------------------------------------------------------------------------------------------- waveforms


class _WaveAugment(nn.Module):
    """``forward(x, generator) = augment(x, draw(x, generator))`` on waveforms ``[B, N]``."""

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def augment(self, x: Tensor, params: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_wave(x)
        return self.augment(x, self.draw(x, generator))


@dataclass(frozen=True)
class GainConfig:
    """Gain in dB, uniform in ``[min_db, max_db]`` per example."""

    min_db: float = -6.0
    max_db: float = 6.0


class Gain(_WaveAugment):
    """Scale each example by ``10 ** (dB / 20)``. Shapes: ``[B, N]`` -> same; params ``[B]`` dB."""

    def __init__(self, config: GainConfig = GainConfig()) -> None:
        super().__init__()
        self.config = config

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return _uniform(x.shape[0], (self.config.min_db, self.config.max_db), generator, x.device)

    def augment(self, x: Tensor, params: Tensor) -> Tensor:
        return x * _expand(10 ** (params / 20), x)


@dataclass(frozen=True)
class EqConfig:
    """A peaking bell (gain dB, centre Hz drawn log-uniformly, Q) and a tilt in dB/octave around 1 kHz."""

    sample_rate: int
    peak_db: tuple[float, float] = (-6.0, 6.0)
    peak_hz: tuple[float, float] = (100.0, 6000.0)
    q: tuple[float, float] = (0.5, 2.0)
    tilt_db_per_octave: tuple[float, float] = (-1.5, 1.5)


class Eq(_WaveAugment):
    """Zero-phase EQ (see the module docstring).

    Shapes:
        ``[B, N]`` -> same; params ``[B, 4]`` (dB, Hz, Q, tilt).
    """

    def __init__(self, config: EqConfig) -> None:
        super().__init__()
        if config.peak_hz[1] >= config.sample_rate / 2 or config.peak_hz[0] <= 0:
            raise ValueError(f"peak_hz {config.peak_hz} must lie in (0, {config.sample_rate / 2}) Hz")
        self.config = config

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        c, b, d = self.config, x.shape[0], x.device
        hz = torch.exp(_uniform(b, (math.log(c.peak_hz[0]), math.log(c.peak_hz[1])), generator, d))
        return torch.stack(
            [
                _uniform(b, c.peak_db, generator, d),
                hz,
                _uniform(b, c.q, generator, d),
                _uniform(b, c.tilt_db_per_octave, generator, d),
            ],
            1,
        )

    def response(self, params: Tensor, n: int) -> Tensor:
        """Magnitude response at the ``rfft`` bins of an ``n``-sample signal.

        Shapes:
            params ``[B, 4]`` -> ``[B, n // 2 + 1]``.
        """
        sr = self.config.sample_rate
        gain_db, hz, q, tilt = (params[:, i : i + 1].double() for i in range(4))
        f = torch.fft.rfftfreq(n, 1.0 / sr, device=params.device, dtype=torch.float64)
        # RBJ cookbook peaking EQ: H(z) = (1 + a A z^-1 ... ) in the form b(z) / a(z) with A = 10^(dB/40).
        a_ = 10 ** (gain_db / 40)
        w0 = 2 * math.pi * hz / sr
        alpha = torch.sin(w0) / (2 * q)
        z1 = torch.exp(-1j * 2 * math.pi * f / sr)
        num = (1 + alpha * a_) - 2 * torch.cos(w0) * z1 + (1 - alpha * a_) * z1**2
        den = (1 + alpha / a_) - 2 * torch.cos(w0) * z1 + (1 - alpha / a_) * z1**2
        tilt_gain = 10 ** (tilt * torch.log2(f.clamp(min=20.0) / 1000.0) / 20)
        return ((num / den).abs() * tilt_gain).float()

    def augment(self, x: Tensor, params: Tensor) -> Tensor:
        n = x.shape[-1]
        return torch.fft.irfft(torch.fft.rfft(x) * self.response(params, n).to(x.device), n=n).to(x.dtype)


_NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectral density ~ 1 / f^exponent


@dataclass(frozen=True)
class NoiseConfig:
    """Gaussian noise of the given colour at an SNR (dB) uniform in ``snr_db`` per example."""

    snr_db: tuple[float, float] = (10.0, 30.0)
    color: Literal["white", "pink", "brown"] = "white"


class AddNoise(nn.Module):
    """Add noise at a target SNR: ``10 log10(mean(x^2) / mean(noise^2)) = snr`` exactly (silence gets none).

    Shapes:
        ``[B, N]`` -> same.
    """

    def __init__(self, config: NoiseConfig = NoiseConfig()) -> None:
        super().__init__()
        if config.color not in _NOISE_EXPONENTS:
            raise ValueError(f"color must be one of {sorted(_NOISE_EXPONENTS)}, got {config.color!r}")
        self.config = config

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per-example SNR ``[B]`` and the unscaled noise ``[B, N]``."""
        b, n = x.shape
        noise = _rand((b, n), generator, x.device, normal=True).to(x.dtype)
        exponent = _NOISE_EXPONENTS[self.config.color]
        if exponent:
            f = torch.fft.rfftfreq(n, device=x.device).clamp(min=1.0 / n)
            noise = torch.fft.irfft(torch.fft.rfft(noise) * f ** (-exponent / 2), n=n)
        return _uniform(b, self.config.snr_db, generator, x.device), noise

    def augment(self, x: Tensor, params: tuple[Tensor, Tensor]) -> Tensor:
        snr, noise = params
        p_signal, p_noise = x.square().mean(-1), noise.square().mean(-1).clamp(min=1e-20)
        scale = torch.sqrt(p_signal / p_noise * 10 ** (-snr / 10))
        return x + _expand(scale, x) * noise

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_wave(x)
        return self.augment(x, self.draw(x, generator))


def fft_convolve(x: Tensor, ir: Tensor) -> Tensor:
    """Causal convolution through the FFT, cut to the input length.

    Shapes:
        x ``[B, N]``, ir ``[B, L]`` or ``[L]`` -> ``[B, N]``.
    """
    n = x.shape[-1] + ir.shape[-1] - 1
    return torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(ir.to(x.dtype), n=n), n=n)[
        ..., : x.shape[-1]
    ]


class ConvolveIR(_WaveAugment):
    """Convolve each example with an impulse response drawn from ``irs`` (e.g. measured rooms), then mix
    ``wet`` (uniform in the range) of it with ``1 - wet`` of the dry signal. A unit impulse is the identity.

    Args:
        irs: The impulse responses ``[K, L]`` (or one ``[L]``), kept as a buffer so ``.to(device)`` moves
            them.
        wet: Range of the wet fraction.

    Shapes:
        ``[B, N]`` -> same; params ``[B, 2]`` (IR index, wet).
    """

    def __init__(self, irs: Tensor, wet: tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__()
        irs = irs[None] if irs.ndim == 1 else irs
        if irs.ndim != 2 or irs.shape[0] == 0 or irs.shape[1] == 0 or not irs.is_floating_point():
            raise ValueError(
                f"irs must be a non-empty float tensor [K, L] or [L], got {irs.dtype} {list(irs.shape)}"
            )
        self.register_buffer("irs", irs)
        self.wet = wet

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b = x.shape[0]
        index = _randint(b, 0, self.irs.shape[0] - 1, generator, x.device).to(x.dtype)
        return torch.stack([index, _uniform(b, self.wet, generator, x.device)], 1)

    def augment(self, x: Tensor, params: Tensor) -> Tensor:
        wet = _expand(params[:, 1], x)
        return (1 - wet) * x + wet * fft_convolve(x, self.irs.to(x.device)[params[:, 0].long()])


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


def _fit(y: Tensor, n: int) -> Tensor:
    """Crop or zero-pad ``y [N']`` to ``n`` samples."""
    return y[:n] if y.shape[-1] >= n else F.pad(y, (0, n - y.shape[-1]))


@dataclass(frozen=True)
class TimeStretchConfig:
    """Rate uniform in ``rate`` per example (0.93-1.07: the roadmap's +-5-8 %); STFT size and hop."""

    rate: tuple[float, float] = (0.93, 1.07)
    n_fft: int = 1024
    hop: int = 256


class TimeStretch(_WaveAugment):
    """Per-example :func:`time_stretch`, cropped or zero-padded back to the input length.

    Batches stay rectangular; use :func:`time_stretch` for the changed length.

    Shapes:
        ``[B, N]`` -> same; params ``[B]`` rates.
    """

    def __init__(self, config: TimeStretchConfig = TimeStretchConfig()) -> None:
        super().__init__()
        self.config = config

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return _uniform(x.shape[0], self.config.rate, generator, x.device)

    def augment(self, x: Tensor, params: Tensor) -> Tensor:
        c, n = self.config, x.shape[-1]
        return torch.stack(
            [_fit(time_stretch(x[i : i + 1], float(r), c.n_fft, c.hop)[0], n) for i, r in enumerate(params)]
        )


@dataclass(frozen=True)
class PitchShiftConfig:
    """Shift in semitones uniform in ``semitones`` per example (the roadmap's +-1-2); STFT size and hop."""

    semitones: tuple[float, float] = (-2.0, 2.0)
    n_fft: int = 1024
    hop: int = 256


class PitchShift(_WaveAugment):
    """Per-example :func:`pitch_shift`. Shapes: ``[B, N]`` -> same; params ``[B]`` semitones."""

    def __init__(self, config: PitchShiftConfig = PitchShiftConfig()) -> None:
        super().__init__()
        self.config = config

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return _uniform(x.shape[0], self.config.semitones, generator, x.device)

    def augment(self, x: Tensor, params: Tensor) -> Tensor:
        c = self.config
        return torch.cat([pitch_shift(x[i : i + 1], float(s), c.n_fft, c.hop) for i, s in enumerate(params)])


# ------------------------------------------------------------------------------------------------ composition


class RandomApply(nn.Module):
    """Apply ``module`` to each example with probability ``p`` (run on the whole batch, kept where chosen).

    Shapes:
        ``[B, ...]`` -> same (the module must keep the shape).
    """

    def __init__(self, module: nn.Module, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.module, self.p = module, p

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        chosen = _rand((x.shape[0],), generator, x.device) < self.p
        y = self.module(x, generator)
        return torch.where(chosen.reshape(-1, *([1] * (x.ndim - 1))), y, x)


class Compose(nn.Module):
    """Apply augmentations in order, sharing one generator. Shapes: as the members."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.members = nn.ModuleList(modules)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for m in self.members:
            x = m(x, generator)
        return x


# Waveform augmentations that keep the length, by the names recipes use in ``data.augment``.
WAVE_AUGMENTATIONS: dict[str, tuple[type[nn.Module], type]] = {
    "gain": (Gain, GainConfig),
    "eq": (Eq, EqConfig),
    "noise": (AddNoise, NoiseConfig),
    "pitch_shift": (PitchShift, PitchShiftConfig),
}


def build_wave_augment(spec: Mapping[str, Mapping[str, Any]], sample_rate: int) -> Compose:
    """A :class:`Compose` of waveform augmentations from a config mapping, in the mapping's order.

    ``{"gain": {"min_db": -6, "max_db": 6}, "noise": {"snr_db": [15, 30], "p": 0.5}}``: each entry's keys are its
    config dataclass's fields (lists become tuples; ``sample_rate`` is filled in where the config has one), plus
    ``p``, the probability of applying it to an example (default 1).
    """
    modules: list[nn.Module] = []
    for name, options in spec.items():
        if name not in WAVE_AUGMENTATIONS:
            raise ValueError(
                f"unknown waveform augmentation {name!r}; known: {', '.join(WAVE_AUGMENTATIONS)}"
            )
        module_cls, config_cls = WAVE_AUGMENTATIONS[name]
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(options or {}).items()}
        p = float(kwargs.pop("p", 1.0))
        if "sample_rate" in {f.name for f in dataclasses.fields(config_cls)}:
            kwargs.setdefault("sample_rate", sample_rate)
        try:
            config = config_cls(**kwargs)
        except TypeError as e:
            raise ValueError(f"augmentation {name!r}: {e}") from e
        module = module_cls(config)
        modules.append(module if p >= 1.0 else RandomApply(module, p))
    return Compose(*modules)
