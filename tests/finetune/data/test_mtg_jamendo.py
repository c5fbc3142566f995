"""MTG-Jamendo loader on split files in the official layout (CRLF TSV, variable tag columns, split-<k> folders)
and tiny MP3s (full-quality and ``.low.mp3`` names): multi-hot tags, the tag-to-genre mapping, the artist check
and bad files reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.data import CropCollate
from finetune.data.audio import load_audio
from finetune.data.lazy import DataError
from finetune.data.mtg_jamendo import GTZAN_GENRE_MAP, MTGJamendoConfig, load_mtg_jamendo, read_split_file
from finetune.data.registry import DATASETS, DataConfig
from heads.tasks import MULTI_LABEL, SINGLE_LABEL
from tests.audio_signals import noise

SR = 16000
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"
# part -> (track number, artist, tags)
TRACKS = {
    "train": [
        (241, 5, ["genre---rock"]),
        (242, 5, ["genre---rock", "genre---pop"]),  # maps to two GTZAN genres: ambiguous
        (773, 104, ["genre---electronic"]),  # no GTZAN genre
        (1729, 264, ["genre---hiphop", "instrument---piano"]),
        (1730, 264, ["genre---jazz", "mood/theme---happy"]),
    ],
    "validation": [(2211, 276, ["genre---funk", "genre---jazz"]), (2212, 276, ["genre---reggae"])],
    "test": [
        (3346, 517, ["genre---pop"]),
        (3347, 517, ["genre---rock", "mood/theme---happy"]),
        (9999, 600, ["genre---metal"]),
    ],
}


def track_path(number: int) -> str:
    return f"{number % 100:02d}/{number}.mp3"


def write_splits(folder: Path, subset: str, tracks: dict = TRACKS, index: int = 0) -> Path:
    split_dir = folder / f"split-{index}"
    split_dir.mkdir(parents=True, exist_ok=True)
    for part, rows in tracks.items():
        lines = [HEADER] + [
            "\t".join(
                [f"track_{n:07d}", f"artist_{a:06d}", f"album_{n // 10:06d}", track_path(n), "215.3", *tags]
            )
            for n, a, tags in rows
        ]
        (split_dir / f"{subset}-{part}.tsv").write_bytes(
            ("\r\n".join(lines) + "\r\n").encode()
        )  # CRLF, as published
    return folder


@pytest.fixture(scope="module")
def jamendo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("jamendo")
    audio = root / "audio"
    for k, (n, _, _) in enumerate(r for rows in TRACKS.values() for r in rows):
        path = audio / track_path(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        if n == 1730:
            path = path.with_name("1730.low.mp3")  # the low-quality archive's name
        if n == 9999:
            path.write_bytes(b"\x00" * 64)  # an unreadable file
            continue
        sf.write(path, noise(1, 4000, seed=k)[0].numpy(), SR, format="MP3")
    write_splits(root / "splits", "autotagging_genre")
    return audio, root / "splits"


def test_read_split_file_reads_crlf_rows_with_any_number_of_tags(jamendo: tuple[Path, Path]) -> None:
    rows = read_split_file(jamendo[1] / "split-0" / "autotagging_genre-train.tsv")
    assert len(rows) == 5 and rows[1] == {
        "track_id": "track_0000242",
        "artist_id": "artist_000005",
        "album_id": "album_000024",
        "path": "42/242.mp3",
        "duration": 215.3,
        "tags": ["genre---rock", "genre---pop"],
    }


def test_multi_label_tags_from_the_official_split(jamendo: tuple[Path, Path]) -> None:
    with pytest.warns(UserWarning, match=r"dropped 1 entry; unreadable audio \(1\): track_0009999"):
        splits, names = load_mtg_jamendo(jamendo[0], jamendo[1], subset="autotagging_genre", sample_rate=SR)
    assert names == (
        "genre---electronic", "genre---funk", "genre---hiphop", "genre---jazz", "genre---metal", "genre---pop",
        "genre---reggae", "genre---rock", "instrument---piano", "mood/theme---happy",
    )  # fmt: skip
    meta = splits.with_format(None)
    assert list(meta["train"]["name"]) == [f"track_{n:07d}" for n in (241, 242, 773, 1729, 1730)]
    assert list(meta["test"]["name"]) == ["track_0003346", "track_0003347"]
    hot = np.array(meta["train"]["labels"])
    assert hot.dtype == np.float64 or hot.dtype == np.float32
    np.testing.assert_array_equal(
        np.flatnonzero(hot[1]), [names.index("genre---pop"), names.index("genre---rock")]
    )
    assert meta["train"]["path"][4].endswith("30/1730.low.mp3")  # found under the low-quality name
    row = splits["train"][0]  # the MP3 decodes
    wave, rate = load_audio(row["path"], SR)  # rows name files; the reader decodes their windows
    assert rate == SR and abs(wave.shape[-1] - 4000) <= 1200
    batch = CropCollate(SR, 0.1, train=False)([splits["train"][i] for i in range(2)])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (2, 10)


def test_tag_to_genre_mapping_gives_single_label_gtzan_genres(jamendo: tuple[Path, Path]) -> None:
    with pytest.warns(UserWarning) as record:
        splits, names = load_mtg_jamendo(
            jamendo[0], jamendo[1], subset="autotagging_genre", genre_map="gtzan"
        )
    message = " ".join(str(r.message) for r in record)
    assert (
        "genre_map: 1 track(s) have no mapped genre tag and 1 map to several genres; they are left out"
        in message
    )
    assert names == (
        "blues",
        "classical",
        "country",
        "disco",
        "hiphop",
        "jazz",
        "metal",
        "pop",
        "reggae",
        "rock",
    )
    meta = splits.with_format(None)
    train = dict(zip(meta["train"]["name"], meta["train"]["label"]))
    assert train == {"track_0000241": 9, "track_0001729": 4, "track_0001730": 5}
    assert list(meta["validation"]["label"]) == [5, 8]  # funk is unmapped, jazz is; dub/reggae -> reggae
    assert GTZAN_GENRE_MAP["genre---rap"] == "hiphop" and "genre---poprock" not in GTZAN_GENRE_MAP
    custom_map = {
        "genre---electronic": "edm",
        "genre---pop": "edm",
        "genre---funk": "soul",
        "genre---reggae": "soul",
    }
    with pytest.warns(
        UserWarning, match=r"genre_map: 5 track\(s\) have no mapped genre tag and 0 map to several"
    ):
        custom, custom_names = load_mtg_jamendo(
            jamendo[0], jamendo[1], subset="autotagging_genre", genre_map=custom_map
        )
    meta = custom.with_format(None)
    assert custom_names == ("edm", "soul") and list(meta["train"]["name"]) == [
        "track_0000242",
        "track_0000773",
    ]
    assert list(meta["validation"]["label"]) == [1, 1] and list(meta["test"]["name"]) == ["track_0003346"]
    with (
        pytest.raises(DataError, match=r"no usable track in the train, test part\(s\) of .*split-0"),
        pytest.warns(UserWarning, match="genre_map: 9 track"),
    ):
        load_mtg_jamendo(
            jamendo[0], jamendo[1], subset="autotagging_genre", genre_map={"genre---funk": "soul"}
        )


def test_registered_config_and_errors(tmp_path: Path, jamendo: tuple[Path, Path]) -> None:
    config = DataConfig.from_dict(
        {
            "name": "mtg_jamendo",
            "root": str(jamendo[0]),
            "splits_dir": str(jamendo[1]),
            "subset": "autotagging_genre",
        }
    )
    assert isinstance(config, MTGJamendoConfig)
    with pytest.warns(UserWarning):
        data = DATASETS["mtg_jamendo"](config, SR)
    assert data.task is MULTI_LABEL and len(data.names) == 10
    with pytest.warns(UserWarning):
        mapped = DATASETS["mtg_jamendo"](MTGJamendoConfig(**{**config.to_dict(), "genre_map": "gtzan"}), SR)
    assert mapped.task is SINGLE_LABEL
    with pytest.raises(
        ValueError,
        match=r"subset must be one of .* got 'autotagging_genres' \(did you mean 'autotagging_genre'\?\)",
    ):
        MTGJamendoConfig(subset="autotagging_genres")
    with pytest.raises(
        ValueError, match=r"unknown genre_map 'gtzn' \(did you mean 'gtzan'\?\); built in: gtzan"
    ):
        MTGJamendoConfig(genre_map="gtzn")
    with pytest.raises(ValueError, match=r"needs data.splits_dir: data/splits of a clone of"):
        DATASETS["mtg_jamendo"](MTGJamendoConfig(root=str(jamendo[0])), SR)
    with pytest.raises(
        FileNotFoundError, match=r"autotagging_moodtheme-train.tsv not found: splits_dir must be data/splits"
    ):
        load_mtg_jamendo(jamendo[0], jamendo[1], subset="autotagging_moodtheme")
    leaky = {**TRACKS, "test": [(3346, 5, ["genre---pop"])]}  # artist 5 is also in train
    write_splits(tmp_path, "autotagging_genre", leaky)
    with pytest.raises(
        DataError, match=r"1 artist\(s\) appear in more than one split: 'artist_000005' \(train and test\)"
    ):
        load_mtg_jamendo(jamendo[0], tmp_path, subset="autotagging_genre")
    (tmp_path / "split-0" / "autotagging_genre-train.tsv").write_text("id\tpath\n1\tx.mp3\n")
    with pytest.raises(DataError, match="expected the header TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS"):
        load_mtg_jamendo(jamendo[0], tmp_path, subset="autotagging_genre")
