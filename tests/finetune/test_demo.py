"""``python -m finetune demo`` (the README's main job) end to end, shortened: it must leave the run directory
the README promises, with held-out metrics and a timeline covering the whole synthetic radio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
    # 5 styles x 8 s, 4 s window, 1 s hop -> windows ending at 4, 5, ..., 40 s
    assert [e["time"] for e in timeline] == [float(t) for t in range(4, 41)]
    assert all(abs(sum(e["smoothed"]) - 1.0) < 1e-5 for e in timeline)
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
