"""What every real-data loader shares: the lazily decoded audio column, the load-time audio scan, and the policy
for bad entries.

A loader builds plain columns (``path``, ``name``, labels, metadata) into a ``datasets.Dataset`` and attaches
:class:`DecodeAudio` with ``with_transform``: nothing is decoded until a row is read, and then through our own
:func:`finetune.data.audio.load_audio` (``datasets``' ``Audio`` feature would need torchcodec/ffmpeg). A row read
(``ds[i]``, ``ds[i:j]``, iteration, a ``DataLoader``) gains ``audio`` (float32 tensor [C, N]) and ``sampling_rate``.
For metadata, drop the transform first: ``ds.with_format(None)["label"]`` reads no audio, whereas in ``datasets``
>= 4 ``ds["label"]`` on a data set with a transform goes through whole rows and so decodes every clip.

Bad entries policy (``on_error``), the same in every loader:

- ``"skip"`` (default): each bad entry (unreadable or missing audio, audio shorter than ``min_duration``, a missing
  or out-of-range label) is dropped; one ``warnings.warn`` names every dropped entry with its reason and the counts,
  and the same summary is stored in each split's ``info.description``. Audio is checked once at load time
  (:func:`scan_audio`): the header only by default, or a full decode with ``full_check=True``, after which no file
  can fail mid-epoch. (A file whose header is fine but whose data is damaged, e.g. a truncated WAV, otherwise
  raises :class:`~finetune.data.audio.AudioLoadError`, naming it, when its row is read.)
- ``"raise"``: the loader raises :class:`DataError` with the same summary instead.

Ambiguous input (a file name listed twice, a split list naming a track twice) always raises :class:`DataError`:
there is no right row to keep. Observations that are not errors are recorded, whatever the policy: those a user
should act on (:meth:`LoadReport.note`, e.g. labelled segments without audio) are warned about, plain facts
(:meth:`LoadReport.inform`, e.g. PercePiano's unlabelled MIDI files) are logged at INFO level.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import soundfile as sf
from datasets import Dataset, DatasetDict, DatasetInfo, Features
from tqdm.auto import tqdm

from .audio import AudioLoadError, load_audio

__all__ = [
    "DataError",
    "DecodeAudio",
    "LoadReport",
    "OnError",
    "build_splits",
    "check_on_error",
    "scan_audio",
]

OnError = Literal["skip", "raise"]
logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A data set's files or labels are unusable as given; the message names the entries and counts them."""


def check_on_error(on_error: str) -> None:
    """Reject an unknown ``on_error`` policy."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")


@dataclass
class LoadReport:
    """Entries dropped while loading a data set (by reason), notes that are not errors, and plain facts.

    Args:
        dataset: the data set's name, used in messages.
    """

    dataset: str
    dropped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    def drop(self, reason: str, name: str, detail: str = "") -> None:
        """Record that entry ``name`` is dropped for ``reason`` (``detail`` says more, e.g. the decoder's error)."""
        self.dropped.setdefault(reason, []).append(f"{name} ({detail})" if detail else name)

    def note(self, text: str) -> None:
        """Record an observation that is warned about but never raises."""
        self.notes.append(text)

    def inform(self, text: str) -> None:
        """Record a plain fact (what was rendered, what is left out by design): logged, never warned about."""
        self.facts.append(text)

    @property
    def n_dropped(self) -> int:
        return sum(len(v) for v in self.dropped.values())

    def summary(self) -> str:
        """One paragraph: counts per reason with every entry named, then the notes and the facts."""
        parts = [f"{self.dataset}: dropped {self.n_dropped} entr{'y' if self.n_dropped == 1 else 'ies'}"]
        parts += [f"{reason} ({len(names)}): {', '.join(names)}" for reason, names in self.dropped.items()]
        text = "; ".join(parts) if self.dropped else f"{self.dataset}: nothing dropped"
        return text + "".join(f". {n}" for n in [*self.notes, *self.facts])

    def resolve(self, on_error: OnError) -> None:
        """Apply the policy: raise :class:`DataError` (``"raise"`` and something was dropped), or warn once if
        something was dropped or noted, else log the summary at INFO level."""
        check_on_error(on_error)
        if self.dropped and on_error == "raise":
            raise DataError(self.summary() + " (pass on_error='skip' to drop these entries and go on)")
        if self.dropped or self.notes:
            warnings.warn(self.summary(), stacklevel=3)
        elif self.facts:
            logger.info(self.summary())


def _header_problem(path: str | os.PathLike[str]) -> tuple[str, str] | tuple[None, float]:
    """(reason, detail) for a file whose header cannot be read, else (None, duration in seconds)."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError) as e:  # soundfile's LibsndfileError is a RuntimeError
        return "unreadable audio", str(e).splitlines()[0] if str(e) else type(e).__name__
    if info.frames <= 0 or info.samplerate <= 0:
        return "unreadable audio", "no audio frames"
    return None, info.frames / info.samplerate


def _decode_problem(path: str | os.PathLike[str]) -> tuple[str, str] | tuple[None, float]:
    """(reason, detail) for a file that does not decode, else (None, duration in seconds)."""
    try:
        wave, sr = load_audio(path, mono=True)
    except AudioLoadError as e:
        return "unreadable audio", e.reason
    return None, wave.shape[-1] / sr


def scan_audio(
    paths: Sequence[str | os.PathLike[str]],
    names: Sequence[str],
    report: LoadReport,
    min_duration: float | None = None,
    full_check: bool = False,
) -> list[bool]:
    """Check every audio file once at load time, with a progress bar.

    By default only the header is read (``soundfile.info``: cheap); ``full_check`` decodes each file with
    :func:`~finetune.data.audio.load_audio`, which also finds damage past the header (truncated data, NaN samples),
    so that no file can fail later, mid-epoch. Missing, unreadable or empty files, and files shorter than
    ``min_duration`` seconds, are recorded in ``report`` under their ``names``.

    Returns:
        One flag per file: True where the file is usable.
    """
    check = _decode_problem if full_check else _header_problem
    keep = []
    for path, name in zip(
        tqdm(paths, desc=f"checking {report.dataset} audio", unit="file", leave=False), names
    ):
        if not Path(path).is_file():
            report.drop("missing audio file", name, str(path))
            keep.append(False)
            continue
        reason, detail = check(path)
        if reason is None and min_duration is not None and detail < min_duration:
            reason, detail = f"shorter than min_duration={min_duration:g} s", f"{detail:.3f} s"
        if reason is not None:
            report.drop(reason, name, str(detail))
        keep.append(reason is None)
    return keep


@dataclass(frozen=True)
class DecodeAudio:
    """``Dataset.with_transform`` callable that adds decoded audio to every batch that has a ``path`` column.

    Args:
        sample_rate: resample to this rate in Hz; None keeps each file's own rate.
        mono: average the channels to one.

    Shapes: adds ``audio``: one float32 tensor [C, N] per row (C = 1 when ``mono``), and ``sampling_rate``: int.
    """

    sample_rate: int | None = None
    mono: bool = True

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if "path" not in batch or len(batch) == 1:  # datasets < 4 queries one column alone: no decoding
            return batch
        audio, rates = [], []
        for path in batch["path"]:
            wave, sr = load_audio(path, sample_rate=self.sample_rate, mono=self.mono)
            audio.append(wave)
            rates.append(sr)
        return {**batch, "audio": audio, "sampling_rate": rates}


def build_splits(
    columns: Mapping[str, Sequence[Any]],
    features: Features,
    splits: Mapping[str, Sequence[int]],
    report: LoadReport,
    sample_rate: int | None,
) -> DatasetDict:
    """Turn column lists into a ``DatasetDict`` of the given row indices, with the lazy audio column attached.

    The report's summary becomes each split's ``info.description``.
    """
    if "path" not in columns:
        raise ValueError("a data set needs a 'path' column")
    info = DatasetInfo(description=report.summary(), features=features)
    full = Dataset.from_dict(dict(columns), features=features, info=info)
    parts = DatasetDict({name: full.select(list(idx)) for name, idx in splits.items()})
    return parts.with_transform(DecodeAudio(sample_rate))
