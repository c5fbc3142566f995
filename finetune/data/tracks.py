"""Reading a clip's audio window by window, whatever holds it, and where the windows of a clip go.

The row contract (what :class:`~finetune.data.collate.CropCollate` and :mod:`finetune.inference` accept):

- an in-memory row has its samples under ``audio`` (a float array / tensor ``[N]`` or ``[C, N]``, or a
  ``{"array", "sampling_rate"}`` dict as ``datasets.Audio`` gives) and their rate under ``sample_rate`` or
  ``sampling_rate`` (the synthetic data sets);
- a file row has ``path`` and, from the header read when the data set was loaded, ``frames`` and ``file_rate``
  (the loaders of :mod:`finetune.data` add them, with ``duration`` in seconds); without them the header is read
  when the row is opened.

:meth:`TrackReader.open` turns a row into a :class:`Track` at the model's rate: its ``length`` in samples is known
without decoding (so that window positions can be drawn first) and :meth:`Track.read` decodes only the window
asked for (:func:`~finetune.data.audio.load_audio_span`, or the :class:`~finetune.data.decoded.DecodedCache`).
Windows of in-memory clips are cut from the clip, resampled whole once.

Window placement (in samples; a negative start means the window begins before the clip, padded with zeros):
:func:`evenly_spaced_starts` (evaluation: ``k`` windows from the first to the last),
:func:`sliding_starts` (every ``hop`` samples, the last window ending at the clip's end) and
:func:`random_window_starts` (training).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .audio import audio_info, load_audio_span
from .decoded import DecodedCache
from .resample import resample, resampled_length

__all__ = [
    "RATE_KEYS",
    "Track",
    "TrackReader",
    "evenly_spaced_starts",
    "random_window_starts",
    "sliding_starts",
]

RATE_KEYS = ("sample_rate", "sampling_rate")


def evenly_spaced_starts(length: int, window: int, crops: int) -> list[int]:
    """``crops`` windows from the clip's first to its last (the centre one when ``crops == 1``); one window
    ending at the clip's end when the clip is no longer than a window."""
    if length <= window:
        return [length - window]
    if crops == 1:
        return [(length - window) // 2]
    return [round(i * (length - window) / (crops - 1)) for i in range(crops)]


def sliding_starts(length: int, window: int, hop: int) -> list[int]:
    """Windows every ``hop`` samples from the clip's start; the last one ends at the clip's end, so that every
    sample is covered. A clip no longer than a window gets one window ending at its end."""
    if length <= window:
        return [length - window]
    starts = list(range(0, length - window, hop))
    return [*starts, length - window]


def random_window_starts(
    length: int, window: int, crops: int, min_end: int, generator: torch.Generator | None
) -> list[int]:
    """``crops`` random right-aligned windows: each ends at a random sample in ``[min(min_end, length), length]``."""
    lo = min(min_end, length)
    ends = torch.randint(lo, length + 1, (crops,), generator=generator)
    return [int(e) - window for e in ends]


@dataclass
class Track:
    """One clip at the reader's rate: ``length`` samples, read window by window.

    Attributes:
        name: The clip's id or name (for messages).
        length: Samples at the reader's rate.
        path: The file, for file rows (else None).
    """

    name: str
    length: int
    path: str | None = None
    _wave: Tensor | None = None
    _rate: int = 0
    _cache: DecodedCache | None = None

    def read(self, start: int, stop: int) -> Tensor:
        """Samples ``[start, stop)``, zeros outside the clip.

        Shapes:
            -> ``[stop - start]``.

        Raises:
            AudioLoadError: the file's span does not decode (see :func:`~finetune.data.audio.load_audio_span`).
        """
        if self._wave is not None:
            out = self._wave.new_zeros(stop - start)
            lo, hi = max(start, 0), min(stop, self.length)
            if hi > lo:
                out[lo - start : hi - start] = self._wave[lo:hi]
            return out
        assert self.path is not None
        cached = self._cache.read(self.path, start, stop) if self._cache is not None else None
        if cached is not None:
            return cached
        return load_audio_span(self.path, start, stop, sample_rate=self._rate)[0]


class TrackReader:
    """Opens rows (see the module docstring) as mono :class:`Track` objects at ``sample_rate``.

    Args:
        sample_rate: The model's rate in Hz.
        cache: Decoded copies to read file windows from when present (:class:`DecodedCache` at the same rate).
        audio_key: The row key of in-memory audio.
    """

    def __init__(self, sample_rate: int, cache: DecodedCache | None = None, audio_key: str = "audio") -> None:
        if cache is not None and cache.sample_rate != sample_rate:
            raise ValueError(
                f"the decode cache holds {cache.sample_rate} Hz audio, the reader reads {sample_rate} Hz"
            )
        self.sample_rate = sample_rate
        self.cache = cache
        self.audio_key = audio_key

    def open(self, row: Mapping[str, Any], name: str) -> Track:
        """The row's clip; a file row is not decoded here (only its header is read if the row lacks it).

        Raises:
            KeyError: the row has neither in-memory audio nor a ``path``, or in-memory audio without a rate.
            ValueError: in-memory audio that is not float ``[N]`` / ``[C, N]``.
            AudioLoadError: a file row without header facts whose header cannot be read.
        """
        if self.audio_key in row:
            wave = self._memory_wave(row, name)
            return Track(name, wave.shape[-1], _wave=wave)
        if "path" not in row:
            raise KeyError(f"row {name!r} has neither {self.audio_key!r} nor 'path' (keys: {sorted(row)})")
        path = str(row["path"])
        if row.get("frames") is not None and row.get("file_rate") is not None:
            frames, rate = int(row["frames"]), int(row["file_rate"])
        else:
            info = audio_info(path)
            frames, rate = info.frames, info.sample_rate
        length = resampled_length(frames, rate, self.sample_rate)
        return Track(name, length, path=path, _rate=self.sample_rate, _cache=self.cache)

    def _memory_wave(self, row: Mapping[str, Any], name: str) -> Tensor:
        """The row's audio as a mono float32 tensor at ``sample_rate``."""
        audio, rate = row[self.audio_key], next((row[k] for k in RATE_KEYS if k in row), None)
        if isinstance(audio, Mapping):  # datasets.Audio-style {"array", "sampling_rate"}
            audio, rate = audio["array"], audio.get("sampling_rate", rate)
        if rate is None:
            raise KeyError(f"row {name!r} has no sample rate (one of {RATE_KEYS})")
        wave = torch.as_tensor(np.asarray(audio) if not isinstance(audio, Tensor) else audio)
        if not wave.is_floating_point() or wave.ndim not in (1, 2) or wave.shape[-1] == 0:
            raise ValueError(
                f"clip {name!r}: expected non-empty float audio [N] or [C, N], got {wave.dtype} {list(wave.shape)}"
            )
        wave = wave.float()
        if wave.ndim == 2:
            wave = wave.mean(0)
        rate = int(rate)
        return wave if rate == self.sample_rate else resample(wave, rate, self.sample_rate)
