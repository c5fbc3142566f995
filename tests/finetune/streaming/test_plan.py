"""plan_window: the clean columns of a window plus its recomputed edges are its whole-window tokens."""

from __future__ import annotations

import pytest
import torch

from backbones import build_backbone
from finetune.streaming import WindowPlan, plan_window
from tests.finetune.streaming.helpers import signal

pytestmark = pytest.mark.usefixtures("one_thread")


def test_plans_at_ten_seconds() -> None:
    """The reference study's dirty columns: AST's last two (constant padding), PaSST's first (reflect padding),
    CNN14's first and last two (reflect padding spread by block 1's convs)."""
    ast = plan_window(build_backbone("ast.tiny").stream_geometry(), 160000)
    assert ast == WindowPlan(160000, 101, (0, 99), 0, 0, 158400, (0, 34), 0)
    passt = plan_window(build_backbone("passt_s.tiny").stream_geometry(), 320000)
    assert passt == WindowPlan(320000, 99, (1, 99), 5313, 16, 320000, (0, 0), 0)
    cnn = plan_window(build_backbone("cnn14.tiny").stream_geometry(), 320000)
    assert cnn == WindowPlan(320000, 500, (2, 498), 10432, 32, 309120, (2, 35), 14)
    assert not any(p.full for p in (ast, passt, cnn))


def test_short_windows_are_recomputed_whole() -> None:
    g = build_backbone("cnn14.tiny").stream_geometry()
    assert plan_window(g, g.min_samples).full
    assert plan_window(g, g.min_samples).clean == (0, 0)


@pytest.mark.parametrize("name", ["ast.tiny", "passt_s.tiny", "cnn14.tiny"])
@pytest.mark.parametrize("seconds", [0.4, 0.6, 1.0, 2.4])
def test_edges_and_clean_columns_assemble_the_window_tokens(name: str, seconds: float) -> None:
    torch.manual_seed(0)
    bb = build_backbone(name).eval()
    g = bb.stream_geometry()
    n = round(seconds * g.sample_rate)
    plan = plan_window(g, n)
    x = signal(seconds, g.sample_rate, seed=4)[None]
    with torch.inference_mode():
        whole = bb.tokenize(bb.frontend(x))
        assert whole.shape[1] == plan.columns
        if plan.full:
            return
        lo, hi = plan.clean
        parts = [whole[:, lo:hi]]
        if plan.prefix_samples:
            parts.insert(
                0, bb.tokenize(bb.frontend(x[:, : plan.prefix_samples])[:, :, : plan.prefix_frames])[:, :lo]
            )
        if plan.suffix_start < n:
            a, b = plan.suffix_frames
            parts.append(
                bb.tokenize(bb.frontend(x[:, plan.suffix_start :])[:, :, a:b])[:, plan.suffix_skip :]
            )
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=1e-5)
