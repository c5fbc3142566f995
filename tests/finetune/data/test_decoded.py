"""The decode cache: one entry per file version at the model's rate, built once (failures reported, not raised),
read window by window with the result of the windowed decoder; which files each mode caches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.data.audio import AudioInfo, load_audio
from finetune.data.decoded import CACHE_MODES, DecodedCache, wants_cache
from tests.audio_signals import music


def _wav(path: Path, seconds: float = 1.0, seed: int = 0) -> Path:
    sf.write(path, music(1, int(22050 * seconds), 22050, seed=seed)[0].numpy(), 22050, subtype="FLOAT")
    return path


def test_build_once_read_windows_and_a_changed_file_is_decoded_again(tmp_path: Path) -> None:
    path = _wav(tmp_path / "a.wav")
    cache = DecodedCache(16000, root=tmp_path / "cache")
    assert path not in cache and cache.read(path, 0, 10) is None
    assert cache.build([path, str(path)], progress=False) == (1, {})  # listed twice, decoded once
    assert path in cache and cache.build([path], progress=False) == (0, {})
    whole, _ = load_audio(path, sample_rate=16000)
    assert np.array_equal(np.load(cache.entry(path)), whole[0].numpy())
    window = cache.read(path, 15000, 17000)
    assert window is not None and window.shape == (2000,)
    assert torch.equal(window[:1000], whole[0, 15000:]) and not window[1000:].any()  # zeros past the end
    assert torch.equal(cache.read(path, -5, 5)[:5], torch.zeros(5))  # type: ignore[index]
    old = cache.entry(path)
    _wav(path, seconds=1.5, seed=1)
    os.utime(path, ns=(old.stat().st_mtime_ns, old.stat().st_mtime_ns + 10**9))
    assert cache.entry(path) != old and path not in cache  # another version: another entry


def test_failures_are_reported_not_raised(tmp_path: Path) -> None:
    good = _wav(tmp_path / "good.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    decoded, failed = DecodedCache(16000, root=tmp_path / "c").build([good, empty], progress=False)
    assert decoded == 1 and failed == {str(empty): "the file is empty (0 bytes)"}


def test_default_folder_is_under_musicft_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MUSICFT_CACHE", str(tmp_path))
    assert DecodedCache(32000).root == tmp_path / "decoded" / "32000hz"


def test_which_files_each_mode_caches() -> None:
    mp3 = AudioInfo("a.mp3", 10, 44100, 2, "MP3", "MPEG_LAYER_III")
    ogg = AudioInfo("a.ogg", 10, 44100, 2, "OGG", "VORBIS")
    assert CACHE_MODES == ("off", "slow_seek", "all")
    assert [wants_cache(mp3, m) for m in CACHE_MODES] == [False, True, True]
    assert [wants_cache(ogg, m) for m in CACHE_MODES] == [False, False, True]
    with pytest.raises(ValueError, match="decode cache mode must be one of off, slow_seek, all, got 'mp3'"):
        wants_cache(mp3, "mp3")
