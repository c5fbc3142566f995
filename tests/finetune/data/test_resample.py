"""The Kaiser-windowed sinc polyphase resampler against torchaudio and scipy, its frequency response, and the
streaming resampler against the one-shot one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly
from scipy.special import i0

from finetune.data.resample import (
    DEFAULT_BETA,
    DEFAULT_LOWPASS_FILTER_WIDTH,
    DEFAULT_ROLLOFF,
    Resampler,
    StreamingResampler,
    resample,
    resampled_length,
)
from tests.audio_signals import noise, sweep

RATE_PAIRS = [(44100, 16000), (48000, 32000), (22050, 32000), (32000, 16000)]
KAISER = {
    "lowpass_filter_width": DEFAULT_LOWPASS_FILTER_WIDTH,
    "rolloff": DEFAULT_ROLLOFF,
    "beta": DEFAULT_BETA,
}


def _settle(orig_sr: int, new_sr: int, lowpass_filter_width: int, rolloff: float) -> int:
    """Output samples covered by one filter length at either end of the signal."""
    half_width_s = lowpass_filter_width / (rolloff * min(orig_sr, new_sr))
    return math.ceil(2 * half_width_s * new_sr) + 1


def _prototype(
    orig_sr: int, new_sr: int, lowpass_filter_width: int, rolloff: float, beta: float
) -> np.ndarray:
    """The continuous Kaiser-windowed sinc sampled on the grid of resample_poly's upsampled signal."""
    g = math.gcd(orig_sr, new_sr)
    up, down = new_sr // g, orig_sr // g
    r = rolloff * min(up, down) / down  # cut-off in zero crossings per input sample
    half = math.ceil(lowpass_filter_width / r) * up
    t = np.arange(-half, half + 1) / up * r
    u = np.clip(1 - (t / lowpass_filter_width) ** 2, 0, None)
    h = np.where(np.abs(t) <= lowpass_filter_width, np.sinc(t) * i0(beta * np.sqrt(u)) / i0(beta) * r, 0.0)
    return h / up  # resample_poly multiplies the filter by `up`


@pytest.mark.parametrize(("orig_sr", "new_sr"), RATE_PAIRS)
def test_matches_torchaudio_kaiser_on_a_sweep(orig_sr: int, new_sr: int) -> None:
    import torchaudio.functional as taF

    x = sweep(orig_sr // 2, orig_sr)
    ours = resample(x, orig_sr, new_sr)
    ref = taF.resample(x, orig_sr, new_sr, resampling_method="sinc_interp_kaiser", **KAISER)
    assert ours.shape == ref.shape == (resampled_length(x.shape[-1], orig_sr, new_sr),)
    s = _settle(orig_sr, new_sr, DEFAULT_LOWPASS_FILTER_WIDTH, DEFAULT_ROLLOFF)
    # torchaudio designs its kernel in float32, which costs it ~2e-5 at worst (22050 -> 32000).
    assert (ours - ref)[s:-s].abs().max() < 1e-4
    assert (ours - ref).abs().max() < 1e-4  # the edges too: both take the signal as zero outside


def test_parameters_mean_what_torchaudio_means() -> None:
    import torchaudio.functional as taF

    x = sweep(22050, 44100)
    params = {"lowpass_filter_width": 6, "rolloff": 0.99, "beta": 14.769656459379492}
    ours = resample(x, 44100, 16000, **params)
    ref = taF.resample(x, 44100, 16000, resampling_method="sinc_interp_kaiser", **params)
    assert (ours - ref).abs().max() < 1e-5
    assert (ours - resample(x, 44100, 16000)).abs().max() > 1e-2  # and they do change the filter


@pytest.mark.parametrize(("orig_sr", "new_sr"), [*RATE_PAIRS, (16000, 44100)])
def test_matches_scipy_resample_poly_with_the_same_filter(orig_sr: int, new_sr: int) -> None:
    x = sweep(orig_sr // 2, orig_sr, amp=0.9)
    g = math.gcd(orig_sr, new_sr)
    h = _prototype(orig_sr, new_sr, **KAISER)
    ref = resample_poly(x.double().numpy(), new_sr // g, orig_sr // g, window=h)
    ours = resample(x, orig_sr, new_sr)
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    assert np.abs(ours.double().numpy() - ref).max() < 2e-6
    # In float64 the filter bank and the arithmetic are float64 too.
    ours64 = resample(x.double(), orig_sr, new_sr)
    assert ours64.dtype == torch.float64
    assert np.abs(ours64.numpy() - ref).max() < 1e-11


def _tone(freq: float, sample_rate: int, n: int) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(n, dtype=torch.float64) / sample_rate)


def _fit_tone(y: torch.Tensor, freq: float, sample_rate: int) -> tuple[float, torch.Tensor]:
    """Amplitude of the sinusoid at `freq` in `y` (least squares) and what is left."""
    t = torch.arange(y.shape[-1], dtype=torch.float64) / sample_rate
    basis = torch.stack([torch.sin(2 * math.pi * freq * t), torch.cos(2 * math.pi * freq * t)], dim=1)
    coef = torch.linalg.lstsq(basis, y.double()[:, None]).solution
    return float(coef.norm()), y.double() - (basis @ coef)[:, 0]


def _db(rms: float) -> float:
    return 20 * math.log10(rms / math.sqrt(0.5))  # relative to a unit sine


@pytest.mark.parametrize(
    ("orig_sr", "new_sr", "stop_hz", "pass_hz"),
    [(44100, 16000, 9000.0, 1000.0), (48000, 32000, 17000.0, 5000.0), (32000, 16000, 8500.0, 3000.0)],
)
def test_stop_band_and_pass_band(orig_sr: int, new_sr: int, stop_hz: float, pass_hz: float) -> None:
    s = _settle(orig_sr, new_sr, DEFAULT_LOWPASS_FILTER_WIDTH, DEFAULT_ROLLOFF)
    above = resample(_tone(stop_hz, orig_sr, orig_sr // 2).float(), orig_sr, new_sr)[s:-s]
    assert _db(float(above.double().pow(2).mean().sqrt())) < -95.0  # measured ~ -110 dB
    below = resample(_tone(pass_hz, orig_sr, orig_sr // 2).float(), orig_sr, new_sr)[s:-s]
    amplitude, rest = _fit_tone(below, pass_hz, new_sr)
    assert abs(20 * math.log10(amplitude)) < 0.01
    assert _db(float(rest.pow(2).mean().sqrt())) < -110.0  # no aliases, only float32 rounding


def test_pass_band_edge_and_upsampling_images() -> None:
    # 0.1 dB flat up to 0.84 of the output Nyquist frequency (the documented default pass band).
    s = _settle(44100, 16000, DEFAULT_LOWPASS_FILTER_WIDTH, DEFAULT_ROLLOFF)
    edge = resample(_tone(6700.0, 44100, 22050).float(), 44100, 16000)[s:-s]
    assert abs(20 * math.log10(_fit_tone(edge, 6700.0, 16000)[0])) < 0.1
    # Upsampling 16 k -> 44.1 k: the image of a 6 kHz tone at 10 kHz is suppressed.
    s = _settle(16000, 44100, DEFAULT_LOWPASS_FILTER_WIDTH, DEFAULT_ROLLOFF)
    up = resample(_tone(6000.0, 16000, 8000).float(), 16000, 44100)[s:-s]
    amplitude, rest = _fit_tone(up, 6000.0, 44100)
    assert abs(20 * math.log10(amplitude)) < 0.01
    assert _db(float(rest.pow(2).mean().sqrt())) < -95.0


def test_lengths_batches_and_equal_rates() -> None:
    resampler = Resampler(44100, 16000)
    for n in (0, 1, 2, 440, 441, 442, 1000):
        assert resampler(torch.zeros(n)).shape == (math.ceil(n * 16000 / 44100),)
        assert resampled_length(n, 44100, 16000) == math.ceil(n * 16000 / 44100)
    x = noise(6, 3000, seed=3).reshape(2, 3, 3000)
    batched = resample(x, 48000, 32000)
    assert batched.shape == (2, 3, 2000)
    assert torch.allclose(batched[1, 2], resample(x[1, 2], 48000, 32000), atol=1e-6)
    assert resample(x, 16000, 16000) is x
    assert resample(torch.zeros(0, 100), 44100, 16000).shape == (0, 37)


def test_dc_passes_with_unit_gain() -> None:
    for orig_sr, new_sr in [*RATE_PAIRS, (16000, 44100)]:
        y = resample(torch.full((orig_sr // 4,), 0.5, dtype=torch.float64), orig_sr, new_sr)
        s = _settle(orig_sr, new_sr, DEFAULT_LOWPASS_FILTER_WIDTH, DEFAULT_ROLLOFF)
        assert (y[s:-s] - 0.5).abs().max() < 1e-5


def test_bad_arguments_raise() -> None:
    x = torch.zeros(100)
    for bad in (0, -16000, 16000.0, True):
        with pytest.raises(ValueError, match=r"new_sr \(Hz\) must be a positive int"):
            resample(x, 16000, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"orig_sr \(Hz\) must be a positive int"):
        resample(x, 0, 16000)
    with pytest.raises(ValueError, match=r"rolloff must be in \(0, 1\]"):
        resample(x, 44100, 16000, rolloff=1.5)
    with pytest.raises(ValueError, match=r"lowpass_filter_width \(zero crossings\) must be a positive int"):
        resample(x, 44100, 16000, lowpass_filter_width=0)
    with pytest.raises(ValueError, match=r"beta \(Kaiser window shape\) must be in \[0, 100\]"):
        resample(x, 44100, 16000, beta=-1.0)
    with pytest.raises(TypeError, match="floating-point waveform tensor, got torch.int16"):
        resample(torch.zeros(100, dtype=torch.int16), 44100, 16000)
    with pytest.raises(
        ValueError, match=r"44101 -> 16000 Hz reduces to the ratio 16000/44101.*polyphase bank"
    ):
        resample(x, 44101, 16000)


def _stream(resampler: StreamingResampler, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    outs, pos, i = [], 0, 0
    while pos < x.shape[-1]:
        outs.append(resampler.process(x[..., pos : pos + sizes[i % len(sizes)]]))
        pos += sizes[i % len(sizes)]
        i += 1
    outs.append(resampler.flush())
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize(("orig_sr", "new_sr"), [*RATE_PAIRS, (16000, 44100)])
def test_streaming_equals_one_shot_for_mixed_chunks(orig_sr: int, new_sr: int) -> None:
    x = noise(3, 20000, seed=1)
    resampler = Resampler(orig_sr, new_sr)
    ref = resampler(x)
    stream = resampler.stream()
    for sizes in ([1, 7, 317, 16000], [16000, 1, 7, 317], [317, 16000, 7]):
        out = _stream(stream, x, sizes)  # flush() resets, so the same object serves every chunking
        assert out.shape == ref.shape
        assert (out - ref).abs().max() < 1e-6, sizes


@pytest.mark.parametrize("size", [1, 7, 317, 16000])
def test_streaming_equals_one_shot_for_fixed_chunks(size: int) -> None:
    x = noise(2, min(100 * size, 20000), seed=5)
    for orig_sr, new_sr in [(44100, 16000), (22050, 32000)]:
        out = _stream(StreamingResampler(orig_sr, new_sr), x, [size])
        assert (out - resample(x, orig_sr, new_sr)).abs().max() < 1e-6


def test_streaming_output_is_causal_and_prompt() -> None:
    stream = StreamingResampler(44100, 16000)
    x = noise(2, 44100, seed=2)
    ref = resample(x, 44100, 16000)
    first = stream.process(x[:, :4410])
    # 44.1 k -> 16 k: frames of 441 input samples, a filter half-length of 99. Outputs wait for at most one
    # frame plus the half-length, and none comes out before the input it depends on.
    n = first.shape[1]
    assert resampled_length(4410 - 441 - 99, 44100, 16000) <= n <= (4410 - 98) * 16000 / 44100
    assert (first - ref[:, :n]).abs().max() < 1e-6
    more = stream.process(x[:, 4410:4851])  # one more frame of input -> exactly one more frame of output
    assert more.shape == (2, 160)
    assert (more - ref[:, n : n + 160]).abs().max() < 1e-6


def test_streaming_leading_dims_reset_and_shared_bank() -> None:
    x = noise(6, 5000, seed=4).reshape(2, 3, 5000)
    resampler = Resampler(22050, 32000)
    ref = resampler(x)
    stream = resampler.stream()
    assert (_stream(stream, x, [333, 1, 4000]) - ref).abs().max() < 1e-6
    mono = x[0, 0]
    assert (_stream(stream, mono, [100]) - ref[0, 0]).abs().max() < 1e-6  # a new stream after flush
    stream.process(x[:, :, :10])
    with pytest.raises(ValueError, match=r"does not continue the stream of \[2, 3, 'n'\]"):
        stream.process(x[0, :, :10])
    with pytest.raises(ValueError, match="does not continue the stream"):
        stream.process(x[:, :, :10].double())
    stream.reset()
    assert (_stream(stream, x.double(), [999]) - resampler(x.double())).abs().max() < 1e-12
    assert stream.flush().shape == (0,)
    same = StreamingResampler(16000, 16000)
    assert (_stream(same, x, [7, 100]) == x).all()
