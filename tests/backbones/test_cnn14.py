"""PANNs CNN14 adapter: parity with panns_inference on jittered weights saved in the official file format,
strict loading, the tokenize/encode split, length rules and training-only behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from backbones import (
    CheckpointError,
    CheckpointMismatchError,
    build_backbone,
    get_pretrained_cfg,
    list_backbones,
    load_backbone,
)
from backbones.cnn14 import _drop_stripes
from backbones.config import ConfigError
from backbones.frontends import PannsLogMel
from eval import references
from tests.audio_signals import music, noise, sweep

REF_ARGS = {
    32000: {"sample_rate": 32000, "n_fft": 1024, "hop_length": 320, "f_max": 14000.0},
    16000: {"sample_rate": 16000, "n_fft": 512, "hop_length": 160, "f_max": 8000.0},
}
FRONTEND_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def jitter_(state: dict[str, torch.Tensor], seed: int) -> None:
    """Move every tensor away from its init value: weights by noise relative to their spread (BatchNorm's constant
    inits by 0.1), the DFT and mel tensors by 1 % (so only a loader that uses the stored ones can match), and
    running_var to positive random values."""
    g = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        noise_ = torch.randn(value.shape, generator=g)
        if key.endswith("num_batches_tracked"):
            value.fill_(1234)
        elif key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
        elif key in FRONTEND_KEYS:
            value.mul_(1 + 0.01 * noise_)
        else:
            spread = value.std().item() if value.numel() > 1 else 0.0
            value.add_(noise_ * (0.2 * spread if spread > 0 else 0.1))


def official_tensors(sample_rate: int) -> dict[str, torch.Tensor]:
    """The frozen STFT and mel tensors a PANNs file stores."""
    return dict(zip(FRONTEND_KEYS, references.TorchlibrosaLogmel(**REF_ARGS[sample_rate]).stored_tensors()))


def official_state(model: torch.nn.Module, sample_rate: int = 32000) -> dict[str, torch.Tensor]:
    """Our model's weights in the PANNs file layout (front-end tensors included)."""
    return {**official_tensors(sample_rate), **{k: v.clone() for k, v in model.state_dict().items()}}


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A jittered tiny CNN14 saved as the training script does (with numpy sampler state)."""
    torch.manual_seed(0)
    state = official_state(build_backbone("cnn14.tiny", keep_pretrained_head=True))
    jitter_(state, seed=5)
    path = tmp_path_factory.mktemp("cnn14") / "tiny.pth"
    sampler = {
        "indexes_per_class": [np.arange(5), np.arange(3)],
        "queue": [2, 0],
        "pointers_of_classes": [0, 1],
    }
    torch.save({"iteration": 100000, "model": state, "sampler": sampler}, path)
    return path, state


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, torch.nn.Module]]:
    """Full-size panns_inference Cnn14 at 32 and 16 kHz, jittered, saved as ``{'model': ..., 'iteration': 0}``."""
    out = {}
    for seed, sr in enumerate((32000, 16000)):
        torch.manual_seed(seed)
        ref = references.panns_cnn14(**REF_ARGS[sr])
        jitter_(ref.state_dict(), seed=seed + 10)
        path = tmp_path_factory.mktemp("cnn14") / f"ref_{sr}.pth"
        torch.save({"model": ref.state_dict(), "iteration": 0}, path)
        out[sr] = (path, ref)
    return out


def test_registry_and_configs() -> None:
    assert list_backbones("cnn14.*") == ["cnn14.audioset_16k", "cnn14.audioset_32k", "cnn14.tiny"]
    c32, c16, tiny = (get_pretrained_cfg(f"cnn14.{t}") for t in ("audioset_32k", "audioset_16k", "tiny"))
    assert c32.url == "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1"
    assert c16.url == "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth?download=1"
    assert (c32.filename, c16.filename) == ("Cnn14_mAP=0.431.pth", "Cnn14_16k_mAP=0.438.pth")
    assert {c.license for c in (c32, c16, tiny)} == {"MIT"} and c32.num_classes == c16.num_classes == 527
    assert (c32.sample_rate, c16.sample_rate, tiny.has_weights) == (32000, 16000, False)
    assert build_backbone("cnn14.tiny", n_mels=32).bn0.num_features == 32  # front-end overrides reach both
    with pytest.raises(ValueError, match="front-end sample rate 16000 != config 32000"):
        build_backbone("cnn14.tiny", sample_rate=16000, f_max=8000.0)
    assert dict(c16.frontend) == {
        **c32.frontend,
        "sample_rate": 16000,
        "n_fft": 512,
        "hop_length": 160,
        "f_max": 8000.0,
    }
    assert (c32.frontend["n_mels"], c32.frontend["f_min"], c32.frontend["f_max"]) == (64, 50.0, 14000.0)


@pytest.mark.parametrize("sample_rate", [32000, 16000])
def test_parity_with_panns_inference(sample_rate: int, reference_files: dict, shared_dir: Path) -> None:
    path, ref = reference_files[sample_rate]
    layout = json.loads((shared_dir / "reference" / f"keys_cnn14_{sample_rate // 1000}k.json").read_text())
    saved = torch.load(path, weights_only=True)["model"]
    assert {k: list(v.shape) for k, v in saved.items()} == layout  # the official file layout, exactly

    bb = load_backbone(f"cnn14.audioset_{sample_rate // 1000}k", checkpoint=path, keep_pretrained_head=True)
    own = {k: list(v.shape) for k, v in bb.state_dict().items()}
    assert own == {k: s for k, s in layout.items() if k not in FRONTEND_KEYS}  # nearly identity remap
    n = 2 * sample_rate
    wave = torch.cat([music(1, n, sample_rate, seed=1), noise(1, n, seed=2), sweep(n, sample_rate)[None]])
    block6: list[torch.Tensor] = []
    hook = ref.conv_block6.register_forward_hook(lambda m, i, o: block6.append(o))
    with torch.inference_mode():
        expected = ref(wave)
        ref_logits = ref.fc_audioset(expected["embedding"])
        out = bb(wave)
    hook.remove()
    assert (
        rel_err(expected["embedding"][0], expected["embedding"][1]) > 1e-2
    )  # the clips give different outputs
    assert rel_err(out.pooled, expected["embedding"]) <= 1e-4
    assert rel_err(out.logits, ref_logits) <= 1e-4
    assert rel_err(torch.sigmoid(out.logits), expected["clipwise_output"]) <= 1e-4
    assert (
        0.05 < expected["clipwise_output"].median() < 0.95
    )  # not saturated, so the comparison means something
    assert rel_err(out.sequence, block6[0].mean(dim=3).transpose(1, 2)) <= 1e-4
    assert out.grid == (6, 1) and out.sequence.shape == (3, 6, 2048)


def test_other_rate_checkpoint_lists_shape_mismatches(reference_files: dict) -> None:
    path16, _ = reference_files[16000]
    with pytest.raises(CheckpointMismatchError) as info:
        load_backbone("cnn14.audioset_32k", checkpoint=path16)
    err = info.value
    assert (err.missing, err.unexpected) == ([], [])
    assert err.mismatched == [
        ("spectrogram_extractor.stft.conv_real.weight", (257, 1, 512), (513, 1, 1024)),
        ("spectrogram_extractor.stft.conv_imag.weight", (257, 1, 512), (513, 1, 1024)),
        ("logmel_extractor.melW", (257, 64), (513, 64)),
    ]
    assert "shape mismatch for logmel_extractor.melW: checkpoint [257, 64] vs model [513, 64]" in str(err)


def test_tiny_round_trip_through_official_file(tiny_file: tuple[Path, dict]) -> None:
    """The training script's container (with numpy sampler state) loads, and every stored tensor is used."""
    path, state = tiny_file
    bb = load_backbone("cnn14.tiny", checkpoint=path, keep_pretrained_head=True)
    for key, value in bb.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key
    ref = references.TorchlibrosaLogmel(**REF_ARGS[32000])
    with torch.no_grad():
        for param, key in zip(ref.stored_tensors(), FRONTEND_KEYS):
            param.copy_(state[key])
    wave = music(1, 32000, 32000)
    default = build_backbone("cnn14.tiny").eval()
    with torch.inference_mode():
        expected = ref(wave)
        assert rel_err(bb.frontend(wave), expected) <= 1e-5  # frames from the stored (jittered) tensors...
        assert (default.frontend(wave) - expected).abs().max() > 0.01  # ...which differ from computed ones


def test_head_dropped_unless_kept(tiny_file: tuple[Path, dict]) -> None:
    bb = load_backbone("cnn14.tiny", checkpoint=tiny_file[0])
    assert bb.fc_audioset is None and not any("fc_audioset" in k for k in bb.state_dict())
    out = bb(noise(1, 16000, seed=1))
    assert out.logits is None and out.pooled.shape == (1, 64)


def test_data_parallel_prefix_is_stripped(tiny_file: tuple[Path, dict], tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in tiny_file[1].items()}
    torch.save({"model": state}, tmp_path / "dp.pth")
    bb = build_backbone("cnn14.tiny", keep_pretrained_head=True)
    assert bb.load_official_state_dict(state) == "panns (DataParallel 'module.' prefix)"
    assert torch.equal(bb.fc1.weight, tiny_file[1]["fc1.weight"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.pop("conv_block3.bn1.running_mean"),
            r"missing keys \(1\): conv_block3.bn1.running_mean",
        ),
        (lambda s: s.pop("logmel_extractor.melW"), r"missing keys \(1\): logmel_extractor.melW"),
        (lambda s: s.__setitem__("fc2.weight", torch.zeros(2)), r"unexpected keys \(1\): fc2.weight"),
        (
            lambda s: s.__setitem__("fc1.weight", torch.zeros(3, 3)),
            r"fc1.weight: checkpoint \[3, 3\] vs model \[64, 64\]",
        ),
    ],
)
def test_strict_loading_errors(tiny_file: tuple[Path, dict], edit, message: str) -> None:
    state = dict(tiny_file[1])
    edit(state)
    bb = build_backbone("cnn14.tiny", keep_pretrained_head=True)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=message):
        bb.load_official_state_dict(state)
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())  # nothing half-loaded
    wave, fresh = noise(1, 16000), build_backbone("cnn14.tiny")
    with torch.inference_mode():
        assert torch.equal(bb.frontend(wave), fresh.frontend(wave))  # the front-end kept its own tensors


@pytest.mark.parametrize(
    ("layout", "family"),
    [
        ("keys_ast_original_audioset.json", r"looks like AST \(original"),
        ("keys_ast_hf.json", r"looks like AST \(Hugging Face"),
        ("keys_passt_s_f128_p16_s10.json", "looks like PaSST"),
    ],
)
def test_other_family_is_named(layout: str, family: str, shared_dir: Path) -> None:
    keys = json.loads((shared_dir / "reference" / layout).read_text())
    state = {k: torch.zeros(1) for k in keys}
    with pytest.raises(CheckpointError, match=family):
        build_backbone("cnn14.tiny").load_official_state_dict(state)


def test_other_panns_architecture_and_garbage(tiny_file: tuple[Path, dict], tmp_path: Path) -> None:
    cnn10 = {k: v for k, v in tiny_file[1].items() if not k.startswith(("conv_block5", "conv_block6"))}
    with pytest.raises(CheckpointError, match=r"has 4 conv blocks \(e.g. Cnn6/Cnn10\)"):
        build_backbone("cnn14.tiny").load_official_state_dict(cnn10)
    with pytest.raises(CheckpointError, match="not a PANNs CNN14 checkpoint"):
        build_backbone("cnn14.tiny").load_official_state_dict({"encoder.weight": torch.zeros(1)})
    blob = tiny_file[0].read_bytes()
    (tmp_path / "cut.pth").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="could not read checkpoint"):
        load_backbone("cnn14.tiny", checkpoint=tmp_path / "cut.pth")


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"cnn14\.tiny: unknown option\(s\) 'patchout'; accepted: .*dft"):
        build_backbone("cnn14.tiny", patchout=(0, 0))
    with pytest.raises(
        ConfigError,
        match=r"unknown option\(s\) 'spec_augmnet' \(did you mean 'spec_augment'\?\); "
        r"accepted: amin, cmvn, compression, dft, dropout, embed_dropout, f_max, f_min, freq_mask, hop_length, "
        r"keep_pretrained_head, mask_stripes, n_fft, n_mels, pcen_bias, pcen_eps, pcen_gain, pcen_power, "
        r"pcen_time_constant, sample_rate, spec_augment, time_mask, widths$",
    ):
        build_backbone("cnn14.tiny", spec_augmnet=True)


def test_every_frontend_option_is_an_override(tiny_file: tuple[Path, dict]) -> None:
    """The README's faster PANNs front-end (``dft="fft"``) and the PCEN settings reach the front-end, are
    recorded in the config, and loading weights keeps the chosen DFT."""
    fast = load_backbone("cnn14.tiny", checkpoint=tiny_file[0], dft="fft")
    assert fast.frontend.dft == "fft" and not fast.frontend.official_tensors
    assert fast.pretrained_cfg.frontend["dft"] == "fft"
    wave = music(1, 32000, 32000, seed=3)
    cfg = get_pretrained_cfg("cnn14.tiny")
    with torch.inference_mode():
        assert torch.equal(fast.frontend(wave), PannsLogMel(**cfg.frontend, dft="fft")(wave))
    exact = load_backbone("cnn14.tiny", checkpoint=tiny_file[0])
    assert exact.frontend.dft == "matrix" and exact.frontend.official_tensors
    pcen = build_backbone("cnn14.tiny", compression="pcen", pcen_gain=0.8).frontend
    assert pcen.compression == "pcen" and pcen.pcen.gain == 0.8


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_own_state_dict_save_loads_back(suffix: str, tmp_path: Path) -> None:
    """Our own saves lack the PANNs front-end tensors (non-persistent buffers): they load with the computed
    front-end, and the model reproduces the saved one exactly."""
    torch.manual_seed(0)
    saved = build_backbone("cnn14.tiny", keep_pretrained_head=True).eval()
    jitter_(saved.state_dict(), seed=3)  # state_dict() shares storage: this moves the model's own tensors
    path = tmp_path / f"own{suffix}"
    if suffix == ".pth":
        torch.save(saved.state_dict(), path)
    else:
        save_file(saved.state_dict(), str(path))
    loaded = load_backbone("cnn14.tiny", checkpoint=path, keep_pretrained_head=True)
    assert not loaded.frontend.official_tensors
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    wave = music(2, 48000, 32000, seed=9)
    with torch.inference_mode():
        assert torch.equal(loaded(wave).logits, saved(wave).logits)


def test_mismatches_are_all_listed_with_or_without_frontend_tensors(tiny_file: tuple[Path, dict]) -> None:
    own = {k: v for k, v in tiny_file[1].items() if k not in FRONTEND_KEYS}  # as our own saves are
    del own["conv_block2.conv1.weight"]
    own["fc1.weight"] = torch.zeros(3, 3)
    own["bogus.weight"] = torch.zeros(1)
    model = build_backbone("cnn14.tiny", keep_pretrained_head=True)
    with pytest.raises(CheckpointMismatchError) as info:
        model.load_official_state_dict(own)
    err = info.value
    assert (err.missing, err.unexpected) == (["conv_block2.conv1.weight"], ["bogus.weight"])
    assert err.mismatched == [("fc1.weight", (3, 3), (64, 64))]
    # One front-end tensor of three: the other two are listed with everything else, not instead of it.
    with pytest.raises(CheckpointMismatchError) as info:
        model.load_official_state_dict({**own, FRONTEND_KEYS[2]: tiny_file[1][FRONTEND_KEYS[2]]})
    err = info.value
    assert err.missing == ["conv_block2.conv1.weight", *FRONTEND_KEYS[:2]] and err.unexpected == [
        "bogus.weight"
    ]
    assert err.mismatched == [("fc1.weight", (3, 3), (64, 64))]
    assert "missing keys (3): conv_block2.conv1.weight, spectrogram_extractor.stft.conv_real.weight" in str(
        err
    )


def test_any_length_from_the_minimum_on() -> None:
    bb = build_backbone("cnn14.tiny").eval()
    assert bb.max_frames is None and bb.max_samples is None and bb.max_seconds is None
    with torch.inference_mode():
        assert bb(noise(1, 40 * 32000, seed=4)).grid == (4001 // 32, 1)


def test_minimum_length() -> None:
    bb = build_backbone("cnn14.tiny").eval()
    assert bb.min_samples == 31 * 320
    with pytest.raises(ValueError, match=r"at least 9920 samples \(0.31 s at 32000 Hz\)"):
        bb(noise(1, 9919))
    assert bb(noise(1, 9920)).grid == (1, 1)
    with pytest.raises(ValueError, match="at least 32 frames"):
        bb.tokenize(torch.zeros(1, 64, 31))


@pytest.mark.parametrize("seconds", [0.5, 2.5, 10.0])
def test_variable_length_grid_and_times(seconds: float) -> None:
    bb = build_backbone("cnn14.tiny").eval()
    n = int(seconds * 32000)
    frames = 1 + n // 320
    with torch.inference_mode():
        out = bb(noise(2, n, seed=3), output_hidden_states=True)
    steps = frames // 32
    assert out.grid == (steps, 1) and out.sequence.shape == (2, steps, 64) and out.pooled.shape == (2, 64)
    expected_times = (torch.arange(steps) * 32 + 15.5) * 0.01
    torch.testing.assert_close(out.token_times, expected_times)
    assert len(out.hidden_states) == bb.num_layers == 6
    lengths = [h.shape[1] for h in out.hidden_states]
    assert lengths == [frames // 2, frames // 4, frames // 8, frames // 16, steps, steps]
    assert [h.shape[2] for h in out.hidden_states] == [8, 16, 32, 32, 64, 64]
    assert torch.equal(out.hidden_states[-1], out.sequence)


def test_tokenize_encode_split_and_locality() -> None:
    bb = build_backbone("cnn14.tiny").eval()
    wave = music(1, 64000, 32000, seed=4)
    with torch.inference_mode():
        frames = bb.frontend(wave)
        tokens = bb.tokenize(frames)
        assert tokens.shape == (1, frames.shape[-1] // 2, 8, 32) and bb.token_stride == 2
        torch.testing.assert_close(bb.encode(tokens).pooled, bb(wave).pooled, rtol=0, atol=0)
        # A token column depends on nearby frames only: cutting the clip leaves all but the last columns alone.
        short = bb.tokenize(bb.frontend(wave[:, :32000]))
    keep = short.shape[1] - 3
    torch.testing.assert_close(short[:, :keep], tokens[:, :keep], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(short[:, -1], tokens[:, short.shape[1] - 1], atol=1e-3)


def test_dropout_and_spec_augment_only_in_training() -> None:
    torch.manual_seed(0)
    plain = build_backbone("cnn14.tiny")
    masked = build_backbone("cnn14.tiny", spec_augment=True)
    masked.load_state_dict(plain.state_dict())
    frames = plain.frontend(noise(2, 64000, seed=6))
    plain.eval(), masked.eval()
    with torch.no_grad():
        torch.testing.assert_close(masked.tokenize(frames), plain.tokenize(frames), rtol=0, atol=0)
        assert torch.equal(plain(noise(1, 32000)).pooled, plain(noise(1, 32000)).pooled)
        plain.train(), masked.train()
        assert not torch.allclose(masked.tokenize(frames), plain.tokenize(frames))
        first, second = plain(noise(1, 32000)).pooled, plain(noise(1, 32000)).pooled
    assert not torch.equal(first, second)


def test_drop_stripes_masks_whole_bands() -> None:
    torch.manual_seed(0)
    x = torch.ones(16, 1, 500, 64)
    time_masked = _drop_stripes(x, 2, 64, 2)
    zero_cols = (time_masked == 0).all(dim=3).squeeze(1)  # [B, T]
    assert torch.equal((time_masked == 0).any(dim=3).squeeze(1), zero_cols)  # whole frames, never parts
    assert zero_cols.sum(dim=1).max() <= 2 * 63 and zero_cols.any()
    freq_masked = _drop_stripes(x, 3, 8, 2)
    zero_bins = (freq_masked == 0).all(dim=2).squeeze(1)
    assert zero_bins.sum(dim=1).max() <= 2 * 7 and zero_bins.any()


def test_layer_groups_lora_targets_and_bf16() -> None:
    bb = build_backbone("cnn14.tiny", keep_pretrained_head=True).eval()
    groups = bb.layer_groups()
    assert len(groups) == 7
    assert sorted(id(p) for g in groups for p in g) == sorted(id(p) for p in bb.parameters())
    names = [n for n, _ in bb.named_modules()]
    for suffix in bb.default_lora_targets:
        assert any(n.split(".")[-1] == suffix for n in names), suffix
    wave = music(2, 48000, 32000, seed=7)
    with torch.inference_mode():
        ref = bb(wave).pooled
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = bb(wave).pooled
    assert torch.isfinite(low).all() and rel_err(low.float(), ref) < 5e-2


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    bb = build_backbone("cnn14.tiny", keep_pretrained_head=True, spec_augment=True).train()
    out = bb(music(2, 32000, 32000, seed=8))
    (out.pooled.sum() + out.logits.sum()).backward()
    for name, param in bb.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, (
            name
        )
