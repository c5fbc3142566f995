"""The streaming engine's data types, shared by the engine, the sessions and the post-processing chain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

__all__ = ["HopResult", "PostProcessor", "RawHop", "SegmentEvent", "WindowSpec"]


@dataclass(frozen=True)
class WindowSpec:  # one right-aligned analysis window
    seconds: float  # window length
    every: int = 1  # encode it every `every` hops (a two-timescale "slow" window has every > 1)
    weight: float = 1.0  # its weight when the post-processor fuses windows


@dataclass(frozen=True)
class RawHop:  # what the engine computed for one session at one hop
    index: int  # hop number since the session started or was reset
    time: float  # seconds of stream (input clock) at the window end
    # window seconds -> raw head output [C] (logits, or ratings), float32 CPU;
    # only the windows encoded at this hop
    outputs: Mapping[float, Tensor]
    partial: bool  # some window was shorter than asked (start-of-stream policy "partial")


@dataclass(frozen=True)
class SegmentEvent:  # decision layer output: a label segment started or ended
    kind: str  # "start" | "end"
    label: str
    time: float  # seconds of stream


@dataclass(frozen=True)
class HopResult:  # what session.push / engine.push_many return per hop
    session: str  # session id
    index: int
    time: float
    outputs: Mapping[float, Tensor]  # raw, as in RawHop
    probs: Tensor  # [C] fused probabilities (calibrated when a calibration is present) or ratings
    smoothed: Tensor  # [C] after smoothing (== probs without smoothing)
    top_k: tuple[tuple[str, float], ...]  # (label, smoothed value), best first
    label: str | None  # the decision layer's current label (None: no decision layer / not yet decided)
    events: tuple[SegmentEvent, ...]
    partial: bool


class PostProcessor(Protocol):  # one per session; built by a factory the engine is given
    def step(self, raw: RawHop) -> HopResult: ...
    def flush(self) -> tuple[SegmentEvent, ...]: ...  # end of stream: close the open segment
    def reset(self) -> None: ...
