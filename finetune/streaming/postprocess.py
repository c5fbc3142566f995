"""The per-session post-processing chain: raw window outputs of one hop -> what a live stream reports.

Every stage is an option of :class:`PostProcessConfig`; they compose, always in this order, with their state
kept per session (one :class:`StreamPostProcessor` per session, built by :func:`build_postprocessor`):

1. **calibration** (classification only): each window's logits go through one :class:`Calibration`, the
   model's ``calibration.json`` (temperature, vector scaling, class-prior correction) when the factory is
   given one, with the config's ``temperature``, ``logit_bias`` and ``train_prior``/``target_prior``
   applied on top;
2. **window fusion**: the latest output of every window (a slow window's output is reused between its
   updates) is averaged with the :class:`WindowSpec` weights, as probabilities (``fusion="probs"``, the
   multi-window ensemble) or as logits turned into probabilities afterwards (``fusion="logits"``,
   two-timescale fusion); ratings are averaged as they are;
3. **smoothing** over hops: the mean of the last ``mean_last`` vectors, then an exponential moving average
   (``ema``, the weight of the newest vector), then ``trend_ema``: an EMA of the top-1 series, i.e. of the
   one-hot vector of each hop's top-1 class (the smoothed values are then the classes' recent top-1 shares);
4. **top-k** with names, best first;
5. the **decision layer** (:mod:`finetune.streaming.decisions`): hysteresis, minimum segment duration and
   segment events.

Ratings (a rating head) skip calibration, ``trend_ema`` and decisions, and may be averaged over windows and
smoothed; their ``top_k`` lists every dimension in the head's order, since ratings do not compete.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from backbones.config import ConfigError, StrictConfig
from finetune.calibration import Calibration, CalibrationError
from heads.tasks import Task, get_task

from .decisions import DecisionConfig, DecisionLayer
from .types import HopResult, RawHop, SegmentEvent, WindowSpec

__all__ = ["PostProcessConfig", "PostProcessError", "StreamPostProcessor", "build_postprocessor"]

_WHERE = "postprocess"


class PostProcessError(ValueError):
    """A hop or a window set the chain cannot process; the message says what is wrong and what to pass."""


def _fraction(value: float | None, name: str) -> None:
    if value is not None and not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"{name} is the weight of the newest hop and must lie in (0, 1], got {value}")


@dataclass
class PostProcessConfig(StrictConfig):
    """What the chain does; by default: the model's calibration, probability fusion and nothing else.

    Attributes:
        use_model_calibration: apply the calibration the factory is given (the model's ``calibration.json``).
        temperature: divides the logits instead of the calibration's temperature (None: keep that, or 1).
        logit_bias: per-class biases added to the calibrated logits (a hand-set prior reweight).
        train_prior: class frequencies the model was trained on; with ``target_prior``, adds the class-prior
            correction ``log(target / train)`` (single-label only; give both or neither).
        target_prior: class frequencies expected in the stream.
        fusion: average the windows as probabilities (``"probs"``) or as logits (``"logits"``).
        mean_last: average the last N fused vectors (None: off).
        ema: exponential moving average, ``s = ema * x + (1 - ema) * s`` from ``s = x`` (None: off).
        trend_ema: EMA of the one-hot top-1 series, same convention (None: off; classification only).
        top_k: how many ``(label, value)`` pairs a hop reports.
        decisions: the decision layer's rules (None: no decision layer, ``HopResult.label`` stays None).
    """

    use_model_calibration: bool = True
    temperature: float | None = None
    logit_bias: tuple[float, ...] | None = None
    train_prior: tuple[float, ...] | None = None
    target_prior: tuple[float, ...] | None = None
    fusion: Literal["probs", "logits"] = "probs"
    mean_last: int | None = None
    ema: float | None = None
    trend_ema: float | None = None
    top_k: int = 5
    decisions: DecisionConfig | None = None

    def __post_init__(self) -> None:
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive finite number, got {self.temperature}")
        if (self.train_prior is None) != (self.target_prior is None):
            raise ValueError("a class-prior correction needs both train_prior and target_prior (or neither)")
        if self.mean_last is not None and self.mean_last < 1:
            raise ValueError(f"mean_last must be >= 1 hops (or null), got {self.mean_last}")
        _fraction(self.ema, "ema")
        _fraction(self.trend_ema, "trend_ema")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")

    def check_task(self, task: Task, num_classes: int, where: str = _WHERE) -> None:
        """Raise :class:`ConfigError` (naming the key) for options this task or class count cannot take."""
        if not task.is_classification:
            classification_only = {
                "temperature": self.temperature,
                "logit_bias": self.logit_bias,
                "train_prior": self.train_prior,
                "trend_ema": self.trend_ema,
                "decisions": self.decisions,
            }
            for key, value in classification_only.items():
                if value is not None:
                    raise ConfigError(
                        f"{where}.{key}: applies to classification; a {task.name} head has no classes, set "
                        "it to null"
                    )
            return
        for key in ("logit_bias", "train_prior", "target_prior"):
            value = getattr(self, key)
            if value is not None and len(value) != num_classes:
                raise ConfigError(f"{where}.{key}: has {len(value)} entries for {num_classes} classes")
        if self.train_prior is not None and task.name != "single_label":
            raise ConfigError(f"{where}.train_prior: a class-prior correction applies to single-label heads")


def _calibration_for(
    config: PostProcessConfig, task: Task, labels: tuple[str, ...], calibration: Calibration | None
) -> Calibration | None:
    """The one logit correction of the chain: the given calibration with the config's terms on top."""
    if not task.is_classification:
        return None
    base = calibration if config.use_model_calibration else None
    if base is not None:
        if base.task != task.name or base.num_classes != len(labels):
            raise CalibrationError(
                f"a {base.task} calibration for {base.num_classes} classes does not fit this {task.name} "
                f"head with {len(labels)} outputs"
            )
        if base.labels is not None and tuple(base.labels) != labels:
            raise CalibrationError(
                f"the calibration was fitted for classes {list(base.labels)}, the stream's are {list(labels)}"
            )
    else:
        base = Calibration(task.name, len(labels))
    if config.temperature is not None:
        base = dataclasses.replace(base, temperature=config.temperature)
    if config.logit_bias is not None:
        old = base.bias if base.bias is not None else (0.0,) * len(labels)
        base = dataclasses.replace(base, bias=tuple(b + d for b, d in zip(old, config.logit_bias)))
    if config.train_prior is not None and config.target_prior is not None:
        base = base.with_prior(config.train_prior, config.target_prior)
    return None if base.identity else base


def _check_windows(windows: Sequence[WindowSpec]) -> tuple[WindowSpec, ...]:
    if not windows:
        raise PostProcessError("no windows: give at least one WindowSpec")
    seen: set[float] = set()
    for w in windows:
        if not (math.isfinite(w.seconds) and w.seconds > 0):
            raise PostProcessError(f"window lengths must be positive seconds, got {w.seconds!r}")
        if w.seconds in seen:
            raise PostProcessError(f"two windows of {w.seconds:g} s; give each window length once")
        if not (isinstance(w.every, int) and w.every >= 1):
            raise PostProcessError(f"window {w.seconds:g} s: every must be an integer >= 1, got {w.every!r}")
        if not (math.isfinite(w.weight) and w.weight > 0):
            raise PostProcessError(
                f"window {w.seconds:g} s: weight must be a positive number, got {w.weight!r}"
            )
        seen.add(w.seconds)
    return tuple(windows)


class _Smoother:
    """Mean of the last N vectors, then EMA, then the top-1 trend EMA; state per session."""

    def __init__(self, mean_last: int | None, ema: float | None, trend_ema: float | None) -> None:
        self.ema, self.trend_ema = ema, trend_ema
        self._recent: deque[Tensor] | None = deque(maxlen=mean_last) if mean_last else None
        self.reset()

    def reset(self) -> None:
        if self._recent is not None:
            self._recent.clear()
        self._ema: Tensor | None = None
        self._trend: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self._recent is not None:
            self._recent.append(x)
            x = torch.stack(tuple(self._recent)).mean(0)
        if self.ema is not None:
            x = self._ema = x if self._ema is None else self.ema * x + (1 - self.ema) * self._ema
        if self.trend_ema is not None:
            top1 = torch.zeros_like(x)
            top1[int(torch.argmax(x))] = 1.0
            x = self._trend = (
                top1 if self._trend is None else self.trend_ema * top1 + (1 - self.trend_ema) * self._trend
            )
        return x


class StreamPostProcessor:
    """One session's chain (see the module docstring), a :class:`~finetune.streaming.types.PostProcessor`.

    Build it with :func:`build_postprocessor`. ``session`` names the session in every :class:`HopResult`.
    """

    def __init__(
        self,
        config: PostProcessConfig,
        task: Task,
        labels: tuple[str, ...],
        windows: tuple[WindowSpec, ...],
        calibration: Calibration | None,
        session: str,
    ) -> None:
        self.config, self.task, self.labels, self.windows = config, task, labels, windows
        self.calibration = calibration
        self.session = session
        self._weights = {w.seconds: w.weight for w in windows}
        self._smoother = _Smoother(config.mean_last, config.ema, config.trend_ema)
        self._decisions = DecisionLayer(config.decisions, labels) if config.decisions is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget the session's past: window outputs, smoothing state and the decision layer (no events)."""
        self._latest: dict[float, Tensor] = {}
        self._smoother.reset()
        if self._decisions is not None:
            self._decisions.reset()

    def step(self, raw: RawHop, session: str | None = None) -> HopResult:
        """Process one hop's raw window outputs; ``session`` (when given) renames the session.

        Raises:
            PostProcessError: an unknown window, an output of the wrong shape or not finite, or a first hop
                without any output; the session's state is then left as it was.
            DecisionError: with a decision layer, a hop time before the previous hop's (state unchanged).

        Shapes:
            raw.outputs: window seconds -> [C]; -> probs, smoothed [C].
        """
        incoming = self._checked(raw)
        if self._decisions is not None:  # its time check, before any state changes
            self._decisions.check_time(raw.time)
        if session is not None:
            self.session = session
        self._latest.update({s: self._prepare(x) for s, x in incoming.items()})
        probs = self._fuse()
        smoothed = self._smoother(probs)
        label, events = None, ()
        if self._decisions is not None:
            label, events = self._decisions.step(smoothed, raw.time)
        return HopResult(
            session=self.session,
            index=raw.index,
            time=raw.time,
            outputs=raw.outputs,
            probs=probs,
            smoothed=smoothed,
            top_k=self._top_k(smoothed),
            label=label,
            events=events,
            partial=raw.partial,
        )

    def flush(self) -> tuple[SegmentEvent, ...]:
        """End of stream: the ``end`` event of the open decision segment (``()`` without a decision layer)."""
        return self._decisions.flush() if self._decisions is not None else ()

    def _checked(self, raw: RawHop) -> dict[float, Tensor]:
        known = ", ".join(f"{s:g}" for s in self._weights)
        incoming = {}
        for seconds, value in raw.outputs.items():
            if seconds not in self._weights:
                raise PostProcessError(
                    f"hop {raw.index}: output for a {seconds!r} s window, but this session's windows are "
                    f"{known} s"
                )
            x = torch.as_tensor(value).detach().to("cpu", torch.float32)
            if x.shape != (len(self.labels),):
                raise PostProcessError(
                    f"hop {raw.index}, window {seconds:g} s: expected an output of shape "
                    f"[{len(self.labels)}] (one value per label), got {list(x.shape)}"
                )
            if not bool(torch.isfinite(x).all()):
                raise PostProcessError(f"hop {raw.index}, window {seconds:g} s: the output has NaN or Inf")
            incoming[seconds] = x
        if not incoming and not self._latest:
            raise PostProcessError(
                f"hop {raw.index} carries no window output and none came before; the first hop of a session "
                f"needs at least one of the windows {known} s"
            )
        return incoming

    def _prepare(self, x: Tensor) -> Tensor:
        """A window's output as it is stored for fusion: calibrated, and probabilities when fusing those."""
        if not self.task.is_classification:
            return x
        if self.calibration is not None:
            x = self.calibration.apply(x)
        return self.task.probabilities(x) if self.config.fusion == "probs" else x

    def _fuse(self) -> Tensor:
        present = [w.seconds for w in self.windows if w.seconds in self._latest]
        weights = torch.tensor([self._weights[s] for s in present], dtype=torch.float32)
        stacked = torch.stack([self._latest[s] for s in present])
        fused = (weights / weights.sum()) @ stacked
        if self.task.is_classification and self.config.fusion == "logits":
            return self.task.probabilities(fused)
        return fused

    def _top_k(self, values: Tensor) -> tuple[tuple[str, float], ...]:
        if not self.task.is_classification:
            return tuple((name, float(v)) for name, v in zip(self.labels, values))
        order = torch.sort(values, descending=True, stable=True).indices[: self.config.top_k]
        return tuple((self.labels[i], float(values[i])) for i in order.tolist())


def build_postprocessor(
    config: PostProcessConfig | Mapping[str, object] | None,
    task: Task | str,
    labels: Sequence[str],
    windows: Sequence[WindowSpec],
    calibration: Calibration | None = None,
    *,
    session: str = "",
) -> StreamPostProcessor:
    """The post-processing chain of one session (the factory the streaming engine is given).

    Args:
        config: a :class:`PostProcessConfig`, a plain dict of its keys (checked strictly), or None (defaults).
        task: the head's task (``model.task``).
        labels: class / dimension names (``model.labels``).
        windows: the session's analysis windows; each hop's outputs are keyed by their ``seconds``.
        calibration: the model's calibration (``model.calibration``), or None.
        session: the session id reported in every :class:`HopResult`.

    Raises:
        ConfigError: an unknown key or a bad value (the message names it), or an option the task cannot take.
        CalibrationError: a calibration for another task, class count or class names.
        PostProcessError: no windows, or windows with repeated lengths or bad weights.
    """
    if config is None:
        config = PostProcessConfig()
    elif not isinstance(config, PostProcessConfig):
        config = PostProcessConfig.from_dict(config, _WHERE)
    task = get_task(task)
    labels = tuple(str(name) for name in labels)
    if not labels or len(set(labels)) != len(labels):
        raise PostProcessError(f"labels must be distinct names, one per output, got {list(labels)}")
    config.check_task(task, len(labels))
    return StreamPostProcessor(
        config,
        task,
        labels,
        _check_windows(windows),
        _calibration_for(config, task, labels, calibration),
        session,
    )
