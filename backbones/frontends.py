"""Torch-native front-ends: Kaldi fbank (AST), PaSST's mel (PaSST-S) and PANNs' log-mel (CNN14).

All three map a waveform batch ``[B, N]`` to float32 features ``[B, n_mels, T]`` with batched tensor ops only
(unfold / ``torch.stft`` / ``torch.fft`` / a conv-DFT, one matmul with the mel bank), so they run on CPU or GPU;
windows, DFT matrices and filterbanks are non-persistent buffers (they follow ``.to()`` and stay out of
``state_dict``). Defaults reproduce the original front-ends (see ``shared/reference/checkpoints.md`` section 2):

- :class:`KaldiFbank`: torchaudio's ``kaldi.fbank`` as AST calls it, padded/cropped to 1024 frames, normalised.
- :class:`PasstMel`: hear21passt's ``AugmentMelSTFT`` (fmin/fmax jitter in ``train()`` mode only; the SpecAugment
  masks of the original are not part of the front-end, they belong to data augmentation).
- :class:`PannsLogMel`: torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` as CNN14 configures them.

Each also offers ``compression="pcen"`` (per-channel energy normalisation on the mel power, replacing the log and
the fixed normalisation) and ``cmvn=True`` (per-item, per-mel-bin mean/variance normalisation over time), and
``stream()`` for chunked input (see :class:`FrontendStream`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "KaldiFbank",
    "PasstMel",
    "PannsLogMel",
    "FrontendStream",
    "PCENParams",
    "kaldi_mel_banks",
    "slaney_mel_banks",
    "panns_stft_weights",
]

FLT_EPS = float(torch.finfo(torch.float32).eps)
COMPRESSIONS = ("log", "pcen")
DFT_MODES = ("matrix", "fft")
_CMVN_EPS = 1e-10


def _check_band(f_min: float, f_max: float, sample_rate: int) -> None:
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, "
            f"sample_rate={sample_rate}"
        )


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> Tensor:
    """Kaldi/HTK mel filterbank: triangles in mel = 1127 ln(1 + f / 700), peak 1, no area normalisation.

    Bin centres are equally spaced in mel between ``f_min`` and ``f_max``; the Nyquist bin gets weight 0.

    Shapes:
        returns [n_fft // 2 + 1, n_mels], float32.
    """
    _check_band(f_min, f_max, sample_rate)
    mel_lo, mel_hi = (1127.0 * math.log(1.0 + f / 700.0) for f in (f_min, f_max))
    edges = mel_lo + (mel_hi - mel_lo) / (n_mels + 1) * torch.arange(n_mels + 2, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fft_mel = 1127.0 * torch.log(
        1.0 + torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft) / 700.0
    )
    bank = torch.minimum((fft_mel - left) / (centre - left), (right - fft_mel) / (right - centre)).clamp_min(
        0.0
    )
    return F.pad(bank, (0, 1)).T.float()


def _hz_to_slaney(f: Tensor) -> Tensor:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    return torch.where(f >= min_log_hz, min_log_hz / f_sp + torch.log(f / min_log_hz) / logstep, f / f_sp)


def _slaney_to_hz(m: Tensor) -> Tensor:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_banks(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> Tensor:
    """Slaney mel filterbank with Slaney area normalisation (librosa's default ``filters.mel``).

    Computed in float64 and rounded to float32 at the same two points as librosa, so the values match it exactly.

    Shapes:
        returns [n_fft // 2 + 1, n_mels], float32.
    """
    _check_band(f_min, f_max, sample_rate)
    fft_freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (1.0 / (n_fft * (1.0 / sample_rate)))
    lo, hi = _hz_to_slaney(torch.tensor([f_min, f_max], dtype=torch.float64)).tolist()
    mels = torch.arange(n_mels + 2, dtype=torch.float64) * ((hi - lo) / (n_mels + 1)) + lo
    mels[-1] = hi
    edges_hz = _slaney_to_hz(mels)
    widths = edges_hz.diff()
    ramps = edges_hz[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    bank = torch.minimum(lower, upper).clamp_min(0.0).float()
    area = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    return (bank.double() * area[:, None]).float().T.contiguous()


@dataclass(frozen=True)
class PCENParams:
    """Per-channel energy normalisation settings; the defaults are librosa's ``pcen`` defaults.

    ``out = (E / (eps + M) ** gain + bias) ** power - bias ** power`` where ``M`` is ``E`` smoothed over time by a
    first-order IIR filter with time constant ``time_constant`` seconds (started at the first frame's value).
    """

    gain: float = 0.98
    bias: float = 2.0
    power: float = 0.5
    time_constant: float = 0.4
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not (
            self.gain >= 0 and self.bias > 0 and self.power > 0 and self.time_constant > 0 and self.eps > 0
        ):
            raise ValueError(f"PCEN needs gain >= 0 and bias, power, time_constant, eps > 0, got {self}")

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> PCENParams:
        """Build from ``pcen_<field>=value`` keyword arguments; unknown names raise ``TypeError``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in options if not (k.startswith("pcen_") and k[5:] in fields))
        if unknown:
            raise TypeError(
                f"unexpected keyword arguments {unknown}; PCEN options are "
                f"{sorted('pcen_' + f for f in fields)}"
            )
        return cls(**{k[5:]: float(v) for k, v in options.items()})


def _exp_smooth(energy: Tensor, coef: float, init: Tensor) -> Tensor:
    """``M[t] = (1 - coef) M[t-1] + coef E[t]`` with ``M[-1] = init``, as one float64 FFT convolution over time.

    Shapes:
        energy: [..., T] float64; init: [...]; returns [..., T].
    """
    n_frames = energy.shape[-1]
    decay = (1.0 - coef) ** torch.arange(n_frames + 1, dtype=torch.float64, device=energy.device)
    n = 2 * n_frames
    conv = torch.fft.irfft(torch.fft.rfft(energy, n=n) * torch.fft.rfft(coef * decay[:-1], n=n), n=n)
    return (conv[..., :n_frames] + init[..., None] * decay[1:]).clamp_min(0.0)


def _pcen(mel: Tensor, params: PCENParams, frame_rate: float, state: Tensor | None) -> tuple[Tensor, Tensor]:
    """PCEN of mel power ``[B, M, T]``; ``state`` is the smoother's previous value ``[B, M]`` (None: first frame)."""
    energy = mel.double()
    t_frames = params.time_constant * frame_rate
    coef = (math.sqrt(1.0 + 4.0 * t_frames**2) - 1.0) / (2.0 * t_frames**2)
    smooth = _exp_smooth(energy, coef, energy[..., 0] if state is None else state)
    agc = torch.exp(-params.gain * (math.log(params.eps) + torch.log1p(smooth / params.eps)))
    out = params.bias**params.power * torch.expm1(params.power * torch.log1p(energy * agc / params.bias))
    return out.float(), smooth[..., -1]


def _cmvn(feats: Tensor) -> Tensor:
    var, mean = torch.var_mean(feats, dim=-1, correction=0, keepdim=True)
    return (feats - mean) * torch.rsqrt(var + _CMVN_EPS)


class _MelFrontend(nn.Module):
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

    def num_frames(self, num_samples: int) -> int:
        """Frames a waveform of ``num_samples`` yields (before any padding/cropping to a fixed length)."""
        padded = num_samples - self.context + 2 * self.center_pad
        return max(0, (padded - self.frame_length) // self.hop_length + 1)

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
        return self._finish(_cmvn(feats) if self.cmvn else feats)

    def _features(self, signal: Tensor, augment: bool, state: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Compressed mel features of the frames of an edge-padded signal, in float32 even under autocast."""
        with torch.autocast(signal.device.type, enabled=False):
            mel = self._mel_power(signal, augment)
            if self.compression == "pcen":
                return _pcen(mel, self.pcen, self.sample_rate / self.hop_length, state)
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


def _power(spec: Tensor) -> Tensor:
    power = spec.real.square()
    return power.addcmul_(spec.imag, spec.imag)


def _apply_bank(power: Tensor, bank: Tensor) -> Tensor:
    """Mel power from frame-major power ``[B, T, F]`` and a bank ``[F, M]`` as one 2-D GEMM; returns a
    ``[B, M, T]`` view."""
    batch, n_frames, n_bins = power.shape
    return (power.reshape(batch * n_frames, n_bins) @ bank).view(batch, n_frames, -1).transpose(1, 2)


def _stft_mel(signal: Tensor, n_fft: int, hop: int, window: Tensor, bank: Tensor) -> Tensor:
    """Mel power of the un-padded frames ``signal[:, t*hop : t*hop + n_fft]`` (window centred in n_fft).

    Shapes:
        signal: [B, N]; window: [win_length]; bank: [n_fft // 2 + 1, M]; returns [B, M, T].
    """
    spec = torch.stft(signal, n_fft, hop, window.shape[0], window, center=False, return_complex=True)
    return _apply_bank(_power(spec.mT), bank)


class KaldiFbank(_MelFrontend):
    """Kaldi fbank as AST uses it (torchaudio ``kaldi.fbank`` with htk_compat, hanning, dither 0, no energy).

    Per frame of ``frame_length`` samples (snip edges, no padding): DC removal, pre-emphasis (the first sample
    uses itself), symmetric Hann, zero-padding to ``n_fft``, power spectrum, Kaldi mel bank, ``log(max(x, eps))``;
    then padding with zeros in the log domain (or cropping) to ``target_frames`` and ``(x - norm_mean) /
    (2 * norm_std)``. With ``compression="pcen"`` the log and the normalisation are replaced by PCEN, with
    ``cmvn=True`` CMVN runs on the real frames; the padding is then 0.

    The per-frame arithmetic follows Kaldi's order, so frames are bit-identical to torchaudio's before the FFT:
    near the log floor a 1-ulp change of the input moves the FFT's rounding noise by ~1 % of the power.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 128,
        frame_length: int = 400,
        hop_length: int = 160,
        n_fft: int = 512,
        f_min: float = 20.0,
        f_max: float | None = None,
        preemphasis: float = 0.97,
        remove_dc: bool = True,
        target_frames: int | None = 1024,
        norm_mean: float = -4.2677393,
        norm_std: float = 4.5689974,
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
        if not 2 <= frame_length <= n_fft:
            raise ValueError(
                f"need 2 <= frame_length <= n_fft, got frame_length={frame_length}, n_fft={n_fft}"
            )
        if target_frames is not None and target_frames < 1:
            raise ValueError(f"target_frames must be positive or None, got {target_frames}")
        self.frame_length, self.n_fft, self.target_frames = int(frame_length), int(n_fft), target_frames
        self.preemphasis, self.remove_dc = float(preemphasis), bool(remove_dc)
        self.norm_mean, self.norm_std = float(norm_mean), float(norm_std)
        self.f_min, self.f_max = float(f_min), float(sample_rate / 2 if f_max is None else f_max)
        window = torch.hann_window(frame_length, periodic=False)
        self.register_buffer("window", window[1:].clone(), persistent=False)  # window[0] == 0 exactly
        self.register_buffer(
            "mel_fb", kaldi_mel_banks(n_mels, n_fft, sample_rate, self.f_min, self.f_max), persistent=False
        )

    def _mel_power(self, signal: Tensor, augment: bool) -> Tensor:
        length = self.frame_length
        frames = signal.unfold(-1, length, self.hop_length)
        # Kaldi's order of rounding (0.97 * x[i-1] first, no fused multiply-add) keeps the windowed frames
        # bit-identical to torchaudio's. Window sample 0 is exactly 0, so pre-emphasised sample 0 is not needed.
        if torch.is_grad_enabled() and signal.requires_grad:
            framed = frames - frames.mean(-1, keepdim=True) if self.remove_dc else frames
            windowed = (framed[..., 1:] - framed[..., :-1] * self.preemphasis) * self.window
            padded = F.pad(windowed, (1, self.n_fft - length))
        else:  # the same arithmetic, written into one buffer (about 15 % faster, but out= has no autograd)
            padded = frames.new_empty(*frames.shape[:-1], self.n_fft)
            framed = padded[..., :length]
            if self.remove_dc:
                torch.sub(frames, frames.mean(-1, keepdim=True), out=framed)
            else:
                framed.copy_(frames)
            emphasised = framed[..., :-1] * self.preemphasis
            torch.sub(framed[..., 1:], emphasised, out=emphasised)
            torch.mul(emphasised, self.window, out=framed[..., 1:])
            padded[..., 0] = 0.0
            padded[..., length:] = 0.0
        return _apply_bank(_power(torch.fft.rfft(padded)), self.mel_fb)

    def _log(self, mel: Tensor) -> Tensor:
        return torch.log(mel.clamp_min(FLT_EPS)).sub_(self.norm_mean).div_(2.0 * self.norm_std)

    def _finish(self, feats: Tensor) -> Tensor:
        missing = 0 if self.target_frames is None else self.target_frames - feats.shape[-1]
        if missing <= 0:
            return feats if self.target_frames is None else feats[..., : self.target_frames]
        log_pad = self.compression == "log" and not self.cmvn
        return F.pad(feats, (0, missing), value=-self.norm_mean / (2.0 * self.norm_std) if log_pad else 0.0)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, frame_length={self.frame_length}, "
            f"hop_length={self.hop_length}, target_frames={self.target_frames}, compression={self.compression}, "
            f"cmvn={self.cmvn}"
        )


class PasstMel(_MelFrontend):
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
        _check_band(self.f_min + fmin_aug_range - 1, self.f_max + fmax_aug_range // 2, sample_rate)
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
        return _stft_mel(signal, self.n_fft, self.hop_length, self.window, bank)

    def _log(self, mel: Tensor) -> Tensor:
        return torch.log(mel + self.log_offset).sub_(self.norm_mean).div_(self.norm_std)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, n_fft={self.n_fft}, "
            f"win_length={self.win_length}, hop_length={self.hop_length}, f_max={self.f_max}, "
            f"compression={self.compression}, cmvn={self.cmvn}"
        )


def panns_stft_weights(n_fft: int) -> tuple[Tensor, Tensor]:
    """PANNs' conv-DFT weights: a periodic Hann window times the DFT matrix, as torchlibrosa's ``STFT`` builds them.

    Entry ``[k, 0, n]`` is ``w[n] * omega ** (k * n)`` with ``omega = exp(-2 pi i / n_fft)``, raised as a complex128
    power (not as ``cos``/``sin`` of a reduced angle, whose float64 rounding differs and moves about 0.5 % of the
    float32 entries by one ulp), then cast to float32: the values equal the tensors stored in PANNs checkpoints
    bit for bit. Always built on the CPU.

    Shapes:
        returns (real, imag), each [n_fft // 2 + 1, 1, n_fft], float32.
    """
    if n_fft < 2 or n_fft % 2:
        raise ValueError(f"n_fft must be even and >= 2, got {n_fft}")
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64, device="cpu")
    taps = torch.arange(n_fft, dtype=torch.float64, device="cpu")
    angle = 2.0 * math.pi / n_fft
    omega = torch.tensor(complex(math.cos(angle), -math.sin(angle)), dtype=torch.complex128, device="cpu")
    dft = omega ** torch.outer(bins, taps).to(torch.complex128)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device="cpu")
    return (dft.real * window).float()[:, None], (dft.imag * window).float()[:, None]


def _mel_span(mel_fb: Tensor) -> tuple[int, int]:
    """First and one-past-last frequency bin that some mel filter weights (``(0, 1)`` for an all-zero bank)."""
    used = (mel_fb != 0).any(dim=1).nonzero()[:, 0].tolist()
    return (used[0], used[-1] + 1) if used else (0, 1)


class PannsLogMel(_MelFrontend):
    """PANNs' log-mel (torchlibrosa ``Spectrogram`` + ``LogmelFilterBank`` as in CNN14).

    Periodic Hann of ``n_fft``, centred reflect-padded STFT, power, Slaney mel bank with area normalisation,
    ``10 * log10(max(x, amin))`` (ref 1, no top_db). The 16 kHz CNN14 uses
    ``PannsLogMel(sample_rate=16000, n_fft=512, hop_length=160, f_max=8000.0)``.

    Two ways to compute the spectrum (``dft``):

    - ``"matrix"`` (default, PANNs-exact): the original's conv-DFT, a 1-D convolution with the windowed DFT matrix
      of :func:`panns_stft_weights` (bit-identical to the checkpoints' tensors), so even mel bins made mostly of
      float32 rounding noise (far below a frame's peak, down to the -100 dB clamp) reproduce torchlibrosa's, to
      ~2e-5 dB. Only the bins some mel filter uses are computed (bins 2..447 of 513 at 32 kHz); batched, it is no
      slower than the original run clip by clip (the convolution is the same work).
    - ``"fft"``: ``torch.stft``, about 3x faster, within 1e-3 dB of the original wherever it is above -30 dB;
      below that the two algorithms' rounding noise differs (up to a few tenths of a dB).

    :meth:`use_official_tensors` swaps in a checkpoint's stored DFT and mel tensors (and selects ``"matrix"``);
    the ``official_tensors`` attribute says whether they are in use.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        hop_length: int = 320,
        n_mels: int = 64,
        f_min: float = 50.0,
        f_max: float = 14000.0,
        amin: float = 1e-10,
        dft: str = "matrix",
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
        if dft not in DFT_MODES:
            raise ValueError(f"dft must be one of {DFT_MODES}, got {dft!r}")
        if n_fft < 2 or n_fft % 2:
            raise ValueError(f"n_fft must be even and >= 2, got {n_fft}")
        self.frame_length, self.center_pad, self.n_fft = int(n_fft), int(n_fft) // 2, int(n_fft)
        self.f_min, self.f_max, self.amin = float(f_min), float(f_max), float(amin)
        self.dft, self.official_tensors = dft, False
        mel_fb = slaney_mel_banks(n_mels, n_fft, sample_rate, self.f_min, self.f_max)
        self.register_buffer("mel_fb", mel_fb, persistent=False)
        self.register_buffer(
            "window", torch.hann_window(n_fft, periodic=True) if dft == "fft" else None, persistent=False
        )
        self.register_buffer("dft_weight", None, persistent=False)
        self._span = _mel_span(mel_fb)
        if dft == "matrix":
            self._set_dft(*panns_stft_weights(self.n_fft))

    def _set_dft(self, real: Tensor, imag: Tensor) -> None:
        """Keep the real and imaginary DFT rows of the bins the mel bank uses, as one conv weight."""
        lo, hi = self._span
        weight = torch.cat([real[lo:hi], imag[lo:hi]])
        self.dft_weight = weight.to(device=self.mel_fb.device, dtype=torch.float32)

    @torch.no_grad()
    def use_official_tensors(self, stft_real: Tensor, stft_imag: Tensor, mel_w: Tensor) -> None:
        """Compute with the DFT and mel tensors stored in an official PANNs checkpoint (selects ``dft="matrix"``).

        Args:
            stft_real: ``spectrogram_extractor.stft.conv_real.weight``.
            stft_imag: ``spectrogram_extractor.stft.conv_imag.weight``.
            mel_w: ``logmel_extractor.melW``.

        Shapes:
            stft_real, stft_imag: [n_fft // 2 + 1, 1, n_fft]; mel_w: [n_fft // 2 + 1, n_mels].
        """
        n_bins = self.n_fft // 2 + 1
        want = {
            "stft_real": (n_bins, 1, self.n_fft),
            "stft_imag": (n_bins, 1, self.n_fft),
            "mel_w": (n_bins, self.n_mels),
        }
        got = {"stft_real": stft_real, "stft_imag": stft_imag, "mel_w": mel_w}
        bad = {k: tuple(v.shape) for k, v in got.items() if tuple(v.shape) != want[k]}
        if bad:
            raise ValueError(
                f"official PANNs tensors do not fit this front-end (n_fft={self.n_fft}, "
                f"n_mels={self.n_mels}): expected {want}, got {bad}"
            )
        self.mel_fb = mel_w.to(device=self.mel_fb.device, dtype=torch.float32).contiguous()
        self._span = _mel_span(self.mel_fb)
        self._set_dft(stft_real, stft_imag)
        self.dft, self.official_tensors, self.window = "matrix", True, None

    def _mel_power(self, signal: Tensor, augment: bool) -> Tensor:
        if self.dft == "fft":
            return _stft_mel(signal, self.n_fft, self.hop_length, self.window, self.mel_fb)
        lo, hi = self._span
        real, imag = F.conv1d(signal[:, None], self.dft_weight, stride=self.hop_length).chunk(2, dim=1)
        return torch.matmul(self.mel_fb[lo:hi].T, torch.addcmul(real * real, imag, imag))

    def _log(self, mel: Tensor) -> Tensor:
        return torch.log10(mel.clamp_min(self.amin)).mul_(10.0)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}, dft={self.dft}, "
            f"official_tensors={self.official_tensors}, compression={self.compression}, cmvn={self.cmvn}"
        )


class FrontendStream:
    """Incremental front-end: ``push`` chunks of one batch of streams, get the frames each chunk completes.

    Frames pushed chunk by chunk equal the whole-signal frames of ``frontend(x)`` (to float rounding: only the
    matmul/FFT batch shapes differ), edges included, for any chunk sizes:

    - Kaldi (snip edges): frame ``t`` is emitted once its ``frame_length`` samples are in; ``flush`` emits
      nothing. Frames are normalised but not padded/cropped to ``target_frames``.
    - Centred STFTs (PaSST, PANNs): the left reflect padding is built once ``center_pad + 1`` (prepared) samples
      are in, so frames 0 and 1 wait for them; frame ``t`` is emitted once the samples up to its right edge are
      in; ``flush`` reflect-pads the end as the whole-signal transform does and emits the last frames.

    State kept: the last ``context`` raw samples (1 for PaSST's pre-emphasis, else none); the prepared, edge-padded
    samples from the start of the next frame on (at least the last ``center_pad + 1``, for the end reflection);
    the number of frames emitted; and with PCEN the smoother's last value ``[B, n_mels]``. The batch size is fixed
    by the first push. PasstMel streams always use the deterministic (eval) filterbank; per-clip CMVN needs the
    whole clip, so ``cmvn=True`` front-ends cannot stream. ``flush`` ends the stream and resets the state.
    """

    def __init__(self, frontend: _MelFrontend) -> None:
        if frontend.cmvn:
            raise ValueError(
                "per-clip CMVN needs the whole clip; stream a front-end built with cmvn=False and "
                "normalise the window you feed the model"
            )
        self.frontend = frontend
        self.reset()

    def reset(self) -> None:
        """Forget everything pushed so far."""
        self._tail: Tensor | None = None
        self._buffer: Tensor | None = None
        self._offset = 0
        self._started = False
        self._frames = 0
        self._seen = 0
        self._pcen_state: Tensor | None = None

    def push(self, chunk: Tensor) -> Tensor:
        """Add samples; returns the frames they complete.

        Shapes:
            chunk: [B, n] (any n >= 0); returns [B, n_mels, t_new].
        """
        fe = self.frontend
        x = fe._check(chunk)
        if self._tail is not None:
            if x.shape[0] != self._tail.shape[0]:
                raise ValueError(
                    f"this stream carries {self._tail.shape[0]} signals, got a chunk of {x.shape[0]}"
                )
            x = torch.cat([self._tail, x], dim=-1)
        self._seen += chunk.shape[-1]
        self._tail = x[:, x.shape[-1] - min(fe.context, x.shape[-1]) :]
        prepared = fe._prepare(x) if x.shape[-1] > fe.context else x[:, :0]
        buffer = prepared if self._buffer is None else torch.cat([self._buffer, prepared], dim=-1)
        pad = fe.center_pad
        if pad and not self._started:
            if buffer.shape[-1] <= pad:
                self._buffer = buffer
                return buffer.new_empty(buffer.shape[0], fe.n_mels, 0)
            buffer = torch.cat([buffer[:, 1 : pad + 1].flip(-1), buffer], dim=-1)
            self._started = True
        self._buffer = buffer
        return self._emit()

    def flush(self) -> Tensor:
        """End the stream: emit the frames that need the end-of-signal padding, then reset.

        Shapes:
            returns [B, n_mels, t_last] (t_last = 0 for Kaldi).
        """
        fe, pad = self.frontend, self.frontend.center_pad
        if self._buffer is None:
            raise ValueError("flush() called before any push()")
        if pad and not self._started:
            seen = self._seen
            self.reset()
            raise ValueError(
                f"{type(fe).__name__} needs at least {fe.min_samples} samples, the stream got {seen}"
            )
        if pad:
            self._buffer = torch.cat([self._buffer, self._buffer[:, -pad - 1 : -1].flip(-1)], dim=-1)
            out = self._emit()
        else:
            out = self._buffer.new_empty(self._buffer.shape[0], fe.n_mels, 0)
        self.reset()
        return out

    def _emit(self) -> Tensor:
        fe, buffer = self.frontend, self._buffer
        length, hop = fe.frame_length, fe.hop_length
        end = self._offset + buffer.shape[-1]
        n_new = max(0, (end - length) // hop + 1 - self._frames) if end >= length else 0
        if n_new:
            start = self._frames * hop - self._offset
            frames = buffer[:, start : start + (n_new - 1) * hop + length]
            feats, self._pcen_state = fe._features(frames, False, self._pcen_state)
            self._frames += n_new
        else:
            feats = buffer.new_empty(buffer.shape[0], fe.n_mels, 0)
        keep = max(0, min(self._frames * hop, end - fe.center_pad - 1) - self._offset)
        self._buffer, self._offset = buffer[:, keep:], self._offset + keep
        return feats
