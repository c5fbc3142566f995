"""PANNs' log-mel (torchlibrosa ``Spectrogram`` + ``LogmelFilterBank`` as CNN14 configures them)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import MelFrontend, check_band, stft_mel

__all__ = ["PannsLogMel", "panns_stft_weights", "slaney_mel_banks", "DFT_MODES"]

DFT_MODES = ("matrix", "fft")


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
    check_band(f_min, f_max, sample_rate)
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


class PannsLogMel(MelFrontend):
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
            return stft_mel(signal, self.n_fft, self.hop_length, self.window, self.mel_fb)
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
