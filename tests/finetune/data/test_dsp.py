"""DSP helpers: time stretch keeps pitch and scales time, pitch shift scales frequency and keeps length, FFT
resampling and convolution are exact on signals where the answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from finetune.data.dsp import fft_convolve, fft_resample, pitch_shift, time_stretch
from tests.audio_signals import music, peak_hz, tone

SR = 16000


@pytest.mark.parametrize("semitones", [2.0, -1.5, 0.5])
def test_pitch_shift_moves_the_peak_by_the_ratio(semitones: float) -> None:
    x = tone(1000, SR, SR)
    y = pitch_shift(x, semitones)
    assert y.shape == x.shape
    assert abs(peak_hz(y[0], SR) - 1000 * 2 ** (semitones / 12)) <= SR / x.shape[-1]  # within one bin


@pytest.mark.parametrize("rate", [0.9, 1.07])
def test_time_stretch_changes_length_by_the_ratio_and_keeps_pitch(rate: float) -> None:
    y = time_stretch(tone(1000, SR, SR, batch=2), rate)
    assert y.shape == (2, round(SR / rate))
    assert abs(peak_hz(y[0], SR) - 1000) <= SR / y.shape[-1]
    steady = y[0, 2000:-2000].abs().unfold(0, 64, 64).amax(-1)
    assert steady.min() > 0.98 and steady.max() < 1.02  # phase locking keeps a tone's amplitude


def test_time_stretch_slows_an_onset_pattern() -> None:
    x = torch.zeros(1, SR)
    x[0, ::4000] = 1.0  # clicks every 0.25 s
    y = time_stretch(x, 0.8)
    env = y[0].abs().unfold(0, 256, 256).amax(-1)
    peaks = [
        i for i in range(1, len(env) - 1) if env[i] > 0.3 and env[i] >= env[i - 1] and env[i] >= env[i + 1]
    ]
    gaps = torch.diff(torch.tensor(peaks, dtype=torch.float32)) * 256 / SR
    torch.testing.assert_close(gaps.mean(), torch.tensor(0.25 / 0.8), atol=0.02, rtol=0)


@pytest.mark.parametrize("length", [1500, 4000])
def test_fft_resample_keeps_whole_cycles_of_a_periodic_tone(length: int) -> None:
    n, cycles = 2000, 37  # 37 whole cycles in the input: a periodic signal, so resampling is exact
    x = torch.sin(2 * math.pi * cycles * torch.arange(n, dtype=torch.float64) / n)[None]
    expected = torch.sin(2 * math.pi * cycles * torch.arange(length, dtype=torch.float64) / length)[None]
    torch.testing.assert_close(fft_resample(x, length), expected, atol=1e-9, rtol=0)


def test_fft_convolve_with_a_delayed_impulse_delays_and_keeps_the_length() -> None:
    x = music(2, 4000, SR, seed=3)
    delayed = torch.zeros(64)
    delayed[10] = 1.0
    y = fft_convolve(x, delayed)
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, 10:], x[:, :-10], atol=1e-6, rtol=0)
    torch.testing.assert_close(y[:, :10], torch.zeros(2, 10), atol=1e-6, rtol=0)


def test_time_stretch_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="rate must be > 0, got 0.0"):
        time_stretch(torch.zeros(1, 1000), 0.0)
    with pytest.raises(
        ValueError, match=r"expected a float waveform batch \[B, N\], got torch.float32 \[1000\]"
    ):
        time_stretch(torch.zeros(1000), 1.1)
