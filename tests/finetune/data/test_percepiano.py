"""PercePiano loader on the real labels and MIDI names (tiny stand-in audio), its folds, bad labels, and the MIDI
renderer (a handful of files at 16 kHz into a temporary cache)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from finetune.data.audio import load_audio
from finetune.data.lazy import DataError
from finetune.data.percepiano import (
    LABELS_FILE,
    PERCEPIANO_DIMENSIONS,
    PercePianoConfig,
    load_percepiano,
    parse_segment_name,
)
from finetune.data.registry import DATASETS, DataConfig
from finetune.data.render import PianoRenderer, midi_notes, render_cached, render_many
from heads.tasks import RATING
from tests.audio_signals import noise

SR = 16000
LABELS = "label_2round_mean_reg_19_with0_rm_highstd0.json"
STDS = "label_2round_std_reg_19_with0_rm_highstd0.json"


@pytest.fixture(scope="module")
def data(shared_dir: Path) -> Path:
    return shared_dir / "data" / "percepiano"


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """One tiny wav per real MIDI file (all 1202 names, the leading space included), hard-linked."""
    folder = tmp_path_factory.mktemp("percepiano_audio")
    source = folder / "source.bin"
    sf.write(source, noise(1, 160)[0].numpy(), 8000, format="WAV")
    for midi in (data / "midi").iterdir():
        os.link(source, folder / f"{midi.stem}.wav")
    source.unlink()
    return folder


def _load(data: Path, audio_dir: Path, **kw: object) -> object:
    with pytest.warns(UserWarning, match=r"13 file\(s\) have no label"):
        return load_percepiano(data / LABELS, audio_dir=audio_dir, **kw)


def test_labelled_segments_players_and_quirks(data: Path, audio_dir: Path) -> None:
    with pytest.warns(UserWarning) as record:
        ds = load_percepiano(data / LABELS, audio_dir=audio_dir, std_labels=data / STDS)
    message = str(record[0].message)
    assert "13 file(s) have no label and are left out: Beethoven_WoO80_var10_8bars_Score_8" in message
    assert "1 file name(s) in" in message and "' Schubert_D935_no.3_4bars_2_1.wav'" in message
    rows = [r for split in ds.values() for r in split.with_format(None)]
    assert len(rows) == 1189 == len({r["name"] for r in rows})
    assert {r["player"] for r in rows} == set(range(22))
    assert "Schubert_D935_no.3_4bars_2_1" in {r["name"] for r in rows}
    ratings = np.array([r["ratings"] for r in rows])
    assert ratings.shape == (1189, len(PERCEPIANO_DIMENSIONS)) == (1189, 19)
    assert ratings.min() > 0 and ratings.max() <= 1
    official = json.loads((data / LABELS).read_text())["Beethoven_WoO80_var27_8bars_1_15"]
    row = next(r for r in rows if r["name"] == "Beethoven_WoO80_var27_8bars_1_15")
    np.testing.assert_allclose(row["ratings"], official[:19], rtol=1e-6)
    assert row["player"] == official[19] and len(row["ratings_std"]) == 19
    assert (row["piece"], row["excerpt"], row["performer"]) == (
        "Beethoven_WoO80_var27",
        "Beethoven_WoO80_var27_8bars_15",
        "1",
    )


@pytest.mark.parametrize(
    ("fold", "column"), [("performer", "player"), ("piece", "excerpt"), ("random", "name")]
)
def test_folds_disjoint_covering_and_grouped(data: Path, audio_dir: Path, fold: str, column: str) -> None:
    folds = [
        _load(data, audio_dir, fold=fold, fold_index=f, n_folds=4, seed=0).with_format(None) for f in range(4)
    ]
    tests = {tuple(f["test"]["name"]) for f in folds}
    assert len(tests) == 1  # one fixed test set
    test_names = set(next(iter(tests)))
    assert len(test_names) >= 0.15 * 1189
    validations = [set(f["validation"]["name"]) for f in folds]
    assert sum(map(len, validations)) == 1189 - len(test_names) == len(set().union(*validations))
    for f in folds:
        names = {k: set(v["name"]) for k, v in f.items()}
        assert len(names["train"]) + len(names["validation"]) + len(names["test"]) == 1189
        assert not (names["train"] & names["test"]) | (names["train"] & names["validation"])
        groups = {k: set(v[column]) for k, v in f.items()}
        assert not (groups["train"] & groups["test"]) | (groups["train"] & groups["validation"])
        assert not groups["validation"] & groups["test"]


def test_bad_labels_are_dropped_or_raise(tmp_path: Path, data: Path, audio_dir: Path) -> None:
    labels = json.loads((data / LABELS).read_text())
    labels["Beethoven_WoO80_thema_8bars_1_1"][3] = 1.5
    labels["Beethoven_WoO80_thema_8bars_2_1"] = labels["Beethoven_WoO80_thema_8bars_2_1"][:19]
    labels["Beethoven_WoO80_thema_8bars_3_1"][19] = -1
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps(labels))
    with pytest.warns(UserWarning) as record:
        ds = load_percepiano(bad, audio_dir=audio_dir, fold="random")
    message = str(record[0].message)
    assert message.startswith("percepiano: dropped 3 entries;")
    assert "rating outside (0, 1] (1): Beethoven_WoO80_thema_8bars_1_1 (min 0.262, max 1.5)" in message
    assert "13 file(s) have no label" in message  # the three with bad labels are not counted as unlabelled
    assert sum(v.num_rows for v in ds.values()) == 1186
    with pytest.raises(DataError, match=r"malformed label entry \(1\): Beethoven_WoO80_thema_8bars_2_1"):
        load_percepiano(bad, audio_dir=audio_dir, on_error="raise")
    with pytest.raises(DataError, match=r"player id not a non-negative integer \(1\)"):
        load_percepiano(bad, audio_dir=audio_dir, on_error="raise")


def test_duplicate_and_missing_files(tmp_path: Path, data: Path) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    for name in ("Beethoven_WoO80_thema_8bars_1_1.wav", "Beethoven_WoO80_thema_8bars_1_1.flac"):
        sf.write(folder / name, np.zeros(100, dtype=np.float32), 8000)
    with pytest.raises(DataError, match="two files for segment 'Beethoven_WoO80_thema_8bars_1_1'"):
        load_percepiano(data / LABELS, audio_dir=folder)
    (folder / "Beethoven_WoO80_thema_8bars_1_1.flac").unlink()
    with pytest.raises(ValueError, match="pass audio_dir"):
        load_percepiano(data / LABELS)
    with pytest.raises(ValueError, match="fold must be one of"):
        load_percepiano(data / LABELS, audio_dir=folder, fold="composer")
    with pytest.raises(DataError, match=r"1188 labelled segment\(s\) have no audio or MIDI file"):
        load_percepiano(data / LABELS, audio_dir=folder, min_duration=1.0, on_error="raise")


def test_parse_segment_name() -> None:
    assert parse_segment_name(" Schubert_D935_no.3_4bars_Score2_1") == {
        "piece": "Schubert_D935_no.3",
        "bars": "4",
        "performer": "Score2",
        "segment": "1",
        "excerpt": "Schubert_D935_no.3_4bars_1",
    }
    with pytest.raises(ValueError, match="not of the form"):
        parse_segment_name("Schubert_D935_1")


def test_load_renders_midi_into_cache(tmp_path: Path, data: Path) -> None:
    midi_dir = tmp_path / "midi"
    midi_dir.mkdir()
    chosen = [" Schubert_D935_no.3_4bars_2_1.mid", "Beethoven_WoO80_thema_8bars_1_1.mid"]
    chosen += ["Beethoven_WoO80_thema_8bars_2_1.mid", "Beethoven_WoO80_thema_8bars_3_1.mid"]
    for name in chosen:
        shutil.copy(data / "midi" / name, midi_dir / name)
    with pytest.warns(UserWarning, match=r"1185 labelled segment\(s\) have no audio or MIDI file"):
        ds = load_percepiano(
            data / LABELS,
            midi_dir=midi_dir,
            fold="random",
            n_folds=2,
            sample_rate=SR,
            render_cache=tmp_path / "cache",
        )
    rows = [r for split in ds.values() for r in split]
    assert sorted(r["name"] for r in rows) == sorted(n.strip()[:-4] for n in chosen)
    for r in rows:
        assert Path(r["path"]).parent == tmp_path / "cache" and r["path"].endswith(".flac")
        audio, _ = load_audio(r["path"])
        assert r["file_rate"] == SR and audio.shape == (1, r["frames"])
        source = next(midi_dir / n for n in chosen if n.strip() == r["name"] + ".mid")
        end = pretty_midi.PrettyMIDI(str(source)).get_end_time()
        assert end * SR <= audio.shape[1] <= (end + 3.0) * SR
        assert audio.abs().max() > 0.05


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


def _band_energy(x: np.ndarray, f_lo: float, f_hi: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(freqs >= f_lo) & (freqs <= f_hi)].sum())


@pytest.fixture(scope="module")
def renderer() -> PianoRenderer:
    return PianoRenderer(SR)


@pytest.mark.parametrize("pitch", [45, 60, 69, 84])
def test_render_energy_at_fundamental_and_timing(tmp_path: Path, renderer: PianoRenderer, pitch: int) -> None:
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    wave = renderer.render(_midi(tmp_path / "note.mid", [(0.5, 1.0, pitch, 100)]))
    assert wave.dtype == np.float32
    env = np.abs(wave)
    onset = np.flatnonzero(env > 0.01 * env.max())[0] / SR
    assert 0.5 <= onset < 0.51  # silence, then the note starts on time
    assert np.abs(wave[: int(0.5 * SR)]).max() == 0.0
    body = wave[int(0.55 * SR) : int(0.95 * SR)]
    fundamental = _band_energy(body, f0 * 0.97, f0 * 1.03)
    between = _band_energy(body, f0 * 1.35, f0 * 1.65)  # between the 1st and 2nd harmonics
    assert fundamental > 30 * between
    lo, hi = f0 * 2 ** (-1.5 / 12), f0 * 2 ** (1.5 / 12)
    assert fundamental > 0.5 * _band_energy(
        body, lo, hi
    )  # the pitch is right to within a semitone and a half
    tail = wave[int(2.3 * SR) :]  # released at 1.0 s; the release fades in about a second
    assert tail.size == 0 or np.abs(tail).max() < 1e-3 * env.max()


def test_render_velocity_and_sustain_pedal(tmp_path: Path, renderer: PianoRenderer) -> None:
    soft = renderer.render(_midi(tmp_path / "soft.mid", [(0.1, 0.6, 60, 30)]))
    loud = renderer.render(_midi(tmp_path / "loud.mid", [(0.1, 0.6, 60, 120)]))
    assert np.abs(loud).max() > 8 * np.abs(soft).max()  # amplitude ~ velocity squared: (120/30)^2 = 16
    dry = renderer.render(_midi(tmp_path / "dry.mid", [(0.1, 0.4, 60, 90)]))
    wet = renderer.render(_midi(tmp_path / "wet.mid", [(0.1, 0.4, 60, 90)], pedal=[(0.0, 127), (2.0, 0)]))
    at = slice(int(1.5 * SR), int(1.6 * SR))  # after the key is released, before the pedal is
    assert np.abs(wet[at]).max() > 100 * (np.abs(dry[at]).max() if len(dry) > at.stop else 0) + 1e-3
    notes, end = midi_notes(tmp_path / "wet.mid")
    np.testing.assert_allclose(notes, [[0.1, 2.0, 60, 90]], atol=1e-3)


def test_render_real_midi_is_deterministic_and_cached(
    tmp_path: Path, data: Path, renderer: PianoRenderer
) -> None:
    midi = data / "midi" / "Beethoven_WoO80_thema_8bars_1_1.mid"
    first = render_cached(midi, tmp_path / "a", renderer)
    second = render_cached(midi, tmp_path / "b", renderer)
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    mtime = first.stat().st_mtime_ns
    assert render_cached(midi, tmp_path / "a", renderer) == first and first.stat().st_mtime_ns == mtime
    assert render_cached(midi, tmp_path / "a", PianoRenderer(22050)) != first  # the rate is part of the key
    wave, sr = sf.read(first, dtype="float32")
    notes, _ = midi_notes(midi)
    pitch = int(np.bincount(notes[:, 2].astype(int)).argmax())  # the most played key
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    assert sr == SR and _band_energy(wave, f0 * 0.98, f0 * 1.02) > 10 * _band_energy(
        wave, f0 * 1.04, f0 * 1.08
    )
    assert np.abs(wave).max() < 1.0


def test_render_rejects_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not really")
    with pytest.raises(ValueError, match="could not parse MIDI file .*bad.mid"):
        midi_notes(bad)
    with pytest.raises(ValueError, match="is not a SoundFont 2 file"):
        PianoRenderer(SR, soundfont=bad)
    with pytest.raises(ValueError, match="sample_rate must be at least 4000 Hz"):
        PianoRenderer(1000)


def test_render_many_in_parallel_matches_serial_and_reports_bad_files(tmp_path: Path, data: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not really")
    files = [
        data / "midi" / "Beethoven_WoO80_thema_8bars_2_1.mid",
        bad,
        _midi(tmp_path / "n.mid", [(0.0, 0.2, 60, 80)]),
    ]
    serial = render_many(files, tmp_path / "serial", SR)
    parallel = render_many(files, tmp_path / "parallel", SR, num_workers=2)
    assert isinstance(serial[1], ValueError) and isinstance(parallel[1], ValueError)
    assert "could not parse MIDI file" in str(parallel[1])
    for a, b in zip(serial[::2], parallel[::2]):
        assert a.parent.name == "serial" and b.parent.name == "parallel" and a.read_bytes() == b.read_bytes()


def test_registered_builder(tmp_path: Path) -> None:
    """``data.name=percepiano``: audio named like the segments, labels found in data.root under the official
    file name, player-disjoint folds by default."""
    root = tmp_path / "percepiano"
    root.mkdir()
    rng = np.random.default_rng(0)
    labels = {}
    for player in range(12):
        for seg in (1, 2):
            name = f"Piece{player % 3}_8bars_{player + 1}_{seg}"
            labels[name] = [*rng.uniform(0.2, 1.0, len(PERCEPIANO_DIMENSIONS)).round(4).tolist(), player]
            sf.write(root / f"{name}.wav", noise(1, 2000, seed=100 * player + seg)[0].numpy(), 8000)
    (root / LABELS_FILE).write_text(json.dumps(labels))
    cfg = DataConfig.from_dict({"name": "percepiano", "root": str(root)}, "data")
    assert isinstance(cfg, PercePianoConfig) and cfg.fold == "performer"
    data = DATASETS["percepiano"](cfg, SR)
    assert (data.task, data.names) == (RATING, tuple(PERCEPIANO_DIMENSIONS))
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sum(sizes.values()) == 24 and min(sizes.values()) > 0
    players = {k: set(v.with_format(None)["player"]) for k, v in data.splits.items()}
    assert not (players["train"] & players["validation"] or players["train"] & players["test"])
    row = data.splits["train"][0]
    assert np.allclose(row["ratings"], labels[row["name"]][:19], atol=1e-6) and row["frames"] == 2000
    with pytest.raises(ValueError, match=r"needs data\.root: the folder with the segments' audio"):
        DATASETS["percepiano"](PercePianoConfig(), SR)
