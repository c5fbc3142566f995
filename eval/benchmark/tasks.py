"""Benchmark tasks: one registered entry per task, naming its data set and settings, its protocol (fixed split
or folds), its window and crop settings, its headline metric and the recipe configs its fine-tuning cells start
from.

A task is data only (:class:`BenchmarkTask`); turning it into train/validation/test views is the protocol's job
(:mod:`.protocols`). Besides the registered names, ``folder:/path`` and ``manifest:/path.csv`` make a task from
any class-per-folder tree or manifest (:data:`TASK_FACTORIES`).

Add a task with::

    register_benchmark_task(BenchmarkTask(
        name="my_genres", dataset="folder", settings={"root": "/data/mine", "clip_seconds": 30.0},
        metric="accuracy", recipe="genre", description="my own genre folders"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from backbones.config import did_you_mean

__all__ = [
    "BENCHMARK_TASKS",
    "TASK_FACTORIES",
    "BenchmarkTask",
    "get_benchmark_task",
    "list_benchmark_tasks",
    "register_benchmark_task",
    "register_task_factory",
]


@dataclass(frozen=True)
class BenchmarkTask:
    """What one benchmark task measures and how.

    Attributes:
        name: registry name; also the results' task column.
        dataset: a registered data set (:data:`finetune.data.registry.DATASETS`).
        settings: that data set's config keys, including the shared window settings (``clip_seconds``,
            ``crop_seconds``, ``train_crops``, ``eval_crops``) and the data ``seed``.
        metric: the headline metric: the comparison chart's, and what probes and fine-tuning select on.
        recipe: recipe config family of the ``lora``/``full`` cells (``genre``, ``piano``): configs are read
            from ``recipes/configs/`` as :attr:`recipe_config` names them.
        protocol: a registered protocol (:data:`eval.benchmark.protocols.PROTOCOLS`): ``fixed`` (the data
            set's own split), ``rotation`` (pooled clips in ``n_folds`` stratified folds; test fold i,
            validation fold i+1, train on the rest) or ``loader_folds`` (the loader's ``fold_index`` 0..n-1).
        n_folds: folds of a fold protocol (1 for ``fixed``).
        recipe_config: file name pattern under ``recipes/configs/``; ``{family}`` (``ast``, ``passt``,
            ``cnn14``) and ``{mode}`` (``lora``, ``full``) are filled in.
        baselines: baseline rows beside the models (:data:`eval.benchmark.baselines.BASELINES`).
        size_key: the data setting ``--clips-per-class`` sets for generated data sets (None: not generated).
        size_per_class: ``size_key = clips_per_class * size_per_class``.
        description: one line for the report.
    """

    name: str
    dataset: str
    settings: Mapping[str, Any]
    metric: str
    recipe: str
    protocol: str = "fixed"
    n_folds: int = 1
    recipe_config: str = "genre_{family}_{mode}.yaml"
    baselines: tuple[str, ...] = ("majority", "spectral")
    size_key: str | None = None
    size_per_class: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))
        if self.n_folds < 1:
            raise ValueError(f"task {self.name!r}: n_folds must be >= 1, got {self.n_folds}")
        if self.protocol == "fixed" and self.n_folds != 1:
            raise ValueError(
                f"task {self.name!r}: the fixed protocol has one fold, got n_folds={self.n_folds}"
            )

    def with_settings(self, **settings: Any) -> BenchmarkTask:
        """A copy whose data settings are updated with ``settings``."""
        return dataclasses.replace(self, settings={**self.settings, **settings})

    @property
    def slug(self) -> str:
        """A file-name-safe form of :attr:`name` (a hash suffix where characters were replaced)."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("_")
        if safe == self.name:
            return safe
        return f"{safe[-40:]}-{hashlib.sha1(self.name.encode()).hexdigest()[:8]}"


_TASKS: dict[str, BenchmarkTask] = {}
BENCHMARK_TASKS: Mapping[str, BenchmarkTask] = MappingProxyType(_TASKS)
"""Registered benchmark tasks by name (read-only; add one with :func:`register_benchmark_task`)."""

TaskFactory = Callable[[str], BenchmarkTask]
_FACTORIES: dict[str, TaskFactory] = {}
TASK_FACTORIES: Mapping[str, TaskFactory] = MappingProxyType(_FACTORIES)
"""``prefix -> factory(argument)`` for task specs of the form ``prefix:argument`` (``folder:/data/x``)."""


def register_benchmark_task(task: BenchmarkTask) -> BenchmarkTask:
    """Register ``task`` under its name.

    Raises:
        ValueError: the name is taken or contains ``:`` (reserved for factories).
    """
    if ":" in task.name:
        raise ValueError(f"task name {task.name!r}: ':' is reserved for specs such as folder:/path")
    if task.name in _TASKS:
        raise ValueError(f"benchmark task {task.name!r} is registered twice")
    _TASKS[task.name] = task
    return task


def register_task_factory(prefix: str) -> Callable[[TaskFactory], TaskFactory]:
    """Decorator: ``prefix:argument`` specs build their task with the decorated ``factory(argument)``."""

    def decorator(factory: TaskFactory) -> TaskFactory:
        if prefix in _FACTORIES:
            raise ValueError(f"task factory {prefix!r} is registered twice")
        _FACTORIES[prefix] = factory
        return factory

    return decorator


def list_benchmark_tasks() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def get_benchmark_task(spec: str) -> BenchmarkTask:
    """The task a spec names: a registered name, or ``prefix:argument`` for a factory (``folder:/data/x``).

    Raises:
        KeyError: unknown name or prefix; the message suggests the closest name and lists them all.
    """
    prefix, sep, argument = spec.partition(":")
    if sep and prefix in _FACTORIES:
        if not argument:
            raise KeyError(f"task spec {spec!r} needs a path after '{prefix}:'")
        return _FACTORIES[prefix](argument)
    if spec not in _TASKS:
        known = list_benchmark_tasks() + [f"{p}:PATH" for p in sorted(_FACTORIES)]
        raise KeyError(
            f"unknown benchmark task {spec!r}{did_you_mean(spec, _TASKS)}; known: {', '.join(known)}"
        )
    return _TASKS[spec]


@register_task_factory("folder")
def folder_task(path: str) -> BenchmarkTask:
    """A class-per-folder tree (``finetune.data.load_audio_folder``): genres-like, its own or a random split."""
    return BenchmarkTask(
        name=f"folder:{path}",
        dataset="folder",
        settings={"root": str(Path(path).expanduser()), "clip_seconds": 30.0, "eval_crops": 3},
        metric="accuracy",
        recipe="genre",
        description=f"class-per-folder audio under {Path(path).name}",
    )


@register_task_factory("manifest")
def manifest_task(path: str) -> BenchmarkTask:
    """A CSV/TSV/JSONL manifest with a ``label`` column (``finetune.data.load_manifest``); for rating columns,
    register a task with ``rating_columns`` (or pass ``--data rating_columns=[...] --data label_column=null``)."""
    return BenchmarkTask(
        name=f"manifest:{path}",
        dataset="manifest",
        settings={"labels": str(Path(path).expanduser()), "clip_seconds": 30.0, "eval_crops": 3},
        metric="accuracy",
        recipe="genre",
        description=f"clips listed in {Path(path).name}",
    )


def _percepiano(piano: dict[str, Any], fold: str, config_fold: str, keeps_apart: str) -> BenchmarkTask:
    """A PercePiano task on one fold protocol (:mod:`finetune.data.percepiano_folds`); its fine-tuning cells start
    from the recipe configs of ``config_fold`` (the data section is the suite's, so only the model and training
    sections matter)."""
    return BenchmarkTask(
        f"percepiano_{fold}",
        "percepiano",
        {**piano, "fold": fold},
        "mean_r2",
        "piano",
        protocol="loader_folds",
        n_folds=4,
        recipe_config=f"piano_{{family}}_{{mode}}_{config_fold}.yaml",
        baselines=("majority", "spectral", "midi"),
        description=f"PercePiano, 19 ratings, {fold} folds (4; fixed test set; {keeps_apart}), MIDI rendered to audio",
    )


def _register_builtin() -> None:
    synthetic = {"clip_seconds": 6.0, "crop_seconds": 4.0, "eval_crops": 1, "seed": 0}
    gtzan = {"clip_seconds": 30.0, "eval_crops": 3, "seed": 0}
    piano = {"clip_seconds": 10.0, "eval_crops": 3, "seed": 0, "n_folds": 4}
    for task in (
        BenchmarkTask(
            "synthetic_genres",
            "synthetic_genres",
            {**synthetic, "n_per_class": 24},
            "accuracy",
            "genre",
            recipe_config="genre_synthetic_{family}_{mode}.yaml",
            size_key="n_per_class",
            description="10 synthetic styles, 70/15/15 split per style (no data needed)",
        ),
        BenchmarkTask(
            "synthetic_tags",
            "synthetic_tags",
            {**synthetic, "n_items": 240},
            "map",
            "genre",
            recipe_config="genre_synthetic_{family}_{mode}.yaml",
            size_key="n_items",
            size_per_class=10,
            description="mixtures of 1-3 synthetic styles tagged with the styles present (multi-label)",
        ),
        BenchmarkTask(
            "synthetic_piano",
            "synthetic_piano",
            {"clip_seconds": 6.0, "crop_seconds": 4.0, "eval_crops": 1, "seed": 0, "n_items": 200},
            "mean_r2",
            "piano",
            recipe_config="piano_synthetic_{family}_{mode}.yaml",
            description="synthetic piano performances with 19 PercePiano-style ratings, split by performer",
        ),
        BenchmarkTask(
            "gtzan",
            "gtzan",
            {**gtzan, "split": "fault_filtered"},
            "accuracy",
            "genre",
            description="GTZAN, fault-filtered artist-conscious split (Kereliuk et al. 2015; 443/197/290)",
        ),
        BenchmarkTask(
            "gtzan_10fold",
            "gtzan",
            {**gtzan, "split": "random"},
            "accuracy",
            "genre",
            protocol="rotation",
            n_folds=10,
            description="GTZAN, 10 genre-stratified folds, HEAR-style rotation (test i, validation i+1)",
        ),
        BenchmarkTask(
            "fma_small",
            "fma",
            {"subset": "small", "clip_seconds": 30.0, "eval_crops": 3, "seed": 0},
            "accuracy",
            "genre",
            description="FMA-small, 8 genres, the official split",
        ),
        *(
            _percepiano(piano, fold, config_fold, keeps_apart)
            for fold, config_fold, keeps_apart in (
                ("excerpt", "excerpt", "the same bars never in two splits"),
                ("composition", "excerpt", "a piece never in two splits"),
                ("performer", "performer", "a player never in two splits"),
            )
        ),
    ):
        register_benchmark_task(task)


_register_builtin()
