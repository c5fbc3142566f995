"""Audio sources of ``python -m finetune stream``: files read block by block, PCM or WAV on stdin, a microphone.

A source yields float32 chunks ``[C, n]`` at its native rate until it is exhausted; none holds more than one
chunk, so an hour-long file or an endless pipe streams in bounded memory.
"""

from __future__ import annotations

import queue
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import soundfile as sf

from finetune.data.audio import AudioLoadError, audio_info

__all__ = [
    "MIC_EXTRA",
    "PCM_FORMATS",
    "AudioSource",
    "FileSource",
    "StreamInputError",
    "blocks",
    "open_microphone",
    "open_stdin",
]

PCM_FORMATS = {"s16le": ("<i2", 32768.0), "f32le": ("<f4", 1.0)}
"""Raw PCM formats on stdin: numpy dtype and the scale to [-1, 1)."""
MIC_EXTRA = "pip install 'musicft[mic]'  (the sounddevice package and its PortAudio library)"


class StreamInputError(ValueError):
    """Stdin or the microphone cannot be opened as asked; the message says what to pass or install."""


class AudioSource(Protocol):
    """Where a stream's audio comes from."""

    name: str
    sample_rate: int
    channels: int

    def read(self, frames: int) -> np.ndarray | None:
        """Up to ``frames`` frames as float32 ``[channels, n]``, or None once the source is exhausted."""
        ...

    def close(self) -> None:
        """Release the file, pipe or device."""
        ...


class FileSource:
    """An audio file (any format :func:`finetune.data.load_audio` reads), decoded block by block.

    Raises:
        AudioLoadError: the file is missing, not audio or has a bad header (here); a block that cannot be
            decoded, or a file that ends before its declared length (from :meth:`read`).
    """

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path)
        info = audio_info(self.path)
        self.name = name or str(path)
        self.sample_rate, self.channels, self._frames = info.sample_rate, info.channels, info.frames
        self._read = 0
        try:
            self._file: sf.SoundFile | None = sf.SoundFile(self.path)
        except sf.SoundFileError as e:
            raise AudioLoadError(self.path, f"not readable as audio (libsndfile: {e})") from e

    def read(self, frames: int) -> np.ndarray | None:
        if self._file is None:
            return None
        try:
            block = self._file.read(frames, dtype="float32", always_2d=True)
        except sf.SoundFileError as e:
            raise AudioLoadError(
                self.path, f"decoding stopped at frame {self._read} (libsndfile: {e})"
            ) from e
        self._read += block.shape[0]
        if block.shape[0] == 0:
            if self._read < self._frames:
                raise AudioLoadError(
                    self.path,
                    f"truncated: the header declares {self._frames} frames but decoding stopped at frame "
                    f"{self._read}",
                )
            self.close()
            return None
        return np.ascontiguousarray(block.T)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _PcmSource:
    """Interleaved little-endian PCM from a byte stream."""

    def __init__(
        self, stream: IO[bytes], name: str, rate: int, channels: int, dtype: str, scale: float
    ) -> None:
        self.name, self.sample_rate, self.channels = name, rate, channels
        self._stream, self._dtype, self._scale = stream, np.dtype(dtype), scale
        self._rest = b""

    def read(self, frames: int) -> np.ndarray | None:
        width = self._dtype.itemsize * self.channels
        data = self._rest + _read_up_to(self._stream, frames * width - len(self._rest))
        usable = len(data) // width * width
        self._rest = data[usable:]
        if usable == 0:
            return None
        x = np.frombuffer(data[:usable], dtype=self._dtype).astype(np.float32) / np.float32(self._scale)
        return np.ascontiguousarray(x.reshape(-1, self.channels).T)

    def close(self) -> None:
        """Nothing to release: stdin belongs to the process."""


class _WavSource:
    """A WAV stream (integer PCM, 8-32 bit), read with the standard library's :mod:`wave` (no seeking)."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        try:
            self._wav = wave.open(stream, "rb")  # noqa: SIM115  (closed by close())
        except (wave.Error, EOFError) as e:
            raise StreamInputError(
                f"{name}: not a WAV stream the wave module reads ({e}); pipe integer PCM WAV, or raw samples "
                "with --format s16le|f32le --rate HZ --channels N"
            ) from e
        self.name, self.sample_rate = name, self._wav.getframerate()
        self.channels, self._width = self._wav.getnchannels(), self._wav.getsampwidth()

    def read(self, frames: int) -> np.ndarray | None:
        data = self._wav.readframes(frames)
        if not data:
            return None
        return np.ascontiguousarray(_int_pcm(data, self._width).reshape(-1, self.channels).T)

    def close(self) -> None:
        self._wav.close()


def _int_pcm(data: bytes, width: int) -> np.ndarray:
    """Little-endian integer PCM of ``width`` bytes as float32 in [-1, 1) (8-bit WAV is unsigned)."""
    if width == 1:
        return (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 3:
        b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        x = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return (np.where(x >= 1 << 23, x - (1 << 24), x) / float(1 << 23)).astype(np.float32)
    dtype = {2: "<i2", 4: "<i4"}[width]
    return (np.frombuffer(data, dtype).astype(np.float64) / float(1 << (8 * width - 1))).astype(np.float32)


def _read_up_to(stream: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at the end of the stream (a pipe may return short reads)."""
    parts, left = [], size
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def open_stdin(stream: IO[bytes], fmt: str | None, rate: int | None, channels: int) -> AudioSource:
    """Stdin as a source: raw PCM when ``fmt`` is given (``rate`` is then required), else a WAV stream.

    Raises:
        StreamInputError: raw PCM without ``rate``, or input that is not a WAV stream and no ``fmt``.
    """
    if fmt is not None:
        if rate is None:
            raise StreamInputError(f"raw PCM on stdin (--format {fmt}) needs its sample rate: add --rate HZ")
        dtype, scale = PCM_FORMATS[fmt]
        return _PcmSource(stream, "stdin", rate, channels, dtype, scale)
    head = stream.peek(12)[:12] if hasattr(stream, "peek") else b""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise StreamInputError(
            "stdin does not start with a WAV header; for raw samples give --format s16le|f32le --rate HZ "
            "(and --channels N for interleaved multi-channel audio)"
        )
    return _WavSource(stream, "stdin")


class _MicSource:
    """The default input device through ``sounddevice``; chunks arrive from its callback thread."""

    def __init__(self, sd: Any, rate: int, channels: int, block: int, seconds: float | None) -> None:
        self.name, self.sample_rate, self.channels = "mic", rate, channels
        self._queue: queue.Queue[np.ndarray] = queue.Queue()
        self._left = None if seconds is None else round(seconds * rate)
        self._stream = sd.InputStream(
            samplerate=rate, channels=channels, dtype="float32", blocksize=block, callback=self._callback
        )
        self._stream.start()

    def _callback(self, data: np.ndarray, frames: int, time: Any, status: Any) -> None:
        self._queue.put(np.array(data.T, dtype=np.float32))

    def read(self, frames: int) -> np.ndarray | None:
        if self._left is not None and self._left <= 0:
            return None
        block = self._queue.get()
        if self._left is not None:
            block = block[:, : self._left]
            self._left -= block.shape[1]
        return block

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


def open_microphone(rate: int | None, channels: int, block_s: float, seconds: float | None) -> AudioSource:
    """The default input device, at ``rate`` Hz (default: the device's), until ``seconds`` or Ctrl-C.

    Raises:
        StreamInputError: ``sounddevice`` (or its PortAudio library) is not installed; the message names the
            extra to install.
    """
    try:
        import sounddevice as sd
    except ImportError as e:  # the package, or the PortAudio library it loads
        raise StreamInputError(f"--mic needs an audio-input library: {MIC_EXTRA} ({e})") from e
    rate = rate or int(sd.query_devices(kind="input")["default_samplerate"])
    return _MicSource(sd, rate, channels, max(1, round(block_s * rate)), seconds)


def blocks(source: AudioSource, frames: int) -> Iterator[np.ndarray]:
    """The source's chunks of ``frames`` frames (the last may be shorter)."""
    while (chunk := source.read(frames)) is not None:
        yield chunk
