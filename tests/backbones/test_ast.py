"""AST adapter: parity with ``transformers.ASTForAudioClassification`` from the same waveform, both official
checkpoint layouts, variable length (original position-embedding rule), patchout and strict-loading errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from backbones import (
    CheckpointError,
    CheckpointMismatchError,
    InputTooLongError,
    build_backbone,
    get_pretrained_cfg,
    list_backbones,
    load_backbone,
)
from backbones.ast import AST_AUDIOSET, AST_TINY, ASTBackbone
from backbones.config import ConfigError
from eval import references
from tests.audio_signals import music, noise, sweep

SR = 16000
HF = "audio_spectrogram_transformer."


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def _reference(arch: dict, seed: int) -> torch.nn.Module:
    """The HF model with random weights jittered away from their init values (LayerNorms, tokens, positions)."""
    torch.manual_seed(seed)
    model = references.ast_model(arch)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            big = "token" in name or "position" in name or ("layernorm" in name and name.endswith("weight"))
            t.add_(torch.randn(t.shape, generator=g) * (0.3 if big else 0.02))
    return model


def _hf4_state(model: torch.nn.Module, directory: Path) -> dict[str, torch.Tensor]:
    model.save_pretrained(directory)
    return load_file(str(directory / "model.safetensors"))


def _to_hf5(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers-4 names -> the transformers-5 in-memory names (checked against the shared key lists)."""
    pairs = [
        (".encoder.layer.", ".layers."),
        (".attention.attention.query.", ".attention.q_proj."),
        (".attention.attention.key.", ".attention.k_proj."),
        (".attention.attention.value.", ".attention.v_proj."),
        (".attention.output.dense.", ".attention.o_proj."),
        (".intermediate.dense.", ".mlp.fc1."),
        (".output.dense.", ".mlp.fc2."),
    ]
    out = {}
    for key, value in state.items():
        for old, new in pairs:
            key = key.replace(old, new)
        out[key] = value
    return out


def _to_original(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Invert the HF conversion: YuanGongND layout with ``module.``, fused qkv and unused 1000-class heads."""
    g = torch.Generator().manual_seed(seed)
    dim = state[HF + "embeddings.cls_token"].shape[-1]
    out = {
        "module.v.cls_token": state[HF + "embeddings.cls_token"],
        "module.v.pos_embed": state[HF + "embeddings.position_embeddings"],
        "module.v.dist_token": state[HF + "embeddings.distillation_token"],
    }
    for kind in ("weight", "bias"):
        out[f"module.v.patch_embed.proj.{kind}"] = state[f"{HF}embeddings.patch_embeddings.projection.{kind}"]
    depth = len({k.split(".")[3] for k in state if ".encoder.layer." in k})
    parts = [
        ("norm1", "layernorm_before"),
        ("attn.qkv", None),
        ("attn.proj", "attention.output.dense"),
        ("norm2", "layernorm_after"),
        ("mlp.fc1", "intermediate.dense"),
        ("mlp.fc2", "output.dense"),
    ]
    for i in range(depth):
        src, dst = f"{HF}encoder.layer.{i}.", f"module.v.blocks.{i}."
        for original, hf in parts:
            for kind in ("weight", "bias"):
                if hf is None:  # fused rows: q, then k, then v
                    qkv = [state[src + f"attention.attention.{n}.{kind}"] for n in ("query", "key", "value")]
                    out[dst + f"{original}.{kind}"] = torch.cat(qkv)
                else:
                    out[dst + f"{original}.{kind}"] = state[src + f"{hf}.{kind}"]
    for kind in ("weight", "bias"):
        out[f"module.v.norm.{kind}"] = state[f"{HF}layernorm.{kind}"]
    for head in ("head", "head_dist"):
        out[f"module.v.{head}.weight"] = torch.randn(1000, dim, generator=g)
        out[f"module.v.{head}.bias"] = torch.randn(1000, generator=g)
    for kind in ("weight", "bias"):
        out[f"module.mlp_head.0.{kind}"] = state[f"classifier.layernorm.{kind}"]
    for kind in ("weight", "bias"):
        out[f"module.mlp_head.1.{kind}"] = state[f"classifier.dense.{kind}"]
    return out


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


# ---------------------------------------------------------------- full-size parity (one reference build)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("ast_full")
    ref = _reference(dict(AST_AUDIOSET.arch), seed=0)
    waves = torch.cat([noise(1, 10 * SR, seed=3), music(1, 10 * SR, SR, seed=4)])
    extractor = references.ast_feature_extractor()
    feats = extractor([w.numpy() for w in waves], sampling_rate=SR, return_tensors="pt").input_values
    with torch.inference_mode():
        base = ref.audio_spectrogram_transformer(feats)
        logits = ref.classifier(base.pooler_output)
    hf4 = _hf4_state(ref, tmp / "hf")
    torch.save(_to_original(hf4), tmp / "audioset_10_10_0.4593.pth")
    return SimpleNamespace(
        waves=waves,
        pooled=base.pooler_output,
        logits=logits,
        hf_dir=tmp / "hf",
        hf4=hf4,
        pth=tmp / "audioset_10_10_0.4593.pth",
    )


def _check_full(checkpoint: Path, full: SimpleNamespace, clips: slice) -> None:
    model = load_backbone("ast.audioset", checkpoint=checkpoint, keep_pretrained_head=True)
    with torch.inference_mode():
        out = model(full.waves[clips])
    assert out.pooled.shape[1] == 768 and out.logits.shape[1] == 527
    assert _rel(out.pooled, full.pooled[clips]) <= 1e-4
    assert _rel(out.logits, full.logits[clips]) <= 1e-4


def test_full_hf_directory_parity(full: SimpleNamespace, shared_dir: Path) -> None:
    expected = json.loads((shared_dir / "reference" / "keys_ast_hf.json").read_text())
    assert _shapes(full.hf4) == expected  # the file on disk has exactly the hub's transformers-4 layout
    _check_full(full.hf_dir, full, slice(0, 2))  # noise and music


def test_full_original_pth_parity(full: SimpleNamespace, shared_dir: Path) -> None:
    expected = json.loads((shared_dir / "reference" / "keys_ast_original_audioset.json").read_text())
    state = torch.load(full.pth, weights_only=True)
    assert _shapes(state) == expected and list(state) == list(expected)
    _check_full(full.pth, full, slice(1, 2))  # music only: one full-size forward less in CI


# ---------------------------------------------------------------- layouts and names


def test_registry_and_config() -> None:
    assert {"ast.audioset", "ast.tiny"} <= set(list_backbones("ast.*"))
    cfg = get_pretrained_cfg("ast.audioset")
    assert cfg.hub_id == "MIT/ast-finetuned-audioset-10-10-0.4593" and cfg.license == "BSD-3-Clause"
    assert cfg.extra["original_filename"] == "audioset_10_10_0.4593.pth"
    assert (cfg.sample_rate, cfg.num_classes, cfg.input_seconds, cfg.frontend["target_frames"]) == (
        16000,
        527,
        10.24,
        1024,
    )
    assert not get_pretrained_cfg("ast.tiny").has_weights


def test_test_helper_matches_shared_key_lists(shared_dir: Path) -> None:
    hf4 = json.loads((shared_dir / "reference" / "keys_ast_hf.json").read_text())
    hf5 = json.loads((shared_dir / "reference" / "keys_ast_hf_transformers5_inmemory.json").read_text())
    assert _shapes(_to_hf5({k: torch.empty(v, device="meta") for k, v in hf4.items()})) == hf5


@pytest.mark.parametrize(
    "layout",
    ["keys_ast_hf.json", "keys_ast_hf_transformers5_inmemory.json", "keys_ast_original_audioset.json"],
)
def test_remap_gives_the_installed_module_layout(layout: str, shared_dir: Path) -> None:
    keys = json.loads((shared_dir / "reference" / layout).read_text())
    state = {k: torch.empty(v, device="meta") for k, v in keys.items()}
    remapped, fmt = ASTBackbone.remap_state_dict(state, AST_AUDIOSET)
    with torch.device("meta"):
        model = build_backbone("ast.audioset", keep_pretrained_head=True)
    own = {k: list(v.shape) for k, v in model.state_dict().items() if not k.startswith("frontend.")}
    assert _shapes(remapped) == own
    assert fmt == {
        "keys_ast_hf.json": "hf-transformers4",
        "keys_ast_original_audioset.json": "ast-original (YuanGongND)",
    }.get(layout, "hf-transformers5")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A jittered tiny HF reference, its files in every supported layout, and reference outputs on frames."""
    tmp = tmp_path_factory.mktemp("ast_tiny")
    ref = _reference(dict(AST_TINY.arch), seed=5)
    hf4 = _hf4_state(ref, tmp / "hf4")
    (tmp / "hf5").mkdir()
    save_file(_to_hf5(hf4), str(tmp / "hf5" / "model.safetensors"))
    bare = {k[len(HF) :]: v for k, v in hf4.items() if k.startswith(HF)}  # ASTModel.save_pretrained layout
    save_file(bare, str(tmp / "bare.safetensors"))
    torch.save(_to_original(hf4), tmp / "original.pth")
    frames = torch.randn(2, 128, 1024, generator=torch.Generator().manual_seed(6)) * 0.5
    with torch.inference_mode():
        base = ref.audio_spectrogram_transformer(frames.transpose(1, 2))
        logits = ref.classifier(base.pooler_output)
    return SimpleNamespace(ref=ref, hf4=hf4, dir=tmp, frames=frames, base=base, logits=logits)


def _load_tiny(tiny: SimpleNamespace, name: str = "hf4", **kw: object) -> ASTBackbone:
    path = {"hf4": tiny.dir / "hf4", "hf5": tiny.dir / "hf5", "bare": tiny.dir / "bare.safetensors"}
    path["original"] = tiny.dir / "original.pth"
    return load_backbone("ast.tiny", checkpoint=path[name], **kw)


@pytest.mark.parametrize("layout", ["hf4", "hf5", "original"])
def test_tiny_layouts_match_reference(tiny: SimpleNamespace, layout: str) -> None:
    model = _load_tiny(tiny, layout, keep_pretrained_head=True)
    with torch.inference_mode():
        out = model.encode(model.tokenize(tiny.frames))
    assert _rel(out.pooled, tiny.base.pooler_output) <= 1e-5
    assert _rel(out.logits, tiny.logits) <= 1e-5
    ref_seq = tiny.base.last_hidden_state[:, 2:].reshape(2, 12, 101, 32).transpose(1, 2).reshape(2, 1212, 32)
    assert _rel(out.sequence, ref_seq) <= 1e-5  # time-major, whereas HF is freq-major


def test_bare_base_model_file_loads_without_head(tiny: SimpleNamespace) -> None:
    model = _load_tiny(tiny, "bare")
    with torch.inference_mode():
        out = model.encode(model.tokenize(tiny.frames))
    assert out.logits is None and model.classifier is None
    assert not any(k.startswith("classifier.") for k in model.state_dict())
    assert _rel(out.pooled, tiny.base.pooler_output) <= 1e-5
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(4\): classifier\.layernorm\.weight"):
        _load_tiny(tiny, "bare", keep_pretrained_head=True)


def test_lora_targets_follow_the_installed_module_names() -> None:
    model = build_backbone("ast.tiny")
    leaves = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    targeted = [n for n in leaves if n.rsplit(".", 1)[-1] in model.default_lora_targets]
    assert len(targeted) == 3 * model.num_layers
    uses_v5 = any(".layers.0.attention.q_proj" in n for n in leaves)
    assert model.default_lora_targets == (
        ("q_proj", "k_proj", "v_proj") if uses_v5 else ("query", "key", "value")
    )


# ---------------------------------------------------------------- strict-loading errors


def test_missing_and_unexpected_keys_are_listed(tiny: SimpleNamespace, tmp_path: Path) -> None:
    state = dict(tiny.hf4)
    del state["classifier.dense.bias"]
    state[HF + "extra.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"(?s)hf-transformers4.*missing keys \(1\): classifier\.dense\.bias.*unexpected keys \(1\): audio_spectrogram_transformer\.extra\.weight",
    ):
        load_backbone("ast.tiny", checkpoint=tmp_path / "broken.safetensors", keep_pretrained_head=True)


def test_wrong_shape_is_reported(tiny: SimpleNamespace, tmp_path: Path) -> None:
    other = _reference({**AST_TINY.arch, "max_length": 512}, seed=1)  # 12 x 50 positions instead of 12 x 101
    other.save_pretrained(tmp_path)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"position_embeddings: checkpoint \[1, 602, 32\] vs model \[1, 1214, 32\]",
    ):
        load_backbone("ast.tiny", checkpoint=tmp_path)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            ["cls_token", "new_pos_embed", "freq_new_pos_embed", "blocks.0.attn.qkv.weight"],
            "looks like a PaSST checkpoint",
        ),
        (["conv_block1.conv1.weight", "fc_audioset.weight"], "looks like a PANNs CNN14 checkpoint"),
        (["encoder.weight", "decoder.weight"], "unrecognised checkpoint layout for ast.tiny"),
    ],
)
def test_other_families_are_recognised(keys: list[str], message: str, tmp_path: Path) -> None:
    torch.save({"model": {k: torch.zeros(2) for k in keys}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=message):
        load_backbone("ast.tiny", checkpoint=tmp_path / "other.pt")


def test_truncated_file(tiny: SimpleNamespace, tmp_path: Path) -> None:
    data = (tiny.dir / "original.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="could not read checkpoint .*cut.pth"):
        load_backbone("ast.tiny", checkpoint=tmp_path / "cut.pth")


def test_bad_options_and_inputs() -> None:
    with pytest.raises(ConfigError, match=r"ast.tiny: unknown option\(s\) 'depht'; accepted: "):
        build_backbone("ast.tiny", depht=3)
    with pytest.raises(ValueError, match="front-end n_mels=64 but the model expects num_mel_bins=128"):
        build_backbone("ast.tiny", n_mels=64)
    with pytest.raises(ValueError, match=r"patchout must be \(time_columns, freq_rows\)"):
        build_backbone("ast.tiny", patchout=(-1, 0))
    model = build_backbone("ast.tiny")
    with pytest.raises(ValueError, match=r"expected frames \[B, 128, T >= 16\], got \(1, 64, 100\)"):
        model.tokenize(torch.zeros(1, 64, 100))
    with pytest.raises(ValueError, match=r"expected tokens \[B, T', 12, 32\]"):
        model.encode(torch.zeros(1, 10, 11, 32))


# ---------------------------------------------------------------- variable length (original AST rule)


def _reference_positions(table: torch.Tensor, t: int) -> torch.Tensor:
    """The original rule computed independently: centre crop from index 50 - t // 2 for fewer columns; for
    more, linear interpolation along time with half-pixel centres (bilinear, align_corners=False; the
    frequency axis keeps its size, so it is left as is)."""
    grid = table[0, 2:].reshape(12, 101, -1)
    if t <= 101:
        grid = grid[:, 50 - t // 2 : 50 - t // 2 + t]
    else:
        src = ((torch.arange(t, dtype=torch.float64) + 0.5) * 101 / t - 0.5).clamp(min=0)
        lo = src.floor().long()
        hi = (lo + 1).clamp(max=100)
        w = (src - lo).float()[None, :, None]
        grid = grid[:, lo] * (1 - w) + grid[:, hi] * w
    return torch.cat([table[:, :2], grid.reshape(1, 12 * t, -1)], dim=1)


@pytest.mark.parametrize("num_frames", [406, 500, 1524])
def test_variable_length_follows_original_rule(tiny: SimpleNamespace, num_frames: int) -> None:
    t = (num_frames - 16) // 10 + 1
    # More frames than the table's 1024 need a model built for them (the original's input_tdim).
    model = _load_tiny(tiny, "hf4", **({"target_frames": num_frames} if num_frames > 1024 else {}))
    state = tiny.ref.state_dict()
    pos_key = HF + "embeddings.position_embeddings"
    state[pos_key] = _reference_positions(state[pos_key], t)
    ref = references.ast_model({**AST_TINY.arch, "max_length": num_frames})
    ref.load_state_dict(state)
    frames = torch.randn(2, 128, num_frames, generator=torch.Generator().manual_seed(num_frames)) * 0.5
    with torch.inference_mode():
        out = model.encode(model.tokenize(frames))
        want = ref.audio_spectrogram_transformer(frames.transpose(1, 2))
    assert out.grid == (t, 12)
    assert _rel(out.pooled, want.pooler_output) <= 1e-5
    ref_seq = want.last_hidden_state[:, 2:].reshape(2, 12, t, 32).transpose(1, 2).reshape(2, t * 12, 32)
    assert _rel(out.sequence, ref_seq) <= 1e-5


def test_longer_input_raises_instead_of_being_cropped(tiny: SimpleNamespace) -> None:
    """The front-end alone pads/crops to 1024 frames like the original loaders; the model refuses input beyond
    them (10.26 s: frames of 400 samples every 160) instead of silently reading only the start."""
    model = build_backbone("ast.tiny").eval()
    assert (model.max_frames, model.max_samples) == (1024, 1023 * 160 + 400 + 159)
    with torch.inference_mode():
        assert model(noise(1, 164239)).grid == (101, 12)
        with pytest.raises(
            InputTooLongError,
            match=r"ast\.tiny covers at most 10\.26 s of audio \(164239 samples at 16000 Hz\) with its position "
            r"embeddings, got 30\.00 s \(480000 samples\)\. Crop the input, window it \(finetune's predict .*\), "
            r"or build it for longer input, load_backbone\('ast\.tiny', target_frames=N\)",
        ):
            model(noise(1, 30 * SR))
        with pytest.raises(InputTooLongError, match=r"got 151 token columns \(~15\.1 s; at most 101\)"):
            model.encode(model.tokenize(torch.zeros(1, 128, 1516)))
    unpadded = build_backbone("ast.tiny", target_frames=None)
    assert unpadded.max_frames == 1024  # the stored table's length
    longer = _load_tiny(tiny, "hf4", target_frames=3000)
    with torch.inference_mode():
        assert longer(noise(1, 30 * SR)).grid == (299, 12)


def test_unpadded_frontend_and_streaming_token_reuse() -> None:
    model = build_backbone("ast.tiny", target_frames=None).eval()
    padded = build_backbone("ast.tiny").eval()
    padded.load_state_dict(model.state_dict())
    wave = music(1, 5 * SR, SR, seed=2)
    with torch.inference_mode():
        frames = model.frontend(wave)
        out = model(wave)
        crop = padded.encode(padded.tokenize(padded.frontend(wave)[:, :, : frames.shape[-1]]))
        tokens = model.tokenize(frames)
        shifted = model.tokenize(model.frontend(wave[:, 3 * 1600 :]))
    assert frames.shape[-1] == 498 and out.grid == (49, 12)
    assert torch.allclose(out.pooled, crop.pooled, atol=1e-6, rtol=0)
    # A hop of 1600 samples (10 frames) moves the token columns by one: patch embeddings can be cached.
    assert torch.allclose(shifted, tokens[:, 3 : 3 + shifted.shape[1]], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- outputs, patchout, training helpers


def test_grid_token_times_and_hidden_states(tiny: SimpleNamespace) -> None:
    model = _load_tiny(tiny, "hf4")
    with torch.inference_mode():
        out = model.encode(model.tokenize(tiny.frames), output_hidden_states=True)
        final = model.audio_spectrogram_transformer.layernorm(out.hidden_states[-1])
    assert out.grid == (101, 12) and out.sequence.shape == (2, 1212, 32)
    times = out.token_times.view(101, 12)
    assert torch.equal(times, times[:, :1].expand(101, 12))  # time-major: one time per column
    # column t spans frames [10t, 10t + 16): centre (10t + 7.5) * 160 + 200 samples
    assert torch.allclose(times[:, 0], (torch.arange(101) * 1600 + 1400) / 16000.0, atol=1e-6)
    assert len(out.hidden_states) == model.num_layers == 2
    assert all(h.shape == (2, 1214, 32) for h in out.hidden_states)
    assert torch.allclose(final[:, 2:], out.sequence, atol=1e-6)
    assert model.frame_hop == 160 and model.token_stride == 10 and model.embed_dim == 32


def test_patchout_only_in_training() -> None:
    model = build_backbone("ast.tiny", patchout=(40, 4))
    plain = build_backbone("ast.tiny")
    plain.load_state_dict(model.state_dict())
    tokens = model.tokenize(torch.randn(1, 128, 1024, generator=torch.Generator().manual_seed(0)))
    model.train()
    torch.manual_seed(1)
    first = model.encode(tokens)
    second = model.encode(tokens)
    assert first.grid == (61, 8) and first.sequence.shape == (1, 61 * 8, 32)
    full_times = plain.encode(tokens).token_times.view(101, 12)[:, 0]
    kept = first.token_times.view(61, 8)[:, 0]
    assert torch.all(kept[1:] > kept[:-1]) and set(kept.tolist()) <= set(full_times.tolist())
    assert not torch.equal(kept, second.token_times.view(61, 8)[:, 0])  # a fresh draw every call
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model.encode(tokens).pooled, plain.eval().encode(tokens).pooled)
    with pytest.raises(ValueError, match=r"patchout \(40, 4\) leaves no tokens of a 31x12 grid"):
        model.train().encode(tokens[:, :31])


def test_layer_groups_cover_every_parameter_once() -> None:
    model = build_backbone("ast.tiny", keep_pretrained_head=True)
    groups = model.layer_groups()
    assert len(groups) == model.num_layers + 2
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert any(p is model.audio_spectrogram_transformer.embeddings.position_embeddings for p in groups[0])
    assert any(p is model.classifier.dense.weight for p in groups[-1])


def test_bf16_autocast_is_close_to_fp32(tiny: SimpleNamespace) -> None:
    model = _load_tiny(tiny, "hf4", keep_pretrained_head=True)
    wave = sweep(4 * SR, SR)[None]
    with torch.inference_mode():
        ref = model(wave)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(wave)
    assert torch.isfinite(low.pooled).all() and torch.isfinite(low.logits).all()
    assert _rel(low.pooled.float(), ref.pooled) < 0.05
