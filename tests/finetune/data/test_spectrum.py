"""Spectrum summaries: centroid and energy above 2/4/8 kHz of known signals, pooling, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.data.spectrum import SPECTRUM_EDGES_HZ, Spectrum, spectrum


def _tone(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)


def test_pure_tone_centroid_and_shares() -> None:
    spec = spectrum(_tone(1000.0, 16000), 16000)  # whole periods: all energy in one FFT bin
    assert spec.centroid_hz == pytest.approx(1000.0, abs=1e-6)
    assert spec.energy == pytest.approx((16000 / 2) ** 2 / 2 * 2, rel=1e-9)  # Parseval: N^2/4 per +-f pair
    assert spec.share_above(2000.0) < 1e-20 and spec.share_above(4000.0) < 1e-20
    assert spec.share_above(8000.0) is None  # at Nyquist: not measurable
    made = Spectrum(energy=10.0, moment=7400.0, above=(0.5, 0.001, 0.0), nyquist=8000.0)
    assert made.describe() == "spectral centroid 740 Hz; energy above 2/4/8 kHz: 5.0e-02 / 1.0e-04 / n/a"
    high = spectrum(_tone(5000.0, 32000), 32000)
    assert [high.share_above(e) for e in SPECTRUM_EDGES_HZ] == pytest.approx([1.0, 1.0, 0.0], abs=1e-12)


def test_white_noise_shares_follow_the_band_widths() -> None:
    noise = np.random.default_rng(0).standard_normal(32000 * 4)
    spec = spectrum(noise, 32000)
    assert spec.centroid_hz == pytest.approx(8000.0, rel=0.01)
    shares = [spec.share_above(e) for e in SPECTRUM_EDGES_HZ]
    assert shares == pytest.approx([14 / 16, 12 / 16, 8 / 16], abs=0.01)


def test_pooled_spectra_add_energies() -> None:
    low, high = spectrum(_tone(500.0, 16000), 16000), spectrum(0.5 * _tone(3000.0, 16000), 16000)
    both = Spectrum.pooled([low, high])
    assert both.energy == pytest.approx(low.energy + high.energy, rel=1e-12)
    # energy-weighted: the 3 kHz tone has a quarter of the 500 Hz tone's energy
    assert both.centroid_hz == pytest.approx((500 * 4 + 3000) / 5, rel=1e-9)
    assert both.share_above(2000.0) == pytest.approx(0.2, rel=1e-9)
    with pytest.raises(
        ValueError, match=r"cannot pool spectra of different sample rates \(Nyquist \[8000.0, 11025.0\]"
    ):
        Spectrum.pooled([low, spectrum(_tone(500.0, 22050), 22050)])
    with pytest.raises(ValueError, match="pooled\\(\\) needs at least one spectrum"):
        Spectrum.pooled([])


def test_bad_input() -> None:
    spec = spectrum(_tone(500.0, 16000), 16000)
    with pytest.raises(ValueError, match=r"edge_hz must be one of \(2000.0, 4000.0, 8000.0\), got 3000"):
        spec.share_above(3000)
    with pytest.raises(ValueError, match=r"spectrum\(\) takes a mono clip \[N\], got shape \(2, 100\)"):
        spectrum(np.zeros((2, 100)), 16000)
    silent = spectrum(np.zeros(100), 16000)
    assert np.isnan(silent.centroid_hz) and np.isnan(silent.share_above(2000.0))
