"""PercePiano (Park et al. 2024): 1202 piano performance segments, 1189 of them rated on 19 perceptual dimensions.

Labels come from the official JSON (``label_2round_mean_reg_19_with0_rm_highstd0.json``): segment name -> 19 mean
ratings (7-point scale / 7, so in (0, 1]) and the player id (0-21). Each labelled segment is paired with an audio file
of the same name (wav/flac/mp3/ogg in ``audio_dir``) or, failing that, its MIDI file in ``midi_dir`` rendered to
audio by :mod:`finetune.data.render` (cached on disk). Name matching ignores surrounding whitespace (one official
MIDI file name starts with a space).

Folds (``fold``), each a fixed test set plus ``n_folds``-fold cross-validation over the rest, as in the official
repository (JonghoKimSNU/PercePiano, ``virtuoso/.../m2pf_dataset_{compositionfold,performerfold}.py``):

- ``"piece"``: groups are musical excerpts, i.e. the segment name without its performer field
  (``<piece>_<N>bars_<segment>``): every performance of an excerpt is in one part, as the official
  ``composition4fold`` split groups them. Seeded random groups form the test set until it holds 15% of the
  segments (the official rule); the other groups are dealt into folds. The official lists came from an unseeded
  directory listing, so the same rule gives different (equally valid) lists here.
- ``"performer"``: groups are the player ids of the labels. The official ``performer4fold`` code groups by the
  file name's performer field, which names a different person in different pieces (player 0 is field ``1`` in the
  Beethoven files and ``Score`` elsewhere), so its folds put some players in both training and test data; grouping
  by the player id keeps every player in one part. Test set and folds as for ``"piece"``.
- ``"random"``: every segment is its own group.

The validation set is fold ``fold_index``; the test set does not change with ``fold_index``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict, Features, Value
from datasets import Sequence as SequenceFeature

from backbones.checkpoints import cache_dir
from backbones.config import did_you_mean
from heads.rating import PERCEPIANO_DIMENSIONS
from heads.tasks import RATING

from .lazy import DataError, LoadReport, OnError, build_splits, check_on_error, scan_audio
from .registry import DataConfig, TaskData, register_dataset, required_path
from .render import render_many
from .splits import check_disjoint, holdout_kfold

__all__ = [
    "LABELS_FILE",
    "PERCEPIANO_DIMENSIONS",
    "PercePianoConfig",
    "build_percepiano",
    "load_percepiano",
    "parse_segment_name",
    "read_labels",
]

_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
_NAME = re.compile(r"^(?P<piece>.+)_(?P<bars>\d+)bars_(?P<performer>[^_]+)_(?P<segment>\d+)$")
_N = len(PERCEPIANO_DIMENSIONS)
_TEST_FRACTION = 0.15  # the official scripts' held-out share


def parse_segment_name(name: str) -> dict[str, str]:
    """Split ``<piece>_<N>bars_<performer>_<segment>`` into its fields plus ``excerpt`` (the name minus performer).

    Raises:
        ValueError: the name does not have that form.
    """
    m = _NAME.match(name.strip())
    if m is None:
        raise ValueError(f"segment name {name!r} is not of the form <piece>_<N>bars_<performer>_<segment>")
    return {**m.groupdict(), "excerpt": f"{m['piece']}_{m['bars']}bars_{m['segment']}"}


def read_labels(
    path: str | os.PathLike[str], report: LoadReport
) -> dict[str, tuple[list[float], int] | None]:
    """Read the official label JSON: name -> (19 ratings in (0, 1], player id).

    Names lose surrounding whitespace. A bad entry maps to None and is recorded in ``report`` with its reason.
    """
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict):
        raise DataError(f"{path} must hold a JSON object of segment name -> [19 ratings, player id]")
    out: dict[str, tuple[list[float], int] | None] = {}
    for name, values in raw.items():
        key = name.strip()
        if key in out:
            raise DataError(f"{path}: segment {key!r} is labelled twice")
        out[key] = None
        ok_shape = isinstance(values, list) and len(values) == _N + 1
        if not ok_shape or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            report.drop("malformed label entry", key, f"expected {_N} ratings and a player id")
            continue
        ratings, player = [float(v) for v in values[:_N]], values[_N]
        if not all(0.0 < r <= 1.0 for r in ratings):
            report.drop("rating outside (0, 1]", key, f"min {min(ratings):.3g}, max {max(ratings):.3g}")
        elif player != int(player) or player < 0:
            report.drop("player id not a non-negative integer", key, repr(player))
        else:
            out[key] = (ratings, int(player))
    return out


def _index(
    folder: str | os.PathLike[str] | None, suffixes: Sequence[str], report: LoadReport
) -> dict[str, Path]:
    """Files of ``folder`` by name without suffix and surrounding whitespace (noted when that mattered)."""
    if folder is None:
        return {}
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory")
    out: dict[str, Path] = {}
    padded = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes:
            continue
        key = path.stem.strip()
        if key != path.stem:
            padded.append(repr(path.name))
        if key in out:
            raise DataError(f"two files for segment {key!r} in {folder}: {out[key].name!r} and {path.name!r}")
        out[key] = path
    if padded:
        report.note(
            f"{len(padded)} file name(s) in {folder} matched after stripping whitespace: {', '.join(padded)}"
        )
    return out


# fold kind -> the column whose values are kept together in one part
_FOLD_GROUP = {"performer": "player", "piece": "excerpt", "random": "name"}


def load_percepiano(
    labels: str | os.PathLike[str],
    midi_dir: str | os.PathLike[str] | None = None,
    audio_dir: str | os.PathLike[str] | None = None,
    fold: str = "piece",
    fold_index: int = 0,
    n_folds: int = 4,
    seed: int = 0,
    sample_rate: int | None = None,
    render_cache: str | os.PathLike[str] | None = None,
    soundfont: str | os.PathLike[str] | None = None,
    std_labels: str | os.PathLike[str] | None = None,
    on_error: OnError = "skip",
    min_duration: float | None = None,
    full_check: bool = False,
    render_workers: int = 1,
) -> DatasetDict:
    """Load PercePiano as train/validation/test with columns ``path``, ``name``, ``ratings`` (19 floats),
    ``player``, ``piece``, ``excerpt``, ``performer`` (the file name's field) and, given ``std_labels``,
    ``ratings_std``.

    Args:
        labels: the official mean-rating JSON.
        midi_dir: folder of performance MIDI files, rendered for segments without audio.
        audio_dir: folder of audio files named like the segments.
        fold: ``"piece"``, ``"performer"`` or ``"random"`` (see the module docstring).
        fold_index: which of the ``n_folds`` folds is the validation set.
        n_folds: number of cross-validation folds (the paper uses 4).
        seed: seed of the test-set draw and of the fold order.
        sample_rate: decode (and render) at this rate; None decodes at each file's rate and renders at 22050 Hz.
        render_cache: folder for rendered audio; None uses ``cache_dir()/percepiano_render``.
        soundfont: ``.sf2`` for rendering; None uses pretty_midi's General MIDI font.
        std_labels: the official rating standard-deviation JSON (optional).
        on_error: ``"skip"`` or ``"raise"`` for bad labels, unrenderable MIDI and unreadable or short audio.
        min_duration: audio shorter than this many seconds counts as bad.
        full_check: decode every file once at load time instead of reading headers only (slower; then no file can
            fail mid-epoch).
        render_workers: processes used to render MIDI.
    """
    if fold not in _FOLD_GROUP:
        raise ValueError(f"fold must be one of {sorted(_FOLD_GROUP)}, got {fold!r}")
    if midi_dir is None and audio_dir is None:
        raise ValueError("pass audio_dir (audio files) and/or midi_dir (MIDI files to render)")
    check_on_error(on_error)
    report = LoadReport("percepiano")
    labelled = read_labels(labels, report)
    stds = _read_stds(std_labels) if std_labels is not None else None
    audio, midi = _index(audio_dir, _AUDIO_SUFFIXES, report), _index(midi_dir, (".mid", ".midi"), report)
    _note_unmatched(labelled, set(audio) | set(midi), report)
    rows = []
    for name, label in sorted(labelled.items()):
        if label is None or (name not in audio and name not in midi):
            continue
        ratings, player = label
        try:
            fields = parse_segment_name(name)
        except ValueError as e:
            report.drop("unrecognised segment name", name, str(e))
            continue
        if stds is not None and name not in stds:
            report.drop("no standard-deviation entry", name)
            continue
        row = {"name": name, "path": audio.get(name), "ratings": ratings, "player": player, **fields}
        rows.append(row | ({"ratings_std": stds[name]} if stds is not None else {}))
    _render_missing(rows, midi, render_cache, sample_rate, soundfont, render_workers, report)
    rows = [r for r in rows if r["path"] is not None]
    keep = scan_audio([r["path"] for r in rows], [r["name"] for r in rows], report, min_duration, full_check)
    report.resolve(on_error)
    rows = [r for r, k in zip(rows, keep) if k]
    if not rows:
        raise DataError(f"no labelled PercePiano segment has usable audio ({report.summary()})")
    groups = [str(r[_FOLD_GROUP[fold]]) for r in rows]
    splits = holdout_kfold(groups, n_folds, fold_index, _TEST_FRACTION, seed)
    check_disjoint({k: [groups[i] for i in idx] for k, idx in splits.items()}, what=f"{fold} group")
    return build_splits(*_columns(rows, stds is not None), splits, report, sample_rate)


def _read_stds(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    raw = json.loads(Path(path).read_text())
    bad = [k for k, v in raw.items() if not (isinstance(v, list) and len(v) >= _N)]
    if bad:
        raise DataError(f"{path}: {len(bad)} entries lack {_N} standard deviations: {', '.join(bad[:10])}")
    return {k.strip(): [float(x) for x in v[:_N]] for k, v in raw.items()}


def _note_unmatched(labelled: dict, files: set[str], report: LoadReport) -> None:
    unlabelled = sorted(files - set(labelled))
    missing = sorted(set(labelled) - files)
    if unlabelled:
        report.note(f"{len(unlabelled)} file(s) have no label and are left out: {', '.join(unlabelled)}")
    if missing:
        shown = ", ".join(missing[:20]) + (f", ... (+{len(missing) - 20} more)" if len(missing) > 20 else "")
        report.note(f"{len(missing)} labelled segment(s) have no audio or MIDI file: {shown}")


def _render_missing(
    rows: list[dict],
    midi: dict[str, Path],
    render_cache: str | os.PathLike[str] | None,
    sample_rate: int | None,
    soundfont: str | os.PathLike[str] | None,
    workers: int,
    report: LoadReport,
) -> None:
    """Fill in ``path`` of rows without audio by rendering their MIDI file (cached)."""
    todo = [r for r in rows if r["path"] is None]
    if not todo:
        return
    target = Path(render_cache) if render_cache is not None else cache_dir() / "percepiano_render"
    results = render_many([midi[r["name"]] for r in todo], target, sample_rate or 22050, soundfont, workers)
    for row, result in zip(todo, results):
        if isinstance(result, Exception):
            report.drop("unrenderable MIDI", row["name"], str(result))
        else:
            row["path"] = result


def _columns(rows: list[dict], with_std: bool) -> tuple[dict[str, list], Features]:
    spec = {
        "path": Value("string"),
        "name": Value("string"),
        "ratings": SequenceFeature(Value("float32"), length=_N),
        "player": Value("int32"),
        "piece": Value("string"),
        "excerpt": Value("string"),
        "performer": Value("string"),
    }
    if with_std:
        spec["ratings_std"] = SequenceFeature(Value("float32"), length=_N)
    columns = {k: [str(r[k]) if k == "path" else r[k] for r in rows] for k in spec}
    return columns, Features(spec)


# ----------------------------------------------------------------------------------------------- registration

# The official mean-rating file, looked for in data.root when data.labels is not given.
LABELS_FILE = "label_2round_mean_reg_19_with0_rm_highstd0.json"


@dataclass
class PercePianoConfig(DataConfig):
    """``data.name=percepiano``: the settings of :func:`load_percepiano` (``seed`` is the shared one).

    Attributes:
        root: the folder with the segments' audio and/or MIDI files (MIDI directly or in ``midi/``); required.
        labels: the mean-rating JSON; None uses ``root/`` + :data:`LABELS_FILE`.
        audio_dir: audio files; None uses ``root``.
        midi_dir: MIDI files; None uses ``root/midi`` if it exists, else ``root``.
        fold, fold_index, n_folds, render_cache, soundfont, std_labels, on_error, min_duration, full_check,
            render_workers: as in :func:`load_percepiano`.
    """

    name: str = "percepiano"
    root: str | None = None
    labels: str | None = None
    audio_dir: str | None = None
    midi_dir: str | None = None
    fold: str = "performer"
    fold_index: int = 0
    n_folds: int = 4
    render_cache: str | None = None
    soundfont: str | None = None
    std_labels: str | None = None
    on_error: OnError = "skip"
    min_duration: float | None = None
    full_check: bool = False
    render_workers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fold not in _FOLD_GROUP:
            raise ValueError(
                f"fold must be one of {', '.join(_FOLD_GROUP)}, got {self.fold!r}"
                + did_you_mean(self.fold, _FOLD_GROUP)
            )


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value is not None else None


@register_dataset("percepiano", PercePianoConfig)
def build_percepiano(config: PercePianoConfig, sample_rate: int) -> TaskData:
    """PercePiano decoded (or rendered) at ``sample_rate``: 19 rating dimensions."""
    root = required_path(config, "root", "the folder with the segments' audio and/or MIDI files (or midi/)")
    splits = load_percepiano(
        labels=_path(config.labels) or root / LABELS_FILE,
        midi_dir=_path(config.midi_dir) or (root / "midi" if (root / "midi").is_dir() else root),
        audio_dir=_path(config.audio_dir) or root,
        fold=config.fold,
        fold_index=config.fold_index,
        n_folds=config.n_folds,
        seed=config.seed,
        sample_rate=sample_rate,
        render_cache=config.render_cache,
        soundfont=config.soundfont,
        std_labels=config.std_labels,
        on_error=config.on_error,
        min_duration=config.min_duration,
        full_check=config.full_check,
        render_workers=config.render_workers,
    )
    return TaskData(splits, RATING, tuple(PERCEPIANO_DIMENSIONS))
