"""Class-per-folder trees and CSV/JSONL manifests: splits, the lazy audio column, and every bad-input policy."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
import torch

from backbones.config import ConfigError
from finetune.data.folder import load_audio_folder, load_manifest
from finetune.data.lazy import DataError, DecodeAudio
from finetune.data.registry import DATASETS, DataConfig
from heads.tasks import RATING, SINGLE_LABEL
from tests.audio_signals import noise, sweep

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


def test_folder_split_stratified_and_decoded(tmp_path: Path) -> None:
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
    assert row["audio"].shape == (1, 800) and row["sampling_rate"] == SR
    torch.testing.assert_close(row["audio"][0], torch.from_numpy(sf.read(row["path"], dtype="float32")[0]))


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


def test_full_check_catches_damage_past_the_header(tmp_path: Path) -> None:
    _tree(tmp_path, classes=("a", "b"), per_class=4)
    broken = tmp_path / "a" / "a_0.wav"
    broken.write_bytes(broken.read_bytes()[:-400])  # truncated: the header still promises 800 frames
    ds = load_audio_folder(tmp_path, fractions=(0.5, 0.25, 0.25))  # the header check passes it
    assert sum(v.num_rows for v in ds.values()) == 8
    with pytest.warns(UserWarning, match=r"unreadable audio \(1\): a/a_0.wav \(truncated"):
        ds = load_audio_folder(tmp_path, fractions=(0.5, 0.25, 0.25), full_check=True)
    assert sum(v.num_rows for v in ds.values()) == 7


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _manifest_rows(root: Path, n: int = 24) -> list[dict[str, object]]:
    rows = []
    for i in range(n):
        _wav(root / "clips" / f"c{i}.wav", seed=i)
        rows.append(
            {"path": f"clips/c{i}.wav", "label": "ab"[i % 2], "r1": i / n, "r2": 0.5, "artist": f"a{i // 2}"}
        )
    return rows


def test_manifest_labels_ratings_groups(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path)
    path = _write_csv(tmp_path / "m.csv", rows)
    ds = load_manifest(path, rating_columns=["r1", "r2"], group_column="artist", rating_range=(0, 1), seed=1)
    meta = _meta(ds)
    assert sum(v.num_rows for v in ds.values()) == 24
    artists = {k: set(v["group"]) for k, v in meta.items()}
    assert not (artists["train"] & artists["test"]) | (artists["train"] & artists["validation"])
    row = ds["train"][0]
    assert len(row["ratings"]) == 2 and row["ratings"][1] == 0.5 and row["audio"].shape == (1, 800)
    assert ds["train"].features["label"].names == ["a", "b"]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    again = load_manifest(
        jsonl, rating_columns=["r1", "r2"], group_column="artist", rating_range=(0, 1), seed=1
    )
    assert list(_meta(again)["test"]["name"]) == list(meta["test"]["name"])


def test_manifest_bad_rows(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path, n=12)
    rows[0]["label"] = ""
    rows[1]["r1"] = 1.7
    rows[2]["r2"] = "n/a"
    rows[3]["path"] = "clips/absent.wav"
    path = _write_csv(tmp_path / "m.csv", rows)
    with pytest.warns(UserWarning) as record:
        ds = load_manifest(
            path, rating_columns=["r1", "r2"], rating_range=(0, 1), fractions=(0.5, 0.25, 0.25)
        )
    message = str(record[0].message)
    assert "dropped 4 entries" in message
    assert "missing 'label' (1): clips/c0.wav" in message
    assert "rating outside [0, 1] (1): clips/c1.wav (r1=1.7)" in message
    assert "missing or non-numeric rating (1): clips/c2.wav (r2)" in message
    assert "missing audio file (1): clips/absent.wav" in message
    assert sum(v.num_rows for v in ds.values()) == 8
    with pytest.raises(DataError, match="dropped 4 entries"):
        load_manifest(path, rating_columns=["r1", "r2"], rating_range=(0, 1), on_error="raise")


def test_manifest_duplicates_columns_and_predefined_split(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path, n=6)
    with pytest.raises(DataError, match=r"1 file\(s\) listed more than once .*: clips/c0.wav"):
        load_manifest(_write_csv(tmp_path / "d.csv", rows + rows[:1]))
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['genre'\]"):
        load_manifest(_write_csv(tmp_path / "m.csv", rows), label_column="genre")
    with pytest.raises(ValueError, match="give label_column and/or rating_columns"):
        load_manifest(tmp_path / "m.csv", label_column=None)
    for i, r in enumerate(rows):
        r["fold"] = ["train", "train", "train", "valid", "test", "TEST"][i]
        r["artist"] = f"p{i}"
    ds = load_manifest(_write_csv(tmp_path / "s.csv", rows), split_column="fold", audio_root=tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 3, "validation": 1, "test": 2}
    rows[0]["artist"] = rows[5]["artist"]
    with pytest.raises(
        ValueError, match=r"1 artist\(s\) appear in more than one split: 'p5' \(train and test\)"
    ):
        load_manifest(_write_csv(tmp_path / "g.csv", rows), split_column="fold", group_column="artist")


def test_decode_audio_transform_resamples_and_passes_metadata(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    sf.write(path, sweep(1600, SR).numpy(), SR)
    batch = DecodeAudio(sample_rate=16000)({"path": [str(path)], "label": [3]})
    assert (
        batch["label"] == [3] and batch["sampling_rate"] == [16000] and batch["audio"][0].shape == (1, 3200)
    )
    assert DecodeAudio()({"label": [1, 2]}) == {"label": [1, 2]}


def _config(**data: object) -> DataConfig:
    return DataConfig.from_dict(data, "data")


def test_registered_folder_builder(tmp_path: Path) -> None:
    """``data.name=folder``: one class per folder, decoded at the backbone's rate."""
    _tree(tmp_path / "tree", classes=("bells", "drums", "voice"))
    data = DATASETS["folder"](_config(name="folder", root=str(tmp_path / "tree")), 16000)
    assert (data.task, data.names) == (SINGLE_LABEL, ("bells", "drums", "voice"))
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sum(sizes.values()) == 30 and min(sizes.values()) >= 3
    assert data.splits["test"][0]["sampling_rate"] == 16000


def test_registered_manifest_builder_learns_labels_or_ratings(tmp_path: Path) -> None:
    """``data.name=manifest``: labels by default, ratings with label_column=null; never both."""
    _tree(tmp_path / "tree", classes=("bells", "drums"))
    rows = [f"tree/{c}/{c}_{i}.wav,{c},{i / 10},{1 - i / 10}" for c in ("bells", "drums") for i in range(10)]
    (tmp_path / "m.csv").write_text("path,label,bright,warm\n" + "\n".join(rows) + "\n")
    manifest = str(tmp_path / "m.csv")
    ratings = _config(name="manifest", labels=manifest, label_column=None, rating_columns=["bright", "warm"])
    data = DATASETS["manifest"](ratings, SR)
    assert (data.task, data.names) == (RATING, ("bright", "warm"))
    row = data.splits["train"][0]
    assert abs(float(row["ratings"][0]) + float(row["ratings"][1]) - 1.0) < 1e-6
    labels = DATASETS["manifest"](_config(name="manifest", labels=manifest), SR)
    assert (labels.task, labels.names) == (SINGLE_LABEL, ("bells", "drums"))
    with pytest.raises(
        ConfigError,
        match=r"^data: a recipe learns labels or ratings, not both: set label_column=null to learn "
        r"rating_columns \['warm'\], or leave rating_columns out to learn 'label'$",
    ):
        _config(name="manifest", labels=manifest, rating_columns=["warm"])
    with pytest.raises(ConfigError, match="^data: give label_column or rating_columns"):
        _config(name="manifest", labels=manifest, label_column=None)
    with pytest.raises(ValueError, match=r"needs data\.labels: the CSV/TSV/JSONL manifest"):
        DATASETS["manifest"](_config(name="manifest"), SR)
