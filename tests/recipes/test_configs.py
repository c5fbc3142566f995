"""Every recipe config loads onto the typed dataclasses and names registered parts; its file name says what it
is; the real-data builders it relies on turn a miniature data tree into train/validation/test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from backbones import list_backbones
from finetune.config import ConfigError, RecipeConfig, load_config
from finetune.model import build_model
from finetune.optim import param_groups
from finetune.recipe import DATASETS, TaskData
from heads import GTZAN_GENRES, PERCEPIANO_DIMENSIONS, RATING, SINGLE_LABEL, list_heads
from tests.audio_signals import noise

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
BACKBONES = {"ast": "ast.audioset", "passt": "passt_s.audioset_swa", "cnn14": "cnn14.audioset_32k"}
MODES = ("linear", "lora", "full")
SR = 16000


def _parts(path: Path) -> dict[str, str | None]:
    """``<task>_[synthetic_]<backbone>_<mode>[_<fold>]`` -> its fields."""
    words = path.stem.split("_")
    task, synthetic = words[0], words[1] == "synthetic"
    rest = words[2:] if synthetic else words[1:]
    return {
        "task": task,
        "synthetic": "yes" if synthetic else None,
        "backbone": rest[0],
        "mode": rest[1],
        "fold": rest[2] if len(rest) > 2 else None,
    }


def test_the_config_grid_is_complete() -> None:
    expected = set()
    for bb in BACKBONES:
        for mode in MODES:
            expected |= {f"genre_{bb}_{mode}", f"genre_synthetic_{bb}_{mode}", f"piano_synthetic_{bb}_{mode}"}
            expected |= {f"piano_{bb}_{mode}_piece", f"piano_{bb}_{mode}_performer"}
    assert {p.stem for p in CONFIGS} == expected


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_matches_its_name(path: Path) -> None:
    cfg = load_config(path)
    parts = _parts(path)
    assert isinstance(cfg, RecipeConfig)
    # every key of the file made it onto the dataclasses (unknown keys would have raised)
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {"task", "model", "data", "train"}
    for section in ("model", "data", "train"):
        for key, value in raw[section].items():
            assert getattr(getattr(cfg, section), key) == value, f"{section}.{key}"

    assert cfg.task == parts["task"]
    assert cfg.model.backbone == BACKBONES[parts["backbone"]]
    assert cfg.model.backbone in list_backbones()
    assert cfg.model.head in list_heads()
    assert cfg.data.name in DATASETS
    assert cfg.train.output_dir == f"runs/{path.stem}"

    mode = parts["mode"]
    assert cfg.model.freeze == {"linear": "backbone", "lora": "lora", "full": "none"}[mode]
    assert (cfg.model.lora or {}).get("r") == (8 if mode == "lora" else None)
    assert cfg.train.layer_decay == (0.75 if mode == "full" else 1.0)
    assert 1e-5 <= cfg.train.lr <= (1e-4 if mode == "full" else 1e-3)

    if cfg.task == "genre":
        assert (cfg.model.head, cfg.model.num_outputs) == ("linear", 10)
        assert cfg.train.best_metric == "accuracy"
    else:
        assert (cfg.model.head, cfg.model.num_outputs) == ("rating", 19)
        assert cfg.train.best_metric == "mean_r"

    if parts["synthetic"]:
        assert cfg.data.name == {"genre": "synthetic_genres", "piano": "synthetic_piano"}[cfg.task]
        assert cfg.model.checkpoint is None
        assert cfg.train.mixed_precision == "no"
    else:
        assert cfg.data.name == {"genre": "gtzan", "piano": "percepiano"}[cfg.task]
        assert cfg.model.checkpoint == "pretrained"
        assert cfg.train.mixed_precision == "bf16"
        assert cfg.data.root is None  # the placeholder the user fills in
        if cfg.task == "genre":
            assert cfg.data.split == "fault_filtered"
        else:
            assert cfg.data.fold == parts["fold"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_model_section_builds_on_the_tiny_variant(path: Path) -> None:
    """The head, LoRA, freeze and backbone-override settings are accepted by the library (on the family's
    random-init tiny variant, so that the test stays fast)."""
    cfg = load_config(path)
    tiny = cfg.model.backbone.split(".")[0] + ".tiny"
    model = build_model(
        tiny,
        head=cfg.model.head,
        num_outputs=cfg.model.num_outputs,
        lora=cfg.model.lora,
        freeze=cfg.model.freeze,
        backbone_overrides=cfg.model.backbone_overrides or None,
        **cfg.model.head_config,
    )
    assert model.task is {"genre": SINGLE_LABEL, "piano": RATING}[cfg.task]  # the data set's task
    model.task.check_metric(cfg.train.best_metric)  # raises on a metric the task does not have
    groups = param_groups(model, cfg.train.lr, cfg.train.weight_decay, cfg.train.layer_decay)
    trainable = {id(p) for g in groups for p in g["params"]}
    backbone_trainable = [n for n, p in model.backbone.named_parameters() if id(p) in trainable]
    if cfg.model.freeze == "backbone":
        assert backbone_trainable == []
    elif cfg.model.freeze == "lora":
        assert backbone_trainable and all(".lora_" in n for n in backbone_trainable)
    else:
        assert len(backbone_trainable) == len(list(model.backbone.parameters()))
        lrs = [g["lr"] for g in groups]
        assert min(lrs) < cfg.train.lr * 0.75 and max(lrs) == pytest.approx(cfg.train.lr)


def test_unknown_keys_and_wrong_types_are_rejected() -> None:
    path = CONFIG_DIR / "genre_passt_lora.yaml"
    with pytest.raises(ConfigError, match=r"config\.train: unknown key\(s\) learning_rate"):
        load_config(path, ["train.learning_rate=1e-3"])
    with pytest.raises(ConfigError, match=r"config\.train\.max_steps: expected int, got 'many'"):
        load_config(path, ["train.max_steps=many"])
    # YAML 1.1 would read a bare `no` as false; an override means the string
    assert load_config(path, ["train.mixed_precision=no"]).train.mixed_precision == "no"


@pytest.mark.parametrize(
    ("config", "key"),
    [("genre_cnn14_linear", "data.root"), ("piano_cnn14_linear_piece", "data.root")],
)
def test_real_data_placeholders_fail_clearly(config: str, key: str) -> None:
    cfg = load_config(CONFIG_DIR / f"{config}.yaml")
    with pytest.raises(ValueError, match=f"needs {key}: .*pass {key}=/path/to"):
        DATASETS[cfg.data.name](cfg.data, SR)


# ------------------------------------------------------------------------------- builders on miniature trees


def _wav(path: Path, seconds: float, seed: int, sr: int = 22050) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, noise(1, round(seconds * sr), seed=seed)[0].numpy(), sr, subtype="PCM_16")


def _sizes(data: TaskData) -> dict[str, int]:
    return {k: len(v) for k, v in data.splits.items()}


def test_gtzan_builder(tmp_path: Path) -> None:
    root, lists = tmp_path / "gtzan", tmp_path / "lists"
    lists.mkdir()
    files = {
        "train_filtered.txt": range(0, 2),
        "valid_filtered.txt": range(2, 3),
        "test_filtered.txt": range(3, 4),
    }
    for k, genre in enumerate(GTZAN_GENRES):
        for i in range(4):
            _wav(root / "genres" / genre / f"{genre}.{i:05d}.wav", 0.25, seed=10 * k + i)
    for name, idx in files.items():
        (lists / name).write_text("".join(f"{g}/{g}.{i:05d}.wav\n" for g in GTZAN_GENRES for i in idx))
    cfg = load_config(CONFIG_DIR / "genre_passt_lora.yaml", [f"data.root={root}", f"data.splits_dir={lists}"])
    data = DATASETS["gtzan"](cfg.data, 32000)
    assert (data.task, data.names) == (SINGLE_LABEL, tuple(GTZAN_GENRES))
    assert _sizes(data) == {"train": 20, "validation": 10, "test": 10}
    row = data.splits["test"][0]
    assert row["sampling_rate"] == 32000  # decoded at the backbone's rate
    assert abs(row["audio"].shape[-1] - 8000) <= 1
    assert list(data.splits["test"].with_format(None)["name"]) == [f"{g}.00003" for g in GTZAN_GENRES]

    kfold = load_config(
        CONFIG_DIR / "genre_passt_lora.yaml",
        [f"data.root={root}", "data.split=kfold", "data.options={n_folds: 4}"],
    )
    with pytest.raises(ValueError, match=r"gave the splits \['test', 'train'\].*missing: validation"):
        DATASETS["gtzan"](kfold.data, 32000)
    bad = load_config(CONFIG_DIR / "genre_passt_lora.yaml", [f"data.root={root}", "data.options={n_fold: 5}"])
    with pytest.raises(ValueError, match=r"data.options has key\(s\) n_fold that load_gtzan does not take"):
        DATASETS["gtzan"](bad.data, 32000)


def test_percepiano_builder(tmp_path: Path) -> None:
    """Audio named like the segments; labels found in data.root under the official file name."""
    root = tmp_path / "percepiano"
    rng = np.random.default_rng(0)
    labels = {}
    for player in range(12):
        for seg in (1, 2):
            name = f"Piece{player % 3}_8bars_{player + 1}_{seg}"
            labels[name] = [*rng.uniform(0.2, 1.0, len(PERCEPIANO_DIMENSIONS)).round(4).tolist(), player]
            _wav(root / f"{name}.wav", 0.25, seed=100 * player + seg)
    (root / "label_2round_mean_reg_19_with0_rm_highstd0.json").write_text(json.dumps(labels))
    cfg = load_config(CONFIG_DIR / "piano_cnn14_lora_performer.yaml", [f"data.root={root}"])
    data = DATASETS["percepiano"](cfg.data, 32000)
    assert (data.task, data.names) == (RATING, tuple(PERCEPIANO_DIMENSIONS))
    assert sum(_sizes(data).values()) == 24 and min(_sizes(data).values()) > 0
    players = {k: set(v.with_format(None)["player"]) for k, v in data.splits.items()}
    assert not (players["train"] & players["validation"] or players["train"] & players["test"])
    row = data.splits["train"][0]
    expected = labels[row["name"]][:19]
    assert np.allclose(row["ratings"], expected, atol=1e-6) and row["sampling_rate"] == 32000


def test_folder_and_manifest_builders(tmp_path: Path) -> None:
    for k, cls in enumerate(("bells", "drums", "voice")):
        for i in range(10):
            _wav(tmp_path / "tree" / cls / f"{cls}{i}.wav", 0.2, seed=10 * k + i)
    cfg = load_config(None, ["data.name=folder", f"data.root={tmp_path / 'tree'}"])
    data = DATASETS["folder"](cfg.data, SR)
    assert (data.task, data.names) == (SINGLE_LABEL, ("bells", "drums", "voice"))
    assert sum(_sizes(data).values()) == 30 and min(_sizes(data).values()) >= 3

    rows = [f"tree/{c}/{c}{i}.wav,{c},{i / 10},{1 - i / 10}" for c in ("bells", "drums") for i in range(10)]
    (tmp_path / "m.csv").write_text("path,label,bright,warm\n" + "\n".join(rows) + "\n")
    ratings = load_config(
        None,
        [
            "data.name=manifest",
            f"data.labels={tmp_path / 'm.csv'}",
            "data.options={label_column: null, rating_columns: [bright, warm]}",
        ],
    )
    data = DATASETS["manifest"](ratings.data, SR)
    assert (data.task, data.names) == (RATING, ("bright", "warm"))
    row = data.splits["train"][0]
    assert math.isclose(float(row["ratings"][0]) + float(row["ratings"][1]), 1.0, abs_tol=1e-6)
    labels = load_config(None, ["data.name=manifest", f"data.labels={tmp_path / 'm.csv'}"])
    assert DATASETS["manifest"](labels.data, SR).names == ("bells", "drums")
    both = load_config(
        None,
        ["data.name=manifest", f"data.labels={tmp_path / 'm.csv'}", "data.options={rating_columns: [warm]}"],
    )
    with pytest.raises(ValueError, match="loaded with labels and ratings; a recipe learns one of them"):
        DATASETS["manifest"](both.data, SR)
