"""What every loader shares: rows that carry header facts and no audio (metadata never decodes), the load-time
scan, and load reports that stay short however many entries are dropped."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import soundfile as sf
from datasets import ClassLabel, Features, Value

import finetune.data.audio as audio
import finetune.data.lazy as lazy
from finetune.data.lazy import DataError, DecodeAudio, LoadReport, build_splits, scan_audio
from tests.audio_signals import noise, sweep

SR = 8000


def _wav(path: Path, n: int = 800, rate: int = SR) -> Path:
    sf.write(path, noise(1, n)[0].numpy(), rate, subtype="PCM_16")
    return path


def _data_set(tmp_path: Path, n: int = 6) -> tuple[list[str], object]:
    paths = [str(_wav(tmp_path / f"c{i}.wav", n=800 + 100 * i)) for i in range(n)]
    report = LoadReport("toy")
    assert scan_audio(paths, [Path(p).name for p in paths], report) == [True] * n
    features = Features(
        {"path": Value("string"), "player": Value("int32"), "label": ClassLabel(names=["a", "b"])}
    )
    columns = {"path": paths, "player": list(range(n)), "label": [i % 2 for i in range(n)]}
    return paths, build_splits(columns, features, {"train": [0, 1, 2, 3], "test": [4, 5]}, report)


def test_rows_carry_header_facts_and_no_audio(tmp_path: Path) -> None:
    paths, ds = _data_set(tmp_path)
    row = ds["test"][1]
    assert row == {
        "path": paths[5],
        "player": 5,
        "label": 1,
        "duration": 0.1625,
        "frames": 1300,
        "file_rate": SR,
    }
    assert ds["train"].info.description == "toy: nothing dropped"


def test_reading_metadata_never_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, ds = _data_set(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("audio was decoded")

    for name in ("load_audio", "load_audio_span", "_decode"):
        monkeypatch.setattr(audio, name, refuse)
    monkeypatch.setattr(lazy, "load_audio", refuse)
    monkeypatch.setattr(sf, "SoundFile", refuse)
    monkeypatch.setattr(sf, "read", refuse)
    assert list(ds["train"]["player"]) == [0, 1, 2, 3]
    assert [r["label"] for r in ds["test"]] == [0, 1] and ds["train"][:2]["frames"] == [800, 900]


def test_decode_audio_transform_is_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    sf.write(path, sweep(1600, SR).numpy(), SR)
    batch = DecodeAudio(sample_rate=16000)({"path": [str(path)], "label": [3]})
    assert (
        batch["label"] == [3] and batch["sampling_rate"] == [16000] and batch["audio"][0].shape == (1, 3200)
    )
    assert DecodeAudio()({"label": [1, 2]}) == {"label": [1, 2]}
    _, ds = _data_set(tmp_path)
    assert ds["test"].with_transform(DecodeAudio(SR))[0]["audio"].shape == (1, 1200)


def test_scan_finds_missing_empty_and_truncated_files_from_headers(tmp_path: Path) -> None:
    good = _wav(tmp_path / "good.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cut = _wav(tmp_path / "cut.wav")
    cut.write_bytes(cut.read_bytes()[:1000])
    report = LoadReport("toy")
    paths = [good, empty, cut, tmp_path / "gone.wav"]
    assert scan_audio(paths, ["good", "empty", "cut", "gone"], report) == [True, False, False, False]
    assert report.dropped == {
        "unreadable audio": [
            "empty (the file is empty (0 bytes))",
            "cut (truncated: the header declares 800 frames but only 478 are present)",
        ],
        "missing audio file": [f"gone ({tmp_path / 'gone.wav'})"],
    }
    assert set(report.headers) == {str(good)} and report.headers[str(good)].frames == 800


def test_long_drop_lists_are_summarised_and_written_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSICFT_CACHE", str(tmp_path / "cache"))
    report = LoadReport("gtzan")
    names = [f"blues/blues.{i:05d}.wav" for i in range(900)]
    for name in names:
        report.drop("missing audio file", name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report.resolve("skip")
    message = str(caught[0].message)
    full = tmp_path / "cache" / "load_reports" / "gtzan.txt"
    assert message == (
        "gtzan: dropped 900 entries; missing audio file (900): "
        + ", ".join(names[:10])
        + f", ... (+890 more). Every entry is listed in {full}"
    )
    assert full.read_text().splitlines() == [
        "gtzan: dropped 900 entries",
        "missing audio file (900): " + ", ".join(names),
    ]
    with pytest.raises(
        DataError, match=r"\(\+890 more\)\. Every entry is listed in .*gtzan\.txt \(pass on_error"
    ):
        report.resolve("raise")
