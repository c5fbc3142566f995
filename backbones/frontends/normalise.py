"""Feature normalisations shared by the front-ends: per-channel energy normalisation (PCEN) and per-item,
per-mel-bin mean/variance normalisation (CMVN)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["PCENParams", "apply_pcen", "apply_cmvn"]

_CMVN_EPS = 1e-10


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


def apply_pcen(
    mel: Tensor, params: PCENParams, frame_rate: float, state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """PCEN of mel power ``[B, M, T]``; ``state`` is the smoother's previous value ``[B, M]`` (None: first frame)."""
    energy = mel.double()
    t_frames = params.time_constant * frame_rate
    coef = (math.sqrt(1.0 + 4.0 * t_frames**2) - 1.0) / (2.0 * t_frames**2)
    smooth = _exp_smooth(energy, coef, energy[..., 0] if state is None else state)
    agc = torch.exp(-params.gain * (math.log(params.eps) + torch.log1p(smooth / params.eps)))
    out = params.bias**params.power * torch.expm1(params.power * torch.log1p(energy * agc / params.bias))
    return out.float(), smooth[..., -1]


def apply_cmvn(feats: Tensor) -> Tensor:
    var, mean = torch.var_mean(feats, dim=-1, correction=0, keepdim=True)
    return (feats - mean) * torch.rsqrt(var + _CMVN_EPS)
