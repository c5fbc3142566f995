"""Synthesis primitives of the synthetic data sets: note events, pitched voices and drum templates.

Every pitched note is a sum of exponentially decaying partials, ``sum_k a_k exp(-r_k t) sin(2 pi f_k t)``
(two-stage decays and detuned copies are extra terms). A note is rendered in blocks of about ``sqrt(length)``
samples with ``exp(s t) = exp(s t_block) * exp(s t_offset)``: the per-note sum over partials becomes one
batched matrix product (``[blocks, 2K] @ [2K, block]``), a BLAS call instead of one ``sin`` per partial and
sample. Voices (:data:`_VOICES`): plucked strings with the Karplus-Strong decay law (high partials die faster,
pluck-position comb), saws (distorted guitars, pads, strings), reeds, organ, sub and electric bass, an FM
electric piano (rendered directly), and a piano with inharmonic partials, two-stage decay and hammer noise.
Drums (:data:`_DRUMS`) are noise and swept-sine templates, drawn fresh per clip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import torch
from torch import Tensor

_CHUNK = 48  # notes rendered per batched matrix product


# ------------------------------------------------------------------------------------------------------ notes


@dataclass(frozen=True)
class _Notes:
    """Note events of one part: onset and gate length in seconds, MIDI pitch, velocity in (0, 1]."""

    onset: np.ndarray
    dur: np.ndarray
    pitch: np.ndarray
    vel: np.ndarray

    def select(self, mask: np.ndarray) -> _Notes:
        return _Notes(self.onset[mask], self.dur[mask], self.pitch[mask], self.vel[mask])

    @staticmethod
    def of(rows: list[tuple[float, float, float, float]]) -> _Notes:
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        return _Notes(a[:, 0], a[:, 1], a[:, 2], a[:, 3])


def _hz(pitch: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _fixed(rng: np.random.Generator, bounds: tuple[float, float]) -> tuple[float, float]:
    """A range collapsed to one value drawn from it (a voice realised for one clip)."""
    v = _uniform(rng, bounds)
    return (v, v)


def _block(length: int) -> int:
    """Block size of the separable oscillators: the power of two nearest ``sqrt(length)`` (at least 32)."""
    return max(32, 1 << round(math.log2(math.sqrt(max(length, 1)))))


def _partial_bank(freqs: Tensor, amps: Tensor, rates: Tensor, length: int, sr: int) -> Tensor:
    """``sum_k amps * exp(-rates * t) * sin(2 pi freqs t)`` per row, ``t = i / sr``, via blocked exponentials.

    Shapes:
        freqs, amps, rates ``[n, K]`` (float64) -> ``[n, length]`` float32.
    """
    block = _block(length)
    n_blocks = -(-length // block)
    t_coarse = torch.arange(n_blocks, dtype=torch.float64) * (block / sr)
    t_fine = torch.arange(block, dtype=torch.float64) / sr

    def osc(t: Tensor, gain: Tensor) -> tuple[Tensor, Tensor]:
        cycles = freqs[..., None] * t
        phase = (2 * math.pi) * (cycles - cycles.floor()).float()  # reduced in float64, evaluated in float32
        mag = torch.exp(-rates[..., None] * t).float() * gain
        return mag * torch.cos(phase), mag * torch.sin(phase)

    c_re, c_im = osc(t_coarse, amps.float()[..., None])
    f_re, f_im = osc(t_fine, torch.ones(()))
    # Im((c_re + i c_im) * (f_re + i f_im)) = c_re * f_im + c_im * f_re, summed over partials by the product.
    out = torch.bmm(torch.cat([c_re, c_im], dim=1).transpose(1, 2), torch.cat([f_im, f_re], dim=1))
    return out.reshape(freqs.shape[0], n_blocks * block)[:, :length]


def _release(off: Tensor, rate: float, length: int, sr: int) -> Tensor:
    """Damping after each note's end: ``min(1, exp(-rate * (t - off)))``.

    Shapes:
        off ``[n]`` seconds -> ``[n, length]``.
    """
    block = _block(length)
    n_blocks = -(-length // block)
    t_coarse = torch.arange(n_blocks, dtype=torch.float64) * (block / sr)
    t_fine = torch.arange(block, dtype=torch.float64) / sr
    coarse = torch.exp((-rate * (t_coarse[None, :] - off[:, None])).clamp(max=60.0)).float()
    env = (coarse[:, :, None] * torch.exp(-rate * t_fine).float()).clamp_(max=1.0)
    return env.reshape(off.shape[0], -1)[:, :length]


def _overlap_add(out: Tensor, starts: np.ndarray, clips: Tensor) -> None:
    """Add ``clips [n, L]`` into ``out`` at sample offsets ``starts``; ``out`` must hold every clip whole."""
    length = clips.shape[1]
    if len(starts) and int(starts.max()) + length > out.shape[0]:
        raise ValueError(
            f"a clip ending at {int(starts.max()) + length} overruns the {out.shape[0]}-sample buffer"
        )
    for start, clip in zip(starts.tolist(), clips):
        out[start : start + length] += clip


@dataclass(frozen=True)
class _Additive:
    """An additive voice: ranges are drawn once per clip (timbre randomness), fixed values hold for all.

    Partial ``k`` (1-based) has frequency ``k f0 sqrt(1 + B k^2)``, amplitude ``k^-slope`` times ``even`` for
    even ``k``, the comb ``|sin(pi k pluck)|``, a 12 dB/octave low-pass at ``cutoff * (1 + vel_bright * (vel -
    0.5))``, and decay rate ``decay * sqrt(f0 / 110) + hf_decay * (f_k / 1 kHz)^2`` (the Karplus-Strong law).
    ``attack`` is the time constant of ``1 - exp(-t / attack)``; ``double_decay`` adds a component 4x faster
    with that weight (a piano's prompt sound); ``detune_cents`` doubles the partials at +-detune (chorus).
    After the note's end (at the latest ``5 / release`` before ``max_seconds``) it dies at ``release`` per
    second.
    """

    partials: int = 12
    slope: tuple[float, float] = (1.0, 1.0)
    even: float = 1.0
    pluck: tuple[float, float] | None = None
    decay: tuple[float, float] = (1.0, 1.0)
    hf_decay: tuple[float, float] = (0.0, 0.0)
    attack: float = 0.0
    double_decay: float = 0.0
    release: float = 20.0
    detune_cents: float = 0.0
    inharmonicity: float = 0.0
    cutoff: tuple[float, float] = (20000.0, 20000.0)
    vel_bright: float = 0.0
    max_seconds: float = 2.0

    def realise(self, rng: np.random.Generator) -> _Additive:
        """This voice with every range collapsed to one value drawn from ``rng``."""
        log_cut = _fixed(rng, (math.log(self.cutoff[0]), math.log(self.cutoff[1])))
        return replace(
            self,
            slope=_fixed(rng, self.slope),
            pluck=None if self.pluck is None else _fixed(rng, self.pluck),
            decay=_fixed(rng, self.decay),
            hf_decay=_fixed(rng, self.hf_decay),
            cutoff=(math.exp(log_cut[0]), math.exp(log_cut[0])),
        )

    def render(self, notes: _Notes, out: Tensor, sr: int) -> None:
        """Add the notes to ``out`` (a realised voice)."""
        f0 = _hz(notes.pitch)
        base = self.decay[0] * np.sqrt(f0 / 110.0)
        ring = np.minimum(self.max_seconds, 7.0 / np.maximum(base, 1e-3))
        off = np.minimum(notes.dur, self.max_seconds - 5.0 / self.release)  # faded out by the cap
        total = np.minimum(off + 5.0 / self.release, ring)
        lengths = np.maximum(1, (total * sr).astype(np.int64))
        order = np.argsort(lengths)
        k = torch.arange(1, self.partials + 1, dtype=torch.float64)
        for chunk in np.array_split(order, -(-len(order) // _CHUNK)) if len(order) else []:
            length = int(lengths[chunk].max())
            p = torch.from_numpy(notes.pitch[chunk])[:, None]
            vel = torch.from_numpy(notes.vel[chunk])[:, None]
            f0_t = 440.0 * 2.0 ** ((p - 69.0) / 12.0)
            bend = torch.sqrt(1.0 + self.inharmonicity * 2.0 ** ((p - 60.0) / 12.0) * k**2)
            freqs = k * f0_t * bend
            amps = k ** -self.slope[0] * torch.where(k % 2 == 0, self.even, 1.0)
            if self.pluck is not None:
                amps = amps * torch.sin(math.pi * k * self.pluck[0]).abs().clamp(min=0.05)
            fc = self.cutoff[0] * (1.0 + self.vel_bright * (vel - 0.5)).clamp(min=0.2)
            amps = amps / (1.0 + (freqs / fc) ** 2) * (freqs < 0.45 * sr)
            amps = amps / amps.square().sum(1, keepdim=True).sqrt().clamp(min=1e-9) * vel
            rates = self.decay[0] * torch.sqrt(f0_t / 110.0) + self.hf_decay[0] * (freqs / 1000.0) ** 2
            freqs, amps, rates = self._terms(freqs, amps, rates)
            clip = _partial_bank(freqs, amps, rates, length, sr)
            clip *= _release(torch.from_numpy(off[chunk]), self.release, length, sr)
            if self.attack:
                clip *= 1.0 - torch.exp(torch.arange(length) / (-self.attack * sr))
            _overlap_add(out, (notes.onset[chunk] * sr).astype(np.int64), clip)

    def _terms(self, freqs: Tensor, amps: Tensor, rates: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Expand partials into exponential terms: detuned copies and the fast decay component."""
        if self.detune_cents:
            d = 2.0 ** (self.detune_cents / 1200.0)
            freqs, amps, rates = (
                torch.cat([freqs * d, freqs / d], 1),
                torch.cat([amps, amps], 1) / 2,
                rates.repeat(1, 2),
            )
        if self.double_decay:
            w = self.double_decay
            freqs, rates = freqs.repeat(1, 2), torch.cat([rates * 4.0, rates], 1)
            amps = torch.cat([amps * w, amps * (1 - w)], 1)
        return freqs, amps, rates


@dataclass(frozen=True)
class _FM:
    """Two-operator FM voice.

    A note is ``exp(-decay t) sin(2 pi f0 t + vel * index * exp(-index_decay t) sin(2 pi ratio f0 t))``.
    """

    ratio: tuple[float, float] = (1.0, 1.0)
    index: tuple[float, float] = (1.0, 2.5)
    index_decay: tuple[float, float] = (3.0, 8.0)
    decay: tuple[float, float] = (1.0, 2.5)
    release: float = 14.0
    max_seconds: float = 1.5

    def realise(self, rng: np.random.Generator) -> _FM:
        return replace(
            self,
            ratio=_fixed(rng, self.ratio),
            index=_fixed(rng, self.index),
            index_decay=_fixed(rng, self.index_decay),
            decay=_fixed(rng, self.decay),
        )

    def render(self, notes: _Notes, out: Tensor, sr: int) -> None:
        """Add the notes to ``out`` (a realised voice)."""
        off = np.minimum(notes.dur, self.max_seconds - 5.0 / self.release)
        total = off + 5.0 / self.release
        length = max(1, int(total.max() * sr)) if len(total) else 0
        for chunk in np.array_split(np.arange(len(total)), -(-len(total) // _CHUNK)) if length else []:
            t = torch.arange(length, dtype=torch.float32) / sr
            f0 = torch.from_numpy(_hz(notes.pitch[chunk])).float()[:, None]
            vel = torch.from_numpy(notes.vel[chunk]).float()[:, None]
            mod = (
                vel
                * self.index[0]
                * torch.exp(-self.index_decay[0] * t)
                * torch.sin(2 * math.pi * self.ratio[0] * f0 * t)
            )
            clip = 0.5 * vel * torch.exp(-self.decay[0] * t) * torch.sin(2 * math.pi * f0 * t + mod)
            clip *= _release(torch.from_numpy(off[chunk]), self.release, length, sr)
            _overlap_add(out, (notes.onset[chunk] * sr).astype(np.int64), clip)


# fmt: off
_VOICES: Mapping[str, _Additive | _FM] = MappingProxyType({
    "pluck": _Additive(20, (0.8, 1.2), pluck=(0.1, 0.3), decay=(1.5, 3.0), hf_decay=(0.5, 2.0), release=12,
                       cutoff=(3000, 9000), vel_bright=0.8, max_seconds=1.5),
    "twang": _Additive(24, (0.6, 0.9), pluck=(0.05, 0.12), decay=(2.0, 4.0), hf_decay=(0.2, 0.8), release=15,
                       cutoff=(6000, 12000), vel_bright=0.5, max_seconds=1.2),
    "bass": _Additive(10, (1.2, 1.8), pluck=(0.15, 0.3), decay=(1.0, 2.5), hf_decay=(2.0, 6.0), release=18,
                      cutoff=(600, 1800), max_seconds=1.2),
    "sub": _Additive(3, (2.5, 3.5), decay=(0.8, 2.0), release=10, attack=0.004, max_seconds=1.5),
    "saw": _Additive(28, (1.0, 1.0), decay=(0.3, 1.0), attack=0.004, release=20, detune_cents=8,
                     cutoff=(2000, 6000), max_seconds=1.5),
    "pad": _Additive(14, (1.0, 1.3), decay=(0.05, 0.2), attack=0.15, release=4, detune_cents=12,
                     cutoff=(1200, 3500), max_seconds=3.0),
    "strings": _Additive(16, (0.9, 1.2), decay=(0.0, 0.1), attack=0.25, release=5, detune_cents=6,
                         cutoff=(2000, 5000), max_seconds=3.0),
    "organ": _Additive(8, (0.5, 1.0), decay=(0.0, 0.0), attack=0.005, release=25, cutoff=(3000, 8000)),
    "reed": _Additive(16, (0.9, 1.3), even=0.3, decay=(0.2, 0.6), attack=0.02, release=25,
                      cutoff=(1500, 4000), max_seconds=1.5),
    "lead": _Additive(16, (1.0, 1.0), even=0.1, decay=(0.5, 1.5), attack=0.005, release=20,
                      cutoff=(2000, 6000), max_seconds=1.5),
    "piano": _Additive(18, (1.2, 1.8), pluck=(0.11, 0.14), decay=(0.4, 0.8), hf_decay=(0.2, 0.5), release=25,
                       inharmonicity=3e-4, double_decay=0.6, cutoff=(1500, 5000), vel_bright=1.0,
                       max_seconds=2.5),
    "epiano": _FM((1.0, 1.0), (1.0, 2.5), (3.0, 8.0), (0.8, 2.0)),
    "bell": _FM((1.4, 3.5), (1.5, 3.0), (2.0, 5.0), (1.5, 3.0), release=10),
})
# fmt: on


# ------------------------------------------------------------------------------------------------------ drums


def _noise(rng: np.random.Generator, n: int) -> Tensor:
    return torch.from_numpy(rng.standard_normal(n, dtype=np.float32))


def _band(x: Tensor, sr: int, lo: float, hi: float) -> Tensor:
    """Zero-phase 24 dB/octave band-pass in the FFT domain."""
    f = torch.fft.rfftfreq(x.shape[-1], 1.0 / sr, dtype=torch.float64).clamp(min=1e-3)
    gain = 1.0 / (1.0 + (lo / f) ** 4) / (1.0 + (f / hi) ** 4)
    return torch.fft.irfft(torch.fft.rfft(x) * gain, n=x.shape[-1])


def _decay(sr: int, seconds: float, tau: float) -> Tensor:
    return torch.exp(-torch.arange(int(seconds * sr), dtype=torch.float64) / sr / tau)


def _kick(rng: np.random.Generator, sr: int) -> Tensor:
    t = torch.arange(int(0.4 * sr), dtype=torch.float64) / sr
    hi, lo, tau = _uniform(rng, (110, 190)), _uniform(rng, (42, 62)), _uniform(rng, (0.02, 0.05))
    phase = 2 * math.pi * (lo * t + (hi - lo) * tau * (1 - torch.exp(-t / tau)))
    click = _band(_noise(rng, len(t)), sr, 1000, 6000) * torch.exp(-t / 0.003) * 0.3
    return torch.sin(phase) * torch.exp(-t / _uniform(rng, (0.12, 0.3))) + click


def _snare(rng: np.random.Generator, sr: int) -> Tensor:
    env = _decay(sr, 0.3, _uniform(rng, (0.06, 0.16)))
    t = torch.arange(len(env), dtype=torch.float64) / sr
    tone = torch.sin(2 * math.pi * _uniform(rng, (170, 240)) * t) * torch.exp(-t / 0.04)
    noise = _band(_noise(rng, len(env)), sr, _uniform(rng, (800, 2000)), _uniform(rng, (6000, 10000)))
    return 0.5 * tone + 2.0 * noise * env


def _clap(rng: np.random.Generator, sr: int) -> Tensor:
    n = int(0.25 * sr)
    env = torch.zeros(n, dtype=torch.float64)
    for i in range(4):
        start = int(i * 0.011 * sr)
        env[start:] += _decay(sr, 0.25, 0.008 if i < 3 else 0.06)[: n - start]
    return 2.0 * _band(_noise(rng, n), sr, 900, _uniform(rng, (2500, 4000))) * env


def _hat(
    rng: np.random.Generator, sr: int, tau: tuple[float, float] = (0.02, 0.05), seconds: float = 0.15
) -> Tensor:
    env = _decay(sr, seconds, _uniform(rng, tau))
    return 3.0 * _band(_noise(rng, len(env)), sr, _uniform(rng, (6000, 9000)), 16000) * env


def _open_hat(rng: np.random.Generator, sr: int) -> Tensor:
    return _hat(rng, sr, (0.15, 0.3), 0.6)


def _ride(rng: np.random.Generator, sr: int) -> Tensor:
    env = _decay(sr, 1.0, _uniform(rng, (0.4, 0.8)))
    t = torch.arange(len(env), dtype=torch.float64) / sr
    freqs = torch.from_numpy(rng.uniform(400, 5000, 8))[:, None]
    bell = torch.sin(2 * math.pi * freqs * t + torch.from_numpy(rng.uniform(0, 6.3, 8))[:, None]).sum(0) / 8
    return (0.4 * bell + _band(_noise(rng, len(env)), sr, 4000, 14000)) * env


def _rim(rng: np.random.Generator, sr: int) -> Tensor:
    env = _decay(sr, 0.06, 0.008)
    t = torch.arange(len(env), dtype=torch.float64) / sr
    return (torch.sin(2 * math.pi * _uniform(rng, (800, 1700)) * t) + 0.5 * _noise(rng, len(env))) * env


def _shaker(rng: np.random.Generator, sr: int) -> Tensor:
    env = _decay(sr, 0.12, 0.03) * (1 - _decay(sr, 0.12, 0.008))
    return 3.0 * _band(_noise(rng, len(env)), sr, 4000, 11000) * env


def _brush(rng: np.random.Generator, sr: int) -> Tensor:
    env = _decay(sr, 0.3, 0.09) * (1 - _decay(sr, 0.3, 0.02))
    return 2.0 * _band(_noise(rng, len(env)), sr, 1500, 7000) * env


# name -> (template maker, peak level in the kit)
_DRUMS = MappingProxyType(
    {
        "kick": (_kick, 1.0),
        "snare": (_snare, 0.7),
        "clap": (_clap, 0.6),
        "hat": (_hat, 0.3),
        "ohat": (_open_hat, 0.3),
        "ride": (_ride, 0.3),
        "rim": (_rim, 0.4),
        "shaker": (_shaker, 0.25),
        "brush": (_brush, 0.4),
    }
)


def _check_length(seconds: float, sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 8000:
        raise ValueError(f"sample_rate must be an int >= 8000 Hz, got {sample_rate!r}")
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    return int(round(seconds * sample_rate))
