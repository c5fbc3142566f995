"""The streaming engine: many live sessions on one :class:`~finetune.AudioModel`, their due hops batched.

>>> engine = StreamingEngine(model, window_s=10.0, hop_s=0.5)
>>> session = engine.open_session(sample_rate=44100)
>>> for hop in session.push(chunk):            # any chunk size, any input rate
...     hop.time, hop.probs, hop.top_k
>>> engine.push_many({s1: chunk1, s2: chunk2})  # {session: [HopResult] | StreamError}

Each hop computes, per session, the front-end frames and token columns of the new audio only (the front-end's exact
``stream()``, then ``tokenize``), recomputes the few columns at each window's edges that read its edge padding
(:mod:`finetune.streaming.plan`), and runs ``encode`` + the head on the window's columns: sessions' windows with
the same column count share one batched call, so no padding is ever needed and a session's outputs do not depend
on its batch neighbours. Every hop equals the offline model on the window's samples (the stream resampled once,
the window cut from it), to float rounding.

Hops and windows must be whole numbers of the backbone's column stride (100 ms for AST/PaSST, 20 ms for CNN14)
for the column cache to be exact; other lengths are rejected, or run with ``exact_recompute=True`` (no cache:
every window is recomputed from the audio). Start of stream: ``start="wait"`` emits the first hop once the longest
window is full; ``start="partial"`` emits hops from the backbone's minimum length on, running each window shorter
than asked on ``[0, t)`` exactly as the offline model runs that short clip. The hop grid is ``t = k * hop_s`` from
the start of the stream (or of the segment after a gap, see :mod:`finetune.streaming.session`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from backbones import BackboneOutput, StreamGeometry

from ..model import AudioModel
from .cache import ColumnCache
from .encoders import ENCODER_CACHES, EncoderCache
from .plan import WindowPlan, plan_window
from .session import StreamError, StreamingSession
from .types import HopResult, PostProcessor, RawHop, WindowSpec

__all__ = ["StreamingEngine", "START_POLICIES"]

START_POLICIES = ("wait", "partial")
_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class _Hop:
    end: int  # window end, in samples of the segment at the model's rate
    index: int
    windows: tuple[tuple[WindowSpec, int], ...]  # the windows encoded at this hop and their lengths (samples)
    partial: bool


@dataclass
class _Job:
    """One window of one session at one hop."""

    session: StreamingSession
    spec: WindowSpec
    samples: int
    end: int
    plan: WindowPlan
    parts: list[Tensor | None] = field(default_factory=lambda: [None, None, None])

    @property
    def start(self) -> int:
        return self.end - self.samples


def _samples(seconds: float, sample_rate: int, what: str) -> int:
    """``seconds`` as a whole number of samples, or a ValueError."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {seconds!r}")
    n = round(seconds * sample_rate)
    if abs(n - seconds * sample_rate) > 1e-6 * max(1.0, n):
        raise ValueError(f"{what}={seconds} s is not a whole number of samples at {sample_rate} Hz")
    return n


def _window_specs(window_s: float, windows: Sequence[WindowSpec | float] | None) -> tuple[WindowSpec, ...]:
    specs = (
        [WindowSpec(float(window_s))]
        if windows is None
        else [w if isinstance(w, WindowSpec) else WindowSpec(float(w)) for w in windows]
    )
    if not specs:
        raise ValueError("windows must name at least one window")
    seconds = [w.seconds for w in specs]
    if len(set(seconds)) != len(seconds):
        raise ValueError(f"windows must have distinct lengths, got {seconds}")
    for w in specs:
        if isinstance(w.every, bool) or not isinstance(w.every, int) or w.every < 1:
            raise ValueError(
                f"WindowSpec.every must be an int >= 1, got {w.every!r} for the {w.seconds} s window"
            )
        if not (math.isfinite(w.weight) and w.weight >= 0):
            raise ValueError(f"WindowSpec.weight must be finite and >= 0, got {w.weight} for {w.seconds} s")
    return tuple(specs)


class StreamingEngine:
    """Many live sessions on one model; see the module docstring for the exactness rules and policies.

    Args:
        model: the model (it is put in eval mode and, with ``device``, moved there).
        window_s: the window length when ``windows`` is None.
        hop_s: seconds between hops.
        windows: several right-aligned windows (:class:`WindowSpec` or seconds); the longest sets the cache size.
        start: ``"wait"`` or ``"partial"`` (start-of-stream policy).
        device: where the model runs (default: where its parameters are).
        dtype: None (float32) or ``torch.bfloat16`` / ``torch.float16`` for autocast of tokenize and encode
            (the front-end stays float32).
        max_batch: the most windows in one batched call.
        postprocess: the post-processing: a factory ``(task, labels, windows, calibration, *, session) ->
            PostProcessor``, or a config for :func:`finetune.streaming.postprocess.build_postprocessor` (a
            ``PostProcessConfig`` or its dict), or None for its defaults.
        exact_recompute: no cache: recompute every window from the audio (any hop of whole samples).
        encoder_cache: ``"none"`` (``encode`` recomputed each hop) or a registered encoder cache for this
            backbone (``"activations"`` for CNN14: reuse conv activations of the overlap, see
            :mod:`finetune.streaming.encoders`).
        gap_tolerance_s: a chunk timestamp this far from the audio received is not a gap.

    Raises:
        InputTooLongError: a window longer than the backbone takes (the backbone's own error).
        ValueError: bad settings, or a hop/window off the column grid without ``exact_recompute``.
    """

    def __init__(
        self,
        model: AudioModel,
        window_s: float = 10.0,
        hop_s: float = 0.5,
        *,
        windows: Sequence[WindowSpec | float] | None = None,
        start: str = "wait",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        max_batch: int = 64,
        postprocess: Callable[..., PostProcessor] | Any = None,
        exact_recompute: bool = False,
        encoder_cache: str = "none",
        gap_tolerance_s: float = 0.005,
    ) -> None:
        if not isinstance(model, AudioModel):
            raise TypeError(f"StreamingEngine takes an AudioModel, got {type(model).__name__}")
        if start not in START_POLICIES:
            raise ValueError(f"start must be one of {START_POLICIES}, got {start!r}")
        if dtype is not None and dtype not in _AUTOCAST_DTYPES:
            raise ValueError(f"dtype must be None (float32) or one of {_AUTOCAST_DTYPES}, got {dtype}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if not (math.isfinite(gap_tolerance_s) and gap_tolerance_s >= 0):
            raise ValueError(f"gap_tolerance_s must be finite and >= 0, got {gap_tolerance_s}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.backbone = model.backbone
        self.sample_rate = self.backbone.sample_rate
        self.geometry: StreamGeometry = self.backbone.stream_geometry()
        self.start, self.dtype, self.max_batch = start, dtype, max_batch
        self.exact_recompute, self.gap_tolerance_s = bool(exact_recompute), float(gap_tolerance_s)
        self.windows = _window_specs(window_s, windows)
        self.hop_s = hop_s
        self.hop_samples = _samples(hop_s, self.sample_rate, "hop_s")
        self.window_samples = {
            w.seconds: _samples(w.seconds, self.sample_rate, "window") for w in self.windows
        }
        self._check_lengths()
        self._encoder = self._encoder_cache(encoder_cache)
        self.encoder_cache = encoder_cache
        self._longest_samples = max(self.window_samples.values())
        first = self._longest_samples if start == "wait" else self.geometry.min_samples
        self._first_hop_end = -(-first // self.hop_samples) * self.hop_samples
        g = self.geometry
        hop_columns = -(-self.hop_samples // g.column_samples)
        self._capacity = g.num_columns(g.total_frames(self._longest_samples)) + hop_columns + 2
        self._plans: dict[int, WindowPlan] = {}
        self._postprocess = postprocess
        self._new_postprocessor("")  # a bad post-processing config fails here, not at the first session
        self._sessions: dict[str, StreamingSession] = {}
        self._opened = 0

    # ------------------------------------------------------------------------------------------ sessions
    @property
    def sessions(self) -> Mapping[str, StreamingSession]:
        """The open sessions by id (a read-only live view)."""
        return MappingProxyType(self._sessions)

    def open_session(
        self, sample_rate: int, channels: int | None = None, session_id: str | None = None
    ) -> StreamingSession:
        """A new session for input at ``sample_rate`` Hz, mono (``channels=None``) or ``[channels, N]`` chunks.

        Raises:
            StreamError: a bad rate or channel count, or an id already open.
        """
        if session_id is None:
            while (session_id := f"session-{self._opened}") in self._sessions:
                self._opened += 1
        if session_id in self._sessions:
            raise StreamError(f"session id {session_id!r} is already open")
        session = StreamingSession(
            self, str(session_id), sample_rate, channels, self._new_postprocessor(session_id)
        )
        self._opened += 1
        self._sessions[session.id] = session
        return session

    def push_many(
        self, chunks: Mapping[StreamingSession | str, Any]
    ) -> dict[Any, list[HopResult] | StreamError]:
        """Add one chunk per session and compute every due hop of these sessions in batched calls.

        Returns, for each key (a session or its id), its new hops, or the :class:`StreamError` its chunk raised
        (that session is unchanged; the others go on).
        """
        out: dict[Any, list[HopResult] | StreamError] = {}
        fed: list[tuple[Any, StreamingSession]] = []
        for key, chunk in chunks.items():
            try:
                session = self._session(key)
                session.feed(chunk)
            except StreamError as error:
                out[key] = error
                continue
            fed.append((key, session))
        results = self._process([s for _, s in fed])
        out.update({key: results[session] for key, session in fed})
        return out

    def step(self) -> dict[StreamingSession, list[HopResult]]:
        """Compute the due hops of every session (fed with :meth:`StreamingSession.feed`); sessions without new
        hops are left out."""
        results = self._process(list(self._sessions.values()))
        return {session: hops for session, hops in results.items() if hops}

    def _session(self, key: StreamingSession | str) -> StreamingSession:
        session = key if isinstance(key, StreamingSession) else self._sessions.get(key)
        if session is None or session._engine is not self:
            raise StreamError(f"{key!r} is not a session of this engine")
        return session

    def _forget(self, session: StreamingSession) -> None:
        self._sessions.pop(session.id, None)

    def _new_postprocessor(self, session_id: str) -> PostProcessor:
        factory = self._postprocess
        if not callable(factory):
            from .postprocess import build_postprocessor

            factory = functools.partial(build_postprocessor, factory)
        model = self.model
        return factory(model.task, model.labels, self.windows, model.calibration, session=session_id)

    def _new_column_cache(self) -> ColumnCache | None:
        if self.exact_recompute:
            return None
        return ColumnCache(self.backbone.frontend, self.geometry, self._capacity)

    # ----------------------------------------------------------------------------------------- settings
    def _check_lengths(self) -> None:
        g, name = self.geometry, self.backbone.name
        for seconds, n in self.window_samples.items():
            if g.max_samples is not None and n > g.max_samples:
                raise self.backbone.input_too_long(f"a {seconds} s window ({n} samples)")
            if n < g.min_samples:
                raise ValueError(
                    f"{name} needs windows of at least {g.min_samples / self.sample_rate:.3f} s "
                    f"({g.min_samples} samples), got {seconds} s"
                )
        if self.exact_recompute:
            return
        if not g.local:
            raise ValueError(
                f"{name}'s front-end (PCEN or per-clip CMVN) makes every frame depend on the whole window, so "
                "no frame cache can be exact; use exact_recompute=True"
            )
        grid = g.column_samples / self.sample_rate
        for what, n in [("hop_s", self.hop_samples), *(("window", n) for n in self.window_samples.values())]:
            if n % g.column_samples:
                raise ValueError(
                    f"{what}={n / self.sample_rate:g} s is not a multiple of {name}'s token-column stride "
                    f"({grid:g} s = {g.column_samples} samples at {self.sample_rate} Hz): the column cache is "
                    f"exact only on that grid. Use a multiple such as "
                    f"{max(1, round(n / g.column_samples)) * grid:g} s, or exact_recompute=True to recompute every "
                    "window from the audio."
                )

    def _encoder_cache(self, name: str) -> EncoderCache | None:
        if name == "none":
            return None
        families = ENCODER_CACHES.get(name)
        if families is None:
            raise ValueError(f"encoder_cache must be 'none' or one of {sorted(ENCODER_CACHES)}, got {name!r}")
        builder = next((b for cls, b in families.items() if isinstance(self.backbone, cls)), None)
        if builder is None:
            known = ", ".join(cls.__name__ for cls in families)
            raise ValueError(
                f"encoder_cache={name!r} exists for {known}, not for {type(self.backbone).__name__}"
            )
        if self.exact_recompute:
            raise ValueError(
                f"encoder_cache={name!r} reuses cached columns; it cannot run with exact_recompute"
            )
        return builder(self.backbone, self.geometry)

    def _plan(self, samples: int) -> WindowPlan:
        if samples not in self._plans:
            self._plans[samples] = plan_window(self.geometry, samples)
        return self._plans[samples]

    def _hop(self, end: int, index: int) -> _Hop:
        specs = [w for w in self.windows if index % w.every == 0]
        windows = tuple((w, min(self.window_samples[w.seconds], end)) for w in specs)
        partial = any(n < self.window_samples[w.seconds] for w, n in windows)
        return _Hop(end, index, windows, partial)

    # --------------------------------------------------------------------------------------- computation
    def _process(self, sessions: list[StreamingSession]) -> dict[StreamingSession, list[HopResult]]:
        """Run every due hop of ``sessions``, one hop per session per round, batched across sessions."""
        out = {session: session._take_ready() for session in sessions}
        while due := [(s, hop) for s in sessions if (hop := s._due()) is not None]:
            with torch.inference_mode(), self._autocast():
                raws = self._compute(due)
            for (session, _), raw in zip(due, raws):
                out[session].append(session._finish_hop(raw))
        for session in sessions:
            session._trim()
        return out

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _compute(self, due: list[tuple[StreamingSession, _Hop]]) -> list[RawHop]:
        if self.model.training:
            raise RuntimeError(
                "the model was put in training mode after the engine was built (dropout and PaSST's front-end "
                "jitter would make every hop random); call model.eval()"
            )
        if not self.exact_recompute:
            self._advance_columns(due)
        jobs = [
            _Job(session, spec, n, hop.end, self._plan(n)) for session, hop in due for spec, n in hop.windows
        ]
        tokens = self._window_tokens(jobs)
        if self._encoder is None:
            predictions = self._batched(
                [(tuple(t.shape), t) for t in tokens], lambda _, x, __: self._predict(self.backbone.encode(x))
            )
        else:
            predictions = self._encoder.run(self, jobs, tokens)
        outputs = iter(torch.cat(predictions).float().cpu())  # one copy to the host for the whole round
        raws = []
        for session, hop in due:
            values = {spec.seconds: next(outputs) for spec, _ in hop.windows}
            raws.append(RawHop(hop.index, session._segment_time(hop.end), values, hop.partial))
        return raws

    def _predict(self, output: BackboneOutput) -> Tensor:
        """The head's raw output (logits or ratings) for a backbone output, as :class:`AudioModel` computes it."""
        head = self.model.head
        return head.project(head.pool(output))

    def _advance_columns(self, due: list[tuple[StreamingSession, _Hop]]) -> None:
        """Feed each session's audio up to its hop's end to its front-end stream; tokenize the new columns."""
        requests = []
        for session, hop in due:
            cache = session._columns
            cache.feed(session._audio.read(cache.fed, hop.end))
            request = cache.request()
            if request is not None:
                requests.append((cache, request))
        tokens = self._batched(
            [(tuple(r.frames.shape), r.frames) for _, r in requests],
            lambda _, x, __: self.backbone.tokenize(x),
        )
        for (cache, request), new in zip(requests, tokens):
            cache.store(request, new)

    def _window_tokens(self, jobs: list[_Job]) -> list[Tensor]:
        """Each job's window tokens ``[1, T', F', D]``: cached clean columns between recomputed edge columns, or
        the whole window recomputed (exact mode, short windows, or columns not cached yet)."""
        bb = self.backbone
        whole, prefixes, suffixes = [], [], []
        for i, job in enumerate(jobs):
            audio, plan, cache = job.session._audio, job.plan, job.session._columns
            lo, hi = plan.clean
            first = job.start // self.geometry.column_samples
            if cache is None or plan.full or not cache.covers(first + lo, first + hi):
                whole.append((i, (job.samples,), audio.read(job.start, job.end)))
                continue
            job.parts[1] = cache.gather(first + lo, first + hi)
            if plan.prefix_samples:
                clip = audio.read(job.start, job.start + plan.prefix_samples)
                prefixes.append((i, (plan.prefix_samples, plan.prefix_frames, lo), clip))
            if plan.suffix_start < plan.samples:
                clip = audio.read(job.start + plan.suffix_start, job.end)
                suffixes.append((i, (clip.shape[-1], *plan.suffix_frames, plan.suffix_skip), clip))

        def prefix(key: tuple[int, ...], x: Tensor, _: list[int]) -> Tensor:
            return bb.tokenize(bb.frontend(x)[:, :, : key[1]])[:, : key[2]]

        def suffix(key: tuple[int, ...], x: Tensor, _: list[int]) -> Tensor:
            return bb.tokenize(bb.frontend(x)[:, :, key[1] : key[2]])[:, key[3] :]

        for items, part, fn in [(prefixes, 0, prefix), (suffixes, 2, suffix)]:
            for (i, _, _), cols in zip(items, self._batched([(k, x) for _, k, x in items], fn)):
                jobs[i].parts[part] = cols
        tokens: list[Tensor | None] = [None] * len(jobs)
        for (i, _, _), t in zip(
            whole, self._batched([(k, x) for _, k, x in whole], lambda _, x, __: bb.tokenize(bb.frontend(x)))
        ):
            tokens[i] = t
        for i, job in enumerate(jobs):
            if tokens[i] is None:
                tokens[i] = torch.cat([p for p in job.parts if p is not None], dim=1)
        return tokens  # type: ignore[return-value]

    def _batched(
        self, items: list[tuple[Any, Tensor]], fn: Callable[[Any, Tensor, list[int]], Tensor]
    ) -> list[Tensor]:
        """``fn(key, batch, members)`` over the ``[1, ...]`` inputs grouped by key (inputs of one key share their
        shape), at most ``max_batch`` per call (``members``: their indices in ``items``); the outputs ``[1, ...]``
        in input order."""
        groups: dict[Any, list[int]] = {}
        for i, (key, _) in enumerate(items):
            groups.setdefault(key, []).append(i)
        out: list[Tensor | None] = [None] * len(items)
        for key, members in groups.items():
            for part in _chunks(members, self.max_batch):
                y = fn(
                    key, torch.cat([items[i][1] for i in part]) if len(part) > 1 else items[part[0]][1], part
                )
                for j, i in enumerate(part):
                    out[i] = y[j : j + 1]
        return out  # type: ignore[return-value]


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
