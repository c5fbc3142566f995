"""build_model / AudioModel: heads and outputs, features path, freeze modes, save/load round trips."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import backbones.base as base_module
from backbones import Backbone, BackboneOutput, PretrainedCfg, build_backbone
from backbones.base import register_backbone
from backbones.checkpoints import CheckpointMismatchError
from backbones.config import ConfigError
from finetune import AudioModel, build_model
from heads import GTZAN_GENRES, PERCEPIANO_DIMENSIONS
from tests.audio_signals import music

TINY = ["ast.tiny", "passt_s.tiny", "cnn14.tiny"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _base(name: str, **overrides) -> Backbone:
    torch.manual_seed(0)
    return build_backbone(name, **overrides)


def _wave(sample_rate: int, batch: int = 2, seconds: float = 2.0) -> torch.Tensor:
    return music(batch, int(seconds * sample_rate), sample_rate, seed=7)


def _trainable(model: AudioModel) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", TINY)
def test_classifier_and_rater_outputs(name: str) -> None:
    clf = build_model(name, head="mlp", num_outputs=10, hidden_sizes=[16])
    wave = _wave(clf.sample_rate)
    out = clf(wave, labels=torch.tensor([1, 9]))
    assert out.logits.shape == (2, 10) and out.ratings is None
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.pooled.shape == (2, clf.backbone.embed_dim)
    assert out.backbone_output.sequence.shape[0] == 2
    rater = build_model(name, head="rating", num_outputs=19)
    rated = rater(wave, labels=torch.rand(2, 19))
    assert rated.ratings.shape == (2, 19) and rated.logits is None
    assert rated.ratings.min() >= 0 and rated.ratings.max() <= 1
    assert rater.labels == PERCEPIANO_DIMENSIONS
    assert rater(wave).loss is None


@pytest.mark.parametrize("name", TINY)
def test_precomputed_features_give_the_waveform_outputs(name: str) -> None:
    model = build_model(name, head="crnn", num_outputs=4, hidden_size=8)
    wave = _wave(model.sample_rate)
    with torch.no_grad():
        frames = model.compute_features(wave)
        assert frames.dim() == 3 and frames.shape[0] == 2
        assert torch.equal(model(features=frames).logits, model(wave).logits)


def test_forward_needs_exactly_one_input() -> None:
    model = build_model("passt_s.tiny", num_outputs=2)
    wave = _wave(model.sample_rate)
    with pytest.raises(
        ValueError,
        match=r"pass exactly one of waveform \[B, N\], features \[B, n_mels, T\] or embeddings \[B, D\]",
    ):
        model(wave, features=model.compute_features(wave))
    with pytest.raises(ValueError, match="pass exactly one of waveform"):
        model()
    with pytest.raises(
        ValueError, match=r"features must be front-end frames \[B, n_mels, T\], got shape \(128, 50\)"
    ):
        model(features=torch.zeros(128, 50))


def test_labels_set_the_number_of_outputs_and_travel_with_the_model() -> None:
    model = build_model("passt_s.tiny", head="linear", labels=GTZAN_GENRES)
    assert model.head.config.num_outputs == 10 and model.labels == GTZAN_GENRES
    with pytest.raises(ValueError, match="head 'linear' needs num_outputs= \\(or labels=\\)"):
        build_model("passt_s.tiny", head="linear")
    with pytest.raises(
        ConfigError, match=r"^unknown key\(s\) hidden \(did you mean 'hidden_sizes'\?\); MLPConfig"
    ):
        build_model("passt_s.tiny", head="mlp", num_outputs=2, hidden=[3])
    with pytest.raises(ValueError, match="checkpoint and backbone_overrides apply to a backbone name"):
        build_model(_base("passt_s.tiny"), num_outputs=2, checkpoint="x.pt")


def test_freeze_modes_choose_what_trains() -> None:
    base = _base("passt_s.tiny")
    head = {f"head.{n}" for n, _ in build_model(copy.deepcopy(base), num_outputs=2).head.named_parameters()}
    everything = {f"backbone.{n}" for n, _ in base.named_parameters()} | head
    assert _trainable(build_model(copy.deepcopy(base), num_outputs=2, freeze="none")) == everything
    probe = build_model(copy.deepcopy(base), num_outputs=2, freeze="backbone")
    assert _trainable(probe) == head
    probe.train()
    assert probe.head.training and not any(m.training for m in probe.backbone.modules())
    last = build_model(copy.deepcopy(base), num_outputs=2, freeze="last_k:1")
    tail = {f"backbone.{n}" for n, _ in base.named_parameters() if n.startswith(("blocks.1.", "norm."))}
    assert len(tail) > 4 and _trainable(last) == tail | head
    with_lora = build_model(copy.deepcopy(base), num_outputs=2, lora={"r": 2}, freeze="last_k:1")
    lora_params = {n for n in _trainable(with_lora) if ".lora_" in n}
    assert (
        lora_params
        and {n.replace(".base_layer", "") for n in _trainable(with_lora) - lora_params} == tail | head
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"freeze": "last_k:9"}, r"needs an integer k in \[0, 2\] for passt_s.tiny, got '9'"),
        (
            {"freeze": "last_k"},
            "freeze must be one of 'none', 'backbone', 'last_k:<k>', 'lora'; got 'last_k'",
        ),
        ({"freeze": "head"}, "freeze must be one of"),
        ({"freeze": "lora"}, "freeze='lora' needs lora settings"),
        ({"freeze": "backbone", "lora": {"r": 2}}, "freeze='backbone' would freeze the LoRA adapters too"),
    ],
)
def test_bad_freeze_settings_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(_base("passt_s.tiny"), num_outputs=2, **kwargs)


def test_frozen_batchnorm_keeps_its_statistics_and_trainable_batchnorm_updates_them() -> None:
    base = _base("cnn14.tiny")
    wave = _wave(base.sample_rate)
    for freeze, should_change in (("lora", False), ("backbone", False), ("last_k:1", True), ("none", True)):
        model = build_model(
            copy.deepcopy(base), num_outputs=2, freeze=freeze, lora={"r": 2} if freeze == "lora" else None
        ).train()
        before = model.backbone.bn0.running_var.clone()
        stats = model.backbone.conv_block6.bn2.running_mean.clone()
        model(wave)
        stem_frozen = freeze != "none"
        assert torch.equal(model.backbone.bn0.running_var, before) == stem_frozen
        changed = not torch.equal(model.backbone.conv_block6.bn2.running_mean, stats)
        assert changed == should_change, freeze


@pytest.mark.parametrize(
    ("name", "head"), [("ast.tiny", "attention"), ("passt_s.tiny", "crnn"), ("cnn14.tiny", "rating")]
)
def test_save_and_load_round_trip_exactly(name: str, head: str, tmp_path: Path) -> None:
    model = build_model(
        _base(name), head=head, num_outputs=19 if head == "rating" else 3, lora={"r": 2}, freeze="last_k:1"
    )
    with torch.no_grad():  # move the adapters away from their zero initialisation
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.add_(0.1)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["backbone"]["name"] == name and config["head"]["name"] == head
    assert config["lora"] == {"r": 2, "alpha": 16.0, "dropout": 0.0, "targets": None}
    assert config["freeze"] == "last_k:1" and config["weights"] == "full"
    assert config["labels"] == list(model.labels)
    assert config["backbone"]["frontend"]["sample_rate"] == model.sample_rate and config["library_version"]
    loaded = AudioModel.from_pretrained(tmp_path / "m")
    assert not loaded.training and _trainable(loaded) == _trainable(model)
    wave = _wave(model.sample_rate)
    with torch.no_grad():
        a, b = model(wave), loaded(wave)
    field = "ratings" if head == "rating" else "logits"
    assert torch.equal(getattr(a, field), getattr(b, field))


def test_backbone_overrides_are_saved_and_rebuilt(tmp_path: Path) -> None:
    model = build_model("passt_s.tiny", num_outputs=2, backbone_overrides={"depth": 1, "patchout": (2, 1)})
    assert model.backbone.num_layers == 1
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["backbone"]["overrides"]
    assert saved == {"depth": 1, "patchout": [2, 1]}
    loaded = AudioModel.from_pretrained(tmp_path / "m")
    assert loaded.backbone.num_layers == 1 and loaded.backbone_overrides == {"depth": 1, "patchout": (2, 1)}


def test_adapter_directories_need_the_matching_base_backbone(tmp_path: Path) -> None:
    base = _base("passt_s.tiny")
    checkpoint = tmp_path / "base.pt"
    torch.save(base.state_dict(), checkpoint)
    model = build_model("passt_s.tiny", checkpoint=checkpoint, num_outputs=3, lora={"r": 2})
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_()
    model.save_pretrained(tmp_path / "a", adapter_only=True)
    loaded = AudioModel.from_pretrained(tmp_path / "a", base_checkpoint=checkpoint)
    wave = _wave(model.sample_rate)
    with torch.no_grad():
        assert torch.equal(loaded(wave).logits, model(wave).logits)
    with pytest.raises(ValueError, match="holds only adapter weights; pass the base backbone checkpoint"):
        AudioModel.from_pretrained(tmp_path / "a")
    other = tmp_path / "other.pt"
    torch.save(build_backbone("passt_s.tiny").state_dict(), other)  # same shapes, other weights
    with pytest.raises(ValueError, match="trained on different passt_s.tiny base weights"):
        AudioModel.from_pretrained(tmp_path / "a", base_checkpoint=other)
    with pytest.raises(
        ValueError, match=r"saved with different passt_s.tiny settings .* depth: saved 'default' vs given 1"
    ):
        AudioModel.from_pretrained(tmp_path / "a", backbone=_base("passt_s.tiny", depth=1))
    with pytest.raises(ValueError, match="saved with backbone 'passt_s.tiny', got 'ast.tiny'"):
        AudioModel.from_pretrained(tmp_path / "a", backbone=_base("ast.tiny"))
    narrow = tmp_path / "narrow.pt"
    torch.save(_base("passt_s.tiny", embed_dim=16, num_heads=2).state_dict(), narrow)
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        AudioModel.from_pretrained(tmp_path / "a", base_checkpoint=narrow)


def test_save_options_and_missing_files_give_clear_errors(tmp_path: Path) -> None:
    model = build_model("passt_s.tiny", num_outputs=2)
    with pytest.raises(ValueError, match="merge_lora=True but the model has no LoRA adapters"):
        model.save_pretrained(tmp_path / "m", merge_lora=True)
    with pytest.raises(ValueError, match="merge_lora and adapter_only exclude each other"):
        model.save_pretrained(tmp_path / "m", merge_lora=True, adapter_only=True)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        AudioModel.from_pretrained(tmp_path / "nothing")
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has a config.json but no model.safetensors"):
        AudioModel.from_pretrained(tmp_path / "m")


def test_full_size_passt_with_lora_round_trips_through_an_adapter_save(tmp_path: Path) -> None:
    """The documented usage, on the full-size PaSST config with random weights saved as a checkpoint file."""
    checkpoint = tmp_path / "passt_random.pt"
    torch.save(_base("passt_s.audioset_swa").state_dict(), checkpoint)
    model = build_model(
        "passt_s.audioset_swa",
        checkpoint=checkpoint,
        head="linear",
        num_outputs=10,
        lora={"r": 8},
        freeze="lora",
    )
    wave = _wave(model.sample_rate, batch=1, seconds=1.0)
    with torch.no_grad():
        out = model(wave, labels=torch.tensor([3]))
    assert out.logits.shape == (1, 10) and torch.isfinite(out.loss)
    model.save_pretrained(tmp_path / "x", adapter_only=True)
    assert (tmp_path / "x" / "adapter.safetensors").stat().st_size < checkpoint.stat().st_size / 100
    same = AudioModel.from_pretrained(tmp_path / "x", base_checkpoint=checkpoint)
    with torch.no_grad():
        assert torch.equal(same(wave).logits, out.logits)


class _Framer(nn.Module):
    def __init__(self, hop: int) -> None:
        super().__init__()
        self.hop = hop

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        b, n = wave.shape
        return wave[:, : n // self.hop * self.hop].reshape(b, -1, self.hop).transpose(1, 2)


class _FakeBackbone(Backbone):
    """A one-layer attention backbone outside the library: AudioModel needs only the Backbone contract."""

    default_lora_targets = ("qkv",)

    def __init__(self, cfg: PretrainedCfg) -> None:
        super().__init__(cfg)
        hop, dim = cfg.frontend["hop"], cfg.arch["dim"]
        self.frontend = _Framer(hop)
        self.embed, self.qkv, self.norm = nn.Linear(hop, dim), nn.Linear(dim, 3 * dim), nn.LayerNorm(dim)
        self.embed_dim, self.num_layers, self.frame_hop, self.token_stride = dim, 1, hop, 1

    def tokenize(self, frames: torch.Tensor) -> torch.Tensor:
        return self.embed(frames.transpose(1, 2))[:, :, None, :]

    def encode(self, tokens: torch.Tensor, output_hidden_states: bool = False) -> BackboneOutput:
        x = tokens[:, :, 0]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = self.norm(x + F.scaled_dot_product_attention(q, k, v))
        times = (torch.arange(x.shape[1]) + 0.5) * self.frame_hop / self.sample_rate
        return BackboneOutput(pooled=x.mean(dim=1), sequence=x, token_times=times, grid=(x.shape[1], 1))


_FAKE_CFG = PretrainedCfg(
    name="fake.tiny", arch={"dim": 8}, frontend={"hop": 16}, sample_rate=1600, input_seconds=1.0
)


def test_any_backbone_subclass_works_and_round_trips_once_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = build_model(_FakeBackbone(_FAKE_CFG), head="attention", num_outputs=2, lora={"r": 2})
    assert model.lora_modules == ["qkv"]
    wave = torch.randn(3, 1600)
    out = model(wave, labels=torch.tensor([0, 1, 1]))
    assert out.logits.shape == (3, 2) and out.backbone_output.grid == (100, 1)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(KeyError, match="unknown backbone 'fake.tiny'"):
        AudioModel.from_pretrained(tmp_path / "m")
    monkeypatch.setattr(base_module, "_REGISTRY", dict(base_module._REGISTRY))
    register_backbone([_FAKE_CFG])(lambda cfg: _FakeBackbone(cfg))
    with torch.no_grad():
        assert torch.equal(AudioModel.from_pretrained(tmp_path / "m")(wave).logits, out.logits)
