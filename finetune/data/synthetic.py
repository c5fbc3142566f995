"""Procedurally generated data sets for demos, tests and benchmarks: ten genre-like styles and piano
performances with PercePiano-style ratings. No files, no network; deterministic from a seed.

Synthesis. Every pitched note is a sum of exponentially decaying partials, ``sum_k a_k exp(-r_k t) sin(2 pi
f_k t)`` (two-stage decays and detuned copies are extra terms). A note is rendered in blocks of about
``sqrt(length)`` samples with ``exp(s t) = exp(s t_block) * exp(s t_offset)``: the per-note sum over partials
becomes one batched matrix product (``[blocks, 2K] @ [2K, block]``), a BLAS call instead of one ``sin`` per
partial and sample. Voices: plucked strings with the Karplus-Strong decay law (high partials die faster,
pluck-position comb), saws (distorted guitars, pads, strings), reeds, organ, sub and electric bass, an FM
electric piano (rendered directly), and a piano with inharmonic partials, two-stage decay and hammer noise;
drums are noise and swept-sine templates.

Styles (``GENRES``, named like GTZAN's) differ in tempo range, meter, step patterns for drums, bass, comping
and lead, swing, chord progressions and modes, instrumentation and distortion. Per clip, tempo, key, timbre
parameters, mix balance, a master EQ (high-/low-pass), room reverb, a noise floor and the loudness (-30 to -12
dBFS RMS) are drawn at random, so that loudness, spectral centroid or tempo alone do not identify a style
(``python -m eval.synthetic_baselines`` measures how far global statistics get).

Storage. ``audio`` is a ``List(float32)`` column built directly as an Arrow array (``from_dict`` on numpy
arrays is ~40x slower); the data sets come formatted as ``numpy``, so ``ds[i]["audio"]`` is a float32
``np.ndarray``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from heads.rating import PERCEPIANO_DIMENSIONS

__all__ = [
    "GENRES",
    "GENRE_STYLES",
    "PERCEPIANO_DIMENSIONS",
    "GenreStyle",
    "Part",
    "PianoPerformance",
    "Segment",
    "piano_ratings",
    "render_genre_clip",
    "render_piano_clip",
    "sample_piano_performance",
    "synthetic_genres",
    "synthetic_genres_splits",
    "synthetic_piano",
    "synthetic_radio",
]

_CHUNK = 48  # notes rendered per batched matrix product
# Step-pattern characters -> velocity; "." is a rest, "?" plays half the time.
_VELOCITY = MappingProxyType({"X": 1.0, "x": 0.78, "o": 0.45, "?": 0.7})


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


# ----------------------------------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class Part:
    """One pitched part of a style.

    Attributes:
        voice: Key of the voice (timbre) table.
        rule: How pitches are chosen: ``block``/``power`` chords, ``arp``eggio, ``root``, ``root_fifth``,
            ``octave``, ``walk`` (walking bass), ``boogie``, ``melody``.
        patterns: Step patterns cycled over the clip (one picked per clip). ``X`` accent, ``x`` note, ``o``
            ghost, ``?`` note with probability 1/2, ``.`` rest.
        register: MIDI note at the bottom of the part's range.
        gate: Range of note length as a fraction of the time to the part's next note.
        level_db: Mix level (RMS, dB) before the per-clip balance jitter.
        prob: Probability that the part plays in a clip.
        drive: Range of ``tanh`` distortion drive (0: clean).
    """

    voice: str
    rule: str
    patterns: tuple[str, ...]
    register: int
    gate: tuple[float, float] = (0.8, 1.0)
    level_db: float = 0.0
    prob: float = 1.0
    drive: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class GenreStyle:
    """A procedural style: timing, harmony, drums and parts. See :data:`GENRE_STYLES`.

    Attributes:
        tempo: BPM range. meter: beats per bar. steps_per_beat: grid resolution (3: triplets).
        swing: Range of the position of the off-beat 8th within the beat (0.5: straight).
        drift: Std of the per-beat log-tempo random walk (rubato).
        scales: Modes for melodies (keys of the scale table).
        progressions: Chord sequences of ``(semitones above the key, quality)``; ``chords_per_bar`` per bar.
        drums: Variants (one per clip) mapping drum names to step patterns.
        parts: The pitched parts.
        drum_level_db: Mix level of the drum kit.
    """

    tempo: tuple[float, float]
    meter: int
    steps_per_beat: int
    swing: tuple[float, float]
    drift: float
    scales: tuple[str, ...]
    progressions: tuple[tuple[tuple[int, str], ...], ...]
    chords_per_bar: int
    drums: tuple[Mapping[str, str], ...]
    parts: tuple[Part, ...]
    drum_level_db: float = 0.0


_SCALES = MappingProxyType(
    {
        "major": (0, 2, 4, 5, 7, 9, 11),
        "minor": (0, 2, 3, 5, 7, 8, 10),
        "dorian": (0, 2, 3, 5, 7, 9, 10),
        "mixolydian": (0, 2, 4, 5, 7, 9, 10),
        "phrygian": (0, 1, 3, 5, 7, 8, 10),
        "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
        "major_pent": (0, 2, 4, 7, 9),
        "minor_pent": (0, 3, 5, 7, 10),
        "blues": (0, 3, 5, 6, 7, 10),
    }
)
_CHORDS = MappingProxyType(
    {
        "maj": (0, 4, 7),
        "min": (0, 3, 7),
        "dom7": (0, 4, 7, 10),
        "min7": (0, 3, 7, 10),
        "maj7": (0, 4, 7, 11),
        "min9": (0, 3, 7, 10, 14),
        "dom9": (0, 4, 7, 10, 14),
        "dim": (0, 3, 6),
        "sus4": (0, 5, 7),
        "pow": (0, 7),
    }
)

# fmt: off
_BLUES_12 = (((0, "dom7"),) * 4 + ((5, "dom7"),) * 2 + ((0, "dom7"),) * 2
             + ((7, "dom7"), (5, "dom7"), (0, "dom7"), (7, "dom7")))
_QUICK_12 = ((0, "dom7"), (5, "dom7"), (0, "dom7"), (0, "dom7")) + _BLUES_12[4:]

GENRE_STYLES: Mapping[str, GenreStyle] = MappingProxyType({
    "blues": GenreStyle(
        tempo=(60, 112), meter=4, steps_per_beat=3, swing=(0.5, 0.5), drift=0.006,
        scales=("blues", "minor_pent"), progressions=(_BLUES_12, _QUICK_12), chords_per_bar=1,
        drums=({"kick": "x.....x.....", "snare": "...x.....x..", "hat": "x.xx.xx.xx.x"},
               {"kick": "x..x..x..x..", "snare": "...X.....X..", "ride": "x.xx.xx.xx.x"}),
        parts=(Part("bass", "boogie", ("x.xx.xx.xx.x", "x..x..x..x.."), 36, (0.6, 0.9), -2),
               Part("pluck", "block", ("x.xx.xx.xx.x", "...x.....x.."), 52, (0.3, 0.7), -5, drive=(1.0, 3.0)),
               Part("reed", "melody", ("x.?x.?..?x.?", "?..x.?x..?.x"), 62, (0.6, 1.0), -4, prob=0.7))),
    "classical": GenreStyle(
        tempo=(56, 132), meter=3, steps_per_beat=4, swing=(0.5, 0.5), drift=0.035,
        scales=("major", "harmonic_minor"),
        progressions=(((0, "maj"), (5, "maj"), (7, "dom7"), (0, "maj")),
                      ((0, "min"), (5, "min"), (7, "dom7"), (0, "min"), (8, "maj"), (2, "dim"), (7, "dom7"),
                       (0, "min")),
                      ((0, "maj"), (9, "min"), (2, "min"), (7, "dom7"))),
        chords_per_bar=1, drums=(),
        parts=(Part("piano", "arp", ("x.x.x.x.x.x.", "xxxxxxxxxxxx", "x...x...x..."), 48, (0.8, 1.0), -3),
               Part("strings", "block", ("x...........",), 55, (1.0, 1.0), -6, prob=0.7),
               Part("strings", "root", ("x.......x...",), 36, (1.0, 1.0), -8, prob=0.6),
               Part("piano", "melody", ("x...x...x...", "x.x.x...x.x.", "x.......x.x."), 67, (0.7, 1.0),
                    -3))),
    "country": GenreStyle(
        tempo=(92, 140), meter=4, steps_per_beat=4, swing=(0.5, 0.56), drift=0.004,
        scales=("major_pent", "major"),
        progressions=(((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")),
                      ((0, "maj"), (0, "maj"), (7, "dom7"), (0, "maj"))),
        chords_per_bar=1,
        drums=({"kick": "x.......x.......", "brush": "....x.......x...", "shaker": "x.x.x.x.x.x.x.x."},
               {"kick": "x.......x.......", "snare": "....x.......x...", "hat": "xxxxxxxxxxxxxxxx"}),
        parts=(Part("bass", "root_fifth", ("x.......x.......",), 36, (0.4, 0.7), -2),
               Part("pluck", "block", ("....x.......x...", "..x.x.x...x.x.x."), 55, (0.2, 0.4), -5),
               Part("twang", "melody", ("x.x.?.x.x.?.x...", "x.?.x.x.?.x.x.x."), 64, (0.5, 0.9), -5,
                    prob=0.8))),
    "disco": GenreStyle(
        tempo=(108, 132), meter=4, steps_per_beat=4, swing=(0.5, 0.52), drift=0.0,
        scales=("dorian", "minor"),
        progressions=(((0, "min7"), (5, "min7")), ((0, "min7"), (3, "maj7"), (5, "min7"), (7, "min7"))),
        chords_per_bar=1, drum_level_db=1.0,
        drums=({"kick": "x...x...x...x...", "ohat": "..x...x...x...x.", "hat": "x.x.x.x.x.x.x.x.",
                "clap": "....x.......x..."},
               {"kick": "x...x...x...x...", "ohat": "..x...x...x...x.", "snare": "....x.......x..."}),
        parts=(Part("bass", "octave", ("x.x.x.x.x.x.x.x.",), 36, (0.4, 0.7), -2),
               Part("epiano", "block", ("..x..x....x..x..", "x..x..x..x..x.x."), 55, (0.2, 0.5), -6),
               Part("strings", "block", ("x...............",), 62, (1.0, 1.0), -9, prob=0.6),
               Part("bell", "melody", ("x.x.?.x.?.x.x.?.",), 72, (0.4, 0.8), -9, prob=0.5))),
    "hiphop": GenreStyle(
        tempo=(78, 100), meter=4, steps_per_beat=4, swing=(0.54, 0.66), drift=0.0,
        scales=("minor", "dorian", "minor_pent"),
        progressions=(((0, "min7"), (8, "maj7")), ((0, "min9"), (5, "min7")), ((0, "min7"), (10, "dom7"))),
        chords_per_bar=1, drum_level_db=2.0,
        drums=({"kick": "X......x..x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "X.....x...x..x..", "clap": "....X.......X...", "hat": "x.xox.xox.xox.xo"},
               {"kick": "X..x......X.....", "snare": "....X.......X..o", "hat": "xxxxxxxxxxxxxxxx"}),
        parts=(Part("sub", "root", ("x......x..x.....", "x.........x....."), 29, (0.8, 1.0), 0),
               Part("epiano", "block", ("x.......x.......", "x.....x........."), 57, (0.8, 1.0), -7),
               Part("pad", "block", ("x...............",), 55, (1.0, 1.0), -10, prob=0.5),
               Part("bell", "melody", ("x...?...x...?...",), 72, (0.5, 0.9), -10, prob=0.4))),
    "jazz": GenreStyle(
        tempo=(100, 200), meter=4, steps_per_beat=3, swing=(0.5, 0.5), drift=0.005,
        scales=("dorian", "mixolydian", "major"),
        progressions=(((2, "min7"), (7, "dom9"), (0, "maj7"), (0, "maj7")),
                      ((2, "min7"), (7, "dom7"), (0, "maj7"), (9, "dom7")),
                      ((0, "min7"), (5, "dom7"), (10, "maj7"), (3, "maj7"))),
        chords_per_bar=1,
        drums=({"ride": "x..x.xx..x.x", "hat": "...x.....x..", "kick": "x.....?....."},
               {"ride": "x..x.xx..x.x", "hat": "...x.....x..", "snare": "..o.....o..?"}),
        parts=(Part("bass", "walk", ("x..x..x..x..",), 33, (0.8, 1.0), -2),
               Part("epiano", "block", ("..x.....x...", "x....x...?..", ".....x..x..."), 53, (0.3, 0.7), -6),
               Part("reed", "melody", ("x.xx.xx.?x.x", "x.?x.x?.xx.?"), 62, (0.6, 1.0), -4, prob=0.8))),
    "metal": GenreStyle(
        tempo=(96, 176), meter=4, steps_per_beat=4, swing=(0.5, 0.5), drift=0.0,
        scales=("phrygian", "minor", "harmonic_minor"),
        progressions=(((0, "pow"), (1, "pow"), (0, "pow"), (8, "pow")),
                      ((0, "pow"), (10, "pow"), (8, "pow"), (7, "pow"))),
        chords_per_bar=2, drum_level_db=1.0,
        drums=({"kick": "xxxxxxxxxxxxxxxx", "snare": "....X.......X...", "ride": "x.x.x.x.x.x.x.x."},
               {"kick": "x.x.xx.xx.x.xx.x", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "x.x.x.x.x.x.x.x.", "snare": "..x...x...x...x.", "ride": "x...x...x...x..."}),
        parts=(Part("saw", "power", ("x.x.xx.xx.x.xx.x", "xxxxxxxxxxxxxxxx", "x..x..x.x..x..x."), 40,
                    (0.3, 0.6), 0, drive=(6.0, 14.0)),
               Part("bass", "root", ("x.x.x.x.x.x.x.x.",), 28, (0.5, 0.8), -4, drive=(1.0, 3.0)))),
    "pop": GenreStyle(
        tempo=(92, 126), meter=4, steps_per_beat=4, swing=(0.5, 0.53), drift=0.0,
        scales=("major_pent", "major"),
        progressions=(((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
                      ((9, "min"), (5, "maj"), (0, "maj"), (7, "maj")),
                      ((0, "maj"), (5, "maj"), (9, "min"), (7, "sus4"))),
        chords_per_bar=1,
        drums=({"kick": "x.....x.x.......", "clap": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "x.......x.x.....", "snare": "....x.......x...", "shaker": "xxxxxxxxxxxxxxxx"}),
        parts=(Part("bass", "root", ("x.....x.x.....x.", "x.x.x.x.x.x.x.x."), 36, (0.5, 0.9), -2),
               Part("pad", "block", ("x.......x.......",), 55, (1.0, 1.0), -7),
               Part("pluck", "arp", ("x.x.x.x.x.x.x.x.", "x..x..x.x..x..x."), 60, (0.4, 0.8), -8, prob=0.6),
               Part("lead", "melody", ("x.x.x...x.?.x...", "..x.x.x.x...x.x."), 67, (0.6, 0.9), -5,
                    prob=0.8))),
    "reggae": GenreStyle(
        tempo=(64, 92), meter=4, steps_per_beat=4, swing=(0.5, 0.6), drift=0.0,
        scales=("minor", "major", "dorian"),
        progressions=(((0, "min"), (5, "min")), ((0, "maj"), (5, "maj")), ((0, "min"), (10, "maj"))),
        chords_per_bar=1,
        drums=({"kick": "........x.......", "rim": "........x.......", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "x.......x.......", "snare": "........x.......", "hat": "..x...x...x...x."}),
        parts=(Part("bass", "root_fifth", ("x..x....x.x.....", "x.....x.x......."), 33, (0.6, 0.9), 0),
               Part("pluck", "block", ("....x.......x...", "..x...x...x...x."), 57, (0.1, 0.25), -4),
               Part("organ", "block", ("..xx..xx..xx..xx",), 55, (0.2, 0.4), -9, prob=0.6),
               Part("reed", "melody", ("x...x.?.....x.?.",), 64, (0.6, 1.0), -8, prob=0.4))),
    "rock": GenreStyle(
        tempo=(100, 152), meter=4, steps_per_beat=4, swing=(0.5, 0.52), drift=0.003,
        scales=("minor_pent", "mixolydian", "major"),
        progressions=(((0, "pow"), (5, "pow"), (7, "pow"), (5, "pow")),
                      ((0, "pow"), (10, "pow"), (5, "pow"), (0, "pow")),
                      ((0, "maj"), (7, "maj"), (5, "maj"), (5, "maj"))),
        chords_per_bar=1,
        drums=({"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "x.....x.x.......", "snare": "....x.......x...", "ride": "x.x.x.x.x.x.x.x."}),
        parts=(Part("saw", "power", ("x.x.x.x.x.x.x.x.", "x.......x.......", "x..x..x.x..x..x."), 43,
                    (0.6, 0.95), 0, drive=(2.0, 6.0)),
               Part("bass", "root", ("x.x.x.x.x.x.x.x.",), 33, (0.6, 0.9), -3),
               Part("lead", "melody", ("x.x.?.x.x.?.x...",), 64, (0.6, 1.0), -6, prob=0.4,
                    drive=(1.0, 3.0)))),
})
# fmt: on
GENRES: tuple[str, ...] = tuple(GENRE_STYLES)


# ----------------------------------------------------------------------------------------------------- timing


def _beat_grid(n_beats: int, tempo: float, drift: float, rng: np.random.Generator) -> np.ndarray:
    """Beat boundaries in seconds ``[n_beats + 1]`` with a smoothed log-tempo random walk of std ``drift``."""
    walk = np.cumsum(rng.normal(0.0, drift, n_beats))
    walk = np.convolve(walk, np.ones(3) / 3, mode="same") - walk.mean()
    return np.concatenate([[0.0], np.cumsum(60.0 / tempo * np.exp(walk))])


def _step_times(beats: np.ndarray, steps_per_beat: int, swing: float) -> np.ndarray:
    """Onset of every grid step; with swing the off-beat 8th sits at ``swing`` of the beat (others follow)."""
    x = np.arange(steps_per_beat) / steps_per_beat
    if swing != 0.5 and steps_per_beat % 2 == 0:
        x = np.where(x < 0.5, x / 0.5 * swing, swing + (x - 0.5) / 0.5 * (1 - swing))
    return (beats[:-1, None] + np.diff(beats)[:, None] * x[None, :]).reshape(-1)


def _hits(pattern: str, n_steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Step indices and velocities of ``pattern`` cycled over ``n_steps`` steps."""
    chars = np.array(list(pattern))[np.arange(n_steps) % len(pattern)]
    on = np.isin(chars, list(_VELOCITY)) & ((chars != "?") | (rng.random(n_steps) < 0.5))
    steps = np.flatnonzero(on)
    vel = np.array([_VELOCITY[c] for c in chars[steps]]) + rng.normal(0, 0.06, len(steps))
    return steps, np.clip(vel, 0.1, 1.0)


# ---------------------------------------------------------------------------------------------------- pitches


def _voicing(root_pc: int, quality: str, register: int) -> list[int]:
    """Closed voicing of a chord: each chord tone at or above ``register``."""
    lowest = register + (root_pc - register) % 12
    return [lowest + iv for iv in _CHORDS[quality]]


@dataclass
class _Harmony:
    """What a pitch rule sees at hit ``i``.

    The chord at each hit (root pitch class, quality), the next chord's root, whether the hit is the first of
    its chord, the scale, and the melody's running scale degree.
    """

    register: int
    roots: np.ndarray
    qualities: list[str]
    next_roots: np.ndarray
    first: np.ndarray
    scale: np.ndarray
    rng: np.random.Generator
    degree: int = 0

    def base(self, i: int) -> int:
        return self.register + (int(self.roots[i]) - self.register) % 12

    def chord(self, i: int) -> list[int]:
        return _voicing(int(self.roots[i]), self.qualities[i], self.register)


def _arp(h: _Harmony, i: int) -> list[int]:
    tones = h.chord(i) + [p + 12 for p in h.chord(i)]
    return [tones[(0, 2, 1, 3, 2, 4, 1, 3)[i % 8] % len(tones)]]


def _walk(h: _Harmony, i: int) -> list[int]:
    """Walking bass: root, third, fifth; a chromatic approach to the next chord's root before a change."""
    if i + 1 < len(h.first) and h.first[i + 1]:
        nxt = h.register + (int(h.next_roots[i]) - h.register) % 12
        return [nxt + int(h.rng.choice([-1, 1]))]
    chord = h.chord(i)
    return [h.base(i) + (0, chord[1] - chord[0], 7)[i % 3]]


def _melody(h: _Harmony, i: int) -> list[int]:
    """Random walk over the scale; the first note under a new chord moves to the nearest chord tone."""
    h.degree = int(np.clip(h.degree + h.rng.choice([-2, -1, -1, 0, 1, 1, 2]), -3, 9))
    n = len(h.scale)
    pitch = h.register + int(h.scale[h.degree % n]) + 12 * (h.degree // n)
    if h.first[i]:
        candidates = [c + 12 * round((pitch - c) / 12) for c in h.chord(i)]
        pitch = min(candidates, key=lambda c: abs(c - pitch))
    return [pitch]


# name -> pitches of hit i
_RULES: Mapping[str, Callable[[_Harmony, int], list[int]]] = MappingProxyType(
    {
        "block": lambda h, i: h.chord(i),
        "power": lambda h, i: [h.base(i), h.base(i) + 7, h.base(i) + 12],
        "arp": _arp,
        "root": lambda h, i: [h.base(i)],
        "root_fifth": lambda h, i: [h.base(i) + (7 if i % 2 else 0)],
        "octave": lambda h, i: [h.base(i) + (12 if i % 2 else 0)],
        "boogie": lambda h, i: [h.base(i) + (0, 4, 7, 9, 10, 9, 7, 4)[i % 8]],
        "walk": _walk,
        "melody": _melody,
    }
)


# ----------------------------------------------------------------------------------------------------- a clip


def _resolve_style(style: str | GenreStyle) -> GenreStyle:
    if isinstance(style, GenreStyle):
        return style
    if style not in GENRE_STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(GENRES)} or a GenreStyle")
    return GENRE_STYLES[style]


def _check_length(seconds: float, sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 8000:
        raise ValueError(f"sample_rate must be an int >= 8000 Hz, got {sample_rate!r}")
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    return int(round(seconds * sample_rate))


def _drive(x: Tensor, drive: float) -> Tensor:
    if drive <= 0:
        return x
    x = x / x.abs().max().clamp(min=1e-9)
    return torch.tanh(drive * x) / math.tanh(drive)


def _set_rms(x: Tensor, db: float) -> Tensor:
    rms = x.square().mean().sqrt()
    return x * (10 ** (db / 20) / rms) if rms > 1e-9 else x


@dataclass(frozen=True)
class _Grid:
    """A clip's timeline: step onsets (s), the chord index at each step, key, scale and register shift."""

    times: np.ndarray
    step_chord: np.ndarray
    progression: tuple[tuple[int, str], ...]
    key: int
    scale: np.ndarray
    shift: float
    beat_seconds: float


def _render_part(
    part: Part, grid: _Grid, seconds: float, n: int, sr: int, rng: np.random.Generator
) -> Tensor | None:
    """One pitched part as a track at its mix level, or None when it does not play in this clip."""
    if rng.random() >= part.prob:
        return None
    steps, vel = _hits(part.patterns[rng.integers(len(part.patterns))], len(grid.times), rng)
    if len(steps) == 0:
        return None
    prog, idx = grid.progression, grid.step_chord[steps]
    roots = np.array([(grid.key + prog[c][0]) % 12 for c in idx])
    next_roots = np.array([(grid.key + prog[(c + 1) % len(prog)][0]) % 12 for c in idx])
    first = np.r_[True, idx[1:] != idx[:-1]]
    harmony = _Harmony(part.register, roots, [prog[c][1] for c in idx], next_roots, first, grid.scale, rng)
    pitch_lists = [_RULES[part.rule](harmony, i) for i in range(len(steps))]
    gaps = np.diff(np.r_[grid.times[steps], grid.times[steps[-1]] + grid.beat_seconds])
    dur = gaps * _uniform(rng, part.gate)
    onsets = np.maximum(0.0, grid.times[steps] + rng.normal(0, 0.004, len(steps)))
    rows = [(o, d, p + grid.shift, v) for o, d, ps, v in zip(onsets, dur, pitch_lists, vel) for p in ps]
    notes = _Notes.of(rows)
    track = torch.zeros(n + int(4.0 * sr))  # room for the last notes' tails
    _VOICES[part.voice].realise(rng).render(notes.select(notes.onset < seconds), track, sr)
    track = _drive(track[:n], _uniform(rng, part.drive))
    return _set_rms(track, part.level_db + rng.uniform(-4, 4))


def _render_drums(
    kit: Mapping[str, str],
    level_db: float,
    grid: _Grid,
    seconds: float,
    n: int,
    sr: int,
    rng: np.random.Generator,
) -> Tensor:
    """The drum track: per drum a template (fresh per clip), hits from its pattern, 4 % of hits dropped."""
    track = torch.zeros(n + sr)
    for name, pattern in kit.items():
        make, peak = _DRUMS[name]
        template = make(rng, sr).float()
        template = template / template.abs().max() * peak * 10 ** (rng.uniform(-4, 4) / 20)
        steps, vel = _hits(pattern, len(grid.times), rng)
        onsets = np.maximum(0.0, grid.times[steps] + rng.normal(0, 0.003, len(steps)))
        keep = (rng.random(len(steps)) > 0.04) & (onsets < seconds)
        hits = torch.from_numpy(vel[keep]).float()[:, None] * template
        _overlap_add(track, (onsets[keep] * sr).astype(np.int64), hits)
    return _set_rms(track[:n], level_db + rng.uniform(-4, 4))


def render_genre_clip(
    style: str | GenreStyle, seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Render one clip of a style.

    Args:
        style: A name from :data:`GENRES` or a :class:`GenreStyle`.
        seconds: Duration.
        sample_rate: Output rate in Hz (timbres do not depend on it, apart from the band limit).
        rng: Source of every random choice; the same state gives the same clip.

    Returns:
        Mono float32 waveform in [-1, 1].

    Shapes:
        -> ``[round(seconds * sample_rate)]``.
    """
    st = _resolve_style(style)
    n = _check_length(seconds, sample_rate)
    tempo = _uniform(rng, st.tempo)
    n_beats = int(seconds * tempo / 60.0 * 1.2) + st.meter + 1
    n_beats += -n_beats % st.meter
    beats = _beat_grid(n_beats, tempo, st.drift, rng)
    times = _step_times(beats, st.steps_per_beat, _uniform(rng, st.swing))
    key = int(rng.integers(12))
    scale = np.array(_SCALES[st.scales[rng.integers(len(st.scales))]])
    prog = st.progressions[rng.integers(len(st.progressions))]
    bar_steps = st.meter * st.steps_per_beat
    step_chord = (rng.integers(len(prog)) + np.arange(len(times)) * st.chords_per_bar // bar_steps) % len(
        prog
    )
    shift = float(rng.integers(-2, 3))  # register jitter in semitones
    grid = _Grid(times, step_chord, prog, key, scale, shift, 60.0 / tempo)
    tracks = [_render_part(part, grid, seconds, n, sample_rate, rng) for part in st.parts]
    tracks = [t for t in tracks if t is not None]
    if st.drums:
        kit = st.drums[rng.integers(len(st.drums))]
        tracks.append(_render_drums(kit, st.drum_level_db, grid, seconds, n, sample_rate, rng))
    mix = torch.stack(tracks).sum(0) if tracks else torch.zeros(n)
    return _master(mix, sample_rate, rng)


def _fast_len(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` (a fast FFT length)."""
    best = 1 << max(0, n - 1).bit_length()
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 5
        p3 *= 3
    return best


def _master(x: Tensor, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Random style-independent finish: high-/low-pass, room reverb, noise floor, loudness, soft limiting."""
    n = x.shape[0]
    rt60 = _uniform(rng, (0.2, 1.6))
    ir_len = int(min(rt60, 0.8) * sr)
    ir = _noise(rng, ir_len) * torch.exp(-6.9 / sr / rt60 * torch.arange(ir_len, dtype=torch.float32))
    ir = ir / ir.square().sum().sqrt()
    n_fft = _fast_len(n + ir_len)
    f = torch.fft.rfftfreq(n_fft, 1.0 / sr).clamp(min=1e-3)
    hp, lp = _uniform(rng, (20, 150)), math.exp(_uniform(rng, (math.log(2500), math.log(16000))))
    eq = 1.0 / (1.0 + (hp / f) ** 2) / (1.0 + (f / lp) ** 2)
    room = 1.0 + _uniform(rng, (0.0, 0.35)) * torch.fft.rfft(ir, n=n_fft)
    y = torch.fft.irfft(torch.fft.rfft(x.float(), n=n_fft) * eq * room, n=n_fft)[:n]
    rms = y.square().mean().sqrt().clamp(min=1e-9)
    y = y + _noise(rng, n) * rms * 10 ** (-_uniform(rng, (35, 60)) / 20)
    y = _set_rms(y, _uniform(rng, (-30, -12)))
    return torch.tanh(y).numpy()


# ----------------------------------------------------------------------------------------------------- genres


def _clip_rng(seed: int, name: str, index: int) -> np.random.Generator:
    """Per-clip stream: a clip does not depend on the number of clips or the other styles asked for."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), index])


def _audio_column(clips: Sequence[np.ndarray]) -> pa.Array:
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    if lengths.sum() >= 2**31:
        raise ValueError(
            f"{lengths.sum()} samples in all exceed the 2**31 an Arrow list column holds; "
            "make fewer or shorter clips"
        )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate(clips).astype(np.float32) if len(clips) else np.zeros(0, np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def _to_dataset(columns: dict[str, pa.Array], features: datasets.Features) -> datasets.Dataset:
    table = pa.table(columns).cast(features.arrow_schema)
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features)).with_format("numpy")


def synthetic_genres(
    n_per_class: int = 20,
    seconds: float = 10.0,
    sample_rate: int = 32000,
    seed: int = 0,
    genres: Sequence[str] | None = None,
) -> datasets.Dataset:
    """A genre-classification data set of procedurally rendered clips (see the module docstring).

    Args:
        n_per_class: Clips per style.
        seconds: Clip duration.
        sample_rate: Hz.
        seed: Everything follows from it; clip ``i`` of a style is the same whatever ``n_per_class`` or
            ``genres``.
        genres: Styles to include (default: all of :data:`GENRES`); their order defines the label ids.

    Returns:
        A ``numpy``-formatted ``datasets.Dataset`` with columns ``audio`` (float32 ``[N]``), ``label``
        (``ClassLabel`` over the style names), ``sample_rate`` (int) and ``id`` (``"<genre>-<index>"``),
        ordered by style then index.
    """
    names = list(GENRES if genres is None else genres)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"genres must be a non-empty list of distinct names, got {names!r}")
    for name in names:
        _resolve_style(name)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
    clips, labels, ids = [], [], []
    for label, name in enumerate(names):
        for i in range(n_per_class):
            clips.append(render_genre_clip(name, seconds, sample_rate, _clip_rng(seed, name, i)))
            labels.append(label)
            ids.append(f"{name}-{i:04d}")
    features = datasets.Features(
        {
            "audio": datasets.List(datasets.Value("float32")),
            "label": datasets.ClassLabel(names=names),
            "sample_rate": datasets.Value("int32"),
            "id": datasets.Value("string"),
        }
    )
    columns = {
        "audio": _audio_column(clips),
        "label": pa.array(labels, pa.int64()),
        "sample_rate": pa.array([sample_rate] * len(clips), pa.int32()),
        "id": pa.array(ids),
    }
    return _to_dataset(columns, features)


def synthetic_genres_splits(
    n_per_class: int = 20,
    seconds: float = 10.0,
    sample_rate: int = 32000,
    seed: int = 0,
    genres: Sequence[str] | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> datasets.DatasetDict:
    """:func:`synthetic_genres` split into ``train``/``validation``/``test``, stratified by label and seeded.

    Each class contributes ``round(fraction * n_per_class)`` clips (at least one for a non-zero fraction) to
    validation and test, and the rest to train.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    n_val, n_test = (max(int(f > 0), round(f * n_per_class)) for f in fractions[1:])
    if n_val + n_test >= n_per_class:
        raise ValueError(f"n_per_class={n_per_class} leaves no training clips with fractions {fractions}")
    ds = synthetic_genres(n_per_class, seconds, sample_rate, seed, genres)
    rng = np.random.default_rng([seed, 7])
    split: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    labels = np.asarray(ds["label"])
    for c in range(ds.features["label"].num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        split["validation"] += idx[:n_val].tolist()
        split["test"] += idx[n_val : n_val + n_test].tolist()
        split["train"] += idx[n_val + n_test :].tolist()
    return datasets.DatasetDict({k: ds.select(sorted(v)) for k, v in split.items()})


@dataclass(frozen=True)
class Segment:
    """One style's stretch of a :func:`synthetic_radio` stream, in seconds."""

    start: float
    end: float
    style: str


def synthetic_radio(
    styles: Sequence[str],
    seconds_each: float | Sequence[float] = 10.0,
    sample_rate: int = 32000,
    seed: int = 0,
) -> tuple[np.ndarray, list[Segment]]:
    """Clips of several styles back to back (10 ms fades at the joins), for streaming demos and tests.

    Returns:
        The waveform and the segments ``[start, end)`` with their style; segment ``i`` is clip ``i`` of its
        style under ``seed`` (so repeated styles get different clips).

    Shapes:
        -> waveform ``[sum(round(seconds_i * sample_rate))]`` float32.
    """
    durations = (
        [float(seconds_each)] * len(styles) if isinstance(seconds_each, int | float) else list(seconds_each)
    )
    if not styles or len(durations) != len(styles):
        raise ValueError(f"need one duration per style, got {len(durations)} for {len(styles)} styles")
    clips, segments, start = [], [], 0
    fade = np.linspace(0.0, 1.0, int(0.01 * sample_rate), dtype=np.float32)
    for i, (style, dur) in enumerate(zip(styles, durations)):
        clip = render_genre_clip(style, dur, sample_rate, _clip_rng(seed, str(style), 1_000_000 + i))
        k = min(len(fade), len(clip) // 2)
        clip[:k] *= fade[:k]
        clip[len(clip) - k :] *= fade[:k][::-1]
        clips.append(clip)
        segments.append(Segment(start / sample_rate, (start + len(clip)) / sample_rate, str(style)))
        start += len(clip)
    return np.concatenate(clips), segments


# ------------------------------------------------------------------------------------------------------ piano


@dataclass(frozen=True)
class PianoPerformance:
    """Controlled parameters of one synthetic piano performance (ranges in :data:`_PIANO_RANGES`).

    Attributes:
        tempo: BPM. rubato: std of the per-beat log-tempo walk. jitter: onset noise std (s).
        velocity: mean loudness in (0, 1]. dynamic_range: spread of the phrase swells and note velocities.
        articulation: note length / time to the next note of the hand. pedal: probability that a bar is
            pedalled.
        hardness: hammer hardness (brightness). density: accompaniment notes per beat (1-4).
        balance: melody minus accompaniment velocity. minor: mode. register: lowest melody note (MIDI).
    """

    tempo: float
    rubato: float
    jitter: float
    velocity: float
    dynamic_range: float
    articulation: float
    pedal: float
    hardness: float
    density: int
    balance: float
    minor: bool
    register: int


_PIANO_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "tempo": (50, 150),
        "rubato": (0.0, 0.12),
        "jitter": (0.002, 0.03),
        "velocity": (0.25, 0.9),
        "dynamic_range": (0.03, 0.3),
        "articulation": (0.25, 1.05),
        "pedal": (0.0, 1.0),
        "hardness": (0.0, 1.0),
        "density": (1, 4),
        "balance": (-0.1, 0.3),
        "minor": (0, 1),
        "register": (60, 79),
    }
)


def sample_piano_performance(
    rng: np.random.Generator, tendency: Mapping[str, float] | None = None
) -> PianoPerformance:
    """Draw a performance; ``tendency`` (a performer's habits) shifts parameters by fractions of a range."""
    u = {k: float(np.clip(rng.random() + (tendency or {}).get(k, 0.0), 0.0, 1.0)) for k in _PIANO_RANGES}
    v = {k: lo + u[k] * (hi - lo) for k, (lo, hi) in _PIANO_RANGES.items()}
    return PianoPerformance(
        **{
            **v,
            "density": int(round(v["density"])),
            "minor": bool(u["minor"] >= 0.5),
            "register": int(round(v["register"])),
        }
    )


def _unit(p: PianoPerformance) -> dict[str, float]:
    """Each parameter mapped to [0, 1] over its range."""
    return {k: (float(getattr(p, k)) - lo) / (hi - lo) for k, (lo, hi) in _PIANO_RANGES.items()}


def piano_ratings(
    p: PianoPerformance, rng: np.random.Generator | None = None, noise: float = 0.35
) -> np.ndarray:
    """The 19 PercePiano-style ratings of a performance, in (1/7, 1) like PercePiano's ``mean / 7``.

    Each dimension is a score ``z`` built from the parameters (some nearly linear in one audible parameter,
    e.g. loudness for ``Timbre (soft-loud)``; others products or inverted-U shapes of several), plus rater
    noise of std ``noise`` when ``rng`` is given, mapped through ``(1 + 6 sigmoid(z)) / 7``.

    Shapes:
        -> ``[19]`` float32, in the order of :data:`PERCEPIANO_DIMENSIONS`.
    """
    u = _unit(p)
    c = {k: 2 * v - 1 for k, v in u.items()}
    z = [
        2.2 * c["rubato"] + 1.2 * c["jitter"],
        2.5 * c["articulation"] + 0.6 * c["pedal"],
        1.5 * c["hardness"] + 1.2 * c["velocity"] - 0.8 * c["articulation"],
        2.5 * c["pedal"] + 0.4 * c["articulation"],
        4.0 * u["pedal"] * u["density"] + 1.0 * c["pedal"] - 1.5,
        1.5 * c["dynamic_range"] + 1.5 * c["hardness"] * c["velocity"] + 0.5 * c["rubato"],
        1.2 * c["pedal"] + 1.2 * (1 - abs(c["register"])) + 0.8 * c["density"] - 0.6,
        -1.8 * c["hardness"] - 1.0 * c["register"] + 0.6 * c["minor"],
        2.5 * c["velocity"] + 0.3 * c["hardness"],
        3.0 * u["velocity"] * u["hardness"] - 1.0 + 0.6 * c["dynamic_range"],
        2.5 * c["dynamic_range"] + 0.3 * c["balance"],
        -2.0 * c["tempo"] - 0.8 * c["density"],
        1.2 * c["rubato"] + 1.0 * c["pedal"] + 0.8 * c["dynamic_range"] - 0.5 * c["density"],
        1.2 - 5.0 * (u["balance"] - 0.6) ** 2 - 2.0 * u["jitter"] - 3.0 * (u["rubato"] - 0.3) ** 2,
        1.2 * c["dynamic_range"] + 1.0 * c["rubato"] + 0.6 * c["velocity"] + 0.5 * c["minor"],
        1.8 * c["minor"] - 0.8 * c["tempo"] - 0.7 * c["register"],
        1.2 * c["tempo"] + 1.0 * c["density"] + 1.2 * c["velocity"],
        1.5 * math.tanh(2 * c["rubato"] * c["pedal"])
        + 0.8 * c["dynamic_range"] * c["hardness"]
        + 0.5 * c["register"],
        1.0
        - 4.0 * (u["rubato"] - 0.35) ** 2
        - 3.0 * (u["articulation"] - 0.65) ** 2
        - 2.5 * u["jitter"]
        - 2.0 * (u["balance"] - 0.55) ** 2,
    ]
    z_arr = np.asarray(z) + (rng.normal(0, noise, len(z)) if rng is not None else 0.0)
    return ((1 + 6 / (1 + np.exp(-z_arr))) / 7).astype(np.float32)


def render_piano_clip(
    p: PianoPerformance, seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Render a piano performance: a melody over an arpeggiated or chordal accompaniment, 4/4.

    Returns:
        Mono float32 waveform. Not loudness-normalised: level follows ``p.velocity`` (with soft limiting).

    Shapes:
        -> ``[round(seconds * sample_rate)]``.
    """
    n = _check_length(seconds, sample_rate)
    n_beats = int(seconds * p.tempo / 60.0 * 1.2) + 8
    n_beats += -n_beats % 4
    beats = _beat_grid(n_beats, p.tempo, p.rubato, rng)
    key = int(rng.integers(12))
    prog = (
        ((0, "min"), (5, "min"), (7, "dom7"), (0, "min"), (8, "maj"), (3, "maj"), (7, "dom7"), (0, "min"))
        if p.minor
        else (
            (0, "maj"),
            (9, "min"),
            (5, "maj"),
            (7, "dom7"),
            (0, "maj"),
            (2, "min"),
            (7, "dom7"),
            (0, "maj"),
        )
    )
    scale = np.array(_SCALES["harmonic_minor" if p.minor else "major"])
    rows: list[tuple[float, float, float, float]] = []
    phrase = rng.uniform(0, 2 * math.pi)

    def vel_at(t: float, offset: float) -> float:
        swell = p.dynamic_range * math.sin(2 * math.pi * t / (8 * 60 / p.tempo) + phrase)
        return float(np.clip(p.velocity + offset + swell + rng.normal(0, p.dynamic_range / 3), 0.05, 1.0))

    acc_times = _step_times(beats, p.density, 0.5)
    mel_times = _step_times(beats, 2, 0.5)
    acc_pattern = (0, 2, 1, 2) if p.density == 2 else (0, 1, 2, 1)  # Alberti bass for 8ths
    degree = 0
    for bar in range(n_beats // 4):
        root, q = prog[bar % len(prog)]
        chord = _voicing((key + root) % 12, q, p.register - 14)
        bass = p.register - 26 + (key + root - p.register + 26) % 12
        acc = slice(bar * 4 * p.density, (bar + 1) * 4 * p.density)
        for j, t in enumerate(acc_times[acc]):
            gap = 60.0 / p.tempo / p.density
            notes = chord if p.density == 1 else [chord[acc_pattern[j % 4] % len(chord)]]
            if j % p.density == 0 and (j // p.density) % 2 == 0:
                notes = [*notes, bass]
            rows += [(t, gap * p.articulation, q_, vel_at(t, -p.balance / 2)) for q_ in notes]
        for t in mel_times[bar * 8 : (bar + 1) * 8]:
            if rng.random() < 0.3:
                continue
            degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), -2, 9))
            pitch = p.register + scale[degree % 7] + 12 * (degree // 7)
            rows.append((t, 30.0 / p.tempo * p.articulation * 1.3, pitch, vel_at(t, p.balance / 2)))
        if rng.random() < p.pedal:  # held to the end of the bar (plus the usual late release)
            end = beats[(bar + 1) * 4] + 0.05
            rows = [(t, max(d, end - t) if beats[bar * 4] <= t < end else d, q_, v) for t, d, q_, v in rows]
    notes = _Notes.of(rows)
    notes = _Notes(
        np.maximum(0, notes.onset + rng.normal(0, p.jitter, len(rows))),
        notes.dur,
        notes.pitch,
        notes.vel**1.5,
    )
    notes = notes.select(notes.onset < seconds)
    out = torch.zeros(n + int(4.0 * sample_rate))
    cutoff = 900.0 * 2 ** (3.0 * p.hardness)
    voice = replace(_VOICES["piano"], cutoff=(cutoff, cutoff)).realise(rng)
    voice.render(notes, out, sample_rate)
    hammer = _band(_noise(rng, int(0.02 * sample_rate)), sample_rate, 200, 1500 + 5000 * p.hardness)
    hammer = (hammer * _decay(sample_rate, 0.02, 0.004)).float()
    _overlap_add(
        out,
        (notes.onset * sample_rate).astype(np.int64),
        torch.from_numpy(0.05 * notes.vel * (0.3 + p.hardness)).float()[:, None]
        * hammer
        / hammer.abs().max(),
    )
    room = _noise(rng, int(0.8 * sample_rate)) * _decay(sample_rate, 0.8, 0.18)
    y = out[:n].double()
    y = (
        y
        + 0.15
        * torch.fft.irfft(torch.fft.rfft(y, n=2 * n) * torch.fft.rfft(room / room.norm(), n=2 * n), n=2 * n)[
            :n
        ]
    )
    y = y + _noise(rng, n) * 1e-4
    return torch.tanh(0.25 * y).float().numpy()


def synthetic_piano(
    n: int = 200, seconds: float = 8.0, sample_rate: int = 32000, seed: int = 0, n_performers: int = 22
) -> datasets.Dataset:
    """A rating-regression data set of synthetic piano performances with PercePiano-style targets.

    Performer ``i % n_performers`` plays clip ``i``; each performer has habits (a shift of every parameter),
    so splits should group by ``performer``. Ratings come from :func:`piano_ratings` with rater noise.

    Returns:
        A ``numpy``-formatted ``datasets.Dataset`` with columns ``audio`` (float32 ``[N]``), ``ratings`` (19
        float32 in (0, 1], :data:`PERCEPIANO_DIMENSIONS` order), ``performer`` (int), ``sample_rate`` (int)
        and ``id`` (``"piano-<index>"``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(n_performers, bool) or not isinstance(n_performers, int) or n_performers < 1:
        raise ValueError(f"n_performers must be a positive int, got {n_performers!r}")
    tendencies = []
    for k in range(n_performers):
        prng = np.random.default_rng([seed, 1, k])
        tendencies.append({name: float(prng.normal(0, 0.15)) for name in _PIANO_RANGES})
    clips, ratings = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, 2, i])
        perf = sample_piano_performance(rng, tendencies[i % n_performers])
        clips.append(render_piano_clip(perf, seconds, sample_rate, rng))
        ratings.append(piano_ratings(perf, rng))
    dims = len(PERCEPIANO_DIMENSIONS)
    features = datasets.Features(
        {
            "audio": datasets.List(datasets.Value("float32")),
            "ratings": datasets.List(datasets.Value("float32"), length=dims),
            "performer": datasets.Value("int32"),
            "sample_rate": datasets.Value("int32"),
            "id": datasets.Value("string"),
        }
    )
    columns = {
        "audio": _audio_column(clips),
        "ratings": pa.FixedSizeListArray.from_arrays(pa.array(np.stack(ratings).reshape(-1)), dims),
        "performer": pa.array([i % n_performers for i in range(n)], pa.int32()),
        "sample_rate": pa.array([sample_rate] * n, pa.int32()),
        "id": pa.array([f"piano-{i:04d}" for i in range(n)]),
    }
    return _to_dataset(columns, features)


# ==================================================================================== data set registration
# The recipes' synthetic data sets (``data.name=synthetic_genres`` / ``synthetic_piano``). This block only
# registers them; it can move as a whole to wherever the synthetic data sets live.

from heads.tasks import RATING, SINGLE_LABEL  # noqa: E402

from .registry import DataConfig, TaskData, register_dataset  # noqa: E402


@dataclass
class SyntheticGenresConfig(DataConfig):
    """``data.name=synthetic_genres``: :func:`synthetic_genres_splits` of ``clip_seconds`` clips.

    Attributes:
        n_per_class: clips per style (70/15/15 % train/validation/test per style).
    """

    name: str = "synthetic_genres"
    n_per_class: int = 20


@register_dataset("synthetic_genres", SyntheticGenresConfig)
def build_synthetic_genres(config: SyntheticGenresConfig, sample_rate: int) -> TaskData:
    """The ten synthetic styles, rendered at ``sample_rate``: single-label."""
    splits = synthetic_genres_splits(config.n_per_class, config.clip_seconds, sample_rate, config.seed)
    return TaskData(splits, SINGLE_LABEL, tuple(splits["train"].features["label"].names))


@dataclass
class SyntheticPianoConfig(DataConfig):
    """``data.name=synthetic_piano``: :func:`synthetic_piano` of ``clip_seconds`` clips.

    Attributes:
        n_items: performances; validation and test each hold out a sixth of the performers (at least one).
    """

    name: str = "synthetic_piano"
    n_items: int = 200


@register_dataset("synthetic_piano", SyntheticPianoConfig)
def build_synthetic_piano(config: SyntheticPianoConfig, sample_rate: int) -> TaskData:
    """Synthetic piano performances rendered at ``sample_rate``, split by performer: 19 ratings."""
    ds = synthetic_piano(config.n_items, config.clip_seconds, sample_rate, config.seed)
    performers = np.asarray(ds["performer"])
    held_out = np.unique(performers)
    np.random.default_rng(config.seed).shuffle(held_out)
    k = max(1, len(held_out) // 6)
    val_p, test_p = set(held_out[:k].tolist()), set(held_out[k : 2 * k].tolist())
    idx = np.arange(len(ds))
    splits = datasets.DatasetDict(
        train=ds.select(idx[[p not in val_p | test_p for p in performers]]),
        validation=ds.select(idx[[p in val_p for p in performers]]),
        test=ds.select(idx[[p in test_p for p in performers]]),
    )
    return TaskData(splits, RATING, tuple(PERCEPIANO_DIMENSIONS))


# ================================================================================ end of data set registration
