"""One live stream of a :class:`~finetune.streaming.StreamingEngine`: input checks, resampling, clock and state.

Chunks are ``[N]`` (mono) or ``[C, N]`` (channels first, as :func:`finetune.data.load_audio` returns them), numpy
or torch, floating point, at the session's input rate. Channels are averaged in float32 as ``load_audio``
averages them, then resampled to the model's rate by a :class:`~finetune.data.resample.StreamingResampler`.

Clock and gaps: a session's time is the seconds of input received since it started (or since the first
``timestamp`` given, which sets the origin). ``push_gap(seconds)`` or a chunk whose ``timestamp`` lies more than
the engine's ``gap_tolerance_s`` after the audio received so far ends the current segment (the resampler's tail is
flushed, and the hops it completes are computed, as offline on the segment alone) and starts a new one after the
gap: the caches restart empty, the hop grid restarts at the new segment's start (so a ``"wait"`` policy waits for
a full window again), the clock and the hop index keep counting, and the post-processing state is kept. A
timestamp earlier than the audio received (beyond the tolerance) is an error.

Faults: any bad input raises :class:`StreamError` before anything changes, so the session's state is exactly as
before the call; other sessions are never affected.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from finetune.data.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from finetune.data.resample import Resampler

from .cache import AudioBuffer, ColumnCache, tensor_bytes
from .types import HopResult, PostProcessor, RawHop, SegmentEvent

if TYPE_CHECKING:
    from .engine import StreamingEngine, _Hop

__all__ = ["StreamError", "StreamEnd", "StreamingSession"]

_RESAMPLE_EVERY = 4096  # queued input samples that are resampled even when no hop can be due yet


class StreamError(ValueError):
    """A chunk or call this session cannot take; the message says what to fix. Nothing was changed."""


@dataclass(frozen=True)
class StreamEnd:
    """What :meth:`StreamingSession.flush` returns.

    Attributes:
        hops: the hops completed by the stream's last samples.
        events: the post-processor's closing events (the open segment's end).
    """

    hops: list[HopResult]
    events: tuple[SegmentEvent, ...]


class StreamingSession:
    """A live stream: push chunks, get the hops they complete. Built by :meth:`StreamingEngine.open_session`.

    Attributes:
        id: the session id (``HopResult.session``).
        sample_rate: the input rate in Hz.
        channels: the input channel count (None: mono chunks ``[N]`` or ``[1, N]``).
    """

    def __init__(
        self,
        engine: StreamingEngine,
        session_id: str,
        sample_rate: int,
        channels: int | None,
        postprocessor: PostProcessor,
    ) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
            raise StreamError(f"sample_rate must be an int (Hz), got {sample_rate!r}")
        if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            raise StreamError(
                f"sample_rate {sample_rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz"
            )
        if channels is not None and (
            isinstance(channels, bool) or not isinstance(channels, int) or channels < 1
        ):
            raise StreamError(f"channels must be a positive int or None (mono), got {channels!r}")
        self.id = session_id
        self.sample_rate = sample_rate
        self.channels = channels
        self._engine = engine
        self._post = postprocessor
        self._resampler = Resampler(sample_rate, engine.sample_rate).stream()
        self._closed = False
        self.reset()

    # ------------------------------------------------------------------------------------------ public API
    @property
    def time(self) -> float:
        """Seconds of stream received (input clock, gaps included)."""
        return self._t0 + self._received / self.sample_rate

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, chunk: Any, timestamp: float | None = None) -> list[HopResult]:
        """Add a chunk and return the hops it completes (computed at once, for this session alone).

        Args:
            chunk: samples, ``[N]`` or ``[C, N]`` (see the module docstring), any length.
            timestamp: stream time (s) of the chunk's first sample; a jump forward is a gap.

        Raises:
            StreamError: a bad chunk or timestamp, or a closed session; the state is unchanged.
        """
        self.feed(chunk, timestamp)
        return self._engine._process([self])[self]

    def feed(self, chunk: Any, timestamp: float | None = None) -> None:
        """Add a chunk without computing hops; the engine's next :meth:`StreamingEngine.step` computes them.

        Raises:
            StreamError: as :meth:`push`.
        """
        self._check_open()
        mono = self._check_chunk(chunk)
        gap = self._check_timestamp(timestamp)
        if timestamp is not None and not self._started:
            self._t0 = float(timestamp)
        elif gap:
            self._ready.extend(self._end_segment(gap))
        self._started = True
        self._received += mono.shape[-1]
        if mono.shape[-1]:
            self._queued.append(mono)
            self._queued_samples += mono.shape[-1]

    def push_gap(self, seconds: float) -> list[HopResult]:
        """``seconds`` of missing audio: end the current segment (returning the hops its tail completes) and
        start a new one after the gap (see the module docstring).

        Raises:
            StreamError: a negative or non-finite duration, or a closed session.
        """
        self._check_open()
        if not _is_seconds(seconds):
            raise StreamError(f"session {self.id!r}: gap must be a finite number of seconds, got {seconds!r}")
        if seconds < 0:
            raise StreamError(f"session {self.id!r}: gap must be >= 0 s, got {seconds}")
        self._ready.extend(self._end_segment(float(seconds)))
        return self._engine._process([self])[self]

    def flush(self) -> StreamEnd:
        """End of stream: compute the hops the resampler's tail completes, close the post-processor's open segment,
        then :meth:`reset` (the session can take a new stream)."""
        self._check_open()
        hops = self._end_segment(None)
        end = StreamEnd(hops=hops, events=tuple(self._post.flush()))
        self.reset()
        return end

    def reset(self) -> None:
        """Forget everything: audio, caches, clock, hop index and post-processing state."""
        self._check_open()
        self._index = 0
        self._started = False
        self._ready: list[HopResult] = []
        self._post.reset()
        self._new_segment(0.0)

    def close(self) -> None:
        """Release the state and leave the engine; later calls raise :class:`StreamError` (flush first to get
        the last hops)."""
        if not self._closed:
            self._engine._forget(self)
            self._closed = True
            self._audio = self._columns = None  # type: ignore[assignment]
            self._encoder_state = {}

    def state_bytes(self) -> int:
        """Bytes of per-session state: the audio kept, the resampler's and front-end's tails, the frames and the
        column ring, and encoder caches (post-processing state not included). Bounded by the longest window."""
        if self._closed:
            return 0
        caches = [cached for _, _, cached in self._encoder_state.values()]
        return (
            self._audio.nbytes()
            + (self._columns.nbytes() if self._columns is not None else 0)
            + tensor_bytes(self._resampler, *self._queued, *[t for state in caches for t in state])
        )

    def __repr__(self) -> str:
        return f"StreamingSession(id={self.id!r}, sample_rate={self.sample_rate}, time={self.time:.3f})"

    # ----------------------------------------------------------------------------------- engine interface
    def _new_segment(self, t0: float) -> None:
        self._t0 = t0
        self._received = 0
        self._queued: list[Tensor] = []
        self._queued_samples = 0
        self._resampler.reset()
        self._audio = AudioBuffer(self._engine.device)
        self._columns: ColumnCache | None = self._engine._new_column_cache()
        self._encoder_state: dict[float, tuple[int, int, list[Tensor]]] = {}
        self._next_end = self._engine._first_hop_end

    def _resample_queued(self) -> None:
        """Resample the queued input chunks into the model-rate audio."""
        if self._queued:
            chunk = torch.cat(self._queued, dim=-1) if len(self._queued) > 1 else self._queued[0]
            self._queued, self._queued_samples = [], 0
            with torch.inference_mode():
                self._audio.append(self._resampler.process(chunk))

    def _end_segment(self, gap: float | None) -> list[HopResult]:
        """Flush the resampler and compute the hops the segment's tail completes; with ``gap``, start the next
        segment ``gap`` seconds after the audio received."""
        self._resample_queued()
        with torch.inference_mode():
            tail = self._resampler.flush()
            self._audio.append(tail.reshape(1, -1))
        hops = self._engine._process([self])[self]
        if gap is not None:
            self._new_segment(self.time + gap)
        return hops

    def _due(self) -> _Hop | None:
        """The next hop when its window end has arrived, else None.

        Input is queued and resampled only once it could complete the next hop (or a few thousand samples are
        queued), so that tiny chunks cost a list append, not a resampler call each."""
        rate = self._engine.sample_rate
        if self._queued and (
            self._received * rate >= self._next_end * self.sample_rate
            or self._queued_samples >= _RESAMPLE_EVERY
        ):
            self._resample_queued()
        if self._audio.end < self._next_end:
            return None
        return self._engine._hop(self._next_end, self._index)

    def _finish_hop(self, raw: RawHop) -> HopResult:
        """Post-process a computed hop and advance to the next one."""
        self._index += 1
        self._next_end += self._engine.hop_samples
        result = self._post.step(raw)
        return result if result.session == self.id else _with_session(result, self.id)

    def _take_ready(self) -> list[HopResult]:
        ready, self._ready = self._ready, []
        return ready

    def _segment_time(self, end: int) -> float:
        """Stream seconds at segment sample ``end`` (model rate)."""
        return self._t0 + end / self._engine.sample_rate

    def _trim(self) -> None:
        """Drop the audio no later window reads."""
        first = self._next_end - self._engine._longest_samples
        self._audio.trim(min(first, self._columns.fed if self._columns is not None else first))

    def _check_open(self) -> None:
        if self._closed:
            raise StreamError(f"session {self.id!r} is closed; open a new one with engine.open_session()")

    def _check_chunk(self, chunk: Any) -> Tensor:
        """The chunk as float32 mono ``[1, N]`` on the CPU, or a :class:`StreamError` saying what is wrong."""
        where = f"session {self.id!r}"
        if isinstance(chunk, Tensor):
            if not chunk.is_floating_point():
                raise StreamError(f"{where}: {_dtype_problem(chunk.dtype)}")
            chunk = chunk.detach().to("cpu", torch.float32).numpy()
        if isinstance(chunk, np.ndarray):
            if not np.issubdtype(chunk.dtype, np.floating):
                raise StreamError(f"{where}: {_dtype_problem(chunk.dtype)}")
            x = np.asarray(chunk, dtype=np.float32)
        else:
            raise StreamError(
                f"{where}: expected a numpy array or torch tensor of samples, got {type(chunk).__name__}"
            )
        layout = "mono [N] or [1, N]" if self.channels is None else f"[{self.channels}, N] (channels first)"
        wanted = 1 if self.channels is None else self.channels
        if x.ndim == 1 and self.channels is None:
            x = x[None]
        if x.ndim != 2 or x.shape[0] != wanted:
            hint = (
                "; open the session with channels=C for multi-channel audio"
                if self.channels is None
                else f"; a [N, {wanted}] chunk is passed as chunk.T"
                if x.ndim == 2 and x.shape[1] == wanted
                else ""
            )
            raise StreamError(f"{where}: expected {layout}, got shape {list(x.shape)}{hint}")
        if not np.isfinite(x).all():
            nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
            raise StreamError(
                f"{where}: the chunk holds non-finite samples ({nan} NaN, {inf} Inf); it was dropped and the "
                "session is unchanged - check the decoder or gain before the stream"
            )
        wave = torch.from_numpy(np.array(x))  # a copy: the caller may reuse its buffer
        return wave.mean(dim=0, keepdim=True) if wave.shape[0] > 1 else wave

    def _check_timestamp(self, timestamp: float | None) -> float:
        """The gap (s) a chunk's timestamp opens (0.0 for none; the first timestamp sets the origin), or a
        :class:`StreamError`."""
        if timestamp is None:
            return 0.0
        if not _is_seconds(timestamp):
            raise StreamError(f"session {self.id!r}: timestamp must be finite seconds, got {timestamp!r}")
        if not self._started:
            return 0.0
        delta, tolerance = float(timestamp) - self.time, self._engine.gap_tolerance_s
        if delta < -tolerance:
            raise StreamError(
                f"session {self.id!r}: timestamp {timestamp:.6f} s is {-delta:.6f} s before the end of the audio "
                f"received ({self.time:.6f} s); timestamps must not go back (tolerance {tolerance} s)"
            )
        return delta if delta > tolerance else 0.0


def _is_seconds(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _dtype_problem(dtype: object) -> str:
    return (
        f"chunk dtype {dtype} is not floating point; pass float samples in [-1, 1] "
        "(16-bit PCM: x.astype(np.float32) / 32768)"
    )


def _with_session(result: HopResult, session_id: str) -> HopResult:
    return dataclasses.replace(result, session=session_id)
