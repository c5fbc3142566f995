"""Synthetic piano: the rating dimensions, data set schema and determinism, ratings and audio that follow the
performance parameters, pinned samples and the progress bar."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from finetune.data.synthetic import (
    PERCEPIANO_DIMENSIONS,
    piano_ratings,
    render_piano_clip,
    sample_piano_performance,
    synthetic_piano,
)
from heads.rating import PERCEPIANO_DIMENSIONS as HEAD_DIMENSIONS
from tests.finetune.data.synthetic.helpers import SR, pins, rms_db


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
    assert audio.shape == (SR // 2,) and np.isfinite(audio).all() and rms_db(audio) > -60
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
    assert rms_db(y_loud) > rms_db(y_soft) + 6.0


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


@pytest.mark.usefixtures("one_thread")
def test_piano_clips_and_ratings_are_pinned() -> None:
    """Same seed, same samples and ratings (tolerance: float32 BLAS rounding, see test_genres)."""
    piano = synthetic_piano(n=2, seconds=1.0, sample_rate=SR, seed=2, n_performers=2, progress=False)
    np.testing.assert_allclose(
        [pins(piano[i]["audio"]) for i in range(2)],
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


def test_piano_generation_shows_a_progress_bar_over_clips_unless_asked_not_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    synthetic_piano(4, 0.25, SR, seed=1, progress=False)
    assert capsys.readouterr().err == ""
    synthetic_piano(4, 0.25, SR, seed=1)
    err = capsys.readouterr().err
    assert "synthetic piano: 100%" in err and "4/4" in err and "clip" in err


def test_registered_synthetic_piano_holds_out_whole_performers() -> None:
    """``data.name=synthetic_piano``: validation and test each hold out a sixth of the performers."""
    from finetune.data.registry import DATASETS, DataConfig
    from heads import PERCEPIANO_DIMENSIONS
    from heads.tasks import RATING

    piano_cfg = DataConfig.from_dict({"name": "synthetic_piano", "n_items": 24, "clip_seconds": 0.25}, "data")
    piano = DATASETS["synthetic_piano"](piano_cfg, SR)
    assert (piano.task, piano.names) == (RATING, tuple(PERCEPIANO_DIMENSIONS))
    performers = {k: set(np.asarray(v["performer"]).tolist()) for k, v in piano.splits.items()}
    assert sum(len(v) for v in piano.splits.values()) == 24
    assert len(performers["validation"]) == len(performers["test"]) == 3  # 22 performers // 6
    assert not (performers["train"] & performers["validation"] or performers["train"] & performers["test"])
    assert not performers["validation"] & performers["test"]
