"""The pipeline every front-end shares (:class:`MelFrontend`) and the spectral helpers they combine."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .normalise import PCENParams, apply_cmvn, apply_pcen
from .stream import FrontendStream

__all__ = ["MelFrontend", "COMPRESSIONS", "check_band", "power_spectrum", "apply_bank", "stft_mel"]

COMPRESSIONS = ("log", "pcen")


def check_band(f_min: float, f_max: float, sample_rate: int) -> None:
    """Reject a mel band outside ``[0, sample_rate / 2]`` or empty."""
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, "
            f"sample_rate={sample_rate}"
        )


class MelFrontend(nn.Module):
    """Shared pipeline: prepare (pre-emphasis) -> edge padding -> mel power -> compression -> CMVN -> finish.

    Subclasses set ``frame_length`` (samples per analysis frame of the prepared signal), ``center_pad`` (reflect
    padding on each side; 0 = Kaldi's snip-edges) and ``context`` (past raw samples ``_prepare`` consumes) and
    implement ``_mel_power`` and ``_log``.
    """

    frame_length: int
    center_pad: int = 0
    context: int = 0

    def __init__(
        self,
        *,
        sample_rate: int,
        hop_length: int,
        n_mels: int,
        compression: str,
        cmvn: bool,
        pcen_options: dict[str, Any],
    ) -> None:
        super().__init__()
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        if hop_length < 1 or n_mels < 1 or sample_rate < 1:
            raise ValueError(
                f"need positive sample_rate, hop_length and n_mels, got {sample_rate}, {hop_length}, {n_mels}"
            )
        self.sample_rate, self.hop_length, self.n_mels = int(sample_rate), int(hop_length), int(n_mels)
        self.compression, self.cmvn = compression, bool(cmvn)
        self.pcen = PCENParams.from_kwargs(pcen_options)

    @property
    def min_samples(self) -> int:
        """The shortest waveform accepted: one frame for Kaldi, more than the reflect padding for centred STFTs."""
        return self.context + max(self.frame_length - 2 * self.center_pad, self.center_pad + 1)

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """Every keyword option of the constructor, the ``pcen_<field>`` settings included."""
        params = inspect.signature(cls.__init__).parameters.values()
        named = {p.name for p in params if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}
        return frozenset(named | {f"pcen_{f.name}" for f in dataclasses.fields(PCENParams)})

    def num_frames(self, num_samples: int) -> int:
        """Frames a waveform of ``num_samples`` yields (before any padding/cropping to a fixed length)."""
        padded = num_samples - self.context + 2 * self.center_pad
        return max(0, (padded - self.frame_length) // self.hop_length + 1)

    def max_samples_for(self, num_frames: int) -> int:
        """The longest waveform that yields at most ``num_frames`` frames (the inverse of :meth:`num_frames`)."""
        return num_frames * self.hop_length + self.frame_length - 1 + self.context - 2 * self.center_pad

    def stream(self) -> FrontendStream:
        """A fresh incremental view of this front-end (see :class:`FrontendStream`)."""
        return FrontendStream(self)

    def forward(self, wave: Tensor) -> Tensor:
        """Features of a waveform batch.

        Shapes:
            wave: [B, N] at ``sample_rate``; returns [B, n_mels, T] float32.
        """
        x = self._check(wave)
        if x.shape[-1] < self.min_samples:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.min_samples} samples "
                f"({self.min_samples / self.sample_rate * 1000:.1f} ms at {self.sample_rate} Hz), "
                f"got {x.shape[-1]}"
            )
        signal = self._prepare(x)
        if self.center_pad:
            signal = F.pad(signal[:, None], (self.center_pad, self.center_pad), mode="reflect")[:, 0]
        feats, _ = self._features(signal, self.training, None)
        return self._finish(apply_cmvn(feats) if self.cmvn else feats)

    def _features(self, signal: Tensor, augment: bool, state: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Compressed mel features of the frames of an edge-padded signal, in float32 even under autocast."""
        with torch.autocast(signal.device.type, enabled=False):
            mel = self._mel_power(signal, augment)
            if self.compression == "pcen":
                return apply_pcen(mel, self.pcen, self.sample_rate / self.hop_length, state)
            return self._log(mel), None

    def _check(self, wave: Tensor) -> Tensor:
        if not isinstance(wave, Tensor) or wave.dim() != 2:
            shape = tuple(wave.shape) if isinstance(wave, Tensor) else type(wave).__name__
            raise ValueError(f"{type(self).__name__} expects a waveform batch [batch, samples], got {shape}")
        if not wave.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects a floating-point waveform, got {wave.dtype}")
        return wave.float()

    def _prepare(self, x: Tensor) -> Tensor:
        return x

    def _finish(self, feats: Tensor) -> Tensor:
        return feats

    def _mel_power(self, signal: Tensor, augment: bool) -> Tensor:
        """Mel power of the frames ``signal[:, t * hop : t * hop + frame_length]``, shape [B, n_mels, T]."""
        raise NotImplementedError

    def _log(self, mel: Tensor) -> Tensor:
        raise NotImplementedError


def power_spectrum(spec: Tensor) -> Tensor:
    """``|spec|^2`` of a complex spectrum, without the square root of ``abs``."""
    power = spec.real.square()
    return power.addcmul_(spec.imag, spec.imag)


def apply_bank(power: Tensor, bank: Tensor) -> Tensor:
    """Mel power from frame-major power ``[B, T, F]`` and a bank ``[F, M]`` as one 2-D GEMM; returns a
    ``[B, M, T]`` view."""
    batch, n_frames, n_bins = power.shape
    return (power.reshape(batch * n_frames, n_bins) @ bank).view(batch, n_frames, -1).transpose(1, 2)


def stft_mel(signal: Tensor, n_fft: int, hop: int, window: Tensor, bank: Tensor) -> Tensor:
    """Mel power of the un-padded frames ``signal[:, t*hop : t*hop + n_fft]`` (window centred in n_fft).

    Shapes:
        signal: [B, N]; window: [win_length]; bank: [n_fft // 2 + 1, M]; returns [B, M, T].
    """
    spec = torch.stft(signal, n_fft, hop, window.shape[0], window, center=False, return_complex=True)
    return apply_bank(power_spectrum(spec.mT), bank)
