"""Audio file I/O: ``load_audio`` (soundfile / libsndfile), ``AudioLoadError`` and ``validate_waveform``.

Every problem with a file (missing, not audio, truncated, empty, non-finite samples, an implausible sample
rate, a decoder failure) surfaces as one :class:`AudioLoadError` that names the file and the reason, so data
sets can report or skip bad files without catching backend exceptions. ``validate_waveform`` holds the checks
on decoded audio, for the data layer to reuse on waveforms from any source.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from finetune.data.resample import resample

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
# A RIFF data chunk size of 0xFFFFFFFF means "unknown length" (written by streaming encoders).
_RIFF_UNKNOWN_SIZE = 0xFFFFFFFF
_RIFF_MAX_CHUNKS = 64

__all__ = ["MAX_SAMPLE_RATE", "MIN_SAMPLE_RATE", "AudioLoadError", "load_audio", "validate_waveform"]


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
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        return f"sample rate must be an int (Hz), got {sample_rate!r}"
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        return f"sample rate {sample_rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz"
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

    Checks, in order: a floating-point tensor with at least one dimension; ``sample_rate`` an int in
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


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode a whole file to float32 ``[N, C]`` with soundfile, checking rate, emptiness and truncation."""
    try:
        with sf.SoundFile(path) as f:
            rate_problem = _rate_problem(f.samplerate)
            if rate_problem is not None:
                raise AudioLoadError(path, f"the file's {rate_problem}")
            declared, file_format = f.frames, f.format
            if declared == 0:
                raise AudioLoadError(path, "contains no audio (0 frames)")
            data = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except sf.SoundFileError as e:
        detail = getattr(e, "error_string", None) or str(e)
        raise AudioLoadError(path, f"not readable as audio (libsndfile: {detail})") from e
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


def load_audio(
    path: str | os.PathLike[str], sample_rate: int | None = None, mono: bool = True
) -> tuple[Tensor, int]:
    """Read an audio file (wav, flac, ogg/vorbis, opus, mp3, ... whatever libsndfile decodes) as float32.

    Integer PCM is scaled to [-1, 1). Multi-channel audio is averaged to one channel when ``mono``. With
    ``sample_rate`` the audio is resampled to it by :func:`finetune.data.resample.resample` (Kaiser-windowed
    sinc, ~100 dB stop band; see that module for the method).

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
        AudioLoadError: The file is missing, not audio, truncated, empty, has NaN/Inf samples or a sample rate
            outside ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]``, or ``sample_rate`` is outside that range.
    """
    path = Path(path)
    if sample_rate is not None:
        rate_problem = _rate_problem(sample_rate)
        if rate_problem is not None:
            raise AudioLoadError(path, f"the requested {rate_problem}")
    if not path.exists():
        raise AudioLoadError(path, "file not found")
    if not path.is_file():
        raise AudioLoadError(path, "not a regular file")
    data, rate = _decode(path)
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    problem = _waveform_problem(wave, rate, None, None)
    if problem is not None:
        raise AudioLoadError(path, problem)
    if mono:
        wave = wave.mean(dim=0, keepdim=True)
    if sample_rate is None or sample_rate == rate:
        return wave, rate
    try:
        return resample(wave, rate, sample_rate), sample_rate
    except ValueError as e:
        raise AudioLoadError(path, f"cannot resample {rate} -> {sample_rate} Hz: {e}") from e
