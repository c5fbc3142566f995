"""How much of a clip's energy lies where: its spectral centroid and the share of energy above 2, 4 and 8 kHz.

A handful of numbers that tell a muffled render from a bright one (PercePiano rendered with TimGM6mb has a centroid
near 600 Hz and 2e-5 of its energy above 4 kHz). One FFT over the whole clip: its one-sided power spectrum is
summed into bands, so spectra of many clips pool exactly (:meth:`Spectrum.pooled`), as if the clips were one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["SPECTRUM_EDGES_HZ", "Spectrum", "spectrum"]

SPECTRUM_EDGES_HZ = (2000.0, 4000.0, 8000.0)


@dataclass(frozen=True)
class Spectrum:
    """A power spectrum summed into a few numbers: total energy, first moment and energy above fixed edges.

    Spectra of several clips pool with :meth:`pooled` (energies add: louder clips weigh more), so a data set's
    spectrum is that of all its audio together.

    Attributes:
        energy: total energy (sum of the one-sided power spectrum).
        moment: sum of frequency x power, in Hz (``moment / energy`` is the centroid).
        above: energy at or above each of :data:`SPECTRUM_EDGES_HZ`.
        nyquist: half the sample rate in Hz; edges at or above it cannot be measured.
    """

    energy: float
    moment: float
    above: tuple[float, ...]
    nyquist: float

    @property
    def centroid_hz(self) -> float:
        """The energy-weighted mean frequency in Hz (NaN for silence)."""
        return self.moment / self.energy if self.energy > 0 else float("nan")

    def share_above(self, edge_hz: float) -> float | None:
        """Share of the energy at or above ``edge_hz`` (one of :data:`SPECTRUM_EDGES_HZ`); None at or above Nyquist.

        Raises:
            ValueError: ``edge_hz`` is not one of the measured edges.
        """
        if edge_hz not in SPECTRUM_EDGES_HZ:
            raise ValueError(f"edge_hz must be one of {SPECTRUM_EDGES_HZ}, got {edge_hz}")
        if edge_hz >= self.nyquist:
            return None
        return self.above[SPECTRUM_EDGES_HZ.index(edge_hz)] / self.energy if self.energy > 0 else float("nan")

    def describe(self) -> str:
        """e.g. ``spectral centroid 742 Hz; energy above 2/4/8 kHz: 3.1e-03 / 8.2e-06 / n/a``."""
        shares = [self.share_above(e) for e in SPECTRUM_EDGES_HZ]
        edges = "/".join(f"{e / 1000:g}" for e in SPECTRUM_EDGES_HZ)
        text = " / ".join("n/a" if s is None else f"{s:.1e}" for s in shares)
        return f"spectral centroid {self.centroid_hz:.0f} Hz; energy above {edges} kHz: {text}"

    @classmethod
    def pooled(cls, spectra: Iterable[Spectrum]) -> Spectrum:
        """All ``spectra`` together, as if their clips were one.

        Raises:
            ValueError: no spectra, or spectra measured at different sample rates.
        """
        spectra = list(spectra)
        if not spectra:
            raise ValueError("pooled() needs at least one spectrum")
        rates = {s.nyquist for s in spectra}
        if len(rates) > 1:
            raise ValueError(f"cannot pool spectra of different sample rates (Nyquist {sorted(rates)} Hz)")
        return cls(
            energy=sum(s.energy for s in spectra),
            moment=sum(s.moment for s in spectra),
            above=tuple(np.sum([s.above for s in spectra], axis=0).tolist()),
            nyquist=spectra[0].nyquist,
        )


def spectrum(wave: np.ndarray, sample_rate: int) -> Spectrum:
    """The :class:`Spectrum` of a mono clip: the one-sided power spectrum of one FFT over the whole clip.

    Shapes: wave [N].
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"spectrum() takes a mono clip [N], got shape {wave.shape}")
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1.0 / sample_rate)
    return Spectrum(
        energy=float(power.sum()),
        moment=float((freqs * power).sum()),
        above=tuple(float(power[freqs >= edge].sum()) for edge in SPECTRUM_EDGES_HZ),
        nyquist=sample_rate / 2.0,
    )
