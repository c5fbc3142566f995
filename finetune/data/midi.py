"""Read a piano performance from a MIDI file: its notes, with release times extended by the sustain pedal.

What :mod:`finetune.data.render` plays. All non-drum tracks are read; CC64 >= 64 holds released notes until the
pedal lifts, and re-striking a key that still sounds releases the older note at the new onset.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

__all__ = ["midi_notes"]

_SUSTAIN_CC = 64


def midi_notes(midi_path: str | os.PathLike[str]) -> tuple[np.ndarray, float]:
    """Read a MIDI file's notes with their sustain-pedal-extended release times, and its end time.

    Shapes: returns notes [K, 4] (start_s, release_s, key, velocity), sorted by start.
    """
    try:
        import pretty_midi
    except ImportError as e:
        raise ImportError("rendering MIDI needs pretty_midi: pip install 'musicft[midi]'") from e
    with warnings.catch_warnings():  # files with tempo events on later tracks still parse correctly
        warnings.filterwarnings("ignore", message="Tempo, Key or Time signature change events found")
        try:
            midi = pretty_midi.PrettyMIDI(str(midi_path))
        except Exception as e:  # mido raises several types for malformed files
            raise ValueError(f"could not parse MIDI file {midi_path}: {type(e).__name__}: {e}") from e
    rows = []
    for inst in midi.instruments:
        if inst.is_drum:
            continue
        cc = sorted((c.time, c.value >= 64) for c in inst.control_changes if c.number == _SUSTAIN_CC)
        times = np.array([t for t, _ in cc])
        down = np.array([d for _, d in cc], dtype=bool)
        for note in inst.notes:
            rows.append((note.start, _pedal_release(note.end, times, down), note.pitch, note.velocity))
    notes = np.array(sorted(rows), dtype=np.float64).reshape(-1, 4)
    # Re-striking a key that still sounds (held by the pedal) releases the older voice at the new onset.
    for key in np.unique(notes[:, 2]):
        idx = np.flatnonzero(notes[:, 2] == key)
        notes[idx[:-1], 1] = np.minimum(notes[idx[:-1], 1], np.maximum(notes[idx[1:], 0], notes[idx[:-1], 0]))
    return notes, midi.get_end_time()


def _pedal_release(end: float, times: np.ndarray, down: np.ndarray) -> float:
    """When a key released at ``end`` stops sounding: ``end``, or the next pedal lift if the pedal is down."""
    i = int(np.searchsorted(times, end, side="right")) - 1
    if i < 0 or not down[i]:
        return end
    ups = np.flatnonzero(~down[i + 1 :])
    return float(times[i + 1 + ups[0]]) if len(ups) else max(end, float(times[-1]))
