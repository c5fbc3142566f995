"""Batched, seeded augmentations for waveforms ``[B, N]`` and features ``[B, F, T]``, on any device.

Every augmentation is an ``nn.Module`` configured by a frozen dataclass. Randomness comes from an optional
``torch.Generator`` passed to ``forward`` (the same generator state gives the same output); parameters are
drawn on the generator's device (CPU unless it is a CUDA generator) and moved to the data.

- :mod:`.features`: :class:`SpecAugment`.
- :mod:`.mixing`: :class:`Mixup`, :class:`SpecMix` (inputs and targets mixed alike).
- :mod:`.waveform`: :class:`Gain`, :class:`Eq`, :class:`AddNoise`, :class:`ConvolveIR`, :class:`TimeStretch`,
  :class:`PitchShift`, :class:`RandomApply`, :class:`Compose` and :func:`build_wave_augment`.

The signal-processing functions (:func:`time_stretch`, :func:`pitch_shift`, :func:`fft_resample`,
:func:`fft_convolve`) live in :mod:`finetune.data.dsp` and are re-exported here.
"""

from ..dsp import fft_convolve, fft_resample, pitch_shift, time_stretch
from .features import SpecAugment, SpecAugmentConfig
from .mixing import Mixed, Mixup, MixupConfig, SpecMix, SpecMixConfig
from .waveform import (
    WAVE_AUGMENTATIONS,
    AddNoise,
    Compose,
    ConvolveIR,
    Eq,
    EqConfig,
    Gain,
    GainConfig,
    NoiseConfig,
    PitchShift,
    PitchShiftConfig,
    RandomApply,
    TimeStretch,
    TimeStretchConfig,
    build_wave_augment,
)

__all__ = [
    "WAVE_AUGMENTATIONS",
    "build_wave_augment",
    "Compose",
    "ConvolveIR",
    "Eq",
    "EqConfig",
    "Gain",
    "GainConfig",
    "Mixed",
    "Mixup",
    "MixupConfig",
    "AddNoise",
    "NoiseConfig",
    "PitchShift",
    "PitchShiftConfig",
    "RandomApply",
    "SpecAugment",
    "SpecAugmentConfig",
    "SpecMix",
    "SpecMixConfig",
    "TimeStretch",
    "TimeStretchConfig",
    "fft_convolve",
    "fft_resample",
    "pitch_shift",
    "time_stretch",
]
