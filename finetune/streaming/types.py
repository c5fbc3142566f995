"""The interface between the streaming engine and the post-processing that follows it.

The engine computes each hop's raw window outputs (:class:`RawHop`); a per-session :class:`PostProcessor` turns
them into what users read (:class:`HopResult`: fused, calibrated, smoothed probabilities, top-k, the decision
layer's label and its :class:`SegmentEvent`\\ s). :class:`WindowSpec` describes one analysis window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

__all__ = ["WindowSpec", "RawHop", "SegmentEvent", "HopResult", "PostProcessor"]


@dataclass(frozen=True)
class WindowSpec:
    """One right-aligned analysis window.

    Attributes:
        seconds: window length.
        every: encode it every ``every`` hops (a two-timescale "slow" window has every > 1).
        weight: its weight when the post-processor fuses windows.
    """

    seconds: float
    every: int = 1
    weight: float = 1.0


@dataclass(frozen=True)
class RawHop:
    """What the engine computed for one session at one hop.

    Attributes:
        index: hop number since the session started or was reset.
        time: seconds of stream (input clock) at the window end.
        outputs: window seconds -> raw head output ``[C]`` (logits, or ratings), float32 on the CPU; only the
            windows encoded at this hop.
        partial: some window was shorter than asked (start-of-stream policy ``"partial"``).
    """

    index: int
    time: float
    outputs: Mapping[float, Tensor]
    partial: bool


@dataclass(frozen=True)
class SegmentEvent:
    """Decision layer output: a label segment started or ended.

    Attributes:
        kind: ``"start"`` or ``"end"``.
        label: the segment's label.
        time: seconds of stream.
    """

    kind: str
    label: str
    time: float


@dataclass(frozen=True)
class HopResult:
    """What ``session.push`` / ``engine.push_many`` return per hop.

    Attributes:
        session: session id.
        index: hop number since the session started or was reset.
        time: seconds of stream at the window end.
        outputs: raw window outputs, as in :class:`RawHop`.
        probs: ``[C]`` fused probabilities (calibrated when a calibration is present) or ratings.
        smoothed: ``[C]`` after smoothing (``== probs`` without smoothing).
        top_k: ``(label, smoothed value)`` pairs, best first.
        label: the decision layer's current label (None: no decision layer, or not decided yet).
        events: segment events emitted at this hop.
        partial: as in :class:`RawHop`.
    """

    session: str
    index: int
    time: float
    outputs: Mapping[float, Tensor]
    probs: Tensor
    smoothed: Tensor
    top_k: tuple[tuple[str, float], ...]
    label: str | None
    events: tuple[SegmentEvent, ...]
    partial: bool


class PostProcessor(Protocol):
    """Per-session post-processing, built by a factory the engine is given (one instance per session)."""

    def step(self, raw: RawHop) -> HopResult:
        """Turn one hop's raw outputs into a result."""
        ...

    def flush(self) -> tuple[SegmentEvent, ...]:
        """End of stream: close the open segment."""
        ...

    def reset(self) -> None:
        """Forget all state (a new stream starts)."""
        ...
