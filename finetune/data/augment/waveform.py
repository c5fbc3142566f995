"""Waveform augmentations ``[B, N]`` that keep the length, their composition, the per-clip time-stretch of the
training collate, and the builders recipes use.

Each augmentation splits into ``draw(x, generator) -> params`` (one value per example) and
``augment(x, params)``, so that the drawn values can be inspected or replayed. EQ is zero-phase: the magnitude
response of an RBJ peaking biquad times a spectral tilt, applied in the FFT domain. Time-stretch and
pitch-shift use :mod:`finetune.data.dsp`.

Time-stretch changes a clip's length, so batches of fixed windows get it from :class:`ClipStretch`, which the
training collate applies to the whole clip *before* it crops (:class:`finetune.data.CropCollate`): each window
is a window of the stretched clip, full length. Only the part of the clip a window needs is stretched.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dsp import _check_wave, fft_convolve, pitch_shift, time_stretch
from .draws import _expand, _rand, _randint, _uniform


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


class ClipStretch:
    """Per-clip time-stretch for the training collate: a rate uniform in ``config.rate`` for a fraction ``p``
    of the clips (rate 1, no stretch, for the others), then windows of the stretched clip.

    The stretched clip is never built whole: :meth:`window` stretches only the samples a window needs (plus
    ``n_fft`` on each side, so the phase vocoder has context), which costs the same for a 30 s clip as for a
    30 min track.
    """

    def __init__(self, config: TimeStretchConfig = TimeStretchConfig(), p: float = 1.0) -> None:
        lo, hi = config.rate
        if not 0 < lo <= hi:
            raise ValueError(f"rate must be (low, high) with 0 < low <= high, got {config.rate}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.config, self.p = config, p

    def draw(self, generator: torch.Generator | None = None) -> float:
        """One clip's rate (> 1 is faster, a shorter clip)."""
        chosen, value = _rand((2,), generator, torch.device("cpu")).tolist()
        lo, hi = self.config.rate
        return lo + (hi - lo) * value if chosen < self.p else 1.0

    @staticmethod
    def stretched_length(length: int, rate: float) -> int:
        """Samples of a ``length``-sample clip stretched by ``rate`` (as :func:`time_stretch` returns)."""
        return round(length / rate)

    def window(self, read: Tensor | Callable[[int, int], Tensor], start: int, n: int, rate: float) -> Tensor:
        """Samples ``[start, start + n)`` of the clip stretched by ``rate``; zeros outside the stretched clip.

        ``read`` is the clip ``[N]`` or a function ``read(lo, hi)`` returning its samples ``[lo, hi)`` with zeros
        outside it (:meth:`finetune.data.tracks.Track.read`), so a window of a long file reads only its span.

        Shapes:
            -> ``[n]``.
        """
        if isinstance(read, Tensor):
            read = partial(_span, read)
        if rate == 1.0:
            return read(start, start + n)
        c = self.config
        src_lo = math.floor(start * rate) - c.n_fft
        src_hi = math.ceil((start + n) * rate) + c.n_fft
        stretched = time_stretch(read(src_lo, src_hi)[None], rate, c.n_fft, c.hop)[0]
        first = round(start - src_lo / rate)  # where stretched time `start` falls in the stretched span
        return _fit(stretched[first:], n)


def _span(clip: Tensor, lo: int, hi: int) -> Tensor:
    """Samples ``[lo, hi)`` of ``clip [N]``, zeros outside it."""
    out = clip.new_zeros(hi - lo)
    a, b = max(0, lo), min(clip.shape[-1], hi)
    if b > a:
        out[a - lo : b - lo] = clip[a:b]
    return out


# Waveform augmentations that keep the length, by the names recipes use in ``data.augment``.
WAVE_AUGMENTATIONS: dict[str, tuple[type[nn.Module], type]] = {
    "gain": (Gain, GainConfig),
    "eq": (Eq, EqConfig),
    "noise": (AddNoise, NoiseConfig),
    "pitch_shift": (PitchShift, PitchShiftConfig),
}
CLIP_STRETCH = "time_stretch"  # the ``data.augment`` entry the training collate applies before cropping


def build_wave_augment(spec: Mapping[str, Mapping[str, Any]], sample_rate: int) -> Compose:
    """A :class:`Compose` of waveform augmentations from a config mapping, in the mapping's order.

    ``{"gain": {"min_db": -6, "max_db": 6}, "noise": {"snr_db": [15, 30], "p": 0.5}}``: each entry's keys are its
    config dataclass's fields (lists become tuples; ``sample_rate`` is filled in where the config has one), plus
    ``p``, the probability of applying it to an example (default 1).
    """
    modules: list[nn.Module] = []
    for name, options in spec.items():
        if name == CLIP_STRETCH:
            raise ValueError(
                f"{CLIP_STRETCH!r} changes the length: the training collate applies it to whole clips before "
                "cropping (build_data_augment gives it and the other augmentations apart)"
            )
        if name not in WAVE_AUGMENTATIONS:
            raise ValueError(
                f"unknown waveform augmentation {name!r}; known: {', '.join(WAVE_AUGMENTATIONS)}, {CLIP_STRETCH}"
            )
        module_cls, config_cls = WAVE_AUGMENTATIONS[name]
        config, p = _config_and_p(name, config_cls, options, sample_rate)
        module = module_cls(config)
        modules.append(module if p >= 1.0 else RandomApply(module, p))
    return Compose(*modules)


def _config_and_p(name: str, config_cls: type, options: Any, sample_rate: int) -> tuple[Any, float]:
    """An augmentation's config from its ``data.augment`` entry, and the entry's ``p`` (default 1)."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(options or {}).items()}
    p = float(kwargs.pop("p", 1.0))
    if "sample_rate" in {f.name for f in dataclasses.fields(config_cls)}:
        kwargs.setdefault("sample_rate", sample_rate)
    try:
        return config_cls(**kwargs), p
    except TypeError as e:
        raise ValueError(f"augmentation {name!r}: {e}") from e


def check_data_augment(spec: Mapping[str, Any]) -> None:
    """Check a ``data.augment`` mapping's names and option keys without building anything (no sample rate is
    needed), so that a typo fails when the config loads rather than after the data set is built.

    Raises:
        ValueError: an unknown augmentation or option (with the closest valid name), or an entry that is not a
            mapping of options.
    """
    from backbones.config import did_you_mean

    known = {**{n: cls for n, (_, cls) in WAVE_AUGMENTATIONS.items()}, CLIP_STRETCH: TimeStretchConfig}
    for name, options in spec.items():
        if name not in known:
            raise ValueError(
                f"unknown augmentation {name!r}{did_you_mean(name, list(known))}; known: {', '.join(known)}"
            )
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"augmentation {name!r}: expected a mapping of options, got {options!r}")
        fields = [f.name for f in dataclasses.fields(known[name]) if f.name != "sample_rate"] + ["p"]
        for key in options or {}:
            if key not in fields:
                raise ValueError(
                    f"augmentation {name!r}: unknown option {key!r}{did_you_mean(str(key), fields)}; "
                    f"it takes: {', '.join(fields)}"
                )


class DataAugment(NamedTuple):
    """A ``data.augment`` mapping split by where it runs in the training collate: ``stretch`` on each whole
    clip before cropping, ``wave`` on the batch of windows after it (None: nothing there)."""

    stretch: ClipStretch | None
    wave: Compose | None


def build_data_augment(spec: Mapping[str, Mapping[str, Any]], sample_rate: int) -> DataAugment:
    """The training collate's augmentations from a ``data.augment`` mapping: its ``time_stretch`` entry
    (``{rate: [0.93, 1.07], p: 0.5}``, also ``n_fft`` and ``hop``) as a :class:`ClipStretch`, the other entries
    as :func:`build_wave_augment` builds them."""
    rest = {k: v for k, v in spec.items() if k != CLIP_STRETCH}
    stretch = None
    if CLIP_STRETCH in spec:
        config, p = _config_and_p(CLIP_STRETCH, TimeStretchConfig, spec[CLIP_STRETCH], sample_rate)
        stretch = ClipStretch(config, p)
    return DataAugment(stretch, build_wave_augment(rest, sample_rate) if rest else None)
