"""build_model / AudioModel: heads and outputs, features and cached-embeddings paths, freeze modes."""

from __future__ import annotations

import copy

import pytest
import torch

from backbones.config import ConfigError
from finetune import build_model
from heads import GTZAN_GENRES, PERCEPIANO_DIMENSIONS
from tests.finetune.helpers import base_backbone, music_wave, trainable_names

TINY = ["ast.tiny", "passt_s.tiny", "cnn14.tiny"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", TINY)
def test_classifier_and_rater_outputs(name: str) -> None:
    clf = build_model(name, head="mlp", num_outputs=10, hidden_sizes=[16])
    wave = music_wave(clf.sample_rate)
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
    wave = music_wave(model.sample_rate)
    with torch.no_grad():
        frames = model.compute_features(wave)
        assert frames.dim() == 3 and frames.shape[0] == 2
        assert torch.equal(model(features=frames).logits, model(wave).logits)


def test_forward_needs_exactly_one_input() -> None:
    model = build_model("passt_s.tiny", num_outputs=2)
    wave = music_wave(model.sample_rate)
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
        build_model(base_backbone("passt_s.tiny"), num_outputs=2, checkpoint="x.pt")


def test_freeze_modes_choose_what_trains() -> None:
    base = base_backbone("passt_s.tiny")
    head = {f"head.{n}" for n, _ in build_model(copy.deepcopy(base), num_outputs=2).head.named_parameters()}
    everything = {f"backbone.{n}" for n, _ in base.named_parameters()} | head
    assert trainable_names(build_model(copy.deepcopy(base), num_outputs=2, freeze="none")) == everything
    probe = build_model(copy.deepcopy(base), num_outputs=2, freeze="backbone")
    assert trainable_names(probe) == head
    probe.train()
    assert probe.head.training and not any(m.training for m in probe.backbone.modules())
    last = build_model(copy.deepcopy(base), num_outputs=2, freeze="last_k:1")
    tail = {f"backbone.{n}" for n, _ in base.named_parameters() if n.startswith(("blocks.1.", "norm."))}
    assert len(tail) > 4 and trainable_names(last) == tail | head
    with_lora = build_model(copy.deepcopy(base), num_outputs=2, lora={"r": 2}, freeze="last_k:1")
    lora_params = {n for n in trainable_names(with_lora) if ".lora_" in n}
    assert (
        lora_params
        and {n.replace(".base_layer", "") for n in trainable_names(with_lora) - lora_params} == tail | head
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
        build_model(base_backbone("passt_s.tiny"), num_outputs=2, **kwargs)


def test_frozen_batchnorm_keeps_its_statistics_and_trainable_batchnorm_updates_them() -> None:
    base = base_backbone("cnn14.tiny")
    wave = music_wave(base.sample_rate)
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
    ("head", "labels"), [("linear", torch.tensor([1, 0])), ("rating", torch.rand(2, 19))]
)
def test_forward_embeddings_runs_only_the_head_and_matches_the_waveform_path(
    head: str, labels: torch.Tensor
) -> None:
    model = build_model(base_backbone("cnn14.tiny"), head=head, num_outputs=19 if head == "rating" else 2)
    wave = music_wave(model.sample_rate)
    field = "ratings" if head == "rating" else "logits"
    with torch.no_grad():
        from_wave = model(wave, labels=labels)
        cached = model.forward_embeddings(from_wave.backbone_output.pooled, labels=labels)
        via_forward = model(embeddings=from_wave.pooled, labels=labels)
    assert torch.equal(getattr(cached, field), getattr(from_wave, field))
    assert torch.equal(cached.loss, from_wave.loss) and torch.equal(cached.pooled, from_wave.pooled)
    assert cached.backbone_output is None and via_forward.backbone_output is None
    assert torch.equal(getattr(via_forward, field), getattr(cached, field))
    assert model.forward_embeddings(from_wave.pooled).loss is None


def test_forward_embeddings_rejects_other_poolings_and_shapes() -> None:
    model = build_model(base_backbone("cnn14.tiny"), head="linear", num_outputs=2)
    width = model.backbone.embed_dim
    with pytest.raises(
        ValueError,
        match=rf"embeddings must be the backbone's pooled vectors \[B, {width}\], got shape \(2, 7\)",
    ):
        model.forward_embeddings(torch.zeros(2, 7))
    with pytest.raises(ValueError, match=rf"pooled vectors \[B, {width}\], got shape \({width},\)"):
        model(embeddings=torch.zeros(width))
    attention = build_model(base_backbone("cnn14.tiny"), head="attention", num_outputs=2)
    with pytest.raises(
        ValueError, match="the 'attention' head pools with 'attention', which needs the token sequence"
    ):
        attention.forward_embeddings(torch.zeros(2, width))


@pytest.mark.parametrize("head", ["linear", "rating"])
def test_numpy_inputs_and_labels_give_the_tensor_results(head: str) -> None:
    """Waveform, features, embeddings and labels may be numpy arrays (float64 too): the same outputs and loss."""
    model = build_model(base_backbone("cnn14.tiny"), head=head, num_outputs=3)
    wave = music_wave(model.sample_rate)
    labels = (
        torch.tensor([2, 0])
        if head == "linear"
        else torch.rand(2, 3, generator=torch.Generator().manual_seed(0))
    )
    field = "ratings" if head == "rating" else "logits"
    with torch.no_grad():
        ref = model(wave, labels=labels)
        frames = model.compute_features(wave.numpy())
        runs = [
            model(wave.numpy(), labels=labels.numpy()),
            model(wave.double().numpy(), labels=labels.numpy()),
            model(features=frames.numpy(), labels=labels.numpy()),
            model(embeddings=ref.pooled.numpy(), labels=labels.numpy()),
        ]
    assert torch.equal(frames, model.compute_features(wave))
    for out in runs:
        assert torch.equal(getattr(out, field), getattr(ref, field)) and torch.equal(out.loss, ref.loss)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_a_cast_model_takes_float32_waveforms_features_and_embeddings(dtype: torch.dtype) -> None:
    model = build_model(base_backbone("passt_s.tiny"), head="linear", num_outputs=3)
    wave = music_wave(model.sample_rate)
    with torch.no_grad():
        frames, pooled = model.compute_features(wave), model(wave).pooled
        cast = copy.deepcopy(model).to(dtype)
        outs = [cast(wave, labels=torch.tensor([0, 1])), cast(features=frames), cast(embeddings=pooled)]
    assert all(out.logits.dtype == dtype for out in outs) and outs[0].loss.dtype == dtype
    torch.testing.assert_close(outs[0].logits, outs[1].logits)
    assert torch.isfinite(outs[2].logits).all()


def test_features_and_embeddings_of_the_wrong_kind_are_refused() -> None:
    model = build_model(base_backbone("cnn14.tiny"), head="linear", num_outputs=2)
    with pytest.raises(
        TypeError, match=r"^features must hold floating-point numbers, got a torch.int64 tensor"
    ):
        model(features=torch.zeros(1, 64, 100, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"^embeddings must be a torch.Tensor or a numpy array, got list$"):
        model(embeddings=[[0.0] * model.backbone.embed_dim])
