"""Class-per-folder trees: splits (stratified, group-disjoint with group_pattern), header facts in the rows, and
every bad-input policy."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from backbones.config import ConfigError
from finetune.data.folder import load_audio_folder
from finetune.data.lazy import DataError
from finetune.data.registry import DATASETS, DataConfig
from heads.tasks import SINGLE_LABEL
from tests.audio_signals import noise

SR = 8000


def _wav(path: Path, n: int = 800, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, noise(1, n, seed=seed)[0].numpy(), SR, subtype="PCM_16")
    return path


def _tree(root: Path, classes: tuple[str, ...] = ("cello", "flute", "harp"), per_class: int = 10) -> Path:
    for c in classes:
        for i in range(per_class):
            _wav(root / c / f"{c}_{i}.wav", seed=i)
    return root


def _meta(ds: object) -> object:
    return ds.with_format(None)  # type: ignore[attr-defined]


def test_folder_split_stratified_with_header_facts(tmp_path: Path) -> None:
    _tree(tmp_path)
    _wav(tmp_path / "harp" / "nested" / "harp_extra.wav")  # files in sub-folders belong to the class
    (tmp_path / "cello" / "notes.txt").write_text("not audio")
    with pytest.warns(UserWarning, match=r"1 audio file\(s\) directly in .* belong to no class folder"):
        _wav(tmp_path / "loose.wav")
        ds = load_audio_folder(tmp_path, fractions=(0.6, 0.2, 0.2), seed=0)
    assert ds["train"].features["label"].names == ["cello", "flute", "harp"]
    assert sum(v.num_rows for v in ds.values()) == 31
    assert Counter(_meta(ds["test"])["label"]) == {0: 2, 1: 2, 2: 3}  # 7 = ceil(0.2 * 31), stratified
    row = ds["test"][0]
    assert set(row) == {"path", "name", "label", "duration", "frames", "file_rate"}
    assert (row["frames"], row["file_rate"], row["duration"]) == (800, SR, 0.1)


def test_folder_predefined_splits_and_duplicates(tmp_path: Path) -> None:
    _tree(tmp_path / "train", per_class=3)
    _tree(tmp_path / "valid", per_class=1)
    _tree(tmp_path / "test", per_class=2)
    ds = load_audio_folder(tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 9, "validation": 3, "test": 6}
    _wav(tmp_path / "test" / "flute" / "cello_0.wav")
    with pytest.raises(
        DataError, match=r"1 file name\(s\) appear under more than one class: test/cello_0.wav"
    ):
        load_audio_folder(tmp_path)


def test_folder_unreadable_and_short_audio(tmp_path: Path) -> None:
    _tree(tmp_path, per_class=4)
    (tmp_path / "flute" / "flute_9.wav").write_bytes(b"not a wav file at all")
    _wav(tmp_path / "harp" / "harp_9.wav", n=80)
    with pytest.warns(UserWarning) as record:
        ds = load_audio_folder(tmp_path, min_duration=0.05, fractions=(0.5, 0.25, 0.25))
    message = str(record[0].message)
    assert message.startswith("folder ")
    assert "dropped 2 entries; unreadable audio (1): flute/flute_9.wav" in message
    assert "shorter than min_duration=0.05 s (1): harp/harp_9.wav (0.010 s)" in message
    assert sum(v.num_rows for v in ds.values()) == 12
    assert "harp/harp_9.wav" in ds["train"].info.description
    with pytest.raises(DataError, match=r"dropped 2 entries.*pass on_error='skip'"):
        load_audio_folder(tmp_path, min_duration=0.05, on_error="raise")
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise', got 'ignore'"):
        load_audio_folder(tmp_path, on_error="ignore")  # type: ignore[arg-type]


def test_header_scan_and_full_check(tmp_path: Path) -> None:
    _tree(tmp_path, classes=("a", "b"), per_class=4)
    cut = tmp_path / "a" / "a_0.wav"
    cut.write_bytes(cut.read_bytes()[:-400])  # truncated: the header still promises 800 frames
    data = noise(1, 800)[0].numpy()
    data[100] = np.nan
    sf.write(tmp_path / "b" / "b_0.wav", data, SR, subtype="FLOAT")  # NaN samples: only decoding finds them
    with pytest.warns(
        UserWarning, match=r"unreadable audio \(1\): a/a_0.wav \(truncated: the header declares"
    ):
        ds = load_audio_folder(tmp_path, fractions=(0.5, 0.25, 0.25))
    assert sum(v.num_rows for v in ds.values()) == 7
    with pytest.warns(
        UserWarning, match=r"unreadable audio \(2\): a/a_0.wav \(truncated.*b/b_0.wav \(has non-finite"
    ):
        ds = load_audio_folder(tmp_path, fractions=(0.5, 0.25, 0.25), full_check=True)
    assert sum(v.num_rows for v in ds.values()) == 6


def test_group_pattern_keeps_groups_in_one_split(tmp_path: Path) -> None:
    for c in ("jazz", "rock"):
        for album in range(5):
            for track in range(3):
                _wav(tmp_path / c / f"album{album}" / f"{c}{album}_{track}.wav", seed=track)
    _wav(tmp_path / "rock" / "loose.wav")  # not in an album: no group
    with pytest.warns(
        UserWarning, match=r"no group \(group_pattern '\^\(\[\^/\]\+\)/' does not match\) \(1\): loose.wav"
    ):
        ds = load_audio_folder(tmp_path, fractions=(0.6, 0.2, 0.2), group_pattern="^([^/]+)/")
    meta = {k: v.with_format(None) for k, v in ds.items()}
    groups = {k: set(v["group"]) for k, v in meta.items()}
    assert sum(len(v) for v in meta.values()) == 30 and groups["train"] | groups["test"] <= {
        f"album{i}" for i in range(5)
    }
    assert not (groups["train"] & groups["test"] or groups["train"] & groups["validation"])
    assert not groups["validation"] & groups["test"]
    with pytest.warns(UserWarning, match=r"does not match\) \(1\): loose.wav"):
        by_name = load_audio_folder(
            tmp_path, fractions=(0.6, 0.2, 0.2), group_pattern=r"(?P<group>[a-z]+\d)_"
        )
    test_groups = set(by_name["test"].with_format(None)["group"])
    assert test_groups and test_groups <= {f"{c}{a}" for c in ("jazz", "rock") for a in range(5)}
    with pytest.raises(ConfigError, match=r"^data: group_pattern '\(' is not a regular expression"):
        DataConfig.from_dict({"name": "folder", "group_pattern": "("}, "data")


def test_empty_class_folders_are_noted_and_small_classes_explained(tmp_path: Path) -> None:
    _tree(tmp_path, classes=("a", "b"), per_class=10)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("no audio here")
    with pytest.warns(
        UserWarning, match=r"folder \w+: nothing dropped\. class folder .*/c holds no audio files"
    ):
        ds = load_audio_folder(tmp_path)
    assert ds["train"].features["label"].names == ["a", "b"]
    _wav(tmp_path / "c" / "c_0.wav")
    with pytest.raises(
        DataError,
        match=r"cannot split 21 clips of 3 classes .* each class needs at least 8 clips \(24 in all\); the smallest "
        r"class, 'c', has 1\. Add clips",
    ):
        load_audio_folder(tmp_path)


def _config(**data: object) -> DataConfig:
    return DataConfig.from_dict(data, "data")


def test_registered_folder_builder(tmp_path: Path) -> None:
    """``data.name=folder``: one class per folder, decoded at the backbone's rate."""
    _tree(tmp_path / "tree", classes=("bells", "drums", "voice"))
    data = DATASETS["folder"](_config(name="folder", root=str(tmp_path / "tree")), 16000)
    assert (data.task, data.names) == (SINGLE_LABEL, ("bells", "drums", "voice"))
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sum(sizes.values()) == 30 and min(sizes.values()) >= 3
    assert data.splits["test"][0]["file_rate"] == SR  # rows name files; the collate reads them at any rate


def test_data_progress_false_silences_the_file_check_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = str(_tree(tmp_path / "tree", per_class=8))
    DATASETS["folder"](_config(name="folder", root=tree), 16000)
    assert "audio:" in capsys.readouterr().err  # the file-check bar
    DATASETS["folder"](_config(name="folder", root=tree, progress=False), 16000)
    assert capsys.readouterr().err == ""
