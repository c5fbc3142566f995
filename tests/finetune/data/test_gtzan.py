"""GTZAN loader on a fake GTZAN tree (every track a tiny clip, jazz.00054.wav corrupt) and the real split lists."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
import torch

from backbones.config import ConfigError
from finetune.data.collate import CropCollate
from finetune.data.gtzan import (
    GTZAN_GENRES,
    GTZANConfig,
    fault_filtered_lists,
    find_genre_dir,
    load_gtzan,
    read_split_list,
)
from finetune.data.lazy import DataError
from finetune.data.registry import DATASETS, DataConfig
from finetune.data.resample import resample
from heads.tasks import SINGLE_LABEL
from tests.audio_signals import noise

SR = 8000
N = 400  # 0.05 s per clip


def _make_tree(genres_dir: Path, tracks: range = range(100)) -> None:
    """One tiny clip per genre, hard-linked to every track name (fast: 1000 files in ~50 ms)."""
    for k, genre in enumerate(GTZAN_GENRES):
        (genres_dir / genre).mkdir(parents=True)
        source = genres_dir / genre / "source.bin"
        sf.write(source, noise(1, N, seed=k)[0].numpy(), SR, format="WAV", subtype="PCM_16")
        for i in tracks:
            os.link(source, genres_dir / genre / f"{genre}.{i:05d}.wav")
        source.unlink()


@pytest.fixture(scope="module")
def gtzan_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gtzan")
    _make_tree(root / "genres")
    bad = root / "genres" / "jazz" / "jazz.00054.wav"
    bad.unlink()
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(64))  # like the real one: no readable data chunk
    return root


@pytest.fixture(scope="module")
def splits_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "gtzan"


def _names(ds: object) -> list[str]:
    return list(ds.with_format(None)["name"])  # type: ignore[attr-defined]


def test_real_split_lists(splits_dir: Path) -> None:
    lists = fault_filtered_lists(splits_dir)
    assert {k: len(v) for k, v in lists.items()} == {"train": 443, "validation": 197, "test": 290}
    all_names = lists["train"] + lists["validation"] + lists["test"]
    assert len(set(all_names)) == 930
    assert {n.split(".")[0] for n in all_names} == set(GTZAN_GENRES)
    assert Counter(n.split(".")[0] for n in lists["test"])["rock"] == 32
    assert "jazz.00054" in lists["train"]


def test_fault_filtered_skips_corrupt_clip_with_warning(gtzan_root: Path, splits_dir: Path) -> None:
    with pytest.warns(UserWarning, match=r"dropped 1 entry; unreadable audio \(1\): jazz/jazz\.00054\.wav"):
        ds = load_gtzan(gtzan_root, splits_dir=splits_dir)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 442, "validation": 197, "test": 290}
    assert "jazz.00054" not in _names(ds["train"])
    assert ds["train"].features["label"].names == list(GTZAN_GENRES)
    assert "jazz/jazz.00054.wav" in ds["test"].info.description
    row = ds["validation"][0]
    assert row["name"] == "blues.00000" and row["label"] == 0
    assert (row["frames"], row["file_rate"], row["duration"]) == (N, SR, N / SR)


def test_rows_are_metadata_and_windows_are_read_at_any_rate(gtzan_root: Path, splits_dir: Path) -> None:
    with pytest.warns(UserWarning, match="jazz.00054"):
        ds = load_gtzan(gtzan_root / "genres", splits_dir=splits_dir)
    assert set(ds["test"][0]) == {"path", "name", "label", "duration", "frames", "file_rate"}
    batch = CropCollate(16000, 0.05, train=False)(ds["test"].select(range(3)))
    expected = resample(torch.from_numpy(sf.read(ds["test"][0]["path"], dtype="float32")[0]), SR, 16000)
    assert batch["waveform"].shape == (3, 800)
    torch.testing.assert_close(batch["waveform"][0], expected, atol=2e-6, rtol=0)


def test_a_partial_copy_is_summarised_and_too_small_to_split_says_so(
    tmp_path: Path, splits_dir: Path
) -> None:
    _make_tree(tmp_path / "genres", tracks=range(3))
    with pytest.warns(UserWarning) as record:
        ds = load_gtzan(tmp_path, splits_dir=splits_dir)
    message = str(record[0].message)
    missing = 930 - sum(v.num_rows for v in ds.values())  # the lists name 930 tracks; 3 per genre are here
    assert missing >= 900 and message.startswith(
        f"gtzan: dropped {missing} entries; missing audio file ({missing}): blues/blues."
    )
    assert f", ... (+{missing - 10} more). Every entry is listed in " in message and len(message) < 3000
    full = Path(message.rsplit("Every entry is listed in ", 1)[1])
    assert len(full.read_text().split("wav (")) == missing + 1  # every one of them
    with pytest.raises(
        DataError,
        match=r"^GTZAN in .*genres has 30 of its 1000 clips: cannot split 30 clips of 10 classes .* each class needs at "
        r"least 10 clips \(100 in all\); the smallest class, 'blues', has 3",
    ):
        load_gtzan(tmp_path, split="random")
    with pytest.raises(
        DataError, match=r"^GTZAN in .* has 30 of its 1000 clips: cannot make 10 folds of 30 clips"
    ):
        load_gtzan(tmp_path, split="kfold")


def test_on_error_raise_names_the_file(gtzan_root: Path, splits_dir: Path) -> None:
    with pytest.raises(DataError, match=r"unreadable audio \(1\): jazz/jazz\.00054\.wav.*on_error='skip'"):
        load_gtzan(gtzan_root, splits_dir=splits_dir, on_error="raise")


def test_random_split_is_stratified_and_seeded(gtzan_root: Path) -> None:
    with pytest.warns(UserWarning, match="jazz.00054"):
        a = load_gtzan(gtzan_root, split="random", seed=1)
        b = load_gtzan(gtzan_root, split="random", seed=1)
        c = load_gtzan(gtzan_root, split="random", seed=2)
    assert sum(v.num_rows for v in a.values()) == 999
    assert a["train"].num_rows in (799, 800) and a["test"].num_rows in (99, 100)
    per_genre = Counter(n.split(".")[0] for n in _names(a["test"]))
    assert set(per_genre) == set(GTZAN_GENRES) and all(v in (9, 10) for v in per_genre.values())
    assert _names(a["test"]) == _names(b["test"]) and _names(a["test"]) != _names(c["test"])
    assert not set(_names(a["train"])) & set(_names(a["test"]))


def test_kfold_is_disjoint_and_covering(gtzan_root: Path) -> None:
    seen = []
    with pytest.warns(UserWarning, match="jazz.00054"):
        for f in range(3):
            ds = load_gtzan(gtzan_root, split="kfold", n_folds=3, fold_index=f)
            assert set(ds) == {"train", "test"}
            assert not set(_names(ds["train"])) & set(_names(ds["test"]))
            assert ds["train"].num_rows + ds["test"].num_rows == 999
            seen += _names(ds["test"])
    assert len(seen) == 999 and len(set(seen)) == 999


def test_layouts(tmp_path: Path, gtzan_root: Path) -> None:
    assert find_genre_dir(gtzan_root) == gtzan_root / "genres"
    assert find_genre_dir(gtzan_root / "genres") == gtzan_root / "genres"
    kaggle = tmp_path / "Data"
    kaggle.mkdir()
    (kaggle / "genres_original").symlink_to(gtzan_root / "genres")
    assert find_genre_dir(tmp_path) == tmp_path / "Data" / "genres_original"
    with pytest.raises(FileNotFoundError, match="no GTZAN genre folders"):
        find_genre_dir(tmp_path / "Data" / "genres_original" / "blues")


def test_missing_files_and_bad_lists(tmp_path: Path) -> None:
    _make_tree(tmp_path / "genres", tracks=range(2))  # only tracks 00000 and 00001 exist
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_filtered.txt").write_text("blues/blues.00000.wav\nblues/blues.00007.wav\n")
    (lists / "valid_filtered.txt").write_text("rock/rock.00001.wav\n")
    (lists / "test_filtered.txt").write_text("pop/pop.00000.wav\n")
    with pytest.warns(UserWarning, match=r"missing audio file \(1\): blues/blues\.00007\.wav"):
        ds = load_gtzan(tmp_path, splits_dir=lists)
    assert [ds[k].num_rows for k in ("train", "validation", "test")] == [1, 1, 1]
    with pytest.warns(UserWarning, match=r"shorter than min_duration=0.1 s \(3\)"):
        short = load_gtzan(tmp_path, splits_dir=lists, min_duration=0.1, on_error="skip")
    assert short["train"].num_rows == 0
    (lists / "test_filtered.txt").write_text("pop/pop.00000.wav\nblues/blues.00000.wav\n")
    with pytest.raises(DataError, match=r"1 track\(s\) are in more than one split list: blues.00000"):
        fault_filtered_lists(lists)
    (lists / "test_filtered.txt").write_text("pop/pop.00000.wav\npop/pop.00000.wav\n")
    with pytest.raises(DataError, match="line 2: track pop.00000 is listed twice"):
        read_split_list(lists / "test_filtered.txt")
    (lists / "test_filtered.txt").write_text("pop/rock.00000.wav\n")
    with pytest.raises(DataError, match="line 1: 'pop/rock.00000.wav' is not a GTZAN track path"):
        read_split_list(lists / "test_filtered.txt")
    with pytest.raises(ValueError, match="split must be one of"):
        load_gtzan(tmp_path, split="artist")


def test_split_lists_download_cache_and_offline_error(
    tmp_path: Path, splits_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSICFT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="could not download .*pass their folder as splits_dir"):
        fault_filtered_lists(None)  # sockets are blocked in tests: this is the offline path
    cached = tmp_path / "cache" / "gtzan_splits"
    shutil.copytree(splits_dir, cached)
    assert {k: len(v) for k, v in fault_filtered_lists(None).items()} == {
        "train": 443,
        "validation": 197,
        "test": 290,
    }
    (cached / "test_filtered.txt").write_text("blues/blues.00000.wav\n")  # a damaged cache is fetched again
    with pytest.raises(DataError, match="test_filtered.txt"):
        fault_filtered_lists(None)


def _config(**data: object) -> GTZANConfig:
    cfg = DataConfig.from_dict({"name": "gtzan", **data}, "data")
    assert isinstance(cfg, GTZANConfig)
    return cfg


def test_registered_builder(tmp_path: Path) -> None:
    """``data.name=gtzan``: the fault-filtered split decoded at the backbone's rate, seeded k-folds."""
    root, lists = tmp_path / "gtzan", tmp_path / "lists"
    _make_tree(root / "genres", tracks=range(4))
    lists.mkdir()
    files = {"train_filtered.txt": (0, 1), "valid_filtered.txt": (2,), "test_filtered.txt": (3,)}
    for name, idx in files.items():
        (lists / name).write_text("".join(f"{g}/{g}.{i:05d}.wav\n" for g in GTZAN_GENRES for i in idx))
    data = DATASETS["gtzan"](_config(root=str(root), splits_dir=str(lists)), 16000)
    assert (data.task, data.names) == (SINGLE_LABEL, tuple(GTZAN_GENRES))
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 20, "validation": 10, "test": 10}
    assert data.splits["test"][0]["file_rate"] == SR
    assert _names(data.splits["test"]) == [f"{g}.00003" for g in GTZAN_GENRES]

    with pytest.raises(ValueError, match=r"gave the splits \['test', 'train'\].*missing: validation"):
        DATASETS["gtzan"](_config(root=str(root), split="kfold", n_folds=4), 16000)
    with pytest.raises(ValueError, match=r"needs data\.root: the GTZAN folder .*pass data\.root=/path/to"):
        DATASETS["gtzan"](_config(), 16000)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) data\.n_fold \(did you mean 'n_folds'\?\)"):
        _config(root=str(root), n_fold=5)
