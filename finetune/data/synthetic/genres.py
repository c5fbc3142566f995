"""The genre arranger and the genre data sets: a style's parts and drums rendered into one clip, the clip
mastered, clips collected into ``datasets`` (and splits), and styles played back to back as a radio stream.

Per clip, tempo, key, timbre parameters, mix balance, a master EQ (high-/low-pass), room reverb, a noise
floor and the loudness (-30 to -12 dBFS RMS) are drawn at random, so that loudness, spectral centroid or tempo
alone do not identify a style (``python -m eval.synthetic_baselines`` measures how far global statistics get).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch import Tensor
from tqdm.auto import tqdm

from heads.tasks import SINGLE_LABEL

from ..registry import DataConfig, TaskData, register_dataset
from .storage import _audio_column, _to_dataset
from .styles import (
    _SCALES,
    GENRE_STYLES,
    GENRES,
    GenreStyle,
    Part,
    _beat_grid,
    _hits,
    _step_times,
    _voicing,
)
from .synth import _DRUMS, _VOICES, _check_length, _noise, _Notes, _overlap_add, _uniform

# ------------------------------------------------------------------------------------------------ pitch rules


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


def synthetic_genres(
    n_per_class: int = 20,
    seconds: float = 10.0,
    sample_rate: int = 32000,
    seed: int = 0,
    genres: Sequence[str] | None = None,
    progress: bool = True,
) -> datasets.Dataset:
    """A genre-classification data set of procedurally rendered clips (see the module docstring).

    Args:
        n_per_class: Clips per style.
        seconds: Clip duration.
        sample_rate: Hz.
        seed: Everything follows from it; clip ``i`` of a style is the same whatever ``n_per_class`` or
            ``genres``.
        genres: Styles to include (default: all of :data:`GENRES`); their order defines the label ids.
        progress: Show a progress bar over the clips (rendering takes minutes on a slow machine).

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
    jobs = [(label, name, i) for label, name in enumerate(names) for i in range(n_per_class)]
    bar = tqdm(jobs, desc="synthetic genres", unit="clip", disable=not progress)
    clips = [render_genre_clip(name, seconds, sample_rate, _clip_rng(seed, name, i)) for _, name, i in bar]
    labels = [label for label, _, _ in jobs]
    ids = [f"{name}-{i:04d}" for _, name, i in jobs]
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
    progress: bool = True,
) -> datasets.DatasetDict:
    """:func:`synthetic_genres` split into ``train``/``validation``/``test``, stratified by label and seeded.

    Each class contributes ``round(fraction * n_per_class)`` clips (at least one for a non-zero fraction) to
    validation and test, and the rest to train. ``progress`` shows a progress bar over the clips.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    n_val, n_test = (max(int(f > 0), round(f * n_per_class)) for f in fractions[1:])
    if n_val + n_test >= n_per_class:
        raise ValueError(f"n_per_class={n_per_class} leaves no training clips with fractions {fractions}")
    ds = synthetic_genres(n_per_class, seconds, sample_rate, seed, genres, progress)
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
    progress: bool = True,
) -> tuple[np.ndarray, list[Segment]]:
    """Clips of several styles back to back (10 ms fades at the joins), for streaming demos and tests;
    ``progress`` shows a progress bar over the clips.

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
    bar = tqdm(list(zip(styles, durations)), desc="synthetic radio", unit="clip", disable=not progress)
    for i, (style, dur) in enumerate(bar):
        clip = render_genre_clip(style, dur, sample_rate, _clip_rng(seed, str(style), 1_000_000 + i))
        k = min(len(fade), len(clip) // 2)
        clip[:k] *= fade[:k]
        clip[len(clip) - k :] *= fade[:k][::-1]
        clips.append(clip)
        segments.append(Segment(start / sample_rate, (start + len(clip)) / sample_rate, str(style)))
        start += len(clip)
    return np.concatenate(clips), segments


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
    splits = synthetic_genres_splits(
        config.n_per_class, config.clip_seconds, sample_rate, config.seed, progress=config.progress
    )
    return TaskData(splits, SINGLE_LABEL, tuple(splits["train"].features["label"].names))
