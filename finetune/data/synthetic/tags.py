"""The multi-label (tagging) data set: each clip mixes one to ``max_styles`` of the synthetic genre styles, and
its tags are the styles present.

Every style in a clip is an independently rendered :func:`~.genres.render_genre_clip` (its own tempo, key, mix
and master), brought to a common loudness, weighted by a random gain of +-4 dB and summed; the mix then gets a
random loudness (-30 to -12 dBFS RMS) and soft limiting, like a single-style clip. So a tagger must hear each
style inside a mixture, and loudness alone says nothing about which styles play.

>>> splits = synthetic_tags_splits(n=200, seconds=6.0, sample_rate=32000)
>>> splits["train"][0]["labels"]          # multi-hot float32 [10], GENRES order
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from heads.tasks import MULTI_LABEL

from ..registry import DataConfig, TaskData, register_dataset
from .genres import _resolve_style, render_genre_clip
from .storage import _audio_column, _to_dataset
from .styles import GENRES

__all__ = [
    "SyntheticTagsConfig",
    "build_synthetic_tags",
    "render_tags_clip",
    "synthetic_tags",
    "synthetic_tags_splits",
]

_STREAM = zlib.crc32(b"synthetic_tags")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def render_tags_clip(
    styles: Sequence[str], seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Mix one clip of each of ``styles`` (see the module docstring).

    Returns:
        Mono float32 waveform in [-1, 1].

    Shapes:
        -> ``[round(seconds * sample_rate)]``.

    Raises:
        ValueError: no style, a style twice, or an unknown style.
    """
    if not styles or len(set(styles)) != len(styles):
        raise ValueError(f"styles must be a non-empty list of distinct names, got {list(styles)!r}")
    for style in styles:
        _resolve_style(style)
    mix = None
    for style in styles:
        stem = render_genre_clip(style, seconds, sample_rate, rng).astype(np.float64)
        gain = 10 ** (rng.uniform(-4.0, 4.0) / 20) / max(_rms(stem), 1e-9)
        mix = stem * gain if mix is None else mix + stem * gain
    level = 10 ** (rng.uniform(-30.0, -12.0) / 20)
    return np.tanh(mix * (level / max(_rms(mix), 1e-9))).astype(np.float32)


def _draw_styles(names: Sequence[str], max_styles: int, rng: np.random.Generator) -> list[str]:
    k = int(rng.integers(1, max_styles + 1))
    picked = sorted(rng.choice(len(names), size=k, replace=False).tolist())
    return [names[i] for i in picked]


def synthetic_tags(
    n: int = 200,
    seconds: float = 10.0,
    sample_rate: int = 32000,
    seed: int = 0,
    max_styles: int = 3,
    styles: Sequence[str] | None = None,
    progress: bool = True,
) -> datasets.Dataset:
    """A multi-label data set of clips that mix 1 to ``max_styles`` synthetic styles (uniformly many, distinct).

    Args:
        n: Clips.
        seconds: Clip duration.
        sample_rate: Hz.
        seed: Everything follows from it; clip ``i`` is the same whatever ``n``.
        max_styles: Most styles in one clip (the number is drawn uniformly from 1..max_styles).
        styles: The tag vocabulary (default: all of :data:`GENRES`), in output order.
        progress: Show a progress bar over the clips.

    Returns:
        A ``numpy``-formatted ``datasets.Dataset`` with columns ``audio`` (float32 ``[N]``), ``labels``
        (multi-hot float32 ``[C]``, the ``multi_label`` task's targets), ``tags`` (the class ids present, a
        ``Sequence(ClassLabel)`` over the style names), ``sample_rate`` and ``id`` (``"tags-<index>"``).
    """
    names = list(GENRES if styles is None else styles)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"styles must be a non-empty list of distinct names, got {names!r}")
    for name in names:
        _resolve_style(name)
    for key, value in (("n", n), ("max_styles", max_styles)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    if max_styles > len(names):
        raise ValueError(f"max_styles={max_styles} exceeds the {len(names)} styles available")
    clips, hot, present = [], np.zeros((n, len(names)), np.float32), []
    for i in tqdm(range(n), desc="synthetic tags", unit="clip", disable=not progress):
        rng = np.random.default_rng([seed, _STREAM, i])
        chosen = _draw_styles(names, max_styles, rng)
        ids = [names.index(s) for s in chosen]
        hot[i, ids] = 1.0
        present.append(ids)
        clips.append(render_tags_clip(chosen, seconds, sample_rate, rng))
    features = datasets.Features(
        {
            "audio": datasets.List(datasets.Value("float32")),
            "labels": datasets.List(datasets.Value("float32"), length=len(names)),
            "tags": datasets.List(datasets.ClassLabel(names=names)),
            "sample_rate": datasets.Value("int32"),
            "id": datasets.Value("string"),
        }
    )
    columns = {
        "audio": _audio_column(clips),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(hot.reshape(-1)), len(names)),
        "tags": pa.array(present, pa.list_(pa.int64())),
        "sample_rate": pa.array([sample_rate] * n, pa.int32()),
        "id": pa.array([f"tags-{i:04d}" for i in range(n)]),
    }
    return _to_dataset(columns, features)


def synthetic_tags_splits(
    n: int = 200,
    seconds: float = 10.0,
    sample_rate: int = 32000,
    seed: int = 0,
    max_styles: int = 3,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    progress: bool = True,
) -> datasets.DatasetDict:
    """:func:`synthetic_tags` split at random (seeded) into ``train``/``validation``/``test``.

    Validation and test get ``round(fraction * n)`` clips each (at least one for a non-zero fraction).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    n_val, n_test = (max(int(f > 0), round(f * n)) for f in fractions[1:])
    if n_val + n_test >= n:
        raise ValueError(f"n={n} leaves no training clips with fractions {fractions}")
    ds = synthetic_tags(n, seconds, sample_rate, seed, max_styles, progress=progress)
    order = np.random.default_rng([seed, _STREAM, 7]).permutation(n)
    parts = {
        "validation": order[:n_val],
        "test": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }
    return datasets.DatasetDict({k: ds.select(sorted(v.tolist())) for k, v in parts.items()})


@dataclass
class SyntheticTagsConfig(DataConfig):
    """``data.name=synthetic_tags``: :func:`synthetic_tags_splits` of ``clip_seconds`` clips.

    Attributes:
        n_items: clips (70/15/15 % train/validation/test).
        max_styles: most styles mixed in one clip.
    """

    name: str = "synthetic_tags"
    n_items: int = 200
    max_styles: int = 3


@register_dataset("synthetic_tags", SyntheticTagsConfig)
def build_synthetic_tags(config: SyntheticTagsConfig, sample_rate: int) -> TaskData:
    """Mixtures of the synthetic styles rendered at ``sample_rate``: multi-label, one tag per style."""
    splits = synthetic_tags_splits(
        config.n_items,
        config.clip_seconds,
        sample_rate,
        config.seed,
        config.max_styles,
        progress=config.progress,
    )
    return TaskData(splits, MULTI_LABEL, tuple(GENRES))
