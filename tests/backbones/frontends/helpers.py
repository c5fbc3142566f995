"""Signals and front-end factories shared by the front-end tests."""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import Tensor, nn

from backbones.frontends import KaldiFbank, PannsLogMel, PasstMel
from tests.audio_signals import music, noise, sweep

SECONDS = (1.0, 3.3, 10.0)
PANNS = {
    "32k": dict(sample_rate=32000, n_fft=1024, hop_length=320, f_max=14000.0),
    "16k": dict(sample_rate=16000, n_fft=512, hop_length=160, f_max=8000.0),
}
SIGNALS = {
    "noise": lambda n, sr: noise(3, n, seed=1),
    "music": lambda n, sr: music(3, n, sr, seed=2),
    "sweep": lambda n, sr: sweep(n, sr)[None],
}
FRONTENDS: dict[str, Callable[[], nn.Module]] = {
    "kaldi": lambda: KaldiFbank(target_frames=None),
    "kaldi_pcen": lambda: KaldiFbank(target_frames=None, compression="pcen"),
    "passt": lambda: PasstMel().eval(),
    "passt_pcen": lambda: PasstMel(compression="pcen").eval(),
    "panns_32k": lambda: PannsLogMel(**PANNS["32k"]),
    "panns_16k": lambda: PannsLogMel(**PANNS["16k"]),
    "panns_fft_32k": lambda: PannsLogMel(**PANNS["32k"], dft="fft"),
    "panns_fft_16k": lambda: PannsLogMel(**PANNS["16k"], dft="fft"),
    "panns_pcen": lambda: PannsLogMel(compression="pcen"),
}


@functools.cache
def signal(kind: str, seconds: float, sample_rate: int) -> Tensor:
    """Batch 3 for noise and music, batch 1 for the sweep."""
    return SIGNALS[kind](int(seconds * sample_rate), sample_rate)
