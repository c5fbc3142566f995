"""FMA loader on a small fake ``tracks.csv`` with the real two-level header, and tiny MP3 files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import soundfile as sf

from finetune.data.fma import FMAConfig, audio_path, load_fma, read_tracks
from finetune.data.lazy import DataError
from finetune.data.registry import DATASETS, DataConfig
from heads.tasks import SINGLE_LABEL
from tests.audio_signals import noise

SR = 8000
HEADER = [
    ["", "album", "album", "artist", "artist", "artist", "set", "set", "track", "track"],
    ["", "id", "title", "bio", "id", "name", "split", "subset", "genre_top", "title"],
    ["track_id", "", "", "", "", "", "", "", "", ""],
]
# track id, artist id, split, subset, genre_top
TRACKS = [
    (2, 1, "training", "small", "Hip-Hop"),
    (3, 1, "training", "small", "Hip-Hop"),
    (5, 2, "training", "small", "Rock"),
    (10, 3, "validation", "small", "Pop"),
    (20, 4, "test", "small", "Rock"),
    (134, 5, "test", "small", "Pop"),
    (1001, 6, "training", "medium", "Jazz"),
    (1002, 7, "training", "medium", ""),  # no genre_top: a bad entry
    (1003, 8, "holdout", "medium", "Jazz"),  # unknown split value: a bad entry
    (1004, "", "test", "medium", "Jazz"),  # no artist id: a bad entry
    (99999, 9, "training", "large", ""),  # large only: never loaded
]


def _write_tracks(path: Path, tracks: list[tuple] = TRACKS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerows(HEADER)
        for tid, artist, split, subset, genre in tracks:
            bio = f'<p>Artist {artist},\nsecond line, with a "quote"</p>'  # a quoted field over two lines
            w.writerow(
                [
                    tid,
                    tid // 10,
                    f"Album {tid}",
                    bio,
                    artist,
                    f"Name {artist}",
                    split,
                    subset,
                    genre,
                    f"t{tid}",
                ]
            )
    return path


@pytest.fixture(scope="module")
def fma(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fma")
    (root / "fma_metadata").mkdir()
    _write_tracks(root / "fma_metadata" / "tracks.csv")
    audio = root / "fma_medium"
    for k, (tid, *_rest) in enumerate(TRACKS):
        path = audio_path(audio, tid)
        path.parent.mkdir(parents=True, exist_ok=True)
        if tid == 134:
            path.write_bytes(b"\x00" * 100)  # an unreadable clip, as a few of FMA's are
        elif tid != 5:  # track 5's file is missing
            sf.write(path, noise(1, 1600, seed=k)[0].numpy(), SR, format="MP3")
    return root / "fma_metadata", audio


def test_read_tracks_parses_two_level_header(fma: tuple[Path, Path]) -> None:
    rows = read_tracks(fma[0] / "tracks.csv")
    assert len(rows) == len(TRACKS)
    assert rows[0] == {
        "track_id": 2,
        "genre": "Hip-Hop",
        "split": "training",
        "subset": "small",
        "artist": "1",
    }
    assert audio_path("/fma", 134) == Path("/fma/000/000134.mp3")
    assert audio_path("/fma", 155066) == Path("/fma/155/155066.mp3")


def test_small_subset_official_split(fma: tuple[Path, Path]) -> None:
    with pytest.warns(UserWarning) as record:
        ds = load_fma(fma[0], fma[1], subset="small")
    message = str(record[0].message)
    assert message.startswith("fma_small: dropped 2 entries;")
    assert "missing audio file (1): 000005" in message and "unreadable audio (1): 000134" in message
    meta = ds.with_format(None)
    assert {k: list(v["track_id"]) for k, v in meta.items()} == {
        "train": [2, 3],
        "validation": [10],
        "test": [20],
    }
    assert ds["train"].features["label"].names == ["Hip-Hop", "Pop", "Rock"]
    assert list(meta["test"]["label"]) == [2] and list(meta["train"]["artist_id"]) == [1, 1]
    row = ds["validation"][0]
    assert row["name"] == "000010" and abs(row["duration"] - 0.2) <= 0.075  # MP3 adds encoder padding


def test_medium_includes_small_and_reports_bad_rows(fma: tuple[Path, Path]) -> None:
    with pytest.warns(UserWarning) as record:
        ds = load_fma(fma[0] / "tracks.csv", fma[1], subset="medium")
    message = str(record[0].message)
    assert "missing genre_top label (1): 001002" in message
    assert "unknown set.split value (1): 001003 ('holdout')" in message
    assert "artist.id not an integer (1): 001004 ('')" in message
    meta = ds.with_format(None)
    assert list(meta["train"]["track_id"]) == [2, 3, 1001]
    assert ds["train"].features["label"].names == ["Hip-Hop", "Jazz", "Pop", "Rock"]
    assert 99999 not in set(meta["train"]["track_id"])
    with pytest.raises(DataError, match=r"fma_medium: dropped 5 entries.*on_error='skip'"):
        load_fma(fma[0], fma[1], subset="medium", on_error="raise")


def test_bad_metadata(tmp_path: Path, fma: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="subset must be 'small' or 'medium'"):
        load_fma(fma[0], fma[1], subset="full")
    with pytest.raises(FileNotFoundError, match="tracks.csv not found"):
        load_fma(tmp_path, fma[1])
    _write_tracks(tmp_path / "dupe.csv", TRACKS[:2] + TRACKS[:1])
    with pytest.raises(DataError, match="track 2 appears twice"):
        read_tracks(tmp_path / "dupe.csv")
    (tmp_path / "cols.csv").write_text(",track\n,title\ntrack_id,\n2,x\n")
    with pytest.raises(
        DataError, match=r"lacks the column\(s\) track.genre_top, set.split, set.subset, artist.id"
    ):
        read_tracks(tmp_path / "cols.csv")


def test_registered_builder(fma: tuple[Path, Path]) -> None:
    """``data.name=fma``: root holds fma_metadata/ and fma_<subset>/ as the archives unpack."""
    root = fma[0].parent
    cfg = DataConfig.from_dict({"name": "fma", "root": str(root), "subset": "medium"}, "data")
    assert isinstance(cfg, FMAConfig)
    with pytest.warns(UserWarning, match="fma_medium: dropped 5 entries"):
        data = DATASETS["fma"](cfg, 16000)
    assert (data.task, data.names) == (SINGLE_LABEL, ("Hip-Hop", "Jazz", "Pop", "Rock"))
    meta = {k: list(v.with_format(None)["track_id"]) for k, v in data.splits.items()}
    assert meta == {"train": [2, 3, 1001], "validation": [10], "test": [20]}
    assert data.splits["validation"][0]["file_rate"] > 0
    elsewhere = FMAConfig(subset="medium", metadata_dir=str(fma[0] / "tracks.csv"), audio_dir=str(fma[1]))
    with pytest.warns(UserWarning, match="fma_medium: dropped 5 entries"):
        assert DATASETS["fma"](elsewhere, 16000).names == data.names  # no root needed
    with pytest.raises(
        ValueError, match=r"needs data\.root: the folder holding fma_metadata/ and fma_small/"
    ):
        DATASETS["fma"](FMAConfig(), 16000)
    # subset small reads root/fma_small/, which this tree does not have
    with pytest.warns(
        UserWarning, match=r"missing audio file \(6\): 000002 \(\S+/fma_small/000/000002\.mp3\)"
    ):
        DATASETS["fma"](FMAConfig(root=str(root)), 16000)
