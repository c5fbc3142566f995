"""Torch-native band-limited resampling with a Kaiser-windowed sinc polyphase filter bank.

Method. The rates reduce by their greatest common divisor to ``new_sr / orig_sr = L / M`` (coprime). Output
sample ``j`` sits at input position ``c_j = j * M / L`` and is

    y[j] = sum_n x[n] * r * sinc(r * (n - c_j)) * w((n - c_j) * r / lowpass_filter_width),
    r = rolloff * min(M, L) / M,   w(u) = I0(beta * sqrt(1 - u^2)) / I0(beta) for |u| <= 1, else 0,

with ``sinc(t) = sin(pi t) / (pi t)``: an ideal low-pass at ``rolloff`` times the lower of the two Nyquist
frequencies (``r`` is that cut-off in zero crossings per input sample, and also the gain that makes DC pass
unchanged), truncated to ``lowpass_filter_width`` zero crossings on each side by a Kaiser window. The
fractional part of ``c_j`` repeats every ``L`` outputs, so the distinct filters (the polyphase bank) are designed
once, in float64, and applied to overlapping frames of the zero-padded input taken every ``M`` samples (every
``k * M`` when ``M`` is small, with ``k * L`` phases): an ``unfold`` view and one matrix product, on any device.
The output has ``ceil(N * L / M)`` samples, output 0 is aligned with input 0, and the signal is taken as zero
outside ``[0, N)``.

Defaults (``lowpass_filter_width=32``, ``rolloff=0.9``, ``beta=10.0``): the pass band is flat to 0.1 dB up to 0.84
of the lower Nyquist frequency and the stop band is attenuated by about 100 dB from that Nyquist frequency up
(Kaiser: ``beta = 10`` ~ 99 dB side lobes). The parameters mean what they mean for other Kaiser-windowed sinc
resamplers, so results compare one to one. Cost: ``k * M + 2 * width`` multiply-adds per output sample, where
``width = ceil(lowpass_filter_width / r)`` input samples (e.g. 639 for 44.1 -> 16 kHz, 288 for 32 -> 16 kHz).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_LOWPASS_FILTER_WIDTH = 32
DEFAULT_ROLLOFF = 0.9
DEFAULT_BETA = 10.0
# Ratios that barely reduce (e.g. 44101 -> 16000) would need a bank of hundreds of millions of taps.
MAX_BANK_TAPS = 1 << 24

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_LOWPASS_FILTER_WIDTH",
    "DEFAULT_ROLLOFF",
    "MAX_BANK_TAPS",
    "Resampler",
    "StreamingResampler",
    "resample",
    "resampled_length",
]


def resampled_length(num_samples: int, orig_sr: int, new_sr: int) -> int:
    """Number of output samples for ``num_samples`` input samples: ``ceil(num_samples * new_sr / orig_sr)``."""
    return -(-num_samples * new_sr // orig_sr)


@dataclass(frozen=True)
class _PolyphaseBank:
    """The phase filters of a rational resampler and the geometry to apply them.

    Frame ``q`` of the input padded with ``width`` zeros on the left covers padded samples
    ``[q * stride, q * stride + frame_len)`` and yields outputs ``[q * phases, (q + 1) * phases)``.
    """

    stride: int  # input samples per frame (k * M)
    phases: int  # output samples per frame (k * L)
    width: int  # left zero padding, in input samples
    weight: Tensor  # [frame_len, phases] float64 on CPU

    @property
    def frame_len(self) -> int:
        return self.weight.shape[0]

    def frames_ready(self, available: int) -> int:
        """Number of whole frames inside ``available`` padded samples."""
        return max(0, (available - self.frame_len) // self.stride + 1)

    def apply(self, padded: Tensor, weight: Tensor) -> Tensor:
        """Filter the whole frames of ``padded`` [B, P] with ``weight`` (this bank, cast) -> [B, frames * phases]."""
        frames = padded.unfold(-1, self.frame_len, self.stride)  # [B, frames, frame_len], a view
        return (frames @ weight).reshape(padded.shape[0], -1)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _design_bank(
    orig_sr: int, new_sr: int, lowpass_filter_width: int, rolloff: float, beta: float
) -> _PolyphaseBank:
    _check_positive_int("orig_sr (Hz)", orig_sr)
    _check_positive_int("new_sr (Hz)", new_sr)
    _check_positive_int("lowpass_filter_width (zero crossings)", lowpass_filter_width)
    if not 0.0 < rolloff <= 1.0:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff}")
    if not 0.0 <= beta <= 100.0:
        raise ValueError(f"beta (Kaiser window shape) must be in [0, 100], got {beta}")
    return _cached_bank(orig_sr, new_sr, lowpass_filter_width, float(rolloff), float(beta))


@functools.lru_cache(maxsize=16)  # banks are read-only, and load_audio resamples every clip at the same rates
def _cached_bank(
    orig_sr: int, new_sr: int, lowpass_filter_width: int, rolloff: float, beta: float
) -> _PolyphaseBank:
    g = math.gcd(orig_sr, new_sr)
    m, l_ = orig_sr // g, new_sr // g
    r = rolloff * min(m, l_) / m  # cut-off, in zero crossings of the sinc per input sample
    width = math.ceil(lowpass_filter_width / r)
    # A frame spans `periods` repetitions of the L phases, so that consecutive frames overlap by at most half
    # (with a small M, e.g. 2 -> 1, each input sample would otherwise be copied 2 * width / M times).
    periods = max(1, math.ceil(2 * width / m))
    stride, phases = periods * m, periods * l_
    frame_len = stride + 2 * width
    if phases * frame_len > MAX_BANK_TAPS:
        raise ValueError(
            f"resampling {orig_sr} -> {new_sr} Hz reduces to the ratio {l_}/{m}, whose polyphase bank would "
            f"hold {phases * frame_len} taps (limit {MAX_BANK_TAPS}); go through a rate with a larger common divisor"
        )
    # Distance from padded tap k of a frame to output phase p, (k - width) - p * M / L input samples, formed
    # from integers so that it is exact before the division, then scaled to sinc zero crossings.
    k = torch.arange(frame_len, dtype=torch.int64)
    p = torch.arange(phases, dtype=torch.int64)
    t = ((k[:, None] - width) * l_ - p[None, :] * m).to(torch.float64) * (r / l_)
    inside = t.abs() <= lowpass_filter_width
    t_in = t[inside]  # the window and the sinc are only evaluated where the window is not zero
    arg = beta * torch.sqrt((1.0 - (t_in / lowpass_filter_width) ** 2).clamp(min=0.0))
    # I0(arg) / I0(beta) through the exponentially scaled i0e, which cannot overflow for large beta.
    beta_t = torch.tensor(float(beta), dtype=torch.float64)
    window = torch.special.i0e(arg) / torch.special.i0e(beta_t) * torch.exp(arg - beta_t)
    weight = torch.zeros_like(t)
    weight[inside] = torch.sinc(t_in) * window * r
    return _PolyphaseBank(stride=stride, phases=phases, width=width, weight=weight)


def _check_waveform(waveform: object) -> None:
    if not isinstance(waveform, Tensor) or not waveform.is_floating_point():
        kind = waveform.dtype if isinstance(waveform, Tensor) else type(waveform).__name__
        raise TypeError(f"expected a floating-point waveform tensor, got {kind}")
    if waveform.ndim == 0:
        raise ValueError("expected a waveform [..., N], got a 0-d tensor")


class Resampler:
    """Resamples between one pair of rates; designs the filter bank once, so repeated calls only filter.

    Args:
        orig_sr: Input sample rate in Hz.
        new_sr: Output sample rate in Hz.
        lowpass_filter_width: Zero crossings of the sinc kept on each side of an output sample (filter length).
        rolloff: Cut-off as a fraction of the lower of the two Nyquist frequencies, in (0, 1].
        beta: Kaiser window shape: larger means more stop-band attenuation and a wider transition band.

    Shapes:
        ``__call__``: waveform ``[..., N]`` -> ``[..., ceil(N * new_sr / orig_sr)]``.

    Raises:
        ValueError: On non-positive or non-integer rates, bad filter parameters, or a ratio whose bank would hold
            more than ``MAX_BANK_TAPS`` taps.
    """

    def __init__(
        self,
        orig_sr: int,
        new_sr: int,
        *,
        lowpass_filter_width: int = DEFAULT_LOWPASS_FILTER_WIDTH,
        rolloff: float = DEFAULT_ROLLOFF,
        beta: float = DEFAULT_BETA,
    ) -> None:
        self.orig_sr = orig_sr
        self.new_sr = new_sr
        self._bank = _design_bank(orig_sr, new_sr, lowpass_filter_width, rolloff, beta)
        self._weight = self._bank.weight.float()  # the bank in the dtype and device of the latest input

    @property
    def half_width(self) -> int:
        """Input samples on each side of an output sample's position that its value depends on (the filter's
        half-length, ``ceil(lowpass_filter_width / r)``): resampling a span of a longer signal is exact when the
        span carries this many input samples of context on each side."""
        return self._bank.width

    def _weight_for(self, x: Tensor) -> Tensor:
        if self._weight.dtype != x.dtype or self._weight.device != x.device:
            self._weight = self._bank.weight.to(device=x.device, dtype=x.dtype)
        return self._weight

    def __call__(self, waveform: Tensor) -> Tensor:
        """Resample ``waveform`` (any floating dtype and device; equal rates return it unchanged).

        Shapes:
            waveform ``[..., N]`` -> ``[..., ceil(N * new_sr / orig_sr)]``.

        Raises:
            TypeError: If ``waveform`` is not a floating-point tensor.
        """
        _check_waveform(waveform)
        if self.orig_sr == self.new_sr:
            return waveform
        bank = self._bank
        *lead, n = waveform.shape
        n_out = resampled_length(n, self.orig_sr, self.new_sr)
        n_frames = -(-n_out // bank.phases)
        if n_frames == 0 or waveform.numel() == 0:
            return waveform.new_zeros(*lead, n_out)
        x = waveform.reshape(-1, n)
        # `width` zeros on the left and as many on the right as make the last frame whole.
        right = (n_frames - 1) * bank.stride + bank.frame_len - bank.width - n
        out = bank.apply(F.pad(x, (bank.width, right)), self._weight_for(x))
        return out[:, :n_out].reshape(*lead, n_out)

    def stream(self) -> StreamingResampler:
        """A new :class:`StreamingResampler` that shares this resampler's filter bank (no design cost)."""
        return StreamingResampler._from_resampler(self)


def resample(
    waveform: Tensor,
    orig_sr: int,
    new_sr: int,
    *,
    lowpass_filter_width: int = DEFAULT_LOWPASS_FILTER_WIDTH,
    rolloff: float = DEFAULT_ROLLOFF,
    beta: float = DEFAULT_BETA,
) -> Tensor:
    """Resample along the last axis with a Kaiser-windowed sinc polyphase filter (method: the module docstring).

    Designs the bank on every call (milliseconds); hold a :class:`Resampler` to resample many signals.

    Args:
        waveform: Floating-point signal on any device; leading dimensions are batch dimensions.
        orig_sr: Its sample rate in Hz.
        new_sr: The target sample rate in Hz. Equal rates return ``waveform`` itself.
        lowpass_filter_width: Zero crossings of the sinc kept on each side of an output sample.
        rolloff: Cut-off as a fraction of the lower of the two Nyquist frequencies, in (0, 1].
        beta: Kaiser window shape.

    Returns:
        The resampled signal, in the dtype and on the device of ``waveform``.

    Shapes:
        waveform ``[..., N]`` -> ``[..., ceil(N * new_sr / orig_sr)]``.

    Raises:
        ValueError: On bad rates or filter parameters (see :class:`Resampler`).
        TypeError: If ``waveform`` is not a floating-point tensor.
    """
    resampler = Resampler(
        orig_sr, new_sr, lowpass_filter_width=lowpass_filter_width, rolloff=rolloff, beta=beta
    )
    return resampler(waveform)


class StreamingResampler:
    """Chunk-by-chunk :func:`resample`: the outputs of all ``process`` calls and of ``flush``, concatenated,
    equal ``resample`` of the whole signal to float rounding, however the signal is chunked.

    State: the padded input from the first unfinished frame on (under two frames per row), the number of
    frames emitted and of samples received. Each ``process`` call appends the chunk and filters the frames it
    completes with one matrix product, so the output lags the input by at most one frame plus ``width`` input
    samples (the filter's half-length; see the module docstring).

    Args:
        orig_sr: Input sample rate in Hz.
        new_sr: Output sample rate in Hz.
        lowpass_filter_width: See :class:`Resampler`.
        rolloff: See :class:`Resampler`.
        beta: See :class:`Resampler`.

    Shapes:
        ``process``: chunk ``[..., n]`` -> ``[..., n_out]`` (``n_out >= 0`` depends on the state); the chunks of
        one stream share their leading dimensions, dtype and device. ``flush``: -> ``[..., n_tail]``.
    """

    def __init__(
        self,
        orig_sr: int,
        new_sr: int,
        *,
        lowpass_filter_width: int = DEFAULT_LOWPASS_FILTER_WIDTH,
        rolloff: float = DEFAULT_ROLLOFF,
        beta: float = DEFAULT_BETA,
    ) -> None:
        self._init(
            Resampler(orig_sr, new_sr, lowpass_filter_width=lowpass_filter_width, rolloff=rolloff, beta=beta)
        )

    @classmethod
    def _from_resampler(cls, resampler: Resampler) -> StreamingResampler:
        stream = cls.__new__(cls)
        stream._init(resampler)
        return stream

    def _init(self, resampler: Resampler) -> None:
        self.orig_sr = resampler.orig_sr
        self.new_sr = resampler.new_sr
        self._resampler = resampler
        self.reset()

    def reset(self) -> None:
        """Forget the current stream: the next chunk starts a new one (its shape, dtype and device may differ)."""
        self._buffer: Tensor | None = None  # [B, P] padded input from the first unfinished frame on
        self._lead: tuple[int, ...] = ()
        self._frames_done = 0
        self._received = 0

    def process(self, chunk: Tensor) -> Tensor:
        """Feed the next samples; returns the output samples that they complete.

        Shapes:
            chunk ``[..., n]`` -> ``[..., n_out]``.

        Raises:
            TypeError: If ``chunk`` is not a floating-point tensor.
            ValueError: If its leading dimensions, dtype or device differ from the stream's first chunk.
        """
        _check_waveform(chunk)
        *lead, n = chunk.shape
        buffer = self._buffer
        if buffer is None:
            buffer = chunk.new_zeros(math.prod(lead), self._resampler._bank.width)
            self._lead = tuple(lead)
        elif tuple(lead) != self._lead or chunk.dtype != buffer.dtype or chunk.device != buffer.device:
            raise ValueError(
                f"chunk {list(chunk.shape)} {chunk.dtype} on {chunk.device} does not continue the stream of "
                f"{[*self._lead, 'n']} {buffer.dtype} on {buffer.device}; call reset() to start another stream"
            )
        self._received += n
        if self.orig_sr == self.new_sr:
            self._buffer = buffer
            return chunk
        buffer = torch.cat([buffer, chunk.reshape(buffer.shape[0], n)], dim=-1)
        return self._emit(buffer, self._resampler._bank.frames_ready(buffer.shape[-1]))

    def flush(self) -> Tensor:
        """End the stream: returns the rest of the output (the tail filtered against trailing zeros) and resets.

        Shapes:
            -> ``[..., n_tail]`` (a float32 ``[0]`` tensor if nothing was processed since the last reset).
        """
        if self._buffer is None:
            return torch.zeros(0)
        bank = self._resampler._bank
        remaining = (
            resampled_length(self._received, self.orig_sr, self.new_sr) - self._frames_done * bank.phases
        )
        if self.orig_sr == self.new_sr:
            out = self._buffer.new_zeros(*self._lead, 0)
        else:
            n_frames = -(-remaining // bank.phases)
            need = (n_frames - 1) * bank.stride + bank.frame_len if n_frames else 0
            buffer = F.pad(self._buffer, (0, max(0, need - self._buffer.shape[-1])))
            out = self._emit(buffer, n_frames)[..., :remaining]
        self.reset()
        return out

    def _emit(self, buffer: Tensor, n_frames: int) -> Tensor:
        """Filter the first ``n_frames`` whole frames of ``buffer`` and keep the rest as the new state."""
        bank = self._resampler._bank
        if n_frames == 0 or buffer.numel() == 0:
            out = buffer.new_zeros(buffer.shape[0], n_frames * bank.phases)
        else:
            used = (n_frames - 1) * bank.stride + bank.frame_len
            out = bank.apply(buffer[:, :used], self._resampler._weight_for(buffer))
        self._buffer = buffer[:, n_frames * bank.stride :]
        self._frames_done += n_frames
        return out.reshape(*self._lead, out.shape[-1])
