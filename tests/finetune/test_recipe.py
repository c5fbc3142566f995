"""``run_recipe``'s own decisions. Before any work: :func:`validate_config` (backbone, checkpoint source, output
directory) and the run directory (resume only with matching settings, ``config.yaml`` never overwritten before that
check, ``train.resume=false`` moving the old run aside). Then: settings fitted to the machine (one line each), the
output count from the data (a conflicting model.num_outputs names both numbers before anything trains), and which
files the decode cache takes. The end-to-end runs are in ``tests/recipes/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from datasets import Dataset, DatasetDict

import finetune.recipe as recipe
from backbones.config import ConfigError
from finetune.checkpointing import (
    STATE_FILE,
    ResumeMismatchError,
    TrainerState,
    write_state,
)
from finetune.config import RecipeConfig, load_config, to_dict
from finetune.data.decoded import DecodedCache
from finetune.data.registry import TaskData
from finetune.train import TrainConfig
from heads.tasks import SINGLE_LABEL


def _config(out: Path, *overrides: str) -> RecipeConfig:
    return load_config(None, ["model.backbone=cnn14.tiny", f"train.output_dir={out}", *overrides])


class _Stop(Exception):
    """Raised where the data set would be built: everything before it has happened."""


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(name: str):
        def build(config, sample_rate):
            raise _Stop

        return build

    monkeypatch.setattr(recipe, "get_dataset", stop)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.backbone=cnn14.tinyy"], "model.backbone: unknown backbone 'cnn14.tinyy' (did you mean 'cnn14.tiny'?); known: ast.audioset"),
        (["model.checkpoint=/nonexistent.pth"], "model.checkpoint: checkpoint file /nonexistent.pth for cnn14.tiny does not exist; check the path"),
        (["model.checkpoint=pretrained"], "model.checkpoint: cnn14.tiny has no released weights; pass a checkpoint file instead"),
        (["model.checkpoint=not a/hub id"], "model.checkpoint: checkpoint 'not a/hub id' for cnn14.tiny is neither an existing file/directory, a URL nor a hub id"),
    ],
)  # fmt: skip
def test_validate_config_names_the_key_to_fix(tmp_path, no_data, overrides, message) -> None:
    cfg = _config(tmp_path / "run", *overrides)
    with pytest.raises(ConfigError) as info:
        recipe.run_recipe(cfg)
    assert str(info.value).startswith(message)
    assert not (tmp_path / "run").exists()


def test_validate_config_checks_the_output_directory(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(
            ConfigError, match=rf"^train.output_dir: {tmp_path / 'file'} exists and is not a directory"
        ):
            recipe.validate_config(_config(out))
    recipe.validate_config(_config(tmp_path / "new" / "deeper"))  # to be created: fine
    recipe.validate_config(_config(tmp_path, "model.checkpoint=MIT/ast-finetuned-audioset-10-10-0.4593"))


def _checkpoint_of(cfg: RecipeConfig, step: int = 2) -> Path:
    """A run directory as a run of ``cfg`` leaves it (config.yaml and a checkpoint's state)."""
    out = Path(cfg.train.output_dir)
    path = out / "checkpoints" / f"step_{step}"
    path.mkdir(parents=True)
    settings = cfg.train.resume_settings(recipe.run_settings(cfg))
    write_state(path / STATE_FILE, TrainerState(step=step, settings=settings))
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def test_settings_that_only_change_how_fast_data_is_read_are_left_out_of_the_resume_check() -> None:
    cfg = load_config(None, ["data.name=percepiano", "data.root=/data/pp", "data.render_workers=4"])
    data = recipe.run_settings(cfg)["data"]
    assert "decode_cache" not in data and "render_workers" not in data and "progress" not in data
    assert (data["fold"], data["root"], data["seed"]) == ("performer", "/data/pp", 0)


def test_the_data_set_is_built_with_the_runs_progress_switch(tmp_path, monkeypatch) -> None:
    seen = []

    def record(name: str):
        def build(config, sample_rate):
            seen.append(config.progress)
            raise _Stop

        return build

    monkeypatch.setattr(recipe, "get_dataset", record)
    for switch in ("true", "false"):
        with pytest.raises(_Stop):
            recipe.run_recipe(_config(tmp_path / switch, f"train.progress={switch}"))
    assert seen == [True, False]


def test_a_changed_setting_stops_the_run_before_the_config_is_overwritten(tmp_path, no_data) -> None:
    old = _config(tmp_path, "train.lr=1e6")
    _checkpoint_of(old)
    saved = (tmp_path / "config.yaml").read_bytes()
    with pytest.raises(
        ResumeMismatchError,
        match=r"differ from the run that wrote it:\n  model\.head: 'linear' -> 'mlp'\n  train\.lr: 1000000\.0 -> "
        r"0\.0001\nResuming",
    ):
        recipe.run_recipe(_config(tmp_path, "train.lr=1e-4", "model.head=mlp"))
    assert (tmp_path / "config.yaml").read_bytes() == saved
    # what may change on resume does not stop it: the run goes on to build its data
    with pytest.raises(_Stop):
        recipe.run_recipe(
            _config(
                tmp_path,
                "train.lr=1e6",
                "train.eval_every=7",
                "train.progress=false",
                "data.decode_cache=all",
            )
        )
    assert load_config(tmp_path / "config.yaml").train.eval_every == 7


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["model.spec_augment={freq_masks: 1}"], "model.spec_augment: None -> {'freq_masks': 1, 'freq_width': [0, 24], "),
        (["model.mixup={alpha: 0.2}"], "model.mixup: None -> {'alpha': 0.2, 'num_classes': None, 'p': 1.0, "),
        (["model.specmix={p: 0.5}"], "model.specmix: None -> {'freq_bands': 2, "),
        (["model.head=hybrid", "model.descriptors=[audio]"], "model.descriptors: [] -> ['audio']\n  model.head: "),
        (["data.crops_per_track=4"], "data.crops_per_track: 1 -> 4\n"),
        (["data.augment={time_stretch: {}}"], "data.augment: {} -> {'time_stretch': {}}\n"),
    ],
)  # fmt: skip
def test_the_augmentation_descriptor_and_crop_settings_are_checked_on_resume(
    tmp_path, no_data, overrides, line
) -> None:
    _checkpoint_of(_config(tmp_path))
    with pytest.raises(ResumeMismatchError) as info:
        recipe.run_recipe(_config(tmp_path, *overrides))
    assert f"differ from the run that wrote it:\n  {line}" in str(info.value)
    with pytest.raises(_Stop):  # the same settings resume
        recipe.run_recipe(_config(tmp_path))


def test_resume_false_moves_the_old_run_and_its_config_aside_first(tmp_path, no_data) -> None:
    old = _config(tmp_path, "train.lr=1e6")
    _checkpoint_of(old)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1e18}\n')
    with pytest.raises(_Stop):
        recipe.run_recipe(_config(tmp_path, "train.lr=1e-4", "train.resume=false"))
    (previous,) = (tmp_path / "previous").iterdir()
    assert sorted(p.name for p in previous.iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl"]
    assert load_config(previous / "config.yaml").train.lr == 1e6
    assert load_config(tmp_path / "config.yaml").train.lr == 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "previous"]


def test_workers_are_capped_at_the_cores_and_bf16_needs_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipe, "_cores", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    said: list[str] = []
    config = TrainConfig(num_workers=4, mixed_precision="bf16")
    recipe.fit_to_machine(config, said.append)
    assert (config.num_workers, config.mixed_precision) == (2, "no")
    assert said == [
        "train.num_workers 4 -> 2: 2 CPU core(s) per process here",
        "train.mixed_precision bf16 -> no: no GPU here supports bf16",
    ]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes share the two cores
    config, said = TrainConfig(num_workers=2, mixed_precision="fp16"), []
    recipe.fit_to_machine(config, said.append)
    assert (config.num_workers, config.mixed_precision) == (1, "no") and len(said) == 2
    fine, said = TrainConfig(num_workers=1, mixed_precision="no"), []
    recipe.fit_to_machine(fine, said.append)
    assert said == [] and (fine.num_workers, fine.mixed_precision) == (1, "no")


@pytest.mark.usefixtures("one_thread")
def test_a_num_outputs_that_disagrees_with_the_data_names_both(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "model.backbone=cnn14.tiny",
            "model.num_outputs=4",
            "data.n_per_class=3",
            "data.clip_seconds=0.5",
            f"train.output_dir={tmp_path}",
            "train.progress=false",
        ],
    )
    with pytest.raises(
        ConfigError,
        match=r"^model\.num_outputs is 4 but data set 'synthetic_genres' has 10 outputs \(blues, classical, .*\); "
        r"leave model\.num_outputs out to take the count from the data \(or set it to 10\)$",
    ):
        recipe.run_recipe(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_the_decode_cache_takes_the_files_its_mode_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSICFT_CACHE", str(tmp_path / "cache"))
    tone = np.sin(np.arange(8000) / 3).astype(np.float32)
    sf.write(tmp_path / "a.wav", tone, 16000)
    sf.write(tmp_path / "b.mp3", tone, 16000, format="MP3")
    (tmp_path / "c.wav").write_bytes(b"")
    split = Dataset.from_dict(
        {"path": [str(tmp_path / n) for n in ("a.wav", "b.mp3", "c.wav")], "label": [0, 1, 0]}
    )
    data = TaskData(
        DatasetDict({"train": split, "validation": split.select([]), "test": split.select([])}),
        SINGLE_LABEL,
        ("x", "y"),
    )
    said: list[str] = []
    off = load_config(None, [f"train.output_dir={tmp_path}"])
    assert recipe._decode_cache(off, data, 8000, said.append, progress=False) is None and said == []
    slow = load_config(None, ["data.decode_cache=slow_seek"])
    cache = recipe._decode_cache(slow, data, 8000, said.append, progress=False)
    assert isinstance(cache, DecodedCache) and cache.root == tmp_path / "cache" / "decoded" / "8000hz"
    assert [p in cache for p in split["path"][:2]] == [False, True]
    assert said == [f"decode cache {cache.root}: 1 file(s) wanted, 1 decoded now, 1 failed"]  # c.wav is empty
    recipe._decode_cache(
        load_config(None, ["data.decode_cache=all"]), data, 8000, said.append, progress=False
    )
    assert said[-1] == f"decode cache {cache.root}: 3 file(s) wanted, 1 decoded now, 1 failed"
    assert str(tmp_path / "a.wav") in cache


def test_calibrate_is_refused_for_ratings_before_training_and_typos_are_named(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "task=piano",
            "model.backbone=cnn14.tiny",
            "model.head=rating",
            "data={name: synthetic_piano, n_items: 12, clip_seconds: 0.5}",
            "train.best_metric=mean_r",
            "calibrate=temperature",
            f"train.output_dir={tmp_path}",
            "train.progress=false",
        ],
    )
    with pytest.raises(
        ConfigError, match=r"^calibrate: calibration applies to classification tasks, not 'rating'$"
    ):
        recipe.run_recipe(cfg)
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(
        ConfigError, match=r"^calibrate must be one of temperature, vector or null, got 'platt'$"
    ):
        load_config(None, ["calibrate=platt"])
