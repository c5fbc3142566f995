"""Saving and loading AudioModel directories: exact round trips (full, adapter-only, overrides, any registered
backbone), and named errors for damaged or inconsistent files."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import backbones.base as base_module
from backbones import Backbone, BackboneOutput, PretrainedCfg, build_backbone
from backbones.base import register_backbone
from backbones.state_dict import CheckpointError, CheckpointMismatchError
from finetune import AudioModel, build_model
from finetune.model import ADAPTER_NAME, CONFIG_NAME, WEIGHTS_NAME
from finetune.serialization import SavedModelError
from tests.finetune.helpers import base_backbone, music_wave, trainable_names

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("name", "head"), [("ast.tiny", "attention"), ("passt_s.tiny", "crnn"), ("cnn14.tiny", "rating")]
)
def test_save_and_load_round_trip_exactly(name: str, head: str, tmp_path: Path) -> None:
    model = build_model(
        base_backbone(name),
        head=head,
        num_outputs=19 if head == "rating" else 3,
        lora={"r": 2},
        freeze="last_k:1",
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
    assert not loaded.training and trainable_names(loaded) == trainable_names(model)
    wave = music_wave(model.sample_rate)
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
    base = base_backbone("passt_s.tiny")
    checkpoint = tmp_path / "base.pt"
    torch.save(base.state_dict(), checkpoint)
    model = build_model("passt_s.tiny", checkpoint=checkpoint, num_outputs=3, lora={"r": 2})
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_()
    model.save_pretrained(tmp_path / "a", adapter_only=True)
    loaded = AudioModel.from_pretrained(tmp_path / "a", base_checkpoint=checkpoint)
    wave = music_wave(model.sample_rate)
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
        AudioModel.from_pretrained(tmp_path / "a", backbone=base_backbone("passt_s.tiny", depth=1))
    with pytest.raises(ValueError, match="saved with backbone 'passt_s.tiny', got 'ast.tiny'"):
        AudioModel.from_pretrained(tmp_path / "a", backbone=base_backbone("ast.tiny"))
    narrow = tmp_path / "narrow.pt"
    torch.save(base_backbone("passt_s.tiny", embed_dim=16, num_heads=2).state_dict(), narrow)
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
    torch.save(base_backbone("passt_s.audioset_swa").state_dict(), checkpoint)
    model = build_model(
        "passt_s.audioset_swa",
        checkpoint=checkpoint,
        head="linear",
        num_outputs=10,
        lora={"r": 8},
        freeze="lora",
    )
    wave = music_wave(model.sample_rate, batch=1, seconds=1.0)
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


# ----------------------------------------------------------------------------------- damaged or edited files


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small full save, copied by each test that edits it."""
    model = build_model(base_backbone("passt_s.tiny"), num_outputs=3, labels=["calm", "busy", "loud"])
    return model.save_pretrained(tmp_path_factory.mktemp("saved") / "m")


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "m"))


def _edit(directory: Path, change: Callable[[dict], object]) -> None:
    config = json.loads((directory / "config.json").read_text())
    change(config)
    (directory / "config.json").write_text(json.dumps(config))


def _expect(directory: Path, file_name: str, message: str) -> None:
    file = directory / file_name
    with pytest.raises(SavedModelError, match=re.escape(f"{file}: ") + message) as info:
        AudioModel.from_pretrained(directory)
    assert info.value.file == file and isinstance(info.value, ValueError)


def test_saved_model_loads_unchanged_before_any_edit(saved: Path, tmp_path: Path) -> None:
    model = AudioModel.from_pretrained(_copy(saved, tmp_path))
    assert model.labels == ("calm", "busy", "loud") and model.sample_rate == 32000


@pytest.mark.parametrize("keep", [0, 7, 100, -9])
def test_truncated_weights_name_the_file_and_the_fix(saved: Path, tmp_path: Path, keep: int) -> None:
    directory = _copy(saved, tmp_path)
    weights = directory / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: keep if keep >= 0 else len(data) + keep])
    _expect(
        directory,
        WEIGHTS_NAME,
        r"not a readable safetensors file \(Error while deserializing header: .*\); it is truncated or damaged "
        r"\(an interrupted save or copy\): copy it again, or save the model again",
    )


def test_saved_weights_holding_nan_are_refused_with_the_tensor_named(saved: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    directory = _copy(saved, tmp_path)
    state = load_file(directory / WEIGHTS_NAME)
    state["head.fc.bias"][1] = float("nan")
    save_file(state, directory / WEIGHTS_NAME)
    with pytest.raises(
        CheckpointError,
        match=r"holds NaN or Inf values in 1 tensor\(s\): head\.fc\.bias\. The file is corrupt or comes from a "
        r"diverged run",
    ):
        AudioModel.from_pretrained(directory)


def test_truncated_adapter_weights_name_the_adapter_file(tmp_path: Path) -> None:
    model = build_model(base_backbone("passt_s.tiny"), num_outputs=2, lora={"r": 2})
    directory = model.save_pretrained(tmp_path / "a", adapter_only=True)
    adapter = directory / ADAPTER_NAME
    adapter.write_bytes(adapter.read_bytes()[:-5])
    with pytest.raises(SavedModelError, match=re.escape(f"{adapter}: not a readable safetensors file")):
        AudioModel.from_pretrained(directory, backbone=base_backbone("passt_s.tiny"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"format_version": 1,',
            r"not valid JSON \(Expecting property name enclosed in double quotes: line 1",
        ),
        ("", r"not valid JSON \(Expecting value: line 1 column 1 \(char 0\)\); restore the file written by"),
        (
            "[1, 2]",
            r"expected a JSON object with the keys weights, backbone, head, lora, freeze, got a JSON list; "
            "restore the file written by save_pretrained",
        ),
        ('"model"', "expected a JSON object .*, got a string"),
    ],
)
def test_config_that_is_not_a_json_object_is_named(
    saved: Path, tmp_path: Path, text: str, message: str
) -> None:
    directory = _copy(saved, tmp_path)
    (directory / CONFIG_NAME).write_text(text)
    _expect(directory, CONFIG_NAME, message)


def test_config_in_another_encoding_is_named(saved: Path, tmp_path: Path) -> None:
    directory = _copy(saved, tmp_path)
    (directory / CONFIG_NAME).write_bytes(b"\xff\xfe{}")
    _expect(directory, CONFIG_NAME, r"not valid JSON \('utf-8' codec can't decode byte 0xff")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c.pop("head"),
            r"missing 'head' \(the head's name, in_dim and config\); restore it, or save the model again "
            "with save_pretrained",
        ),
        (lambda c: c.pop("backbone"), r"missing 'backbone' \(the backbone's name and overrides\)"),
        (lambda c: c["backbone"].pop("name"), r"missing 'backbone.name' \(a registered backbone name\)"),
        (lambda c: c["head"].pop("config"), r"missing 'head.config' \(the head config's fields\)"),
        (lambda c: c.pop("freeze"), r"missing 'freeze' \(the freeze mode\)"),
        (
            lambda c: c["backbone"].update(overrides=[]),
            r"'backbone.overrides' must be a JSON object \(the backbone's architecture / front-end settings\), "
            "got a JSON list",
        ),
        (lambda c: c["head"].update(in_dim="32"), r"'head.in_dim' must be an integer .*, got a string"),
        (lambda c: c["head"].update(in_dim=True), r"'head.in_dim' must be an integer .*, got true/false"),
        (lambda c: c.update(lora=[]), r"'lora' must be a JSON object or null .*, got a JSON list"),
        (lambda c: c.update(weights="half"), "'weights' must be one of full, merged, adapter, got 'half'"),
        (
            lambda c: c.update(format_version=2),
            "format_version 2, but this library reads 1; load it with the library version that saved it, "
            "or save the model again",
        ),
        (lambda c: c.pop("format_version"), "format_version None, but this library reads 1"),
    ],
)
def test_config_missing_a_key_or_with_a_wrong_type_is_named(
    saved: Path, tmp_path: Path, change: Callable[[dict], object], message: str
) -> None:
    directory = _copy(saved, tmp_path)
    _edit(directory, change)
    _expect(directory, CONFIG_NAME, message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c.update(labels=["busy", "calm", "loud"]),
            re.escape(
                "'labels' ['busy', 'calm', 'loud'] disagree with the head's labels ['calm', 'busy', 'loud'] "
                "('head.config.labels'), which are authoritative: they name the outputs in the order the "
                "weights were trained. Rename classes in 'head.config.labels' and make 'labels' equal to them"
            ),
        ),
        (
            lambda c: c["backbone"].update(sample_rate=44100),
            re.escape(
                "'backbone.sample_rate' is 44100, but passt_s.tiny runs at 32000 Hz (its registered rate, which "
                "config.json cannot change); set it back to 32000 and resample the audio instead"
            ),
        ),
        (
            lambda c: c["backbone"].update(embed_dim=64),
            re.escape(
                "'backbone.embed_dim' is 64, but passt_s.tiny built from 'backbone.overrides' has width 32"
            ),
        ),
        (
            lambda c: c["backbone"]["frontend"].update(n_mels=64),
            re.escape(
                "'backbone.frontend' differs from the front-end passt_s.tiny builds from 'backbone.overrides' "
                "(n_mels: 64 vs 128; saved vs built): front-end settings change only through "
                "'backbone.overrides'"
            ),
        ),
        (
            lambda c: c["head"].update(in_dim=16),
            re.escape(
                "'head.in_dim' is 16, but passt_s.tiny built from 'backbone.overrides' has width 32; the head "
                "must be built for the backbone's width"
            ),
        ),
    ],
)
def test_copies_that_disagree_with_their_source_are_named(
    saved: Path, tmp_path: Path, change: Callable[[dict], object], message: str
) -> None:
    directory = _copy(saved, tmp_path)
    _edit(directory, change)
    _expect(directory, CONFIG_NAME, message)


def test_renaming_in_the_head_config_and_dropping_the_copies_still_loads(saved: Path, tmp_path: Path) -> None:
    directory = _copy(saved, tmp_path)

    def rename(config: dict) -> None:
        config["head"]["config"]["labels"] = ["quiet", "busy", "loud"]
        config["labels"] = ["quiet", "busy", "loud"]
        for key in ("sample_rate", "embed_dim", "frontend"):
            config["backbone"].pop(key)

    _edit(directory, rename)
    model = AudioModel.from_pretrained(directory)
    original = AudioModel.from_pretrained(saved)
    wave = music_wave(model.sample_rate)
    assert model.labels == ("quiet", "busy", "loud")
    with torch.no_grad():
        assert torch.equal(model(wave).logits, original(wave).logits)
