"""Sources of the stream command: WAV streams of every integer width decode as libsndfile decodes the file, raw
PCM keeps a frame split across reads, files are read block by block and report damage where it is found."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from finetune.data.audio import AudioLoadError
from finetune.streaming.sources import FileSource, StreamInputError, blocks, open_stdin
from tests.audio_signals import music


class _Trickle(io.RawIOBase):
    """A pipe that returns at most 7 bytes per read (as a slow producer would)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:
        chunk = self._data.read(min(7, len(buffer)))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _stereo() -> np.ndarray:
    return music(2, 8000, 16000, seed=0).numpy().T * 0.9  # [N, 2]


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32"])
def test_a_wav_stream_decodes_as_libsndfile_does(subtype: str) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, _stereo(), 16000, format="WAV", subtype=subtype)
    want = sf.read(io.BytesIO(buffer.getvalue()), dtype="float32")[0].T
    source = open_stdin(io.BufferedReader(io.BytesIO(buffer.getvalue())), None, None, 1)
    assert (source.sample_rate, source.channels) == (16000, 2)
    got = list(blocks(source, 3000))
    assert [b.shape for b in got] == [(2, 3000), (2, 3000), (2, 2000)]
    np.testing.assert_array_equal(np.concatenate(got, axis=1), want)


def test_raw_pcm_keeps_frames_whole_across_short_reads() -> None:
    samples = (np.arange(-300, 300, dtype=np.int16) * 100).reshape(-1, 2)  # 300 stereo frames
    source = open_stdin(io.BufferedReader(_Trickle(samples.tobytes() + b"\x01")), "s16le", 8000, 2)
    got = list(blocks(source, 64))
    assert [b.shape[1] for b in got] == [64, 64, 64, 64, 44]  # the odd trailing byte is no frame
    np.testing.assert_array_equal(np.concatenate(got, axis=1), samples.T / np.float32(32768))
    floats = np.linspace(-1, 1, 10, dtype="<f4")
    source = open_stdin(io.BufferedReader(io.BytesIO(floats.tobytes())), "f32le", 8000, 1)
    np.testing.assert_array_equal(source.read(100), floats[None])


def test_a_float_wav_on_stdin_is_refused_with_what_to_pipe_instead() -> None:
    buffer = io.BytesIO()
    sf.write(buffer, _stereo(), 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(
        StreamInputError,
        match=r"^stdin: not a WAV stream the wave module reads \(unknown format: 3\); pipe integer PCM WAV, or raw samples with --format s16le\|f32le",
    ):
        open_stdin(io.BufferedReader(io.BytesIO(buffer.getvalue())), None, None, 1)


def test_files_are_read_in_blocks_and_damage_is_reported_where_it_is_found(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.flac", _stereo(), 16000)
    source = FileSource(tmp_path / "a.flac", "a")
    assert (source.name, source.sample_rate, source.channels) == ("a", 16000, 2)
    assert [b.shape[1] for b in blocks(source, 3000)] == [3000, 3000, 2000]
    assert source.read(10) is None  # closed at the end
    raw = (tmp_path / "a.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(raw[: len(raw) // 2])
    cut = FileSource(tmp_path / "cut.flac")  # the header is whole: the damage shows when decoding reaches it
    with pytest.raises(
        AudioLoadError, match=r"cut\.flac': decoding stopped at frame \d+ \(libsndfile: .*lost sync"
    ):
        list(blocks(cut, 1000))
    with pytest.raises(AudioLoadError, match=r"missing\.wav': file not found"):
        FileSource(tmp_path / "missing.wav")
