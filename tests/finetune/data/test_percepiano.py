"""PercePiano loader on the real labels and MIDI names (tiny stand-in audio): quiet when nothing is wrong, its
splits are the fold protocols', bad labels and label files, and MIDI rendered with any sound font (a handful of
files at 16 kHz into a temporary cache)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from finetune.data.audio import load_audio
from finetune.data.lazy import DataError
from finetune.data.percepiano import LABELS_FILE, PERCEPIANO_DIMENSIONS, PercePianoConfig, load_percepiano
from finetune.data.percepiano_folds import Segment, split_segments
from finetune.data.registry import DATASETS, DataConfig
from finetune.data.render import RenderSettings
from heads.tasks import RATING
from tests.audio_signals import noise
from tests.finetune.data.soundfonts import KEY_RANGE, SAMPLE_MODES, sine, write_sf2

SR = 16000
LABELS = "label_2round_mean_reg_19_with0_rm_highstd0.json"
STDS = "label_2round_std_reg_19_with0_rm_highstd0.json"


@pytest.fixture(scope="module")
def data(shared_dir: Path) -> Path:
    return shared_dir / "data" / "percepiano"


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """One tiny wav per real MIDI file (all 1202 names, the leading space included), hard-linked."""
    folder = tmp_path_factory.mktemp("percepiano_audio")
    source = folder / "source.bin"
    sf.write(source, noise(1, 160)[0].numpy(), 8000, format="WAV")
    for midi in (data / "midi").iterdir():
        os.link(source, folder / f"{midi.stem}.wav")
    source.unlink()
    return folder


def _quiet_load(data: Path, audio_dir: Path, caplog: pytest.LogCaptureFixture, **kw: object) -> object:
    """Load with no UserWarning (nothing is wrong with the release); the facts go to the INFO log."""
    with (
        warnings.catch_warnings(record=True) as record,
        caplog.at_level(logging.INFO, logger="finetune.data.lazy"),
    ):
        warnings.simplefilter("always")
        ds = load_percepiano(data / LABELS, audio_dir=audio_dir, **kw)
    assert [str(w.message) for w in record if issubclass(w.category, UserWarning)] == []
    return ds


def test_labelled_segments_players_and_quirks(
    data: Path, audio_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = _quiet_load(data, audio_dir, caplog, std_labels=data / STDS)
    assert len(caplog.records) == 1  # informed once, with the whole summary
    message = caplog.records[0].getMessage()
    assert message.startswith("percepiano: nothing dropped. ")
    assert "13 file(s) have no label and are left out: Beethoven_WoO80_var10_8bars_Score_8, " in message
    assert "1 file name(s) in" in message and "' Schubert_D935_no.3_4bars_2_1.wav'" in message
    assert ds["train"].info.description == message
    rows = [r for split in ds.values() for r in split.with_format(None)]
    assert len(rows) == 1189 == len({r["name"] for r in rows})
    assert {r["player"] for r in rows} == set(range(22))
    assert "Schubert_D935_no.3_4bars_2_1" in {r["name"] for r in rows}
    ratings = np.array([r["ratings"] for r in rows])
    assert ratings.shape == (1189, len(PERCEPIANO_DIMENSIONS)) == (1189, 19)
    assert ratings.min() > 0 and ratings.max() <= 1
    official = json.loads((data / LABELS).read_text())["Beethoven_WoO80_var27_8bars_1_15"]
    row = next(r for r in rows if r["name"] == "Beethoven_WoO80_var27_8bars_1_15")
    np.testing.assert_allclose(row["ratings"], official[:19], rtol=1e-6)
    assert row["player"] == official[19] and len(row["ratings_std"]) == 19
    assert (row["piece"], row["excerpt"], row["performer"]) == (
        "Beethoven_WoO80_var27",
        "Beethoven_WoO80_var27_8bars_15",
        "1",
    )


@pytest.mark.parametrize("fold", ["performer", "composition", "excerpt_official"])
def test_loader_splits_are_the_protocols(
    data: Path, audio_dir: Path, caplog: pytest.LogCaptureFixture, fold: str
) -> None:
    labels = json.loads((data / LABELS).read_text())
    stems = {p.stem.strip(): p.stem for p in audio_dir.iterdir()}
    segments = [Segment.from_name(stems[name], v[19]) for name, v in sorted(labels.items())]
    expected = split_segments(segments, fold, 4, 2, seed=5)
    ds = _quiet_load(data, audio_dir, caplog, fold=fold, fold_index=2, seed=5).with_format(None)
    for split, idx in expected.as_dict().items():
        assert ds[split]["name"] == [segments[i].name for i in idx]
    left_out = (
        "1 segment(s) are in none of the excerpt_official splits: Schubert_D935_no.3_4bars_2_1 (its file"
    )
    assert (left_out in caplog.records[0].getMessage()) == (fold == "excerpt_official")


def test_bad_labels_are_dropped_or_raise(tmp_path: Path, data: Path, audio_dir: Path) -> None:
    labels = json.loads((data / LABELS).read_text())
    labels["Beethoven_WoO80_thema_8bars_1_1"][3] = 1.5
    labels["Beethoven_WoO80_thema_8bars_2_1"] = labels["Beethoven_WoO80_thema_8bars_2_1"][:19]
    labels["Beethoven_WoO80_thema_8bars_3_1"][19] = -1
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps(labels))
    with pytest.warns(UserWarning) as record:
        ds = load_percepiano(bad, audio_dir=audio_dir, fold="random")
    message = str(record[0].message)
    assert message.startswith("percepiano: dropped 3 entries;")
    assert "rating outside (0, 1] (1): Beethoven_WoO80_thema_8bars_1_1 (min 0.262, max 1.5)" in message
    assert "13 file(s) have no label" in message  # the three with bad labels are not counted as unlabelled
    assert sum(v.num_rows for v in ds.values()) == 1186
    with pytest.raises(DataError, match=r"malformed label entry \(1\): Beethoven_WoO80_thema_8bars_2_1"):
        load_percepiano(bad, audio_dir=audio_dir, on_error="raise")
    with pytest.raises(DataError, match=r"player id not a non-negative integer \(1\)"):
        load_percepiano(bad, audio_dir=audio_dir, on_error="raise")


def test_truncated_label_files_name_the_file(tmp_path: Path, data: Path, audio_dir: Path) -> None:
    cut = tmp_path / "labels.json"
    cut.write_text((data / LABELS).read_text()[:5000])
    with pytest.raises(
        DataError,
        match=r"labels\.json is not valid JSON \(.*line 1 column \d+.*\); the label file may be truncated or damaged: download it again",
    ):
        load_percepiano(cut, audio_dir=audio_dir)
    stds = tmp_path / "stds.json"
    stds.write_text((data / STDS).read_text()[:-10])
    with pytest.raises(
        DataError, match=r"stds\.json is not valid JSON .*the standard-deviation file may be truncated"
    ):
        load_percepiano(data / LABELS, audio_dir=audio_dir, std_labels=stds)


def test_duplicate_and_missing_files(tmp_path: Path, data: Path) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    for name in ("Beethoven_WoO80_thema_8bars_1_1.wav", "Beethoven_WoO80_thema_8bars_1_1.flac"):
        sf.write(folder / name, np.zeros(100, dtype=np.float32), 8000)
    with pytest.raises(DataError, match="two files for segment 'Beethoven_WoO80_thema_8bars_1_1'"):
        load_percepiano(data / LABELS, audio_dir=folder)
    (folder / "Beethoven_WoO80_thema_8bars_1_1.flac").unlink()
    with pytest.raises(ValueError, match="pass audio_dir"):
        load_percepiano(data / LABELS)
    with pytest.raises(
        ValueError, match=r"fold must be one of .*, got 'composer' \(did you mean 'composition'\?\)"
    ):
        load_percepiano(data / LABELS, audio_dir=folder, fold="composer")
    with pytest.raises(
        ValueError, match=r"fold='performer_official' has the official 4 folds; got n_folds=3"
    ):
        load_percepiano(data / LABELS, audio_dir=folder, fold="performer_official", n_folds=3)
    with pytest.raises(
        DataError,
        match=r"cannot split 1 segment\(s\) into excerpt folds: 4 folds need at least 4 groups .*1188 labelled segment\(s\) have no audio or MIDI file",
    ):
        load_percepiano(data / LABELS, audio_dir=folder)


def test_load_renders_midi_with_any_soundfont(tmp_path: Path, data: Path) -> None:
    midi_dir = tmp_path / "midi"
    midi_dir.mkdir()
    chosen = [" Schubert_D935_no.3_4bars_2_1.mid", "Beethoven_WoO80_thema_8bars_1_1.mid"]
    chosen += ["Beethoven_WoO80_thema_8bars_2_1.mid", "Beethoven_WoO80_thema_8bars_3_1.mid"]
    for name in chosen:
        shutil.copy(data / "midi" / name, midi_dir / name)
    kw = {
        "midi_dir": midi_dir,
        "fold": "random",
        "n_folds": 2,
        "sample_rate": SR,
        "render_cache": tmp_path / "cache",
    }
    with pytest.warns(UserWarning, match=r"1185 labelled segment\(s\) have no audio or MIDI file") as record:
        ds = load_percepiano(data / LABELS, **kw)
    sha = RenderSettings.of(SR).soundfont_sha256
    assert (
        f"4 segment(s) rendered from MIDI with TimGM6mb.sf2 (sha256 {sha[:12]}) at 16000 Hz: spectral centroid "
        in str(record[0].message)
    )
    rows = [r for split in ds.values() for r in split]
    assert sorted(r["name"] for r in rows) == sorted(n.strip()[:-4] for n in chosen)
    for r in rows:
        assert Path(r["path"]).parent == tmp_path / "cache" / f"TimGM6mb-{sha[:12]}" and r["path"].endswith(
            ".flac"
        )
        audio, _ = load_audio(r["path"])
        assert r["file_rate"] == SR and audio.shape == (1, r["frames"])
        source = next(midi_dir / n for n in chosen if n.strip() == r["name"] + ".mid")
        end = pretty_midi.PrettyMIDI(str(source)).get_end_time()
        assert end * SR <= audio.shape[1] <= (end + 3.0) * SR
        assert audio.abs().max() > 0.05
    # a render that clipped (its kept peak above 1) is named in the warning
    info = Path(rows[0]["path"]).with_suffix(".info.json")
    info.write_text(info.read_text().replace('"peak": ', '"peak": 1.25, "was": '))
    with pytest.warns(
        UserWarning,
        match=rf"1 render\(s\) clipped at full scale \(peak before clipping\): {rows[0]['name']} \(1.25\)",
    ):
        load_percepiano(data / LABELS, **kw)
    # another font, and one damaged MIDI file among the good ones: that one is dropped, the others render
    font = write_sf2(
        tmp_path / "Mine.sf2", sine(440.0, 1.0, SR), SR, 69, [{KEY_RANGE: (0, 127), SAMPLE_MODES: 1}]
    )
    (midi_dir / "Beethoven_WoO80_thema_8bars_4_1.mid").write_bytes(b"MThd not really")
    with pytest.warns(
        UserWarning,
        match=r"dropped 1 entry; unrenderable MIDI \(1\): Beethoven_WoO80_thema_8bars_4_1 \(could not parse MIDI file",
    ) as record:
        mine = load_percepiano(data / LABELS, soundfont=font, **kw)
    assert "4 segment(s) rendered from MIDI with Mine.sf2 (sha256 " in str(record[0].message)
    paths = [Path(p) for split in mine.values() for p in split.with_format(None)["path"]]
    assert len(paths) == 4 and {p.parent.name for p in paths} == {
        f"Mine-{RenderSettings.of(SR, font).soundfont_sha256[:12]}"
    }


def test_registered_builder(tmp_path: Path) -> None:
    """``data.name=percepiano``: audio named like the segments, labels found in data.root under the official
    file name, player-disjoint folds by default."""
    root = tmp_path / "percepiano"
    root.mkdir()
    rng = np.random.default_rng(0)
    labels = {}
    for player in range(12):
        for seg in (1, 2):
            name = f"Piece{player % 3}_8bars_{player + 1}_{seg}"
            labels[name] = [*rng.uniform(0.2, 1.0, len(PERCEPIANO_DIMENSIONS)).round(4).tolist(), player]
            sf.write(root / f"{name}.wav", noise(1, 2000, seed=100 * player + seg)[0].numpy(), 8000)
    (root / LABELS_FILE).write_text(json.dumps(labels))
    cfg = DataConfig.from_dict({"name": "percepiano", "root": str(root)}, "data")
    assert isinstance(cfg, PercePianoConfig) and cfg.fold == "performer"
    data = DATASETS["percepiano"](cfg, SR)
    assert (data.task, data.names) == (RATING, tuple(PERCEPIANO_DIMENSIONS))
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sum(sizes.values()) == 24 and min(sizes.values()) > 0
    players = {k: set(v.with_format(None)["player"]) for k, v in data.splits.items()}
    assert not (players["train"] & players["validation"] or players["train"] & players["test"])
    row = data.splits["train"][0]
    assert np.allclose(row["ratings"], labels[row["name"]][:19], atol=1e-6) and row["frames"] == 2000
    with pytest.raises(ValueError, match=r"needs data\.root: the folder with the segments' audio"):
        DATASETS["percepiano"](PercePianoConfig(), SR)
    assert PercePianoConfig(fold="piece").fold == "piece"  # the old name still loads (and warns when used)
    with pytest.raises(
        ValueError,
        match=r"fold must be one of performer, excerpt, composition, random, performer_official, excerpt_official, got 'pieces'$",
    ):
        PercePianoConfig(fold="pieces")
