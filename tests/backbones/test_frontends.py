"""Front-ends against their references (torchaudio's Kaldi fbank, transformers' AST extractor, hear21passt,
torchlibrosa, librosa), chunked streaming, PCEN / CMVN and input errors."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from backbones.frontends import (
    KaldiFbank,
    PannsLogMel,
    PasstMel,
    kaldi_mel_banks,
    panns_stft_weights,
    slaney_mel_banks,
)
from tests.audio_signals import music, noise, sweep

SECONDS = (1.0, 3.3, 10.0)
AST_PAD = 4.2677393 / (2 * 4.5689974)  # a padded (log 0) frame after AST's normalisation
PANNS = {
    "32k": dict(sample_rate=32000, n_fft=1024, hop_length=320, f_max=14000.0),
    "16k": dict(sample_rate=16000, n_fft=512, hop_length=160, f_max=8000.0),
}
SIGNALS = {
    "noise": lambda n, sr: noise(3, n, seed=1),
    "music": lambda n, sr: music(3, n, sr, seed=2),
    "sweep": lambda n, sr: sweep(n, sr)[None],
}


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def signal(kind: str, seconds: float, sample_rate: int) -> Tensor:
    """Batch 3 for noise and music, batch 1 for the sweep."""
    return SIGNALS[kind](int(seconds * sample_rate), sample_rate)


def kaldi_reference(x: Tensor, frames: int = 1024) -> Tensor:
    """torchaudio's fbank as AST calls it, padded/cropped to ``frames`` and normalised, as [B, 128, frames]."""
    import torchaudio.compliance.kaldi as ta_kaldi

    out = []
    for item in x:
        fbank = ta_kaldi.fbank(
            item[None],
            htk_compat=True,
            sample_frequency=16000,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=128,
            dither=0.0,
            frame_shift=10,
        )
        fbank = F.pad(fbank, (0, 0, 0, max(0, frames - fbank.shape[0])))[:frames]
        out.append(((fbank + 4.2677393) / (4.5689974 * 2)).T)
    return torch.stack(out)


@functools.cache
def hear21passt_mel(train: bool = False) -> torch.nn.Module:
    """``AugmentMelSTFT`` with ``get_basic_model``'s values (masks off in train mode, to compare the jitter)."""
    from hear21passt.models.preprocess import AugmentMelSTFT

    masks = (0, 0) if train else (48, 192)
    mel = AugmentMelSTFT(
        n_mels=128,
        sr=32000,
        win_length=800,
        hopsize=320,
        n_fft=1024,
        freqm=masks[0],
        timem=masks[1],
        htk=False,
        fmin=0.0,
        fmax=None,
        norm=1,
        fmin_aug_range=10,
        fmax_aug_range=2000,
    )
    return mel.train(train)


@functools.cache
def torchlibrosa_logmel(config: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """torchlibrosa's Spectrogram + LogmelFilterBank configured as panns_inference's Cnn14.__init__."""
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    cfg = PANNS[config]
    spec = Spectrogram(
        n_fft=cfg["n_fft"],
        hop_length=cfg["hop_length"],
        win_length=cfg["n_fft"],
        window="hann",
        center=True,
        pad_mode="reflect",
        freeze_parameters=True,
    )
    logmel = LogmelFilterBank(
        sr=cfg["sample_rate"],
        n_fft=cfg["n_fft"],
        n_mels=64,
        fmin=50.0,
        fmax=cfg["f_max"],
        ref=1.0,
        amin=1e-10,
        top_db=None,
        freeze_parameters=True,
    )
    return spec, logmel


def panns_reference(config: str, x: Tensor) -> Tensor:
    spec, logmel = torchlibrosa_logmel(config)
    return logmel(spec(x))[:, 0].mT


# ----------------------------------------------------------------------------------------------- filterbanks


@pytest.mark.parametrize(
    ("n_mels", "n_fft", "sr", "f_min", "f_max"),
    [(64, 1024, 32000, 50.0, 14000.0), (64, 512, 16000, 50.0, 8000.0), (128, 2048, 22050, 0.0, 11025.0)],
)
def test_slaney_bank_equals_librosa(n_mels: int, n_fft: int, sr: int, f_min: float, f_max: float) -> None:
    import librosa

    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max).T
    assert torch.equal(slaney_mel_banks(n_mels, n_fft, sr, f_min, f_max), torch.from_numpy(ref))


@pytest.mark.parametrize(
    ("n_fft", "sr", "f_min", "f_max"), [(512, 16000, 20.0, 8000.0), (1024, 32000, 0.0, 15000.0)]
)
def test_kaldi_bank_matches_torchaudio(n_fft: int, sr: int, f_min: float, f_max: float) -> None:
    import torchaudio.compliance.kaldi as ta_kaldi

    ref, _ = ta_kaldi.get_mel_banks(128, n_fft, sr, f_min, f_max, 100.0, -500.0, 1.0)
    ours = kaldi_mel_banks(128, n_fft, sr, f_min, f_max)
    assert ours.shape == (n_fft // 2 + 1, 128)
    assert torch.all(ours[-1] == 0)  # Nyquist bin
    torch.testing.assert_close(ours[:-1].T, ref, atol=2e-5, rtol=0)  # torchaudio builds it in float32


# ---------------------------------------------------------------------------------------------- parity: AST


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("kind", list(SIGNALS))
def test_kaldi_fbank_matches_torchaudio(kind: str, seconds: float) -> None:
    x = signal(kind, seconds, 16000)
    ours = KaldiFbank()(x)
    assert ours.shape == (x.shape[0], 128, 1024) and ours.dtype == torch.float32
    assert (ours - kaldi_reference(x)).abs().max() <= 1e-3
    real = 1 + (x.shape[-1] - 400) // 160
    assert torch.allclose(ours[..., real:], torch.tensor(AST_PAD), atol=1e-6)  # padded before normalising


@pytest.mark.parametrize("seconds", [3.3, 11.0])  # 11 s: 1098 frames, cropped to 1024
def test_kaldi_fbank_matches_ast_feature_extractor(seconds: float) -> None:
    from transformers import ASTFeatureExtractor

    x = signal("music", seconds, 16000)
    ref = ASTFeatureExtractor()([item.numpy() for item in x], sampling_rate=16000, return_tensors="pt")
    ref = ref["input_values"].mT  # [B, T, F] -> [B, F, T]
    assert ref.shape == (3, 128, 1024)
    assert (KaldiFbank()(x) - ref).abs().max() <= 1e-3


# -------------------------------------------------------------------------------------------- parity: PaSST


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("kind", list(SIGNALS))
def test_passt_mel_matches_hear21passt(kind: str, seconds: float) -> None:
    x = signal(kind, seconds, 32000)
    ours = PasstMel().eval()(x)
    assert ours.shape == (x.shape[0], 128, 1 + (x.shape[-1] - 1) // 320)
    assert (ours - hear21passt_mel()(x)).abs().max() <= 1e-3


def test_passt_train_mode_jitters_like_hear21passt() -> None:
    x = signal("music", 1.0, 32000)
    ours = PasstMel().train()
    outs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        outs.append(ours(x))
        torch.manual_seed(seed)
        assert (outs[-1] - hear21passt_mel(train=True)(x)).abs().max() <= 1e-3
    assert (outs[0] - outs[1]).abs().max() > 1e-2  # a different draw, a different filterbank
    evaluated = ours.eval()(x)
    assert torch.equal(evaluated, ours(x))  # eval is deterministic
    assert (outs[0] - evaluated).abs().max() > 1e-2


# -------------------------------------------------------------------------------------------- parity: PANNs


@pytest.mark.parametrize("config", list(PANNS))
def test_panns_dft_weights_equal_torchlibrosa(config: str) -> None:
    """The analytic windowed DFT matrix is the one PANNs stores, bit for bit."""
    spec, _ = torchlibrosa_logmel(config)
    real, imag = panns_stft_weights(PANNS[config]["n_fft"])
    assert real.dtype == imag.dtype == torch.float32
    assert torch.equal(real, spec.stft.conv_real.weight) and torch.equal(imag, spec.stft.conv_imag.weight)


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("kind", list(SIGNALS))
@pytest.mark.parametrize("config", list(PANNS))
def test_panns_logmel_matches_torchlibrosa(config: str, kind: str, seconds: float) -> None:
    """The default conv-DFT path: within 1e-3 dB of torchlibrosa everywhere, the rounding-noise bins far below a
    frame's peak (a sweep's, down to the -100 dB clamp) included."""
    x = signal(kind, seconds, PANNS[config]["sample_rate"])
    ours = PannsLogMel(**PANNS[config])
    assert ours.dft == "matrix" and not ours.official_tensors
    out, ref = ours(x), panns_reference(config, x)
    assert out.shape == ref.shape == (x.shape[0], 64, 1 + x.shape[-1] // PANNS[config]["hop_length"])
    if kind != "noise":  # the quiet bins are part of the comparison (white noise has none)
        assert (ref < -60.0).float().mean() > 0.2 and ref.min() == -100.0
    assert (out - ref).abs().max() <= 1e-3


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("kind", list(SIGNALS))
@pytest.mark.parametrize("config", list(PANNS))
def test_panns_fft_option_matches_torchlibrosa_above_minus_30_db(
    config: str, kind: str, seconds: float
) -> None:
    """The FFT path against torchlibrosa's conv-DFT: within 1e-3 dB wherever the reference is above -30 dB.
    Below that the two float32 algorithms' rounding noise (about 1e-6 of the frame's peak amplitude) differs, and
    neither is closer to a float64 computation than the other; there both stay within 0.5 dB (and clamp at
    -100 dB alike). Noise is above -30 dB everywhere, so it is compared everywhere."""
    x = signal(kind, seconds, PANNS[config]["sample_rate"])
    ours = PannsLogMel(**PANNS[config], dft="fft")(x)
    ref = panns_reference(config, x)
    assert ours.shape == ref.shape
    diff = (ours - ref).abs()
    loud = ref > -30.0
    assert loud.float().mean() > {"noise": 0.999, "music": 0.1, "sweep": 0.05}[kind]  # a sweep is narrowband
    assert diff[loud].max() <= 1e-3
    assert diff.max() <= 0.5


@pytest.mark.parametrize("kind", list(SIGNALS))
@pytest.mark.parametrize("config", list(PANNS))
def test_panns_official_tensors_match_torchlibrosa(config: str, kind: str) -> None:
    x = signal(kind, 3.3, PANNS[config]["sample_rate"])
    spec, logmel = torchlibrosa_logmel(config)
    ours = PannsLogMel(**PANNS[config], dft="fft")
    ours.use_official_tensors(spec.stft.conv_real.weight, spec.stft.conv_imag.weight, logmel.melW)
    assert torch.equal(ours.mel_fb, logmel.melW)
    assert ours.dft == "matrix" and ours.official_tensors and ours.window is None
    out = ours(x)
    assert (out - panns_reference(config, x)).abs().max() <= 1e-3  # everywhere, floor included
    assert torch.equal(out, PannsLogMel(**PANNS[config])(x))  # the computed tensors are the stored ones


def test_panns_dft_matrix_covers_only_the_bins_the_mel_bank_uses() -> None:
    """At 32 kHz the 14 kHz top and 50 Hz bottom leave bins 0, 1 and 448..512 out of every filter."""
    ours = PannsLogMel(**PANNS["32k"])
    assert ours.dft_weight.shape == (2 * 446, 1, 1024)
    used = (ours.mel_fb != 0).any(1).nonzero()[:, 0]
    assert (int(used[0]), int(used[-1])) == (2, 447)
    real, imag = panns_stft_weights(1024)
    assert torch.equal(ours.dft_weight, torch.cat([real[2:448], imag[2:448]]))


def test_panns_official_tensors_reject_bad_shapes() -> None:
    spec16, logmel16 = torchlibrosa_logmel("16k")
    spec32, logmel32 = torchlibrosa_logmel("32k")
    ours = PannsLogMel(**PANNS["32k"])
    before = ours.dft_weight.clone()
    with pytest.raises(ValueError, match=r"n_fft=1024.*stft_real': \(257, 1, 512\)"):
        ours.use_official_tensors(spec16.stft.conv_real.weight, spec32.stft.conv_imag.weight, logmel32.melW)
    with pytest.raises(ValueError, match=r"mel_w': \(513, 32\)"):
        ours.use_official_tensors(
            spec32.stft.conv_real.weight, spec32.stft.conv_imag.weight, logmel32.melW[:, :32]
        )
    assert torch.equal(ours.dft_weight, before) and not ours.official_tensors  # nothing was half-applied


def test_panns_bad_dft_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"dft must be one of \('matrix', 'fft'\), got 'conv'"):
        PannsLogMel(dft="conv")
    with pytest.raises(ValueError, match=r"n_fft must be even and >= 2, got 511"):
        panns_stft_weights(511)


# ------------------------------------------------------------------------------------------------ streaming

FRONTENDS = {
    "kaldi": lambda: KaldiFbank(target_frames=None),
    "kaldi_pcen": lambda: KaldiFbank(target_frames=None, compression="pcen"),
    "passt": lambda: PasstMel().eval(),
    "passt_pcen": lambda: PasstMel(compression="pcen").eval(),
    "panns_32k": lambda: PannsLogMel(**PANNS["32k"]),
    "panns_16k": lambda: PannsLogMel(**PANNS["16k"]),
    "panns_fft_32k": lambda: PannsLogMel(**PANNS["32k"], dft="fft"),
    "panns_fft_16k": lambda: PannsLogMel(**PANNS["16k"], dft="fft"),
    "panns_pcen": lambda: PannsLogMel(compression="pcen"),
}


def streamed(frontend: torch.nn.Module, x: Tensor, chunk: int) -> Tensor:
    stream = frontend.stream()
    parts = [stream.push(x[:, i : i + chunk]) for i in range(0, x.shape[-1], chunk)]
    return torch.cat([*parts, stream.flush()], dim=-1)


@pytest.mark.parametrize("chunk", [1, 317, 16001])
@pytest.mark.parametrize("name", list(FRONTENDS))
def test_stream_equals_whole_signal(name: str, chunk: int) -> None:
    """Every frame, the reflect-padded edges of the centred STFTs included, to float rounding."""
    frontend = FRONTENDS[name]()
    seconds = 0.2 if chunk == 1 else 2.1
    x = music(2, int(seconds * frontend.sample_rate), frontend.sample_rate, seed=5)
    whole = frontend(x)
    assert whole.shape[-1] == frontend.num_frames(x.shape[-1])
    torch.testing.assert_close(streamed(frontend, x, chunk), whole, atol=1e-5, rtol=1e-6)


def test_kaldi_stream_gives_the_unpadded_frames_of_the_ast_input() -> None:
    frontend = KaldiFbank()
    x = signal("music", 3.3, 16000)
    whole = frontend(x)
    frames = streamed(frontend, x, 4000)
    assert frames.shape[-1] == 1 + (x.shape[-1] - 400) // 160 < 1024
    torch.testing.assert_close(frames, whole[..., : frames.shape[-1]], atol=1e-6, rtol=0)


def test_stream_emits_each_frame_as_soon_as_its_samples_are_in() -> None:
    x = signal("noise", 1.0, 32000)
    kaldi = KaldiFbank().stream()
    assert [kaldi.push(x[:, a:b]).shape[-1] for a, b in [(0, 399), (399, 400), (400, 559), (559, 560)]] == [
        0,
        1,
        0,
        1,
    ]
    assert kaldi.flush().shape == (3, 128, 0)
    passt = PasstMel().eval().stream()  # frame 0 needs 512 pre-emphasised samples plus one for the reflection
    assert [passt.push(x[:, a:b]).shape[-1] for a, b in [(0, 513), (513, 514), (514, 834), (834, 835)]] == [
        0,
        1,
        1,
        0,
    ]


def test_stream_state_resets_after_flush() -> None:
    frontend = PannsLogMel(compression="pcen")
    x = signal("music", 1.0, 32000)
    stream = frontend.stream()
    first = torch.cat([stream.push(x), stream.flush()], dim=-1)
    second = torch.cat([stream.push(x), stream.flush()], dim=-1)
    assert torch.equal(first, second)


def test_stream_errors() -> None:
    x = signal("noise", 1.0, 32000)
    stream = PasstMel().eval().stream()
    with pytest.raises(ValueError, match=r"before any push"):
        stream.flush()
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        stream.push(x[0])
    stream.push(x[:, :100])
    with pytest.raises(ValueError, match=r"carries 3 signals, got a chunk of 1"):
        stream.push(x[:1, 100:200])
    with pytest.raises(ValueError, match=r"at least 514 samples.*got 100"):
        stream.flush()
    with pytest.raises(ValueError, match=r"CMVN"):
        KaldiFbank(cmvn=True).stream()


# --------------------------------------------------------------------------------------------- PCEN and CMVN


def _librosa_pcen(mel: Tensor, sample_rate: int, hop: int, **params: float) -> np.ndarray:
    import librosa

    S = mel.double().numpy()
    frames = params.get("time_constant", 0.4) * sample_rate / hop
    b = (math.sqrt(1 + 4 * frames**2) - 1) / (2 * frames**2)
    return librosa.pcen(S, sr=sample_rate, hop_length=hop, zi=(1 - b) * S[..., :1], **params)


@pytest.mark.parametrize("params", [{}, {"gain": 0.8, "bias": 10.0, "power": 0.25, "time_constant": 0.06}])
def test_pcen_matches_librosa(params: dict[str, float]) -> None:
    x = signal("music", 3.3, 16000)
    ours = KaldiFbank(target_frames=None, compression="pcen", **{f"pcen_{k}": v for k, v in params.items()})(
        x
    )
    mel = KaldiFbank(target_frames=None)._mel_power(x, augment=False)
    np.testing.assert_allclose(ours.numpy(), _librosa_pcen(mel, 16000, 160, **params), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [KaldiFbank, PasstMel, PannsLogMel])
def test_pcen_barely_moves_under_a_20_db_gain_where_log_mel_does(cls: type) -> None:
    sr = 16000 if cls is KaldiFbank else 32000
    x = music(2, 2 * sr, sr, seed=4)

    def change(frontend: torch.nn.Module) -> float:
        base = frontend(x)
        return float((frontend(10 * x) - base).abs().mean() / base.std())

    log, pcen = change(cls().eval()), change(cls(compression="pcen").eval())
    assert pcen < 0.1
    assert pcen < log / 3


@pytest.mark.parametrize("cls", [KaldiFbank, PasstMel, PannsLogMel])
@pytest.mark.parametrize("compression", ["log", "pcen"])
def test_cmvn_standardises_each_mel_bin(cls: type, compression: str) -> None:
    sr = 16000 if cls is KaldiFbank else 32000
    x = signal("noise", 3.3, sr)
    frontend = cls(compression=compression, cmvn=True).eval()
    feats = frontend(x)
    real = feats[..., : frontend.num_frames(x.shape[-1])]
    assert real.mean(-1).abs().max() < 1e-4
    # The lowest Kaldi triangles are narrower than one FFT bin and stay empty: constant in, 0 out.
    constant = cls(compression=compression).eval()(x)[..., : real.shape[-1]].std(-1) == 0
    std = real.std(-1, correction=0)
    assert torch.all(std[constant] == 0) and (std[~constant] - 1).abs().max() < 1e-3
    assert (~constant).float().mean() > 0.9
    assert torch.all(feats[..., real.shape[-1] :] == 0)  # KaldiFbank pads the 1024 frames with the mean
    if compression == "log" and cls is not PasstMel:  # a gain is a per-bin log offset, which CMVN removes
        # (PaSST's log(x + 1e-5) is not scale-invariant in its quiet pre-emphasised low bins)
        torch.testing.assert_close(frontend(4 * x), feats, atol=2e-3, rtol=0)


def test_pcen_options_are_validated() -> None:
    with pytest.raises(TypeError, match=r"pcen_gian.*pcen_gain"):
        KaldiFbank(compression="pcen", pcen_gian=0.9)
    with pytest.raises(ValueError, match=r"time_constant"):
        PannsLogMel(compression="pcen", pcen_time_constant=0.0)
    with pytest.raises(ValueError, match=r"compression must be one of"):
        PasstMel(compression="db")


# -------------------------------------------------------------------------------------- module and input contract


@pytest.mark.parametrize("name", ["kaldi", "passt", "panns_32k", "panns_fft_32k"])
def test_buffers_only_and_float32_under_autocast(name: str) -> None:
    frontend = FRONTENDS[name]()
    assert list(frontend.parameters()) == [] and frontend.state_dict() == {}
    x = signal("music", 1.0, frontend.sample_rate)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = frontend(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, frontend(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(frontend(x.double()), frontend(x), atol=0, rtol=0)
    moved = frontend.to("meta")
    assert {b.device.type for b in moved.buffers()} == {"meta"}


@pytest.mark.parametrize("name", ["kaldi", "passt", "panns_32k", "panns_fft_32k"])
def test_differentiable_with_respect_to_the_waveform(name: str) -> None:
    frontend = FRONTENDS[name]()
    x = signal("music", 1.0, frontend.sample_rate)[:1].clone().requires_grad_()
    feats = frontend(x)
    assert torch.equal(feats, frontend(x.detach()))  # the autograd path computes the same numbers
    feats.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_official_tensors_move_with_the_module() -> None:
    spec, logmel = torchlibrosa_logmel("16k")
    frontend = PannsLogMel(**PANNS["16k"])
    frontend.use_official_tensors(spec.stft.conv_real.weight, spec.stft.conv_imag.weight, logmel.melW)
    assert frontend.to("meta").dft_weight.device.type == "meta"


@pytest.mark.parametrize(
    ("name", "shortest"), [("kaldi", 400), ("passt", 514), ("panns_32k", 513), ("panns_16k", 257)]
)
def test_too_short_input_is_rejected(name: str, shortest: int) -> None:
    frontend = FRONTENDS[name]()
    assert frontend.min_samples == shortest
    assert frontend(noise(2, shortest)).shape == (2, frontend.n_mels, frontend.num_frames(shortest))
    with pytest.raises(
        ValueError, match=rf"needs at least {shortest} samples \(.* ms at .* Hz\), got {shortest - 1}"
    ):
        frontend(noise(2, shortest - 1))


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(16000), torch.zeros(1, 1, 16000), torch.zeros(2, 16000, dtype=torch.int16), [0.0] * 16000],
)
def test_bad_waveforms_are_rejected(bad: object) -> None:
    with pytest.raises(
        ValueError, match=r"KaldiFbank expects a (waveform batch \[batch, samples\]|floating-point)"
    ):
        KaldiFbank()(bad)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"f_max=9000.0"):
        KaldiFbank(f_max=9000.0)
    with pytest.raises(ValueError, match=r"frame_length"):
        KaldiFbank(frame_length=600)
    with pytest.raises(
        ValueError, match=r"f_max=17000"
    ):  # the jitter would reach 15 kHz + 4000 // 2 > Nyquist
        PasstMel(f_max=15000.0, fmax_aug_range=4000)
