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
from heads import MULTI_LABEL, RATING, SINGLE_LABEL, list_heads

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"
ALL_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
SCRATCH = [p for p in ALL_CONFIGS if "_scratch_" in p.name]  # random init, your own data
CONFIGS = [p for p in ALL_CONFIGS if p.name != DEMO_CONFIG and p not in SCRATCH]  # the grid
BACKBONES = {"ast": "ast.audioset", "passt": "passt_s.audioset_swa", "cnn14": "cnn14.audioset_32k"}
MODES = ("linear", "lora", "full")
TAGGING_DATA = {"jamendo": "mtg_jamendo", "mtat": "magnatagatune"}  # the last name field -> data.name
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
            expected |= {f"tagging_{bb}_{mode}_{data}" for data in TAGGING_DATA}
    assert {p.stem for p in CONFIGS} == expected
    assert {p.name for p in ALL_CONFIGS} - {p.name for p in CONFIGS} == {
        "demo.yaml",
        "genre_scratch_cnn14.yaml",
        "piano_scratch_cnn14.yaml",
    }
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

    assert cfg.model.num_outputs is None  # the count comes from the data set
    if cfg.task == "genre":
        assert cfg.model.head == "linear" and cfg.train.best_metric == "accuracy"
    elif cfg.task == "tagging":
        assert (cfg.model.head, cfg.model.head_config["multi_label"]) == ("linear", True)
        assert cfg.train.best_metric == "map"
        # the linear probe trains on cached embeddings; the others mix clips and their tags
        assert cfg.data.cache_embeddings == (mode == "linear") and (cfg.model.mixup is None) == (
            mode == "linear"
        )
    else:
        assert cfg.model.head == "rating" and cfg.train.best_metric == "mean_r"

    if parts["synthetic"]:
        assert cfg.data.name == {"genre": "synthetic_genres", "piano": "synthetic_piano"}[cfg.task]
        assert cfg.model.checkpoint is None
        assert cfg.train.mixed_precision == "no"
    else:
        data_name = TAGGING_DATA.get(parts["fold"]) if cfg.task == "tagging" else None
        assert cfg.data.name == (data_name or {"genre": "gtzan", "piano": "percepiano"}[cfg.task])
        assert cfg.model.checkpoint == "pretrained"
        assert cfg.train.mixed_precision == "bf16"
        assert cfg.data.root is None  # the placeholder the user fills in
        if cfg.task == "genre":
            assert cfg.data.split == "fault_filtered"
        elif cfg.task == "piano":
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
        num_outputs={"genre": 10, "piano": 19, "tagging": 50}[cfg.task],  # what the data sets give
        lora=cfg.model.lora,
        freeze=cfg.model.freeze,
        backbone_overrides=cfg.model.backbone_overrides or None,
        spec_augment=cfg.model.spec_augment,
        mixup=cfg.model.mixup,
        specmix=cfg.model.specmix,
        **cfg.model.head_config,
    )
    assert (
        model.task is {"genre": SINGLE_LABEL, "piano": RATING, "tagging": MULTI_LABEL}[cfg.task]
    )  # the data's task
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


@pytest.mark.parametrize("path", SCRATCH, ids=[p.stem for p in SCRATCH])
def test_scratch_configs_carry_the_settings_that_train_from_random_init(path: Path) -> None:
    cfg = load_config(path)
    demo = load_config(CONFIG_DIR / DEMO_CONFIG)
    assert path.stem == f"{cfg.task}_scratch_cnn14" and cfg.train.output_dir == f"runs/{path.stem}"
    assert (cfg.model.backbone, cfg.model.checkpoint, cfg.model.freeze) == ("cnn14.tiny", None, "none")
    assert (
        cfg.model.backbone_overrides
        == demo.model.backbone_overrides
        == {"dropout": 0.0, "embed_dropout": 0.1}
    )
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.layer_decay) == (demo.train.lr, 0.0, 1.0)
    assert cfg.data.crop_seconds == demo.data.crop_seconds and cfg.model.num_outputs is None
    assert cfg.data.crops_per_track > 1 and cfg.data.eval_crops > 1  # many windows of each long track
    assert cfg.data.name == {"genre": "manifest", "piano": "percepiano"}[cfg.task]
    key = {"genre": "data.labels", "piano": "data.root"}[cfg.task]
    with pytest.raises(ValueError, match=f"needs {key}: .*pass {key}=/path/to"):
        DATASETS[cfg.data.name](cfg.data, SR)


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
