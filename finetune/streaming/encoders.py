"""Encoder caches: reuse work inside ``encode`` between a window and the same window one shift later.

The default recomputes ``encode`` on every hop (attention mixes globally, so AST/PaSST have nothing to reuse).
A convolutional encoder can reuse the activations of the overlap: :class:`Cnn14Activations`
(``encoder_cache="activations"``) keeps, per session and window, each conv layer's output of the previous
window and recomputes only the positions the shift makes dirty. Registered with :func:`register_encoder_cache`.

CNN14's layers run on time grids of 2, 4, 8, 16 and 32 frames (blocks 2 to 6). A layer's output is reusable when
the shift between two encodings (``every * hop``) is a multiple of its grid: then position ``i`` of the new window
is position ``i + shift / grid`` of the previous one, exactly, wherever neither reads the window's edges (the
dirty margins grow by one position per 3x3 conv and shrink by half per pool). At a 0.5 s hop (50 frames) that is
block 2's two convs; at 0.32 s or 0.64 s every conv of every block. Layers after the first non-reusable one and
the average pools are computed on the whole window. The result equals ``encode`` to float rounding (the convs
run on strips instead of the whole window; measured in the tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone, BackboneOutput, StreamGeometry
from backbones.cnn14 import Cnn14

if TYPE_CHECKING:
    from .engine import StreamingEngine, _Job

__all__ = ["ENCODER_CACHES", "EncoderCache", "Cnn14Activations", "register_encoder_cache"]


class EncoderCache(Protocol):
    """Runs ``encode`` + head for a round's windows, reusing per-session state in ``session._encoder_state``."""

    def run(self, engine: StreamingEngine, jobs: list[_Job], tokens: list[Tensor]) -> list[Tensor]:
        """The head's raw outputs ``[1, C]`` for each job, in order."""
        ...


EncoderCacheBuilder = Callable[[Backbone, StreamGeometry], EncoderCache]
ENCODER_CACHES: dict[str, dict[type[Backbone], EncoderCacheBuilder]] = {}


def register_encoder_cache(
    name: str, family: type[Backbone]
) -> Callable[[EncoderCacheBuilder], EncoderCacheBuilder]:
    """Decorator: register ``builder(backbone, geometry) -> EncoderCache`` as ``encoder_cache=name`` for
    backbones of class ``family``."""

    def decorator(builder: EncoderCacheBuilder) -> EncoderCacheBuilder:
        families = ENCODER_CACHES.setdefault(name, {})
        if family in families:
            raise ValueError(f"encoder cache {name!r} is registered twice for {family.__name__}")
        families[family] = builder
        return builder

    return decorator


@dataclass(frozen=True)
class _Stage:
    """One time-local layer: a 3x3 conv (padding 1) + BatchNorm + ReLU, or an average pool of ``pool``."""

    grid: int  # frames per output position
    conv: nn.Conv2d | None = None
    norm: nn.BatchNorm2d | None = None
    pool: int = 1

    def clean(self, lo: int, hi: int, n_out: int) -> tuple[int, int]:
        """The output positions that read only clean inputs ``[lo, hi)`` (and no zero padding)."""
        if self.conv is not None:
            lo, hi = lo + 1, hi - 1
        else:
            lo, hi = -(-lo // self.pool), hi // self.pool
        return lo, max(lo, min(hi, n_out))

    def out_length(self, n_in: int) -> int:
        return n_in if self.conv is not None else n_in // self.pool

    def apply(self, x: Tensor, a: int, b: int) -> Tensor:
        """Output positions ``[a, b)`` from the whole input ``x`` [B, C, T, F] (a strip with its margins)."""
        if self.conv is None:
            return F.avg_pool2d(x[:, :, a * self.pool : b * self.pool], self.pool)
        lo, hi = max(0, a - 1), min(x.shape[2], b + 1)
        y = F.relu(self.norm(self.conv(x[:, :, lo:hi])))
        return y[:, :, a - lo : b - lo]


@register_encoder_cache("activations", Cnn14)
class Cnn14Activations:
    """CNN14's conv activations of the overlap between consecutive encodings, reused (see the module docstring).

    State per session and window: ``(window end, window samples, [output of each kept conv, [1, C, T, F]])``.
    """

    def __init__(self, backbone: Cnn14, geometry: StreamGeometry) -> None:
        self.backbone, self.geometry = backbone, geometry
        stages, grid = [], geometry.column_stride
        for k in range(2, backbone.num_layers + 1):
            block = getattr(backbone, f"conv_block{k}")
            for conv, norm in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
                if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1):
                    raise ValueError(f"conv_block{k}: the activation cache expects 3x3 convs with padding 1")
                stages.append(_Stage(grid, conv, norm))
            if block.pool > 1:
                grid *= block.pool
                stages.append(_Stage(grid, pool=block.pool))
        self.stages = tuple(stages)

    def stored(self, shift_frames: int) -> list[int]:
        """The stages whose outputs are kept for a window encoded every ``shift_frames`` frames."""
        return [i for i, s in enumerate(self.stages) if s.conv is not None and shift_frames % s.grid == 0]

    def run(self, engine: StreamingEngine, jobs: list[_Job], tokens: list[Tensor]) -> list[Tensor]:
        if self.backbone.training:
            raise RuntimeError("the activation cache runs the backbone in eval mode; call model.eval()")
        hop = self.geometry.frame_hop
        states = [job.session._encoder_state.get(job.spec.seconds) for job in jobs]
        items = []
        for job, t, state in zip(jobs, tokens, states):
            shift = job.spec.every * engine.hop_samples // hop
            reuse = state is not None and state[1] == job.samples and job.end - state[0] == shift * hop
            items.append(((tuple(t.shape), job.samples, shift, reuse), t))

        def encode(key: tuple, x: Tensor, members: list[int]) -> Tensor:
            _, samples, shift, reuse = key
            previous = None
            if reuse:
                count = len(self.stored(shift))
                previous = [torch.cat([states[i][2][k] for i in members]) for k in range(count)]
            output, kept = self._encode(x, self.geometry.clean_columns(samples), shift, previous)
            for j, i in enumerate(members):
                state = [y[j : j + 1].clone() for y in kept]
                jobs[i].session._encoder_state[jobs[i].spec.seconds] = (jobs[i].end, samples, state)
            return engine._predict(output)

        return engine._batched(items, encode)

    def _encode(
        self, tokens: Tensor, clean: tuple[int, int], shift: int, previous: list[Tensor] | None
    ) -> tuple[BackboneOutput, list[Tensor]]:
        """``encode`` of ``tokens`` [B, T', C, F'] with the reusable conv outputs taken from ``previous`` (the
        same window ``shift`` frames earlier); returns the backbone output and the conv outputs to keep."""
        x = tokens.transpose(1, 2)
        lo, hi = clean
        keep = set(self.stored(shift))
        kept: list[Tensor] = []
        for i, stage in enumerate(self.stages):
            n_out = stage.out_length(x.shape[2])
            lo, hi = stage.clean(lo, hi, n_out)
            step = shift // stage.grid
            if previous is not None and i in keep and hi - step > lo:
                reused = previous[len(kept)][:, :, lo + step : hi]
                y = torch.cat([stage.apply(x, 0, lo), reused, stage.apply(x, hi - step, n_out)], dim=2)
            else:
                y = stage.apply(x, 0, n_out)
            if i in keep:
                kept.append(y)
            x = y
        return self.backbone.summarize(x), kept
