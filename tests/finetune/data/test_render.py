"""The SoundFont MIDI renderer: notes, velocity, pedal and layered zones; the per-font render cache with its
spectrum; parallel rendering and a progress bar that moves per file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

import finetune.data.render as render
from finetune.data.render import (
    PianoRenderer,
    RenderSettings,
    midi_notes,
    render_cached,
    render_many,
    rendered_spectrum,
)
from finetune.data.spectrum import spectrum
from tests.finetune.data.soundfonts import KEY_RANGE, PAN, SAMPLE_MODES, VEL_RANGE, sine, write_sf2

SR = 16000


@pytest.fixture(scope="module")
def data(shared_dir: Path) -> Path:
    return shared_dir / "data" / "percepiano"


@pytest.fixture(scope="module")
def renderer() -> PianoRenderer:
    return PianoRenderer(SR)


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


def test_every_matching_zone_sounds(tmp_path: Path) -> None:
    """A stereo pair (two zones, hard left and right) plays both samples, mixed to mono at full level; velocity
    layers pick their own sample."""
    tone = sine(440.0, 1.0, SR)
    looped = {KEY_RANGE: (0, 127), SAMPLE_MODES: 1}
    mono = write_sf2(tmp_path / "mono.sf2", tone, SR, 69, [looped], loop=(0, SR))
    pair = write_sf2(
        tmp_path / "pair.sf2", tone, SR, 69, [{**looped, PAN: -500}, {**looped, PAN: 500}], loop=(0, SR)
    )
    note = _midi(tmp_path / "a4.mid", [(0.0, 0.5, 69, 127)])
    one, two = PianoRenderer(SR, mono).render(note), PianoRenderer(SR, pair).render(note)
    assert len(one) == len(two)
    np.testing.assert_allclose(two, 2 * one, rtol=1e-5, atol=1e-7)
    layers = write_sf2(
        tmp_path / "layers.sf2",
        np.concatenate([tone, sine(880.0, 1.0, SR)]),
        SR,
        69,
        [{**looped, VEL_RANGE: (0, 63)}, {**looped, VEL_RANGE: (64, 127), 0: SR}],  # 0: startAddrsOffset
        loop=(0, SR),
    )
    synth = PianoRenderer(SR, layers)
    for velocity, freq in ((40, 440.0), (100, 880.0)):
        body = synth.render(_midi(tmp_path / "v.mid", [(0.0, 0.6, 69, velocity)]))[
            int(0.1 * SR) : int(0.5 * SR)
        ]
        assert _band_energy(body, freq * 0.97, freq * 1.03) > 100 * _band_energy(body, 0.0, freq * 0.8)


def test_render_real_midi_is_deterministic_and_cached_per_font(tmp_path: Path, data: Path) -> None:
    midi = data / "midi" / "Beethoven_WoO80_thema_8bars_1_1.mid"
    default = PianoRenderer(SR)
    first = render_cached(midi, tmp_path / "a", default)
    second = render_cached(midi, tmp_path / "b", default)
    assert first.parent.name == f"TimGM6mb-{default.soundfont_sha256[:12]}" == second.parent.name
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    mtime = first.stat().st_mtime_ns
    assert render_cached(midi, tmp_path / "a", default) == first and first.stat().st_mtime_ns == mtime
    assert render_cached(midi, tmp_path / "a", PianoRenderer(22050)) != first  # the rate is part of the key
    font = write_sf2(
        tmp_path / "Mine.sf2", sine(440.0, 1.0, SR), SR, 69, [{KEY_RANGE: (0, 127), SAMPLE_MODES: 1}]
    )
    other = render_cached(midi, tmp_path / "a", PianoRenderer(SR, font))
    assert other.parent.name == f"Mine-{RenderSettings.of(SR, font).soundfont_sha256[:12]}"
    assert other.name.split(".")[0] == first.name.split(".")[0] == "Beethoven_WoO80_thema_8bars_1_1"
    wave, sr = sf.read(first, dtype="float32")
    notes, _ = midi_notes(midi)
    pitch = int(np.bincount(notes[:, 2].astype(int)).argmax())  # the most played key
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    assert sr == SR and _band_energy(wave, f0 * 0.98, f0 * 1.02) > 10 * _band_energy(
        wave, f0 * 1.04, f0 * 1.08
    )
    assert np.abs(wave).max() < 1.0


def test_render_spectrum_is_kept_beside_the_render(
    tmp_path: Path, data: Path, renderer: PianoRenderer
) -> None:
    path = render_cached(data / "midi" / "Beethoven_WoO80_thema_8bars_2_1.mid", tmp_path, renderer)
    sidecar = path.with_suffix(".spectrum.json")
    assert sidecar.is_file()
    kept = rendered_spectrum(path)
    wave, sr = sf.read(path, dtype="float64")
    measured = spectrum(wave, sr)  # from the 16-bit file: the same up to quantisation
    assert kept.nyquist == measured.nyquist == SR / 2
    assert kept.centroid_hz == pytest.approx(measured.centroid_hz, rel=1e-3)
    assert kept.share_above(2000.0) == pytest.approx(measured.share_above(2000.0), rel=1e-2)
    assert kept.share_above(4000.0) < 1e-3  # TimGM6mb's piano filter: almost nothing above 4 kHz
    sidecar.write_text("{truncated")
    again = rendered_spectrum(path)  # a damaged or missing summary is measured again from the audio
    assert again.centroid_hz == pytest.approx(measured.centroid_hz, rel=1e-9)
    assert rendered_spectrum(path) == again and sidecar.read_text().startswith('{"energy"')


def test_render_rejects_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not really")
    with pytest.raises(ValueError, match="could not parse MIDI file .*bad.mid"):
        midi_notes(bad)
    with pytest.raises(ValueError, match="is not a SoundFont 2 file"):
        PianoRenderer(SR, soundfont=bad)
    with pytest.raises(ValueError, match="sample_rate must be at least 4000 Hz"):
        PianoRenderer(1000)
    with pytest.raises(FileNotFoundError, match=r"sound font .*nowhere\.sf2 does not exist; pass the path"):
        RenderSettings.of(SR, tmp_path / "nowhere.sf2")


def test_render_many_in_parallel_matches_serial_and_reports_bad_files(tmp_path: Path, data: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not really")
    files = [
        data / "midi" / "Beethoven_WoO80_thema_8bars_2_1.mid",
        bad,
        _midi(tmp_path / "n.mid", [(0.0, 0.2, 60, 80)]),
        tmp_path / "missing.mid",
    ]
    settings = RenderSettings.of(SR)
    serial = render_many(files, tmp_path / "serial", settings)
    parallel = render_many(files, tmp_path / "parallel", settings, num_workers=2)
    for results in (serial, parallel):
        assert isinstance(results[1], ValueError) and "could not parse MIDI file" in str(results[1])
        assert isinstance(results[3], ValueError) and "could not read MIDI file" in str(results[3])
    for a, b in zip(serial[::2], parallel[::2]):
        assert a.parent.parent.name == "serial" and b.parent.parent.name == "parallel"
        assert a.read_bytes() == b.read_bytes()


def test_render_many_progress_moves_per_file(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = []

    class Bar:
        def __init__(self, total: int, initial: int, desc: str, unit: str) -> None:
            self.total, self.n, self.desc, self.steps = total, initial, desc, []
            bars.append(self)

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: int = 1) -> None:
            self.n += n
            self.steps.append(n)

    monkeypatch.setattr(render, "tqdm", Bar)
    names = [
        "Beethoven_WoO80_thema_8bars_1_1",
        "Beethoven_WoO80_thema_8bars_2_1",
        "Beethoven_WoO80_thema_8bars_3_1",
    ]
    files = [data / "midi" / f"{n}.mid" for n in names]
    settings = RenderSettings.of(8000)
    render_many(files[:1], tmp_path, settings)
    render_many(files, tmp_path, settings, num_workers=2)
    assert [(b.total, b.steps, b.n) for b in bars] == [
        (1, [1], 1),
        (3, [1, 1], 3),
    ]  # one cached: counted at once
    assert bars[1].desc == "rendering MIDI with TimGM6mb.sf2"
