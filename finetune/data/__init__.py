"""Data: audio I/O (whole files or windows), loaders on `datasets` (rows name files), embedded synthetic data sets,
batching and augmentations.

>>> from finetune.data import load_gtzan, load_percepiano, synthetic_genres, synthetic_piano
>>> from finetune.data import load_mtg_jamendo, load_magnatagatune      # multi-label tagging
"""

from .audio import AudioInfo, AudioLoadError, audio_info, load_audio, load_audio_span, validate_waveform
from .collate import AudioBatch, CropCollate
from .decoded import DecodedCache
from .fma import load_fma
from .folder import load_audio_folder
from .gtzan import GTZAN_GENRES, load_gtzan
from .lazy import DataError, DecodeAudio
from .magnatagatune import load_magnatagatune
from .manifest import load_manifest
from .mtg_jamendo import load_mtg_jamendo
from .percepiano import load_percepiano
from .resample import Resampler, StreamingResampler, resample
from .synthetic import synthetic_genres, synthetic_genres_splits, synthetic_piano, synthetic_radio
from .tracks import TrackReader

__all__ = [
    "AudioBatch",
    "AudioInfo",
    "AudioLoadError",
    "CropCollate",
    "DataError",
    "DecodeAudio",
    "DecodedCache",
    "GTZAN_GENRES",
    "Resampler",
    "StreamingResampler",
    "TrackReader",
    "audio_info",
    "load_audio",
    "load_audio_folder",
    "load_fma",
    "load_gtzan",
    "load_audio_span",
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
