"""Synthetic genres: every style renders, determinism, custom styles, data set schema, splits, the radio stream,
pinned samples and progress bars."""

from __future__ import annotations

import dataclasses

import datasets
import numpy as np
import pytest

from finetune.data.synthetic import (
    GENRE_STYLES,
    GENRES,
    GenreStyle,
    Part,
    render_genre_clip,
    synthetic_genres,
    synthetic_genres_splits,
    synthetic_radio,
)
from tests.finetune.data.synthetic.helpers import SR, pins, rms_db


@pytest.mark.parametrize("genre", GENRES)
def test_every_style_renders_bounded_audible_audio(genre: str) -> None:
    y = render_genre_clip(genre, 1.5, SR, np.random.default_rng(3))
    assert y.dtype == np.float32 and y.shape == (int(1.5 * SR),)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert -33.0 < rms_db(y) < -9.0  # the master stage targets -30 to -12 dBFS before soft limiting


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
    assert np.isfinite(y).all() and rms_db(y) > -35


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
        assert piece[0] == 0.0 and abs(piece[-1]) < 1e-3 and rms_db(piece) > -40
    assert not np.array_equal(wave[: SR // 2], wave[int(1.5 * SR) : 2 * SR])  # the two rock clips differ
    with pytest.raises(ValueError, match="one duration per style"):
        synthetic_radio(["rock", "jazz"], [1.0], SR)


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


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("genre", GENRES)
def test_genre_clips_are_pinned(genre: str) -> None:
    y = render_genre_clip(genre, 1.0, SR, np.random.default_rng(11))
    np.testing.assert_allclose(pins(y), _GENRE_PINS[genre], rtol=0, atol=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_radio_and_split_ids_are_pinned() -> None:
    wave, _ = synthetic_radio(["pop", "jazz"], 0.5, SR, seed=4, progress=False)
    np.testing.assert_allclose(
        pins(wave, (1000, 3000, 6000)), (0.0993718, -0.1129514, -0.0295251, -0.0009713), rtol=0, atol=1e-6
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


def test_registered_synthetic_genres() -> None:
    """``data.name=synthetic_genres``: clip length and seed are the shared data keys."""
    from finetune.data.registry import DATASETS, DataConfig
    from heads.tasks import SINGLE_LABEL

    genres_cfg = DataConfig.from_dict({"n_per_class": 3, "clip_seconds": 0.25, "seed": 1}, "data")
    genres = DATASETS["synthetic_genres"](genres_cfg, SR)
    assert (genres.task, genres.names) == (SINGLE_LABEL, tuple(GENRES))
    assert {k: len(v) for k, v in genres.splits.items()} == {"train": 10, "validation": 10, "test": 10}
    assert genres.splits["test"][0]["audio"].shape == (SR // 4,)
    ids = set(synthetic_genres_splits(3, 0.25, SR, seed=1, progress=False)["test"]["id"])
    assert set(genres.splits["test"]["id"]) == ids
