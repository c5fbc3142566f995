"""Batching: crop or pad each clip to the backbone's window, resampling first when the rates differ.

Rows are mappings with an audio entry (a float ``np.ndarray`` / tensor ``[N]`` or ``[C, N]``, channels
averaged, or a ``{"array", "sampling_rate"}`` dict as ``datasets.Audio`` gives), the rate under
``sample_rate`` or ``sampling_rate``, and optionally ``label`` (int), ``labels`` (multi-hot floats),
``ratings`` (floats), ``descriptors`` (floats) and ``id`` or ``name``. Both the synthetic data sets and the real-data loaders of this package produce such rows.

Cropping. Training takes ``crops_per_clip`` random *right-aligned* windows per clip: a random end time ``e``
is drawn and the window is the audio just before it, as a stream sees it at time ``e``. By default ``e`` is at
least one window into the clip, so windows are full; a smaller ``min_context_seconds`` also yields the
start-of-stream windows (audio at the right, zero padding on the left). Evaluation is deterministic: the
centre window when ``crops_per_clip == 1``, else ``crops_per_clip`` evenly spaced windows from the first to
the last; clips no longer than the window give one crop. ``clip_index`` maps every crop to its clip so that
:func:`finetune.evaluation.average_crops` can pool a clip's predictions.

Too-short clips (shorter than the window): ``short="pad"`` (default) zero-pads them on the left (the audio is
right-aligned, as a stream's first seconds are) with ``mask`` False there, and the batch reports how many it
padded in ``num_short``; ``short="raise"`` raises a ``ValueError`` naming the clip.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import numpy as np
import torch
from torch import Tensor

from finetune.data.augment.waveform import ClipStretch
from finetune.data.resample import resample

__all__ = ["AudioBatch", "CropCollate"]

log = logging.getLogger(__name__)

_RATE_KEYS = ("sample_rate", "sampling_rate")


class AudioBatch(TypedDict, total=False):
    """What :class:`CropCollate` returns; ``M`` crops from ``B`` clips.

    Keys:
        waveform: float32 ``[M, N]``.
        mask: bool ``[M, N]``, True on real audio.
        clip_index: int64 ``[M]``, the clip (0..B-1) of each crop.
        crop_start: int64 ``[M]``, the window's first sample in the (resampled) clip; negative when the window
            starts before the clip.
        labels: int64 ``[M]`` (when rows have a class label), or float32 ``[M, C]`` (multi-hot tags).
        ratings: float32 ``[M, D]`` (when rows have ratings).
        descriptors: float32 ``[M, K]``, each clip's descriptors (when rows have ``descriptors``).
        ids: the ``B`` clip ids (``str(row index in the batch)`` when rows have none).
        num_short: clips shorter than the window (padded).
    """

    waveform: Tensor
    mask: Tensor
    clip_index: Tensor
    crop_start: Tensor
    labels: Tensor
    ratings: Tensor
    descriptors: Tensor
    ids: list[str]
    num_short: int


@dataclass
class CropCollate:
    """``DataLoader`` collate function that crops/pads clips to a fixed window (see the module docstring).

    Args:
        sample_rate: The backbone's rate in Hz; rows at other rates are resampled (whole clip, then cropped).
        window_seconds: Window length; ``N = round(window_seconds * sample_rate)``.
        train: Random windows (True) or deterministic evaluation windows (False).
        crops_per_clip: Windows per clip (``k``).
        min_context_seconds: Training only: the earliest window end, in seconds of audio; None means one
            window.
        short: ``"pad"`` or ``"raise"`` for clips shorter than the window.
        seed: Training windows of batch ``b`` of epoch ``e`` are drawn from a generator seeded with
            ``(seed, e, b)``, so they do not depend on worker processes, prefetching or resuming; the training
            loop tells the position with :meth:`set_position`. None draws from torch's global generator.
        audio_key, label_key, ratings_key: Row keys.
        multi_hot_key: Row key of multi-label targets (multi-hot floats ``[C]``), used when rows have no
            ``label_key``; batched as float32 ``labels [M, C]``.
        id_keys: Keys tried in turn for a clip's id (synthetic sets have ``id``, file loaders ``name``).
        augment: Training only: a waveform augmentation ``augment(waveform [M, N], generator)`` applied to the
            batch with the batch's generator (e.g. :func:`finetune.data.augment.build_wave_augment`).
        stretch: Training only: a per-clip time-stretch (:class:`finetune.data.augment.ClipStretch`) drawn from
            the batch's generator and applied to each whole clip before its windows are cut, so windows stay
            full length (lengths, window ends and masks are those of the stretched clip).
    """

    sample_rate: int
    window_seconds: float
    train: bool = True
    crops_per_clip: int = 1
    min_context_seconds: float | None = None
    short: Literal["pad", "raise"] = "pad"
    seed: int | None = None
    audio_key: str = "audio"
    label_key: str = "label"
    multi_hot_key: str = "labels"
    ratings_key: str = "ratings"
    id_keys: tuple[str, ...] = ("id", "name")
    augment: torch.nn.Module | None = None
    stretch: ClipStretch | None = None
    _epoch: int = field(default=0, init=False, repr=False, compare=False)
    _first_batch: int = field(default=0, init=False, repr=False, compare=False)
    _calls: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "crops_per_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {self.window_seconds!r}")
        if self.short not in ("pad", "raise"):
            raise ValueError(f"short must be 'pad' or 'raise', got {self.short!r}")
        if self.min_context_seconds is not None and not 0 < self.min_context_seconds <= self.window_seconds:
            raise ValueError(
                f"min_context_seconds must be in (0, window_seconds={self.window_seconds}], "
                f"got {self.min_context_seconds!r}"
            )

    @property
    def window(self) -> int:
        """Window length in samples."""
        return round(self.window_seconds * self.sample_rate)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> AudioBatch:
        """Collate rows into an :class:`AudioBatch`.

        Shapes:
            -> waveform and mask ``[M, N]`` with ``M = B * crops_per_clip`` in training (fewer in evaluation
            when clips are short), ``N = window``.
        """
        if len(rows) == 0:
            raise ValueError("cannot collate an empty batch")
        n = self.window
        generator = self._batch_generator() if self.train else None
        waves, masks, clip_index, starts, ids = [], [], [], [], []
        num_short = 0
        for b, row in enumerate(rows):
            name = next((str(row[k]) for k in self.id_keys if k in row), str(b))
            clip = self._waveform(row, name)
            rate = self.stretch.draw(generator) if self.train and self.stretch is not None else 1.0
            length = clip.shape[-1] if rate == 1.0 else ClipStretch.stretched_length(clip.shape[-1], rate)
            if length < n:
                if self.short == "raise":
                    raise ValueError(
                        f"clip {name!r} has {length} samples ({length / self.sample_rate:.3f} s) at "
                        f"{self.sample_rate} Hz, under the {n}-sample window ({self.window_seconds:g} s)"
                    )
                num_short += 1
            for start in self._starts(length, generator):
                wave, mask = (
                    self._crop(clip, start) if rate == 1.0 else self._stretched_crop(clip, start, rate)
                )
                waves.append(wave)
                masks.append(mask)
                clip_index.append(b)
                starts.append(start)
            ids.append(name)
        if num_short:
            log.debug("padded %d of %d clips shorter than the %d-sample window", num_short, len(rows), n)
        wave_batch = torch.stack(waves)
        if self.train and self.augment is not None:
            wave_batch = self.augment(wave_batch, generator) * torch.stack(masks)  # padding stays silent
        batch: AudioBatch = {
            "waveform": wave_batch,
            "mask": torch.stack(masks),
            "clip_index": torch.tensor(clip_index, dtype=torch.int64),
            "crop_start": torch.tensor(starts, dtype=torch.int64),
            "ids": ids,
            "num_short": num_short,
        }
        per_crop = batch["clip_index"]
        if self.label_key in rows[0]:
            labels = torch.tensor([int(r[self.label_key]) for r in rows], dtype=torch.int64)
            batch["labels"] = labels[per_crop]
        elif self.multi_hot_key in rows[0]:
            hot = [torch.as_tensor(np.asarray(r[self.multi_hot_key]), dtype=torch.float32) for r in rows]
            batch["labels"] = torch.stack(hot)[per_crop]
        if "descriptors" in rows[0]:  # a hybrid head's clip descriptors (finetune.descriptors), per crop
            batch["descriptors"] = torch.stack([torch.as_tensor(np.asarray(r["descriptors"])) for r in rows])[
                per_crop
            ]
        if self.ratings_key in rows[0]:
            ratings = torch.stack(
                [torch.as_tensor(np.asarray(r[self.ratings_key]), dtype=torch.float32) for r in rows]
            )
            batch["ratings"] = ratings[per_crop]
        return batch

    def _waveform(self, row: Mapping[str, Any], name: str) -> Tensor:
        """The row's audio as a mono float32 tensor at ``sample_rate``."""
        if self.audio_key not in row:
            raise KeyError(f"row {name!r} has no {self.audio_key!r} entry (keys: {sorted(row)})")
        audio, rate = row[self.audio_key], next((row[k] for k in _RATE_KEYS if k in row), None)
        if isinstance(audio, Mapping):  # datasets.Audio-style {"array", "sampling_rate"}
            audio, rate = audio["array"], audio.get("sampling_rate", rate)
        if rate is None:
            raise KeyError(f"row {name!r} has no sample rate (one of {_RATE_KEYS})")
        wave = torch.as_tensor(np.asarray(audio) if not isinstance(audio, Tensor) else audio)
        if not wave.is_floating_point() or wave.ndim not in (1, 2) or wave.shape[-1] == 0:
            raise ValueError(
                f"clip {name!r}: expected non-empty float audio [N] or [C, N], "
                f"got {wave.dtype} {list(wave.shape)}"
            )
        wave = wave.float()
        if wave.ndim == 2:
            wave = wave.mean(0)
        rate = int(rate)
        return wave if rate == self.sample_rate else resample(wave, rate, self.sample_rate)

    def _starts(self, length: int, generator: torch.Generator | None) -> list[int]:
        """Window starts in samples (negative: the window begins before the clip)."""
        n, k = self.window, self.crops_per_clip
        if self.train:
            lo = n if self.min_context_seconds is None else round(self.min_context_seconds * self.sample_rate)
            lo = min(lo, length)
            ends = torch.randint(lo, length + 1, (k,), generator=generator)
            return [int(e) - n for e in ends]
        if length <= n:
            return [length - n]
        if k == 1:
            return [(length - n) // 2]
        return [round(i * (length - n) / (k - 1)) for i in range(k)]

    def _crop(self, clip: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """The window ``[start, start + N)`` of ``clip`` (zeros outside the clip) and its mask."""
        n = self.window
        piece = clip[max(0, start) : max(0, start + n)]
        offset = max(0, -start)
        wave = clip.new_zeros(n)
        mask = torch.zeros(n, dtype=torch.bool)
        wave[offset : offset + len(piece)] = piece
        mask[offset : offset + len(piece)] = True
        return wave, mask

    def _stretched_crop(self, clip: Tensor, start: int, rate: float) -> tuple[Tensor, Tensor]:
        """:meth:`_crop` of ``clip`` stretched by ``rate`` (only the window's part of it is stretched)."""
        assert self.stretch is not None
        n, length = self.window, ClipStretch.stretched_length(clip.shape[-1], rate)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[max(0, -start) : max(0, min(n, length - start))] = True
        return self.stretch.window(clip, start, n, rate) * mask, mask

    def set_position(self, epoch: int, batches_done: int = 0) -> None:
        """Start counting batches at ``batches_done`` of ``epoch`` (called by the training loop per epoch)."""
        self._epoch, self._first_batch, self._calls = epoch, batches_done, 0

    def _batch_generator(self) -> torch.Generator | None:
        """The generator of the batch being collated: worker ``w`` of ``W`` collates batches w, w+W, ..."""
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batch = self._first_batch + worker + self._calls * workers
        self._calls += 1
        state = np.random.SeedSequence([self.seed, self._epoch, batch]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state))
