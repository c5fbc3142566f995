"""A fast stand-in data set for the benchmark tests: one-second tones, single-label, multi-label or ratings.

Class ``c`` is a sine at ``TONES[c]`` Hz; a multi-label clip mixes the tones of its tags; a rating clip's two
targets are its tone's loudness and pitch (scaled to [0, 1]). Everything follows from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np

from eval.benchmark.tasks import BenchmarkTask
from finetune.data.registry import DataConfig, TaskData
from heads.tasks import MULTI_LABEL, RATING, SINGLE_LABEL

TONES = (220.0, 440.0, 880.0)
NAMES = ("low", "mid", "high")


def tone_rows(kind: str, n: int, sample_rate: int, seconds: float, seed: int) -> dict[str, list]:
    """Columns of ``n`` tone clips of one ``kind`` (``single``, ``multi`` or ``rating``)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rows: dict[str, list] = {"audio": [], "sample_rate": [], "id": []}
    target_key = {"single": "label", "multi": "labels", "rating": "ratings"}[kind]
    rows[target_key] = []
    for i in range(n):
        if kind == "multi":
            hot = (rng.random(3) < 0.5).astype(np.float32)
            hot[i % 3] = 1.0
            wave = sum(np.sin(2 * np.pi * TONES[c] * t) for c in np.flatnonzero(hot))
            target = hot
        elif kind == "rating":
            c, gain = i % 3, rng.uniform(0.1, 1.0)
            wave = gain * np.sin(2 * np.pi * TONES[c] * t)
            target = np.array([gain, c / 2], dtype=np.float32)
        else:
            c = i % 3
            wave = np.sin(2 * np.pi * TONES[c] * t)
            target = c
        wave = 0.3 * wave + 0.05 * rng.standard_normal(len(t))
        rows["audio"].append(wave.astype(np.float32))
        rows["sample_rate"].append(sample_rate)
        rows["id"].append(f"{kind}-{seed}-{i:03d}")
        rows[target_key].append(target)
    return rows


@dataclass
class TonesConfig(DataConfig):
    """``data.name=bench_tones``: ``n_per_split`` clips per split of one ``kind``."""

    name: str = "bench_tones"
    kind: str = "single"
    n_per_split: int = 9
    clip_seconds: float = 1.0


def build_tones(config: TonesConfig, sample_rate: int) -> TaskData:
    splits = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                tone_rows(config.kind, config.n_per_split, sample_rate, config.clip_seconds, config.seed + k)
            ).with_format("numpy")
            for k, split in enumerate(("train", "validation", "test"))
        }
    )
    task = {"single": SINGLE_LABEL, "multi": MULTI_LABEL, "rating": RATING}[config.kind]
    names = NAMES if config.kind != "rating" else ("loudness", "pitch")
    return TaskData(splits, task, names)


def tones_task(name: str = "tones", kind: str = "single", **settings: object) -> BenchmarkTask:
    metric = {"single": "accuracy", "multi": "map", "rating": "mean_r2"}[kind]
    recipe = "piano" if kind == "rating" else "genre"
    return BenchmarkTask(
        name,
        "bench_tones",
        {"kind": kind, "clip_seconds": 1.0, "crop_seconds": 0.5, **settings},
        metric,
        recipe,
        recipe_config=f"{recipe}_synthetic_{{family}}_{{mode}}.yaml",
        description="test tones",
    )
