"""Fixtures of the benchmark tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eval.benchmark import tasks as bench_tasks
from eval.benchmark.tasks import register_benchmark_task
from finetune.data import registry
from finetune.data.registry import register_dataset
from tests.eval.benchmark.helpers import TonesConfig, build_tones, tones_task


@pytest.fixture
def tones() -> Iterator[None]:
    """Register ``bench_tones`` and the benchmark tasks ``tones``, ``tones_multi`` and ``tones_rating``."""
    saved_data, saved_tasks = dict(registry._DATASETS), dict(bench_tasks._TASKS)
    register_dataset("bench_tones", TonesConfig)(build_tones)
    register_benchmark_task(tones_task())
    register_benchmark_task(tones_task("tones_multi", "multi"))
    register_benchmark_task(tones_task("tones_rating", "rating"))
    yield
    registry._DATASETS.clear()
    registry._DATASETS.update(saved_data)
    bench_tasks._TASKS.clear()
    bench_tasks._TASKS.update(saved_tasks)
