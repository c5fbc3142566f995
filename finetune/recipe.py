"""Run a whole recipe from a :class:`~finetune.config.RecipeConfig`: data, model, training, test evaluation,
and a run directory (resolved config, checkpoints, metrics JSONL/JSON, saved model, plots).

The data set is looked up by ``data.name`` in :mod:`finetune.data.registry` (each loader registers its own;
``DATASETS``, ``TaskData`` and ``register_dataset`` are re-exported here). The scripts in ``recipes/`` and
``python -m finetune demo`` are thin wrappers over :func:`run_recipe`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader

from backbones import get_pretrained_cfg

from .config import RecipeConfig, to_dict
from .data.augment import build_data_augment
from .data.collate import CropCollate
from .data.registry import DATASETS, TaskData, get_dataset, register_dataset
from .descriptors import DescriptorExtractor, descriptor_stats, with_descriptors
from .embeddings import cache_embeddings, collate_embeddings
from .evaluation import predict
from .model import AudioModel, build_model
from .optim import param_groups
from .plots import plot_evaluation, plot_loss_curves
from .train import train

__all__ = ["TaskData", "DATASETS", "register_dataset", "run_recipe"]

logger = logging.getLogger(__name__)


def _window_seconds(cfg: RecipeConfig, model: AudioModel) -> float:
    return cfg.data.crop_seconds or min(cfg.data.clip_seconds, model.backbone.pretrained_cfg.input_seconds)


def run_recipe(cfg: RecipeConfig, accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Train and test the configured model, writing everything under ``cfg.train.output_dir``.

    Returns the test metrics (plus ``best_step`` and paths), which are also written to ``metrics.json``.
    """
    dataset = get_dataset(cfg.data.name)
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
        data = dataset(cfg.data, sample_rate)
    head_config = {"labels": data.names, **cfg.model.head_config}
    extractor = DescriptorExtractor(cfg.model.descriptors) if cfg.model.descriptors else None
    if extractor is not None:  # the hybrid head's descriptor branch
        head_config["descriptor_names"] = extractor.names
    model = build_model(
        cfg.model.backbone,
        head=cfg.model.head,
        num_outputs=cfg.model.num_outputs,
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
    window = _window_seconds(cfg, model)
    augment = build_data_augment(cfg.data.augment, model.sample_rate)
    train_collate = CropCollate(
        model.sample_rate,
        window,
        train=True,
        crops_per_clip=cfg.data.train_crops,
        seed=cfg.data.seed,
        augment=augment.wave,
        stretch=augment.stretch,
    )
    eval_collate = CropCollate(model.sample_rate, window, train=False, crops_per_clip=cfg.data.eval_crops)
    splits = {name: data.splits[name] for name in ("train", "validation", "test")}
    if extractor is not None:
        with accelerator.main_process_first():  # computed once per clip and cached on disk
            splits = with_descriptors(splits, extractor, progress=cfg.train.progress)
        model.head.set_descriptor_stats(*descriptor_stats(splits["train"]))
    if cfg.data.cache_embeddings:
        if cfg.data.augment or model.augment is not None:
            raise ValueError(
                "data.cache_embeddings cannot be combined with data.augment or model.spec_augment / mixup / "
                "specmix (augmented audio and features change)"
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
