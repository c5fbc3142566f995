"""FMA, the Free Music Archive data set (Defferrard et al. 2017): ``fma_small`` (8 balanced genres) and
``fma_medium`` (16 unbalanced genres), 30-second MP3 clips with the official artist-filtered split.

Metadata come from ``fma_metadata/tracks.csv``, a CSV with a two-level column header (e.g. ``set,split`` and
``track,genre_top``) followed by a ``track_id`` row, then one row per track. It is read with the standard ``csv``
module (no pandas). Used columns: ``track.genre_top`` (label), ``set.split`` (training/validation/test),
``set.subset`` (small/medium/large; a track belongs to its subset and every larger one), ``artist.id``.
Audio lives at ``audio_dir/NNN/NNNNNN.mp3`` (the first three digits of the six-digit track id). A few clips of the
official archives are empty or a fraction of a second long: pass ``min_duration`` to drop those too.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, DatasetDict, Features, Value

from heads.tasks import SINGLE_LABEL

from .lazy import DataError, LoadReport, OnError, build_splits, check_on_error, scan_audio
from .registry import DataConfig, TaskData, register_dataset, required_path

__all__ = ["FMAConfig", "build_fma", "load_fma", "read_tracks"]

_SUBSETS = ("small", "medium", "large")
_SPLITS = {"training": "train", "validation": "validation", "test": "test"}
_COLUMNS = {
    "genre": ("track", "genre_top"),
    "split": ("set", "split"),
    "subset": ("set", "subset"),
    "artist": ("artist", "id"),
}


def read_tracks(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read ``tracks.csv``: one dict per track with ``track_id``, ``genre``, ``split``, ``subset``, ``artist``.

    Raises:
        DataError: the header lacks a needed column, or a track id is not an integer or appears twice.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        try:
            top, sub = next(rows), next(rows)
        except StopIteration as e:
            raise DataError(f"{path} has no two-row column header (is it FMA's tracks.csv?)") from e
        filled, last = [], ""
        for name in top:  # the top level is written once per group in some exports: carry it to the right
            last = name or last
            filled.append(last)
        where = {(t, s): i for i, (t, s) in enumerate(zip(filled, sub))}
        missing = [".".join(c) for c in _COLUMNS.values() if c not in where]
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(missing)} (is it FMA's tracks.csv?)")
        cols = {k: where[c] for k, c in _COLUMNS.items()}
        out, seen = [], set()
        for line_no, row in enumerate(rows, start=3):
            if not row or row[0] == "track_id":  # the index-name row under the header
                continue
            try:
                track_id = int(row[0])
            except ValueError as e:
                raise DataError(f"{path}, row {line_no}: track id {row[0]!r} is not an integer") from e
            if track_id in seen:
                raise DataError(f"{path}: track {track_id} appears twice")
            seen.add(track_id)
            out.append(
                {"track_id": track_id, **{k: row[i].strip() if i < len(row) else "" for k, i in cols.items()}}
            )
    return out


def audio_path(audio_dir: str | os.PathLike[str], track_id: int) -> Path:
    """Where FMA keeps a track: ``audio_dir/NNN/NNNNNN.mp3``."""
    tid = f"{track_id:06d}"
    return Path(audio_dir) / tid[:3] / f"{tid}.mp3"


def load_fma(
    metadata_dir: str | os.PathLike[str],
    audio_dir: str | os.PathLike[str],
    subset: str = "small",
    on_error: OnError = "skip",
    min_duration: float | None = None,
    full_check: bool = False,
    progress: bool = True,
) -> DatasetDict:
    """Load FMA ``small`` or ``medium`` with its official train/validation/test split.

    Columns: ``path``, ``name`` (the six-digit track id), ``track_id``, ``artist_id``, ``label`` (``genre_top``)
    and the header facts of :func:`~finetune.data.lazy.build_splits`.

    Args:
        metadata_dir: ``fma_metadata`` (or the ``tracks.csv`` file itself).
        audio_dir: ``fma_small`` / ``fma_medium`` (the folders ``000/`` ... ``155/``).
        subset: ``"small"`` or ``"medium"`` (medium includes small's tracks, as in FMA).
        on_error: ``"skip"`` or ``"raise"`` for tracks without genre, with an unknown split or artist id, or
            with missing, unreadable or too short audio.
        min_duration: clips shorter than this many seconds count as bad.
        full_check: decode every clip once at load time instead of reading headers only.
        progress: show the file-check progress bar.
    """
    if subset not in _SUBSETS[:2]:
        raise ValueError(f"subset must be 'small' or 'medium', got {subset!r}")
    check_on_error(on_error)
    tracks_csv = Path(metadata_dir)
    tracks_csv = tracks_csv / "tracks.csv" if tracks_csv.is_dir() else tracks_csv
    if not tracks_csv.is_file():
        raise FileNotFoundError(
            f"{tracks_csv} not found: metadata_dir must be fma_metadata/ or its tracks.csv"
        )
    wanted = set(_SUBSETS[: _SUBSETS.index(subset) + 1])
    report = LoadReport(f"fma_{subset}")
    rows = []
    for t in read_tracks(tracks_csv):
        if t["subset"] not in wanted:
            continue
        name = f"{t['track_id']:06d}"
        if not t["genre"]:
            report.drop("missing genre_top label", name)
        elif t["split"] not in _SPLITS:
            report.drop("unknown set.split value", name, repr(t["split"]))
        elif not t["artist"].isdigit():
            report.drop("artist.id not an integer", name, repr(t["artist"]))
        else:
            rows.append({**t, "name": name, "path": str(audio_path(audio_dir, t["track_id"]))})
    if not rows:
        raise DataError(f"{tracks_csv} lists no usable track of the {subset} subset ({report.summary()})")
    shown = [r["name"] for r in rows]
    keep = scan_audio([r["path"] for r in rows], shown, report, min_duration, full_check, progress=progress)
    report.resolve(on_error)
    rows = [r for r, k in zip(rows, keep) if k]
    genres = sorted({r["genre"] for r in rows})
    splits: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for i, r in enumerate(rows):
        splits[_SPLITS[r["split"]]].append(i)
    columns = {
        "path": [r["path"] for r in rows],
        "name": [r["name"] for r in rows],
        "track_id": [r["track_id"] for r in rows],
        "artist_id": [int(r["artist"]) for r in rows],
        "label": [genres.index(r["genre"]) for r in rows],
    }
    features = Features(
        {
            "path": Value("string"),
            "name": Value("string"),
            "track_id": Value("int64"),
            "artist_id": Value("int64"),
            "label": ClassLabel(names=genres),
        }
    )
    return build_splits(columns, features, splits, report)


# ----------------------------------------------------------------------------------------------- registration


@dataclass
class FMAConfig(DataConfig):
    """``data.name=fma``: the settings of :func:`load_fma`, with the official archives' folder layout.

    Attributes:
        root: the folder holding ``fma_metadata/`` and ``fma_<subset>/`` as the archives unpack.
        subset: ``"small"`` (8 genres) or ``"medium"`` (16 genres).
        metadata_dir: ``fma_metadata`` (or its ``tracks.csv``) elsewhere; None uses ``root/fma_metadata``.
        audio_dir: the audio folders elsewhere; None uses ``root/fma_<subset>``.
        on_error, min_duration, full_check: as in :func:`load_fma`.
    """

    name: str = "fma"
    root: str | None = None
    subset: str = "small"
    metadata_dir: str | None = None
    audio_dir: str | None = None
    on_error: OnError = "skip"
    min_duration: float | None = None
    full_check: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.subset not in _SUBSETS[:2]:
            raise ValueError(f"subset must be 'small' or 'medium', got {self.subset!r}")


def _fma_dir(config: FMAConfig, key: str, default: str) -> Path:
    """``config.<key>``, or ``root/<default>`` when it is not set."""
    value = getattr(config, key)
    if value is not None:
        return Path(value).expanduser()
    what = f"the folder holding fma_metadata/ and fma_{config.subset}/ (or set data.metadata_dir and data.audio_dir)"
    return required_path(config, "root", what) / default


@register_dataset("fma", FMAConfig)
def build_fma(config: FMAConfig, sample_rate: int) -> TaskData:
    """FMA small/medium with its official split (read at any ``sample_rate``): single-label genres."""
    splits = load_fma(
        _fma_dir(config, "metadata_dir", "fma_metadata"),
        _fma_dir(config, "audio_dir", f"fma_{config.subset}"),
        subset=config.subset,
        on_error=config.on_error,
        min_duration=config.min_duration,
        full_check=config.full_check,
        progress=config.progress,
    )
    return TaskData(splits, SINGLE_LABEL, tuple(splits["train"].features["label"].names))
