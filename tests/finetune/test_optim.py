"""Layer-wise learning-rate decay parameter groups."""

from __future__ import annotations

import pytest
import torch

from backbones import build_backbone
from finetune import build_model, param_groups


def _groups_by_param(groups: list[dict]) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for group in groups:
        for p in group["params"]:
            assert id(p) not in out, "a parameter is in two groups"
            out[id(p)] = group
    return out


@pytest.mark.parametrize("name", ["ast.tiny", "passt_s.tiny", "cnn14.tiny"])
def test_learning_rates_decay_from_the_head_down_to_the_stem(name: str) -> None:
    model = build_model(name, head="mlp", num_outputs=3, hidden_sizes=[8])
    lr, decay = 1e-3, 0.5
    groups = param_groups(model, lr=lr, weight_decay=0.05, layer_decay=decay)
    by_param = _groups_by_param(groups)
    layers = model.backbone.layer_groups()
    n = len(layers)
    for i, layer in enumerate(layers):
        for p in layer:
            assert by_param[id(p)]["lr"] == pytest.approx(lr * decay ** (n - i), rel=1e-12)
            assert by_param[id(p)]["lr_scale"] == pytest.approx(decay ** (n - i), rel=1e-12)
    for p in model.head.parameters():
        assert by_param[id(p)]["lr"] == lr
    assert len(by_param) == sum(1 for _ in model.parameters())  # every parameter, once


def test_no_weight_decay_on_biases_norms_tokens_and_position_tables() -> None:
    model = build_model("passt_s.tiny", num_outputs=3)
    by_param = _groups_by_param(param_groups(model, lr=1e-3, weight_decay=0.1, layer_decay=0.8))
    named = dict(model.named_parameters())
    no_decay = {n for n, p in named.items() if by_param[id(p)]["weight_decay"] == 0.0}
    for key in (
        "backbone.cls_token",
        "backbone.dist_token",
        "backbone.new_pos_embed",
        "backbone.freq_new_pos_embed",
        "backbone.time_new_pos_embed",
        "backbone.norm.weight",
        "backbone.blocks.0.norm1.weight",
        "backbone.blocks.0.attn.qkv.bias",
        "head.fc.bias",
    ):
        assert key in no_decay, key
    for key in (
        "backbone.blocks.0.attn.qkv.weight",
        "backbone.blocks.1.mlp.fc2.weight",
        "backbone.patch_embed.proj.weight",
        "head.fc.weight",
    ):
        assert key not in no_decay and by_param[id(named[key])]["weight_decay"] == 0.1, key
    ast = build_model("ast.tiny", num_outputs=3)
    ast_no_decay = {
        n
        for n, p in ast.named_parameters()
        if _groups_by_param(param_groups(ast, lr=1e-3))[id(p)]["weight_decay"] == 0.0
    }
    assert {
        "backbone.audio_spectrogram_transformer.embeddings.cls_token",
        "backbone.audio_spectrogram_transformer.embeddings.distillation_token",
        "backbone.audio_spectrogram_transformer.embeddings.position_embeddings",
    } <= ast_no_decay


def test_only_trainable_parameters_are_grouped() -> None:
    model = build_model("passt_s.tiny", num_outputs=3, lora={"r": 2}, freeze="lora")
    groups = param_groups(model, lr=1e-3, layer_decay=0.7)
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(g["params"] for g in groups)
    lr_of = {n: g["lr"] for g in groups for n, p in model.named_parameters() for q in g["params"] if p is q}
    # blocks.1 is layer group 2 of 4 -> lr * 0.7 ** 2; blocks.0 -> lr * 0.7 ** 3
    assert lr_of["backbone.blocks.1.attn.qkv.lora_A.default.weight"] == pytest.approx(1e-3 * 0.7**2)
    assert lr_of["backbone.blocks.0.attn.qkv.lora_B.default.weight"] == pytest.approx(1e-3 * 0.7**3)
    optimizer = torch.optim.AdamW(groups)  # the groups are valid optimizer input
    assert len(optimizer.param_groups) == len(groups)


def test_bad_settings_and_broken_layer_groups_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("passt_s.tiny", num_outputs=3)
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\], got 1.5"):
        param_groups(model, lr=1e-3, layer_decay=1.5)
    with pytest.raises(ValueError, match="need lr > 0 and weight_decay >= 0, got lr=0"):
        param_groups(model, lr=0)
    groups = model.backbone.layer_groups()
    monkeypatch.setattr(model.backbone, "layer_groups", lambda: [groups[0], groups[1], groups[1]])
    with pytest.raises(
        ValueError, match="passt_s.tiny.layer_groups\\(\\) lists a parameter in groups 1 and 2"
    ):
        param_groups(model, lr=1e-3)
    monkeypatch.setattr(model.backbone, "layer_groups", lambda: groups[1:])
    with pytest.warns(UserWarning, match=rf"layer_groups\(\) misses {len(groups[0])} trainable parameters"):
        param_groups(model, lr=1e-3)


def test_layer_decay_one_gives_every_group_the_base_rate() -> None:
    model = build_model(build_backbone("cnn14.tiny"), num_outputs=2)
    assert {g["lr"] for g in param_groups(model, lr=3e-4, layer_decay=1.0)} == {3e-4}
