"""MTG-Jamendo (Bogdanov et al. 2019): 55k full-length Creative Commons tracks tagged with genres, instruments and
moods/themes, with official artist-disjoint splits.

Split files (``data/splits/split-<k>/<subset>-{train,validation,test}.tsv`` of the MTG/mtg-jamendo-dataset
repository; ``splits_dir`` is that ``data/splits`` folder) are tab-separated with CRLF line ends and the header
``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``; every column after ``DURATION`` is one tag,
``<category>---<tag>`` (``genre---rock``, ``instrument---piano``, ``mood/theme---happy``). ``PATH`` (``73/773.mp3``)
is relative to the audio folder; the low-quality archives name the same file ``73/773.low.mp3``, which is used
when the full-quality file is absent. Subsets: ``autotagging`` (all tags), ``autotagging_genre``,
``autotagging_instrument``, ``autotagging_moodtheme`` and ``autotagging_top50tags``, each in five splits.

Targets:

- multi-label (default): the subset's tags (the union over its three files, sorted) as multi-hot ``labels``;
- single-label genres (``genre_map``): each track's genre tags are mapped to target genres (a mapping, or
  ``"gtzan"``: :data:`GTZAN_GENRE_MAP` onto GTZAN's ten genres); a track keeps its one target genre as ``label``;
  tracks whose tags map to none or to several genres are left out, counted in a note.

The official splits keep every artist in one part; this is checked. Missing or unreadable audio is reported as
in every loader (``on_error``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import ClassLabel, DatasetDict, Features, Value
from datasets import Sequence as SequenceFeature

from backbones.config import did_you_mean
from heads.tasks import MULTI_LABEL, SINGLE_LABEL

from .lazy import DataError, LoadReport, OnError, build_splits, check_on_error, scan_audio
from .registry import DataConfig, TaskData, register_dataset, required_path
from .splits import check_disjoint

__all__ = [
    "GTZAN_GENRE_MAP",
    "MTGJamendoConfig",
    "SUBSETS",
    "build_mtg_jamendo",
    "load_mtg_jamendo",
    "read_split_file",
]

SUBSETS = (
    "autotagging",
    "autotagging_genre",
    "autotagging_instrument",
    "autotagging_moodtheme",
    "autotagging_top50tags",
)
_PARTS = {"train": "train", "validation": "validation", "test": "test"}
_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION")

# MTG-Jamendo genre tags -> GTZAN's ten genres. Tags that straddle two of them (poprock, bluesrock) and tags with
# no GTZAN counterpart (electronic, ambient, soundtrack, ...) are not mapped.
_GTZAN: dict[str, tuple[str, ...]] = {
    "blues": ("blues",),
    "classical": ("classical", "orchestral", "symphonic", "medieval"),
    "country": ("country",),
    "disco": ("disco",),
    "hiphop": ("hiphop", "rap"),
    "jazz": ("jazz", "acidjazz", "jazzfusion", "swing"),
    "metal": ("metal",),
    "pop": ("pop", "synthpop", "electropop", "instrumentalpop"),
    "reggae": ("reggae", "dub"),
    "rock": (
        "rock",
        "hardrock",
        "punkrock",
        "alternativerock",
        "classicrock",
        "rocknroll",
        "grunge",
        "instrumentalrock",
    ),
}
GTZAN_GENRE_MAP: Mapping[str, str] = {
    f"genre---{tag}": genre for genre, tags in _GTZAN.items() for tag in tags
}
_GENRE_MAPS: Mapping[str, Mapping[str, str]] = {"gtzan": GTZAN_GENRE_MAP}


def read_split_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One official split file: a dict per track with ``track_id``, ``artist_id``, ``album_id``, ``path``,
    ``duration`` (seconds) and ``tags`` (list of ``<category>---<tag>``).

    Raises:
        DataError: the header is not the official one, a row is short or malformed, or a track appears twice.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()  # CRLF or LF
    if not lines or tuple(lines[0].split("\t")[:5]) != _HEADER:
        raise DataError(
            f"{path}: expected the header {' '.join(_HEADER)} TAGS (is it an MTG-Jamendo split file?)"
        )
    out, seen = [], set()
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        tags = [c for c in cells[5:] if c]
        if len(cells) < 6 or not tags or any("---" not in t for t in tags):
            raise DataError(f"{path}, line {line_no}: expected 5 columns and at least one <category>---<tag>")
        try:
            duration = float(cells[4])
        except ValueError as e:
            raise DataError(f"{path}, line {line_no}: duration {cells[4]!r} is not a number") from e
        if cells[0] in seen:
            raise DataError(f"{path}: track {cells[0]} appears twice")
        seen.add(cells[0])
        out.append(
            {
                "track_id": cells[0],
                "artist_id": cells[1],
                "album_id": cells[2],
                "path": cells[3],
                "duration": duration,
                "tags": tags,
            }
        )
    return out


def _audio_file(root: Path, relative: str) -> Path:
    """``root/PATH``, or the low-quality archive's ``.low.mp3`` name when only that exists."""
    path = root / relative
    low = path.with_name(path.name.replace(".mp3", ".low.mp3"))
    return low if not path.is_file() and low.is_file() else path


def _genre_map(genre_map: str | Mapping[str, str]) -> Mapping[str, str]:
    if isinstance(genre_map, str):
        if genre_map not in _GENRE_MAPS:
            raise ValueError(
                f"unknown genre_map {genre_map!r}{did_you_mean(genre_map, _GENRE_MAPS)}; built in: gtzan"
            )
        return _GENRE_MAPS[genre_map]
    return dict(genre_map)


def load_mtg_jamendo(
    root: str | os.PathLike[str],
    splits_dir: str | os.PathLike[str],
    subset: str = "autotagging_top50tags",
    split_index: int = 0,
    genre_map: str | Mapping[str, str] | None = None,
    sample_rate: int | None = None,
    on_error: OnError = "skip",
    min_duration: float | None = None,
    full_check: bool = False,
    progress: bool = True,
) -> tuple[DatasetDict, tuple[str, ...]]:
    """Load one official split of an MTG-Jamendo subset.

    Columns: ``path``, ``name`` (the track id), ``artist_id``, ``album_id``, ``tags`` (the track's tags), and
    ``labels`` (multi-hot float32 over the subset's tags) or, with ``genre_map``, ``label`` (a class index).

    Args:
        root: the audio folder (``00/`` ... ``99/`` as the archives unpack).
        splits_dir: the repository's ``data/splits`` folder.
        subset: one of :data:`SUBSETS`.
        split_index: which of the five official splits (0-4).
        genre_map: tag -> genre (or ``"gtzan"``) for single-label genre training; None: multi-label tags.
        sample_rate, on_error, min_duration, full_check, progress: as in the other loaders.

    Returns:
        The splits and the output names (the subset's tags, or the map's genres; each sorted).

    Raises:
        FileNotFoundError: a split file is missing.
        DataError: an artist appears in two parts, or nothing usable is left.
    """
    if subset not in SUBSETS:
        raise ValueError(
            f"subset must be one of {', '.join(SUBSETS)}, got {subset!r}{did_you_mean(subset, SUBSETS)}"
        )
    if not 0 <= split_index <= 4:
        raise ValueError(f"split_index must be in 0-4 (the five official splits), got {split_index}")
    check_on_error(on_error)
    folder = Path(splits_dir) / f"split-{split_index}"
    parts = {}
    for part, stem in _PARTS.items():
        path = folder / f"{subset}-{stem}.tsv"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: splits_dir must be data/splits of MTG/mtg-jamendo-dataset"
            )
        parts[part] = read_split_file(path)
    try:
        check_disjoint({p: [t["artist_id"] for t in rows] for p, rows in parts.items()}, what="artist")
    except ValueError as e:
        raise DataError(f"{folder}: {e}") from None
    report = LoadReport(f"mtg_jamendo {subset} split-{split_index}")
    mapping = _genre_map(genre_map) if genre_map is not None else None
    if mapping is None:
        names = tuple(sorted({t for rows in parts.values() for r in rows for t in r["tags"]}))
    else:
        names = tuple(sorted(set(mapping.values())))  # for "gtzan": GTZAN_GENRES, in that order
    rows, index = [], {}
    unmapped = ambiguous = 0
    for part, tracks in parts.items():
        for t in tracks:
            row = {**t, "part": part, "name": t["track_id"], "path": str(_audio_file(Path(root), t["path"]))}
            if mapping is not None:
                genres = {mapping[tag] for tag in t["tags"] if tag in mapping}
                if len(genres) != 1:
                    unmapped += not genres
                    ambiguous += len(genres) > 1
                    continue
                row["label"] = names.index(genres.pop())
            rows.append(row)
    if mapping is not None and (unmapped or ambiguous):
        report.note(
            f"genre_map: {unmapped} track(s) have no mapped genre tag and {ambiguous} map to several genres; "
            "they are left out"
        )
    shown = [r["name"] for r in rows]
    keep = scan_audio([r["path"] for r in rows], shown, report, min_duration, full_check, progress=progress)
    report.resolve(on_error)
    rows = [r for r, k in zip(rows, keep) if k]
    if not rows:
        raise DataError(f"no usable MTG-Jamendo track in {folder} ({report.summary()})")
    for i, r in enumerate(rows):
        index.setdefault(r["part"], []).append(i)
    missing = [p for p in _PARTS if p not in index]
    if missing:
        raise DataError(
            f"no usable track in the {', '.join(missing)} part(s) of {folder} ({report.summary()})"
        )
    columns: dict[str, Sequence[Any]] = {
        "path": [r["path"] for r in rows],
        "name": [r["name"] for r in rows],
        "artist_id": [r["artist_id"] for r in rows],
        "album_id": [r["album_id"] for r in rows],
        "tags": [r["tags"] for r in rows],
    }
    spec: dict[str, Any] = {k: Value("string") for k in ("path", "name", "artist_id", "album_id")}
    spec["tags"] = SequenceFeature(Value("string"))
    if mapping is not None:
        columns["label"] = [r["label"] for r in rows]
        spec["label"] = ClassLabel(names=list(names))
    else:
        columns["labels"] = [[float(n in r["tags"]) for n in names] for r in rows]
        spec["labels"] = SequenceFeature(Value("float32"), length=len(names))
    return build_splits(columns, Features(spec), index, report, sample_rate), names


# ----------------------------------------------------------------------------------------------- registration


@dataclass
class MTGJamendoConfig(DataConfig):
    """``data.name=mtg_jamendo``: the settings of :func:`load_mtg_jamendo`.

    Attributes:
        root: the audio folder (``00/`` ... ``99/``); required.
        splits_dir: ``data/splits`` of a clone of MTG/mtg-jamendo-dataset; required.
        subset: one of :data:`SUBSETS` (``autotagging_top50tags``, ``autotagging_genre``, ``autotagging_moodtheme``, ...).
        split_index: the official split (0-4).
        genre_map: None for multi-label tags; ``gtzan`` or a ``{tag: genre}`` mapping for single-label genres.
        on_error, min_duration, full_check: as in the other loaders.
    """

    name: str = "mtg_jamendo"
    root: str | None = None
    splits_dir: str | None = None
    subset: str = "autotagging_top50tags"
    split_index: int = 0
    genre_map: str | dict[str, str] | None = None
    on_error: OnError = "skip"
    min_duration: float | None = None
    full_check: bool = False

    def __post_init__(self) -> None:
        if self.subset not in SUBSETS:
            raise ValueError(
                f"subset must be one of {', '.join(SUBSETS)}, got {self.subset!r}{did_you_mean(self.subset, SUBSETS)}"
            )
        if isinstance(self.genre_map, str):
            _genre_map(self.genre_map)


@register_dataset("mtg_jamendo", MTGJamendoConfig)
def build_mtg_jamendo(config: MTGJamendoConfig, sample_rate: int) -> TaskData:
    """MTG-Jamendo at ``sample_rate``: multi-label tags, or single-label genres through ``genre_map``."""
    splits, names = load_mtg_jamendo(
        required_path(config, "root", "the MTG-Jamendo audio folder (00/ ... 99/)"),
        required_path(config, "splits_dir", "data/splits of a clone of github.com/MTG/mtg-jamendo-dataset"),
        subset=config.subset,
        split_index=config.split_index,
        genre_map=config.genre_map,
        sample_rate=sample_rate,
        on_error=config.on_error,
        min_duration=config.min_duration,
        full_check=config.full_check,
        progress=config.progress,
    )
    return TaskData(splits, SINGLE_LABEL if config.genre_map is not None else MULTI_LABEL, names)
