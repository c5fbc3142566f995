"""The decision layer of a stream: which label to report at each hop, and when label segments start and end.

A classifier's top-1 flickers when two classes are close or the window straddles a change of music. The
decision layer turns the per-hop (smoothed) class values into a steady reported label with three rules, each a
:class:`DecisionConfig` option:

- **hysteresis by hops and margin**: a *candidate* is a class that leads, i.e. whose value is strictly above
  the reported label's (above the runner-up's before any label is reported) by at least ``margin``. The label
  switches to a candidate once it has led for ``min_hops`` consecutive hops; a hop where it does not lead, or
  where another class leads, starts the count again;
- **instant switch on a large lead** (optional): a candidate leading by ``switch_margin`` or more switches at
  once, whatever the count (the "or" to ``min_hops``' "and");
- **minimum segment duration**: the reported label is kept for at least ``min_duration`` seconds of stream
  after it was reported (to within a nanosecond, so that rounded hop times count whole); a candidate that
  qualifies earlier switches at the first hop after that.

Each switch emits :class:`~finetune.streaming.types.SegmentEvent` s (``end`` of the old label, ``start``
of the new one, both at the hop's time); :meth:`DecisionLayer.flush` ends the open segment at the end of a
stream. Everything is deterministic (ties go to the lower class index) and takes O(C) per hop, whatever the
stream's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from backbones.config import StrictConfig

from .types import SegmentEvent

__all__ = ["DecisionConfig", "DecisionError", "DecisionLayer"]

_TIME_TOLERANCE = 1e-9  # seconds


class DecisionError(ValueError):
    """The decision layer was given values it cannot decide on (wrong size, NaN, time running backwards)."""


@dataclass
class DecisionConfig(StrictConfig):
    """Settings of :class:`DecisionLayer` (``postprocess.decisions`` in a post-processing config).

    The defaults switch the reported label at the first hop another class leads (no hysteresis).

    Attributes:
        min_hops: consecutive hops a candidate must lead before the label switches to it (>= 1).
        margin: how far (in the values decided on, e.g. probabilities) a candidate must lead in each of those
            hops (>= 0; 0: any strict lead).
        switch_margin: a lead this large switches at once, whatever ``min_hops`` says (None: off).
        min_duration: seconds of stream a reported label is kept at least (>= 0).
    """

    min_hops: int = 1
    margin: float = 0.0
    switch_margin: float | None = None
    min_duration: float = 0.0

    def __post_init__(self) -> None:
        if self.min_hops < 1:
            raise ValueError(
                f"min_hops must be >= 1 (1: switch at the first leading hop), got {self.min_hops}"
            )
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin}")
        if self.switch_margin is not None and not (
            math.isfinite(self.switch_margin) and self.switch_margin > 0
        ):
            raise ValueError(f"switch_margin must be a finite number > 0 or null, got {self.switch_margin}")
        if self.switch_margin is not None and self.switch_margin < self.margin:
            raise ValueError(
                f"switch_margin ({self.switch_margin}) is below margin ({self.margin}): it would switch at "
                "once on leads that margin does not count; raise switch_margin or lower margin"
            )
        if not (math.isfinite(self.min_duration) and self.min_duration >= 0):
            raise ValueError(f"min_duration must be a finite number of seconds >= 0, got {self.min_duration}")


class DecisionLayer:
    """One stream's reported label under :class:`DecisionConfig`'s rules; state per stream.

    Args:
        config: the rules.
        labels: class names, in the order of the values given to :meth:`step`.
    """

    def __init__(self, config: DecisionConfig, labels: Sequence[str]) -> None:
        if not labels:
            raise DecisionError("labels is empty; give one name per class")
        self.config = config
        self.labels = tuple(labels)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: no label, no candidate, no open segment (no events are emitted)."""
        self._current: int | None = None
        self._since = 0.0  # stream time at which the current label was reported
        self._candidate: int | None = None
        self._streak = 0
        self._last_time: float | None = None

    @property
    def label(self) -> str | None:
        """The reported label (None before the first decision and after :meth:`flush`)."""
        return None if self._current is None else self.labels[self._current]

    def step(self, values: Tensor, time: float) -> tuple[str | None, tuple[SegmentEvent, ...]]:
        """Decide at one hop; returns the reported label and the events of this hop.

        Args:
            values: the hop's class values (smoothed probabilities, say); higher is more likely.
            time: seconds of stream at the hop; never earlier than the previous hop's.

        Raises:
            DecisionError: values of the wrong shape or not finite, or ``time`` earlier than the last hop's
                (call :meth:`reset` when a stream starts again); the state is then left unchanged.

        Shapes:
            values: [C].
        """
        if values.dim() != 1 or values.shape[0] != len(self.labels):
            raise DecisionError(
                f"expected {len(self.labels)} class values (one per label), got shape {tuple(values.shape)}"
            )
        if not bool(torch.isfinite(values).all()):
            raise DecisionError(f"class values at time {time:.3f} s contain NaN or Inf")
        self.check_time(time)
        self._last_time = time
        candidate, lead = self._leader(values)
        if candidate is None or lead < self.config.margin:
            self._candidate, self._streak = None, 0
        elif candidate == self._candidate:
            self._streak += 1
        else:
            self._candidate, self._streak = candidate, 1
        if candidate is None or not self._may_switch(time):
            return self.label, ()
        instant = self.config.switch_margin is not None and lead >= self.config.switch_margin
        events = self._switch(candidate, time) if self._streak >= self.config.min_hops or instant else ()
        return self.label, events

    def check_time(self, time: float) -> None:
        """Raise :class:`DecisionError` unless ``time`` is finite and not before the last hop's."""
        if not math.isfinite(time) or (self._last_time is not None and time < self._last_time):
            raise DecisionError(
                f"hop time {time} s is before the previous hop's ({self._last_time} s); reset the decision "
                "layer when a stream starts again"
            )

    def flush(self) -> tuple[SegmentEvent, ...]:
        """End of stream: the ``end`` event of the open segment at the last hop's time (``()`` when none).

        Afterwards no label is reported; a later :meth:`step` starts a new segment under the same rules.
        """
        if self._current is None or self._last_time is None:
            return ()
        event = SegmentEvent("end", self.labels[self._current], self._last_time)
        self._current, self._candidate, self._streak = None, None, 0
        return (event,)

    def _leader(self, values: Tensor) -> tuple[int | None, float]:
        """The class leading the reported label (or the runner-up before any label), and by how much."""
        top = int(torch.argmax(values))
        if self._current is not None:
            lead = float(values[top] - values[self._current])
        elif len(values) > 1:
            lead = float(values[top] - values.topk(2).values[1])
        else:
            lead = math.inf
        return (top, lead) if lead > 0 else (None, 0.0)

    def _may_switch(self, time: float) -> bool:
        # the tolerance keeps hop times such as 0.1 * k from deferring a switch by one hop through rounding
        return self._current is None or time - self._since >= self.config.min_duration - _TIME_TOLERANCE

    def _switch(self, new: int, time: float) -> tuple[SegmentEvent, ...]:
        events = [] if self._current is None else [SegmentEvent("end", self.labels[self._current], time)]
        events.append(SegmentEvent("start", self.labels[new], time))
        self._current, self._since, self._candidate, self._streak = new, time, None, 0
        return tuple(events)
