"""Benchmark tasks: the registered set, lookups with suggestions, folder/manifest specs, registration rules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eval.benchmark import tasks as bench_tasks
from eval.benchmark.tasks import (
    BENCHMARK_TASKS,
    BenchmarkTask,
    get_benchmark_task,
    list_benchmark_tasks,
    register_benchmark_task,
)
from finetune.data.registry import DATASETS, DataConfig


@pytest.fixture
def scratch_tasks() -> Iterator[None]:
    saved = dict(bench_tasks._TASKS)
    yield
    bench_tasks._TASKS.clear()
    bench_tasks._TASKS.update(saved)


def test_the_registered_tasks_name_real_data_sets_and_valid_settings() -> None:
    assert list_benchmark_tasks() == [
        "fma_small",
        "gtzan",
        "gtzan_10fold",
        "percepiano_composition",
        "percepiano_excerpt",
        "percepiano_performer",
        "synthetic_genres",
        "synthetic_piano",
        "synthetic_tags",
    ]
    for task in BENCHMARK_TASKS.values():
        assert task.dataset in DATASETS
        config = DataConfig.from_dict({"name": task.dataset, **task.settings}, "data")
        assert type(config) is DATASETS[task.dataset].config_cls
    rotation = get_benchmark_task("gtzan_10fold")
    assert (rotation.protocol, rotation.n_folds, rotation.settings["split"]) == ("rotation", 10, "random")
    piano = get_benchmark_task("percepiano_performer")
    assert (piano.protocol, piano.n_folds, piano.baselines) == (
        "loader_folds",
        4,
        ("majority", "spectral", "midi"),
    )
    assert get_benchmark_task("synthetic_tags").metric == "map"


def test_folder_and_manifest_specs_make_tasks() -> None:
    folder = get_benchmark_task("folder:/data/my genres")
    assert (folder.dataset, folder.settings["root"], folder.metric) == (
        "folder",
        "/data/my genres",
        "accuracy",
    )
    assert (
        folder.slug.startswith("folder_data_my_genres-")
        and len(folder.slug) == len("folder_data_my_genres-") + 8
    )
    manifest = get_benchmark_task("manifest:/data/list.csv")
    assert (manifest.dataset, manifest.settings["labels"]) == ("manifest", "/data/list.csv")
    with pytest.raises(KeyError, match="task spec 'folder:' needs a path after 'folder:'"):
        get_benchmark_task("folder:")
    with pytest.raises(
        KeyError, match=r"unknown benchmark task 'synthetic_genre' \(did you mean 'synthetic_genres'\?\)"
    ):
        get_benchmark_task("synthetic_genre")


@pytest.mark.usefixtures("scratch_tasks")
def test_registration_rules() -> None:
    task = BenchmarkTask("mine", "folder", {"root": "/x"}, "accuracy", "genre")
    assert register_benchmark_task(task) is task and get_benchmark_task("mine") is task
    with pytest.raises(ValueError, match="benchmark task 'mine' is registered twice"):
        register_benchmark_task(task)
    with pytest.raises(ValueError, match="task name 'a:b': ':' is reserved for specs such as folder:/path"):
        register_benchmark_task(BenchmarkTask("a:b", "folder", {}, "accuracy", "genre"))
    with pytest.raises(ValueError, match="task 'x': n_folds must be >= 1, got 0"):
        BenchmarkTask("x", "folder", {}, "accuracy", "genre", protocol="rotation", n_folds=0)
    changed = task.with_settings(root="/y", eval_crops=2)
    assert dict(changed.settings) == {"root": "/y", "eval_crops": 2} and task.settings["root"] == "/x"
    with pytest.raises(TypeError):
        task.settings["root"] = "/z"  # type: ignore[index]
