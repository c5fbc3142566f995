"""Run a whole recipe from a :class:`~finetune.config.RecipeConfig`: data, model, training, test evaluation,
and a run directory (resolved config, checkpoints, metrics JSONL/JSON, saved model, plots).

The data set is looked up by ``data.name`` in :mod:`finetune.data.registry` (each loader registers its own;
``DATASETS``, ``TaskData`` and ``register_dataset`` are re-exported here). The scripts in ``recipes/`` and
``python -m finetune demo`` are thin wrappers over :func:`run_recipe`.

Before any work, :func:`validate_config` checks what the config alone can tell (backbone name, checkpoint
source, output directory) and the run directory is settled: a run resumes from its latest checkpoint only if
the resolved config matches the one that wrote it on the keys that shape training (``task``, ``model.*``,
``data.*`` and the optimiser/schedule keys of ``train``); otherwise it stops, naming each differing key.
``train.resume=false`` starts over in place after moving the old run's outputs to ``previous/<time>/``.
``config.yaml`` is written only after these checks.

A run says what it did (:mod:`finetune.reporting`): the settings it fitted to the machine and the data (split
sizes, clips per class) when it starts; ``splits.csv`` (which clip went where), ``predictions.csv`` (the test
predictions, per clip), ``skipped.jsonl`` (rows that failed to read), the baselines and the confusion matrix
when it ends. The number of outputs and their names come from the data set. Training windows are read from the
files window by window, ``data.crops_per_track`` times per clip and epoch; the test predicts each clip from
``data.eval_crops`` windows spread over all of it (:mod:`finetune.inference`), and the saved model keeps that
window plan so that ``python -m finetune predict`` gives the same predictions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, gather_object, set_seed
from torch.utils.data import Subset

from backbones import get_pretrained_cfg
from backbones.checkpoints import check_checkpoint_source
from backbones.config import ConfigError, did_you_mean
from backbones.state_dict import CheckpointError

from .calibration import calibration_effect, fit_calibration
from .checkpointing import TRAINING_OUTPUTS, resume_point, set_aside
from .config import RecipeConfig, to_dict
from .data.audio import AudioLoadError, audio_info
from .data.augment import build_data_augment
from .data.collate import CropCollate
from .data.decoded import DecodedCache, wants_cache
from .data.registry import DATASETS, TaskData, get_dataset, register_dataset
from .data.tracks import TrackReader
from .descriptors import DescriptorExtractor, WithDescriptors, descriptor_stats, with_descriptors
from .embeddings import cache_embeddings, collate_embeddings
from .inference import WindowPlan, predict_clips
from .model import AudioModel, build_model
from .optim import param_groups
from .plots import plot_evaluation, plot_loss_curves
from .reporting import baselines, data_summary, row_targets, write_predictions, write_splits
from .train import TrainConfig, train

__all__ = [
    "TaskData",
    "DATASETS",
    "fit_to_machine",
    "register_dataset",
    "run_recipe",
    "run_settings",
    "validate_config",
]

logger = logging.getLogger(__name__)

Echo = Callable[[str], None]

RECIPE_OUTPUTS = ("config.yaml", "model", "metrics.json", "splits.csv", "predictions.csv", "skipped.jsonl")
"""What :func:`run_recipe` writes besides the training loop's outputs (moved aside too when a run starts over)."""


def _window_seconds(cfg: RecipeConfig, model: AudioModel) -> float:
    return cfg.data.crop_seconds or min(cfg.data.clip_seconds, model.backbone.pretrained_cfg.input_seconds)


def validate_config(cfg: RecipeConfig) -> None:
    """Check what can be checked before any work: the backbone is registered, the checkpoint source exists (or
    has the form of a hub id or URL; nothing is downloaded) and the output directory can be written. The typed
    config has already checked keys, types, ranges, the head and the data set's name when it loaded.

    Raises:
        ConfigError: naming the key to fix (``model.backbone``, ``model.checkpoint``, ``train.output_dir``).
    """
    from backbones import list_backbones

    names = list_backbones()
    if cfg.model.backbone not in names:
        raise ConfigError(
            f"model.backbone: unknown backbone {cfg.model.backbone!r}{did_you_mean(cfg.model.backbone, names)}; "
            f"known: {', '.join(names)}"
        )
    if cfg.model.checkpoint is not None:
        try:
            check_checkpoint_source(cfg.model.checkpoint, get_pretrained_cfg(cfg.model.backbone))
        except CheckpointError as e:
            raise ConfigError(f"model.checkpoint: {e}") from e
    out = Path(cfg.train.output_dir).expanduser()
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"train.output_dir: {existing} exists and is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"train.output_dir: cannot write to {existing}; choose another train.output_dir")


def run_settings(cfg: RecipeConfig) -> dict[str, Any]:
    """What besides ``cfg.train`` shapes a run (``task``, ``model``, ``data`` but its
    :attr:`~finetune.data.DataConfig.CHANGEABLE_ON_RESUME` keys): recorded in each checkpoint and compared before
    resuming (see :func:`finetune.checkpointing.resume_point`)."""
    data = {k: v for k, v in to_dict(cfg.data).items() if k not in cfg.data.CHANGEABLE_ON_RESUME}
    return {"task": cfg.task, "model": to_dict(cfg.model), "data": data}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fit_to_machine(config: TrainConfig, echo: Echo = logger.info) -> None:
    """Adjust settings this machine cannot honour, saying so in one line each: data-loader workers are capped
    at the CPU cores of this process (the cores shared by the node's processes), and mixed precision falls back
    to ``"no"`` without a GPU that supports it."""
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cores = max(1, _cores() // processes)
    if config.num_workers > cores:
        echo(f"train.num_workers {config.num_workers} -> {cores}: {cores} CPU core(s) per process here")
        config.num_workers = cores
    cuda = torch.cuda.is_available()
    supported = {"bf16": cuda and torch.cuda.is_bf16_supported(), "fp16": cuda}
    if not supported.get(config.mixed_precision, True):
        echo(
            f"train.mixed_precision {config.mixed_precision} -> no: no GPU here supports {config.mixed_precision}"
        )
        config.mixed_precision = "no"


def _num_outputs(cfg: RecipeConfig, data: TaskData) -> int:
    """The data set's output count; a configured ``model.num_outputs`` must agree with it."""
    given, found = cfg.model.num_outputs, len(data.names)
    if given is not None and given != found:
        shown = ", ".join(data.names[:12]) + (", ..." if found > 12 else "")
        raise ConfigError(
            f"model.num_outputs is {given} but data set {cfg.data.name!r} has {found} outputs ({shown}); leave "
            f"model.num_outputs out to take the count from the data (or set it to {found})"
        )
    return found


def _decode_cache(
    cfg: RecipeConfig, data: TaskData, sample_rate: int, echo: Echo, progress: bool
) -> DecodedCache | None:
    """The decode cache of ``data.decode_cache``, with every file it wants decoded into it (once)."""
    if cfg.data.decode_cache == "off" or "path" not in data.splits["train"].column_names:
        return None
    cache = DecodedCache(sample_rate)
    paths, failed = [], {}
    for split in data.splits.values():
        for path in split.with_format(None)["path"]:
            try:
                if cfg.data.decode_cache == "all" or wants_cache(audio_info(path), cfg.data.decode_cache):
                    paths.append(path)
            except AudioLoadError as e:
                failed[path] = e.reason
    decoded, not_decoded = cache.build(paths, progress=progress)
    failed |= not_decoded
    echo(
        f"decode cache {cache.root}: {len(paths)} file(s) wanted, {decoded} decoded now, {len(failed)} failed"
    )
    return cache


def _predict_split(
    model: AudioModel,
    data: TaskData,
    name: str,
    split: Any,
    plan: WindowPlan,
    reader: TrackReader,
    accelerator: Accelerator,
    batch_size: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """Predict every clip of split ``name`` from its windows (processes share the clips); returns the clips'
    records for ``predictions.csv`` and the raw outputs and targets of the clips that could be read. ``split`` is
    ``data.splits[name]``, or its clips with their descriptors (a hybrid head)."""
    targets = row_targets(data.splits[name], data.task)
    if isinstance(split, WithDescriptors):
        targets = targets[split.indices]
    mine = range(accelerator.process_index, len(split), accelerator.num_processes)
    rows = (split[i] for i in mine)
    results = [
        {
            "index": mine[r.index],
            "name": r.name,
            "path": r.path,
            "windows": r.windows,
            "error": r.error,
            "raw": r.output,
        }
        for r in predict_clips(model, rows, plan, reader, batch_size, progress, total=len(mine))
    ]
    clips = sorted(gather_object(results), key=lambda c: c["index"])
    good = [c for c in clips if c["error"] is None]
    for c in clips:
        c["target"] = targets[c["index"]]
        raw = c.pop("raw")
        c["output"] = None if raw is None else model.probabilities(torch.from_numpy(raw)).numpy()
        c["raw"] = raw
    raw_outputs = np.stack([c["raw"] for c in good]) if good else np.zeros((0, len(data.names)))
    return clips, raw_outputs, targets[[c["index"] for c in good]]


def run_recipe(
    cfg: RecipeConfig, accelerator: Accelerator | None = None, echo: Echo = logger.info
) -> dict[str, Any]:
    """Train and test the configured model, writing everything under ``cfg.train.output_dir``.

    Args:
        echo: Where the run's account of itself goes (adjusted settings, the data summary); the recipe scripts
            print it.

    Returns the test metrics (plus ``best_step``, ``baselines`` and counts of unreadable clips), which are also
    written to ``metrics.json``.

    Raises:
        ConfigError: :func:`validate_config` refused the config, before anything was done, or
            ``model.num_outputs`` disagrees with the data set.
        finetune.checkpointing.ResumeMismatchError: the output directory holds a checkpoint written with other
            settings (nothing is changed on disk).
        ValueError: the head serves another task than the data set's, or the selection metric is not the task's.
    """
    validate_config(cfg)
    dataset = get_dataset(cfg.data.name)
    out = Path(cfg.train.output_dir)
    settings = run_settings(cfg)
    latest = (
        resume_point(out / "checkpoints", cfg.train.resume_settings(settings)) if cfg.train.resume else None
    )
    if accelerator is None:
        fit_to_machine(cfg.train, echo)
        accelerator = Accelerator(
            mixed_precision=cfg.train.mixed_precision,
            gradient_accumulation_steps=cfg.train.grad_accum_steps,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        )
    set_seed(cfg.train.seed)
    main = accelerator.is_main_process
    say = echo if main else (lambda text: None)
    progress = cfg.train.progress and accelerator.is_local_main_process
    if main:
        if latest is None:
            set_aside(out, (*TRAINING_OUTPUTS, *RECIPE_OUTPUTS))
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    sample_rate = get_pretrained_cfg(cfg.model.backbone).sample_rate
    with accelerator.main_process_first():  # data sets may cache to disk: build once, then read
        data = dataset(dataclasses.replace(cfg.data, progress=cfg.data.progress and progress), sample_rate)
        cache = _decode_cache(cfg, data, sample_rate, say, progress)
    num_outputs = _num_outputs(cfg, data)
    if main:
        echo(data_summary(data, cfg.data.name))
        write_splits(data, out / "splits.csv")
    head_config = {"labels": data.names, **cfg.model.head_config}
    extractor = DescriptorExtractor(cfg.model.descriptors) if cfg.model.descriptors else None
    if extractor is not None:  # the hybrid head's descriptor branch
        head_config["descriptor_names"] = extractor.names
    model = build_model(
        cfg.model.backbone,
        head=cfg.model.head,
        num_outputs=num_outputs,
        checkpoint=cfg.model.checkpoint,
        lora=cfg.model.lora,
        freeze=cfg.model.freeze,
        backbone_overrides=cfg.model.backbone_overrides or None,
        spec_augment=cfg.model.spec_augment,
        mixup=cfg.model.mixup,
        specmix=cfg.model.specmix,
        **head_config,
    )
    task = model.task
    if task is not data.task:
        raise ValueError(
            f"the {cfg.model.head!r} head serves the {task.name} task but data set {cfg.data.name!r} is a "
            f"{data.task.name} task; choose a head for {data.task.name} (model.head, model.head_config)"
        )
    task.check_metric(cfg.train.best_metric or task.default_metric)  # before embeddings are cached
    if cfg.calibrate is not None and not task.is_classification:
        raise ConfigError(f"calibrate: calibration applies to classification tasks, not {task.name!r}")
    window = _window_seconds(cfg, model)
    augment = build_data_augment(cfg.data.augment, model.sample_rate)
    reading = {"cache": cache, "skip_log": out / "skipped.jsonl"}
    train_collate = CropCollate(
        model.sample_rate,
        window,
        train=True,
        crops_per_clip=cfg.data.train_crops,
        seed=cfg.data.seed,
        augment=augment.wave,
        stretch=augment.stretch,
        **reading,
    )
    eval_collate = CropCollate(
        model.sample_rate, window, train=False, crops_per_clip=cfg.data.eval_crops, **reading
    )
    splits: dict[str, Any] = {name: data.splits[name] for name in ("train", "validation", "test")}
    if extractor is not None:
        with accelerator.main_process_first():  # computed once per clip and cached on disk
            splits = with_descriptors(splits, extractor, progress=progress)
        model.head.set_descriptor_stats(*descriptor_stats(splits["train"]))
    test_rows = splits.pop("test")
    per_clip = dict(splits)  # one row per clip (the embedding cache and the calibration read each clip once)
    if cfg.data.crops_per_track > 1:  # each clip several times per epoch, each time with new random windows
        tiled = np.tile(np.arange(len(splits["train"])), cfg.data.crops_per_track)
        train_rows = splits["train"]
        splits["train"] = (
            train_rows.select(tiled) if hasattr(train_rows, "select") else Subset(train_rows, tiled)
        )
    if cfg.data.cache_embeddings:
        if cfg.data.augment or model.augment is not None:
            raise ValueError(
                "data.cache_embeddings cannot be combined with data.augment or model.spec_augment / mixup / "
                "specmix (augmented audio and features change)"
            )
        train_windows = CropCollate(
            model.sample_rate, window, train=False, crops_per_clip=cfg.data.train_crops, **reading
        )
        collates = {"train": train_windows, "validation": eval_collate}
        model.to(accelerator.device)
        splits = {
            name: cache_embeddings(
                model, per_clip[name], collates[name], device=accelerator.device, progress=progress
            )
            for name in per_clip
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
        settings=settings,
    )
    unwrapped = accelerator.unwrap_model(model)
    best_dir = out / "best"
    if (best_dir / "config.json").is_file():
        unwrapped.load_state_dict(AudioModel.from_pretrained(best_dir).state_dict())
    plan = WindowPlan(window, crops=cfg.data.eval_crops)
    say(f"test: {plan.describe()}")
    reader, batch_size = (
        TrackReader(model.sample_rate, cache),
        cfg.train.eval_batch_size or cfg.train.batch_size,
    )
    names = list(data.names)
    if cfg.calibrate is not None:
        _, val_outputs, val_targets = _predict_split(
            unwrapped,
            data,
            "validation",
            per_clip["validation"],
            plan,
            reader,
            accelerator,
            batch_size,
            progress,
        )
        unwrapped.calibration = fit_calibration(val_outputs, val_targets, task, cfg.calibrate, labels=names)
        say(f"calibration ({cfg.calibrate}) fitted on {len(val_targets)} validation clips")
    clips, outputs, targets = _predict_split(
        unwrapped, data, "test", test_rows, plan, reader, accelerator, batch_size, progress
    )
    metrics = task.metrics(outputs, targets, names)
    if unwrapped.calibration is not None and len(targets):
        metrics["calibration"] = {
            **unwrapped.calibration.to_dict(),
            "test": calibration_effect(unwrapped.calibration, outputs, targets),
        }
    target_tensor = torch.as_tensor(targets, dtype=torch.float32 if targets.ndim == 2 else torch.int64)
    metrics["loss"] = float(unwrapped.head.loss(torch.from_numpy(outputs).float(), target_tensor))
    metrics.update(best_step=result.best_step, steps=result.step, split="test")
    metrics["baselines"] = baselines(task, row_targets(data.splits["train"], task), targets, names)
    metrics["test_errors"] = {c["name"]: c["error"] for c in clips if c["error"] is not None}
    skipped = out / "skipped.jsonl"
    metrics["skipped_rows"] = len(skipped.read_text().splitlines()) if skipped.is_file() else 0
    if main:
        unwrapped.save_pretrained(out / "model")
        plan.save(out / "model")
        write_predictions(out / "predictions.csv", task, names, clips)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_loss_curves(
            result.history, out / "loss.png", metric=cfg.train.best_metric or task.default_metric
        )
        plot_evaluation(task, outputs, targets, metrics, names, out)
    return metrics


def recipe_main(
    task: str,
    summary: Callable[[RecipeConfig, dict[str, Any]], str],
    description: str,
    argv: list[str] | None = None,
) -> int:
    """The command line of a recipe script: ``--config FILE [--debug] key=value ...``, check the task, run (printing
    what the run adjusts and the data it found), print ``summary(cfg, metrics)`` and the baselines and confusion
    matrix on the main process, and release the process group. Errors follow :func:`finetune.cli.run_command`: a
    message and exit status 2 (config) or 1, the traceback with ``--debug``."""
    import argparse

    from accelerate import PartialState

    from .cli import add_debug_argument, run_command
    from .config import load_config
    from .reporting import run_summary

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help=f"recipe YAML (recipes/configs/{task}_*.yaml)")
    add_debug_argument(parser)
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. data.root=/data/...")
    args = parser.parse_args(argv)

    def run() -> int:
        cfg = load_config(args.config, args.overrides)
        if cfg.task != task:
            parser.error(f"{args.config} is a {cfg.task!r} recipe; this script runs {task!r} recipes")
        state = PartialState()
        metrics = run_recipe(cfg, echo=print if state.is_main_process else lambda text: None)
        if state.is_main_process:
            print(summary(cfg, metrics))
            print(run_summary(metrics))
        state.destroy_process_group()
        return 0

    return run_command(run, debug=args.debug)
