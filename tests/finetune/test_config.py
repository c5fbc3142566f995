"""Recipe configs: YAML + overrides onto dataclasses that reject unknown keys and wrong types."""

from __future__ import annotations

import pytest

from finetune.config import ConfigError, RecipeConfig, load_config


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: rating\nmodel:\n  backbone: cnn14.tiny\n  lora: {r: 8}\ntrain:\n  lr: 0.001\n")
    cfg = load_config(path, ["train.max_steps=7", "data.name=synthetic_piano", "train.lr=2e-4", "model.checkpoint="])
    assert isinstance(cfg, RecipeConfig)
    assert cfg.task == "rating" and cfg.model.backbone == "cnn14.tiny" and cfg.model.lora == {"r": 8}
    assert cfg.train.max_steps == 7 and cfg.train.lr == pytest.approx(2e-4) and cfg.data.name == "synthetic_piano"
    assert cfg.model.checkpoint is None


def test_unknown_keys_and_bad_types_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.train: unknown key\(s\) learning_rate"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match=r"config\.train\.max_steps: expected int, got 'many'"):
        load_config(None, ["train.max_steps=many"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["train.max_steps"])
    with pytest.raises(ConfigError, match="mixed_precision"):
        load_config(None, ["train.mixed_precision=fp8"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="could not read config"):
        load_config(bad)
