"""GTZAN genre collection (Tzanetakis & Cook 2002): 1000 30-second clips, 10 genres, 100 each.

Splits:

- ``"fault_filtered"`` (default): the artist-conscious split of Kereliuk, Sturm & Larsen (2015) that leaves out
  GTZAN's 70 repeated, distorted and mislabelled clips: 443 train / 197 validation / 290 test, read from the three
  list files of the public repository coreyker/dnn-mgr (``gtzan/*_filtered.txt``). Pass ``splits_dir`` holding
  them, or let the loader download them once into the cache (checked against pinned sha256 sums).
- ``"random"``: a seeded, genre-stratified train/validation/test split of every clip found (the common but
  optimistic protocol: the same artist can be in train and test).
- ``"kfold"``: fold ``fold_index`` of a seeded, genre-stratified ``n_folds``-fold split (train/test).

Unreadable clips (GTZAN's ``jazz.00054.wav`` is a known one) follow the ``on_error`` policy of
:mod:`finetune.data.lazy`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, DatasetDict, Features, Value

from backbones.checkpoints import cache_dir
from backbones.config import did_you_mean
from heads.classification import GTZAN_GENRES
from heads.tasks import SINGLE_LABEL

from .lazy import DataError, LoadReport, OnError, build_splits, check_on_error, scan_audio
from .registry import DataConfig, TaskData, register_dataset, required_path
from .splits import kfold, split_indices

__all__ = [
    "GTZAN_GENRES",
    "GTZANConfig",
    "build_gtzan",
    "fault_filtered_lists",
    "find_genre_dir",
    "load_gtzan",
    "read_split_list",
]

SPLITS_URL = "https://raw.githubusercontent.com/coreyker/dnn-mgr/master/gtzan/"
# split name -> (file name, sha256 of the published file)
_SPLIT_FILES = {
    "train": ("train_filtered.txt", "2b04966cef1486f1a7767b74271533fa23e220388db804a1937835e1fc4fa3fa"),
    "validation": ("valid_filtered.txt", "f8fbee7c52397a0e0f3a91dc54fedecb2e27f5bdc9a9daeab8cb10d077e26956"),
    "test": ("test_filtered.txt", "09cafa6a89ce0a27f30ed250d56ecb4d03c22fffb5a693f96c7ae655ee02ac72"),
}
_ENTRY = re.compile(r"^(?P<genre>[a-z]+)/(?P=genre)\.(?P<num>\d{5})\.(wav|au)$")
_AUDIO_SUFFIXES = (".wav", ".au")


def find_genre_dir(root: str | os.PathLike[str]) -> Path:
    """The folder holding the ten genre folders: ``root/genres``, ``root/genres_original``, ``root/Data/...`` or root.

    Raises:
        FileNotFoundError: none of these holds a genre folder.
    """
    root = Path(root).expanduser()
    candidates = [root / "genres", root / "genres_original", root / "Data" / "genres_original", root]
    for c in candidates:
        if any((c / g).is_dir() for g in GTZAN_GENRES):
            return c
    raise FileNotFoundError(
        f"no GTZAN genre folders ({', '.join(GTZAN_GENRES[:3])}, ...) found in any of: "
        + ", ".join(str(c) for c in candidates)
    )


def read_split_list(path: str | os.PathLike[str]) -> list[str]:
    """Read a split list (one ``genre/genre.000NN.wav`` per line) as track names ``genre.000NN``.

    Raises:
        DataError: a line is not a GTZAN track path, or a track is listed twice.
    """
    names, seen = [], set()
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        m = _ENTRY.match(line)
        if m is None or m["genre"] not in GTZAN_GENRES:
            raise DataError(
                f"{path}, line {i}: {line!r} is not a GTZAN track path like 'blues/blues.00012.wav'"
            )
        name = f"{m['genre']}.{m['num']}"
        if name in seen:
            raise DataError(f"{path}, line {i}: track {name} is listed twice")
        seen.add(name)
        names.append(name)
    return names


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(file_name: str, sha256: str) -> Path:
    """The cached copy of a published split list, downloaded on first use and verified."""
    target = cache_dir() / "gtzan_splits" / file_name
    if target.is_file() and _sha256(target.read_bytes()) == sha256:
        return target
    url = SPLITS_URL + file_name
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError, TimeoutError, RuntimeError) as e:
        raise DataError(
            f"could not download the GTZAN fault-filtered split list {url} ({e}). If you are offline, fetch "
            f"train_filtered.txt, valid_filtered.txt and test_filtered.txt from {SPLITS_URL} elsewhere and pass "
            "their folder as splits_dir"
        ) from e
    if _sha256(data) != sha256:
        raise DataError(f"{url} changed: sha256 {_sha256(data)} is not the published {sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    Path(tmp).replace(target)
    return target


def fault_filtered_lists(splits_dir: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """The fault-filtered split as ``{"train": [...], "validation": [...], "test": [...]}`` track names.

    Args:
        splits_dir: folder with ``train_filtered.txt``, ``valid_filtered.txt`` and ``test_filtered.txt``; None
            downloads them once into ``cache_dir()/gtzan_splits``.
    """
    out = {}
    for split, (file_name, sha256) in _SPLIT_FILES.items():
        path = Path(splits_dir) / file_name if splits_dir is not None else _fetch(file_name, sha256)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: splits_dir must hold {file_name}")
        out[split] = read_split_list(path)
    clash = set(out["train"]) & set(out["validation"]) | set(out["train"]) & set(out["test"])
    clash |= set(out["validation"]) & set(out["test"])
    if clash:
        raise DataError(f"{len(clash)} track(s) are in more than one split list: {', '.join(sorted(clash))}")
    return out


def _audio_files(genre_dir: Path) -> dict[str, Path]:
    """Every ``<genre>/<genre>.NNNNN.(wav|au)`` under ``genre_dir``, by track name."""
    found: dict[str, Path] = {}
    for genre in GTZAN_GENRES:
        for path in sorted((genre_dir / genre).glob(f"{genre}.*")):
            if path.suffix in _AUDIO_SUFFIXES and _ENTRY.match(f"{genre}/{path.name}"):
                if path.stem in found:
                    raise DataError(f"track {path.stem} exists twice: {found[path.stem]} and {path}")
                found[path.stem] = path
    return found


# A splitter gets the track names found on disk and the options; it returns the rows (track names) and the
# row indices of each split.
_Splitter = Callable[[list[str], dict], tuple[list[str], dict[str, list[int]]]]


def _fault_filtered(found: list[str], opts: dict) -> tuple[list[str], dict[str, list[int]]]:
    lists = fault_filtered_lists(opts["splits_dir"])
    names, out = [], {}
    for split, listed in lists.items():
        out[split] = list(range(len(names), len(names) + len(listed)))
        names += listed
    return names, out


def _genres(names: Sequence[str]) -> list[str]:
    return [n.split(".")[0] for n in names]


def _random(found: list[str], opts: dict) -> tuple[list[str], dict[str, list[int]]]:
    return found, split_indices(len(found), opts["fractions"], labels=_genres(found), seed=opts["seed"])


def _kfold(found: list[str], opts: dict) -> tuple[list[str], dict[str, list[int]]]:
    return found, kfold(
        len(found), opts["n_folds"], opts["fold_index"], labels=_genres(found), seed=opts["seed"]
    )


_SPLITTERS: dict[str, _Splitter] = {"fault_filtered": _fault_filtered, "random": _random, "kfold": _kfold}


def load_gtzan(
    root: str | os.PathLike[str],
    split: str = "fault_filtered",
    splits_dir: str | os.PathLike[str] | None = None,
    fold_index: int = 0,
    n_folds: int = 10,
    seed: int = 0,
    on_error: OnError = "skip",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    min_duration: float | None = None,
    full_check: bool = False,
    progress: bool = True,
) -> DatasetDict:
    """Load GTZAN as a ``DatasetDict`` with columns ``path``, ``name`` (``blues.00012``), ``label`` (genre) and the
    header facts of :func:`~finetune.data.lazy.build_splits` (rows hold no audio: see :mod:`finetune.data.lazy`).

    Args:
        root: the GTZAN folder (``genres/``, ``genres_original/`` or the genre folders themselves).
        split: ``"fault_filtered"``, ``"random"`` or ``"kfold"`` (see the module docstring).
        splits_dir: folder with the fault-filtered lists; None downloads them once.
        fold_index: which fold is the test set (``"kfold"``).
        n_folds: number of folds (``"kfold"``).
        seed: seed of the ``"random"`` and ``"kfold"`` splits.
        on_error: ``"skip"`` or ``"raise"`` for missing, unreadable or too short clips.
        fractions: train/validation/test fractions of the ``"random"`` split.
        min_duration: clips shorter than this many seconds count as bad.
        full_check: decode every clip once at load time instead of reading headers only (slower; then no clip can
            fail mid-epoch).
        progress: show the file-check progress bar.

    Returns:
        train/validation/test (``"kfold"``: train/test).

    Raises:
        DataError: a ``"random"`` or ``"kfold"`` split of too few clips (a partial copy); the message says how many
            each genre needs.
    """
    if split not in _SPLITTERS:
        raise ValueError(f"split must be one of {sorted(_SPLITTERS)}, got {split!r}")
    check_on_error(on_error)
    genre_dir = find_genre_dir(root)
    files = _audio_files(genre_dir)
    opts = {
        "splits_dir": splits_dir,
        "fold_index": fold_index,
        "n_folds": n_folds,
        "seed": seed,
        "fractions": fractions,
    }
    if split == "fault_filtered":
        names, splits = _fault_filtered(sorted(files), opts)
    else:
        try:
            names, splits = _SPLITTERS[split](sorted(files), opts)
        except DataError as e:  # too few clips to split: say how many there are
            raise DataError(f"GTZAN in {genre_dir} has {len(files)} of its 1000 clips: {e}") from e
    report = LoadReport("gtzan")
    paths = [str(files.get(n, genre_dir / n.split(".")[0] / f"{n}.wav")) for n in names]
    shown = [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]  # e.g. jazz/jazz.00054.wav
    keep = scan_audio(paths, shown, report, min_duration, full_check, progress=progress)
    report.resolve(on_error)
    splits = {s: [i for i in idx if keep[i]] for s, idx in splits.items()}
    columns = {"path": paths, "name": names, "label": [GTZAN_GENRES.index(g) for g in _genres(names)]}
    features = Features(
        {"path": Value("string"), "name": Value("string"), "label": ClassLabel(names=list(GTZAN_GENRES))}
    )
    return build_splits(columns, features, splits, report)


# ----------------------------------------------------------------------------------------------- registration


@dataclass
class GTZANConfig(DataConfig):
    """``data.name=gtzan``: the settings of :func:`load_gtzan` (``seed`` is the shared one).

    Attributes:
        root: the GTZAN folder (required; ``None`` is the configs' placeholder).
        split, splits_dir, fold_index, n_folds, on_error, fractions, min_duration, full_check: as in
            :func:`load_gtzan`.
    """

    name: str = "gtzan"
    root: str | None = None
    split: str = "fault_filtered"
    splits_dir: str | None = None
    fold_index: int = 0
    n_folds: int = 10
    on_error: OnError = "skip"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    min_duration: float | None = None
    full_check: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split not in _SPLITTERS:
            raise ValueError(
                f"split must be one of {', '.join(_SPLITTERS)}, got {self.split!r}"
                + did_you_mean(self.split, _SPLITTERS)
            )


@register_dataset("gtzan", GTZANConfig)
def build_gtzan(config: GTZANConfig, sample_rate: int) -> TaskData:
    """GTZAN (read at any ``sample_rate``): 10 genres, single-label."""
    root = required_path(config, "root", "the GTZAN folder (genres/ or genres_original/)")
    splits = load_gtzan(
        root,
        split=config.split,
        splits_dir=config.splits_dir,
        fold_index=config.fold_index,
        n_folds=config.n_folds,
        seed=config.seed,
        on_error=config.on_error,
        fractions=config.fractions,
        min_duration=config.min_duration,
        full_check=config.full_check,
        progress=config.progress,
    )
    return TaskData(splits, SINGLE_LABEL, tuple(GTZAN_GENRES))
