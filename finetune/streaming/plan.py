"""Which token columns of a window come from a stream's column cache and which are recomputed per window.

A window of ``n`` samples whose start lies on the column grid shares its clean columns (those that read no edge
padding, :meth:`backbones.StreamGeometry.clean_columns`) with the stream. The dirty columns at its two ends are
recomputed from the window's own edge samples, exactly as the offline front-end and ``tokenize`` would compute
them: a prefix clip for the left end (it has the window's left edge padding) and a suffix clip starting on the
frame grid for the right end (it has the window's right edge padding, and AST's constant frames). When the edge
clips would cost as much as the window, the whole window is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

from backbones import StreamGeometry

__all__ = ["WindowPlan", "plan_window"]


@dataclass(frozen=True)
class WindowPlan:
    """How to assemble the token columns of one window length.

    Attributes:
        samples: window length in samples at the model's rate.
        columns: token columns of the window.
        clean: ``[lo, hi)`` columns read from the stream's cache (empty: recompute the whole window).
        prefix_samples: length of the left edge clip (0: no left dirty columns).
        prefix_frames: frames of the left clip that are tokenized (its first ``lo`` columns are kept).
        suffix_start: first sample of the right edge clip, in window samples (``samples``: no right dirty
            columns).
        suffix_frames: ``[a, b)`` frames of the right clip that are tokenized; columns from ``suffix_skip`` on
            are the window's columns ``hi ..``.
        suffix_skip: leading columns of the right clip's tokens that are not dirty window columns.
    """

    samples: int
    columns: int
    clean: tuple[int, int]
    prefix_samples: int = 0
    prefix_frames: int = 0
    suffix_start: int = 0
    suffix_frames: tuple[int, int] = (0, 0)
    suffix_skip: int = 0

    @property
    def full(self) -> bool:
        """No column comes from the cache: the window is recomputed from its samples."""
        return self.clean[0] >= self.clean[1]


def plan_window(geometry: StreamGeometry, samples: int) -> WindowPlan:
    """The :class:`WindowPlan` of a window of ``samples`` samples (its start on the column grid)."""
    g = geometry
    total = g.total_frames(samples)
    columns = g.num_columns(total)
    lo, hi = g.clean_columns(samples)
    full = WindowPlan(samples, columns, (0, 0))
    if hi <= lo:
        return full
    prefix_samples = prefix_frames = 0
    if lo > 0:
        prefix_frames = max(g.column_end(lo - 1), g.min_tokenize_frames)
        prefix_samples = g.frame_end(prefix_frames - 1)
        if prefix_frames > g.num_frames(samples) or prefix_samples > samples:
            return full
    suffix_start, suffix_frames, suffix_skip = samples, (0, 0), 0
    if hi < columns:
        first = (hi - g.edge_columns) * g.column_stride  # the right clip's tokens start on this window frame
        first = min(first, (total - g.min_tokenize_frames) // g.column_stride * g.column_stride)
        if first < 0:
            return full
        offset = max(0, first - g.edge_frames)  # the right clip's frame 0 is this window frame
        suffix_start = offset * g.frame_hop
        suffix_frames = (first - offset, total - offset)
        suffix_skip = hi - first // g.column_stride
    if prefix_samples + samples - suffix_start >= samples:
        return full
    return WindowPlan(
        samples, columns, (lo, hi), prefix_samples, prefix_frames, suffix_start, suffix_frames, suffix_skip
    )
