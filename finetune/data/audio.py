"""Audio file I/O: ``load_audio`` (a whole file), ``load_audio_span`` (a window of it, decoding only that part),
``audio_info`` (the header), ``AudioLoadError`` and ``validate_waveform``.

Every problem with a file (missing, empty, not audio, truncated, non-finite samples, an implausible sample rate,
a decoder failure) surfaces as one :class:`AudioLoadError` that names the file and the reason, so data sets can
report or skip bad files without catching backend exceptions. ``validate_waveform`` holds the checks on decoded
audio, for the data layer to reuse on waveforms from any source.

Windowed reads. libsndfile seeks sample-exactly in WAV, FLAC, Ogg Vorbis, Ogg Opus and MP3 (its MP3 seek scans
frame headers from the start, so its cost grows with the position; see :mod:`finetune.data.decoded` for the cache
that avoids it). :func:`load_audio_span` seeks to the first frame a window needs, decodes up to the last, and
resamples only that span with the resampler's half-width of context on each side, so a window equals the same
samples of the fully decoded and resampled file to float rounding.
"""

from __future__ import annotations

import math
import numbers
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from finetune.data.resample import Resampler, resample, resampled_length

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
# A RIFF data chunk size of 0xFFFFFFFF means "unknown length" (written by streaming encoders).
_RIFF_UNKNOWN_SIZE = 0xFFFFFFFF
_RIFF_MAX_CHUNKS = 64
# Formats whose seek is inexact near the end: libsndfile (1.2.2) lands 48 samples off when an Ogg Vorbis seek
# target lies in the stream's last page. A span starting within this many frames of the end is read from there
# instead (Ogg pages hold far less: libogg flushes a page at about 4 KB, under 2 s even at 16 kbit/s).
_SEEK_TAIL = {("OGG", "VORBIS"): 1 << 17}

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "AudioInfo",
    "AudioLoadError",
    "audio_info",
    "load_audio",
    "load_audio_span",
    "validate_waveform",
]


class AudioLoadError(ValueError):
    """An audio file that cannot be loaded; ``str(error)`` names the file and the reason.

    Args:
        path: The file.
        reason: What is wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot load audio '{self.path}': {reason}")

    def __reduce__(self) -> tuple[type[AudioLoadError], tuple[str, str]]:
        return type(self), (self.path, self.reason)


def _rate_problem(sample_rate: object) -> str | None:
    """Why ``sample_rate`` is not a usable rate, or None. Integers of any type (``np.int64``) are fine."""
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, numbers.Integral):
        return f"sample rate must be an int (Hz), got {sample_rate!r}"
    if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        return f"sample rate {int(sample_rate)} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz"
    return None


def _waveform_problem(
    wave: object, sample_rate: int, min_seconds: float | None, channels: int | None
) -> str | None:
    """The first problem found with a waveform, or None when it is fine."""
    if not isinstance(wave, Tensor) or not wave.is_floating_point():
        kind = wave.dtype if isinstance(wave, Tensor) else type(wave).__name__
        return f"expected a floating-point tensor, got {kind}"
    if wave.ndim == 0:
        return "expected a waveform [..., N], got a 0-d tensor"
    rate_problem = _rate_problem(sample_rate)
    if rate_problem is not None:
        return rate_problem
    if channels is not None and (wave.ndim < 2 or wave.shape[-2] != channels):
        return f"expected {channels} channel(s) [..., {channels}, N], got shape {list(wave.shape)}"
    n = wave.shape[-1]
    if wave.numel() == 0:
        return f"is empty (shape {list(wave.shape)})"
    if min_seconds is not None and n < min_seconds * sample_rate:
        return (
            f"is too short: {n / sample_rate:.3f} s ({n} samples at {sample_rate} Hz), "
            f"needs at least {min_seconds:g} s"
        )
    bad = ~torch.isfinite(wave)
    if bool(bad.any()):
        first = [int(i) for i in bad.nonzero()[0]]
        nan, inf = int(torch.isnan(wave).sum()), int(torch.isinf(wave).sum())
        return f"has non-finite samples ({nan} NaN, {inf} Inf), the first at index {first}"
    return None


def validate_waveform(
    wave: Tensor,
    sample_rate: int,
    *,
    min_seconds: float | None = None,
    channels: int | None = None,
    name: str = "waveform",
) -> None:
    """Check a decoded waveform, raising one clear error for the first problem found.

    Checks, in order: a floating-point tensor with at least one dimension; ``sample_rate`` an integer in
    ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]``; ``channels`` channels on dim -2 when given; not empty; at least
    ``min_seconds`` long when given; no NaN or Inf.

    Args:
        wave: The waveform.
        sample_rate: Its sample rate in Hz.
        min_seconds: Minimum duration, or None for any.
        channels: Required channel count (dim -2), or None for any shape.
        name: What to call the waveform in the message (e.g. a file name or a data set key).

    Shapes:
        wave ``[..., N]`` (``[..., channels, N]`` when ``channels`` is given).

    Raises:
        ValueError: ``"{name}: {problem}"``.
    """
    problem = _waveform_problem(wave, sample_rate, min_seconds, channels)
    if problem is not None:
        raise ValueError(f"{name}: {problem}")


def _riff_truncation(path: Path) -> str | None:
    """For a RIFF/WAVE file, a description of how its data chunk is cut short, or None when it is whole.

    libsndfile quietly shortens such files to the bytes present, so this reads the chunk headers itself.
    """
    file_size = path.stat().st_size
    with path.open("rb") as fh:
        header = fh.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        block_align = 0
        for _ in range(_RIFF_MAX_CHUNKS):
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                fmt = fh.read(min(size, 16))
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
                fh.seek(size - len(fmt) + (size & 1), os.SEEK_CUR)
            elif chunk_id == b"data":
                present = file_size - fh.tell()
                if size in (0, _RIFF_UNKNOWN_SIZE) or present >= size:
                    return None
                if block_align:
                    return (
                        f"declares {size // block_align} frames but only {present // block_align} are present"
                    )
                return f"declares {size} bytes of samples but only {present} are present"
            else:
                fh.seek(size + (size & 1), os.SEEK_CUR)
    return None


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says (:func:`audio_info`).

    Attributes:
        path: The file.
        frames: Samples per channel at the file's rate.
        sample_rate: The file's rate in Hz.
        channels: Channel count.
        format: libsndfile's container name (``WAV``, ``FLAC``, ``OGG``, ``MP3``, ...).
        subtype: libsndfile's encoding name (``PCM_16``, ``VORBIS``, ``OPUS``, ``MPEG_LAYER_III``, ...).
    """

    path: str
    frames: int
    sample_rate: int
    channels: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate

    def length_at(self, sample_rate: int) -> int:
        """Samples the audio has when resampled to ``sample_rate`` (what :func:`load_audio` returns)."""
        return resampled_length(self.frames, self.sample_rate, int(sample_rate))


def _check_file(path: Path) -> None:
    """Raise :class:`AudioLoadError` for a path that is missing, not a file, or an empty file."""
    if not path.exists():
        raise AudioLoadError(path, "file not found")
    if not path.is_file():
        raise AudioLoadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioLoadError(path, "the file is empty (0 bytes)")


def _libsndfile_error(path: Path, error: Exception) -> AudioLoadError:
    detail = getattr(error, "error_string", None) or str(error)
    return AudioLoadError(path, f"not readable as audio (libsndfile: {detail})")


def _open_checks(path: Path, f: sf.SoundFile) -> None:
    """The checks every read makes on an opened file: a plausible rate and at least one frame."""
    rate_problem = _rate_problem(f.samplerate)
    if rate_problem is not None:
        raise AudioLoadError(path, f"the file's {rate_problem}")
    if f.frames == 0:
        raise AudioLoadError(path, "contains no audio (0 frames)")


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header (no audio is decoded), with the checks :func:`load_audio` makes before decoding.

    A WAV whose data chunk is cut short is reported here (its chunk headers say so); damage inside compressed
    data (and NaN samples) shows only when the audio is decoded.

    Raises:
        AudioLoadError: The file is missing, empty, not audio, has no frames, a sample rate outside
            ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]``, or is a truncated WAV.
    """
    path = Path(path)
    _check_file(path)
    try:
        with sf.SoundFile(path) as f:
            _open_checks(path, f)
            info = AudioInfo(
                str(path), int(f.frames), int(f.samplerate), int(f.channels), f.format, f.subtype
            )
    except sf.SoundFileError as e:
        raise _libsndfile_error(path, e) from e
    if info.format in ("WAV", "WAVEX"):
        truncation = _riff_truncation(path)
        if truncation is not None:
            raise AudioLoadError(path, f"truncated: the header {truncation}")
    return info


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode a whole file to float32 ``[N, C]`` with soundfile, checking rate, emptiness and truncation."""
    _check_file(path)
    try:
        with sf.SoundFile(path) as f:
            _open_checks(path, f)
            declared, file_format = f.frames, f.format
            data = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except sf.SoundFileError as e:
        raise _libsndfile_error(path, e) from e
    if data.shape[0] < declared:
        raise AudioLoadError(
            path,
            f"truncated: the header declares {declared} frames but only {data.shape[0]} could be decoded",
        )
    if file_format in ("WAV", "WAVEX"):
        truncation = _riff_truncation(path)
        if truncation is not None:
            raise AudioLoadError(path, f"truncated: the header {truncation}")
    return data, rate


def _requested_rate(path: Path, sample_rate: object) -> int | None:
    if sample_rate is None:
        return None
    rate_problem = _rate_problem(sample_rate)
    if rate_problem is not None:
        raise AudioLoadError(path, f"the requested {rate_problem}")
    return int(sample_rate)  # type: ignore[call-overload]


def load_audio(
    path: str | os.PathLike[str], sample_rate: int | None = None, mono: bool = True
) -> tuple[Tensor, int]:
    """Read an audio file (wav, flac, ogg/vorbis, opus, mp3, ... whatever libsndfile decodes) as float32.

    Integer PCM is scaled to [-1, 1). Multi-channel audio is averaged to one channel when ``mono``. With
    ``sample_rate`` (any integer type) the audio is resampled to it by :func:`finetune.data.resample.resample`
    (Kaiser-windowed sinc, ~100 dB stop band; see that module for the method).

    A truncated file is an error, not a short read: for WAV, the data chunk's declared size is compared with
    the bytes present (sizes 0 and 0xFFFFFFFF mean "unknown" and are accepted); for other formats, the frames
    decoded are compared with the frames the header declares.

    Args:
        path: The file.
        sample_rate: Target sample rate in Hz, or None to keep the file's.
        mono: Average the channels into one.

    Returns:
        ``(waveform, rate)``: the samples and their sample rate (``sample_rate`` when given).

    Shapes:
        waveform ``[C, N]`` (``[1, N]`` when ``mono``), ``N = ceil(frames * rate / file_rate)``.

    Raises:
        AudioLoadError: The file is missing, empty, not audio, truncated, has NaN/Inf samples or a sample rate
            outside ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]``, or ``sample_rate`` is outside that range.
    """
    path = Path(path)
    target = _requested_rate(path, sample_rate)
    data, rate = _decode(path)
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    problem = _waveform_problem(wave, rate, None, None)
    if problem is not None:
        raise AudioLoadError(path, problem)
    if mono:
        wave = wave.mean(dim=0, keepdim=True)
    if target is None or target == rate:
        return wave, rate
    try:
        return resample(wave, rate, target), target
    except ValueError as e:
        raise AudioLoadError(path, f"cannot resample {rate} -> {target} Hz: {e}") from e


def _resampler(path: Path, rate: int, target: int) -> Resampler:
    try:
        return Resampler(rate, target)
    except ValueError as e:
        raise AudioLoadError(path, f"cannot resample {rate} -> {target} Hz: {e}") from e


def _span_geometry(
    lo: int, hi: int, frames: int, rate: int, target: int, half_width: int
) -> tuple[int, int, int]:
    """The input frames ``[a, b)`` that outputs ``[lo, hi)`` at ``target`` Hz depend on, and the output index of
    input frame ``a``. ``a`` is a multiple of the reduced input step, so that it maps to a whole output index."""
    g = math.gcd(rate, target)
    m, l_ = rate // g, target // g
    a = max(0, lo * m // l_ - half_width - 1) // m * m
    b = min(frames, -(-(hi - 1) * m // l_) + half_width + 2)
    return a, b, a // m * l_


def load_audio_span(
    path: str | os.PathLike[str],
    start: int,
    stop: int,
    sample_rate: int | None = None,
    mono: bool = True,
) -> Tensor:
    """Samples ``[start, stop)`` of a file's audio at ``sample_rate``, decoding only the frames they need.

    The result equals ``load_audio(path, sample_rate, mono)[0][..., start:stop]`` to float rounding (exactly
    without resampling), with zeros where the span reaches outside the audio (negative ``start``, ``stop``
    past the end), as the resampler takes the signal to be zero there. Only the decoded frames are checked:
    damage elsewhere in the file (truncation, NaN samples) is found when a span that covers it is read.

    Args:
        path: The file.
        start: First sample, at ``sample_rate`` (may be negative).
        stop: One past the last sample (``>= start``).
        sample_rate: Rate in Hz of the samples asked for; None means the file's.
        mono: Average the channels into one.

    Shapes:
        -> ``[C, stop - start]`` (``[1, stop - start]`` when ``mono``).

    Raises:
        AudioLoadError: The file is missing, empty, not audio, has no frames or an implausible rate, decodes fewer
            frames than its header declares, or has NaN/Inf samples in the span.
        ValueError: ``stop < start``.
    """
    path = Path(path)
    target = _requested_rate(path, sample_rate)
    if stop < start:
        raise ValueError(f"span [{start}, {stop}) of {path}: stop must be >= start")
    _check_file(path)
    try:
        with sf.SoundFile(path) as f:
            _open_checks(path, f)
            rate, frames, channels = int(f.samplerate), int(f.frames), int(f.channels)
            target = target or rate
            resampler = _resampler(path, rate, target) if target != rate else None
            lo, hi = max(start, 0), min(stop, resampled_length(frames, rate, target))
            out = torch.zeros(1 if mono else channels, stop - start)
            if hi <= lo:
                return out
            a, b, offset = (
                _span_geometry(lo, hi, frames, rate, target, resampler.half_width)
                if resampler
                else (lo, hi, lo)
            )
            seek = min(a, max(0, frames - _SEEK_TAIL.get((f.format, f.subtype), 0)))
            if seek:
                f.seek(seek)
            data = f.read(b - seek, dtype="float32", always_2d=True)[a - seek :]
    except sf.SoundFileError as e:
        raise _libsndfile_error(path, e) from e
    if data.shape[0] < b - a:
        raise AudioLoadError(
            path,
            f"truncated: the header declares {frames} frames but decoding stopped at frame {a + data.shape[0]}",
        )
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    bad = ~torch.isfinite(wave)
    if bool(bad.any()):
        channel, first = (int(i) for i in bad.nonzero()[0])
        nan, inf = int(torch.isnan(wave).sum()), int(torch.isinf(wave).sum())
        raise AudioLoadError(
            path,
            f"has non-finite samples ({nan} NaN, {inf} Inf) in frames {a}-{b}, the first at frame {a + first} "
            f"of channel {channel}",
        )
    if mono:
        wave = wave.mean(dim=0, keepdim=True)
    if resampler is not None:
        wave = resampler(wave)
    out[:, lo - start : hi - start] = wave[:, lo - offset : hi - offset]
    return out
