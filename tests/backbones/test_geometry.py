"""StreamGeometry, checked for every registered ``*.tiny`` backbone against what its stages really do.

The frame-shift test: the features of ``x[0:W]`` and ``x[H:H+W]`` (H on the column grid) are equal, frame for
frame and column for column, exactly where the geometry predicts both are clean, and differ everywhere it
predicts that either reads edge padding. The length limits are the ones ``forward`` enforces.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from backbones import StreamGeometry, build_backbone, list_backbones
from backbones.frontends import KaldiFbank, PannsLogMel
from tests.audio_signals import music, noise

TINY = list_backbones("*.tiny")

pytestmark = pytest.mark.usefixtures("one_thread")


def _shift_pairs(clean: tuple[int, int], count: int, shift: int) -> tuple[list[int], list[int]]:
    """Indices ``j`` of the shifted clip compared with ``j + shift`` of the first one: predicted equal / differ."""
    lo, hi = clean
    equal = [j for j in range(count) if lo <= j < hi and lo <= j + shift < hi]
    differ = [j for j in range(count) if j not in equal]
    return equal, differ


def _check_shift(first: Tensor, second: Tensor, clean: tuple[int, int], count: int, shift: int) -> None:
    """``first``/``second``: [T, ...] features of the two clips along their time axis."""
    equal, differ = _shift_pairs(clean, count, shift)
    assert equal and differ
    torch.testing.assert_close(second[equal], first[[j + shift for j in equal]], atol=1e-5, rtol=1e-5)
    gaps = (second[differ] - first[[j + shift for j in differ]]).flatten(1).abs().amax(dim=1)
    assert bool((gaps > 1e-3).all()), (
        f"predicted dirty but equal: {[d for d, g in zip(differ, gaps) if g <= 1e-3]}"
    )


@pytest.mark.parametrize("name", TINY)
def test_frame_shift_matches_the_declared_dirty_sets(name: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(name).eval()
    g = bb.stream_geometry()
    n, hop = int(3.0 * g.sample_rate), 5 * g.column_samples
    x = music(1, n + hop, g.sample_rate, seed=3) + noise(1, n + hop, seed=3, scale=0.01)
    with torch.inference_mode():
        frames_a, frames_b = bb.frontend(x[:, :n]), bb.frontend(x[:, hop : hop + n])
        cols_a, cols_b = bb.tokenize(frames_a), bb.tokenize(frames_b)
    assert frames_a.shape[-1] == g.total_frames(n) and cols_a.shape[1] == g.num_columns(g.total_frames(n))
    # constant padding equals itself: compare the frames and columns that read some real frame
    shift_f, real = hop // g.frame_hop, g.num_frames(n)
    _check_shift(
        frames_a[0].T, frames_b[0].T, g.clean_frames(n), min(real, g.total_frames(n) - shift_f), shift_f
    )
    shift_c, reading_real = hop // g.column_samples, -(-(real + g.column_pad) // g.column_stride)
    count = min(cols_a.shape[1] - shift_c, reading_real)
    _check_shift(cols_a[0], cols_b[0], g.clean_columns(n), count, shift_c)


def test_declared_layouts() -> None:
    """The numbers the streaming cache works from, for the three families at their released settings."""
    ast = build_backbone("ast.tiny").stream_geometry()
    assert (ast.frame_hop, ast.frame_pad, ast.frame_span, ast.fixed_frames) == (160, 0, 400, 1024)
    assert (ast.clean_frames(160000), ast.clean_columns(160000)) == ((0, 998), (0, 99))
    passt = build_backbone("passt_s.tiny").stream_geometry()
    assert (passt.frame_hop, passt.frame_pad, passt.frame_span, passt.column_samples) == (
        320,
        512,
        1025,
        3200,
    )
    assert (passt.clean_frames(320000), passt.clean_columns(320000)) == ((2, 999), (1, 99))
    cnn = build_backbone("cnn14.tiny").stream_geometry()
    assert (cnn.column_stride, cnn.column_pad, cnn.column_span, cnn.column_samples) == (2, 2, 6, 640)
    assert (cnn.num_columns(1001), cnn.clean_frames(320000), cnn.clean_columns(320000)) == (
        500,
        (2, 999),
        (2, 498),
    )


@pytest.mark.parametrize("name", TINY)
def test_length_limits_are_those_of_forward(name: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(name).eval()
    g = bb.stream_geometry()
    assert g.max_samples == bb.max_samples
    with torch.inference_mode():
        bb(torch.zeros(1, g.min_samples))
        with pytest.raises(ValueError, match="at least"):
            bb(torch.zeros(1, g.min_samples - 1))


def test_non_local_front_ends_are_declared() -> None:
    assert not StreamGeometry.of_frontend(
        PannsLogMel(compression="pcen"),
        column_stride=2,
        column_pad=2,
        column_span=6,
        min_tokenize_frames=32,
        min_frames=32,
        max_samples=None,
    ).local
    assert not build_backbone("ast.tiny", cmvn=True).stream_geometry().local
    assert build_backbone("ast.tiny").stream_geometry().local
    assert KaldiFbank().min_samples == build_backbone("ast.tiny").stream_geometry().min_samples
