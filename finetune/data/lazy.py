"""What every real-data loader shares: rows that name files and carry their header facts, the load-time audio
scan, and the policy for bad entries.

A loader builds plain columns (``path``, ``name``, labels, metadata) and :func:`build_splits` turns them into a
``datasets.DatasetDict`` with the facts the load-time scan read from each file's header: ``duration`` (seconds),
``frames`` and ``file_rate`` (Hz). Rows hold no audio: :class:`~finetune.data.collate.CropCollate` reads the
windows it needs from the files (the row contract is in :mod:`finetune.data.tracks`), so column access
(``ds["train"]["player"]``) and row access are as cheap as reading a table, whatever the tracks' lengths. To get
whole decoded clips on row access, attach :class:`DecodeAudio`: ``ds.with_transform(DecodeAudio(16000))`` (then,
in ``datasets`` >= 4, column access goes through whole rows and decodes too).

Bad entries policy (``on_error``), the same in every loader:

- ``"skip"`` (default): each bad entry (unreadable, empty or missing audio, a truncated WAV, audio shorter than
  ``min_duration``, a missing or out-of-range label) is dropped; one ``warnings.warn`` names the dropped entries
  with their reason and the counts, and the same summary is stored in each split's ``info.description``. Long
  lists are cut to their first entries in these messages; the full list is written to a file under
  ``$MUSICFT_CACHE/load_reports/`` whose path the message gives. Audio is checked once at load time
  (:func:`scan_audio`): the header only by default, or a full decode with ``full_check=True``. A file whose header
  is fine but whose data is damaged is skipped when a window of it fails to read (see
  :class:`~finetune.data.collate.CropCollate`).
- ``"raise"``: the loader raises :class:`DataError` with the same summary instead.

Ambiguous input (a file name listed twice, a split list naming a track twice) always raises :class:`DataError`:
there is no right row to keep. Observations that are not errors are recorded, whatever the policy: those a user
should act on (:meth:`LoadReport.note`, e.g. labelled segments without audio) are warned about, plain facts
(:meth:`LoadReport.inform`, e.g. PercePiano's unlabelled MIDI files) are logged at INFO level.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, DatasetDict, DatasetInfo, Features, Value
from tqdm.auto import tqdm

from backbones.checkpoints import cache_dir

from .audio import AudioInfo, AudioLoadError, audio_info, load_audio

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
SHOWN_ENTRIES = 10  # entries per reason named in a warning; the rest are counted and written to a file
logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A data set's files or labels are unusable as given; the message names the entries and counts them."""


def check_on_error(on_error: str) -> None:
    """Reject an unknown ``on_error`` policy."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")


@dataclass
class LoadReport:
    """Entries dropped while loading a data set (by reason), notes that are not errors, plain facts, and the
    headers the load-time scan read.

    Args:
        dataset: the data set's name, used in messages.
    """

    dataset: str
    dropped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    headers: dict[str, AudioInfo] = field(default_factory=dict)
    full_list: Path | None = None
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

    def summary(self, limit: int | None = SHOWN_ENTRIES) -> str:
        """One paragraph: counts per reason with the entries named (the first ``limit`` of each reason; all with
        None), then the notes and the facts, then where the full list was written (see :meth:`resolve`)."""
        parts = [f"{self.dataset}: dropped {self.n_dropped} entr{'y' if self.n_dropped == 1 else 'ies'}"]
        for reason, names in self.dropped.items():
            shown = names if limit is None else names[:limit]
            more = f", ... (+{len(names) - len(shown)} more)" if len(shown) < len(names) else ""
            parts.append(f"{reason} ({len(names)}): {', '.join(shown)}{more}")
        text = "; ".join(parts) if self.dropped else f"{self.dataset}: nothing dropped"
        text += "".join(f". {n}" for n in [*self.notes, *self.facts])
        if limit is not None and self.full_list is not None:
            text += f". Every entry is listed in {self.full_list}"
        return text

    def resolve(self, on_error: OnError) -> None:
        """Apply the policy: raise :class:`DataError` (``"raise"`` and something was dropped), or warn once if
        something was dropped or noted, else log the summary at INFO level.

        When a reason has more than :data:`SHOWN_ENTRIES` entries, the full summary is first written to
        ``$MUSICFT_CACHE/load_reports/<data set>.txt`` (:attr:`full_list`) and the messages point there.
        """
        check_on_error(on_error)
        if any(len(names) > SHOWN_ENTRIES for names in self.dropped.values()):
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.dataset).strip("_") or "dataset"
            self.full_list = cache_dir() / "load_reports" / f"{slug}.txt"
            self.full_list.parent.mkdir(parents=True, exist_ok=True)
            self.full_list.write_text(self.summary(limit=None).replace("; ", "\n") + "\n")
        if self.dropped and on_error == "raise":
            raise DataError(self.summary() + " (pass on_error='skip' to drop these entries and go on)")
        if self.dropped or self.notes:
            warnings.warn(self.summary(), stacklevel=3)
        elif self.facts:
            logger.info(self.summary())


def _full_check(path: str | os.PathLike[str]) -> AudioInfo:
    """The header, after decoding the whole file once (which finds damage past the header)."""
    info = audio_info(path)
    load_audio(path, mono=True)
    return info


def scan_audio(
    paths: Sequence[str | os.PathLike[str]],
    names: Sequence[str],
    report: LoadReport,
    min_duration: float | None = None,
    full_check: bool = False,
    progress: bool = True,
) -> list[bool]:
    """Check every audio file once at load time, with a progress bar (unless ``progress`` is false), and record
    its header in ``report``.

    By default only the header is read (:func:`~finetune.data.audio.audio_info`: cheap; it also finds empty
    files and truncated WAVs); ``full_check`` decodes each file with :func:`~finetune.data.audio.load_audio`,
    which also finds damage past the header (truncated compressed data, NaN samples). Missing, unreadable or
    empty files, and files shorter than ``min_duration`` seconds, are recorded in ``report`` under their
    ``names``; the headers of the others go to ``report.headers`` (by ``str(path)``) for :func:`build_splits`.

    Returns:
        One flag per file: True where the file is usable.
    """
    check = _full_check if full_check else audio_info
    keep = []
    for path, name in zip(
        tqdm(paths, desc=f"checking {report.dataset} audio", unit="file", leave=False, disable=not progress),
        names,
    ):
        if not Path(path).is_file():
            report.drop("missing audio file", name, str(path))
            keep.append(False)
            continue
        try:
            info = check(path)
        except AudioLoadError as e:
            report.drop("unreadable audio", name, e.reason)
            keep.append(False)
            continue
        if min_duration is not None and info.duration < min_duration:
            report.drop(f"shorter than min_duration={min_duration:g} s", name, f"{info.duration:.3f} s")
            keep.append(False)
            continue
        report.headers[str(path)] = info
        keep.append(True)
    return keep


@dataclass(frozen=True)
class DecodeAudio:
    """Opt-in ``Dataset.with_transform`` callable that decodes whole files into every row that has a ``path``.

    Rows of the loaders hold no audio (the collate reads windows); this gives row access whole clips, e.g. to
    listen to or plot a few. Long files cost their whole decode on every access.

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


HEADER_FEATURES = {"duration": Value("float64"), "frames": Value("int64"), "file_rate": Value("int32")}


def build_splits(
    columns: Mapping[str, Sequence[Any]],
    features: Features,
    splits: Mapping[str, Sequence[int]],
    report: LoadReport,
    sample_rate: int | None = None,
) -> DatasetDict:
    """Turn column lists into a ``DatasetDict`` of the given row indices, adding each file's header facts.

    ``duration`` (seconds), ``frames`` and ``file_rate`` come from the headers :func:`scan_audio` recorded in
    ``report`` (None for a path it did not read: the reader then reads the header when the row is opened). The
    report's summary becomes each split's ``info.description``. ``sample_rate`` is accepted for loaders that pass
    the model's rate and is not used: rows hold no audio (windows are read at the collate's rate).
    """
    if "path" not in columns:
        raise ValueError("a data set needs a 'path' column")
    infos = [report.headers.get(str(p)) for p in columns["path"]]
    header_columns = {
        "duration": [i.duration if i else None for i in infos],
        "frames": [i.frames if i else None for i in infos],
        "file_rate": [i.sample_rate if i else None for i in infos],
    }
    features = Features({**features, **HEADER_FEATURES})
    info = DatasetInfo(description=report.summary(), features=features)
    full = Dataset.from_dict({**columns, **header_columns}, features=features, info=info)
    return DatasetDict({name: full.select(list(idx)) for name, idx in splits.items()})
