"""Batched, seeded augmentations for waveforms ``[B, N]`` and features ``[B, F, T]``, on any device.

Every augmentation is an ``nn.Module`` configured by a frozen dataclass. Randomness comes from an optional
``torch.Generator`` passed to ``forward`` (the same generator state gives the same output); parameters are
drawn on the generator's device (CPU unless it is a CUDA generator) and moved to the data.

- :mod:`.features`: :class:`SpecAugment`.
- :mod:`.mixing`: :class:`Mixup`, :class:`SpecMix` (inputs and targets mixed alike).
- :mod:`.waveform`: :class:`Gain`, :class:`Eq`, :class:`AddNoise`, :class:`ConvolveIR`, :class:`TimeStretch`,
  :class:`PitchShift`, :class:`RandomApply`, :class:`Compose`, :func:`build_wave_augment`, and the training
  collate's per-clip :class:`ClipStretch` with :func:`build_data_augment` (a recipe's ``data.augment``, checked by :func:`check_data_augment`).
- :mod:`.training`: :class:`TrainingAugment`, the mixup / SpecMix / SpecAugment of a model's training forward
  (a recipe's ``model.mixup``, ``model.specmix`` and ``model.spec_augment``), targets mixed alike.

The signal-processing functions (:func:`time_stretch`, :func:`pitch_shift`, :func:`fft_resample`,
:func:`fft_convolve`) live in :mod:`finetune.data.dsp` and are re-exported here.
"""

from ..dsp import fft_convolve, fft_resample, pitch_shift, time_stretch
from .features import SpecAugment, SpecAugmentConfig
from .mixing import Mixed, Mixup, MixupConfig, SpecMix, SpecMixConfig
from .training import Augmented, TrainingAugment
from .waveform import (
    WAVE_AUGMENTATIONS,
    AddNoise,
    ClipStretch,
    Compose,
    ConvolveIR,
    DataAugment,
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
    build_data_augment,
    build_wave_augment,
    check_data_augment,
)

__all__ = [
    "WAVE_AUGMENTATIONS",
    "Augmented",
    "build_data_augment",
    "build_wave_augment",
    "check_data_augment",
    "ClipStretch",
    "Compose",
    "ConvolveIR",
    "DataAugment",
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
    "TrainingAugment",
    "fft_convolve",
    "fft_resample",
    "pitch_shift",
    "time_stretch",
]
