"""Batching: cut each clip into windows of the backbone's length, reading only those windows.

Rows are in-memory clips or file rows (the contract is in :mod:`finetune.data.tracks`), optionally with ``label``
(int), ``labels`` (multi-hot floats), ``ratings`` (floats), ``descriptors`` (floats) and ``id`` or ``name``. The collate draws the window positions from each clip's
length (known without decoding) and reads just those windows at the model's rate: a training crop of a 14-minute
track decodes about ten seconds of it, not the whole file.

Cropping. Training takes ``crops_per_clip`` random *right-aligned* windows per clip: a random end time ``e``
is drawn and the window is the audio just before it, as a stream sees it at time ``e``. By default ``e`` is at
least one window into the clip, so windows are full; a smaller ``min_context_seconds`` also yields the
start-of-stream windows (audio at the right, zero padding on the left). Evaluation is deterministic: the
centre window when ``crops_per_clip == 1``, else ``crops_per_clip`` evenly spaced windows from the first to
the last, over the whole track; clips no longer than the window give one crop. ``clip_index`` maps every crop to
its clip so that :func:`finetune.evaluation.average_crops` can pool a clip's predictions.

Too-short clips (shorter than the window): ``short="pad"`` (default) zero-pads them on the left (the audio is
right-aligned, as a stream's first seconds are) with ``mask`` False there, and the batch reports how many it
padded in ``num_short``; ``short="raise"`` raises a ``ValueError`` naming the clip.

Rows that fail when read (``on_error="skip"``, the default). A file can pass the load-time header scan and still
fail when its window is decoded (damaged data, NaN samples). Such a row is skipped: in training its place in the
batch is taken by more windows of the batch's readable clips (the batch keeps its size), in evaluation the batch
is one clip smaller. Each skip is logged, listed in the batch's ``skipped``, appended to ``skip_log`` (a JSONL
file, e.g. in the run directory, shared by every worker process) and remembered, so the file is not decoded
again. ``on_error="raise"`` raises the :class:`~finetune.data.audio.AudioLoadError` instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
import torch
from torch import Tensor

from .audio import AudioLoadError
from .augment.waveform import ClipStretch
from .decoded import DecodedCache
from .lazy import DataError
from .tracks import Track, TrackReader, evenly_spaced_starts, random_window_starts

__all__ = ["AudioBatch", "CropCollate"]

log = logging.getLogger(__name__)


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
        skipped: ``{"name", "path", "reason"}`` of each row that failed to read (not among the ``B`` clips).
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
    skipped: list[dict[str, str]]


@dataclass
class _Clip:
    row: Mapping[str, Any]
    name: str
    track: Track
    rate: float  # time-stretch rate (1.0: none)
    length: int  # samples of the (stretched) clip
    windows: list[tuple[int, Tensor, Tensor]]  # (start, wave [N], mask [N])


@dataclass
class CropCollate:
    """``DataLoader`` collate function that crops/pads clips to a fixed window (see the module docstring).

    Args:
        sample_rate: The backbone's rate in Hz; clips at other rates are read resampled.
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
        id_keys: Keys tried in turn for a clip's id (synthetic sets have ``id``, file loaders ``name``).
        augment: Training only: a waveform augmentation ``augment(waveform [M, N], generator)`` applied to the
            batch with the batch's generator (e.g. :func:`finetune.data.augment.build_wave_augment`).
        multi_hot_key: Row key of multi-label targets (multi-hot floats ``[C]``), used when rows have no
            ``label_key``; batched as float32 ``labels [M, C]``.
        stretch: Training only: a per-clip time-stretch (:class:`finetune.data.augment.ClipStretch`) drawn from
            the batch's generator and applied to each clip before its windows are cut, so windows stay full
            length (lengths, window ends and masks are those of the stretched clip; only the windows' spans
            are read and stretched).
        cache: Decoded copies of files to read windows from (:class:`~finetune.data.decoded.DecodedCache` at
            ``sample_rate``), when present.
        on_error: ``"skip"`` or ``"raise"`` for rows that fail when read.
        skip_log: A JSONL file each skipped row is appended to; None keeps no file.
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
    ratings_key: str = "ratings"
    id_keys: tuple[str, ...] = ("id", "name")
    augment: torch.nn.Module | None = None
    multi_hot_key: str = "labels"
    stretch: ClipStretch | None = None
    cache: DecodedCache | None = None
    on_error: Literal["skip", "raise"] = "skip"
    skip_log: str | Path | None = None
    _epoch: int = field(default=0, init=False, repr=False, compare=False)
    _first_batch: int = field(default=0, init=False, repr=False, compare=False)
    _calls: int = field(default=0, init=False, repr=False, compare=False)
    _bad: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _spare: Mapping[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "crops_per_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {self.window_seconds!r}")
        if self.short not in ("pad", "raise"):
            raise ValueError(f"short must be 'pad' or 'raise', got {self.short!r}")
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")
        if self.min_context_seconds is not None and not 0 < self.min_context_seconds <= self.window_seconds:
            raise ValueError(
                f"min_context_seconds must be in (0, window_seconds={self.window_seconds}], "
                f"got {self.min_context_seconds!r}"
            )
        self._reader = TrackReader(self.sample_rate, self.cache, self.audio_key)

    @property
    def window(self) -> int:
        """Window length in samples."""
        return round(self.window_seconds * self.sample_rate)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> AudioBatch:
        """Collate rows into an :class:`AudioBatch`.

        Shapes:
            -> waveform and mask ``[M, N]`` with ``M = B * crops_per_clip`` in training (fewer in evaluation
            when clips are short), ``N = window``.

        Raises:
            DataError: every row of the batch failed to read (and, in training, no earlier row can stand in).
        """
        if len(rows) == 0:
            raise ValueError("cannot collate an empty batch")
        generator = self._batch_generator() if self.train else None
        clips: list[_Clip] = []
        skipped: list[dict[str, str]] = []
        for b, row in enumerate(rows):
            name = next((str(row[k]) for k in self.id_keys if k in row), str(b))
            try:
                clips.append(self._clip(row, name, generator))
            except AudioLoadError as e:
                if self.on_error == "raise":
                    raise
                skipped.append(self._skip(name, row, e))
        if self.train and skipped:
            self._fill(clips, len(skipped), generator, skipped)
        if not clips:
            raise DataError(
                f"every row of a batch of {len(rows)} failed to read: "
                + "; ".join(f"{s['name']} ({s['reason']})" for s in skipped)
            )
        if self.train:
            self._spare = clips[-1].row
        return self._assemble(clips, skipped, generator)

    def _clip(self, row: Mapping[str, Any], name: str, generator: torch.Generator | None) -> _Clip:
        """Open a row, draw its window positions, then read the windows (the draws come first, so that they do
        not depend on which files failed before)."""
        track = self._reader.open(row, name)
        n = self.window
        rate = self.stretch.draw(generator) if self.train and self.stretch is not None else 1.0
        length = track.length if rate == 1.0 else ClipStretch.stretched_length(track.length, rate)
        if length < n and self.short == "raise":
            raise ValueError(
                f"clip {name!r} has {length} samples ({length / self.sample_rate:.3f} s) at "
                f"{self.sample_rate} Hz, under the {n}-sample window ({self.window_seconds:g} s)"
            )
        starts = self._starts(length, generator)
        if track.path is not None and track.path in self._bad:
            raise AudioLoadError(track.path, self._bad[track.path])
        clip = _Clip(row, name, track, rate, length, [])
        clip.windows = [self._crop(clip, s) for s in starts]
        return clip

    def _skip(self, name: str, row: Mapping[str, Any], error: AudioLoadError) -> dict[str, str]:
        record = {"name": name, "path": error.path, "reason": error.reason}
        if error.path not in self._bad:
            self._bad[error.path] = error.reason
            log.warning("skipped %s: %s", name, error)
            if self.skip_log is not None:
                with open(self.skip_log, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
        return record

    def _fill(
        self,
        clips: list[_Clip],
        missing: int,
        generator: torch.Generator | None,
        skipped: list[dict[str, str]],
    ) -> None:
        """Training: add ``crops_per_clip`` more windows of a readable clip for each skipped row."""
        if not clips and self._spare is not None:
            spare = self._spare
            name = next((str(spare[k]) for k in self.id_keys if k in spare), "spare")
            try:
                clips.append(self._clip(spare, name, generator))
                missing -= 1
            except AudioLoadError as e:
                skipped.append(self._skip(name, spare, e))
        for i in range(missing if clips else 0):
            clip = clips[i % len(clips)]
            try:
                clip.windows += [self._crop(clip, s) for s in self._starts(clip.length, generator)]
            except AudioLoadError as e:  # another part of the file is damaged: the batch is smaller
                skipped.append(self._skip(clip.name, clip.row, e))

    def _assemble(
        self, clips: list[_Clip], skipped: list[dict[str, str]], generator: torch.Generator | None
    ) -> AudioBatch:
        n = self.window
        num_short = sum(clip.length < n for clip in clips)
        if num_short:
            log.debug("padded %d of %d clips shorter than the %d-sample window", num_short, len(clips), n)
        flat = [(c, start, wave, mask) for c, clip in enumerate(clips) for start, wave, mask in clip.windows]
        masks = torch.stack([m for _, _, _, m in flat])
        wave_batch = torch.stack([w for _, _, w, _ in flat])
        if self.train and self.augment is not None:
            wave_batch = self.augment(wave_batch, generator) * masks  # padding stays silent
        per_crop = torch.tensor([c for c, _, _, _ in flat], dtype=torch.int64)
        batch: AudioBatch = {
            "waveform": wave_batch,
            "mask": masks,
            "clip_index": per_crop,
            "crop_start": torch.tensor([s for _, s, _, _ in flat], dtype=torch.int64),
            "ids": [clip.name for clip in clips],
            "num_short": num_short,
            "skipped": skipped,
        }
        rows = [clip.row for clip in clips]
        if self.label_key in rows[0]:
            labels = torch.tensor([int(r[self.label_key]) for r in rows], dtype=torch.int64)
            batch["labels"] = labels[per_crop]
        elif self.multi_hot_key in rows[0]:
            hot = [torch.as_tensor(np.asarray(r[self.multi_hot_key]), dtype=torch.float32) for r in rows]
            batch["labels"] = torch.stack(hot)[per_crop]
        if "descriptors" in rows[0]:  # a hybrid head's clip descriptors (finetune.descriptors), per crop
            descriptors = [torch.as_tensor(np.asarray(r["descriptors"]), dtype=torch.float32) for r in rows]
            batch["descriptors"] = torch.stack(descriptors)[per_crop]
        if self.ratings_key in rows[0]:
            ratings = torch.stack(
                [torch.as_tensor(np.asarray(r[self.ratings_key]), dtype=torch.float32) for r in rows]
            )
            batch["ratings"] = ratings[per_crop]
        return batch

    def _starts(self, length: int, generator: torch.Generator | None) -> list[int]:
        """Window starts in samples (negative: the window begins before the clip)."""
        n, k = self.window, self.crops_per_clip
        if self.train:
            lo = n if self.min_context_seconds is None else round(self.min_context_seconds * self.sample_rate)
            return random_window_starts(length, n, k, lo, generator)
        return evenly_spaced_starts(length, n, k)

    def _crop(self, clip: _Clip, start: int) -> tuple[int, Tensor, Tensor]:
        """The window ``[start, start + N)`` of the (stretched) clip (zeros outside it) and its mask."""
        n = self.window
        mask = torch.zeros(n, dtype=torch.bool)
        mask[max(0, -start) : max(0, min(n, clip.length - start))] = True
        if clip.rate == 1.0:
            return start, clip.track.read(start, start + n), mask
        assert self.stretch is not None
        return start, self.stretch.window(clip.track.read, start, n, clip.rate) * mask, mask

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
