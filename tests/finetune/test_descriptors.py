"""Clip descriptors: names and groups, audio values on signals whose answer is known, MIDI values on a written
performance, the per-clip cache, and data sets gaining a descriptors column with bad clips reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finetune.descriptors import (
    AUDIO_DESCRIPTORS,
    MIDI_DESCRIPTORS,
    DescriptorError,
    DescriptorExtractor,
    audio_descriptors,
    descriptor_names,
    descriptor_stats,
    midi_descriptors,
    with_descriptors,
)

SR = 22050


def value(values: np.ndarray, name: str, names: tuple[str, ...] = AUDIO_DESCRIPTORS) -> float:
    return float(values[names.index(name)])


def test_names_and_groups() -> None:
    assert len(AUDIO_DESCRIPTORS) == 71 and len(MIDI_DESCRIPTORS) == 16
    names = descriptor_names(["audio", "midi"])
    assert len(names) == 87 and names[0] == "audio.tempo_bpm" and names[71] == "midi.notes_per_second"
    with pytest.raises(
        ValueError, match=r"descriptor groups must be distinct names among audio, midi, got \['pitch'\]"
    ):
        descriptor_names(["pitch"])
    with pytest.raises(ValueError, match="distinct"):
        descriptor_names(["audio", "audio"])


def test_a_tone_has_its_centroid_pitch_class_and_level() -> None:
    t = np.arange(4 * SR) / SR
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)  # A4
    values = audio_descriptors(tone, SR)
    assert values.shape == (71,) and np.isfinite(values).all()
    assert abs(value(values, "centroid_mean") - 440.0) < 60.0
    chroma = values[[AUDIO_DESCRIPTORS.index(f"chroma_{p}_mean") for p in ("G", "Gs", "A", "As", "B")]]
    assert chroma.argmax() == 2 and chroma[2] > 0.9  # A
    assert value(values, "rms_db_range") < 1.0 and value(values, "onset_rate") < 1.0  # steady, no onsets
    at_other_rate = audio_descriptors(
        torch.as_tensor(0.5 * np.sin(2 * np.pi * 440.0 * np.arange(4 * 32000) / 32000)), 32000
    )
    assert (
        abs(value(at_other_rate, "centroid_mean") - value(values, "centroid_mean")) < 5.0
    )  # resampled first


def test_clicks_at_120_bpm_give_the_tempo_and_onset_rate() -> None:
    wave = np.zeros(8 * SR)
    for start in range(0, len(wave), SR // 2):  # a click every 0.5 s
        wave[start : start + 200] = np.hanning(200)
    values = audio_descriptors(wave, SR)
    assert abs(value(values, "tempo_bpm") - 120.0) < 3.0
    assert abs(value(values, "onset_rate") - 2.0) < 0.3


def test_too_short_audio_is_refused() -> None:
    with pytest.raises(DescriptorError, match="a clip of 1000 samples at 22050 Hz is too short"):
        audio_descriptors(np.zeros(1000), SR)


def write_midi(path, notes, pedal=()) -> None:
    """``notes``: (start, end, pitch, velocity); ``pedal``: (time, value) sustain events."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for s, e, p, v in notes]
    piano.control_changes = [pretty_midi.ControlChange(64, v, t) for t, v in pedal]
    midi.instruments.append(piano)
    midi.write(str(path))


def test_midi_descriptors_of_a_written_performance(tmp_path) -> None:
    path = tmp_path / "p.mid"
    # a C major chord (onsets within 30 ms: one onset), then two single notes; 4 s in all
    notes = [
        (0.0, 1.0, 60, 40),
        (0.01, 1.0, 64, 60),
        (0.02, 1.0, 67, 80),
        (1.0, 2.0, 72, 100),
        (3.0, 4.0, 48, 20),
    ]
    write_midi(path, notes, pedal=[(0.5, 127), (1.5, 0), (2.0, 100), (3.0, 0)])
    v = midi_descriptors(path)
    names = MIDI_DESCRIPTORS
    expected = {
        "notes_per_second": 5 / 4.0,
        "velocity_mean": 60.0,
        "velocity_std": float(np.std([40, 60, 80, 100, 20])),
        "pitch_range": 72 - 48,
        "ioi_mean": float(np.mean([1.0, 2.0])),  # chord -> 1.0 -> 3.0
        "ioi_std": 0.5,
        "ioi_cv": 0.5 / 1.5,
        "polyphony_mean": (0.99 + 0.98 + 1.0 + 1.0 + 1.0) / 4.0,
        "pedal_down_fraction": (1.0 + 1.0) / 4.0,
        "pedal_presses_per_second": 2 / 4.0,
    }
    for name, want in expected.items():
        assert value(v, name, names) == pytest.approx(want, abs=1e-2), name
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    with pytest.raises(DescriptorError, match=r"could not parse MIDI file .*bad.mid"):
        midi_descriptors(tmp_path / "bad.mid")


def rows(n: int, seconds: float = 1.0, **extra) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "audio": rng.standard_normal(int(seconds * SR)).astype(np.float32) * 0.1,
            "sample_rate": SR,
            "id": f"c{i}",
            **extra,
        }
        for i in range(n)
    ]


def test_extractor_caches_each_clip_once(tmp_path, monkeypatch) -> None:
    import finetune.descriptors as module

    calls = []
    real = module.audio_descriptors
    monkeypatch.setattr(module, "audio_descriptors", lambda w, sr: calls.append(1) or real(w, sr))
    extractor = DescriptorExtractor(["audio"], cache=tmp_path)
    clips = rows(2)
    first = [extractor(r) for r in clips]
    again = [extractor(r) for r in clips]
    assert len(calls) == 2 and len(list(tmp_path.glob("audio-*.npy"))) == 2
    assert all(np.array_equal(a, b) for a, b in zip(first, again)) and first[0].dtype == np.float32
    changed = {**clips[0], "audio": clips[0]["audio"] * 2}
    extractor(changed)
    assert len(calls) == 3  # other samples: another key
    DescriptorExtractor(["audio"], cache=False)(clips[0])
    assert len(calls) == 4 and len(list(tmp_path.glob("*.npy"))) == 3


def test_with_descriptors_adds_a_column_and_reports_bad_clips(tmp_path) -> None:
    write_midi(tmp_path / "ok.mid", [(0.0, 0.5, 60, 64), (0.5, 1.0, 62, 64)])
    clips = rows(3, midi=str(tmp_path / "ok.mid"))
    clips[1]["midi"] = ""  # no MIDI for this clip
    extractor = DescriptorExtractor(["audio", "midi"], cache=tmp_path / "cache")
    with pytest.warns(
        UserWarning,
        match=r"descriptors: dropped 1 entry; no descriptors \(1\): train/c1 \(clip 'c1' has no 'midi'",
    ):
        out = with_descriptors({"train": clips}, extractor, progress=False)
    train = out["train"]
    assert len(train) == 2 and train[1]["id"] == "c2" and train[1]["descriptors"].shape == (87,)
    mean, std = descriptor_stats(train)
    torch.testing.assert_close(mean, torch.as_tensor(train.descriptors).double().mean(0).float())
    assert std.shape == (87,) and float(std[-16:].abs().max()) == 0.0  # the same MIDI file twice
    with pytest.raises(DescriptorError, match=r"dropped 1 entry.*pass on_error='skip' to drop these clips"):
        with_descriptors({"train": clips}, extractor, on_error="raise", progress=False)
    with pytest.raises(DescriptorError, match=r"no clip of the train split has descriptors"):
        with_descriptors({"train": [clips[1]]}, extractor, progress=False)


def test_file_rows_are_decoded_whole_and_a_damaged_file_is_dropped(tmp_path) -> None:
    """Loaders give file rows (``path`` and header facts, no audio): their descriptors are those of the whole
    decoded file at its own rate, and a file that fails to decode is dropped with its reason."""
    import soundfile as sf

    wave = rows(1, seconds=1.5)[0]["audio"]
    sf.write(tmp_path / "ok.wav", wave, 32000, subtype="FLOAT")
    damaged = wave.copy()
    damaged[100] = np.nan
    sf.write(tmp_path / "nan.wav", damaged, 32000, subtype="FLOAT")
    files = [{"path": str(tmp_path / f"{n}.wav"), "name": n, "frames": len(wave)} for n in ("ok", "nan")]
    extractor = DescriptorExtractor(["audio"], cache=False)
    np.testing.assert_array_equal(extractor(files[0]), extractor({"audio": wave, "sample_rate": 32000}))
    with pytest.warns(
        UserWarning,
        match=r"dropped 1 entry; no descriptors \(1\): train/nan \(clip 'nan': cannot load audio .*nan\.wav'"
        r": has non-finite samples \(1 NaN, 0 Inf\)",
    ):
        out = with_descriptors({"train": files}, extractor, progress=False)
    assert out["train"].indices == [0] and out["train"][0]["name"] == "ok"
