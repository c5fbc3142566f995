"""Every recipe config (the grid and the demo's) loads onto the typed dataclasses, names registered parts and
builds its model; a grid config's file name says what it is; real-data placeholders fail clearly. (The data set
builders are tested next to their loaders, in ``tests/finetune/data``.)"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from backbones import list_backbones
from finetune.config import ConfigError, RecipeConfig, load_config, to_dict
from finetune.data.registry import DATASETS
from finetune.demo import DEMO_CONFIG
from finetune.model import build_model
from finetune.optim import param_groups
from heads import RATING, SINGLE_LABEL, list_heads

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"
ALL_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
CONFIGS = [p for p in ALL_CONFIGS if p.name != DEMO_CONFIG]  # the grid
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
            expected |= {f"piano_{bb}_{mode}_excerpt", f"piano_{bb}_{mode}_performer"}
    assert {p.stem for p in CONFIGS} == expected
    assert {p.name for p in ALL_CONFIGS} - {p.name for p in CONFIGS} == {"demo.yaml"}
    # the demo's config ships in the recipes package
    assert (files("recipes") / "configs" / DEMO_CONFIG).read_text() == (CONFIG_DIR / DEMO_CONFIG).read_text()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_matches_its_name(path: Path) -> None:
    cfg = load_config(path)
    parts = _parts(path)
    assert isinstance(cfg, RecipeConfig)
    # every key of the file made it onto the dataclasses (unknown keys would have raised) and is written back
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {"task", "model", "data", "train"}
    saved = to_dict(cfg)
    for section in ("model", "data", "train"):
        for key, value in raw[section].items():
            assert saved[section][key] == value, f"{section}.{key}"

    assert cfg.task == parts["task"]
    assert cfg.model.backbone == BACKBONES[parts["backbone"]]
    assert cfg.model.backbone in list_backbones()
    assert cfg.model.head in list_heads()
    assert isinstance(cfg.data, DATASETS[cfg.data.name].config_cls)
    assert cfg.train.output_dir == f"runs/{path.stem}"

    mode = parts["mode"]
    assert cfg.model.freeze == {"linear": "backbone", "lora": "lora", "full": "none"}[mode]
    assert (cfg.model.lora.r if cfg.model.lora else None) == (8 if mode == "lora" else None)
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


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[p.stem for p in ALL_CONFIGS])
def test_model_section_builds_on_the_tiny_variant(path: Path) -> None:
    """The head, LoRA, freeze and backbone-override settings are accepted by the library (on the family's
    random-init tiny variant, so that the test stays fast)."""
    cfg = load_config(path)
    assert cfg.model.head in list_heads() and cfg.model.backbone in list_backbones()
    assert isinstance(cfg.data, DATASETS[cfg.data.name].config_cls)
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
    model.task.check_metric(cfg.train.best_metric or model.task.default_metric)  # raises on a foreign metric
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
        assert max(lrs) == pytest.approx(cfg.train.lr)
        if cfg.train.layer_decay < 1.0:
            assert min(lrs) < cfg.train.lr * cfg.train.layer_decay
        else:
            assert min(lrs) == max(lrs)


def test_unknown_keys_and_wrong_types_are_rejected() -> None:
    path = CONFIG_DIR / "genre_passt_lora.yaml"
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) train\.learning_rate; TrainConfig takes"):
        load_config(path, ["train.learning_rate=1e-3"])
    with pytest.raises(ConfigError, match=r"^train\.max_steps: expected int, got 'many'$"):
        load_config(path, ["train.max_steps=many"])
    with pytest.raises(
        ConfigError, match=r"^unknown key\(s\) data\.rooot \(did you mean 'root'\?\); GTZANConfig"
    ):
        load_config(path, ["data.rooot=/data/gtzan"])
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) model\.lora\.rank; LoraSettings takes"):
        load_config(path, ["model.lora.rank=4"])
    # YAML 1.1 would read a bare `no` as false; an override means the string
    assert load_config(path, ["train.mixed_precision=no"]).train.mixed_precision == "no"


@pytest.mark.parametrize(
    ("config", "key"),
    [("genre_cnn14_linear", "data.root"), ("piano_cnn14_linear_excerpt", "data.root")],
)
def test_real_data_placeholders_fail_clearly(config: str, key: str) -> None:
    cfg = load_config(CONFIG_DIR / f"{config}.yaml")
    with pytest.raises(ValueError, match=f"needs {key}: .*pass {key}=/path/to"):
        DATASETS[cfg.data.name](cfg.data, SR)
