"""How a backbone's local stages tile time: what a streaming cache needs to know to reuse frames and token columns.

A backbone declares its :class:`StreamGeometry` (``Backbone.stream_geometry()``); the streaming engine
(:mod:`finetune.streaming`) derives from it which frames and token columns of a window equal those of the whole
stream and which touch the window's edges and must be recomputed per window. A new backbone streams by describing
itself here, without code in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .frontends import MelFrontend

__all__ = ["StreamGeometry"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class StreamGeometry:
    """The time layout of ``frontend`` and ``tokenize`` for clips of ``n`` samples at ``sample_rate``.

    Frames: frame ``j`` reads samples ``[j * frame_hop - frame_pad, j * frame_hop - frame_pad + frame_span)``;
    samples outside ``[0, n)`` come from the front-end's edge padding (the reflect padding of centred STFTs), so
    such a frame depends on where the clip starts or ends. A clip yields :meth:`num_frames` frames, then padded or
    cropped to ``fixed_frames`` when set (AST pads its Kaldi frames to 1024 with a constant).

    Token columns: column ``c`` reads frames ``[c * column_stride - column_pad, ... + column_span)``; frames
    outside the clip's frames are the zero padding of ``tokenize``'s convolutions (CNN14's block 1). ``tokenize``
    takes at least ``min_tokenize_frames`` frames.

    Attributes:
        sample_rate: the backbone's input rate in Hz.
        frame_hop, frame_pad, frame_span: the frame layout above, in samples.
        fixed_frames: frames after the front-end's finishing step (None: as many as computed).
        column_stride, column_pad, column_span: the column layout above, in frames.
        min_tokenize_frames: the fewest frames ``tokenize`` accepts.
        min_samples: the shortest clip ``forward`` accepts.
        max_samples: the longest clip ``forward`` accepts (None: any).
        local: frames depend only on the samples they read (False for PCEN's running smoother and per-clip
            CMVN, which no frame cache can reproduce).
    """

    sample_rate: int
    frame_hop: int
    frame_pad: int
    frame_span: int
    fixed_frames: int | None
    column_stride: int
    column_pad: int
    column_span: int
    min_tokenize_frames: int
    min_samples: int
    max_samples: int | None
    local: bool = True

    @classmethod
    def of_frontend(
        cls,
        frontend: MelFrontend,
        *,
        column_stride: int,
        column_pad: int,
        column_span: int,
        min_tokenize_frames: int,
        min_frames: int,
        max_samples: int | None,
        fixed_frames: int | None = None,
    ) -> StreamGeometry:
        """The frame layout read from a :class:`~backbones.frontends.MelFrontend` (hop, centre padding, frame
        length plus the raw samples its pre-emphasis consumes) and the column layout given by the backbone;
        ``min_frames`` is the fewest real frames the backbone accepts."""
        span = frontend.frame_length + frontend.context
        pad, hop = frontend.center_pad, frontend.hop_length
        min_samples = max(frontend.min_samples, (min_frames - 1) * hop + span - 2 * pad)
        return cls(
            sample_rate=frontend.sample_rate,
            frame_hop=hop,
            frame_pad=pad,
            frame_span=span,
            fixed_frames=fixed_frames,
            column_stride=column_stride,
            column_pad=column_pad,
            column_span=column_span,
            min_tokenize_frames=min_tokenize_frames,
            min_samples=min_samples,
            max_samples=max_samples,
            local=frontend.compression != "pcen" and not frontend.cmvn,
        )

    @property
    def column_samples(self) -> int:
        """Samples between token columns: window starts on this grid reuse a stream's columns."""
        return self.frame_hop * self.column_stride

    @property
    def edge_frames(self) -> int:
        """Frames at the start of any clip that read the left edge padding."""
        return _ceil_div(self.frame_pad, self.frame_hop)

    @property
    def edge_columns(self) -> int:
        """Columns at the start of any frame sequence that read the left zero padding of ``tokenize``."""
        return _ceil_div(self.column_pad, self.column_stride)

    def num_frames(self, n: int) -> int:
        """Frames the front-end computes for ``n`` samples (before ``fixed_frames``)."""
        return max(0, (n + 2 * self.frame_pad - self.frame_span) // self.frame_hop + 1)

    def total_frames(self, n: int) -> int:
        """Frames ``tokenize`` sees for a clip of ``n`` samples (``fixed_frames`` when set)."""
        return self.fixed_frames if self.fixed_frames is not None else self.num_frames(n)

    def num_columns(self, frames: int) -> int:
        """Token columns ``tokenize`` makes of ``frames`` frames."""
        return max(0, (frames + 2 * self.column_pad - self.column_span) // self.column_stride + 1)

    def frame_end(self, frame: int) -> int:
        """One past the last sample frame ``frame`` reads."""
        return frame * self.frame_hop - self.frame_pad + self.frame_span

    def column_end(self, column: int) -> int:
        """One past the last frame column ``column`` reads."""
        return column * self.column_stride - self.column_pad + self.column_span

    def clean_frames(self, n: int) -> tuple[int, int]:
        """``[lo, hi)``: the frames of an ``n``-sample clip that read no edge padding (so equal the frames of any
        longer signal the clip is cut from, on the same frame grid)."""
        hi = min(self.num_frames(n), (n + self.frame_pad - self.frame_span) // self.frame_hop + 1)
        return self.edge_frames, max(self.edge_frames, hi)

    def clean_columns(self, n: int) -> tuple[int, int]:
        """``[lo, hi)``: the token columns of an ``n``-sample clip that read only clean frames and no zero
        padding; empty (``lo == hi``) when there are none. Columns reading ``fixed_frames`` padding are dirty."""
        f_lo, f_hi = self.clean_frames(n)
        lo = _ceil_div(f_lo + self.column_pad, self.column_stride)
        hi = min(
            self.num_columns(self.total_frames(n)),
            (f_hi + self.column_pad - self.column_span) // self.column_stride + 1,
        )
        return lo, max(lo, hi)
