"""Baselines: the MIDI statistics of a known performance, MIDI files found by row name, and the registry."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pretty_midi
import pytest

from eval.benchmark.baselines import BASELINES, MIDI_FEATURES, MidiStats, midi_features
from eval.benchmark.data import ClipSplit
from heads.tasks import RATING


def _write_midi(path: Path) -> None:
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for i, (pitch, velocity) in enumerate(((60, 40), (62, 60), (64, 80), (65, 100))):
        piano.notes.append(
            pretty_midi.Note(velocity=velocity, pitch=pitch, start=0.5 * i, end=0.5 * i + 0.25)
        )
    piano.control_changes += [pretty_midi.ControlChange(64, 127, 0.5), pretty_midi.ControlChange(64, 0, 1.0)]
    midi.instruments.append(piano)
    midi.write(str(path))


def test_midi_features_of_a_known_performance(tmp_path: Path) -> None:
    _write_midi(tmp_path / "take.mid")
    got = dict(zip(MIDI_FEATURES, midi_features(tmp_path / "take.mid").tolist()))
    length = 1.75  # first onset to last note off
    want = {
        "notes_per_second": 4 / length,
        "velocity_mean": 70 / 127,
        "duration_mean": 0.25,
        "duration_std": 0.0,
        "ioi_mean": 0.5,
        "ioi_std": 0.0,
        "pitch_mean": 62.75 / 127,
        "pitch_range": 5 / 127,
        "polyphony_mean": 1.0 / length,
        "articulation_mean": (0.5 + 0.5 + 0.5 + 1.0) / 4,  # the last note has no next onset: counted as 1
        "pedal_down_fraction": 0.5 / length,
        "pedal_presses_per_second": 1 / length,
        "seconds": length,
    }
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-3), name
    empty = pretty_midi.PrettyMIDI()
    empty.instruments.append(pretty_midi.Instrument(program=0))
    empty.write(str(tmp_path / "empty.mid"))
    with pytest.raises(ValueError, match="empty.mid holds no notes"):
        midi_features(tmp_path / "empty.mid")


def test_midi_files_are_found_by_row_name_in_the_midi_folder(tmp_path: Path) -> None:
    (tmp_path / "midi").mkdir()
    _write_midi(tmp_path / "midi" / " padded_name.mid")  # real PercePiano has a name with a leading space
    _write_midi(tmp_path / "midi" / "plain.mid")
    rows = datasets.Dataset.from_dict({"name": ["plain", "padded_name"], "ratings": [[0.5], [0.5]]})
    split = ClipSplit.of(rows, RATING)
    stats = MidiStats({"root": str(tmp_path)})
    assert [p.name for p in stats.paths(split)] == ["plain.mid", " padded_name.mid"]
    features = stats.compute(split)
    assert [f.shape for f in features] == [(1, 16), (1, 16)]
    np.testing.assert_array_equal(features[0], features[1])
    missing = ClipSplit.of(datasets.Dataset.from_dict({"name": ["gone"], "ratings": [[0.5]]}), RATING)
    with pytest.raises(FileNotFoundError, match=r"no MIDI file for clip 'gone' in .*midi"):
        stats.paths(missing)
    with pytest.raises(ValueError, match="the MIDI baseline needs data.midi_dir or data.root"):
        MidiStats({}).paths(split)
    assert MidiStats({"midi_dir": str(tmp_path / "midi")}).paths(split)[0].name == "plain.mid"


def test_baselines_registry() -> None:
    assert list(BASELINES) == ["majority", "spectral", "midi"]
    assert [b.probe for b in BASELINES.values()] == ["prior", "linear", "linear"]
    assert BASELINES["majority"].featurizer is None
