"""Synthetic data sets: determinism, schema, splits, the radio stream, and piano ratings that follow the
audio."""

from __future__ import annotations

import dataclasses

import datasets
import numpy as np
import pytest

from finetune.data.synthetic import (
    GENRE_STYLES,
    GENRES,
    PERCEPIANO_DIMENSIONS,
    GenreStyle,
    Part,
    piano_ratings,
    render_genre_clip,
    render_piano_clip,
    sample_piano_performance,
    synthetic_genres,
    synthetic_genres_splits,
    synthetic_piano,
    synthetic_radio,
)
from heads.rating import PERCEPIANO_DIMENSIONS as HEAD_DIMENSIONS

SR = 8000


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2)))


def test_gtzan_genre_names() -> None:
    assert GENRES == (
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


@pytest.mark.parametrize("genre", GENRES)
def test_every_style_renders_bounded_audible_audio(genre: str) -> None:
    y = render_genre_clip(genre, 1.5, SR, np.random.default_rng(3))
    assert y.dtype == np.float32 and y.shape == (int(1.5 * SR),)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert -33.0 < _rms_db(y) < -9.0  # the master stage targets -30 to -12 dBFS before soft limiting


def test_clip_is_deterministic_and_seed_dependent() -> None:
    a = render_genre_clip("jazz", 1.0, SR, np.random.default_rng(7))
    b = render_genre_clip("jazz", 1.0, SR, np.random.default_rng(7))
    c = render_genre_clip("jazz", 1.0, SR, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.05


def test_custom_style_is_accepted() -> None:
    style = dataclasses.replace(
        GENRE_STYLES["rock"], parts=(Part("organ", "block", ("x...",), 55),), drums=({"kick": "x..."},)
    )
    assert isinstance(style, GenreStyle)
    y = render_genre_clip(style, 1.0, SR, np.random.default_rng(0))
    assert np.isfinite(y).all() and _rms_db(y) > -35


def test_unknown_style_and_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown style 'polka'"):
        render_genre_clip("polka", 1.0, SR, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sample_rate must be an int >= 8000"):
        render_genre_clip("pop", 1.0, 4000, np.random.default_rng(0))
    with pytest.raises(ValueError, match="seconds must be > 0"):
        render_genre_clip("pop", 0.0, SR, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown style 'polka'"):
        synthetic_genres(1, 0.5, SR, genres=["rock", "polka"])
    with pytest.raises(ValueError, match="distinct"):
        synthetic_genres(1, 0.5, SR, genres=["rock", "rock"])
    with pytest.raises(ValueError, match="n_per_class must be a positive int"):
        synthetic_genres(0, 0.5, SR)


@pytest.fixture(scope="module")
def small_genres() -> datasets.Dataset:
    return synthetic_genres(
        n_per_class=2, seconds=0.5, sample_rate=SR, seed=5, genres=["metal", "jazz", "pop"]
    )


def test_genre_dataset_schema(small_genres: datasets.Dataset) -> None:
    ds = small_genres
    assert len(ds) == 6
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == ["metal", "jazz", "pop"]
    assert list(ds["label"]) == [0, 0, 1, 1, 2, 2]
    assert list(ds["id"]) == ["metal-0000", "metal-0001", "jazz-0000", "jazz-0001", "pop-0000", "pop-0001"]
    row = ds[3]
    assert isinstance(row["audio"], np.ndarray) and row["audio"].dtype == np.float32
    assert row["audio"].shape == (SR // 2,) and int(row["sample_rate"]) == SR


def test_genre_dataset_is_deterministic_and_clips_do_not_depend_on_the_request(
    small_genres: datasets.Dataset,
) -> None:
    again = synthetic_genres(n_per_class=3, seconds=0.5, sample_rate=SR, seed=5, genres=["jazz"])
    np.testing.assert_array_equal(again[1]["audio"], small_genres[3]["audio"])  # jazz-0001 in both
    other_seed = synthetic_genres(n_per_class=2, seconds=0.5, sample_rate=SR, seed=6, genres=["jazz"])
    assert not np.array_equal(other_seed[1]["audio"], small_genres[3]["audio"])


def test_splits_are_stratified_disjoint_and_seeded() -> None:
    kw = dict(n_per_class=6, seconds=0.25, sample_rate=SR, seed=1, genres=["disco", "reggae", "blues"])
    d = synthetic_genres_splits(**kw, fractions=(0.5, 0.25, 0.25))
    counts = {k: np.bincount(np.asarray(v["label"]), minlength=3).tolist() for k, v in d.items()}
    assert counts == {"train": [2, 2, 2], "validation": [2, 2, 2], "test": [2, 2, 2]}
    ids = {k: set(v["id"]) for k, v in d.items()}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"])
    assert len(ids["train"] | ids["validation"] | ids["test"]) == 18
    assert {
        k: set(v["id"]) for k, v in synthetic_genres_splits(**kw, fractions=(0.5, 0.25, 0.25)).items()
    } == ids
    other = synthetic_genres_splits(**{**kw, "seed": 2}, fractions=(0.5, 0.25, 0.25))
    assert [s.split("-")[1] for s in sorted(other["test"]["id"])] != [
        s.split("-")[1] for s in sorted(ids["test"])
    ]
    with pytest.raises(ValueError, match="leaves no training clips"):
        synthetic_genres_splits(n_per_class=2, seconds=0.25, sample_rate=SR, genres=["pop"])
    with pytest.raises(ValueError, match="fractions must be three non-negative numbers summing to 1"):
        synthetic_genres_splits(n_per_class=4, seconds=0.25, sample_rate=SR, fractions=(0.5, 0.5, 0.5))


def test_radio_concatenates_styles_with_boundaries() -> None:
    wave, segments = synthetic_radio(["rock", "classical", "rock"], [1.0, 0.5, 0.75], SR, seed=2)
    assert wave.shape == (int(2.25 * SR),) and wave.dtype == np.float32
    assert [(s.start, s.end, s.style) for s in segments] == [
        (0.0, 1.0, "rock"),
        (1.0, 1.5, "classical"),
        (1.5, 2.25, "rock"),
    ]
    # 10 ms fades: silence at every join, audio inside each segment
    for s in segments:
        piece = wave[int(s.start * SR) : int(s.end * SR)]
        assert piece[0] == 0.0 and abs(piece[-1]) < 1e-3 and _rms_db(piece) > -40
    assert not np.array_equal(wave[: SR // 2], wave[int(1.5 * SR) : 2 * SR])  # the two rock clips differ
    with pytest.raises(ValueError, match="one duration per style"):
        synthetic_radio(["rock", "jazz"], [1.0], SR)


def test_percepiano_dimensions_come_from_the_rating_head() -> None:
    assert PERCEPIANO_DIMENSIONS is HEAD_DIMENSIONS and len(PERCEPIANO_DIMENSIONS) == 19


def test_piano_dataset_schema_and_determinism() -> None:
    ds = synthetic_piano(n=5, seconds=0.5, sample_rate=SR, seed=3, n_performers=2)
    assert ds.column_names == ["audio", "ratings", "performer", "sample_rate", "id"]
    assert list(ds["performer"]) == [0, 1, 0, 1, 0]
    assert list(ds["id"]) == [f"piano-{i:04d}" for i in range(5)]
    ratings = np.stack(ds["ratings"])
    assert ratings.shape == (5, 19) and ratings.dtype == np.float32
    assert (ratings > 1 / 7).all() and (ratings <= 1.0).all()
    audio = ds[2]["audio"]
    assert audio.shape == (SR // 2,) and np.isfinite(audio).all() and _rms_db(audio) > -60
    again = synthetic_piano(n=3, seconds=0.5, sample_rate=SR, seed=3, n_performers=2)
    np.testing.assert_array_equal(again[2]["audio"], audio)
    np.testing.assert_array_equal(again[2]["ratings"], ds[2]["ratings"])
    with pytest.raises(ValueError, match="n must be a positive int"):
        synthetic_piano(n=0)


def _dim(name: str) -> int:
    return PERCEPIANO_DIMENSIONS.index(name)


def test_piano_loudness_rating_and_audio_level_follow_velocity() -> None:
    base = sample_piano_performance(np.random.default_rng(0))
    soft, loud = (dataclasses.replace(base, velocity=v, dynamic_range=0.05) for v in (0.3, 0.85))
    r_soft, r_loud = piano_ratings(soft), piano_ratings(loud)
    assert r_loud[_dim("Timbre (soft-loud)")] > r_soft[_dim("Timbre (soft-loud)")] + 0.3
    y_soft = render_piano_clip(soft, 1.0, SR, np.random.default_rng(1))
    y_loud = render_piano_clip(loud, 1.0, SR, np.random.default_rng(1))
    assert _rms_db(y_loud) > _rms_db(y_soft) + 6.0


def test_piano_ratings_respond_to_their_parameters() -> None:
    base = sample_piano_performance(np.random.default_rng(1))
    pairs = {
        "Articulation (short-long)": ("articulation", 0.3, 1.0),
        "Pedal (sparse/dry-saturated/wet)": ("pedal", 0.0, 1.0),
        "Timing (stable-unstable)": ("rubato", 0.0, 0.12),
        "Music making (fast-slow paced)": ("tempo", 140.0, 60.0),
        "Dynamic (little-large dynamic range)": ("dynamic_range", 0.03, 0.3),
    }
    for dim, (param, low, high) in pairs.items():
        lo = piano_ratings(dataclasses.replace(base, **{param: low}))[_dim(dim)]
        hi = piano_ratings(dataclasses.replace(base, **{param: high}))[_dim(dim)]
        assert hi > lo + 0.25, (dim, lo, hi)
    # rater noise: same performance, different raters
    noisy = [piano_ratings(base, np.random.default_rng(i)) for i in range(2)]
    assert 0.0 < np.abs(noisy[0] - noisy[1]).max() < 0.5


def test_piano_brightness_follows_hammer_hardness() -> None:
    base = dataclasses.replace(sample_piano_performance(np.random.default_rng(2)), velocity=0.6)

    def centroid(p: object) -> float:
        y = render_piano_clip(p, 1.0, 16000, np.random.default_rng(0)).astype(np.float64)
        spec = np.abs(np.fft.rfft(y)) ** 2
        return float((spec * np.fft.rfftfreq(len(y), 1 / 16000)).sum() / spec.sum())

    assert centroid(dataclasses.replace(base, hardness=1.0)) > 1.3 * centroid(
        dataclasses.replace(base, hardness=0.0)
    )


# ==================================================================================== data set registration


def test_registered_synthetic_data_sets() -> None:
    """``data.name=synthetic_genres`` / ``synthetic_piano``: clip length and seed are the shared data keys; the
    piano set's validation and test sets hold out whole performers."""
    from finetune.data.registry import DATASETS, DataConfig
    from heads.tasks import RATING, SINGLE_LABEL

    genres_cfg = DataConfig.from_dict({"n_per_class": 3, "clip_seconds": 0.25, "seed": 1}, "data")
    genres = DATASETS["synthetic_genres"](genres_cfg, SR)
    assert (genres.task, genres.names) == (SINGLE_LABEL, tuple(GENRES))
    assert {k: len(v) for k, v in genres.splits.items()} == {"train": 10, "validation": 10, "test": 10}
    assert genres.splits["test"][0]["audio"].shape == (SR // 4,)
    ids = set(synthetic_genres_splits(3, 0.25, SR, seed=1)["test"]["id"])
    assert set(genres.splits["test"]["id"]) == ids

    piano_cfg = DataConfig.from_dict({"name": "synthetic_piano", "n_items": 24, "clip_seconds": 0.25}, "data")
    piano = DATASETS["synthetic_piano"](piano_cfg, SR)
    assert (piano.task, piano.names) == (RATING, tuple(PERCEPIANO_DIMENSIONS))
    performers = {k: set(np.asarray(v["performer"]).tolist()) for k, v in piano.splits.items()}
    assert sum(len(v) for v in piano.splits.values()) == 24
    assert len(performers["validation"]) == len(performers["test"]) == 3  # 22 performers // 6
    assert not (performers["train"] & performers["validation"] or performers["train"] & performers["test"])
    assert not performers["validation"] & performers["test"]
