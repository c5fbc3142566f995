"""load_audio round trips through soundfile, mono downmix, resampling on load, and one clear AudioLoadError per
kind of bad file; windowed reads (load_audio_span) against the whole-file path in every seekable format;
audio_info; validate_waveform's checks and messages."""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.data.audio import (
    AudioInfo,
    AudioLoadError,
    audio_info,
    load_audio,
    load_audio_span,
    validate_waveform,
)
from finetune.data.resample import resample
from tests.audio_signals import music


def _stereo(sample_rate: int, seconds: float = 0.5) -> np.ndarray:
    """[N, 2] float32 music-like audio with different channels."""
    n = int(sample_rate * seconds)
    return (0.8 * music(2, n, sample_rate, seed=7)).T.numpy().copy()


def _tones(sample_rate: int, n: int) -> np.ndarray:
    t = np.arange(n) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)


def _snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum()))


@pytest.mark.parametrize(
    ("fmt", "subtype", "step"),
    [
        ("WAV", "PCM_16", 2.0**-15),
        ("WAV", "PCM_24", 2.0**-23),
        ("WAV", "FLOAT", 0.0),
        ("FLAC", "PCM_16", 2.0**-15),
    ],
)
def test_lossless_round_trip(tmp_path: Path, fmt: str, subtype: str, step: float) -> None:
    data = _stereo(22050)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, data, 22050, format=fmt, subtype=subtype)
    wave, rate = load_audio(path, mono=False)
    assert rate == 22050 and wave.dtype == torch.float32 and wave.shape == (2, data.shape[0])
    assert torch.equal(wave, torch.from_numpy(sf.read(path, dtype="float32", always_2d=True)[0].T.copy()))
    # Quantisation to the sample format is the only change.
    assert (wave - torch.from_numpy(data.T)).abs().max() <= step


def _lossy_formats() -> list[tuple[str, str, str, int]]:
    formats = [("OGG", "VORBIS", "ogg", 44100)]
    if "OPUS" in sf.available_subtypes("OGG"):
        formats.append(("OGG", "OPUS", "opus", 48000))
    if "MP3" in sf.available_formats():
        formats.append(("MP3", "MPEG_LAYER_III", "mp3", 44100))
    return formats


@pytest.mark.parametrize(("fmt", "subtype", "ext", "sample_rate"), _lossy_formats())
def test_lossy_round_trip(tmp_path: Path, fmt: str, subtype: str, ext: str, sample_rate: int) -> None:
    n = sample_rate // 2
    data = np.stack([_tones(sample_rate, n), 0.5 * _tones(sample_rate, n)], axis=1)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, data, sample_rate, format=fmt, subtype=subtype)
    wave, rate = load_audio(path, mono=False)
    assert rate == sample_rate and wave.shape == (2, n)
    edge = 2048  # codec start-up and end effects
    for ch in range(2):
        assert _snr_db(data[edge:-edge, ch], wave[ch, edge:-edge].numpy()) > 20.0  # measured 30-37 dB


def test_mono_downmix_is_the_channel_mean(tmp_path: Path) -> None:
    data = _stereo(16000)
    path = tmp_path / "stereo.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    stereo, _ = load_audio(path, mono=False)
    mono, rate = load_audio(path)
    assert rate == 16000 and mono.shape == (1, data.shape[0])
    assert torch.equal(mono, stereo.mean(dim=0, keepdim=True))
    assert torch.allclose(mono[0], torch.from_numpy(data.mean(axis=1)), atol=1e-7)


@pytest.mark.parametrize(("file_rate", "target"), [(44100, 16000), (22050, 32000), (16000, 16000)])
def test_resample_on_load(tmp_path: Path, file_rate: int, target: int) -> None:
    data = _stereo(file_rate, seconds=0.3)
    path = tmp_path / "clip.wav"
    sf.write(path, data, file_rate, subtype="FLOAT")
    wave, rate = load_audio(path, sample_rate=target)
    assert rate == target
    assert wave.shape == (1, math.ceil(data.shape[0] * target / file_rate))
    native, _ = load_audio(path)
    assert torch.equal(wave, resample(native, file_rate, target))
    both, _ = load_audio(path, sample_rate=target, mono=False)
    assert both.shape == (2, wave.shape[1])


def test_wav_of_unknown_length_is_not_called_truncated(tmp_path: Path) -> None:
    path = tmp_path / "stream.wav"
    data = _tones(16000, 4000)
    sf.write(path, data, 16000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data")
    raw[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFFF)  # what streaming writers put there
    path.write_bytes(bytes(raw))
    wave, _ = load_audio(path)
    assert wave.shape == (1, 4000)


# --- bad files --------------------------------------------------------------------------------------------------


def _wav(path: Path, n: int = 16000, sample_rate: int = 16000, subtype: str = "PCM_16") -> Path:
    sf.write(path, _tones(sample_rate, n), sample_rate, subtype=subtype)
    return path


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioLoadError, match=r"cannot load audio '.*nothing\.wav': file not found"):
        load_audio(tmp_path / "nothing.wav")
    with pytest.raises(AudioLoadError, match="not a regular file"):
        load_audio(tmp_path)


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(
        AudioLoadError, match=r"notes\.wav': not readable as audio \(libsndfile: Format not recognised"
    ):
        load_audio(path)


def test_truncated_wav(tmp_path: Path) -> None:
    path = _wav(tmp_path / "cut.wav")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # the header still says 16000 frames
    with pytest.raises(
        AudioLoadError,
        match=r"cut\.wav': truncated: the header declares 16000 frames but only 7989 are present",
    ):
        load_audio(path)


def _truncatable_formats() -> list[tuple[str, str, str]]:
    formats = [("FLAC", "flac", r"not readable as audio \(libsndfile: .*lost sync")]
    if "MP3" in sf.available_formats():
        formats.append(
            ("MP3", "mp3", r"truncated: the header declares 16000 frames but only \d+ could be decoded")
        )
    return formats


@pytest.mark.parametrize(("fmt", "ext", "reason"), _truncatable_formats())
def test_truncated_compressed_files(tmp_path: Path, fmt: str, ext: str, reason: str) -> None:
    path = tmp_path / f"cut.{ext}"
    sf.write(path, _tones(16000, 16000), 16000, format=fmt)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AudioLoadError, match=rf"cut\.{ext}': {reason}"):
        load_audio(path)


def test_zero_length_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioLoadError, match=r"empty\.wav': contains no audio \(0 frames\)"):
        load_audio(path)


@pytest.mark.parametrize(("value", "counts"), [(np.nan, r"1 NaN, 0 Inf"), (np.inf, r"0 NaN, 1 Inf")])
def test_non_finite_samples(tmp_path: Path, value: float, counts: str) -> None:
    data = np.stack([_tones(16000, 1000)] * 2, axis=1)
    data[321, 1] = value
    path = tmp_path / "bad.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(
        AudioLoadError,
        match=rf"bad\.wav': has non-finite samples \({counts}\), the first at index \[1, 321\]",
    ):
        load_audio(path)


def test_absurd_file_sample_rates(tmp_path: Path) -> None:
    one_hz = _wav(tmp_path / "one_hz.wav", n=100, sample_rate=1)
    with pytest.raises(
        AudioLoadError, match=r"one_hz\.wav': the file's sample rate 1 Hz is outside \[1000, 768000\] Hz"
    ):
        load_audio(one_hz)
    path = _wav(tmp_path / "zero_hz.wav", n=100)
    raw = bytearray(path.read_bytes())
    raw[24:28] = struct.pack("<I", 0)  # the fmt chunk's sample rate field
    path.write_bytes(bytes(raw))
    with pytest.raises(AudioLoadError, match=r"zero_hz\.wav': not readable as audio \(libsndfile: .+\)"):
        load_audio(path)


def test_zero_byte_file_is_called_empty(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    for read in (load_audio, audio_info, lambda p: load_audio_span(p, 0, 10)):
        with pytest.raises(AudioLoadError, match=r"zero\.wav': the file is empty \(0 bytes\)$"):
            read(path)


@pytest.mark.parametrize("target", [np.int64(8000), np.int32(8000), np.uint16(8000)])
def test_integer_like_target_rates_are_accepted(tmp_path: Path, target: object) -> None:
    path = _wav(tmp_path / "ok.wav", n=1600)
    wave, rate = load_audio(path, sample_rate=target)  # type: ignore[arg-type]
    assert type(rate) is int and rate == 8000 and wave.shape == (1, 800)
    assert load_audio_span(path, 0, 100, sample_rate=target).shape == (1, 100)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", [0, -16000, 800_000, 16000.5, True, np.bool_(True), np.float64(16000.0)])
def test_absurd_target_sample_rates(tmp_path: Path, target: object) -> None:
    path = _wav(tmp_path / "ok.wav", n=100)
    with pytest.raises(AudioLoadError, match=r"ok\.wav': the requested sample rate"):
        load_audio(path, sample_rate=target)  # type: ignore[arg-type]


def test_unresamplable_ratio_is_an_audio_load_error(tmp_path: Path) -> None:
    path = _wav(tmp_path / "odd.wav", n=441, sample_rate=44101)
    with pytest.raises(
        AudioLoadError, match=r"odd\.wav': cannot resample 44101 -> 16000 Hz: .*polyphase bank"
    ):
        load_audio(path, sample_rate=16000)


def test_audio_load_error_is_a_value_error_and_pickles() -> None:
    err = AudioLoadError("/data/x.wav", "file not found")
    assert isinstance(err, ValueError)
    assert (err.path, err.reason, str(err)) == (
        "/data/x.wav",
        "file not found",
        "cannot load audio '/data/x.wav': file not found",
    )
    again = pickle.loads(pickle.dumps(err))  # DataLoader workers send errors across processes
    assert type(again) is AudioLoadError and str(again) == str(err)


# --- validate_waveform --------------------------------------------------------------------------------------------


def test_validate_waveform_accepts_good_audio() -> None:
    wave = torch.zeros(2, 16000)
    assert validate_waveform(wave, 16000, min_seconds=1.0, channels=2) is None
    assert validate_waveform(torch.zeros(3, 1, 100, dtype=torch.float64), 8000, channels=1) is None


@pytest.mark.parametrize(
    ("wave", "kwargs", "message"),
    [
        (
            torch.zeros(1, 100, dtype=torch.int16),
            {},
            r"clip7: expected a floating-point tensor, got torch\.int16",
        ),
        ([0.0, 1.0], {}, r"clip7: expected a floating-point tensor, got list"),
        (torch.tensor(1.0), {}, r"clip7: expected a waveform \[\.\.\., N\], got a 0-d tensor"),
        (torch.zeros(1, 100), {"sample_rate": 0}, r"clip7: sample rate 0 Hz is outside \[1000, 768000\] Hz"),
        (
            torch.zeros(1, 100),
            {"sample_rate": 16000.0},
            r"clip7: sample rate must be an int \(Hz\), got 16000\.0",
        ),
        (torch.zeros(1, 0), {}, r"clip7: is empty \(shape \[1, 0\]\)"),
        (torch.zeros(0, 100), {}, r"clip7: is empty \(shape \[0, 100\]\)"),
        (
            torch.zeros(2, 100),
            {"channels": 1},
            r"clip7: expected 1 channel\(s\) \[\.\.\., 1, N\], got shape \[2, 100\]",
        ),
        (
            torch.zeros(100),
            {"channels": 1},
            r"clip7: expected 1 channel\(s\) \[\.\.\., 1, N\], got shape \[100\]",
        ),
        (
            torch.zeros(1, 8000),
            {"min_seconds": 1.0},
            r"clip7: is too short: 0\.500 s \(8000 samples at 16000 Hz\), needs at least 1 s",
        ),
        (
            torch.tensor([[0.0, float("inf"), float("nan"), float("nan")]]),
            {},
            r"clip7: has non-finite samples \(2 NaN, 1 Inf\), the first at index \[0, 1\]",
        ),
    ],
)
def test_validate_waveform_names_the_problem(wave: object, kwargs: dict, message: str) -> None:
    kwargs = {"sample_rate": 16000, **kwargs}
    with pytest.raises(ValueError, match=message):
        validate_waveform(wave, name="clip7", **kwargs)  # type: ignore[arg-type]


# --- headers and windowed reads -------------------------------------------------------------------------------------


def test_audio_info_reads_the_header_and_catches_truncated_wavs(tmp_path: Path) -> None:
    path = tmp_path / "x.flac"
    sf.write(path, _stereo(22050, seconds=0.5), 22050, format="FLAC")
    info = audio_info(path)
    assert info == AudioInfo(str(path), 11025, 22050, 2, "FLAC", "PCM_16")
    assert info.duration == 0.5 and info.length_at(16000) == 8000 and info.length_at(np.int64(44100)) == 22050
    cut = _wav(tmp_path / "cut.wav")
    cut.write_bytes(cut.read_bytes()[:20000])
    with pytest.raises(
        AudioLoadError, match=r"cut\.wav': truncated: the header declares 16000 frames but only"
    ):
        audio_info(cut)


def _long_signal(sample_rate: int, seconds: float) -> np.ndarray:
    """[N, 2] noise plus tones: every window differs, so a misplaced window cannot pass."""
    n = int(sample_rate * seconds)
    rng = np.random.default_rng(3)
    t = np.arange(n) / sample_rate
    tones = 0.3 * np.sin(2 * np.pi * (300 + 40 * t) * t)
    return np.stack([tones + 0.05 * rng.standard_normal(n), 0.5 * tones], axis=1).astype(np.float32)


def _seekable_formats() -> list[tuple[str, str, str, int]]:
    formats = [
        ("WAV", "PCM_16", "wav", 44100),
        ("FLAC", "PCM_16", "flac", 44100),
        ("OGG", "VORBIS", "ogg", 44100),
    ]
    if "OPUS" in sf.available_subtypes("OGG"):
        formats.append(("OGG", "OPUS", "opus", 48000))
    if "MP3" in sf.available_formats():
        formats.append(("MP3", "MPEG_LAYER_III", "mp3", 44100))
    return formats


@pytest.mark.parametrize(("fmt", "subtype", "ext", "file_rate"), _seekable_formats())
def test_span_equals_the_same_samples_of_the_whole_file(
    tmp_path: Path, fmt: str, subtype: str, ext: str, file_rate: int
) -> None:
    """Every window (start, middle, the codec's last page, past both ends) matches cropping the fully decoded and
    resampled file: exactly at the file's rate, to the resampler's float rounding at another rate."""
    path = tmp_path / f"long.{ext}"
    with sf.SoundFile(path, "w", file_rate, 2, format=fmt, subtype=subtype) as f:
        f.write(_long_signal(file_rate, 4.0))
    for target, atol in ((None, 0.0), (32000, 2e-6)):
        full, rate = load_audio(path, sample_rate=target, mono=False)
        n = full.shape[-1]
        for start in (-700, 0, 1234, n // 2 + 7, n - 9000, n - 300):
            stop = start + rate // 2
            span = load_audio_span(path, start, stop, sample_rate=target, mono=False)
            expected = torch.zeros(2, stop - start)
            lo, hi = max(start, 0), min(stop, n)
            expected[:, lo - start : hi - start] = full[:, lo:hi]
            torch.testing.assert_close(
                span, expected, atol=atol, rtol=0, msg=f"{ext} at {target}: start {start}"
            )
        mono = load_audio_span(path, 100, 200, sample_rate=target)
        torch.testing.assert_close(
            mono, load_audio(path, sample_rate=target)[0][:, 100:200], atol=atol, rtol=0
        )


def test_a_span_decodes_only_its_frames_and_their_filter_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "long.flac"
    sf.write(path, _long_signal(44100, 20.0), 44100, format="FLAC")
    reads: list[tuple[int, int]] = []
    read = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, **kwargs: object) -> np.ndarray:
        reads.append((self.tell(), frames))
        return read(self, frames, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    load_audio_span(path, 400_000, 410_000)  # at the file's rate: exactly the span
    load_audio_span(path, 400_000, 432_000, sample_rate=32000)  # 1 s at 32 kHz: 44100 frames plus the context
    assert reads[0] == (400_000, 10_000)
    start, frames = reads[1]
    assert 551_250 - 600 <= start < 551_250 and 44_100 < frames < 44_100 + 1200  # half-width 50 on each side


def test_span_outside_the_audio_is_silence_and_stop_before_start_is_refused(tmp_path: Path) -> None:
    path = _wav(tmp_path / "a.wav", n=1000)
    assert torch.equal(load_audio_span(path, 2000, 2500), torch.zeros(1, 500))
    assert torch.equal(load_audio_span(path, -600, -100), torch.zeros(1, 500))
    assert load_audio_span(path, 5, 5).shape == (1, 0)
    with pytest.raises(ValueError, match=r"span \[10, 5\) of .*a\.wav: stop must be >= start"):
        load_audio_span(path, 10, 5)


def test_span_reports_only_the_damage_it_reads(tmp_path: Path) -> None:
    data = _tones(16000, 16000)
    data[12000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    assert load_audio_span(path, 0, 8000).isfinite().all()
    with pytest.raises(
        AudioLoadError,
        match=r"nan\.wav': has non-finite samples \(1 NaN, 0 Inf\) in frames 8000-16000, the first at frame 12000 of channel 0$",
    ):
        load_audio_span(path, 8000, 16000)
    mp3 = tmp_path / "cut.mp3"
    if "MP3" in sf.available_formats():
        sf.write(mp3, _tones(16000, 16000), 16000, format="MP3")
        mp3.write_bytes(mp3.read_bytes()[: len(mp3.read_bytes()) // 2])
        assert load_audio_span(mp3, 0, 2000).shape == (1, 2000)  # the part still present
        with pytest.raises(
            AudioLoadError, match=r"cut\.mp3': truncated: the header declares 16000 frames but decoding"
        ):
            load_audio_span(mp3, 14000, 16000)
