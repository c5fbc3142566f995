"""PannsLogMel (CNN14's front-end) against torchlibrosa: the slaney bank, the conv-DFT weights, both DFT paths
and the checkpoint's stored tensors."""

from __future__ import annotations

import functools

import pytest
import torch

from backbones.frontends import PannsLogMel, panns_stft_weights, slaney_mel_banks
from eval import references
from tests.backbones.frontends.helpers import PANNS, SECONDS, SIGNALS, signal

pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def torchlibrosa_logmel(config: str) -> references.TorchlibrosaLogmel:
    return references.TorchlibrosaLogmel(**PANNS[config])


@pytest.mark.parametrize(
    ("n_mels", "n_fft", "sr", "f_min", "f_max"),
    [(64, 1024, 32000, 50.0, 14000.0), (64, 512, 16000, 50.0, 8000.0), (128, 2048, 22050, 0.0, 11025.0)],
)
def test_slaney_bank_equals_librosa(n_mels: int, n_fft: int, sr: int, f_min: float, f_max: float) -> None:
    import librosa

    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max).T
    assert torch.equal(slaney_mel_banks(n_mels, n_fft, sr, f_min, f_max), torch.from_numpy(ref))


@pytest.mark.parametrize("config", list(PANNS))
def test_panns_dft_weights_equal_torchlibrosa(config: str) -> None:
    """The analytic windowed DFT matrix is the one PANNs stores, bit for bit."""
    stored_real, stored_imag, _ = torchlibrosa_logmel(config).stored_tensors()
    real, imag = panns_stft_weights(PANNS[config]["n_fft"])
    assert real.dtype == imag.dtype == torch.float32
    assert torch.equal(real, stored_real) and torch.equal(imag, stored_imag)


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("kind", list(SIGNALS))
@pytest.mark.parametrize("config", list(PANNS))
def test_panns_logmel_matches_torchlibrosa(config: str, kind: str, seconds: float) -> None:
    """The default conv-DFT path: within 1e-3 dB of torchlibrosa everywhere, the rounding-noise bins far below a
    frame's peak (a sweep's, down to the -100 dB clamp) included."""
    x = signal(kind, seconds, PANNS[config]["sample_rate"])
    ours = PannsLogMel(**PANNS[config])
    assert ours.dft == "matrix" and not ours.official_tensors
    out, ref = ours(x), torchlibrosa_logmel(config)(x)
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
    ref = torchlibrosa_logmel(config)(x)
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
    stored = torchlibrosa_logmel(config).stored_tensors()
    ours = PannsLogMel(**PANNS[config], dft="fft")
    ours.use_official_tensors(*stored)
    assert torch.equal(ours.mel_fb, stored[2])
    assert ours.dft == "matrix" and ours.official_tensors and ours.window is None
    out = ours(x)
    assert (out - torchlibrosa_logmel(config)(x)).abs().max() <= 1e-3  # everywhere, floor included
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
    real16, _, _ = torchlibrosa_logmel("16k").stored_tensors()
    real32, imag32, mel32 = torchlibrosa_logmel("32k").stored_tensors()
    ours = PannsLogMel(**PANNS["32k"])
    before = ours.dft_weight.clone()
    with pytest.raises(ValueError, match=r"n_fft=1024.*stft_real': \(257, 1, 512\)"):
        ours.use_official_tensors(real16, imag32, mel32)
    with pytest.raises(ValueError, match=r"mel_w': \(513, 32\)"):
        ours.use_official_tensors(real32, imag32, mel32[:, :32])
    assert torch.equal(ours.dft_weight, before) and not ours.official_tensors  # nothing was half-applied


def test_panns_bad_dft_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"dft must be one of \('matrix', 'fft'\), got 'conv'"):
        PannsLogMel(dft="conv")
    with pytest.raises(ValueError, match=r"n_fft must be even and >= 2, got 511"):
        panns_stft_weights(511)


def test_official_tensors_move_with_the_module() -> None:
    frontend = PannsLogMel(**PANNS["16k"])
    frontend.use_official_tensors(*torchlibrosa_logmel("16k").stored_tensors())
    assert frontend.to("meta").dft_weight.device.type == "meta"
