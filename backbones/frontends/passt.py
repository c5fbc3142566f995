"""PaSST's mel front-end (hear21passt ``AugmentMelSTFT``), torch-native and batched."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import MelFrontend, check_band, stft_mel
from .kaldi import kaldi_mel_banks

__all__ = ["PasstMel"]


class PasstMel(MelFrontend):
    """PaSST's mel front-end (hear21passt ``AugmentMelSTFT``).

    Pre-emphasis ``y[n] = x[n+1] - c x[n]`` (one sample shorter), centred reflect-padded STFT with a symmetric
    Hann of ``win_length`` inside ``n_fft``, power, Kaldi mel bank from ``f_min`` to ``f_max`` (None: the original's
    ``sample_rate // 2 - fmax_aug_range // 2``, i.e. 15 kHz), ``(log(x + 1e-5) - norm_mean) / norm_std``.
    In ``train()`` mode each forward call draws ``f_min + randint(fmin_aug_range)`` and ``f_max +
    fmax_aug_range // 2 - randint(fmax_aug_range)`` (one draw per batch) like the original; eval is deterministic.
    The defaults are ``hear21passt.get_basic_model``'s (``fmin_aug_range=10, fmax_aug_range=2000``). Like every
    module it starts in training mode: call ``eval()`` for the deterministic front-end.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_mels: int = 128,
        n_fft: int = 1024,
        win_length: int = 800,
        hop_length: int = 320,
        f_min: float = 0.0,
        f_max: float | None = None,
        preemphasis: float = 0.97,
        fmin_aug_range: int = 10,
        fmax_aug_range: int = 2000,
        log_offset: float = 1e-5,
        norm_mean: float = -4.5,
        norm_std: float = 5.0,
        compression: str = "log",
        cmvn: bool = False,
        **pcen_options: float,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate,
            hop_length=hop_length,
            n_mels=n_mels,
            compression=compression,
            cmvn=cmvn,
            pcen_options=pcen_options,
        )
        if not 1 <= win_length <= n_fft or n_fft % 2:
            raise ValueError(
                f"need an even n_fft >= win_length >= 1, got n_fft={n_fft}, win_length={win_length}"
            )
        if fmin_aug_range < 1 or fmax_aug_range < 1:
            raise ValueError(
                f"aug ranges must be >= 1 (1 = no jitter), got {fmin_aug_range}, {fmax_aug_range}"
            )
        self.frame_length, self.center_pad, self.context = int(n_fft), int(n_fft) // 2, 1
        self.n_fft, self.win_length, self.preemphasis = int(n_fft), int(win_length), float(preemphasis)
        self.f_min = float(f_min)
        self.f_max = float(sample_rate // 2 - fmax_aug_range // 2 if f_max is None else f_max)
        self.fmin_aug_range, self.fmax_aug_range = int(fmin_aug_range), int(fmax_aug_range)
        check_band(self.f_min + fmin_aug_range - 1, self.f_max + fmax_aug_range // 2, sample_rate)
        self.log_offset, self.norm_mean, self.norm_std = float(log_offset), float(norm_mean), float(norm_std)
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("mel_fb", self._bank(self.f_min, self.f_max), persistent=False)

    def _bank(self, f_min: float, f_max: float) -> Tensor:
        return kaldi_mel_banks(self.n_mels, self.n_fft, self.sample_rate, f_min, f_max)

    def _prepare(self, x: Tensor) -> Tensor:
        return torch.sub(x[:, 1:], x[:, :-1], alpha=self.preemphasis)

    def _mel_power(self, signal: Tensor, augment: bool) -> Tensor:
        bank = self.mel_fb
        if augment:
            f_min = self.f_min + int(torch.randint(self.fmin_aug_range, (1,)))
            f_max = self.f_max + self.fmax_aug_range // 2 - int(torch.randint(self.fmax_aug_range, (1,)))
            bank = self._bank(f_min, f_max).to(bank.device)
        return stft_mel(signal, self.n_fft, self.hop_length, self.window, bank)

    def _log(self, mel: Tensor) -> Tensor:
        return torch.log(mel + self.log_offset).sub_(self.norm_mean).div_(self.norm_std)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, n_fft={self.n_fft}, "
            f"win_length={self.win_length}, hop_length={self.hop_length}, f_max={self.f_max}, "
            f"compression={self.compression}, cmvn={self.cmvn}"
        )
