"""An optional on-disk cache of decoded audio at one sample rate, for files whose windows are slow to read.

Why. :func:`~finetune.data.audio.load_audio_span` reads a window by seeking, which is cheap in WAV, FLAC and Ogg
but not in MP3: libsndfile's MP3 seek scans the frame headers from the start of the file, so a window near the end
of a long track costs several times one near its start. Decoding is also costlier for some codecs (Opus) than a
training step of a tiny model. A cached file is read through a memory map: a window costs a page-in.

Mechanism. One float32 ``.npy`` per file (mono, at the model's rate) under ``$MUSICFT_CACHE/decoded/<rate>hz/``,
named by the sha256 of the file's resolved path, size and modification time, so a changed (or replaced) file gets
a new name and is decoded again; entries of old versions are never read again (delete the folder to reclaim the
space). It costs 4 bytes per sample: 7.7 MB per minute of audio at 32 kHz. ``datasets``' own cache
(``Dataset.map``) was not used: it keys its Arrow files by the whole data set's fingerprint (one changed file or
split rewrites everything) and reading a window from it loads the row's whole array.

Which files (:data:`CACHE_MODES`): ``"off"``; ``"slow_seek"``, the formats whose seek cost grows with the position
(:data:`SLOW_SEEK_FORMATS`: MP3); ``"all"``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from backbones.checkpoints import cache_dir

from .audio import AudioInfo, AudioLoadError, load_audio

__all__ = ["CACHE_MODES", "SLOW_SEEK_FORMATS", "DecodedCache", "wants_cache"]

CACHE_MODES = ("off", "slow_seek", "all")
SLOW_SEEK_FORMATS = frozenset({"MP3"})  # libsndfile container names (AudioInfo.format)
_VERSION = "1"  # part of every key: bump when the decoding or resampling changes


def wants_cache(info: AudioInfo, mode: str) -> bool:
    """Whether a file belongs in the cache under ``mode`` (one of :data:`CACHE_MODES`)."""
    if mode not in CACHE_MODES:
        raise ValueError(f"decode cache mode must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    return mode == "all" or (mode == "slow_seek" and info.format in SLOW_SEEK_FORMATS)


class DecodedCache:
    """Decoded mono audio at ``sample_rate`` on disk (see the module docstring), read window by window.

    Args:
        sample_rate: The rate entries are decoded at (the model's).
        root: The cache folder; default ``$MUSICFT_CACHE/decoded/<sample_rate>hz``.
    """

    def __init__(self, sample_rate: int, root: str | os.PathLike[str] | None = None) -> None:
        self.sample_rate = int(sample_rate)
        self.root = Path(root) if root is not None else cache_dir() / "decoded" / f"{self.sample_rate}hz"

    def entry(self, path: str | os.PathLike[str]) -> Path:
        """Where the decoded copy of ``path`` lives (it may not exist); changes whenever the file does."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        key = f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}\0{self.sample_rate}\0{_VERSION}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"

    def __contains__(self, path: str | os.PathLike[str]) -> bool:
        return self.entry(path).is_file()

    def add(self, path: str | os.PathLike[str]) -> Path:
        """Decode ``path`` whole (:func:`~finetune.data.audio.load_audio`) and store it; returns the entry.

        Raises:
            AudioLoadError: the file does not decode.
        """
        target = self.entry(path)
        wave, _ = load_audio(path, sample_rate=self.sample_rate)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npy")
        with os.fdopen(fd, "wb") as f:
            np.save(f, wave[0].numpy())
        Path(tmp).replace(target)  # atomic: readers see the whole entry or none
        return target

    def build(
        self, paths: Sequence[str | os.PathLike[str]], progress: bool = True
    ) -> tuple[int, dict[str, str]]:
        """Decode every file of ``paths`` not cached yet, with a progress bar.

        Returns:
            ``(decoded, failed)``: how many files were decoded now, and ``{path: reason}`` for those that failed
            (they stay uncached; reading their windows reports the same error).
        """
        todo = list(dict.fromkeys(str(p) for p in paths if p not in self))
        failed: dict[str, str] = {}
        for path in tqdm(todo, desc="decoding to the cache", unit="file", disable=not progress or not todo):
            try:
                self.add(path)
            except AudioLoadError as e:
                failed[path] = e.reason
        return len(todo) - len(failed), failed

    def read(self, path: str | os.PathLike[str], start: int, stop: int) -> Tensor | None:
        """Samples ``[start, stop)`` of the cached copy (zeros outside the audio), or None when not cached.

        Shapes:
            -> ``[stop - start]``.
        """
        entry = self.entry(path)
        if not entry.is_file():
            return None
        wave = np.load(entry, mmap_mode="r")
        out = torch.zeros(stop - start)
        lo, hi = max(start, 0), min(stop, wave.shape[0])
        if hi > lo:
            out[lo - start : hi - start] = torch.from_numpy(np.array(wave[lo:hi]))
        return out
