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


# RMS and the samples at 1000, 4000 and 7000 of a 1 s clip at 8 kHz from default_rng(11). They pin the generated
# audio: a refactor must keep every clip (same seed -> same samples). The tolerance covers float32 BLAS rounding
# on other machines and thread counts (about 2e-7); any change to the synthesis moves these by far more.
_GENRE_PINS = {
    "blues": (0.1798802, -0.0876964, 0.0460166, 0.0029699),
    "classical": (0.1514397, -0.1949952, -0.0288658, -0.0288055),
    "country": (0.0596468, -0.0166706, 0.0073040, 0.0012585),
    "disco": (0.0636430, -0.0312814, 0.0227441, -0.0451247),
    "hiphop": (0.0751824, -0.0545594, 0.0274763, 0.0137411),
    "jazz": (0.0378950, 0.0013628, 0.0461965, 0.0246423),
    "metal": (0.0716475, -0.0292673, 0.0353958, 0.1025640),
    "pop": (0.1505251, 0.0988365, 0.0670918, 0.0455661),
    "reggae": (0.2038355, 0.1699741, 0.1974432, -0.0297228),
    "rock": (0.1126574, 0.0478255, 0.0631981, 0.0417360),
}


def _pins(x: np.ndarray, at: tuple[int, ...] = (1000, 4000, 7000)) -> tuple[float, ...]:
    x = x.astype(np.float64)
    return (float(np.sqrt(np.mean(x**2))), *(float(x[i]) for i in at))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("genre", GENRES)
def test_genre_clips_are_pinned(genre: str) -> None:
    y = render_genre_clip(genre, 1.0, SR, np.random.default_rng(11))
    np.testing.assert_allclose(_pins(y), _GENRE_PINS[genre], rtol=0, atol=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_piano_radio_and_splits_are_pinned() -> None:
    piano = synthetic_piano(n=2, seconds=1.0, sample_rate=SR, seed=2, n_performers=2, progress=False)
    np.testing.assert_allclose(
        [_pins(piano[i]["audio"]) for i in range(2)],
        [(0.1779381, 0.0395628, -0.2676556, -0.1076019), (0.0645257, -0.0370403, -0.1270039, 0.0455740)],
        rtol=0,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        [piano[i]["ratings"][:5] for i in range(2)],
        [[0.668852, 0.802528, 0.523265, 0.386341, 0.362779], [0.405886, 0.859391, 0.409016, 0.591537, 0.479]],
        rtol=0,
        atol=1e-6,
    )
    wave, _ = synthetic_radio(["pop", "jazz"], 0.5, SR, seed=4, progress=False)
    np.testing.assert_allclose(
        _pins(wave, (1000, 3000, 6000)), (0.0993718, -0.1129514, -0.0295251, -0.0009713), rtol=0, atol=1e-6
    )
    splits = synthetic_genres_splits(
        4, 0.25, SR, seed=3, genres=["jazz", "metal"], fractions=(0.5, 0.25, 0.25), progress=False
    )
    assert {k: list(v["id"]) for k, v in splits.items()} == {
        "train": ["jazz-0001", "jazz-0002", "metal-0001", "metal-0002"],
        "validation": ["jazz-0000", "metal-0003"],
        "test": ["jazz-0003", "metal-0000"],
    }


@pytest.mark.parametrize(
    ("make", "bar"),
    [
        (
            lambda **kw: synthetic_genres(2, 0.25, SR, seed=1, genres=["pop", "rock"], **kw),
            "synthetic genres",
        ),
        (
            lambda **kw: synthetic_genres_splits(4, 0.25, SR, 1, ["pop"], (0.5, 0.25, 0.25), **kw),
            "synthetic genres",
        ),
        (lambda **kw: synthetic_piano(4, 0.25, SR, seed=1, **kw), "synthetic piano"),
        (lambda **kw: synthetic_radio(["pop"] * 4, 0.25, SR, seed=1, **kw), "synthetic radio"),
    ],
)
def test_generation_shows_a_progress_bar_over_clips_unless_asked_not_to(
    make, bar: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make(progress=False)
    assert capsys.readouterr().err == ""
    make()
    err = capsys.readouterr().err
    assert f"{bar}: 100%" in err and "4/4" in err and "clip" in err
