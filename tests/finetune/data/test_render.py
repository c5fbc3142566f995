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
    render_info,
    render_many,
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


def test_every_matching_zone_sounds(tmp_path: Path) -> None:
    """Where a stereo pair's two zones (hard left and right) overlap both sound, mixed to mono at full level;
    velocity layers pick their own sample."""
    tone = sine(440.0, 1.0, SR)
    looped = {KEY_RANGE: (0, 127), SAMPLE_MODES: 1}
    pair = write_sf2(
        tmp_path / "pair.sf2",
        tone,
        SR,
        69,
        [{**looped, PAN: -500}, {**looped, KEY_RANGE: (0, 64), PAN: 500}],
        loop=(0, SR),
    )
    synth = PianoRenderer(SR, pair)
    both = synth.render(_midi(tmp_path / "e4.mid", [(0.0, 0.5, 64, 127)]))  # keys 0-64: both zones
    one = synth.render(_midi(tmp_path / "a4.mid", [(0.0, 0.5, 69, 127)]))  # key 69: the left zone only
    assert len(both) > len(one) * 0.9
    ratio = np.sqrt(np.mean(both[: SR // 2] ** 2) / np.mean(one[: SR // 2] ** 2))
    assert ratio == pytest.approx(2.0, rel=0.01)
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


def test_other_fonts_are_level_matched_to_the_default(tmp_path: Path, renderer: PianoRenderer) -> None:
    assert renderer.level_offset_db == 0.0
    zones = [{KEY_RANGE: (0, 127), SAMPLE_MODES: 1}]
    loud = PianoRenderer(
        SR, write_sf2(tmp_path / "loud.sf2", sine(440.0, 1.0, SR), SR, 69, zones, loop=(0, SR))
    )
    quiet = PianoRenderer(
        SR, write_sf2(tmp_path / "quiet.sf2", 0.25 * sine(440.0, 1.0, SR), SR, 69, zones, loop=(0, SR))
    )
    assert quiet.level_offset_db - loud.level_offset_db == pytest.approx(20 * np.log10(4), abs=0.01)
    for synth in (loud, quiet):  # after matching, the reference notes have the default's mean power
        assert synth._reference_db() == pytest.approx(renderer._reference_db(), abs=1e-6)


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


def test_render_spectrum_and_peak_are_kept_beside_the_render(
    tmp_path: Path, data: Path, renderer: PianoRenderer
) -> None:
    path = render_cached(data / "midi" / "Beethoven_WoO80_thema_8bars_2_1.mid", tmp_path, renderer)
    sidecar = path.with_suffix(".info.json")
    assert sidecar.is_file()
    kept = render_info(path)
    wave, sr = sf.read(path, dtype="float64")
    measured = spectrum(wave, sr)  # from the 16-bit file: the same up to quantisation
    assert kept.spectrum.nyquist == measured.nyquist == SR / 2
    assert kept.spectrum.centroid_hz == pytest.approx(measured.centroid_hz, rel=1e-3)
    assert kept.spectrum.share_above(2000.0) == pytest.approx(measured.share_above(2000.0), rel=1e-2)
    assert kept.spectrum.share_above(4000.0) < 1e-3  # TimGM6mb's piano filter: almost nothing above 4 kHz
    assert kept.peak == pytest.approx(np.abs(wave).max(), abs=1 / 32768) and 0.1 < kept.peak < 1.0
    sidecar.write_text("{truncated")
    again = render_info(path)  # damaged or missing: measured again from the audio
    assert again.spectrum.centroid_hz == pytest.approx(measured.centroid_hz, rel=1e-9)
    assert again.peak == np.abs(wave).max()
    assert render_info(path) == again and sidecar.read_text().startswith('{"spectrum": {"energy"')


def test_a_clipping_render_keeps_its_true_peak(tmp_path: Path, renderer: PianoRenderer) -> None:
    cluster = _midi(tmp_path / "cluster.mid", [(0.0, 1.0, key, 127) for key in range(48, 72)])
    raw = renderer.render(cluster)
    path = render_cached(cluster, tmp_path, renderer)
    wave, _ = sf.read(path, dtype="float32")
    assert (
        render_info(path).peak == pytest.approx(np.abs(raw).max(), rel=1e-6) and render_info(path).peak > 1.2
    )
    assert np.abs(wave).max() == pytest.approx(1.0, abs=1 / 32768)  # the file itself is clipped


def test_render_rejects_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not really")
    with pytest.raises(ValueError, match="could not parse MIDI file .*bad.mid"):
        PianoRenderer(SR).render(bad)
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
        def __init__(self, total: int, initial: int, desc: str, unit: str, disable: bool) -> None:
            self.total, self.n, self.desc, self.steps, self.disable = total, initial, desc, [], disable
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
    render_many(files, tmp_path, settings, progress=False)
    assert [(b.total, b.steps, b.n, b.disable) for b in bars] == [
        (1, [1], 1, False),
        (3, [1, 1], 3, False),
        (3, [], 3, True),
    ]  # one cached: counted at once; progress=False hides the bar
    assert bars[1].desc == "rendering MIDI with TimGM6mb.sf2"
