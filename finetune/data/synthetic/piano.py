"""Synthetic piano performances with PercePiano-style ratings: controlled performance parameters, the 19
ratings computed from them, a renderer, and the rating-regression data set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import datasets
import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from heads.rating import PERCEPIANO_DIMENSIONS
from heads.tasks import RATING

from ..registry import DataConfig, TaskData, register_dataset
from .storage import _audio_column, _to_dataset
from .styles import _SCALES, _beat_grid, _step_times, _voicing
from .synth import _VOICES, _band, _check_length, _decay, _noise, _Notes, _overlap_add


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
    n: int = 200,
    seconds: float = 8.0,
    sample_rate: int = 32000,
    seed: int = 0,
    n_performers: int = 22,
    progress: bool = True,
) -> datasets.Dataset:
    """A rating-regression data set of synthetic piano performances with PercePiano-style targets.

    Performer ``i % n_performers`` plays clip ``i``; each performer has habits (a shift of every parameter),
    so splits should group by ``performer``. Ratings come from :func:`piano_ratings` with rater noise.
    ``progress`` shows a progress bar over the clips.

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
    for i in tqdm(range(n), desc="synthetic piano", unit="clip", disable=not progress):
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
    ds = synthetic_piano(
        config.n_items, config.clip_seconds, sample_rate, config.seed, progress=config.progress
    )
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
