"""Any labelled or rated collection listed in a CSV / TSV / JSONL manifest (:func:`load_manifest`, data set
``manifest``): one row per file, with a label and/or ratings, optional groups (artist, album, performer) and
optional predefined splits.

Without a split column the rows are split by :func:`finetune.data.splits.split_indices`: stratified by label and,
given a group column, group-disjoint (no artist in two splits). Policies for bad entries are those of
:mod:`finetune.data.lazy`; in addition a row with a missing label or rating, or a rating outside ``rating_range``,
is a bad entry. A file listed twice (also under two spellings of its path, e.g. ``rock/a.wav`` and
``./rock/a.wav``) and a label that occurs once where rows are split by class (usually a typo, e.g. ``rokc``)
raise :class:`~finetune.data.lazy.DataError` naming the rows.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import ClassLabel, DatasetDict, Features, Value
from datasets import Sequence as SequenceFeature

from backbones.config import did_you_mean
from heads.tasks import RATING, SINGLE_LABEL

from .lazy import DataError, LoadReport, OnError, build_splits, check_on_error, scan_audio
from .registry import DataConfig, TaskData, register_dataset, required_path
from .splits import SPLIT_ALIASES, check_disjoint, split_indices

__all__ = ["ManifestConfig", "build_manifest", "load_manifest", "read_table"]


def read_table(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The manifest's rows, each with its line number in the file."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {i}: not valid JSON ({e.msg})") from e
        return rows
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            return [(reader.line_num, row) for row in reader]
    raise ValueError(f"manifest {path} must be .csv, .tsv or .jsonl")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _rating(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _check_row(
    row: dict[str, Any], opts: dict[str, Any], name: str, report: LoadReport
) -> dict[str, Any] | None:
    """The manifest row's label, ratings and group, or None after recording why it is dropped."""
    out: dict[str, Any] = {}
    if opts["label"] is not None:
        if _blank(row.get(opts["label"])):
            report.drop(f"missing {opts['label']!r}", name)
            return None
        out["label"] = str(row[opts["label"]]).strip()
    if opts["ratings"]:
        values = [_rating(row.get(c)) for c in opts["ratings"]]
        absent = [c for c, v in zip(opts["ratings"], values) if v is None]
        if absent:
            report.drop("missing or non-numeric rating", name, ", ".join(absent))
            return None
        lo, hi = opts["range"] if opts["range"] is not None else (-math.inf, math.inf)
        outside = [f"{c}={v:g}" for c, v in zip(opts["ratings"], values) if not lo <= v <= hi]
        if outside:
            report.drop(f"rating outside [{lo:g}, {hi:g}]", name, ", ".join(outside))
            return None
        out["ratings"] = values
    if opts["group"] is not None:
        if _blank(row.get(opts["group"])):
            report.drop(f"missing {opts['group']!r}", name)
            return None
        out["group"] = str(row[opts["group"]]).strip()
    if opts["split"] is not None:
        value = str(row.get(opts["split"], "")).strip().lower()
        if value not in SPLIT_ALIASES:
            report.drop(f"unknown {opts['split']!r} value", name, repr(row.get(opts["split"])))
            return None
        out["split"] = SPLIT_ALIASES[value]
    return out


def load_manifest(
    path: str | os.PathLike[str],
    audio_root: str | os.PathLike[str] | None = None,
    label_column: str | None = "label",
    rating_columns: Sequence[str] | None = None,
    group_column: str | None = None,
    path_column: str = "path",
    split_column: str | None = None,
    rating_range: tuple[float, float] | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    on_error: OnError = "skip",
    min_duration: float | None = None,
    full_check: bool = False,
    progress: bool = True,
) -> DatasetDict:
    """Load a CSV/TSV/JSONL manifest: one row per file, with a label and/or ratings.

    Columns of the result: ``path``, ``name``, and ``label`` (class names sorted), ``ratings`` (float32 per
    ``rating_columns``, in that order) and ``group`` when asked for, and the header facts of
    :func:`~finetune.data.lazy.build_splits`.

    Args:
        path: the manifest.
        audio_root: folder that relative paths are relative to; None means the manifest's folder.
        label_column: column with class labels, or None for none.
        rating_columns: columns with numeric ratings (targets of a regression), or None.
        group_column: column whose values must not straddle splits (artist, performer, piece).
        path_column: column with the audio file paths.
        split_column: column with predefined splits (train/validation/test, also valid/val/dev/training).
        rating_range: inclusive (low, high) bounds every rating must lie in.
        fractions: train/validation/test fractions when there is no split column.
        seed: seed of that split.
        on_error: ``"skip"`` or ``"raise"`` for bad rows and unreadable or too short audio.
        min_duration: audio shorter than this many seconds counts as bad.
        full_check: decode every file once at load time instead of reading headers only.
        progress: show the file-check progress bar.

    Raises:
        DataError: the manifest is empty or lacks a column, lists a file twice (however its path is spelled),
            holds a label only once where rows are split by class, or has too few rows to split.
    """
    check_on_error(on_error)
    if label_column is None and not rating_columns:
        raise ValueError("give label_column and/or rating_columns: a manifest needs something to learn")
    path = Path(path).expanduser()
    table = read_table(path)
    needed = [
        c for c in (path_column, label_column, group_column, split_column, *(rating_columns or ())) if c
    ]
    absent = [c for c in needed if table and c not in table[0][1]]
    if not table or absent:
        raise DataError(f"manifest {path} is empty or lacks the column(s) {absent}")
    base = Path(audio_root).expanduser() if audio_root is not None else path.parent
    _check_listed_once(path, [str(r[path_column]).strip() for _, r in table], base)
    report = LoadReport(f"manifest {path.name}")
    opts = {"label": label_column, "ratings": list(rating_columns or []), "group": group_column}
    opts |= {"range": rating_range, "split": split_column}
    rows = []
    for line, r in table:
        rel = str(r[path_column]).strip()
        checked = _check_row(r, opts, rel, report)
        if checked is not None:
            rows.append(
                {"path": str(base / rel), "name": Path(rel).stem, "rel": rel, "line": line, **checked}
            )
    shown = [r["rel"] for r in rows]
    keep = scan_audio([r["path"] for r in rows], shown, report, min_duration, full_check, progress=progress)
    report.resolve(on_error)
    rows = [r for r, k in zip(rows, keep) if k]
    if not rows:
        raise DataError(f"no usable rows in {path} ({report.summary()})")
    if label_column is not None and split_column is None:
        _check_labels(path, rows)
    return _manifest_splits(rows, opts, fractions, seed, report)


def _check_listed_once(manifest: Path, listed: list[str], base: Path) -> None:
    """Raise :class:`DataError` for files listed twice, comparing resolved paths (``a.wav`` = ``./a.wav``)."""
    spellings: dict[Path, list[str]] = {}
    for rel in listed:
        spellings.setdefault((base / rel).resolve(), []).append(rel)
    dupes = [names for names in spellings.values() if len(names) > 1]
    if dupes:
        shown = ", ".join(
            names[0]
            if len(set(names)) == 1
            else f"{names[0]} (also as {', '.join(repr(n) for n in names[1:])})"
            for names in dupes[:20]
        )
        raise DataError(f"{len(dupes)} file(s) listed more than once in {manifest}: {shown}")


def _check_labels(manifest: Path, rows: list[dict[str, Any]]) -> None:
    """Raise :class:`DataError` for labels that occur once: a stratified split cannot place them, and they are
    usually typos. The message names each, its line and the close known labels."""
    counts = Counter(r["label"] for r in rows)
    once = [r for r in rows if counts[r["label"]] == 1]
    if not once:
        return
    known = sorted(label for label, n in counts.items() if n > 1)
    lines = [
        f"{r['label']!r} (line {r['line']}, {r['rel']}){did_you_mean(r['label'], known)}" for r in once[:20]
    ]
    raise DataError(
        f"{manifest}: {len(once)} label(s) occur only once, too few to split by class: {'; '.join(lines)}. The "
        f"known labels: {', '.join(f'{k} ({counts[k]})' for k in known)}. Fix the label, or drop the row"
    )


def _manifest_splits(
    rows: list[dict[str, Any]],
    opts: dict[str, Any],
    fractions: Sequence[float],
    seed: int,
    report: LoadReport,
) -> DatasetDict:
    spec: dict[str, Any] = {"path": Value("string"), "name": Value("string")}
    columns: dict[str, list] = {"path": [r["path"] for r in rows], "name": [r["name"] for r in rows]}
    labels = [r["label"] for r in rows] if opts["label"] is not None else None
    groups = [r["group"] for r in rows] if opts["group"] is not None else None
    if labels is not None:
        classes = sorted(set(labels))
        spec["label"] = ClassLabel(names=classes)
        columns["label"] = [classes.index(v) for v in labels]
    if opts["ratings"]:
        spec["ratings"] = SequenceFeature(Value("float32"), length=len(opts["ratings"]))
        columns["ratings"] = [r["ratings"] for r in rows]
    if groups is not None:
        spec["group"] = Value("string")
        columns["group"] = groups
    if opts["split"] is not None:
        splits = {
            s: [i for i, r in enumerate(rows) if r["split"] == s] for s in ("train", "validation", "test")
        }
    else:
        splits = split_indices(len(rows), fractions, labels=labels, groups=groups, seed=seed)
    if groups is not None:
        check_disjoint({s: [groups[i] for i in idx] for s, idx in splits.items()}, what=opts["group"])
    return build_splits(columns, Features(spec), splits, report)


@dataclass
class ManifestConfig(DataConfig):
    """``data.name=manifest``: the settings of :func:`load_manifest` (``seed`` is the shared one).

    A recipe learns one target: class labels (``label_column``) or ratings (``rating_columns`` with
    ``label_column: null``).

    Attributes:
        labels: the CSV/TSV/JSONL manifest; required.
        root: folder that relative audio paths are relative to; None means the manifest's folder.
        label_column, rating_columns, group_column, path_column, split_column, rating_range, fractions,
            on_error, min_duration, full_check: as in :func:`load_manifest`.
    """

    name: str = "manifest"
    labels: str | None = None
    root: str | None = None
    label_column: str | None = "label"
    rating_columns: tuple[str, ...] | None = None
    group_column: str | None = None
    path_column: str = "path"
    split_column: str | None = None
    rating_range: tuple[float, float] | None = None
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    on_error: OnError = "skip"
    min_duration: float | None = None
    full_check: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label_column is not None and self.rating_columns:
            raise ValueError(
                "a recipe learns labels or ratings, not both: set label_column=null to learn "
                f"rating_columns {list(self.rating_columns)}, or leave rating_columns out to learn "
                f"{self.label_column!r}"
            )
        if self.label_column is None and not self.rating_columns:
            raise ValueError("give label_column or rating_columns: a manifest needs something to learn")


@register_dataset("manifest", ManifestConfig)
def build_manifest(config: ManifestConfig, sample_rate: int) -> TaskData:
    """A manifest (read at any ``sample_rate``): single-label (``label_column``) or ratings (``rating_columns``)."""
    splits = load_manifest(
        required_path(config, "labels", "the CSV/TSV/JSONL manifest"),
        audio_root=Path(config.root).expanduser() if config.root is not None else None,
        label_column=config.label_column,
        rating_columns=config.rating_columns,
        group_column=config.group_column,
        path_column=config.path_column,
        split_column=config.split_column,
        rating_range=config.rating_range,
        fractions=config.fractions,
        seed=config.seed,
        on_error=config.on_error,
        min_duration=config.min_duration,
        full_check=config.full_check,
        progress=config.progress,
    )
    if config.rating_columns:
        return TaskData(splits, RATING, tuple(config.rating_columns))
    return TaskData(splits, SINGLE_LABEL, tuple(splits["train"].features["label"].names))
