"""Checkpoints on disk: only complete ``step_N`` directories count, numerically ordered; atomic saves replace a
crashed save's leftovers and prune old checkpoints; the trainer state round-trips and rejects foreign files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from accelerate import Accelerator

from finetune.checkpointing import (
    STATE_FILE,
    TrainerState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_state,
    save_checkpoint,
    write_state,
)


def _complete(path: Path, step: int) -> None:
    path.mkdir(parents=True)
    write_state(path / STATE_FILE, TrainerState(step=step))


def test_only_complete_step_directories_count_in_numeric_order(tmp_path: Path) -> None:
    assert list_checkpoints(tmp_path / "missing") == [] and latest_checkpoint(tmp_path / "missing") is None
    _complete(tmp_path / "step_2", 2)
    _complete(tmp_path / "step_10", 10)  # after step_2 although it sorts before it as text
    (tmp_path / "step_11").mkdir()  # no state file: not complete
    _complete(tmp_path / ".tmp_step_12", 12)  # a save that never got renamed
    _complete(tmp_path / "step_x", 0)
    (tmp_path / "step_13").write_text("not a directory")
    assert list_checkpoints(tmp_path) == [tmp_path / "step_2", tmp_path / "step_10"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_10"


def test_state_round_trips_and_rejects_foreign_files(tmp_path: Path) -> None:
    state = TrainerState(
        step=7,
        best=float("nan"),
        best_step=5,
        bad_evals=2,
        history=[{"step": 5, "eval/map": np.float32(0.25), "eval/n": np.int64(3)}],
        metric="map",
    )
    write_state(tmp_path / "s.json", state)
    back = read_state(tmp_path / "s.json")
    assert (back.step, back.best_step, back.bad_evals, back.metric) == (7, 5, 2, "map") and math.isnan(
        back.best
    )
    assert back.history == [{"step": 5, "eval/map": 0.25, "eval/n": 3}]
    # a state written before the selection metric was recorded
    (tmp_path / "old.json").write_text(
        json.dumps({"step": 3, "best": 0.5, "best_step": 3, "bad_evals": 0, "history": []})
    )
    assert read_state(tmp_path / "old.json") == TrainerState(step=3, best=0.5, best_step=3)
    (tmp_path / "other.json").write_text(json.dumps({"step": 3, "epoch": 1, "global_step": 3}))
    with pytest.raises(
        ValueError, match=r"other.json is not a trainer state .* unknown key\(s\) epoch, global_step"
    ):
        read_state(tmp_path / "other.json")


def test_save_is_atomic_prunes_and_loads_back(tmp_path: Path) -> None:
    accelerator = Accelerator()
    for step in (1, 2, 3):
        assert (
            save_checkpoint(accelerator, tmp_path, TrainerState(step=step), keep=2)
            == tmp_path / f"step_{step}"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_2", "step_3"]
    stale = tmp_path / ".tmp_step_4"  # left by a crash in the middle of saving step 4
    stale.mkdir()
    (stale / "half_written.bin").write_bytes(b"\0")
    save_checkpoint(accelerator, tmp_path, TrainerState(step=4, metric="loss"), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_3", "step_4"]
    assert not (tmp_path / "step_4" / "half_written.bin").exists()
    assert load_checkpoint(accelerator, tmp_path / "step_4") == TrainerState(step=4, metric="loss")
