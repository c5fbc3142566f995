"""The GPU script's dry run: every part runs on CPU with tiny configs and writes its JSON, so the script cannot
rot between the rare runs on a GPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from eval import gpu


def _args(out: Path) -> argparse.Namespace:
    return gpu._parser().parse_args(["--dry-run", "--out", str(out)])


def test_training_part_counts_flops_and_times_every_case(tmp_path: Path, one_thread: None) -> None:
    path = gpu.run_part("training", _args(tmp_path))
    assert path.name == "training-cpu-dryrun.json"
    data = json.loads(path.read_text())
    assert {(r["backbone"], r["mode"]) for r in data["results"]} == {
        (n, m) for n in gpu.TINY for m in ("full", "lora")
    }
    for row in data["results"]:
        assert row["clips_per_s"] > 0 and row["step_median_s"] > 0
        assert row["flops_per_clip"] > 1e6  # the forward+backward matmuls and convs were counted
        assert row["peak_fraction"] is None  # no peak FLOP rate on CPU
    hf = data["hf_trainer"][0]
    assert hf["backbone"] == "ast.tiny" and hf["hf_trainer_step_s"] > 0
    assert data["gpu"]["device"] == "cpu" and "torch" in data["gpu"]


def test_patchout_and_frontends_parts(tmp_path: Path, one_thread: None) -> None:
    patchout = json.loads(gpu.run_part("patchout", _args(tmp_path)).read_text())
    plain, dropped = patchout["results"]
    assert plain["patchout"] == [0, 0] and dropped["patchout"] == [2, 1]
    assert dropped["flops_per_clip"] < plain["flops_per_clip"]  # fewer tokens, fewer FLOPs
    frontends = json.loads(gpu.run_part("frontends", _args(tmp_path)).read_text())
    cases = {r["case"]: r for r in frontends["results"]}
    assert set(cases) == {"kaldi_ast", "passt", "panns_32k", "panns_32k_fft"}
    assert cases["panns_32k"]["max_abs_diff"] < 1e-3 and cases["kaldi_ast"]["max_abs_diff"] < 1e-3


def test_flop_counter_sees_attention_through_the_math_kernel() -> None:
    import torch
    import torch.nn.functional as F

    q = torch.randn(1, 2, 8, 4)
    flops = gpu.count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    assert flops == 2 * (2 * 2 * 8 * 8 * 4)  # QK^T and AV, 2 FLOPs per multiply-add


def test_peak_rates_and_unknown_parts(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu.PEAK_BF16_TFLOPS["H200"] == gpu.PEAK_BF16_TFLOPS["H100"] > gpu.PEAK_BF16_TFLOPS["H100 PCIe"]
    assert gpu.gpu_info(peak_override=500.0)["device"] == "cpu"
    assert gpu.main(["--parts", "training,warp"]) == 2
    assert "unknown parts ['warp']" in capsys.readouterr().err


def test_streaming_part_times_cached_sessions_against_the_naive_rerun(
    tmp_path: Path, one_thread: None
) -> None:
    data = json.loads(gpu.run_part("streaming", _args(tmp_path)).read_text())
    rows = data["results"]["rows"]
    assert {r["backbone"] for r in rows} == set(gpu.TINY)
    for row in rows:
        assert row["sessions"] in (2, 4) and row["hops_per_s"] > 0 and row["naive_round_ms_median"] > 0
        assert row["cached_vs_naive"] > 0 and row["encoder_gflop_per_hop"] > 0
        assert row["fraction_of_peak"] is None  # no peak FLOP rate on CPU
