"""Reading performance MIDI: notes with pedal-extended releases, re-struck keys, and unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from finetune.data.midi import midi_notes


def _midi(
    path: Path, notes: list[tuple[float, float, int, int]], pedal: list[tuple[float, int]] = ()
) -> Path:
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for s, e, p, v in notes]
    piano.control_changes = [pretty_midi.ControlChange(64, value, t) for t, value in pedal]
    midi.instruments.append(piano)
    midi.write(str(path))
    return path


def test_pedal_holds_released_notes_until_it_lifts(tmp_path: Path) -> None:
    path = _midi(tmp_path / "p.mid", [(0.1, 0.4, 60, 90), (2.5, 2.7, 64, 70)], pedal=[(0.0, 127), (2.0, 0)])
    notes, end = midi_notes(path)
    np.testing.assert_allclose(notes, [[0.1, 2.0, 60, 90], [2.5, 2.7, 64, 70]], atol=1e-3)
    assert end == pytest.approx(2.7, abs=1e-3)


def test_restriking_a_held_key_releases_the_older_note(tmp_path: Path) -> None:
    path = _midi(tmp_path / "r.mid", [(0.0, 0.2, 60, 80), (0.5, 0.7, 60, 80)], pedal=[(0.0, 127), (3.0, 0)])
    notes, _ = midi_notes(path)
    np.testing.assert_allclose(notes, [[0.0, 0.5, 60, 80], [0.5, 3.0, 60, 80]], atol=1e-3)


def test_unreadable_midi_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not really")
    with pytest.raises(ValueError, match=r"could not parse MIDI file .*bad\.mid: "):
        midi_notes(bad)
