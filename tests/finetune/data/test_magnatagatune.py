"""MagnaTagATune loader on an ``annotations_final.csv`` in the published layout (tab-separated, quoted values,
tag names with spaces) and tiny MP3s in the 16 folders: top-k tags, the folder split and Won et al.'s lists."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from finetune.data.audio import load_audio
from finetune.data.lazy import DataError
from finetune.data.magnatagatune import (
    FOLDER_SPLIT,
    MagnaTagATuneConfig,
    load_magnatagatune,
    read_annotations,
)
from finetune.data.registry import DATASETS, DataConfig
from heads.tasks import MULTI_LABEL
from tests.audio_signals import noise

SR = 16000
TAGS = ["no voice", "singer", "guitar", "classical", "slow"]
# clip id, folder, tags present
CLIPS = [
    (2, "f", ["classical", "slow"]),
    (6, "0", ["guitar", "classical"]),
    (10, "1", ["guitar"]),
    (11, "b", ["guitar", "slow", "no voice"]),
    (12, "b", []),  # no tag at all
    (20, "c", ["classical"]),
    (21, "c", ["singer", "guitar"]),
    (30, "d", ["guitar"]),
    (31, "e", ["classical", "slow"]),
    (32, "e", ["guitar"]),  # its MP3 is empty, as a few of the archive's are
]


def clip_path(clip_id: int, folder: str) -> str:
    return f"{folder}/some_artist-some_album-01-track_{clip_id}-{clip_id * 29}-{clip_id * 29 + 29}.mp3"


@pytest.fixture(scope="module")
def mtat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mtat")
    with open(root / "annotations_final.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL)  # the published file quotes every value
        w.writerow(["clip_id", *TAGS, "mp3_path"])
        for clip_id, folder, tags in CLIPS:
            w.writerow([clip_id, *(int(t in tags) for t in TAGS), clip_path(clip_id, folder)])
    for k, (clip_id, folder, _) in enumerate(CLIPS):
        path = root / clip_path(clip_id, folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        if clip_id == 32:
            path.write_bytes(b"")
        else:
            sf.write(path, noise(1, 3200, seed=k)[0].numpy(), SR, format="MP3")
    return root


def test_read_annotations(mtat: Path) -> None:
    tags, clips = read_annotations(mtat / "annotations_final.csv")
    assert tags == TAGS and len(clips) == 10
    assert clips[3]["clip_id"] == "11" and clips[3]["mp3_path"] == clip_path(11, "b")
    np.testing.assert_array_equal(clips[3]["tags"], [1, 0, 1, 0, 1])


def test_top_k_tags_and_the_standard_folder_split(mtat: Path) -> None:
    assert sorted(FOLDER_SPLIT) == list("0123456789abcdef") and FOLDER_SPLIT["c"] == "validation"
    with pytest.warns(UserWarning, match=r"magnatagatune: dropped 1 entry; unreadable audio \(1\): 32"):
        splits, names = load_magnatagatune(mtat, top_k=3, sample_rate=SR)
    assert names == ("guitar", "classical", "slow")  # by clip count: 6, 4, 3
    meta = splits.with_format(None)
    assert {k: list(v["name"]) for k, v in meta.items()} == {
        "train": ["6", "10", "11", "12"],
        "validation": ["20", "21"],
        "test": ["2", "30", "31"],
    }
    assert [list(v) for v in meta["train"]["labels"]] == [[1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0]]
    row = splits["validation"][1]  # the MP3 decodes
    wave, rate = load_audio(row["path"], SR)  # rows name files; the reader decodes their windows
    assert rate == SR and abs(wave.shape[-1] - 3200) <= 1200
    with pytest.warns(UserWarning):
        dropped, _ = load_magnatagatune(mtat, top_k=3, drop_untagged=True)
    assert list(dropped.with_format(None)["train"]["name"]) == ["6", "10", "11"]


def test_won_et_al_index_lists_loaded_without_pickle(mtat: Path, tmp_path: Path) -> None:
    lists = {"train": [6, 10, 30], "valid": [20], "test": [2, 31]}
    folders = {c: f for c, f, _ in CLIPS}
    for part, ids in lists.items():
        entries = np.array([f"{c}\t{clip_path(c, folders[c])}" for c in ids])  # a numpy string array
        np.save(tmp_path / f"{part}.npy", entries, allow_pickle=False)
    splits, _ = load_magnatagatune(mtat, top_k=3, split="lists", split_dir=tmp_path)
    meta = splits.with_format(None)
    assert {k: list(v["name"]) for k, v in meta.items()} == {
        "train": ["6", "10", "30"],
        "validation": ["20"],
        "test": ["2", "31"],
    }
    np.save(tmp_path / "test.npy", np.array([f"6\t{clip_path(6, '0')}"]), allow_pickle=False)
    with pytest.raises(DataError, match=r"is listed in train and test"):
        load_magnatagatune(mtat, top_k=3, split="lists", split_dir=tmp_path)
    np.save(tmp_path / "test.npy", np.array([{"pickled": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Object arrays cannot be loaded when allow_pickle=False"):
        load_magnatagatune(mtat, top_k=3, split="lists", split_dir=tmp_path)


def test_registered_config_and_errors(mtat: Path, tmp_path: Path) -> None:
    config = DataConfig.from_dict({"name": "magnatagatune", "root": str(mtat), "top_k": 2})
    assert isinstance(config, MagnaTagATuneConfig)
    with pytest.warns(UserWarning):
        data = DATASETS["magnatagatune"](config, SR)
    assert data.task is MULTI_LABEL and data.names == ("guitar", "classical")
    with pytest.raises(ValueError, match=r"split='lists' needs split_dir"):
        MagnaTagATuneConfig(root=str(mtat), split="lists")
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 5\], got 6"):
        load_magnatagatune(mtat, top_k=6)
    with pytest.raises(FileNotFoundError, match=r"annotations_final.csv not found: pass annotations="):
        load_magnatagatune(tmp_path)
    (tmp_path / "bad.csv").write_text("clip_id\tguitar\tmp3_path\n1\t2\t0/a.mp3\n")
    with pytest.raises(DataError, match=r"bad.csv, line 2: expected 3 columns with 0/1 tags"):
        read_annotations(tmp_path / "bad.csv")
