"""Data: audio I/O, loaders on `datasets`, embedded synthetic data sets, batching and augmentations.

>>> from finetune.data import load_gtzan, load_percepiano, synthetic_genres, synthetic_piano
>>> from finetune.data import load_mtg_jamendo, load_magnatagatune      # multi-label tagging
"""

from .audio import AudioLoadError, load_audio, validate_waveform
from .collate import AudioBatch, CropCollate
from .fma import load_fma
from .folder import load_audio_folder, load_manifest
from .gtzan import GTZAN_GENRES, load_gtzan
from .lazy import DataError
from .magnatagatune import load_magnatagatune
from .mtg_jamendo import load_mtg_jamendo
from .percepiano import load_percepiano
from .resample import Resampler, StreamingResampler, resample
from .synthetic import synthetic_genres, synthetic_genres_splits, synthetic_piano, synthetic_radio

__all__ = [
    "AudioBatch",
    "AudioLoadError",
    "CropCollate",
    "DataError",
    "GTZAN_GENRES",
    "Resampler",
    "StreamingResampler",
    "load_audio",
    "load_audio_folder",
    "load_fma",
    "load_gtzan",
    "load_magnatagatune",
    "load_manifest",
    "load_mtg_jamendo",
    "load_percepiano",
    "resample",
    "synthetic_genres",
    "synthetic_genres_splits",
    "synthetic_piano",
    "synthetic_radio",
    "validate_waveform",
]
