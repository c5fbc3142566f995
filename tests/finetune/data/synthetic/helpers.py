"""Measurements shared by the synthetic data tests."""

from __future__ import annotations

import numpy as np

SR = 8000


def rms_db(x: np.ndarray) -> float:
    """Mean power of ``x`` in dB."""
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2)))


def pins(x: np.ndarray, at: tuple[int, ...] = (1000, 4000, 7000)) -> tuple[float, ...]:
    """RMS and a few samples of ``x``: what the pinning tests compare."""
    x = x.astype(np.float64)
    return (float(np.sqrt(np.mean(x**2))), *(float(x[i]) for i in at))
