"""Synthetic tags: the mix rule, multi-hot targets that match the styles present, determinism, schema, splits
and registration."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.data.registry import DataConfig, get_dataset
from finetune.data.synthetic import (
    GENRES,
    render_genre_clip,
    render_tags_clip,
    synthetic_tags,
    synthetic_tags_splits,
)
from heads.tasks import MULTI_LABEL
from tests.finetune.data.synthetic.helpers import SR


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_a_clip_is_the_sum_of_its_styles_at_the_drawn_gains() -> None:
    got = render_tags_clip(["jazz", "metal"], 0.5, SR, np.random.default_rng(5))
    rng = np.random.default_rng(5)  # replay the draws: stem, gain, stem, gain, then the mix level
    mix = np.zeros(int(0.5 * SR))
    for style in ("jazz", "metal"):
        stem = render_genre_clip(style, 0.5, SR, rng).astype(np.float64)
        mix += stem * 10 ** (rng.uniform(-4, 4) / 20) / _rms(stem)
    want = np.tanh(mix * 10 ** (rng.uniform(-30, -12) / 20) / _rms(mix))
    assert got.dtype == np.float32 and got.shape == (int(0.5 * SR),)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"styles must be a non-empty list of distinct names, got \['pop', 'pop'\]"
    ):
        render_tags_clip(["pop", "pop"], 0.5, SR, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown style 'polka'"):
        render_tags_clip(["polka"], 0.5, SR, np.random.default_rng(0))


def test_targets_name_the_styles_present_and_clips_do_not_depend_on_n() -> None:
    ds = synthetic_tags(4, 0.25, SR, seed=3, max_styles=3, progress=False)
    assert ds.features["tags"].feature.names == list(GENRES)
    hot = np.stack(ds["labels"])
    assert hot.dtype == np.float32 and hot.shape == (4, len(GENRES))
    for row, tags in zip(hot, ds["tags"]):
        assert sorted(np.flatnonzero(row).tolist()) == sorted(np.asarray(tags).tolist())
        assert 1 <= row.sum() <= 3 and set(np.unique(row)) <= {0.0, 1.0}
    assert list(ds["id"]) == ["tags-0000", "tags-0001", "tags-0002", "tags-0003"]
    fewer = synthetic_tags(2, 0.25, SR, seed=3, max_styles=3, progress=False)
    np.testing.assert_array_equal(fewer[1]["audio"], ds[1]["audio"])
    np.testing.assert_array_equal(fewer[1]["labels"], ds[1]["labels"])
    other = synthetic_tags(2, 0.25, SR, seed=4, max_styles=3, progress=False)
    assert np.abs(other[1]["audio"] - ds[1]["audio"]).max() > 0.01


def test_single_style_clips_carry_one_tag() -> None:
    ds = synthetic_tags(3, 0.25, SR, seed=0, max_styles=1, progress=False)
    assert np.stack(ds["labels"]).sum(axis=1).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be a positive int, got 0"),
        ({"max_styles": 11}, "max_styles=11 exceeds the 10 styles available"),
        ({"max_styles": True}, "max_styles must be a positive int, got True"),
    ],
)
def test_bad_arguments_name_what_to_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic_tags(**{"n": 2, "seconds": 0.25, "sample_rate": SR, "progress": False, **kwargs})


def test_splits_are_disjoint_and_sized_and_the_data_set_is_registered() -> None:
    splits = synthetic_tags_splits(10, 0.1, SR, seed=1, max_styles=1, progress=False)
    ids = {k: set(v["id"]) for k, v in splits.items()}
    assert {k: len(v) for k, v in ids.items()} == {"train": 6, "validation": 2, "test": 2}
    assert not (
        ids["train"] & ids["validation"] or ids["train"] & ids["test"] or ids["validation"] & ids["test"]
    )
    with pytest.raises(ValueError, match=r"n=2 leaves no training clips with fractions \(0.2, 0.4, 0.4\)"):
        synthetic_tags_splits(2, 0.25, SR, fractions=(0.2, 0.4, 0.4), progress=False)
    config = DataConfig.from_dict(
        {"name": "synthetic_tags", "n_items": 5, "clip_seconds": 0.1, "max_styles": 1}, "data"
    )
    data = get_dataset("synthetic_tags")(config, SR)
    assert data.task is MULTI_LABEL and data.names == tuple(GENRES)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 3, "validation": 1, "test": 1}
    assert data.splits["test"][0]["sample_rate"] == SR
