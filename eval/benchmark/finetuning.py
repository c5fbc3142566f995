"""``lora`` and ``full`` cells: the library's training loop, started from the recipe configs.

The model and training sections come from ``recipes/configs/`` (the task's :attr:`~.tasks.BenchmarkTask.
recipe_config` pattern, e.g. ``genre_synthetic_cnn14_lora.yaml``); the suite overrides the backbone, its
checkpoint, the seed, the output folder, the number of outputs (from the data), the selection metric (the task's
headline metric), and on request the steps (``eval_every`` and ``save_every`` scaled alike, so a shorter run
evaluates as often), the data-loading workers and any other model or training key (``--recipe train.lr=3e-3``:
the recipes' rates are for fine-tuning released weights; random-init backbones want a from-scratch rate). The
data, window and crops are the task's, not the config's data section. The loop selects its best checkpoint on the validation split; the cell then
predicts the validation clips (for calibration) and the test clips with that checkpoint, and deletes the
intermediate training checkpoints (the best model stays in the cell's ``train/best``).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from backbones import get_pretrained_cfg
from finetune import AudioModel, build_model, param_groups
from finetune.config import RecipeConfig, load_config, to_dict
from finetune.data import CropCollate
from finetune.evaluation import predict
from finetune.train import train

from .data import Fold, TaskCollate
from .features import window_seconds
from .tasks import BenchmarkTask

__all__ = ["RECIPE_FAMILIES", "FinetuneOptions", "check_recipe_overrides", "finetune_cell", "recipe_config"]

RECIPE_FAMILIES: Mapping[str, str] = {"ast": "ast", "passt_s": "passt", "cnn14": "cnn14"}
"""Backbone family -> the family word in recipe config names."""


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    """What the command line may change in a recipe: ``steps`` (``train.max_steps``), ``workers``
    (``train.num_workers``), ``device`` (``cpu`` forces the CPU and full precision), ``progress`` bars, and
    ``recipe`` overrides (``key.sub=value`` of the model and train sections, see :func:`check_recipe_overrides`)."""

    steps: int | None = None
    workers: int | None = None
    device: str = "auto"
    progress: bool = True
    recipe: tuple[str, ...] = ()


# Keys a cell sets itself (from its grid point, its data or another option), so an override would be lost.
_SET_BY_THE_SUITE: Mapping[str, str] = {
    "model.backbone": "--backbones",
    "model.checkpoint": "--checkpoint",
    "model.num_outputs": "the task's data",
    "train.seed": "--seeds",
    "train.output_dir": "--out",
    "train.best_metric": "the task's headline metric",
    "train.max_steps": "--steps",
    "train.num_workers": "--workers",
}


def check_recipe_overrides(overrides: Sequence[str]) -> tuple[str, ...]:
    """Validate ``key.sub=value`` recipe overrides before any cell runs; returns them as a tuple.

    Only the ``model`` and ``train`` sections are the recipe's in a cell (the data, window and crops are the
    task's), and keys a cell sets itself are named with the option that sets them.

    Raises:
        ValueError: a ``data``/``task`` key or a key the suite sets (the message names the option to use).
        ConfigError: a malformed override, an unknown key or a bad value.
    """
    for override in overrides:
        key = override.partition("=")[0].strip()
        section = key.split(".", 1)[0]
        if section not in ("model", "train"):
            raise ValueError(
                f"--recipe {override!r}: only model.* and train.* keys apply to a cell"
                + (" (data settings: --data)" if section == "data" else "")
            )
        if key in _SET_BY_THE_SUITE:
            raise ValueError(f"--recipe {override!r}: {key} is set by {_SET_BY_THE_SUITE[key]}")
    load_config(None, list(overrides))  # unknown keys and bad values fail here, with the config's message
    return tuple(overrides)


def recipe_config(
    task: BenchmarkTask, backbone: str, mode: str, overrides: Sequence[str] = ()
) -> tuple[str, RecipeConfig]:
    """The recipe config a ``mode`` cell of ``backbone`` on ``task`` starts from (with ``key.sub=value``
    ``overrides`` applied), and its file name.

    Raises:
        ValueError: no recipe family for the backbone's family.
        FileNotFoundError: no such config file (the message names it).
    """
    family = get_pretrained_cfg(backbone).family
    if family not in RECIPE_FAMILIES:
        raise ValueError(
            f"no recipe configs for backbone family {family!r} ({backbone}); known: {', '.join(RECIPE_FAMILIES)}"
        )
    name = task.recipe_config.format(family=RECIPE_FAMILIES[family], mode=mode)
    path = importlib.resources.files("recipes") / "configs" / name
    if not path.is_file():
        raise FileNotFoundError(f"recipe config {name} not found in the recipes package (task {task.name!r})")
    return name, load_config(path, list(overrides))


def _adapt(
    cfg: RecipeConfig,
    task: BenchmarkTask,
    fold: Fold,
    backbone: str,
    checkpoint: str | None,
    seed: int,
    out: Path,
    opts: FinetuneOptions,
) -> RecipeConfig:
    """The recipe config with the cell's backbone, checkpoint, outputs, seed, folder and selection metric."""
    head_config = dict(cfg.model.head_config)
    if fold.task.name == "multi_label":
        head_config["multi_label"] = True
    model = dataclasses.replace(
        cfg.model,
        backbone=backbone,
        checkpoint=checkpoint,
        num_outputs=len(fold.names),
        head_config=head_config,
    )
    changes: dict[str, Any] = {
        "seed": seed,
        "output_dir": str(out),
        "best_metric": task.metric,
        "progress": opts.progress,
        "batch_size": min(cfg.train.batch_size, len(fold.train)),
    }
    if opts.steps is not None:  # keep the recipe's number of evaluations and checkpoints
        scale = opts.steps / cfg.train.max_steps
        changes["max_steps"] = opts.steps
        changes["eval_every"] = max(1, round(cfg.train.eval_every * scale))
        changes["save_every"] = max(1, round(cfg.train.save_every * scale))
    if opts.workers is not None:
        changes["num_workers"] = opts.workers
    if opts.device == "cpu" or not torch.cuda.is_available():
        changes["mixed_precision"] = "no"
    return dataclasses.replace(cfg, model=model, train=dataclasses.replace(cfg.train, **changes))


def finetune_cell(
    task: BenchmarkTask,
    fold: Fold,
    backbone: str,
    mode: str,
    seed: int,
    checkpoint: str | None,
    out: Path,
    opts: FinetuneOptions,
) -> dict[str, Any]:
    """Train ``backbone`` in ``mode`` (``lora``/``full``) on ``fold``, select on validation, predict both
    held-out splits.

    Returns:
        ``validation`` and ``test`` as ``(predictions, targets)``, and ``info`` (the recipe config used, its file,
        best and last step).
    """
    name, base = recipe_config(task, backbone, mode, opts.recipe)
    cfg = _adapt(base, task, fold, backbone, checkpoint, seed, out, opts)
    torch.manual_seed(seed)
    model = build_model(
        cfg.model.backbone,
        head=cfg.model.head,
        num_outputs=len(fold.names),
        checkpoint=cfg.model.checkpoint,
        lora=cfg.model.lora,
        freeze=cfg.model.freeze,
        labels=fold.names,
        backbone_overrides=cfg.model.backbone_overrides or None,
        **cfg.model.head_config,
    )
    if model.task is not fold.task:
        raise ValueError(
            f"{name} builds a {model.task.name} head, but task {task.name!r} is {fold.task.name}"
        )
    window = window_seconds(task.settings, model.backbone.pretrained_cfg.input_seconds)
    crops = {
        "train": int(task.settings.get("train_crops", 1)),
        "eval": int(task.settings.get("eval_crops", 1)),
    }
    train_collate = TaskCollate(
        CropCollate(model.sample_rate, window, train=True, crops_per_clip=crops["train"], seed=seed),
        fold.task,
    )
    eval_collate = TaskCollate(
        CropCollate(model.sample_rate, window, train=False, crops_per_clip=crops["eval"]), fold.task
    )
    accelerator = Accelerator(cpu=True, mixed_precision="no") if opts.device == "cpu" else None
    result = train(
        model,
        fold.train,
        fold.validation,
        cfg.train,
        train_collate,
        eval_collate,
        class_names=fold.names,
        param_groups=param_groups(model, cfg.train.lr, cfg.train.weight_decay, cfg.train.layer_decay),
        accelerator=accelerator,
    )
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    if (out / "best" / "config.json").is_file():
        unwrapped.load_state_dict(AudioModel.from_pretrained(out / "best").state_dict())
    batch = cfg.train.eval_batch_size or cfg.train.batch_size
    held_out = {}
    for split in ("validation", "test"):
        loader = DataLoader(fold.split(split), batch_size=batch, collate_fn=eval_collate)
        pred = predict(unwrapped, loader, task=fold.task)
        held_out[split] = (pred.predictions, np.asarray(pred.targets))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return {
        **held_out,
        "info": {
            "recipe_config": name,
            "recipe_overrides": list(opts.recipe),
            "config": {  # the data section is the task's, not the config's
                "model": to_dict(cfg.model),
                "train": {**to_dict(cfg.train), "output_dir": "train"},
            },
            "best_step": result.best_step,
            "steps": result.step,
            "window_seconds": window,
        },
    }
