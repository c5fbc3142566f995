"""Baselines that sit beside every model in the same table, so a reader sees what the models add.

- ``majority``: no features; the training class frequencies (single-label), tag frequencies (multi-label) or the
  training mean (ratings).
- ``spectral``: the linear probe (logistic regression / ridge, regularisation chosen on validation) on the mean and
  standard deviation of each log-mel band of the whole clip (:class:`~.features.SpectralStats`).
- ``midi``: the same linear probe on 16 statistics of the performance MIDI (velocity, note duration, inter-onset
  interval, pitch, polyphony, sustain pedal); for data sets whose rows name a MIDI file (PercePiano).

A baseline is a featurizer (or none) plus a probe kind; :data:`BASELINES` maps names to them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .data import ClipSplit
from .features import SpectralStats

__all__ = ["BASELINES", "Baseline", "MidiStats", "midi_features", "MIDI_FEATURES"]

MIDI_FEATURES = (
    "notes_per_second",
    "velocity_mean",
    "velocity_std",
    "velocity_p90_p10",
    "duration_mean",
    "duration_std",
    "ioi_mean",
    "ioi_std",
    "pitch_mean",
    "pitch_std",
    "pitch_range",
    "polyphony_mean",
    "articulation_mean",
    "pedal_down_fraction",
    "pedal_presses_per_second",
    "seconds",
)


def midi_features(path: str | os.PathLike[str]) -> np.ndarray:
    """The :data:`MIDI_FEATURES` of one performance MIDI file (velocities scaled to [0, 1], times in seconds).

    ``articulation_mean`` is the mean ratio of a note's duration to the time until the next onset (any pitch);
    ``polyphony_mean`` is the total note time over the performance's length.

    Shapes:
        -> [16] float32.

    Raises:
        ValueError: the file holds no notes.
    """
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(str(path))
    notes = sorted((n for inst in midi.instruments for n in inst.notes), key=lambda n: n.start)
    if not notes:
        raise ValueError(f"{path} holds no notes")
    start = np.array([n.start for n in notes])
    dur = np.array([n.end - n.start for n in notes])
    vel = np.array([n.velocity for n in notes]) / 127.0
    pitch = np.array([n.pitch for n in notes], dtype=np.float64)
    onsets = np.unique(np.round(start, 3))
    ioi = np.diff(onsets) if len(onsets) > 1 else np.zeros(1)
    length = max(float(max(n.end for n in notes)) - float(start.min()), 1e-3)
    gaps = np.array(
        [onsets[min(np.searchsorted(onsets, s, side="right"), len(onsets) - 1)] - s for s in start]
    )
    articulation = np.divide(dur, gaps, out=np.ones_like(dur), where=gaps > 1e-3)
    pedal = sorted(
        (c.time, c.value >= 64) for inst in midi.instruments for c in inst.control_changes if c.number == 64
    )
    down, presses, t_prev, state = 0.0, 0, float(start.min()), False
    for t, is_down in pedal:
        if state:
            down += max(0.0, t - t_prev)
        presses += int(is_down and not state)
        t_prev, state = t, is_down
    if state:
        down += max(0.0, start.min() + length - t_prev)
    values = [
        len(notes) / length,
        vel.mean(),
        vel.std(),
        np.percentile(vel, 90) - np.percentile(vel, 10),
        dur.mean(),
        dur.std(),
        ioi.mean(),
        ioi.std(),
        pitch.mean() / 127.0,
        pitch.std() / 127.0,
        (pitch.max() - pitch.min()) / 127.0,
        dur.sum() / length,
        float(np.clip(articulation, 0.0, 4.0).mean()),
        min(down / length, 1.0),
        presses / length,
        length,
    ]
    return np.asarray(values, dtype=np.float32)


@dataclass
class MidiStats:
    """:func:`midi_features` of each clip's MIDI file: a ``midi_path`` column when the rows have one, else the
    file named like the row (``name``) in the data set's MIDI folder (``midi_dir``, else ``root/midi`` or
    ``root``). Cheap to compute, so not cached on disk."""

    settings: Mapping[str, Any]

    def spec(self) -> None:
        return None

    def _folder(self) -> Path:
        if self.settings.get("midi_dir"):
            return Path(self.settings["midi_dir"]).expanduser()
        if self.settings.get("root"):
            root = Path(self.settings["root"]).expanduser()
            return root / "midi" if (root / "midi").is_dir() else root
        raise ValueError("the MIDI baseline needs data.midi_dir or data.root (the folder of the MIDI files)")

    def paths(self, split: ClipSplit) -> list[Path]:
        """Each clip's MIDI file.

        Raises:
            FileNotFoundError: a clip has none (the message names it and the folder searched).
        """
        if split.has_column("midi_path"):
            return [Path(p) for p in split.column("midi_path")]
        folder = self._folder()
        index = {p.stem.strip(): p for p in folder.iterdir() if p.suffix.lower() in (".mid", ".midi")}
        out = []
        for name in split.column("name"):
            if str(name).strip() not in index:
                raise FileNotFoundError(f"no MIDI file for clip {name!r} in {folder}")
            out.append(index[str(name).strip()])
        return out

    def compute(self, split: ClipSplit, progress: bool = False) -> list[np.ndarray]:
        return [midi_features(p)[None] for p in self.paths(split)]


@dataclass(frozen=True)
class Baseline:
    """A baseline row: ``label`` in the tables, a featurizer factory (``settings -> featurizer``; None: no
    features) and the probe kind (:data:`eval.benchmark.probes.PROBES`)."""

    label: str
    featurizer: Callable[[Mapping[str, Any]], Any] | None
    probe: str


BASELINES: Mapping[str, Baseline] = MappingProxyType(
    {
        "majority": Baseline("majority / training mean", None, "prior"),
        "spectral": Baseline("log-mel mean+std, linear", SpectralStats, "linear"),
        "midi": Baseline("MIDI statistics, linear", MidiStats, "linear"),
    }
)
