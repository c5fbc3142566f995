"""A class-per-folder tree of audio files (:func:`load_audio_folder`, data set ``folder``), optionally under
train/validation/test folders, optionally with groups (a sub-folder or a file-name part: ``group_pattern``).

Without split folders the files are split by :func:`finetune.data.splits.split_indices`: stratified by class and,
with ``group_pattern``, group-disjoint (no album or artist in two splits, so one track's crops never leak between
them). Policies for bad entries are those of :mod:`finetune.data.lazy`; in addition a file that ``group_pattern``
does not match is a bad entry, one file name under two classes raises :class:`~finetune.data.lazy.DataError`, and
an empty class folder is left out with a note. CSV / JSONL manifests are :mod:`finetune.data.manifest`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, DatasetDict, Features, Value

from heads.tasks import SINGLE_LABEL

from .lazy import DataError, LoadReport, OnError, build_splits, check_on_error, scan_audio
from .registry import DataConfig, TaskData, register_dataset, required_path
from .splits import SPLIT_ALIASES, check_disjoint, split_indices

__all__ = [
    "AUDIO_EXTENSIONS",
    "FolderConfig",
    "build_folder",
    "load_audio_folder",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".au", ".aiff", ".aif")


def _class_files(folder: Path, extensions: Sequence[str], report: LoadReport) -> dict[str, list[Path]]:
    classes = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        if files:
            classes[d.name] = files
        else:
            report.note(f"class folder {d} holds no audio files ({', '.join(extensions)}) and is left out")
    loose = [p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions]
    if loose:
        report.note(
            f"{len(loose)} audio file(s) directly in {folder} belong to no class folder and are left out"
        )
    return classes


def _group_of(pattern: re.Pattern[str], relative: str) -> str | None:
    """The group ``pattern`` finds in a file's path relative to its class folder: its ``group`` named group, else
    its first group, else the whole match; None when it does not match."""
    m = pattern.search(relative)
    if m is None:
        return None
    if "group" in pattern.groupindex:
        return m["group"]
    return m[1] if pattern.groups else m[0]


def load_audio_folder(
    root: str | os.PathLike[str],
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    on_error: OnError = "skip",
    min_duration: float | None = None,
    full_check: bool = False,
    progress: bool = True,
    group_pattern: str | None = None,
) -> DatasetDict:
    """Load ``root/<class>/**/<file>`` as a labelled data set (``path``, ``name``, ``label``, ``group`` with
    ``group_pattern``, and the header facts of :func:`~finetune.data.lazy.build_splits`).

    If ``root`` holds ``train``/``validation`` (or ``valid``, ``val``, ``dev``)/``test`` folders, each with class
    folders, those are the splits; otherwise the files are split by ``fractions`` (stratified, seeded, and
    group-disjoint with ``group_pattern``).

    Args:
        root: the tree's top folder.
        extensions: file suffixes that count as audio.
        fractions: train/validation/test fractions when the tree has no split folders.
        seed: seed of that split.
        on_error: ``"skip"`` or ``"raise"`` for unreadable or too short audio, and files without a group.
        min_duration: audio shorter than this many seconds counts as bad.
        full_check: decode every file once at load time instead of reading headers only.
        progress: show the file-check progress bar.
        group_pattern: a regular expression searched in each file's path relative to its class folder (with
            ``/``); its ``group`` named group, first group or whole match names the file's group, and groups never
            straddle splits. ``"^([^/]+)/"``: the sub-folder (e.g. an album); ``"^([^_]+)_"``: the file name up
            to the first ``_`` (e.g. ``artist_title.wav``).

    Raises:
        DataError: no audio, one file name under two classes, or too few files (per class, or groups) to split.
    """
    check_on_error(on_error)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    pattern = re.compile(group_pattern) if group_pattern is not None else None
    exts = tuple(e.lower() for e in extensions)
    report = LoadReport(f"folder {root.name}")
    split_dirs = {
        SPLIT_ALIASES[p.name.lower()]: p
        for p in root.iterdir()
        if p.is_dir() and p.name.lower() in SPLIT_ALIASES
    }
    trees = split_dirs or {"": root}
    rows = []
    for split, folder in trees.items():
        for cls, files in _class_files(folder, exts, report).items():
            rows += [
                {
                    "path": str(p),
                    "name": p.stem,
                    "class": cls,
                    "split": split,
                    "rel": p.relative_to(folder / cls),
                }
                for p in files
            ]
    if not rows:
        raise DataError(f"no audio files ({', '.join(exts)}) in class folders under {root}")
    by_name: dict[str, set[str]] = {}
    for r in rows:
        by_name.setdefault(f"{r['split']}/{Path(r['path']).name}", set()).add(r["class"])
    dupes = sorted(n for n, c in by_name.items() if len(c) > 1)
    if dupes:
        raise DataError(
            f"{len(dupes)} file name(s) appear under more than one class: {', '.join(dupes[:20])}"
        )
    if pattern is not None:
        for r in rows:
            r["group"] = _group_of(pattern, r["rel"].as_posix())
            if r["group"] is None:
                report.drop(
                    f"no group (group_pattern {pattern.pattern!r} does not match)", r["rel"].as_posix()
                )
    names = [str(Path(r["path"]).relative_to(root)) for r in rows]
    keep = scan_audio([r["path"] for r in rows], names, report, min_duration, full_check, progress=progress)
    keep = [k and r.get("group", "") is not None for r, k in zip(rows, keep)]
    report.resolve(on_error)
    rows = [r for r, k in zip(rows, keep) if k]
    classes = sorted({r["class"] for r in rows})
    columns = {"path": [r["path"] for r in rows], "name": [r["name"] for r in rows]}
    columns["label"] = [classes.index(r["class"]) for r in rows]
    spec = {"path": Value("string"), "name": Value("string"), "label": ClassLabel(names=classes)}
    groups = [r["group"] for r in rows] if pattern is not None else None
    if groups is not None:
        columns["group"], spec["group"] = groups, Value("string")
    if split_dirs:
        splits = {
            s: [i for i, r in enumerate(rows) if r["split"] == s] for s in ("train", "validation", "test")
        }
    else:
        splits = split_indices(
            len(rows), fractions, labels=[r["class"] for r in rows], groups=groups, seed=seed
        )
    if groups is not None:
        check_disjoint({s: [groups[i] for i in idx] for s, idx in splits.items()}, what="group")
    return build_splits(columns, Features(spec), splits, report)


# ----------------------------------------------------------------------------------------------- registration


@dataclass
class FolderConfig(DataConfig):
    """``data.name=folder``: the settings of :func:`load_audio_folder` (``seed`` is the shared one).

    Attributes:
        root: the tree's top folder, one folder per class (optionally under train/validation/test); required.
        extensions, fractions, on_error, min_duration, full_check, group_pattern: as in
            :func:`load_audio_folder`.
    """

    name: str = "folder"
    root: str | None = None
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    on_error: OnError = "skip"
    min_duration: float | None = None
    full_check: bool = False
    group_pattern: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except re.error as e:
                raise ValueError(
                    f"group_pattern {self.group_pattern!r} is not a regular expression: {e}"
                ) from e


@register_dataset("folder", FolderConfig)
def build_folder(config: FolderConfig, sample_rate: int) -> TaskData:
    """A class-per-folder tree (read at any ``sample_rate``): single-label, classes named by their folders."""
    splits = load_audio_folder(
        required_path(config, "root", "the folder of class folders"),
        extensions=config.extensions,
        fractions=config.fractions,
        seed=config.seed,
        on_error=config.on_error,
        min_duration=config.min_duration,
        full_check=config.full_check,
        progress=config.progress,
        group_pattern=config.group_pattern,
    )
    return TaskData(splits, SINGLE_LABEL, tuple(splits["train"].features["label"].names))
