"""``python -m finetune``'s shared error policy: user errors print one line and exit 2 (config/usage) or 1, with
the traceback only under ``--debug`` / ``MUSICFT_DEBUG=1``; bugs keep their traceback; Ctrl-C and SIGTERM map to
130 and 143; the library's log lines are shown while a command runs."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backbones.state_dict import CheckpointError
from finetune.cli import EXIT_CONFIG, EXIT_ERROR, main, run_command
from finetune.monitor import TrainingDivergedError, TrainingInterrupted

ROOT = Path(__file__).resolve().parents[2]
HINT = " (run with --debug or MUSICFT_DEBUG=1 for the traceback)"


def test_a_missing_checkpoint_fails_before_any_work_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MUSICFT_DEBUG", raising=False)
    out = tmp_path / "demo"
    missing = tmp_path / "nonexistent.pth"
    assert main(["demo", "--checkpoint", str(missing), "--out", str(out)]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.err == (
        f"error: model.checkpoint: checkpoint file {missing} for cnn14.tiny does not exist; check the path{HINT}\n"
    )
    assert captured.out == "" and not out.exists()  # nothing printed, built or written before the check


def test_debug_prints_the_traceback_before_or_after_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MUSICFT_DEBUG", raising=False)
    for argv in (
        ["--debug", "demo", "--backbone", "cnn14.tinyy"],
        ["demo", "--backbone", "cnn14.tinyy", "--debug"],
    ):
        assert main([*argv, "--out", str(tmp_path)]) == EXIT_CONFIG
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):")
        assert err.endswith(
            "error: model.backbone: unknown backbone 'cnn14.tinyy' (did you mean 'cnn14.tiny'?); known: "
            "ast.audioset, ast.tiny, cnn14.audioset_16k, cnn14.audioset_32k, cnn14.tiny, passt_s.audioset_20s, "
            "passt_s.audioset_30s, passt_s.audioset_hop100, passt_s.audioset_hop160, passt_s.audioset_kd, "
            "passt_s.audioset_s16, passt_s.audioset_swa, passt_s.tiny\n"
        )


def _raise(error: BaseException):
    def body() -> int:
        raise error

    return body


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (CheckpointError("checkpoint file w.pt does not exist"), EXIT_ERROR, "error: checkpoint file w.pt does not exist"),
        (KeyError("unknown data set 'gtzn' (did you mean 'gtzan'?)"), EXIT_ERROR, "error: unknown data set 'gtzn' (did you mean 'gtzan'?)"),
        (FileNotFoundError(2, "No such file or directory", "labels.json"), EXIT_ERROR, "error: [Errno 2] No such file or directory: 'labels.json'"),
        (TrainingDivergedError("the training loss is nan at step 7"), EXIT_ERROR, "error: the training loss is nan at step 7"),
    ],
)  # fmt: skip
def test_user_errors_print_one_line_with_their_status(capsys, monkeypatch, error, status, line):
    monkeypatch.delenv("MUSICFT_DEBUG", raising=False)
    assert run_command(_raise(error)) == status
    assert capsys.readouterr().err == f"{line}{HINT}\n"
    monkeypatch.setenv("MUSICFT_DEBUG", "1")
    assert run_command(_raise(error)) == status
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and err.endswith(f"{line}\n")


def test_stops_and_bugs(capsys):
    assert run_command(_raise(KeyboardInterrupt())) == 130 and capsys.readouterr().err == "interrupted\n"
    stopped = TrainingInterrupted(
        "stopped by SIGTERM at step 3 of 9; run the same command again", signal.SIGTERM
    )
    assert run_command(_raise(stopped)) == 143
    assert capsys.readouterr().err == "stopped by SIGTERM at step 3 of 9; run the same command again\n"
    with pytest.raises(AttributeError, match="no attribute 'x'"):  # a bug keeps its traceback
        run_command(_raise(AttributeError("'NoneType' object has no attribute 'x'")))


def test_library_log_lines_are_shown_while_a_command_runs(capsys):
    logger = logging.getLogger("finetune.train")

    def body() -> int:
        logger.info("resuming from runs/x/checkpoints/step_5 (step 5 of 9)")
        logger.debug("not shown without --debug")
        return 0

    assert run_command(body) == 0
    assert capsys.readouterr().err == "resuming from runs/x/checkpoints/step_5 (step 5 of 9)\n"
    assert not any(type(h).__name__ == "_TqdmHandler" for h in logging.getLogger("finetune").handlers)


def test_python_m_finetune_exits_2_without_a_traceback(tmp_path):
    """The real entry point in a subprocess (MUSICFT_DEBUG is tested in-process above)."""
    cmd = [
        sys.executable,
        "-m",
        "finetune",
        "demo",
        "--checkpoint",
        "nonexistent.pth",
        "--out",
        str(tmp_path / "o"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MUSICFT_DEBUG"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_CONFIG and proc.stdout == "" and not (tmp_path / "o").exists()
    assert proc.stderr == (
        "error: model.checkpoint: checkpoint file nonexistent.pth for cnn14.tiny does not exist; check the path"
        f"{HINT}\n"
    )
