"""CropCollate: exact windows (ramps make every sample's origin visible), masks, multi-crop maps,
resampling, multi-hot targets, the per-clip time-stretch before cropping; file rows read window by window (equal
to the in-memory path); rows that fail when read are skipped, counted and logged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import finetune.data.tracks as tracks
from finetune.data.audio import AudioLoadError, load_audio
from finetune.data.augment import ClipStretch, TimeStretchConfig
from finetune.data.collate import CropCollate
from finetune.data.decoded import DecodedCache
from finetune.data.lazy import DataError
from finetune.data.resample import resample
from finetune.data.synthetic import synthetic_genres
from tests.audio_signals import music

SR = 100  # 1 s window = 100 samples


def ramp(n: int) -> np.ndarray:
    """1, 2, ..., n: a window's first value tells where it starts."""
    return np.arange(1, n + 1, dtype=np.float32)


def row(n: int, label: int = 0, name: str | None = None, rate: int = SR, **extra: object) -> dict:
    r = {"audio": ramp(n), "sample_rate": rate, "label": label, **extra}
    if name is not None:
        r["id"] = name
    return r


def test_eval_single_crop_is_the_centre() -> None:
    batch = CropCollate(SR, 1.0, train=False)([row(300, 4, "a")])
    assert batch["waveform"].shape == (1, 100)
    torch.testing.assert_close(batch["waveform"][0], torch.arange(101, 201, dtype=torch.float32))
    assert batch["mask"].all() and batch["crop_start"].tolist() == [100]
    assert batch["labels"].tolist() == [4] and batch["ids"] == ["a"] and batch["num_short"] == 0


def test_eval_multi_crop_is_evenly_spaced_and_maps_crops_to_clips() -> None:
    batch = CropCollate(SR, 1.0, train=False, crops_per_clip=3)([row(300, 1, "a"), row(150, 2, "b")])
    assert batch["crop_start"].tolist() == [0, 100, 200, 0, 25, 50]
    assert batch["clip_index"].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch["labels"].tolist() == [1, 1, 1, 2, 2, 2]
    firsts = batch["waveform"][:, 0].tolist()
    assert firsts == [1.0, 101.0, 201.0, 1.0, 26.0, 51.0]
    assert batch["waveform"][2, -1].item() == 300.0  # the last crop ends at the clip's end


def test_short_clip_is_right_aligned_and_masked_or_raises() -> None:
    rows = [row(300, 0, "long"), row(60, 1, "short")]
    batch = CropCollate(SR, 1.0, train=False, crops_per_clip=2)(rows)
    assert batch["clip_index"].tolist() == [0, 0, 1]  # a short clip gives one crop
    assert batch["num_short"] == 1 and batch["crop_start"].tolist()[-1] == -40
    wave, mask = batch["waveform"][2], batch["mask"][2]
    assert not mask[:40].any() and mask[40:].all()
    assert (wave[:40] == 0).all()
    torch.testing.assert_close(wave[40:], torch.from_numpy(ramp(60)))
    with pytest.raises(
        ValueError, match=r"clip 'short' has 60 samples \(0.600 s\) at 100 Hz, under the 100-sample window"
    ):
        CropCollate(SR, 1.0, train=False, short="raise")(rows)


def test_train_crops_are_contiguous_in_range_and_seeded() -> None:
    collate = CropCollate(SR, 1.0, train=True, crops_per_clip=4, seed=11)
    rows = [row(1000, 3), row(250, 5)]
    batch = collate(rows)
    assert batch["waveform"].shape == (8, 100) and batch["mask"].all()
    assert batch["clip_index"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert batch["labels"].tolist() == [3] * 4 + [5] * 4
    for wave, start, clip in zip(batch["waveform"], batch["crop_start"], batch["clip_index"]):
        length = 1000 if clip == 0 else 250
        assert 0 <= start <= length - 100
        torch.testing.assert_close(wave, torch.arange(start + 1, start + 101, dtype=torch.float32))
    again = CropCollate(SR, 1.0, train=True, crops_per_clip=4, seed=11)(rows)
    assert again["crop_start"].tolist() == batch["crop_start"].tolist()
    other = CropCollate(SR, 1.0, train=True, crops_per_clip=4, seed=12)(rows)
    assert other["crop_start"].tolist() != batch["crop_start"].tolist()
    # the generator continues: the next batch gets new windows
    assert collate(rows)["crop_start"].tolist() != batch["crop_start"].tolist()


def test_min_context_gives_right_aligned_start_of_stream_windows() -> None:
    collate = CropCollate(SR, 1.0, train=True, crops_per_clip=64, min_context_seconds=0.2, seed=0)
    batch = collate([row(150)])
    starts = batch["crop_start"]
    assert starts.min() >= -80 and starts.max() <= 50 and (starts < 0).any() and (starts >= 0).any()
    for wave, mask, start in zip(batch["waveform"], batch["mask"], starts.tolist()):
        pad = max(0, -start)
        assert mask.sum() == 100 - pad and not mask[:pad].any()
        assert wave[pad].item() == max(start, 0) + 1 and wave[-1].item() == start + 100


def test_resamples_rows_at_other_rates() -> None:
    t = np.arange(48000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    batch = CropCollate(8000, 2.0, train=False)([{"audio": tone, "sampling_rate": 16000, "id": "x"}])
    expected = resample(torch.from_numpy(tone), 16000, 8000)
    start = (expected.shape[-1] - 16000) // 2
    torch.testing.assert_close(batch["waveform"][0], expected[start : start + 16000])
    assert "labels" not in batch and "ratings" not in batch


def test_accepts_channels_audio_dicts_and_ratings() -> None:
    stereo = torch.stack([torch.ones(120), 3 * torch.ones(120)])
    rows = [
        {"audio": stereo, "sampling_rate": SR, "ratings": [0.1, 0.2, 0.3]},
        {"audio": {"array": ramp(120), "sampling_rate": SR}, "ratings": np.array([0.4, 0.5, 0.6])},
    ]
    batch = CropCollate(SR, 1.0, train=False)(rows)
    assert (batch["waveform"][0] == 2.0).all()  # channels averaged
    assert batch["ratings"].dtype == torch.float32 and batch["ratings"].shape == (2, 3)
    torch.testing.assert_close(batch["ratings"][1], torch.tensor([0.4, 0.5, 0.6]))
    assert batch["ids"] == ["0", "1"]
    named = CropCollate(SR, 1.0, train=False)(
        [{"audio": ramp(120), "sampling_rate": SR, "name": "blues.00001"}]
    )
    assert named["ids"] == ["blues.00001"]


def test_bad_rows_and_configs_raise_clear_errors() -> None:
    collate = CropCollate(SR, 1.0)
    with pytest.raises(KeyError, match="row 'a' has no sample rate"):
        collate([{"audio": ramp(200), "id": "a"}])
    with pytest.raises(
        KeyError, match=r"row '0' has neither 'audio' nor 'path' \(keys: \['sample_rate', 'wave'\]\)"
    ):
        collate([{"wave": ramp(200), "sample_rate": SR}])
    with pytest.raises(ValueError, match="expected non-empty float audio"):
        collate([{"audio": np.arange(200), "sample_rate": SR}])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="crops_per_clip must be a positive int"):
        CropCollate(SR, 1.0, crops_per_clip=0)
    with pytest.raises(ValueError, match="short must be 'pad' or 'raise'"):
        CropCollate(SR, 1.0, short="drop")
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise', got 'ignore'"):
        CropCollate(SR, 1.0, on_error="ignore")
    with pytest.raises(ValueError, match="min_context_seconds must be in"):
        CropCollate(SR, 1.0, min_context_seconds=2.0)


def test_dataloader_over_synthetic_genres() -> None:
    ds = synthetic_genres(n_per_class=1, seconds=0.5, sample_rate=8000, genres=["rock", "jazz", "pop"])
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, collate_fn=CropCollate(16000, 0.25, crops_per_clip=2, seed=0)
    )
    batch = next(iter(loader))
    assert batch["waveform"].shape == (6, 4000) and batch["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["ids"] == ["rock-0000", "jazz-0000", "pop-0000"] and batch["num_short"] == 0


def test_training_windows_depend_on_position_not_call_history():
    """What exact resume needs: batch b of epoch e gets the same windows however many batches were collated
    before (prefetching) and whether the loop started mid-epoch (resume)."""
    rows = [{"audio": np.arange(16000 * 3, dtype=np.float32), "sample_rate": 16000, "label": 0}] * 2
    run = CropCollate(16000, 1.0, train=True, crops_per_clip=3, seed=5)
    run.set_position(epoch=1, batches_done=0)
    uninterrupted = [run(rows)["crop_start"] for _ in range(4)]
    resumed = CropCollate(16000, 1.0, train=True, crops_per_clip=3, seed=5)
    resumed.set_position(epoch=1, batches_done=2)
    assert torch.equal(resumed(rows)["crop_start"], uninterrupted[2])
    assert torch.equal(resumed(rows)["crop_start"], uninterrupted[3])
    assert not torch.equal(uninterrupted[0], uninterrupted[1])
    other_epoch = CropCollate(16000, 1.0, train=True, crops_per_clip=3, seed=5)
    other_epoch.set_position(epoch=2, batches_done=0)
    assert not torch.equal(other_epoch(rows)["crop_start"], uninterrupted[0])


# --- file rows ------------------------------------------------------------------------------------------------------

FILE_SR = 22050


def _file(path: Path, seconds: float, seed: int, damaged: bool = False) -> dict:
    """A stereo FLOAT WAV and its file row (path + header facts, as the loaders give); a damaged file has a NaN
    every 0.1 s, which the header scan cannot see and every window meets."""
    n = int(FILE_SR * seconds)
    data = music(2, n, FILE_SR, seed=seed).T.numpy().copy()
    if damaged:
        data[:: FILE_SR // 10, 0] = np.nan
    sf.write(path, data, FILE_SR, subtype="FLOAT")
    return {"path": str(path), "name": path.stem, "frames": n, "file_rate": FILE_SR, "label": seed}


def test_file_rows_give_the_windows_of_the_decoded_clip(tmp_path: Path) -> None:
    files = [_file(tmp_path / f"t{i}.wav", 3.0 + i, seed=i) for i in range(2)]
    memory = []
    for r in files:
        wave, _ = load_audio(r["path"])
        memory.append(
            {"audio": wave[0].numpy(), "sample_rate": FILE_SR, "name": r["name"], "label": r["label"]}
        )
    for train, crops in ((True, 3), (False, 4)):
        from_files = CropCollate(16000, 1.0, train=train, crops_per_clip=crops, seed=4)(files)
        from_memory = CropCollate(16000, 1.0, train=train, crops_per_clip=crops, seed=4)(memory)
        assert from_files["crop_start"].tolist() == from_memory["crop_start"].tolist()
        assert (
            from_files["ids"] == ["t0", "t1"]
            and from_files["labels"].tolist() == from_memory["labels"].tolist()
        )
        torch.testing.assert_close(from_files["waveform"], from_memory["waveform"], atol=2e-6, rtol=0)
        assert from_files["skipped"] == []
    # evaluation windows cover the whole track: the last one ends at its end
    last = CropCollate(16000, 1.0, train=False, crops_per_clip=4)(files[:1])["crop_start"][-1]
    assert int(last) == 3 * 16000 - 16000


def test_rows_without_header_facts_read_the_header(tmp_path: Path) -> None:
    row = _file(tmp_path / "a.wav", 2.0, seed=1)
    bare = {"path": row["path"], "label": 1}
    batch = CropCollate(16000, 1.0, train=False)([bare])
    assert batch["crop_start"].tolist() == [8000] and batch["ids"] == ["0"]


def test_a_row_that_fails_when_read_is_skipped_and_the_batch_filled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = _file(tmp_path / "good.wav", 3.0, seed=0)
    bad = _file(tmp_path / "bad.wav", 3.0, seed=1, damaged=True)
    log = tmp_path / "skipped.jsonl"
    collate = CropCollate(16000, 1.0, train=True, crops_per_clip=2, seed=0, skip_log=log)
    batch = collate([bad, good])
    assert batch["waveform"].shape == (4, 16000)  # the batch keeps its size: two more windows of good.wav
    assert batch["ids"] == ["good"] and batch["clip_index"].tolist() == [0, 0, 0, 0]
    assert batch["labels"].tolist() == [0, 0, 0, 0]
    assert [s["name"] for s in batch["skipped"]] == ["bad"]
    assert re.fullmatch(
        r"has non-finite samples \(\d+ NaN, 0 Inf\) in frames \d+-\d+, the first at frame \d+ of channel 0",
        batch["skipped"][0]["reason"],
    )
    assert "skipped bad: cannot load audio" in caplog.text
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records == [{"name": "bad", "path": bad["path"], "reason": batch["skipped"][0]["reason"]}]
    # known bad: reported again, never decoded again, and logged once
    calls = []
    real = tracks.load_audio_span
    tracks.load_audio_span = lambda *a, **k: calls.append(a[0]) or real(*a, **k)  # type: ignore[assignment]
    try:
        again = collate([bad, good])
    finally:
        tracks.load_audio_span = real  # type: ignore[assignment]
    assert bad["path"] not in calls and [s["name"] for s in again["skipped"]] == ["bad"]
    assert len(log.read_text().splitlines()) == 1
    # evaluation: the clip is dropped, the batch is smaller
    evaluated = CropCollate(16000, 1.0, train=False, crops_per_clip=2)([bad, good])
    assert evaluated["ids"] == ["good"] and evaluated["waveform"].shape == (2, 16000)
    with pytest.raises(
        AudioLoadError, match=r"bad\.wav': has non-finite samples \(\d+ NaN, 0 Inf\) in frames"
    ):
        CropCollate(16000, 1.0, train=False, on_error="raise")([bad, good])


def test_a_batch_of_bad_rows_takes_an_earlier_good_row_or_says_what_failed(tmp_path: Path) -> None:
    good = _file(tmp_path / "good.wav", 2.0, seed=0)
    bad = [_file(tmp_path / f"bad{i}.wav", 2.0, seed=i, damaged=True) for i in (1, 2)]
    fresh = CropCollate(16000, 1.0, train=True, seed=0)
    with pytest.raises(
        DataError, match=r"every row of a batch of 2 failed to read: bad1 \(has non-finite .*; bad2 \("
    ):
        fresh(bad)
    collate = CropCollate(16000, 1.0, train=True, seed=0)
    collate([good])
    batch = collate(bad)  # the last good row stands in
    assert batch["ids"] == ["good"] and batch["waveform"].shape == (2, 16000)
    assert [s["name"] for s in batch["skipped"]] == ["bad1", "bad2"]
    with pytest.raises(DataError, match="every row of a batch of 2 failed to read"):
        CropCollate(16000, 1.0, train=False)(bad)


def test_windows_come_from_the_decode_cache_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = _file(tmp_path / "a.wav", 3.0, seed=5)
    direct = CropCollate(16000, 1.0, train=False, crops_per_clip=3)([row])
    cache = DecodedCache(16000, root=tmp_path / "cache")
    assert cache.build([row["path"]], progress=False) == (1, {})

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded the file although it is cached")

    monkeypatch.setattr(tracks, "load_audio_span", no_decoding)
    cached = CropCollate(16000, 1.0, train=False, crops_per_clip=3, cache=cache)([row])
    torch.testing.assert_close(cached["waveform"], direct["waveform"], atol=2e-6, rtol=0)


def test_multi_hot_labels_are_batched_per_crop_as_floats() -> None:
    rows = [
        {"audio": ramp(300), "sample_rate": SR, "labels": np.array([1, 0, 1], dtype=np.float32)},
        {"audio": ramp(300), "sample_rate": SR, "labels": [0.0, 1.0, 0.0]},
    ]
    batch = CropCollate(SR, 1.0, train=False, crops_per_clip=2)(rows)
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [[1, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0]]


def test_stretch_happens_before_cropping_so_windows_stay_full_length() -> None:
    sr, rate = 16000, 0.8  # slower: a 1.5 s clip becomes 1.875 s
    rows = [
        {"audio": np.sin(np.arange(int(1.5 * sr)) * 0.05).astype(np.float32), "sample_rate": sr, "label": 1}
    ]
    stretch = ClipStretch(TimeStretchConfig((rate, rate)))
    collate = CropCollate(
        sr, 1.0, train=True, crops_per_clip=4, seed=2, stretch=stretch, min_context_seconds=0.5
    )
    batch = collate(rows)
    length = ClipStretch.stretched_length(int(1.5 * sr), rate)
    ends = batch["crop_start"] + sr
    assert batch["waveform"].shape == (4, sr) and (ends <= length).all() and (ends > length - sr).any()
    for wave, mask, start in zip(batch["waveform"], batch["mask"], batch["crop_start"].tolist()):
        torch.testing.assert_close(
            wave, stretch.window(torch.as_tensor(rows[0]["audio"]), start, sr, rate) * mask
        )
        assert mask.sum() == min(sr, start + sr) and (wave[~mask] == 0).all()
    again = CropCollate(
        sr, 1.0, train=True, crops_per_clip=4, seed=2, stretch=stretch, min_context_seconds=0.5
    )
    assert torch.equal(again(rows)["waveform"], batch["waveform"])  # drawn from the batch's generator
    plain = CropCollate(sr, 1.0, train=True, crops_per_clip=4, seed=2, min_context_seconds=0.5)(rows)
    assert (plain["crop_start"] + sr <= int(1.5 * sr)).all()  # without stretch: the unstretched length
    evaluation = CropCollate(sr, 1.0, train=False, stretch=stretch)(rows)
    torch.testing.assert_close(evaluation["waveform"][0], torch.as_tensor(rows[0]["audio"][4000:20000]))


def test_a_bad_tagging_row_is_skipped_with_time_stretch_on(tmp_path: Path) -> None:
    """The stretched path reads the same spans, so a damaged file is skipped there too; the stand-in windows
    are stretched like the others and carry the good clip's multi-hot tags."""
    good = {**_file(tmp_path / "good.wav", 3.0, seed=0), "labels": [0.0, 1.0, 1.0]}
    bad = {**_file(tmp_path / "bad.wav", 3.0, seed=1, damaged=True), "labels": [1.0, 0.0, 0.0]}
    for r in (good, bad):
        del r["label"]
    stretch = ClipStretch(TimeStretchConfig((0.8, 0.8)))
    collate = CropCollate(16000, 1.0, train=True, crops_per_clip=2, seed=3, stretch=stretch)
    batch = collate([bad, good])
    assert batch["ids"] == ["good"] and batch["waveform"].shape == (4, 16000)
    assert [s["name"] for s in batch["skipped"]] == ["bad"]
    assert batch["labels"].tolist() == [[0.0, 1.0, 1.0]] * 4
    whole = load_audio(good["path"], sample_rate=16000)[0][0]
    for wave, start in zip(batch["waveform"], batch["crop_start"].tolist()):  # windows of the stretched clip
        torch.testing.assert_close(wave, stretch.window(whole, start, 16000, 0.8), atol=2e-4, rtol=0)
