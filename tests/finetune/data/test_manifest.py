"""CSV/TSV/JSONL manifests: labels, ratings, groups, predefined splits, and every bad-input policy: bad rows, files
listed twice (however spelled), label typos and data sets too small to split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import soundfile as sf

from backbones.config import ConfigError
from finetune.data.lazy import DataError
from finetune.data.manifest import load_manifest
from finetune.data.registry import DATASETS, DataConfig
from heads.tasks import RATING, SINGLE_LABEL
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


def _config(**data: object) -> DataConfig:
    return DataConfig.from_dict(data, "data")


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
    assert len(row["ratings"]) == 2 and row["ratings"][1] == 0.5 and row["frames"] == 800
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


def _genre_manifest(root: Path, per_class: int = 10) -> list[dict[str, object]]:
    rows = []
    for c in ("jazz", "rock", "soul"):
        for i in range(per_class):
            _wav(root / c / f"{c}{i}.wav", seed=i)
            rows.append({"path": f"{c}/{c}{i}.wav", "label": c})
    return rows


def test_one_file_under_two_spellings_is_a_duplicate(tmp_path: Path) -> None:
    rows = _genre_manifest(tmp_path)
    rows.append({"path": "./rock/rock0.wav", "label": "rock"})
    rows.append({"path": "jazz/../jazz/jazz1.wav", "label": "jazz"})
    with pytest.raises(
        DataError,
        match=r"2 file\(s\) listed more than once in .*m\.csv: jazz/jazz1\.wav \(also as 'jazz/\.\./jazz/jazz1\.wav'\), "
        r"rock/rock0\.wav \(also as '\./rock/rock0\.wav'\)$",
    ):
        load_manifest(_write_csv(tmp_path / "m.csv", rows))


def test_a_label_typo_names_the_label_its_line_and_the_known_labels(tmp_path: Path) -> None:
    rows = _genre_manifest(tmp_path)
    rows[17]["label"] = "rokc"
    with pytest.raises(
        DataError,
        match=r"m\.csv: 1 label\(s\) occur only once, too few to split by class: 'rokc' \(line 19, rock/rock7\.wav\) "
        r"\(did you mean 'rock'\?\)\. The known labels: jazz \(10\), rock \(9\), soul \(10\)\. Fix the label, or drop the row$",
    ):
        load_manifest(_write_csv(tmp_path / "m.csv", rows))
    rows[17]["split"] = (
        "train"  # with predefined splits nothing is split by class: a one-clip label is allowed
    )
    for i, r in enumerate(rows):
        r["split"] = ["train", "validation", "test"][i % 3]
    ds = load_manifest(_write_csv(tmp_path / "s.csv", rows), split_column="split")
    assert "rokc" in ds["train"].features["label"].names


def test_too_few_clips_per_class_says_how_many_are_needed(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "m.csv", _genre_manifest(tmp_path, per_class=6))
    with pytest.raises(
        DataError,
        match=r"cannot split 18 clips of 3 classes into train/validation/test \(0\.8, 0\.1, 0\.1\) stratified by class "
        r"\(scikit-learn: The test_size = 2 should be greater or equal to the number of classes = 3\)\. With these "
        r"fractions each class needs at least 8 clips \(24 in all\); the smallest class, 'jazz', has 6",
    ):
        load_manifest(path)
    assert sum(v.num_rows for v in load_manifest(path, fractions=(0.5, 0.25, 0.25)).values()) == 18
