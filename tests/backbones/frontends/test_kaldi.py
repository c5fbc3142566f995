"""KaldiFbank (AST's front-end) against torchaudio's Kaldi fbank and transformers' AST feature extractor."""

from __future__ import annotations

import pytest
import torch

from backbones.frontends import KaldiFbank, kaldi_mel_banks
from eval import references
from tests.backbones.frontends.helpers import SECONDS, SIGNALS, signal

AST_PAD = 4.2677393 / (2 * 4.5689974)  # a padded (log 0) frame after AST's normalisation

pytestmark = pytest.mark.usefixtures("one_thread")


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


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("kind", list(SIGNALS))
def test_kaldi_fbank_matches_torchaudio(kind: str, seconds: float) -> None:
    x = signal(kind, seconds, 16000)
    ours = KaldiFbank()(x)
    assert ours.shape == (x.shape[0], 128, 1024) and ours.dtype == torch.float32
    assert (ours - references.kaldi_fbank(x)).abs().max() <= 1e-3
    real = 1 + (x.shape[-1] - 400) // 160
    assert torch.allclose(ours[..., real:], torch.tensor(AST_PAD), atol=1e-6)  # padded before normalising


@pytest.mark.parametrize("seconds", [3.3, 11.0])  # 11 s: 1098 frames, cropped to 1024
def test_kaldi_fbank_matches_ast_feature_extractor(seconds: float) -> None:
    x = signal("music", seconds, 16000)
    extractor = references.ast_feature_extractor()
    ref = extractor([item.numpy() for item in x], sampling_rate=16000, return_tensors="pt")
    ref = ref["input_values"].mT  # [B, T, F] -> [B, F, T]
    assert ref.shape == (3, 128, 1024)
    assert (KaldiFbank()(x) - ref).abs().max() <= 1e-3


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"f_max=9000.0"):
        KaldiFbank(f_max=9000.0)
    with pytest.raises(ValueError, match=r"frame_length"):
        KaldiFbank(frame_length=600)
