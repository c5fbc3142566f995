"""``python -m finetune demo`` (the README's main job) end to end, shortened: it must leave the run directory
the README promises, with held-out metrics and a timeline covering the whole synthetic radio."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune.config import ConfigError
from finetune.data.gtzan import GTZANConfig
from finetune.demo import add_arguments, demo_config, stream_radio
from finetune.model import build_model
from tests.audio_signals import music

ROOT = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_demo_settings_come_from_the_packaged_yaml() -> None:
    cfg = demo_config(_args())
    assert (cfg.task, cfg.model.backbone, cfg.model.checkpoint, cfg.model.head) == (
        "genre",
        "cnn14.tiny",
        None,
        "linear",
    )
    assert (
        cfg.model.num_outputs is None and cfg.model.freeze is None and cfg.model.lora is None
    )  # from the data
    assert cfg.model.backbone_overrides == {"dropout": 0.0, "embed_dropout": 0.1}
    assert (cfg.data.name, cfg.data.n_per_class, cfg.data.clip_seconds, cfg.data.crop_seconds) == (
        "synthetic_genres",
        40,
        6.0,
        4.0,
    )
    t = cfg.train
    assert (t.output_dir, t.max_steps, t.batch_size, t.lr, t.weight_decay, t.warmup_ratio) == (
        "runs/demo",
        400,
        16,
        0.003,
        0.0,
        0.05,
    )
    assert (t.eval_every, t.save_every, t.log_every, t.mixed_precision) == (100, 100, 10, "no")


def test_demo_command_line_options(tmp_path: Path) -> None:
    other = demo_config(
        _args("--backbone", "passt_s.tiny", "--checkpoint", "w.pt", "--steps", "5", "--out", "o")
    )
    assert (other.model.backbone, other.model.checkpoint, other.train.max_steps) == (
        "passt_s.tiny",
        "w.pt",
        5,
    )
    assert (
        other.model.backbone_overrides == {} and other.train.output_dir == "o"
    )  # CNN14's dropout stays behind
    gtzan = demo_config(_args("--data", str(tmp_path), "train.lr=1e-4", "data.eval_crops=3"))
    assert isinstance(gtzan.data, GTZANConfig) and gtzan.data.root == str(tmp_path)
    assert (gtzan.data.clip_seconds, gtzan.data.crop_seconds, gtzan.data.eval_crops) == (30.0, None, 3)
    assert gtzan.train.lr == 1e-4 and gtzan.model.backbone_overrides == {"dropout": 0.0, "embed_dropout": 0.1}
    with pytest.raises(
        ConfigError, match=r"^unknown key\(s\) data\.n_per_clas \(did you mean 'n_per_class'\?\)"
    ):
        demo_config(_args("data.n_per_clas=3"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "argument --steps: must be a positive integer, got 0"),
        (["--steps", "-5"], "argument --steps: must be a positive integer, got -5"),
        (["--steps", "many"], "argument --steps: expected a positive integer, got 'many'"),
        (["--data", "/nonexistent/gtzan"], "argument --data: /nonexistent/gtzan is not a directory (pass the GTZAN root folder)"),
    ],
)  # fmt: skip
def test_demo_options_are_checked_as_they_are_parsed(argv, message, capsys) -> None:
    """``--steps 0`` used to train the default 400 steps; a missing --data folder failed after the model was built."""
    with pytest.raises(SystemExit) as info:
        _args(*argv)
    assert info.value.code == 2 and capsys.readouterr().err.rstrip().endswith(f"error: {message}")


def test_demo_writes_metrics_plots_model_and_timeline(tmp_path):
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "finetune",
        "demo",
        "--out",
        str(out),
        "--steps",
        "3",
        "data.n_per_class=3",
        "data.clip_seconds=4.0",
        "train.batch_size=4",
        "train.eval_every=3",
        "train.progress=false",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
    assert metrics["split"] == "test" and metrics["n"] == 10 and len(metrics["class_names"]) == 10
    for name in ("confusion_matrix.png", "loss.png", "reliability.png", "timeline.png", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "model" / "config.json").is_file() and (out / "checkpoints" / "step_3").is_dir()
    timeline = json.loads((out / "timeline.json").read_text())
    # 5 styles x 8 s streamed in hops of 0.5 s from the first (start policy "partial") to the end at 40 s
    hops = timeline["hops"]
    assert [h["time"] for h in hops] == [0.5 * k for k in range(1, 81)]
    assert all(abs(sum(h["smoothed"]) - 1.0) < 1e-5 for h in hops)
    styles = ["rock", "classical", "disco", "jazz", "metal"]
    assert [h["true"] for h in hops] == [styles[min(4, (k - 1) // 16)] for k in range(1, 81)]
    assert timeline["hop_accuracy"] == sum(h["label"] == h["true"] for h in hops) / 80
    assert f"Hop accuracy {timeline['hop_accuracy']:.2f} over 80 hops" in proc.stdout
    # the decision segments (none when no genre ever leads by the margin) are printed with their truth
    segments = timeline["segments"]
    printed = proc.stdout.split("Decision segments:\n")[1].splitlines()
    if segments:
        assert [line[:29] for line in printed[: len(segments)]] == [
            f"  {a:5.1f}-{b:5.1f} s  {label:<10} (true: " for a, b, label in segments
        ]
    else:
        assert printed[0] == "  none: no genre led by 0.2 for 2 hops (an undertrained model)"
    assert "from random initialisation" in proc.stdout and "accuracy" in proc.stdout


def test_demo_runs_with_another_backbone(tmp_path):
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "finetune",
        "demo",
        "--out",
        str(out),
        "--backbone",
        "passt_s.tiny",
        "--steps",
        "2",
        "data.n_per_class=3",
        "data.clip_seconds=4.0",
        "train.batch_size=4",
        "train.progress=false",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((out / "model" / "config.json").read_text())
    assert "passt_s.tiny" in json.dumps(saved) and (out / "timeline.json").is_file()


@pytest.mark.usefixtures("one_thread")
def test_the_radio_streams_through_the_engine_and_its_segments_follow_the_decisions() -> None:
    """``stream_radio`` (the demo's radio): hops on the 0.5 s grid from the first, averaged windows, and decision
    segments that tile the hops from the first decision to the last hop, each with the label of its hops."""
    torch.manual_seed(0)
    model = build_model("cnn14.tiny", head="linear", labels=("a", "b", "c")).eval()
    wave = music(1, 6 * 32000, 32000, seed=4)[0].numpy()
    wave[3 * 32000 :] = music(1, 3 * 32000, 32000, seed=9)[0].numpy() * 0.3  # another piece, quieter
    hops, segments = stream_radio(model, wave, 32000, windows=(1.0, 2.0), postprocess={"decisions": {}})
    assert [h.time for h in hops] == [0.5 * k for k in range(1, 13)]
    assert [h.partial for h in hops] == [h.time < 2.0 for h in hops]
    assert all(set(h.outputs) == {1.0, 2.0} for h in hops)
    assert segments[0][0] == 0.5 and segments[-1][1] == 6.0  # min_hops 1: decided at the first hop
    assert all(a[1] == b[0] and a[2] != b[2] for a, b in zip(segments, segments[1:]))
    for start, end, label in segments:
        assert {h.label for h in hops if start <= h.time < end} == {label}
