"""Run a whole recipe from a :class:`~finetune.config.RecipeConfig`: data, model, training, test evaluation,
and a run directory (resolved config, checkpoints, metrics JSONL/JSON, saved model, plots).

The scripts in ``recipes/`` and ``python -m finetune demo`` are thin wrappers over :func:`run_recipe`.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from datasets import DatasetDict
from torch.utils.data import DataLoader

from backbones import get_pretrained_cfg
from heads.tasks import RATING, SINGLE_LABEL, Task

from .config import DataConfig, RecipeConfig, to_dict
from .data.augment import build_wave_augment
from .data.collate import CropCollate
from .embeddings import cache_embeddings, collate_embeddings
from .evaluation import predict
from .model import AudioModel, build_model
from .optim import param_groups
from .plots import plot_evaluation, plot_loss_curves
from .train import train

__all__ = ["TaskData", "DATASETS", "register_dataset", "run_recipe"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskData:
    """A loaded data set: ``train``/``validation``/``test`` splits, its task (:mod:`heads.tasks`), and the
    output names (classes or rating dimensions)."""

    splits: DatasetDict
    task: Task
    names: tuple[str, ...]


DatasetBuilder = Callable[[DataConfig, int], TaskData]
DATASETS: dict[str, DatasetBuilder] = {}


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Register ``builder(data_config, sample_rate) -> TaskData`` under ``name`` (``data.name`` in configs)."""

    def decorator(fn: DatasetBuilder) -> DatasetBuilder:
        if name in DATASETS:
            raise ValueError(f"data set {name!r} is registered twice")
        DATASETS[name] = fn
        return fn

    return decorator


@register_dataset("synthetic_genres")
def _synthetic_genres(cfg: DataConfig, sample_rate: int) -> TaskData:
    from .data.synthetic import synthetic_genres_splits

    splits = synthetic_genres_splits(cfg.n_per_class, cfg.clip_seconds, sample_rate, cfg.seed)
    return TaskData(splits, SINGLE_LABEL, tuple(splits["train"].features["label"].names))


@register_dataset("synthetic_piano")
def _synthetic_piano(cfg: DataConfig, sample_rate: int) -> TaskData:
    from heads.rating import PERCEPIANO_DIMENSIONS

    from .data.synthetic import synthetic_piano

    ds = synthetic_piano(cfg.n_items, cfg.clip_seconds, sample_rate, cfg.seed)
    performers = np.asarray(ds["performer"])
    held_out = np.unique(performers)
    rng = np.random.default_rng(cfg.seed)
    rng.shuffle(held_out)
    k = max(1, len(held_out) // 6)
    val_p, test_p = set(held_out[:k].tolist()), set(held_out[k : 2 * k].tolist())
    idx = np.arange(len(ds))
    splits = DatasetDict(
        train=ds.select(idx[[p not in val_p | test_p for p in performers]]),
        validation=ds.select(idx[[p in val_p for p in performers]]),
        test=ds.select(idx[[p in test_p for p in performers]]),
    )
    return TaskData(splits, RATING, tuple(PERCEPIANO_DIMENSIONS))


def _required(value: str | None, key: str, name: str, what: str) -> Path:
    if value is None:
        raise ValueError(f"data set {name!r} needs {key}: {what} (pass {key}=/path/to/...)")
    return Path(value).expanduser()


def _load(loader: Callable[..., DatasetDict], defaults: dict[str, Any], cfg: DataConfig) -> DatasetDict:
    """Call ``loader`` with the recipe's arguments, overridden and extended by ``data.options``."""
    accepted = inspect.signature(loader).parameters
    unknown = sorted(set(cfg.options) - set(accepted))
    if unknown:
        raise ValueError(
            f"data.options has key(s) {', '.join(unknown)} that {loader.__name__} does not take; "
            f"it takes: {', '.join(accepted)}"
        )
    return loader(**{**defaults, **cfg.options})


def _with_validation(splits: DatasetDict, name: str) -> DatasetDict:
    missing = [s for s in ("train", "validation", "test") if s not in splits]
    if missing:
        raise ValueError(
            f"data set {name!r} gave the splits {sorted(splits)}; a recipe needs train, validation and test "
            f"(missing: {', '.join(missing)})"
        )
    return splits


@register_dataset("gtzan")
def _gtzan(cfg: DataConfig, sample_rate: int) -> TaskData:
    from .data.gtzan import load_gtzan

    root = _required(cfg.root, "data.root", "gtzan", "the GTZAN folder (genres/ or genres_original/)")
    defaults = {
        "root": root,
        "split": cfg.split,
        "splits_dir": cfg.splits_dir,
        "fold_index": cfg.fold_index,
        "seed": cfg.seed,
        "sample_rate": sample_rate,
    }
    splits = _with_validation(_load(load_gtzan, defaults, cfg), "gtzan")
    return TaskData(splits, SINGLE_LABEL, tuple(splits["train"].features["label"].names))


# The official mean-rating file of PercePiano, looked for in data.root when data.labels is not given.
_PERCEPIANO_LABELS = "label_2round_mean_reg_19_with0_rm_highstd0.json"


@register_dataset("percepiano")
def _percepiano(cfg: DataConfig, sample_rate: int) -> TaskData:
    from .data.percepiano import PERCEPIANO_DIMENSIONS, load_percepiano

    root = _required(
        cfg.root,
        "data.root",
        "percepiano",
        "the folder with the segments' audio and/or MIDI files (or midi/)",
    )
    defaults = {
        "labels": Path(cfg.labels).expanduser() if cfg.labels is not None else root / _PERCEPIANO_LABELS,
        "audio_dir": root,
        "midi_dir": root / "midi" if (root / "midi").is_dir() else root,
        "fold": cfg.fold,
        "fold_index": cfg.fold_index,
        "seed": cfg.seed,
        "sample_rate": sample_rate,
    }
    splits = _load(load_percepiano, defaults, cfg)
    return TaskData(splits, RATING, tuple(PERCEPIANO_DIMENSIONS))


@register_dataset("folder")
def _folder(cfg: DataConfig, sample_rate: int) -> TaskData:
    from .data.folder import load_audio_folder

    root = _required(cfg.root, "data.root", "folder", "the folder of class folders")
    splits = _load(load_audio_folder, {"root": root, "seed": cfg.seed, "sample_rate": sample_rate}, cfg)
    return TaskData(splits, SINGLE_LABEL, tuple(splits["train"].features["label"].names))


@register_dataset("manifest")
def _manifest(cfg: DataConfig, sample_rate: int) -> TaskData:
    from .data.folder import load_manifest

    path = _required(cfg.labels, "data.labels", "manifest", "the CSV/TSV/JSONL manifest")
    defaults = {
        "path": path,
        "audio_root": Path(cfg.root).expanduser() if cfg.root is not None else None,
        "seed": cfg.seed,
        "sample_rate": sample_rate,
    }
    splits = _load(load_manifest, defaults, cfg)
    features = splits["train"].features
    if "label" in features and "ratings" in features:
        raise ValueError(
            "the manifest was loaded with labels and ratings; a recipe learns one of them: set "
            "data.options.label_column=null (ratings) or leave out data.options.rating_columns (labels)"
        )
    if "label" in features:
        return TaskData(splits, SINGLE_LABEL, tuple(features["label"].names))
    return TaskData(splits, RATING, tuple(cfg.options["rating_columns"]))


def _window_seconds(cfg: RecipeConfig, model: AudioModel) -> float:
    return cfg.data.crop_seconds or min(cfg.data.clip_seconds, model.backbone.pretrained_cfg.input_seconds)


def run_recipe(cfg: RecipeConfig, accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Train and test the configured model, writing everything under ``cfg.train.output_dir``.

    Returns the test metrics (plus ``best_step`` and paths), which are also written to ``metrics.json``.
    """
    if cfg.data.name not in DATASETS:
        raise KeyError(f"unknown data set {cfg.data.name!r}; known: {', '.join(sorted(DATASETS))}")
    out = Path(cfg.train.output_dir)
    accelerator = accelerator or Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.grad_accum_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(cfg.train.seed)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    sample_rate = get_pretrained_cfg(cfg.model.backbone).sample_rate
    with accelerator.main_process_first():  # data sets may cache to disk: build once, then read
        data = DATASETS[cfg.data.name](cfg.data, sample_rate)
    head_config = {"labels": data.names, **cfg.model.head_config}
    model = build_model(
        cfg.model.backbone,
        head=cfg.model.head,
        num_outputs=cfg.model.num_outputs,
        checkpoint=cfg.model.checkpoint,
        lora=cfg.model.lora,
        freeze=cfg.model.freeze,
        backbone_overrides=cfg.model.backbone_overrides or None,
        **head_config,
    )
    task = model.task
    if task is not data.task:
        raise ValueError(
            f"the {cfg.model.head!r} head serves the {task.name} task but data set {cfg.data.name!r} is a "
            f"{data.task.name} task; choose a head for {data.task.name} (model.head, model.head_config)"
        )
    task.check_metric(cfg.train.best_metric or task.default_metric)  # before embeddings are cached
    window = _window_seconds(cfg, model)
    augment = build_wave_augment(cfg.data.augment, model.sample_rate) if cfg.data.augment else None
    train_collate = CropCollate(
        model.sample_rate,
        window,
        train=True,
        crops_per_clip=cfg.data.train_crops,
        seed=cfg.data.seed,
        augment=augment,
    )
    eval_collate = CropCollate(model.sample_rate, window, train=False, crops_per_clip=cfg.data.eval_crops)
    splits = {name: data.splits[name] for name in ("train", "validation", "test")}
    if cfg.data.cache_embeddings:
        if augment is not None:
            raise ValueError(
                "data.cache_embeddings cannot be combined with data.augment (augmented audio changes)"
            )
        train_windows = CropCollate(
            model.sample_rate, window, train=False, crops_per_clip=cfg.data.train_crops
        )
        collates = {"train": train_windows, "validation": eval_collate, "test": eval_collate}
        model.to(accelerator.device)
        splits = {
            name: cache_embeddings(
                model, ds, collates[name], device=accelerator.device, progress=cfg.train.progress
            )
            for name, ds in splits.items()
        }
        train_collate = eval_collate = collate_embeddings
    groups = param_groups(model, cfg.train.lr, cfg.train.weight_decay, cfg.train.layer_decay)
    result = train(
        model,
        splits["train"],
        splits["validation"],
        cfg.train,
        train_collate,
        eval_collate,
        class_names=data.names,
        param_groups=groups,
        accelerator=accelerator,
    )
    unwrapped = accelerator.unwrap_model(model)
    best_dir = out / "best"
    if (best_dir / "config.json").is_file():
        unwrapped.load_state_dict(AudioModel.from_pretrained(best_dir).state_dict())
    test_loader = accelerator.prepare(
        DataLoader(
            splits["test"],
            batch_size=cfg.train.eval_batch_size or cfg.train.batch_size,
            collate_fn=eval_collate,
        )
    )
    test = predict(unwrapped, test_loader, accelerator, task)
    names = list(data.names)
    metrics = test.metrics(task, names)
    metrics.update(best_step=result.best_step, steps=result.step, split="test")
    if accelerator.is_main_process:
        unwrapped.save_pretrained(out / "model")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_loss_curves(
            result.history, out / "loss.png", metric=cfg.train.best_metric or task.default_metric
        )
        plot_evaluation(task, test.predictions, test.targets, metrics, names, out)
    return metrics


def recipe_main(
    task: str,
    summary: Callable[[RecipeConfig, dict[str, Any]], str],
    description: str,
    argv: list[str] | None = None,
) -> int:
    """The command line of a recipe script: ``--config FILE key=value ...``, check the task, run, print
    ``summary(cfg, metrics)`` on the main process, and release the process group."""
    import argparse

    from accelerate import PartialState

    from .config import load_config

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help=f"recipe YAML (recipes/configs/{task}_*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. data.root=/data/...")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.task != task:
        parser.error(f"{args.config} is a {cfg.task!r} recipe; this script runs {task!r} recipes")
    metrics = run_recipe(cfg)
    state = PartialState()
    if state.is_main_process:
        print(summary(cfg, metrics))
    state.destroy_process_group()
    return 0
