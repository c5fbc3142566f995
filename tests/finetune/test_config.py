"""Recipe configs: YAML + overrides onto strict dataclasses; head, LoRA and data settings typed at load time."""

from __future__ import annotations

import pytest
import yaml

from backbones import config as strict
from finetune.config import ConfigError, RecipeConfig, from_dict, load_config, to_dict
from finetune.data.gtzan import GTZANConfig
from finetune.lora import LoraSettings


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: rating\nmodel:\n  backbone: cnn14.tiny\n  lora: {r: 8}\ntrain:\n  lr: 0.001\n")
    cfg = load_config(
        path, ["train.max_steps=7", "data.name=synthetic_piano", "train.lr=2e-4", "model.checkpoint="]
    )
    assert isinstance(cfg, RecipeConfig)
    assert cfg.task == "rating" and cfg.model.backbone == "cnn14.tiny" and cfg.model.lora == LoraSettings(r=8)
    assert (
        cfg.train.max_steps == 7
        and cfg.train.lr == pytest.approx(2e-4)
        and cfg.data.name == "synthetic_piano"
    )
    assert cfg.model.checkpoint is None


def test_the_one_strict_config_system_is_re_exported():
    assert ConfigError is strict.ConfigError and from_dict is strict.from_dict and to_dict is strict.to_dict


def test_unknown_keys_and_bad_types_are_rejected(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^unknown key\(s\) train\.learning_rate; TrainConfig takes: batch_size"
    ):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match=r"^train\.max_steps: expected int, got 'many'$"):
        load_config(None, ["train.max_steps=many"])
    with pytest.raises(
        ConfigError, match=r"^unknown key\(s\) tsak \(did you mean 'task'\?\); RecipeConfig takes"
    ):
        load_config(None, ["tsak=genre"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["train.max_steps"])
    with pytest.raises(
        ConfigError, match=r"^train.mixed_precision must be 'no', 'bf16' or 'fp16', got 'fp8'$"
    ):
        load_config(None, ["train.mixed_precision=fp8"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="could not read config"):
        load_config(bad)


def test_head_and_lora_settings_are_typed_when_the_config_loads():
    cfg = load_config(None, ["model.head=mlp", "model.head_config={hidden_sizes: [64], dropout: '1e-1'}"])
    assert cfg.model.head_config == {"hidden_sizes": (64,), "dropout": 0.1}
    with pytest.raises(
        ConfigError,
        match=r"^unknown key\(s\) model\.head_config\.hiden_sizes \(did you mean 'hidden_sizes'\?\); "
        r"MLPConfig takes: activation, ",
    ):
        load_config(None, ["model.head=mlp", "model.head_config.hiden_sizes=[64]"])
    with pytest.raises(
        ConfigError, match=r"^model\.head_config\.hidden_sizes\[0\]: expected int, got 'wide'$"
    ):
        load_config(None, ["model.head=mlp", "model.head_config.hidden_sizes=[wide]"])
    with pytest.raises(ConfigError, match=r"^model\.head_config: dropout must be in \[0, 1\), got 1\.5$"):
        load_config(None, ["model.head_config.dropout=1.5"])
    # the count and the names of the outputs are not head settings here: they come from model / the data set
    with pytest.raises(
        ConfigError, match=r"^model\.head_config\.num_outputs: set model\.num_outputs instead$"
    ):
        load_config(None, ["model.head_config.num_outputs=3"])
    with pytest.raises(
        ConfigError, match=r"^model\.head_config\.labels: the output names come from the data set$"
    ):
        load_config(None, ["model.head_config.labels=[a, b]"])
    with pytest.raises(
        ConfigError,
        match=r"^model\.head: unknown head 'mpl' \(did you mean 'mlp'\?\); known: attention, crnn",
    ):
        load_config(None, ["model.head=mpl"])
    with pytest.raises(ConfigError, match=r"^model\.num_outputs must be a positive integer, got 0$"):
        load_config(None, ["model.num_outputs=0"])

    assert load_config(None, ["model.lora={r: 4, targets: qkv}"]).model.lora == LoraSettings(
        r=4, targets="qkv"
    )
    with pytest.raises(
        ConfigError,
        match=r"^unknown key\(s\) model\.lora\.rank; LoraSettings takes: alpha, dropout, r, targets$",
    ):
        load_config(None, ["model.lora={rank: 8}"])
    with pytest.raises(ConfigError, match=r"^model\.lora: LoRA rank r must be a positive integer, got 0$"):
        load_config(None, ["model.lora.r=0"])


def test_data_keys_are_flat_checked_against_the_data_set_and_written_back_flat():
    cfg = load_config(
        None, ["data.name=gtzan", "data.root=/data/gtzan", "data.split=random", "data.n_folds=5"]
    )
    assert isinstance(cfg.data, GTZANConfig) and (cfg.data.root, cfg.data.n_folds) == ("/data/gtzan", 5)
    with pytest.raises(
        ConfigError, match=r"^unknown key\(s\) data\.rooot \(did you mean 'root'\?\); GTZANConfig"
    ):
        load_config(None, ["data.name=gtzan", "data.rooot=/data/gtzan"])
    with pytest.raises(ConfigError, match=r"^data\.name: unknown data set 'gtzn' \(did you mean 'gtzan'\?\)"):
        load_config(None, ["data.name=gtzn"])
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) data\.options\b.*; GTZANConfig takes"):
        load_config(None, ["data.name=gtzan", "data.options={on_error: raise}"])  # gone: keys are flat

    saved = to_dict(cfg)
    assert saved["data"]["root"] == "/data/gtzan" and "options" not in saved["data"]
    assert saved["model"]["lora"] is None and saved["train"]["lr"] == cfg.train.lr
    assert from_dict(RecipeConfig, yaml.safe_load(yaml.safe_dump(saved))) == cfg


def test_a_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(
        None,
        [
            "model.head=rating",
            "model.num_outputs=19",
            "model.head_config={hidden_sizes: [32], label_range: [0, 1]}",
            "model.lora={r: 2, targets: [qkv]}",
            "data.name=synthetic_piano",
            "data.augment={gain: {min_db: -6, max_db: 6}}",
        ],
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["model"]["head_config"] == {
        "hidden_sizes": [32],
        "label_range": [0.0, 1.0],
    }
