"""LoRA on the three tiny backbones: which modules are wrapped, what trains, exactness of init/merge/save."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from backbones import Backbone, build_backbone
from backbones.config import ConfigError
from finetune import AudioModel, LoraSettings, build_model
from finetune.lora import apply_lora, is_lora_parameter, lora_layers
from tests.audio_signals import music

TINY = ["ast.tiny", "passt_s.tiny", "cnn14.tiny"]

# The modules each family's default targets must wrap, written out from the architecture (n = num_layers).
EXPECTED_DEFAULT: dict[str, Callable[[int], set[str]]] = {
    "ast.tiny": lambda n: {
        f"audio_spectrogram_transformer.layers.{i}.attention.{p}_proj" for i in range(n) for p in "qkv"
    },
    "passt_s.tiny": lambda n: {f"blocks.{i}.attn.qkv" for i in range(n)},
    "cnn14.tiny": lambda n: {f"conv_block{i}.conv{j}" for i in range(1, n + 1) for j in (1, 2)} | {"fc1"},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _base(name: str) -> Backbone:
    torch.manual_seed(0)
    return build_backbone(name)


def _batch(bb: Backbone, seconds: float = 2.0) -> torch.Tensor:
    return music(2, int(seconds * bb.sample_rate), bb.sample_rate, seed=3)


def _lora_model(base: Backbone, r: int = 4, **kw) -> AudioModel:
    torch.manual_seed(1)
    return build_model(copy.deepcopy(base), head="linear", num_outputs=3, lora={"r": r, **kw}, freeze="lora")


def _randomise_lora_b(model: AudioModel) -> None:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)


@pytest.mark.parametrize("name", TINY)
def test_default_targets_wrap_exactly_the_expected_modules(name: str) -> None:
    base = _base(name)
    model = _lora_model(base)
    expected = EXPECTED_DEFAULT[name](base.num_layers)
    assert set(model.lora_modules) == expected
    assert {k for k in lora_layers(model.backbone)} == expected


@pytest.mark.parametrize("name", TINY)
def test_only_lora_and_head_parameters_train_and_their_count_follows_the_formula(name: str) -> None:
    r = 4
    base = _base(name)
    model = _lora_model(base, r=r)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {f"head.{n}" for n, _ in model.head.named_parameters()}
    assert trainable == head | {n for n, _ in model.named_parameters() if is_lora_parameter(n)}
    expected = 0
    for module_name in EXPECTED_DEFAULT[name](base.num_layers):
        layer = base.get_submodule(module_name)
        if isinstance(layer, nn.Linear):
            expected += r * (layer.in_features + layer.out_features)
        else:
            assert isinstance(layer, nn.Conv2d)
            kh, kw = layer.kernel_size
            expected += r * layer.in_channels * kh * kw + r * layer.out_channels
    expected += sum(p.numel() for p in model.head.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("name", TINY)
def test_an_optimizer_step_changes_only_lora_and_head_tensors(name: str) -> None:
    base = _base(name)
    model = _lora_model(base).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    wave, labels = _batch(base), torch.tensor([0, 2])
    for _ in range(2):  # lora_A gets a gradient only once lora_B is non-zero, i.e. from the second step on
        opt.zero_grad()
        model(wave, labels=labels).loss.backward()
        opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # every trained tensor moved and nothing else did, BatchNorm statistics included
    assert changed == trainable


@pytest.mark.parametrize("name", TINY)
def test_fresh_adapters_leave_the_outputs_exactly_unchanged(name: str) -> None:
    base = _base(name)
    plain = build_model(copy.deepcopy(base), head="linear", num_outputs=3)
    lora = _lora_model(base)
    lora.head.load_state_dict(plain.head.state_dict())
    wave = _batch(base)
    with torch.no_grad():
        a, b = plain(wave), lora(wave)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.backbone_output.sequence, b.backbone_output.sequence)


@pytest.mark.parametrize("name", TINY)
def test_merged_and_unmerged_adapters_agree(name: str, tmp_path: Path) -> None:
    base = _base(name)
    model = _lora_model(base)
    plain = build_model(copy.deepcopy(base), head="linear", num_outputs=3)
    plain.head.load_state_dict(model.head.state_dict())
    _randomise_lora_b(model)
    wave = _batch(base)
    with torch.no_grad():
        unmerged = model(wave).logits
        assert (unmerged - plain(wave).logits).abs().max() > 1e-3  # the adapters do change the output
        model.merge_lora()
        merged = model(wave).logits
        model.unmerge_lora()
        again = model(wave).logits
    # merging reorders float sums through every layer: relative, not absolute, agreement (CNN14's logits reach ~30)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    assert torch.equal(again, unmerged)  # unmerging restores the saved base weights bit for bit
    model.merge_lora()
    with pytest.raises(
        ValueError, match=r"the LoRA adapters are merged; call unmerge_lora\(\) before saving"
    ):
        model.save_pretrained(tmp_path / "while_merged")
    model.unmerge_lora()
    model.save_pretrained(tmp_path / "merged", merge_lora=True)
    loaded = AudioModel.from_pretrained(tmp_path / "merged")
    assert loaded.lora_settings is None and not lora_layers(loaded)
    assert not any(is_lora_parameter(k) or ".base_layer." in k for k in loaded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave).logits, unmerged, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_adapter_only_save_holds_lora_and_head_and_round_trips_exactly(name: str, tmp_path: Path) -> None:
    base = _base(name)
    model = _lora_model(base)
    _randomise_lora_b(model)
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    from safetensors.torch import load_file

    saved = set(load_file(str(tmp_path / "adapter" / "adapter.safetensors")))
    lora_keys = {n for n, _ in model.named_parameters() if is_lora_parameter(n)}
    assert saved == lora_keys | {f"head.{k}" for k in model.head.state_dict()}
    full_bytes = (tmp_path / "full" / "model.safetensors").stat().st_size
    assert (tmp_path / "adapter" / "adapter.safetensors").stat().st_size < 0.2 * full_bytes
    loaded = AudioModel.from_pretrained(tmp_path / "adapter", backbone=copy.deepcopy(base))
    wave = _batch(base)
    with torch.no_grad():
        assert torch.equal(loaded(wave).logits, model.eval()(wave).logits)
    assert loaded.freeze_mode == "lora"
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_custom_targets_by_suffix_and_by_regular_expression() -> None:
    base = _base("passt_s.tiny")
    n = base.num_layers
    model = _lora_model(base, targets=["qkv", "attn.proj", "mlp.fc1", "mlp.fc2"])
    expected = {f"blocks.{i}.{m}" for i in range(n) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert set(model.lora_modules) == expected  # "attn.proj" does not catch patch_embed.proj
    regex = _lora_model(base, targets=r"blocks\.0\.attn\.(qkv|proj)")
    assert set(regex.lora_modules) == {"blocks.0.attn.qkv", "blocks.0.attn.proj"}


def test_lora_settings_and_targets_are_validated() -> None:
    base = _base("passt_s.tiny")
    with pytest.raises(ValueError, match=r"LoRA targets \('nope',\) do not fit passt_s.tiny: .*qkv"):
        apply_lora(copy.deepcopy(base), LoraSettings(targets=["nope"]))
    wrapped = copy.deepcopy(base)
    apply_lora(wrapped, LoraSettings())
    with pytest.raises(ValueError, match="passt_s.tiny already has LoRA adapters"):
        apply_lora(wrapped, LoraSettings())
    no_defaults = copy.deepcopy(base)
    no_defaults.default_lora_targets = ()
    with pytest.raises(ValueError, match=r"passt_s.tiny has no default LoRA targets; pass lora=\{'targets'"):
        apply_lora(no_defaults, LoraSettings())
    with pytest.raises(
        ConfigError, match=r"^unknown key\(s\) rank; LoraSettings takes: alpha, dropout, r, targets$"
    ):
        LoraSettings.from_dict({"rank": 8})
    with pytest.raises(ConfigError, match="^lora.r: expected int, got '8'$"):
        LoraSettings.from_dict({"r": "8"}, "lora")
    with pytest.raises(ValueError, match="LoRA rank r must be a positive integer, got 0"):
        LoraSettings(r=0)
