"""MagnaTagATune (Law et al. 2009): 25,863 clips of 29 s (16 kHz mono MP3) from Magnatune, with 188 binary tags
from the TagATune game; the usual benchmark keeps the 50 most frequent tags.

``annotations_final.csv`` (despite its name, tab-separated, values in double quotes) has the header
``clip_id``, the 188 tag names (``guitar``, ``no voice``, ...), ``mp3_path``; then one row per clip with 0/1 per
tag and the clip's path relative to the audio folder (``f/american_bach_soloists-...-30-59.mp3``), whose first
component is one of the 16 folders ``0`` ... ``f`` the archive unpacks to.

Tags: the ``top_k`` (default 50) most frequent, by clip count (ties by column order), as multi-hot ``labels``.

Split (``split``):

- ``"folders"`` (default): the standard split of Dieleman & Schrauwen (2014), used since by most tagging papers:
  folders ``0``-``b`` train, ``c`` validates, ``d``-``f`` test.
- ``"lists"``: the index lists of Won et al. (``split_dir`` with ``train.npy``, ``valid.npy`` and ``test.npy``
  from minzwon/sota-music-tagging-models ``split/mtat``: numpy string arrays of ``"<clip_id>\\t<mp3_path>"``,
  loaded without pickling), which keep clips with at least one top-50 tag.

``drop_untagged`` leaves out clips with none of the kept tags. The annotation file names no artists, so no
artist check is made (the folders split songs, not artists). Missing, empty or unreadable MP3s (the archive has a
few empty ones) are reported as in every loader (``on_error``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import DatasetDict, Features, Value
from datasets import Sequence as SequenceFeature

from heads.tasks import MULTI_LABEL

from .lazy import DataError, LoadReport, OnError, build_splits, check_on_error, scan_audio
from .registry import DataConfig, TaskData, register_dataset, required_path

__all__ = [
    "ANNOTATIONS_FILE",
    "FOLDER_SPLIT",
    "MagnaTagATuneConfig",
    "build_magnatagatune",
    "load_magnatagatune",
    "read_annotations",
]

ANNOTATIONS_FILE = "annotations_final.csv"
FOLDER_SPLIT: dict[str, str] = {
    **{f: "train" for f in "0123456789ab"},
    "c": "validation",
    **{f: "test" for f in "def"},
}
_LIST_FILES = {"train": "train.npy", "validation": "valid.npy", "test": "test.npy"}


def read_annotations(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """``annotations_final.csv``: the tag names, and per clip ``clip_id``, ``mp3_path`` and ``tags`` (0/1 int8
    array in tag order).

    Raises:
        DataError: the header lacks ``clip_id`` / ``mp3_path``, or a row is malformed.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if not header or header[0] != "clip_id" or header[-1] != "mp3_path":
            raise DataError(f"{path}: expected a tab-separated header clip_id, <tags>..., mp3_path")
        tags = header[1:-1]
        out = []
        for line_no, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header) or any(v not in ("0", "1") for v in row[1:-1]):
                raise DataError(f"{path}, line {line_no}: expected {len(header)} columns with 0/1 tags")
            out.append({"clip_id": row[0], "mp3_path": row[-1], "tags": np.array(row[1:-1], dtype=np.int8)})
    return tags, out


def _list_split(split_dir: Path) -> dict[str, str]:
    """mp3_path -> part, from Won et al.'s ``train.npy`` / ``valid.npy`` / ``test.npy``."""
    out = {}
    for part, file_name in _LIST_FILES.items():
        path = split_dir / file_name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: split_dir must hold {', '.join(_LIST_FILES.values())}"
            )
        entries = np.load(path, allow_pickle=False)
        for entry in entries.tolist():
            clip_path = str(entry).split("\t")[-1]
            if clip_path in out:
                raise DataError(f"{split_dir}: {clip_path} is listed in {out[clip_path]} and {part}")
            out[clip_path] = part
    return out


def load_magnatagatune(
    root: str | os.PathLike[str],
    annotations: str | os.PathLike[str] | None = None,
    top_k: int = 50,
    split: Literal["folders", "lists"] = "folders",
    split_dir: str | os.PathLike[str] | None = None,
    drop_untagged: bool = False,
    sample_rate: int | None = None,
    on_error: OnError = "skip",
    min_duration: float | None = None,
    full_check: bool = False,
    progress: bool = True,
) -> tuple[DatasetDict, tuple[str, ...]]:
    """Load MagnaTagATune's ``top_k`` tags with the standard split.

    Columns: ``path``, ``name`` (the clip id), ``folder`` (``0``-``f``), ``labels`` (multi-hot float32 over the tags).

    Args:
        root: the audio folder (``0/`` ... ``f/``).
        annotations: ``annotations_final.csv``; None uses ``root/annotations_final.csv``.
        top_k: how many of the most frequent tags to keep (1-188).
        split: ``"folders"`` or ``"lists"`` (see the module docstring); ``split_dir`` holds the lists.
        drop_untagged: leave out clips with none of the kept tags.
        sample_rate, on_error, min_duration, full_check, progress: as in the other loaders.

    Returns:
        The splits and the kept tag names, most frequent first.
    """
    check_on_error(on_error)
    if split not in ("folders", "lists"):
        raise ValueError(f"split must be 'folders' or 'lists', got {split!r}")
    annotations = Path(annotations) if annotations is not None else Path(root) / ANNOTATIONS_FILE
    if not annotations.is_file():
        raise FileNotFoundError(
            f"{annotations} not found: pass annotations= (MagnaTagATune's {ANNOTATIONS_FILE})"
        )
    tag_names, clips = read_annotations(annotations)
    if not 1 <= top_k <= len(tag_names):
        raise ValueError(f"top_k must be in [1, {len(tag_names)}], got {top_k}")
    counts = np.stack([c["tags"] for c in clips]).sum(0) if clips else np.zeros(len(tag_names))
    kept = np.argsort(-counts, kind="stable")[:top_k]
    names = tuple(tag_names[i] for i in kept)
    if split == "lists":
        if split_dir is None:
            raise ValueError("split='lists' needs split_dir (the folder with train.npy, valid.npy, test.npy)")
        listed = _list_split(Path(split_dir))
    report = LoadReport("magnatagatune")
    rows = []
    for c in clips:
        folder = c["mp3_path"].split("/", 1)[0]
        part = listed.get(c["mp3_path"]) if split == "lists" else FOLDER_SPLIT.get(folder)
        labels = c["tags"][kept].astype(np.float32)
        if part is None:
            if split == "folders":
                report.drop("not in one of the folders 0-f", c["clip_id"], c["mp3_path"])
            continue  # the lists leave clips out on purpose
        if drop_untagged and not labels.any():
            continue
        rows.append(
            {
                "name": c["clip_id"],
                "path": str(Path(root) / c["mp3_path"]),
                "folder": folder,
                "part": part,
                "labels": labels,
            }
        )
    shown = [r["name"] for r in rows]
    keep = scan_audio([r["path"] for r in rows], shown, report, min_duration, full_check, progress=progress)
    report.resolve(on_error)
    rows = [r for r, k in zip(rows, keep) if k]
    index: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for i, r in enumerate(rows):
        index[r["part"]].append(i)
    empty = [p for p, idx in index.items() if not idx]
    if empty:
        raise DataError(
            f"MagnaTagATune: no usable clip in the {', '.join(empty)} split(s) ({report.summary()})"
        )
    columns = {
        "path": [r["path"] for r in rows],
        "name": [r["name"] for r in rows],
        "folder": [r["folder"] for r in rows],
        "labels": [r["labels"].tolist() for r in rows],
    }
    features = Features(
        {
            "path": Value("string"),
            "name": Value("string"),
            "folder": Value("string"),
            "labels": SequenceFeature(Value("float32"), length=len(names)),
        }
    )
    return build_splits(columns, features, index, report, sample_rate), names


# ----------------------------------------------------------------------------------------------- registration


@dataclass
class MagnaTagATuneConfig(DataConfig):
    """``data.name=magnatagatune``: the settings of :func:`load_magnatagatune`.

    Attributes:
        root: the audio folder (``0/`` ... ``f/``); required.
        annotations: ``annotations_final.csv``; None uses ``root/annotations_final.csv``.
        top_k, split, split_dir, drop_untagged, on_error, min_duration, full_check: as in
            :func:`load_magnatagatune`.
    """

    name: str = "magnatagatune"
    root: str | None = None
    annotations: str | None = None
    top_k: int = 50
    split: Literal["folders", "lists"] = "folders"
    split_dir: str | None = None
    drop_untagged: bool = False
    on_error: OnError = "skip"
    min_duration: float | None = None
    full_check: bool = False

    def __post_init__(self) -> None:
        if self.split == "lists" and self.split_dir is None:
            raise ValueError("split='lists' needs split_dir (the folder with train.npy, valid.npy, test.npy)")


@register_dataset("magnatagatune", MagnaTagATuneConfig)
def build_magnatagatune(config: MagnaTagATuneConfig, sample_rate: int) -> TaskData:
    """MagnaTagATune's top-k tags at ``sample_rate``: multi-label."""
    root = required_path(config, "root", "the MagnaTagATune audio folder (0/ ... f/)")
    splits, names = load_magnatagatune(
        root,
        annotations=config.annotations,
        top_k=config.top_k,
        split=config.split,
        split_dir=config.split_dir,
        drop_untagged=config.drop_untagged,
        sample_rate=sample_rate,
        on_error=config.on_error,
        min_duration=config.min_duration,
        full_check=config.full_check,
        progress=config.progress,
    )
    return TaskData(splits, MULTI_LABEL, names)
