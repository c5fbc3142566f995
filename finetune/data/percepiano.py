"""PercePiano (Park et al. 2024): 1202 piano performance segments, 1189 of them rated on 19 perceptual dimensions.

Labels come from the official JSON (``label_2round_mean_reg_19_with0_rm_highstd0.json``): segment name -> 19 mean
ratings (7-point scale / 7, so in (0, 1]) and the player id (0-21). Each labelled segment is paired with an audio file
of the same name (wav/flac/mp3/ogg in ``audio_dir``) or, failing that, its MIDI file in ``midi_dir`` rendered to
audio by :mod:`finetune.data.render` (cached on disk). Name matching ignores surrounding whitespace (one official
MIDI file name starts with a space).

Folds (``fold``) are the protocols of :mod:`finetune.data.percepiano_folds`: ``performer`` (player-disjoint),
``excerpt`` (excerpt-disjoint, what this loader called ``piece`` before: other excerpts of a test piece are
trained on), ``composition`` (piece-disjoint: no movement or variation in two splits), PercePiano's own
``performer_official`` and ``excerpt_official``, and ``random``. Each is a fixed test set plus ``n_folds``-fold
cross-validation over the rest; the validation set is fold ``fold_index``. Folds are drawn over every labelled
segment with a file, before audio is checked, so one unreadable file does not move the others.

Rendering: MIDI files without audio are rendered with a SoundFont (``soundfont``: any ``.sf2``; by default
pretty_midi's TimGM6mb, whose piano is muffled: almost no energy above 4 kHz) and cached per sound font and file
under ``$MUSICFT_CACHE/percepiano_render``. The load report (logged, and each split's ``info.description``) gives
the font and the spectrum of its renders (:class:`~finetune.data.spectrum.Spectrum`).

Loading is quiet when nothing is wrong: facts (the 13 unlabelled MIDI files of the official release, the file name
that begins with a space, the font and its spectrum) are logged at INFO level; a ``UserWarning`` means something
was dropped or is missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from datasets import DatasetDict, Features, Value
from datasets import Sequence as SequenceFeature

from backbones.checkpoints import cache_dir
from backbones.config import did_you_mean
from heads.rating import PERCEPIANO_DIMENSIONS
from heads.tasks import RATING

from .lazy import DataError, LoadReport, OnError, build_splits, check_on_error, scan_audio
from .percepiano_folds import (
    FOLD_PROTOCOLS,
    Segment,
    check_fold_arguments,
    fold_protocol,
    known_fold_names,
    parse_segment_name,
    split_segments,
)
from .registry import DataConfig, TaskData, register_dataset, required_path
from .render import RenderSettings, render_info, render_many
from .spectrum import Spectrum

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
_N = len(PERCEPIANO_DIMENSIONS)


def _read_json(path: str | os.PathLike[str], what: str) -> Any:
    """The JSON in ``path``, or :class:`DataError` naming the file when it is not valid JSON (e.g. truncated)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
            f"{path} is not valid JSON ({e}); the {what} file may be truncated or damaged: download it again"
        ) from e


def read_labels(
    path: str | os.PathLike[str], report: LoadReport
) -> dict[str, tuple[list[float], int] | None]:
    """Read the official label JSON: name -> (19 ratings in (0, 1], player id).

    Names lose surrounding whitespace. A bad entry maps to None and is recorded in ``report`` with its reason.

    Raises:
        DataError: the file is not valid JSON, is not a JSON object, or labels a segment twice.
    """
    raw = _read_json(path, "label")
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
    """Files of ``folder`` by name without suffix and surrounding whitespace (recorded when that mattered)."""
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
        report.inform(
            f"{len(padded)} file name(s) in {folder} matched after stripping whitespace: {', '.join(padded)}"
        )
    return out


def load_percepiano(
    labels: str | os.PathLike[str],
    midi_dir: str | os.PathLike[str] | None = None,
    audio_dir: str | os.PathLike[str] | None = None,
    fold: str = "excerpt",
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
    progress: bool = True,
) -> DatasetDict:
    """Load PercePiano as train/validation/test with columns ``path``, ``name``, ``ratings`` (19 floats),
    ``player``, ``piece``, ``excerpt``, ``performer`` (the file name's field) and, given ``std_labels``,
    ``ratings_std``.

    Args:
        labels: the official mean-rating JSON.
        midi_dir: folder of performance MIDI files, rendered for segments without audio.
        audio_dir: folder of audio files named like the segments.
        fold: a protocol of :mod:`finetune.data.percepiano_folds`: ``"performer"``, ``"performer_official"``,
            ``"excerpt"``, ``"excerpt_official"``, ``"composition"`` or ``"random"`` (``"piece"``, the old name
            of ``"excerpt"``, still works and warns).
        fold_index: which of the ``n_folds`` folds is the validation set.
        n_folds: number of cross-validation folds (the paper uses 4; the official protocols need 4).
        seed: seed of the test-set draw and of the fold order (the official protocols have their own).
        sample_rate: decode (and render) at this rate; None decodes at each file's rate and renders at 22050 Hz.
        render_cache: folder for rendered audio; None uses ``cache_dir()/percepiano_render`` (``$MUSICFT_CACHE``).
        soundfont: any ``.sf2`` to render with; None uses pretty_midi's General MIDI font (TimGM6mb).
        std_labels: the official rating standard-deviation JSON (optional).
        on_error: ``"skip"`` or ``"raise"`` for bad labels, unrenderable MIDI and unreadable or short audio.
        min_duration: audio shorter than this many seconds counts as bad.
        full_check: decode every file once at load time instead of reading headers only (slower; then no file can
            fail mid-epoch).
        render_workers: processes used to render MIDI.
        progress: show the rendering and file-check progress bars.

    Raises:
        DataError: a label file is not valid JSON or is ambiguous; with ``on_error="raise"``, any bad entry.
        ValueError: unknown ``fold``, bad ``n_folds``/``fold_index``, or neither ``audio_dir`` nor ``midi_dir``.
    """
    protocol = fold_protocol(fold)  # an unknown fold fails (and a renamed one warns) before any work
    check_fold_arguments(protocol, n_folds, fold_index)
    if midi_dir is None and audio_dir is None:
        raise ValueError("pass audio_dir (audio files) and/or midi_dir (MIDI files to render)")
    check_on_error(on_error)
    report = LoadReport("percepiano")
    labelled = read_labels(labels, report)
    stds = _read_stds(std_labels) if std_labels is not None else None
    audio, midi = _index(audio_dir, _AUDIO_SUFFIXES, report), _index(midi_dir, (".mid", ".midi"), report)
    _record_unmatched(labelled, set(audio) | set(midi), report)
    rows, segments = [], []
    for name, label in sorted(labelled.items()):
        source = audio.get(name) or midi.get(name)
        if label is None or source is None:
            continue
        ratings, player = label
        try:
            segment = Segment.from_name(source.stem, player)
        except ValueError as e:
            report.drop("unrecognised segment name", name, str(e))
            continue
        if stds is not None and name not in stds:
            report.drop("no standard-deviation entry", name)
            continue
        fields = {k: getattr(segment, k) for k in ("piece", "excerpt", "performer")}
        row = {"name": name, "path": audio.get(name), "ratings": ratings, "player": player, **fields}
        rows.append(row | ({"ratings_std": stds[name]} if stds is not None else {}))
        segments.append(segment)
    if not rows:
        raise DataError(f"no labelled PercePiano segment has an audio or MIDI file ({report.summary()})")
    try:
        folds = split_segments(segments, protocol.name, n_folds, fold_index, seed)
    except ValueError as e:  # too few groups: say what was found
        raise DataError(
            f"cannot split {len(segments)} segment(s) into {protocol.name} folds: {e} ({report.summary()})"
        ) from e
    if folds.left_out:
        named = [f"{rows[i]['name']} ({why})" for i, why in sorted(folds.left_out.items())]
        report.inform(
            f"{len(named)} segment(s) are in none of the {protocol.name} splits: {', '.join(named)}"
        )
    wanted = sorted(i for part in folds.as_dict().values() for i in part)
    _render_missing(
        [rows[i] for i in wanted],
        midi,
        render_cache,
        sample_rate,
        soundfont,
        render_workers,
        report,
        progress,
    )
    present = [i for i in wanted if rows[i]["path"] is not None]
    keep = scan_audio(
        [rows[i]["path"] for i in present],
        [rows[i]["name"] for i in present],
        report,
        min_duration,
        full_check,
        progress=progress,
    )
    usable = {i for i, k in zip(present, keep) if k}
    report.resolve(on_error)
    splits = {k: [i for i in v if i in usable] for k, v in folds.as_dict().items()}
    if not any(splits.values()):
        raise DataError(f"no labelled PercePiano segment has usable audio ({report.summary()})")
    return build_splits(*_columns(rows, stds is not None), splits, report, sample_rate)


def _read_stds(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    raw = _read_json(path, "standard-deviation")
    if not isinstance(raw, dict):
        raise DataError(f"{path} must hold a JSON object of segment name -> [{_N} standard deviations, ...]")
    bad = [k for k, v in raw.items() if not (isinstance(v, list) and len(v) >= _N)]
    if bad:
        raise DataError(f"{path}: {len(bad)} entries lack {_N} standard deviations: {', '.join(bad[:10])}")
    return {k.strip(): [float(x) for x in v[:_N]] for k, v in raw.items()}


def _record_unmatched(labelled: dict, files: set[str], report: LoadReport) -> None:
    """Unlabelled files are a fact of the official release (logged); labelled segments without a file are not."""
    unlabelled = sorted(files - set(labelled))
    missing = sorted(set(labelled) - files)
    if unlabelled:
        report.inform(f"{len(unlabelled)} file(s) have no label and are left out: {', '.join(unlabelled)}")
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
    progress: bool,
) -> None:
    """Fill in ``path`` of rows without audio by rendering their MIDI file (cached); record font and spectrum."""
    todo = [r for r in rows if r["path"] is None]
    if not todo:
        return
    target = Path(render_cache) if render_cache is not None else cache_dir() / "percepiano_render"
    settings = RenderSettings.of(sample_rate or 22050, soundfont)
    results = render_many([midi[r["name"]] for r in todo], target, settings, workers, progress)
    rendered = []
    for row, result in zip(todo, results):
        if isinstance(result, Exception):
            report.drop("unrenderable MIDI", row["name"], str(result))
        else:
            row["path"] = result
            rendered.append((row["name"], render_info(result)))
    if rendered:
        spec = Spectrum.pooled(info.spectrum for _, info in rendered)
        report.inform(
            f"{len(rendered)} segment(s) rendered from MIDI with {settings.font_label} at "
            f"{settings.sample_rate} Hz: {spec.describe()}"
        )
        clipped = [f"{name} ({info.peak:.2f})" for name, info in rendered if info.peak > 1.0]
        if clipped:
            report.note(
                f"{len(clipped)} render(s) clipped at full scale (peak before clipping): {', '.join(clipped)}"
            )


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
        fold: the fold protocol (``performer``, ``performer_official``, ``excerpt``, ``excerpt_official``,
            ``composition``, ``random``).
        soundfont: any ``.sf2`` to render MIDI with (e.g. ``/usr/share/sounds/sf2/FluidR3_GM.sf2``); None uses
            pretty_midi's TimGM6mb.
        fold_index, n_folds, render_cache, std_labels, on_error, min_duration, full_check, render_workers: as in
            :func:`load_percepiano`.
    """

    CHANGEABLE_ON_RESUME: ClassVar[frozenset[str]] = DataConfig.CHANGEABLE_ON_RESUME | {"render_workers"}

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
        if self.fold not in known_fold_names():  # the current names are offered, not the renamed ones
            raise ValueError(
                f"fold must be one of {', '.join(FOLD_PROTOCOLS)}, got {self.fold!r}"
                + did_you_mean(self.fold, FOLD_PROTOCOLS)
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
        progress=config.progress,
        render_workers=config.render_workers,
    )
    return TaskData(splits, RATING, tuple(PERCEPIANO_DIMENSIONS))
