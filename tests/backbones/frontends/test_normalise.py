"""PCEN (against librosa) and per-bin CMVN, through the three front-ends."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from backbones.frontends import KaldiFbank, PannsLogMel, PasstMel
from tests.audio_signals import music
from tests.backbones.frontends.helpers import signal

pytestmark = pytest.mark.usefixtures("one_thread")


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
