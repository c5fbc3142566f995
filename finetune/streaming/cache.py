"""Per-session streaming state: the model-rate audio of the current segment and the token-column cache.

Both are batch-first (``[1, ...]`` per session), so the engine gathers sessions into one batch and scatters the
results back. Memory is bounded by the longest window: the audio keeps the samples the next window can read, the
column cache a ring of the longest window's columns plus one hop, and the frames the next columns need.
"""

from __future__ import annotations

import torch
from torch import Tensor

from backbones import StreamGeometry
from backbones.frontends import MelFrontend

__all__ = ["AudioBuffer", "ColumnCache", "ColumnRequest", "tensor_bytes"]


def tensor_bytes(*objects: object) -> int:
    """Bytes held by the tensors among ``objects`` and among their attributes (one level deep; None is skipped),
    counted by storage so that views of a larger tensor count what they keep alive."""
    seen: set[int] = set()
    total = 0
    for obj in objects:
        values = (
            [obj] if isinstance(obj, Tensor) else list(vars(obj).values()) if hasattr(obj, "__dict__") else []
        )
        for value in values:
            if isinstance(value, Tensor):
                storage = value.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
    return total


class AudioBuffer:
    """Samples ``[start, end)`` of the current segment at the model's rate, as ``[1, n]`` on one device.

    Appends are queued and joined on the next read, so that one-sample chunks cost no copy of the buffer.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0
        self.end = 0
        self._data = torch.zeros(1, 0, device=device)
        self._queued: list[Tensor] = []

    def append(self, samples: Tensor) -> None:
        """Add ``[1, m]`` samples at the end."""
        if samples.shape[-1]:
            self._queued.append(samples.to(self.device, torch.float32))
            self.end += samples.shape[-1]

    def read(self, a: int, b: int) -> Tensor:
        """Samples ``[a, b)`` of the segment, ``[1, b - a]``; ``a >= start`` and ``b <= end``."""
        if not self.start <= a <= b <= self.end:
            raise IndexError(f"samples [{a}, {b}) are outside the buffer [{self.start}, {self.end})")
        if self._queued:
            self._data = torch.cat([self._data, *self._queued], dim=-1)
            self._queued.clear()
        return self._data[:, a - self.start : b - self.start]

    def trim(self, keep_from: int) -> None:
        """Drop the samples before ``keep_from`` (copying the rest, so the memory is released)."""
        keep_from = min(max(keep_from, self.start), self.end)
        if keep_from > self.start:
            self._data = self.read(keep_from, self.end).clone()
            self.start = keep_from

    def nbytes(self) -> int:
        return tensor_bytes(self._data, *self._queued)


class ColumnRequest:
    """Stream frames to tokenize, and which of the resulting columns are new: ``tokens[:, skip : skip + count]``."""

    __slots__ = ("frames", "skip", "count")

    def __init__(self, frames: Tensor, skip: int, count: int) -> None:
        self.frames, self.skip, self.count = frames, skip, count


class ColumnCache:
    """The stream's front-end frames (the front-end's exact chunked ``stream()``) and a ring of its token columns.

    Stream column ``u`` reads stream frames ``[u * stride - pad, ...)`` as :class:`backbones.StreamGeometry`
    describes; a column is computed once all its frames are in, by ``tokenize`` on a slice of frames that starts on
    the column grid far enough to the left that the slice's own zero padding does not reach it. Columns that
    would read frames before the stream start are never needed and never computed.

    Args:
        frontend: the backbone's front-end (in eval mode).
        geometry: the backbone's geometry.
        capacity: columns kept (the longest window's columns plus a hop's).
    """

    def __init__(self, frontend: MelFrontend, geometry: StreamGeometry, capacity: int) -> None:
        self.geometry = geometry
        self.capacity = capacity
        self.fed = 0  # samples given to the front-end stream
        self.first = geometry.edge_columns  # the first stream column computed
        self.end = self.first  # one past the last stream column computed
        self._stream = frontend.stream()
        self._frames: Tensor | None = None  # [1, n_mels, k]: stream frames [_frames_start, _frames_end)
        self._frames_start = 0
        self._frames_end = 0
        self._ring: Tensor | None = None  # [capacity, F', D]; column u at row u % capacity

    def feed(self, samples: Tensor) -> None:
        """Push the next ``[1, m]`` samples of the stream through the front-end."""
        if not samples.shape[-1]:
            return
        frames = self._stream.push(samples)
        self.fed += samples.shape[-1]
        if frames.shape[-1]:
            self._frames = frames if self._frames is None else torch.cat([self._frames, frames], dim=-1)
            self._frames_end += frames.shape[-1]

    def request(self) -> ColumnRequest | None:
        """The frames whose tokens hold every column computable now, or None when there is none yet."""
        g = self.geometry
        available = (self._frames_end + g.column_pad - g.column_span) // g.column_stride + 1
        if available <= self.end or self._frames is None:
            return None
        start = (self.end - g.edge_columns) * g.column_stride
        stop = g.column_end(available - 1)
        if stop - start < g.min_tokenize_frames:
            start = (stop - g.min_tokenize_frames) // g.column_stride * g.column_stride
        if start < self._frames_start:  # the stream's first frames are fewer than tokenize takes
            return None
        frames = self._frames[:, :, start - self._frames_start : stop - self._frames_start]
        return ColumnRequest(frames, self.end - start // g.column_stride, available - self.end)

    def store(self, request: ColumnRequest, tokens: Tensor) -> None:
        """Keep the new columns of ``tokens`` (``[1, T', F', D]``, from ``request.frames``) and drop the frames
        no later column reads."""
        g = self.geometry
        new = tokens[0, request.skip : request.skip + request.count]
        if self._ring is None:
            self._ring = new.new_empty(self.capacity, *new.shape[1:])
        rows = torch.arange(self.end, self.end + request.count, device=new.device) % self.capacity
        self._ring.index_copy_(0, rows, new)
        self.end += request.count
        keep = min((self.end - g.edge_columns) * g.column_stride, self._frames_end - g.min_tokenize_frames)
        keep = max(self._frames_start, keep // g.column_stride * g.column_stride)
        if keep > self._frames_start and self._frames is not None:
            self._frames = self._frames[:, :, keep - self._frames_start :].clone()
            self._frames_start = keep

    def covers(self, start: int, stop: int) -> bool:
        """Whether stream columns ``[start, stop)`` are all in the ring."""
        return max(self.first, self.end - self.capacity) <= start and stop <= self.end

    def gather(self, start: int, stop: int) -> Tensor:
        """Stream columns ``[start, stop)`` as ``[1, stop - start, F', D]`` (see :meth:`covers`)."""
        assert self._ring is not None and self.covers(start, stop)
        rows = torch.arange(start, stop, device=self._ring.device) % self.capacity
        return self._ring.index_select(0, rows).unsqueeze(0)

    def nbytes(self) -> int:
        return tensor_bytes(self._frames, self._ring, self._stream)
