"""Hand-made clip descriptors for the ``hybrid`` head: audio statistics (librosa) and performance-MIDI
statistics (pretty_midi), computed once per clip and cached on disk.

>>> extractor = DescriptorExtractor(("audio", "midi"))
>>> extractor.names[:3]                      # ('tempo_bpm', 'onset_strength_mean', 'onset_strength_std')
>>> splits = with_descriptors(splits, extractor)          # rows gain "descriptors" float32 [K]
>>> mean, std = descriptor_stats(splits["train"])          # for HybridHead.set_descriptor_stats

Groups (:data:`DESCRIPTOR_GROUPS`):

- ``audio`` (71 values, the piano seed's list): tempo; onset strength (mean, std, max) and onset rate; spectral
  centroid, bandwidth, roll-off, flatness and zero-crossing rate (mean, std); spectral contrast in 7 bands
  (mean, std); RMS (mean, std, max, the 5-95 % range in dB); chroma (12 means); 13 MFCCs (mean, std). The clip
  is resampled to 22050 Hz first, so the values do not depend on the backbone's sample rate. Needs librosa
  (``pip install 'musicft[descriptors]'``).
- ``midi`` (16 values): notes per second; velocity (mean, std, 10th and 90th percentile); key-down duration
  (mean, std); inter-onset interval between successive onsets, chord notes within 30 ms merged (mean, std,
  coefficient of variation); mean polyphony; pitch (mean, std, range); sustain pedal (fraction of time down,
  presses per second). Read from the row's ``midi`` path (a performance MIDI file). Needs pretty_midi
  (``pip install 'musicft[midi]'``).

Why librosa and not the backbone's own front-end: the descriptors are then the same whatever the backbone
(each front-end has its own mel bank and compression), they follow the standard, documented definitions the
seed's pipeline used, and tempo, onsets and chroma come from maintained code. They are computed once per clip on
the CPU and cached, so their cost does not recur per epoch; the model takes them as an input
(``AudioModel.forward(..., descriptors=)``), never computing them itself.

Cache: one ``.npy`` per clip and group under ``cache_dir()/descriptors/`` (``$MUSICFT_CACHE``), keyed by the
clip's audio samples (or MIDI bytes), the group and :data:`DESCRIPTORS_VERSION`; saved and loaded without
pickling.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from backbones.checkpoints import cache_dir

from .data.audio import AudioLoadError, load_audio
from .data.lazy import LoadReport, OnError, check_on_error
from .data.resample import resample

__all__ = [
    "AUDIO_DESCRIPTORS",
    "DESCRIPTORS_VERSION",
    "DESCRIPTOR_GROUPS",
    "MIDI_DESCRIPTORS",
    "DescriptorExtractor",
    "DescriptorError",
    "WithDescriptors",
    "audio_descriptors",
    "descriptor_names",
    "descriptor_stats",
    "midi_descriptors",
    "with_descriptors",
]

logger = logging.getLogger(__name__)

DESCRIPTORS_VERSION = "1"
ANALYSIS_RATE = 22050

_STATS = ("mean", "std")
_SPECTRAL = ("centroid", "bandwidth", "rolloff", "flatness", "zcr")
_PITCH_CLASSES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
AUDIO_DESCRIPTORS: tuple[str, ...] = (
    "tempo_bpm",
    "onset_strength_mean",
    "onset_strength_std",
    "onset_strength_max",
    "onset_rate",
    *(f"{f}_{s}" for f in _SPECTRAL for s in _STATS),
    *(f"contrast_{b}_{s}" for s in _STATS for b in range(7)),
    "rms_mean",
    "rms_std",
    "rms_max",
    "rms_db_range",
    *(f"chroma_{p}_mean" for p in _PITCH_CLASSES),
    *(f"mfcc_{i}_{s}" for s in _STATS for i in range(13)),
)
MIDI_DESCRIPTORS: tuple[str, ...] = (
    "notes_per_second",
    "velocity_mean",
    "velocity_std",
    "velocity_p10",
    "velocity_p90",
    "duration_mean",
    "duration_std",
    "ioi_mean",
    "ioi_std",
    "ioi_cv",
    "polyphony_mean",
    "pitch_mean",
    "pitch_std",
    "pitch_range",
    "pedal_down_fraction",
    "pedal_presses_per_second",
)
DESCRIPTOR_GROUPS: Mapping[str, tuple[str, ...]] = {"audio": AUDIO_DESCRIPTORS, "midi": MIDI_DESCRIPTORS}
_CHORD_SECONDS = 0.03
_SUSTAIN_CC = 64


class DescriptorError(ValueError):
    """Descriptors cannot be computed for a clip (unreadable MIDI, no MIDI path, no audio); names the clip."""


def descriptor_names(groups: Sequence[str]) -> tuple[str, ...]:
    """The descriptor names of ``groups`` (``"audio"``, ``"midi"``), in the order of the vectors.

    Raises:
        ValueError: an unknown or repeated group, or none.
    """
    unknown = [g for g in groups if g not in DESCRIPTOR_GROUPS]
    if unknown or not groups or len(set(groups)) != len(groups):
        raise ValueError(
            f"descriptor groups must be distinct names among {', '.join(DESCRIPTOR_GROUPS)}, got {list(groups)}"
        )
    return tuple(f"{g}.{n}" for g in groups for n in DESCRIPTOR_GROUPS[g])


def _librosa() -> Any:
    try:
        import librosa
    except ImportError as e:
        raise ImportError("audio descriptors need librosa: pip install 'musicft[descriptors]'") from e
    return librosa


def audio_descriptors(wave: np.ndarray | Tensor, sample_rate: int) -> np.ndarray:
    """The ``audio`` group of one clip (see the module docstring).

    Shapes:
        wave: [N] (or [C, N], channels averaged) at ``sample_rate`` -> [71] float64.
    """
    librosa = _librosa()
    x = torch.as_tensor(np.asarray(wave) if not isinstance(wave, Tensor) else wave).float()
    x = x.mean(0) if x.ndim == 2 else x
    if sample_rate != ANALYSIS_RATE:
        x = resample(x, sample_rate, ANALYSIS_RATE)
    y, sr = x.numpy().astype(np.float32), ANALYSIS_RATE
    if y.size < 2048:
        raise DescriptorError(f"a clip of {y.size} samples at {sr} Hz is too short for audio descriptors")
    mag = np.abs(librosa.stft(y))
    onset = librosa.onset.onset_strength(S=librosa.amplitude_to_db(mag), sr=sr)
    tempo = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=onset, sr=sr))[0])
    onsets = librosa.onset.onset_detect(onset_envelope=onset, sr=sr)
    spectral = [
        librosa.feature.spectral_centroid(S=mag, sr=sr),
        librosa.feature.spectral_bandwidth(S=mag, sr=sr),
        librosa.feature.spectral_rolloff(S=mag, sr=sr),
        librosa.feature.spectral_flatness(S=mag),
        librosa.feature.zero_crossing_rate(y),
    ]
    contrast = librosa.feature.spectral_contrast(S=mag, sr=sr)
    rms = librosa.feature.rms(S=mag)[0]
    rms_db = 20 * np.log10(np.maximum(rms, 1e-6))
    chroma = librosa.feature.chroma_stft(S=mag**2, sr=sr, tuning=0.0)
    mfcc = librosa.feature.mfcc(
        S=librosa.power_to_db(librosa.feature.melspectrogram(S=mag**2, sr=sr)), n_mfcc=13
    )
    values = [
        tempo,
        onset.mean(),
        onset.std(),
        onset.max(),
        len(onsets) / (y.size / sr),
        *(v for f in spectral for v in (f.mean(), f.std())),
        *contrast.mean(1),
        *contrast.std(1),
        rms.mean(),
        rms.std(),
        rms.max(),
        np.percentile(rms_db, 95) - np.percentile(rms_db, 5),
        *chroma.mean(1),
        *mfcc.mean(1),
        *mfcc.std(1),
    ]
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def midi_descriptors(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``midi`` group of one performance MIDI file (see the module docstring).

    Shapes: -> [16] float64.

    Raises:
        DescriptorError: the file cannot be parsed or holds no notes.
    """
    try:
        import pretty_midi
    except ImportError as e:
        raise ImportError("MIDI descriptors need pretty_midi: pip install 'musicft[midi]'") from e
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Tempo, Key or Time signature change events found")
        try:
            midi = pretty_midi.PrettyMIDI(str(path))
        except Exception as e:  # mido raises several types for malformed files
            raise DescriptorError(f"could not parse MIDI file {path}: {type(e).__name__}: {e}") from e
    notes = [n for inst in midi.instruments if not inst.is_drum for n in inst.notes]
    if not notes:
        raise DescriptorError(f"MIDI file {path} holds no notes")
    start = np.array([n.start for n in notes])
    end = np.array([n.end for n in notes])
    velocity = np.array([n.velocity for n in notes], dtype=np.float64)
    pitch = np.array([n.pitch for n in notes], dtype=np.float64)
    span = max(float(end.max() - start.min()), 1e-3)
    onsets = np.sort(start)
    groups = onsets[np.concatenate([[True], np.diff(onsets) > _CHORD_SECONDS])]
    ioi = np.diff(groups) if len(groups) > 1 else np.zeros(1)
    duration = end - start
    pedal = sorted(
        (c.time, c.value >= 64)
        for inst in midi.instruments
        for c in inst.control_changes
        if c.number == _SUSTAIN_CC
    )
    down_time, presses, state, since = 0.0, 0, False, float(start.min())
    for time, down in pedal:
        if down and not state:
            presses, since = presses + 1, time
        elif state and not down:
            down_time += time - since
        state = down
    if state:
        down_time += float(end.max()) - since
    return np.array(
        [
            len(notes) / span,
            velocity.mean(),
            velocity.std(),
            np.percentile(velocity, 10),
            np.percentile(velocity, 90),
            duration.mean(),
            duration.std(),
            ioi.mean(),
            ioi.std(),
            ioi.std() / ioi.mean() if ioi.mean() > 0 else 0.0,
            duration.sum() / span,
            pitch.mean(),
            pitch.std(),
            pitch.max() - pitch.min(),
            min(down_time / span, 1.0),
            presses / span,
        ],
        dtype=np.float64,
    )


class DescriptorExtractor:
    """Descriptors of ``groups`` for dataset rows, cached per clip (see the module docstring).

    Args:
        groups: descriptor groups, e.g. ``("audio",)`` or ``("audio", "midi")``.
        cache: the cache folder; None uses ``cache_dir()/descriptors``; False caches nothing.
        audio_key, midi_key: row keys of the audio (an array, tensor or ``{"array", "sampling_rate"}``) and of
            the MIDI path.
    """

    def __init__(
        self,
        groups: Sequence[str] = ("audio",),
        cache: str | os.PathLike[str] | bool | None = None,
        audio_key: str = "audio",
        midi_key: str = "midi",
    ) -> None:
        self.groups = tuple(groups)
        self.names = descriptor_names(self.groups)
        self.cache = (
            None
            if cache is False
            else Path(cache if cache not in (None, True) else cache_dir() / "descriptors")
        )
        self.audio_key, self.midi_key = audio_key, midi_key

    def __call__(self, row: Mapping[str, Any], name: str = "clip") -> np.ndarray:
        """The descriptor vector of one row. Shapes: -> [K] float32.

        Raises:
            DescriptorError: the row lacks what a group needs, or a group cannot be computed for it.
        """
        parts = [self._group(group, row, name) for group in self.groups]
        return np.concatenate(parts).astype(np.float32)

    def _group(self, group: str, row: Mapping[str, Any], name: str) -> np.ndarray:
        if group == "midi":
            path = row.get(self.midi_key)
            if not path:
                raise DescriptorError(
                    f"clip {name!r} has no {self.midi_key!r} (performance MIDI path), which the 'midi' "
                    "descriptors read; use model.descriptors=[audio] for data without MIDI"
                )
            data = Path(path).read_bytes()
            return self._cached(group, data, lambda: midi_descriptors(path))
        if self.audio_key not in row and row.get(
            "path"
        ):  # a file row (finetune.data.tracks): decode it whole
            try:
                wave, file_rate = load_audio(row["path"])
            except AudioLoadError as e:
                raise DescriptorError(f"clip {name!r}: {e}") from e
            row = {self.audio_key: wave, "sample_rate": file_rate}
        if self.audio_key not in row:
            raise DescriptorError(f"clip {name!r} has no {self.audio_key!r} entry (keys: {sorted(row)})")
        audio, rate = row[self.audio_key], row.get("sample_rate", row.get("sampling_rate"))
        if isinstance(audio, Mapping):
            audio, rate = audio["array"], audio.get("sampling_rate", rate)
        if rate is None:
            raise DescriptorError(f"clip {name!r} has no sample rate (sample_rate or sampling_rate)")
        wave = np.ascontiguousarray(
            np.asarray(audio.numpy() if isinstance(audio, Tensor) else audio), np.float32
        )
        return self._cached(
            group, wave.tobytes() + str(int(rate)).encode(), lambda: audio_descriptors(wave, int(rate))
        )

    def _cached(self, group: str, data: bytes, compute: Any) -> np.ndarray:
        if self.cache is None:
            return compute()
        key = hashlib.sha256(data + f"|{group}|{DESCRIPTORS_VERSION}".encode()).hexdigest()[:24]
        path = self.cache / f"{group}-{key}.npy"
        if path.is_file():
            return np.load(path, allow_pickle=False)
        values = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
        with os.fdopen(fd, "wb") as f:
            np.save(f, values, allow_pickle=False)
        Path(tmp).replace(path)
        return values


class WithDescriptors(Dataset):
    """Rows ``indices`` of a map-style data set (default all), each with ``descriptors`` (float32 [K]) added."""

    def __init__(self, dataset: Any, descriptors: np.ndarray, indices: Sequence[int] | None = None) -> None:
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        if len(self.indices) != len(descriptors):
            raise ValueError(f"{len(descriptors)} descriptor rows for {len(self.indices)} clips")
        self.dataset, self.descriptors = dataset, np.asarray(descriptors, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[self.indices[index]], "descriptors": self.descriptors[index]}


def with_descriptors(
    splits: Mapping[str, Any],
    extractor: DescriptorExtractor,
    on_error: OnError = "skip",
    progress: bool = True,
) -> dict[str, WithDescriptors]:
    """Every split with a ``descriptors`` entry per row (computed once per clip, cached).

    Args:
        on_error: a clip whose descriptors cannot be computed is dropped, and one warning names every such
            clip (``"skip"``), or :class:`DescriptorError` names them all (``"raise"``).
    """
    check_on_error(on_error)
    report = LoadReport("descriptors")
    out = {}
    for split, dataset in splits.items():
        kept, rows = [], []
        for i in tqdm(range(len(dataset)), desc=f"descriptors ({split})", unit="clip", disable=not progress):
            row = dataset[i]
            name = str(row.get("name", row.get("id", f"{split}[{i}]")))
            try:
                rows.append(extractor(row, name))
                kept.append(i)
            except DescriptorError as e:
                report.drop("no descriptors", f"{split}/{name}", str(e))
        if not rows:
            raise DescriptorError(f"no clip of the {split} split has descriptors ({report.summary()})")
        out[split] = WithDescriptors(dataset, np.stack(rows), kept)
    if report.dropped and on_error == "raise":
        raise DescriptorError(report.summary() + " (pass on_error='skip' to drop these clips and go on)")
    report.resolve("skip")
    return out


def descriptor_stats(dataset: WithDescriptors) -> tuple[Tensor, Tensor]:
    """Per-descriptor mean and standard deviation of a (training) split. Shapes: -> [K], [K]."""
    values = torch.as_tensor(dataset.descriptors, dtype=torch.float64)
    return values.mean(0).float(), values.std(0, correction=0).float()
