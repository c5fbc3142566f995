"""The streaming GPU benchmark, dry-run on the CPU with a tiny config: its rows, its FLOP count and its JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from eval.speed_streaming import add_arguments, encoder_flops_per_hop, gpu_figures, run
from finetune import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_encoder_flops_count_attention_on_every_device() -> None:
    """ast.tiny at 1 s: 1214 tokens (101 x 12 patches + 2), width 32, MLP 64, 2 blocks, a 10-class linear head.
    Per block: q/k/v/o projections 8 L d^2, attention 4 L^2 d, MLP 4 L d 64; the head 2 d 10."""
    model = build_model("ast.tiny", head="linear", num_outputs=10)
    length, d = 1214, 32
    per_block = 8 * length * d * d + 4 * length * length * d + 4 * length * d * 64
    assert (
        encoder_flops_per_hop(model, 1.0, model.backbone.frontend.window.device) == 2 * per_block + 2 * d * 10
    )


def test_gpu_figures_dry_run(tmp_path: Path) -> None:
    out = gpu_figures(["passt_s.tiny"], window_s=1.0, hop_s=0.5, device="cpu", dtype=None, start_sessions=1,
                      max_sessions=2, rounds=1, peak_tflops=2.0)  # fmt: skip
    rows = out["rows"]
    assert [r["sessions"] for r in rows] == [1, 2]
    for r in rows:
        assert r["backbone"] == "passt_s.tiny" and r["hops_per_s"] > 0 and r["state_bytes_per_session"] > 0
        assert r["streams"] == pytest.approx(r["hops_per_s"] * 0.5)
        assert r["achieved_tflops"] == pytest.approx(r["hops_per_s"] * r["encoder_gflop_per_hop"] / 1e3)
        assert r["fraction_of_peak"] == pytest.approx(r["achieved_tflops"] / 2.0)
        assert r["real_time"] == (r["round_ms_median"] <= 500)
    real_time = [r for r in rows if r["real_time"]]
    assert out["best"] == ({"passt_s.tiny": max(real_time, key=lambda r: r["streams"])} if real_time else {})
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    add_arguments(parser)
    args = parser.parse_args(
        ["--gpu", "--dry-run", "--backbones", "cnn14.tiny", "--window", "1.0", "--out", str(tmp_path)]
    )
    run(args)
    saved = json.loads((tmp_path / "streaming-dryrun-cpu.json").read_text())
    assert saved["machine"]["device"] == "cpu" and "DRY RUN" in saved["notes"][0]
    assert [r["sessions"] for r in saved["rows"]] == [1, 2]
