"""PaSST-S adapter: parity with hear21passt on jittered random weights saved in the release file format
(front-end included, from the same 32 kHz waveform), checkpoint errors, patchout, variable length and the
output contract.

hear21passt prints on its first forward and in its constructors, warns about input sizes, and draws from the
global RNG even in eval; ``references.quiet`` silences the first two and the tests never depend on the third.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from backbones import (
    CheckpointError,
    CheckpointMismatchError,
    InputTooLongError,
    build_backbone,
    get_pretrained_cfg,
    list_backbones,
    load_backbone,
)
from backbones.config import ConfigError
from backbones.passt import PASST_CFGS, build_passt
from eval import references
from tests.audio_signals import music, noise, sweep

SR = 32000
TOL = 1e-4
TINY = dict(embed_dim=32, depth=2, num_heads=2)
# Registered name -> how hear21passt builds the same model: get_model arch, input_tdim, stride, mel hop.
REFERENCE = {
    "passt_s.audioset_swa": ("passt_s_swa_p16_128_ap476", 998, 10, 320),
    "passt_s.audioset_kd": ("passt_s_kd_p16_128_ap486", 998, 10, 320),
    "passt_s.audioset_20s": ("passt_20sec", 2000, 10, 320),
    "passt_s.audioset_30s": ("passt_30sec", 3000, 10, 320),
    "passt_s.audioset_s16": ("passt_s_p16_s16_128_ap468", 998, 16, 320),
    "passt_s.audioset_hop100": ("stfthop100", 3200, 10, 100),
    "passt_s.audioset_hop160": ("stfthop160", 2000, 10, 160),
}


def _jitter(model: nn.Module, seed: int) -> None:
    """Move every tensor away from its init value so nothing agrees by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(torch.randn(t.shape, generator=g) * 0.05)


def _reference(name: str, tiny: bool = False, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """hear21passt's (mel, net) for ``name``, eval mode, jittered weights; ``tiny`` shrinks the width."""
    arch, tdim, stride, hop = REFERENCE[name]
    torch.manual_seed(seed)
    mel = references.passt_mel(hop_length=hop)
    net = references.passt_model(arch, input_tdim=tdim, stride=stride, size=TINY if tiny else None)
    _jitter(net, seed)
    return mel, net


def _ref_forward(mel: nn.Module, net: nn.Module, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with references.quiet(), torch.no_grad():
        return net(mel(wave).unsqueeze(1))  # (logits, features)


def _save(net: nn.Module, path: Path, wrapped: bool) -> Path:
    state = net.state_dict()
    torch.save({"model": state} if wrapped else state, path)
    return path


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def _assert_parity(out, ref_logits: torch.Tensor, ref_features: torch.Tensor) -> None:
    # The batch items must differ, or a front-end bug could hide behind a constant output.
    assert _rel(ref_features[0], ref_features[1]) > 1e-2
    assert _rel(out.pooled, ref_features) <= TOL
    assert _rel(out.logits, ref_logits) <= TOL


def _clips(seconds: float, seed: int = 0) -> torch.Tensor:
    n = int(seconds * SR)
    return torch.cat(
        [music(1, n, SR, seed=seed), (sweep(n, SR) + noise(1, n, seed=seed, scale=0.1)).clamp(-1, 1)]
    )


@pytest.fixture(scope="module")
def swa(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Full-size passt_s.audioset_swa: reference, its files (bare and under 'model'), ours loaded from one."""
    mel, net = _reference("passt_s.audioset_swa", seed=1)
    tmp = tmp_path_factory.mktemp("passt_swa")
    bare, wrapped = _save(net, tmp / "bare.pt", False), _save(net, tmp / "wrapped.pt", True)
    ours = load_backbone("passt_s.audioset_swa", checkpoint=bare, keep_pretrained_head=True)
    wave = _clips(10.0)
    with torch.no_grad():
        out = ours(wave, output_hidden_states=True)
    return {"mel": mel, "net": net, "bare": bare, "wrapped": wrapped, "ours": ours, "wave": wave, "out": out}


def test_registry_names_urls_and_licence() -> None:
    from hear21passt.models.passt import default_cfgs

    names = set(list_backbones("passt_s.*"))
    assert {
        "passt_s.audioset_swa",
        "passt_s.audioset_kd",
        "passt_s.audioset_20s",
        "passt_s.audioset_30s",
    } <= names
    assert "passt_s.tiny" in names and not get_pretrained_cfg("passt_s.tiny").has_weights
    ref_urls = {cfg["url"] for cfg in default_cfgs.values()}
    for name, cfg in PASST_CFGS.items():
        assert cfg.sample_rate == SR and cfg.num_classes == 527
        if name != "passt_s.tiny":
            assert cfg.url in ref_urls and cfg.url.endswith(cfg.filename)
            assert cfg.license == "Apache-2.0"
    assert get_pretrained_cfg("passt_s.audioset_swa").url.endswith(
        "v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt"
    )
    assert get_pretrained_cfg("passt_s.audioset_20s").arch["input_tdim"] == 2000
    assert get_pretrained_cfg("passt_s.audioset_30s").arch["input_tdim"] == 3000


def test_full_size_swa_parity_from_waveform(swa: dict) -> None:
    ref_logits, ref_features = _ref_forward(swa["mel"], swa["net"], swa["wave"])
    _assert_parity(swa["out"], ref_logits, ref_features)


def test_full_size_swa_output_contract(swa: dict) -> None:
    out, ours = swa["out"], swa["ours"]
    assert out.grid == (99, 12) and out.sequence.shape == (2, 99 * 12, 768) and out.pooled.shape == (2, 768)
    assert len(out.hidden_states) == ours.num_layers == 12
    assert all(h.shape == (2, 2 + 99 * 12, 768) for h in out.hidden_states)
    # sequence is the final-normed last hidden state without the class and distillation tokens
    torch.testing.assert_close(out.sequence, ours.norm(out.hidden_states[-1])[:, 2:])


def test_release_file_formats_and_official_key_set(swa: dict, shared_dir: Path) -> None:
    official = json.loads((shared_dir / "reference" / "keys_passt_s_f128_p16_s10.json").read_text())
    state = torch.load(swa["bare"], weights_only=True)
    assert {k: list(v.shape) for k, v in state.items()} == official
    # Every tensor of the file is used except head_dist.
    assert set(swa["ours"].state_dict()) == set(official) - {"head_dist.weight", "head_dist.bias"}
    # The {'model': ...} container, without the AudioSet head: same tensors, head.* dropped.
    headless = load_backbone("passt_s.audioset_swa", checkpoint=swa["wrapped"])
    assert headless.head is None and not any(k.startswith("head") for k in headless.state_dict())
    with_head = swa["ours"].state_dict()
    for k, v in headless.state_dict().items():
        assert torch.equal(v, with_head[k]) and torch.equal(v, state[k]), k


# Parameter counts of the released files, head_dist included (checkpoints.md, section 1d), and time columns.
FULL_SIZE = {
    "passt_s.audioset_swa": (86_153_758, 99),
    "passt_s.audioset_kd": (86_153_758, 99),
    "passt_s.audioset_20s": (86_231_326, 200),
    "passt_s.audioset_30s": (86_308_126, 300),
    "passt_s.audioset_s16": (86_122_270, 62),
    "passt_s.audioset_hop100": (86_323_486, 320),
    "passt_s.audioset_hop160": (86_231_326, 200),
}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_variant_shapes(name: str) -> None:
    with torch.device("meta"):
        model = build_backbone(name, keep_pretrained_head=True)
    params, columns = FULL_SIZE[name]
    assert sum(p.numel() for p in model.parameters()) == params - (527 * 768 + 527)
    assert model.time_new_pos_embed.shape == (1, 768, 1, columns)


def test_full_size_20s_key_layout_matches_get_model() -> None:
    net = references.passt_model("passt_20sec", input_tdim=2000)
    with torch.device("meta"):
        ours = build_backbone("passt_s.audioset_20s", keep_pretrained_head=True)
    want = {k: v.shape for k, v in net.state_dict().items() if not k.startswith("head_dist.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == want


@pytest.mark.parametrize(
    ("name", "seconds", "columns"),
    [
        ("passt_s.audioset_swa", 4.0, 39),  # shorter than trained: leading time positions
        ("passt_s.audioset_kd", 10.0, 99),
        ("passt_s.audioset_20s", 20.0, 199),
        ("passt_s.audioset_30s", 30.0, 299),
        ("passt_s.audioset_s16", 10.0, 62),
        ("passt_s.audioset_hop100", 10.0, 319),
        ("passt_s.audioset_hop160", 10.0, 199),
    ],
)
def test_tiny_width_variant_parity(name: str, seconds: float, columns: int, tmp_path: Path) -> None:
    """Each variant's position tables, stride and mel hop, at width 32, on a clip of its trained length."""
    mel, net = _reference(name, tiny=True, seed=4)
    ours = load_backbone(
        name, checkpoint=_save(net, tmp_path / "w.pt", False), keep_pretrained_head=True, **TINY
    )
    wave = _clips(seconds, seed=5)
    with torch.no_grad():
        out = ours(wave)
    assert out.grid == (columns, 128 // ours.token_stride)
    _assert_parity(out, *_ref_forward(mel, net, wave))


def test_structured_patchout_matches_reference_in_train_mode(tmp_path: Path) -> None:
    mel, net = _reference("passt_s.audioset_swa", tiny=True, seed=6)
    net.s_patchout_t, net.s_patchout_f = 40, 4
    ours = load_backbone("passt_s.audioset_swa", checkpoint=_save(net, tmp_path / "w.pt", False),
                         keep_pretrained_head=True, patchout=(40, 4), **TINY)  # fmt: skip
    with torch.no_grad(), references.quiet():
        frames = mel(_clips(10.0, seed=7))
        tokens = ours.tokenize(frames)
        ours.train(), net.train()
        torch.manual_seed(11)  # both draw the time, then the frequency permutation from the global RNG
        out = ours.encode(tokens)
        torch.manual_seed(11)
        ref_logits, ref_features = net(frames.unsqueeze(1))
    assert out.grid == (99 - 40, 12 - 4) and out.sequence.shape[1] == 59 * 8 == out.token_times.numel()
    _assert_parity(out, ref_logits, ref_features)


def test_patchout_only_in_train_and_eval_is_deterministic() -> None:
    torch.manual_seed(0)
    model = build_backbone("passt_s.tiny", patchout=(40, 4)).eval()
    wave = _clips(10.0)
    with torch.no_grad():
        frames = model.frontend(wave)
        tokens = model.tokenize(frames)
        a, b = model.encode(tokens), model.encode(tokens)
        model.train()
        dropped = model.encode(tokens)
        short = model.encode(tokens[:, :41])
        with pytest.raises(ValueError, match=r"patchout \(40, 4\) leaves no tokens of a 40x12 grid"):
            model.encode(tokens[:, :40])
    assert torch.equal(a.pooled, b.pooled) and a.grid == (99, 12)
    assert dropped.grid == (59, 8) and dropped.sequence.shape == (2, 59 * 8, 32)
    kept = dropped.token_times[::8]
    assert (
        kept.numel() == 59
        and bool((kept.diff() > 0).all())
        and set(kept.tolist()) <= set(a.token_times.tolist())
    )
    assert short.grid == (1, 8)
    with pytest.raises(ValueError, match="patchout must be two non-negative integers"):
        build_backbone("passt_s.tiny", patchout=(-1, 2))


def test_token_times_grid_and_hidden_states() -> None:
    model = build_backbone("passt_s.tiny").eval()
    with torch.no_grad():
        out = model(noise(1, int(5 * SR)), output_hidden_states=True)
    t, f = out.grid
    assert (t, f) == (49, 12) and out.sequence.view(1, t, f, 32).shape == (1, 49, 12, 32)
    assert out.token_times.shape == (t * f,)
    columns = out.token_times.view(t, f)
    assert bool((columns == columns[:, :1]).all())  # time-major: one time per column
    torch.testing.assert_close(columns[:, 0], 0.075 + 0.1 * torch.arange(t, dtype=torch.float32))
    assert len(out.hidden_states) == model.num_layers and out.logits is None
    assert model.frame_hop == 320 and model.token_stride == 10 and model.max_seconds == pytest.approx(10.05)


def test_input_length_limits() -> None:
    model = build_backbone("passt_s.tiny").eval()
    with torch.no_grad():
        assert model(noise(1, int(10.05 * SR))).grid == (99, 12)
        assert model.max_samples == int(10.05 * SR) == 321600
        with pytest.raises(
            InputTooLongError,
            match=r"passt_s\.tiny covers at most 10\.05 s of audio \(321600 samples at 32000 Hz\) with its position "
            r"embeddings, got 10\.05 s \(321601 samples\)\. Crop the input, window it .* or use "
            r"passt_s\.audioset_20s / passt_s\.audioset_30s, trained on longer clips\.",
        ):
            model(noise(1, 321601))
        tokens = model.tokenize(model.frontend(noise(1, int(10.2 * SR))))
        with pytest.raises(InputTooLongError, match=r"got 101 token columns \(~10\.1 s; at most 99\)"):
            model.encode(tokens)
    longest = build_backbone("passt_s.audioset_30s", **TINY).eval()
    with pytest.raises(
        InputTooLongError, match=r"at most 30\.15 s .* or use a variant trained on longer clips\."
    ):
        longest(noise(1, int(30.2 * SR)))
    with torch.no_grad():
        with pytest.raises(ValueError, match="needs at least 16 frames"):
            model(noise(1, 4000))
        with pytest.raises(ValueError, match=r"expected frames \[B, 128, T\]"):
            model.tokenize(torch.zeros(1, 64, 100))
        with pytest.raises(ValueError, match=r"expected tokens \[B, T', 12, 32\]"):
            model.encode(torch.zeros(1, 10, 8, 32))


def test_keep_pretrained_head_and_unknown_kwargs() -> None:
    assert build_backbone("passt_s.tiny").head is None
    with_head = build_backbone("passt_s.tiny", keep_pretrained_head=True).eval()
    with torch.no_grad():
        assert with_head(noise(1, SR)).logits.shape == (1, 527)
    with pytest.raises(ConfigError, match=r"passt_s\.tiny: unknown option\(s\) 'bogus_option'; accepted: "):
        build_backbone("passt_s.tiny", bogus_option=1)
    cfg = get_pretrained_cfg("passt_s.tiny")
    with pytest.raises(TypeError, match="bogus_arch"):
        build_passt(dataclasses.replace(cfg, arch={**cfg.arch, "bogus_arch": 3}))


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, net = _reference("passt_s.audioset_swa", tiny=True, seed=8)
    return _save(net, tmp_path_factory.mktemp("passt_tiny") / "tiny.pt", wrapped=True)


@pytest.mark.parametrize(
    ("keys_file", "match"),
    [
        ("keys_cnn14_32k.json", "looks like a PANNs CNN14 checkpoint"),
        ("keys_ast_original_audioset.json", "looks like an original AST checkpoint"),
        ("keys_ast_hf.json", "looks like a Hugging Face AST checkpoint"),
    ],
)
def test_other_family_checkpoint_is_named(
    keys_file: str, match: str, shared_dir: Path, tmp_path: Path
) -> None:
    keys = json.loads((shared_dir / "reference" / keys_file).read_text())
    torch.save({"model": {k: torch.zeros(1) for k in keys}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=match):
        load_backbone("passt_s.tiny", checkpoint=tmp_path / "other.pth")


def test_strict_loading_errors(tiny_file: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_file, weights_only=True)["model"]
    broken = {k: v for k, v in state.items() if k != "norm.weight"} | {"extra.weight": torch.zeros(1)}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(
        CheckpointMismatchError,
        match=r"(?s)missing keys \(1\): norm\.weight.*unexpected keys \(1\): extra\.weight",
    ):
        load_backbone("passt_s.audioset_swa", checkpoint=tmp_path / "broken.pt", **TINY)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"time_new_pos_embed: checkpoint \[1, 32, 1, 99\] vs model \[1, 32, 1, 200\]",
    ):
        load_backbone("passt_s.audioset_20s", checkpoint=tiny_file, **TINY)
    (tmp_path / "cut.pt").write_bytes(tiny_file.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="could not read checkpoint"):
        load_backbone("passt_s.audioset_swa", checkpoint=tmp_path / "cut.pt", **TINY)
    torch.save({"pos_embed": torch.zeros(1, 3, 4)}, tmp_path / "vit.pt")
    with pytest.raises(CheckpointError, match="ImageNet ViT/DeiT"):
        load_backbone("passt_s.tiny", checkpoint=tmp_path / "vit.pt")


def test_bf16_autocast_close_to_fp32(tiny_file: Path) -> None:
    model = load_backbone("passt_s.audioset_swa", checkpoint=tiny_file, keep_pretrained_head=True, **TINY)
    wave = _clips(3.0)
    with torch.no_grad():
        ref = model(wave)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(wave)
    assert torch.isfinite(low.pooled).all() and torch.isfinite(low.logits).all()
    assert _rel(low.pooled.float(), ref.pooled) < 5e-2 and _rel(low.logits.float(), ref.logits) < 5e-2


def test_layer_groups_lora_targets_and_gradients() -> None:
    model = build_backbone("passt_s.tiny", keep_pretrained_head=True, patchout=(10, 2)).train()
    groups = model.layer_groups()
    assert len(groups) == model.num_layers + 2
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    targets = [n for n, m in model.named_modules() if n.endswith(model.default_lora_targets)]
    assert len(targets) == model.num_layers and all(
        isinstance(model.get_submodule(n), nn.Linear) for n in targets
    )
    model(noise(2, 2 * SR)).logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
