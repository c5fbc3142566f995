"""The command line: the documented command end to end, option parsing and its errors, exit status, listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.benchmark import cli
from eval.benchmark.cli import parse_options

ROOT = Path(__file__).resolve().parents[3]


def test_the_documented_command_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "bench"
    command = [
        sys.executable, "-m", "eval", "benchmark",
        "--backbones", "ast.tiny,passt_s.tiny,cnn14.tiny", "--task", "synthetic_genres", "--mode", "probe",
        "--out", str(out),
        # small: 3 clips per style of 1 s, one seed, few resamples, a short MLP grid
        "--seeds", "1", "--clips-per-class", "3", "--data", "clip_seconds=1.0", "--data", "crop_seconds=0.5",
        "--bootstrap", "100", "--probe", "mlp_hidden=[32]", "--probe", "mlp_epochs=5", "--threads", "1", "--no-progress", "--no-plots",
    ]  # fmt: skip
    env = {**os.environ, "MUSICFT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "8 cell(s) finished, 0 failed" in done.stdout
    assert "synthetic genres" not in done.stderr  # --no-progress silences the data set's generation bar too
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == 8  # 3 backbones x 2 probes + 2 baselines, one seed
    for cell in results["cells"]:
        assert cell["status"] == "ok" and 0.0 <= cell["metrics"]["accuracy"] <= 1.0
        assert cell["clips"] == {"train": 10, "validation": 10, "test": 10}
    models = set(results["summary"]["synthetic_genres"])
    assert {"ast.tiny linear probe", "passt_s.tiny MLP probe", "cnn14.tiny linear probe"} <= models
    table = (out / "results.md").read_text()
    assert "## synthetic_genres" in table and "| passt_s.tiny MLP probe | random init | 1 |" in table


def test_options_are_parsed_into_the_grid() -> None:
    opts = parse_options(
        [
            "--backbones", "cnn14.tiny", "--task", "synthetic_genres,synthetic_tags", "--mode", "probe",
            "--mode", "full", "--seeds", "3,7", "--folds", "0", "--out", "runs/x", "--clips-per-class", "5",
            "--data", "synthetic_tags.max_styles=2", "--data", "clip_seconds=2", "--workers", "999",
            "--checkpoint", "cnn14.tiny=pretrained", "--probe", "linear_c=[1.0]", "--recipe", "train.lr=3e-3",
        ]
    )  # fmt: skip
    assert opts.modes == ("linear_probe", "mlp_probe", "full") and opts.seeds == [3, 7] and opts.folds == [0]
    genres, tags = opts.tasks
    assert (genres.settings["n_per_class"], genres.settings["clip_seconds"]) == (5, 2)
    assert (tags.settings["n_items"], tags.settings["max_styles"], tags.settings["clip_seconds"]) == (
        50,
        2,
        2,
    )
    assert "max_styles" not in genres.settings
    assert opts.workers == os.cpu_count() and opts.checkpoints == {"cnn14.tiny": "pretrained"}
    assert opts.recipe == ("train.lr=3e-3",)
    assert opts.probe.linear_c == (1.0,) and parse_options(["--out", "x", "--seeds", "2"]).seeds == [0, 1]
    folder = parse_options(["--out", "x", "--task", "folder:/data/a,b"]).tasks[0]
    assert folder.name == "folder:/data/a,b" and folder.settings["root"] == "/data/a,b"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backbones", "cnn14.tiniest"], "unknown backbone(s) cnn14.tiniest; known: "),
        (
            ["--task", "gtzn"],
            "unknown benchmark task 'gtzn' (did you mean 'gtzan'?); known: fma_small, gtzan",
        ),
        (["--mode", "lorra"], "unknown mode 'lorra'; known: probe, linear_probe, mlp_probe, lora, full"),
        (
            ["--data", "n_per_clas=3"],
            "unknown key(s) data (synthetic_genres).n_per_clas (did you mean 'n_per_class'?)",
        ),
        (["--checkpoint", "ast.tiny=x.pt"], "--checkpoint names ast.tiny, which --backbones does not list"),
        (["--probe", "mlp_epoch=3"], "unknown key(s) probe.mlp_epoch (did you mean 'mlp_epochs'?)"),
        (["--data", "clip_seconds"], "--data 'clip_seconds' is not of the form KEY=VALUE"),
        (
            ["--recipe", "data.n_per_class=3"],
            "--recipe 'data.n_per_class=3': only model.* and train.* keys apply to a cell (data settings: --data)",
        ),
        (
            ["--recipe", "train.max_steps=9"],
            "--recipe 'train.max_steps=9': train.max_steps is set by --steps",
        ),
        (["--recipe", "train.lrr=0.1"], "unknown key(s) train.lrr (did you mean 'lr'?)"),
        (["--recipe", "train.lr=fast"], "train.lr: expected float, got 'fast'"),
    ],
)
def test_bad_options_exit_with_a_usage_error_that_names_the_fix(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_options(["--out", "runs/x", "--backbones", "cnn14.tiny", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.usefixtures("tones", "one_thread")
def test_exit_status_is_one_when_a_cell_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--backbones", "cnn14.tiny", "--task", "tones", "--mode", "linear_probe", "--seeds", "1",
        "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"), "--checkpoint",
        f"cnn14.tiny={tmp_path / 'nope.pth'}", "--no-progress", "--no-plots", "--bootstrap", "20",
    ]  # fmt: skip
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "2 cell(s) finished, 1 failed" in out
    assert "failed: tones/fold0/cnn14.tiny/linear_probe/seed0: CheckpointError: checkpoint file" in out


@pytest.mark.usefixtures("tones", "one_thread")
def test_report_only_runs_nothing_and_exits_one_while_cells_are_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--backbones", "cnn14.tiny", "--task", "tones", "--mode", "linear_probe", "--out", str(tmp_path / "run"),
        "--cache", str(tmp_path / "cache"), "--no-progress", "--no-plots", "--bootstrap", "20", "--no-baselines",
    ]  # fmt: skip
    assert cli.main([*argv, "--seeds", "1"]) == 0
    assert cli.main([*argv, "--seeds", "2", "--report-only"]) == 1
    out = capsys.readouterr().out
    assert "1 cell(s) finished, 0 failed, 1 not run; wrote" in out
    assert not (tmp_path / "run" / "cells" / "tones/fold0/cnn14.tiny/linear_probe/seed1").exists()
    assert cli.main([*argv, "--seeds", "1", "--report-only"]) == 0


def test_task_prefixed_data_settings_apply_to_that_task_only_even_when_it_is_not_run() -> None:
    shared = [
        "--data",
        "synthetic_tags.n_items=100",
        "--data",
        "synthetic_piano.n_items=80",
        "--data",
        "seed=3",
    ]
    (genres,) = parse_options(["--out", "x", "--task", "synthetic_genres", *shared]).tasks
    assert "n_items" not in genres.settings and genres.settings["seed"] == 3
    (piano,) = parse_options(["--out", "x", "--task", "synthetic_piano", *shared]).tasks
    assert (piano.settings["n_items"], piano.settings["seed"]) == (80, 3)


def test_list_names_the_tasks_and_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "gtzan_10fold",
        "percepiano_performer",
        "synthetic_tags",
        "folder:PATH",
        "mlp_probe",
        "probe ",
    ):
        assert name in out
