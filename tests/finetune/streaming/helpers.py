"""Shared pieces of the streaming tests: tiny models, a trivial post-processor, the offline reference and a
driver that streams a signal in fixed chunks."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from finetune import AudioModel, build_model
from finetune.data.resample import resample
from finetune.streaming import HopResult, RawHop, StreamingEngine, StreamingSession, WindowSpec
from heads import Task
from tests.audio_signals import music, noise

LABELS = ("a", "b", "c", "d")


class MeanProbs:
    """The smallest post-processor: ``probs`` = the task's probabilities of the mean of the windows' outputs."""

    def __init__(
        self,
        task: Task,
        labels: Sequence[str],
        windows: Sequence[WindowSpec],
        calibration: object,
        *,
        session: str,
    ) -> None:
        self.task, self.labels, self.session = task, tuple(labels), session
        self.steps = 0

    def step(self, raw: RawHop) -> HopResult:
        self.steps += 1
        probs = self.task.probabilities(torch.stack(list(raw.outputs.values())).mean(dim=0))
        top = tuple((self.labels[i], float(probs[i])) for i in probs.argsort(descending=True).tolist())
        return HopResult(
            self.session, raw.index, raw.time, raw.outputs, probs, probs, top, None, (), raw.partial
        )

    def flush(self) -> tuple:
        return ()

    def reset(self) -> None:
        self.steps = 0


@functools.cache
def tiny_model(name: str) -> AudioModel:
    """A tiny model with a linear head over 4 classes, random weights from seed 0, in eval mode (shared: tests
    must not change it)."""
    torch.manual_seed(0)
    return build_model(name, head="linear", labels=LABELS)


def engine(name: str, **options: object) -> StreamingEngine:
    return StreamingEngine(tiny_model(name), postprocess=MeanProbs, **options)


def signal(seconds: float, rate: int, seed: int = 0) -> Tensor:
    """Mono music with a little noise (no digital silence), ``[round(seconds * rate)]``."""
    n = round(seconds * rate)
    return (music(1, n, rate, seed=seed) + noise(1, n, seed=seed, scale=0.01))[0]


def stream(session: StreamingSession, x: Tensor, chunk: int, flush: bool = True) -> list[HopResult]:
    """Push ``x`` (``[N]`` or ``[C, N]``) in chunks of ``chunk`` samples; with ``flush``, end the stream."""
    hops = []
    for i in range(0, x.shape[-1], chunk):
        hops += session.push(x[..., i : i + chunk])
    if flush:
        hops += session.flush().hops
    return hops


def offline(
    model: AudioModel, x: Tensor, rate: int, time: float, window_s: float, dtype: torch.dtype | None = None
) -> Tensor:
    """The offline reference of one hop: the model, in eval mode, on the window's samples (the last
    ``window_s`` seconds before ``time``, or all of them when fewer) cut from the whole stream resampled once by
    the same resampler.

    Shapes:
        x: [N] mono at ``rate``; returns the head's raw output [C].
    """
    assert not model.training
    y = resample(x[None].float(), rate, model.sample_rate)[0]
    end, n = round(time * model.sample_rate), round(window_s * model.sample_rate)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        out = model(waveform=y[None, max(0, end - n) : end])
    return getattr(out, model.task.output_field)[0].float()


def worst_deviation(
    model: AudioModel,
    hops: Sequence[HopResult],
    x: Tensor,
    rate: int,
    windows: Mapping[float, float] | None = None,
) -> float:
    """The largest |streamed - offline| over every hop and window output (``windows``: seconds -> seconds of the
    reference window, default the same)."""
    worst = 0.0
    for hop in hops:
        for seconds, value in hop.outputs.items():
            ref = offline(model, x, rate, hop.time, (windows or {}).get(seconds, seconds))
            worst = max(worst, float((value - ref).abs().max()))
    return worst
