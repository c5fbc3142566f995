"""Chunk-by-chunk front-end computation whose frames equal the whole-signal frames."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .base import MelFrontend

__all__ = ["FrontendStream"]


class FrontendStream:
    """Incremental front-end: ``push`` chunks of one batch of streams, get the frames each chunk completes.

    Frames pushed chunk by chunk equal the whole-signal frames of ``frontend(x)`` (to float rounding: only the
    matmul/FFT batch shapes differ), edges included, for any chunk sizes:

    - Kaldi (snip edges): frame ``t`` is emitted once its ``frame_length`` samples are in; ``flush`` emits
      nothing. Frames are normalised but not padded/cropped to ``target_frames``.
    - Centred STFTs (PaSST, PANNs): the left reflect padding is built once ``center_pad + 1`` (prepared) samples
      are in, so frames 0 and 1 wait for them; frame ``t`` is emitted once the samples up to its right edge are
      in; ``flush`` reflect-pads the end as the whole-signal transform does and emits the last frames.

    State kept: the last ``context`` raw samples (1 for PaSST's pre-emphasis, else none); the prepared, edge-padded
    samples from the start of the next frame on (at least the last ``center_pad + 1``, for the end reflection);
    the number of frames emitted; and with PCEN the smoother's last value ``[B, n_mels]``. The batch size is fixed
    by the first push. PasstMel streams always use the deterministic (eval) filterbank; per-clip CMVN needs the
    whole clip, so ``cmvn=True`` front-ends cannot stream. ``flush`` ends the stream and resets the state.
    """

    def __init__(self, frontend: MelFrontend) -> None:
        if frontend.cmvn:
            raise ValueError(
                "per-clip CMVN needs the whole clip; stream a front-end built with cmvn=False and "
                "normalise the window you feed the model"
            )
        self.frontend = frontend
        self.reset()

    def reset(self) -> None:
        """Forget everything pushed so far."""
        self._tail: Tensor | None = None
        self._buffer: Tensor | None = None
        self._offset = 0
        self._started = False
        self._frames = 0
        self._seen = 0
        self._pcen_state: Tensor | None = None

    def push(self, chunk: Tensor) -> Tensor:
        """Add samples; returns the frames they complete.

        Shapes:
            chunk: [B, n] (any n >= 0); returns [B, n_mels, t_new].
        """
        fe = self.frontend
        x = fe._check(chunk)
        if self._tail is not None:
            if x.shape[0] != self._tail.shape[0]:
                raise ValueError(
                    f"this stream carries {self._tail.shape[0]} signals, got a chunk of {x.shape[0]}"
                )
            x = torch.cat([self._tail, x], dim=-1)
        self._seen += chunk.shape[-1]
        self._tail = x[:, x.shape[-1] - min(fe.context, x.shape[-1]) :]
        prepared = fe._prepare(x) if x.shape[-1] > fe.context else x[:, :0]
        buffer = prepared if self._buffer is None else torch.cat([self._buffer, prepared], dim=-1)
        pad = fe.center_pad
        if pad and not self._started:
            if buffer.shape[-1] <= pad:
                self._buffer = buffer
                return buffer.new_empty(buffer.shape[0], fe.n_mels, 0)
            buffer = torch.cat([buffer[:, 1 : pad + 1].flip(-1), buffer], dim=-1)
            self._started = True
        self._buffer = buffer
        return self._emit()

    def flush(self) -> Tensor:
        """End the stream: emit the frames that need the end-of-signal padding, then reset.

        Shapes:
            returns [B, n_mels, t_last] (t_last = 0 for Kaldi).
        """
        fe, pad = self.frontend, self.frontend.center_pad
        if self._buffer is None:
            raise ValueError("flush() called before any push()")
        if pad and not self._started:
            seen = self._seen
            self.reset()
            raise ValueError(
                f"{type(fe).__name__} needs at least {fe.min_samples} samples, the stream got {seen}"
            )
        if pad:
            self._buffer = torch.cat([self._buffer, self._buffer[:, -pad - 1 : -1].flip(-1)], dim=-1)
            out = self._emit()
        else:
            out = self._buffer.new_empty(self._buffer.shape[0], fe.n_mels, 0)
        self.reset()
        return out

    def _emit(self) -> Tensor:
        fe, buffer = self.frontend, self._buffer
        length, hop = fe.frame_length, fe.hop_length
        end = self._offset + buffer.shape[-1]
        n_new = max(0, (end - length) // hop + 1 - self._frames) if end >= length else 0
        if n_new:
            start = self._frames * hop - self._offset
            frames = buffer[:, start : start + (n_new - 1) * hop + length]
            feats, self._pcen_state = fe._features(frames, False, self._pcen_state)
            self._frames += n_new
        else:
            feats = buffer.new_empty(buffer.shape[0], fe.n_mels, 0)
        keep = max(0, min(self._frames * hop, end - fe.center_pad - 1) - self._offset)
        self._buffer, self._offset = buffer[:, keep:], self._offset + keep
        return feats
