"""Checkpoints on disk: only complete ``step_N`` directories count, numerically ordered; atomic saves replace a
crashed save's leftovers and prune old checkpoints; the trainer state round-trips and rejects foreign files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from accelerate import Accelerator

from backbones.config import ConfigError
from finetune.checkpointing import (
    PREVIOUS_DIR,
    STATE_FILE,
    TRAINING_OUTPUTS,
    ResumeMismatchError,
    TrainerState,
    flatten_settings,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_state,
    resume_point,
    save_checkpoint,
    set_aside,
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


def test_keep_must_be_at_least_one_and_the_last_good_checkpoint_survives_pruning(tmp_path: Path) -> None:
    accelerator = Accelerator()
    with pytest.raises(
        ValueError, match=r"^keep must be >= 1 \(the newest checkpoint is what a run resumes from\)"
    ):
        save_checkpoint(accelerator, tmp_path, TrainerState(step=1), keep=0)
    assert not tmp_path.joinpath("step_1").exists()
    for step in (1, 2, 3, 4):  # steps 3 and 4 exploded: the last good checkpoint stays step 2
        save_checkpoint(accelerator, tmp_path, TrainerState(step=step, last_good_step=min(step, 2)), keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_2", "step_4"]


def test_flatten_settings_names_every_leaf_and_normalises_values() -> None:
    nested = {
        "task": "genre",
        "model": {"lora": {"r": 8, "targets": ("qkv",)}, "head_config": {}, "freeze": None},
    }
    assert flatten_settings(nested) == {
        "task": "genre",
        "model.lora.r": 8,
        "model.lora.targets": ["qkv"],  # as JSON writes it back
        "model.head_config": {},
        "model.freeze": None,
    }
    assert flatten_settings({"train.lr": np.float32(0.5)}) == {"train.lr": 0.5}


def test_resume_point_checks_the_settings_and_changes_nothing(tmp_path: Path) -> None:
    settings = {"model": {"backbone": "cnn14.tiny"}, "train.lr": 0.001}
    assert resume_point(tmp_path / "none", settings) is None
    path = tmp_path / "checkpoints" / "step_5"
    path.mkdir(parents=True)
    write_state(path / STATE_FILE, TrainerState(step=5, settings=flatten_settings(settings)))
    assert resume_point(tmp_path / "checkpoints", settings) == path
    with pytest.raises(ResumeMismatchError) as info:
        resume_point(
            tmp_path / "checkpoints", {"model": {"backbone": "ast.tiny", "lora": {"r": 4}}, "train.lr": 0.001}
        )
    assert isinstance(info.value, ConfigError) and str(info.value).startswith(
        f"cannot resume from {path}: these settings differ from the run that wrote it:\n"
        "  model.backbone: 'cnn14.tiny' -> 'ast.tiny'\n  model.lora.r: (not set) -> 4\nResuming would continue"
    )
    old = tmp_path / "old" / "step_3"  # written before settings were recorded: resumes, with a warning
    old.mkdir(parents=True)
    write_state(old / STATE_FILE, TrainerState(step=3))
    with pytest.warns(UserWarning, match=r"step_3 does not record the settings it was written with"):
        assert resume_point(tmp_path / "old", settings) == old


def test_a_section_switched_on_or_off_is_one_line(tmp_path: Path) -> None:
    off = {"model": {"mixup": None, "head": "linear"}, "data": {"augment": {}}}
    on = {
        "model": {"mixup": {"alpha": 0.2, "p": 1.0}, "head": "linear"},
        "data": {"augment": {"gain": {"max_db": 6}}},
    }
    path = tmp_path / "step_1"
    path.mkdir()
    write_state(path / STATE_FILE, TrainerState(step=1, settings=flatten_settings(off)))
    with pytest.raises(ResumeMismatchError) as info:
        resume_point(tmp_path, on)
    assert str(info.value).split("\n")[1:3] == [
        "  data.augment: {} -> {'gain.max_db': 6}",
        "  model.mixup: None -> {'alpha': 0.2, 'p': 1.0}",
    ]
    write_state(path / STATE_FILE, TrainerState(step=1, settings=flatten_settings(on)))
    with pytest.raises(ResumeMismatchError) as info:
        resume_point(tmp_path, off)
    assert "\n  model.mixup: {'alpha': 0.2, 'p': 1.0} -> None\nResuming" in str(info.value)


def test_set_aside_moves_only_the_named_outputs(tmp_path: Path) -> None:
    assert set_aside(tmp_path / "missing") is None and set_aside(tmp_path) is None
    (tmp_path / "checkpoints" / "step_1").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("mine")
    first = set_aside(tmp_path)
    assert first is not None and first.parent == tmp_path / PREVIOUS_DIR
    assert sorted(p.name for p in first.iterdir()) == ["checkpoints", "metrics.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "previous"]
    (tmp_path / "config.yaml").write_text("a: 1\n")
    second = set_aside(tmp_path, (*TRAINING_OUTPUTS, "config.yaml"))  # the same second gets its own folder
    assert second is not None and second != first and (second / "config.yaml").read_text() == "a: 1\n"


def test_a_checkpoint_that_does_not_fit_the_model_is_a_named_error(tmp_path: Path) -> None:
    from torch import nn

    first = Accelerator()
    first.prepare(nn.Linear(4, 2))
    save_checkpoint(first, tmp_path, TrainerState(step=1), keep=1)
    other = Accelerator()  # another run's model
    other.prepare(nn.Linear(8, 2))
    with pytest.raises(
        ResumeMismatchError,
        match=r"^cannot resume from .*step_1: its saved state does not fit this model or optimizer \(.*size "
        r"mismatch.*\)\. It was written by another run; start over with train\.resume=false",
    ):
        load_checkpoint(other, tmp_path / "step_1")
