"""The training loop: one loop on ``accelerate`` for CPU, one GPU, many GPUs (DDP/FSDP) and many nodes.

It trains any module whose ``forward(**batch_inputs)`` returns an object with ``.loss`` and the field its task
names (``.logits`` or ``.ratings``), such as :class:`finetune.model.AudioModel`. The task (:mod:`heads.tasks`,
``model.task`` or ``task=``) says where a batch keeps the targets, which metric selects the best checkpoint by
default and which way that metric improves; evaluation is :func:`finetune.evaluation.evaluate`.

Checkpoints (:mod:`finetune.checkpointing`) hold the accelerate state (model, optimizer, scheduler, grad scaler,
every RNG) plus the loop's own position; they are written to a temporary directory and renamed into place, so a
crash never leaves a half-written checkpoint. Resuming restores all of it and skips the batches already consumed
in the current epoch, so an interrupted run reproduces the uninterrupted run's losses step for step. A run
resumes only when the settings that shape training match those the checkpoint recorded (the config's keys but
:attr:`TrainConfig.CHANGEABLE_ON_RESUME`, plus what the caller passes as ``settings=``); a run that starts over
(``resume=False``, or nothing to resume) first moves the previous run's outputs to ``previous/<time>/``.

``metrics.jsonl`` holds one JSON object per line: training records ``{"step", "loss", "lr_top", "lr_min",
"clips_per_s"}`` (``loss``: the mean over the steps since the previous record; ``lr_top``: the rate at full
scale, ``lr`` after warmup/decay; ``lr_min``: the lowest group's under layer-wise decay) and evaluation records
``{"step", "eval/<metric>", ...}``; a resumed run rewrites it from the checkpoint's history (no step twice).
Each evaluation is also logged as one line (metrics, best so far). :mod:`finetune.monitor` watches the loss
(NaN/Inf: :class:`TrainingDivergedError` naming the last good checkpoint) and SIGTERM (checkpoint at the next
step boundary, then :class:`TrainingInterrupted`, exit status 143).

Random data augmentation must not draw from a generator whose state runs ahead of the step (the data loader
prefetches a batch, so a collate's RNG state at checkpoint time belongs to the next step). A collate with
``set_position(epoch, batches_done)`` is told where the epoch starts and derives each batch's randomness from
(seed, epoch, batch index), which is exact across resumes and worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from backbones.config import ConfigError, StrictConfig, to_dict
from heads.tasks import Task

from .checkpointing import (
    STATE_FILE,
    TrainerState,
    flatten_settings,
    load_checkpoint,
    read_state,
    resume_point,
    save_checkpoint,
    set_aside,
)
from .evaluation import evaluate, model_inputs, resolve_task
from .monitor import LossWatch, StopSignal, TrainingDivergedError, TrainingInterrupted, divergence_message

__all__ = ["TrainConfig", "TrainResult", "TrainingDivergedError", "TrainingInterrupted", "train"]

logger = logging.getLogger(__name__)


_RULES: tuple[tuple[tuple[str, ...], Callable[[Any], bool], str], ...] = (
    (("max_steps", "batch_size", "grad_accum_steps", "eval_every", "save_every", "log_every"), lambda v: v >= 1,
     "must be >= 1"),
    (("keep_checkpoints",), lambda v: v >= 1, "must be >= 1 (the newest checkpoint is what a run resumes from)"),
    (("eval_batch_size", "early_stopping_patience"), lambda v: v is None or v >= 1, "must be >= 1 or null"),
    (("num_workers",), lambda v: v >= 0, "must be >= 0 (0 loads data in the main process)"),
    (("lr", "weight_decay"), lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
    (("layer_decay",), lambda v: 0 < v <= 1, "must be in (0, 1] (1: no decay)"),
    (("warmup_ratio",), lambda v: 0 <= v < 1, "must be in [0, 1) (the fraction of max_steps spent warming up)"),
    (("max_grad_norm",), lambda v: v is None or (math.isfinite(v) and v > 0), "must be > 0, or null for no clipping"),
    (("mixed_precision",), lambda v: v in ("no", "bf16", "fp16"), "must be 'no', 'bf16' or 'fp16'"),
)  # fmt: skip
"""(keys, test, rule): the ranges :class:`TrainConfig` checks."""


@dataclass
class TrainConfig(StrictConfig):
    """Settings of :func:`train`; :meth:`from_dict` checks keys and types (unknown keys, bool for int, ...) and
    ``__post_init__`` the ranges (a :class:`~backbones.config.ConfigError` naming ``train.<key>``).

    ``keep_checkpoints`` is at least 1: the newest checkpoint is what a run resumes from (the last good one is
    kept besides, see :func:`finetune.checkpointing.save_checkpoint`). ``resume=False`` starts over in
    ``output_dir`` after moving the previous run's outputs to ``previous/<time>/``.
    """

    CHANGEABLE_ON_RESUME: ClassVar[frozenset[str]] = frozenset({
        "output_dir", "eval_batch_size", "eval_every", "save_every", "keep_checkpoints", "log_every",
        "best_metric",  # checked on its own: the saved best value refers to it
        "early_stopping_patience", "num_workers", "resume", "tensorboard", "progress",
    })  # fmt: skip
    """Settings a resumed run may change; every other one must match the checkpoint's."""

    output_dir: str = "runs/train"
    max_steps: int = 1000
    batch_size: int = 8
    eval_batch_size: int | None = None
    grad_accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    layer_decay: float = 1.0
    warmup_ratio: float = 0.05
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    eval_every: int = 100
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    best_metric: str | None = None
    early_stopping_patience: int | None = None
    seed: int = 0
    num_workers: int = 0
    resume: bool = True
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for names, ok, rule in _RULES:
            for name in names:
                if not ok(getattr(self, name)):
                    raise ConfigError(f"train.{name} {rule}, got {getattr(self, name)!r}")

    def resume_settings(self, others: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What a checkpoint records and a resumed run must match: ``others`` (e.g. a recipe's model and data
        sections) and this config's settings but :attr:`CHANGEABLE_ON_RESUME` (as ``train.<key>``), flat
        (:func:`~finetune.checkpointing.flatten_settings`)."""
        own = {k: v for k, v in to_dict(self).items() if k not in self.CHANGEABLE_ON_RESUME}
        return {**flatten_settings(others or {}), **flatten_settings({"train": own})}


@dataclass
class TrainResult:
    """What a run produced: the final step, the best eval metrics and where things were written."""

    step: int
    best_metric: float | None
    best_step: int | None
    final_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    output_dir: str = ""


def train(
    model: nn.Module,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    config: TrainConfig,
    train_collate: Callable[[list[Any]], Mapping[str, Any]],
    eval_collate: Callable[[list[Any]], Mapping[str, Any]] | None = None,
    class_names: Sequence[str] | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    accelerator: Accelerator | None = None,
    task: Task | str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.max_steps`` optimizer steps, evaluating and checkpointing as configured.

    Args:
        model: returns an output with ``.loss`` and the task's output field from ``model(**inputs)``.
        train_dataset / eval_dataset: map-style data sets whose items ``train_collate``/``eval_collate`` batch
            into dicts of model inputs (``waveform``, ``features`` or ``embeddings``), the targets under the
            task's ``target_key`` and optionally ``clip_index``.
        class_names: names of the classes or rating dimensions, for the evaluation metrics.
        param_groups: optimizer groups (e.g. :func:`finetune.optim.param_groups` with layer-wise LR decay);
            default: AdamW over trainable parameters with no weight decay on biases and norms.
        accelerator: an existing :class:`accelerate.Accelerator`; by default one is made from the config.
        task: what the model's outputs mean; default ``model.task``. ``config.best_metric`` (default: the
            task's ``default_metric``) must be one of its metrics, checked before anything runs.
        settings: what else shapes this run (e.g. a recipe's ``{"model": {...}, "data": {...}}``), recorded in
            every checkpoint with the config's own and compared before resuming.

    Returns:
        :class:`TrainResult`. Writes ``metrics.jsonl``, ``checkpoints/step_N`` and ``best/`` under
        ``config.output_dir``.

    Raises:
        TypeError: the task is unknown (see :func:`finetune.evaluation.resolve_task`).
        ValueError: ``config.best_metric`` is not a metric of the task (the message suggests close names), or
            the run directory's checkpoints selected on another metric.
        finetune.checkpointing.ResumeMismatchError: the checkpoint to resume from was written with other
            settings (each differing key is named) or does not fit the model; nothing was changed on disk.
        TrainingDivergedError: the loss became NaN or Inf.
        TrainingInterrupted: SIGTERM arrived; a checkpoint was saved first (a ``SystemExit``, status 143).
    """
    from transformers import get_cosine_schedule_with_warmup

    task = resolve_task(model, task, accelerator)
    metric = config.best_metric or task.default_metric
    task.check_metric(metric)
    out_dir = Path(config.output_dir)
    ckpt_root = out_dir / "checkpoints"
    expected = config.resume_settings(settings)
    latest = resume_point(ckpt_root, expected) if config.resume else None
    if latest is not None:
        saved_metric = read_state(latest / STATE_FILE).metric
        if saved_metric not in (None, metric):
            raise ValueError(
                f"{latest} selected its best model on {saved_metric!r}, this run on {metric!r}; set "
                f"best_metric={saved_metric!r}, or use a new output_dir or resume=false"
            )
    accelerator = accelerator or Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        log_with="tensorboard" if config.tensorboard else None,
        project_dir=str(out_dir),
    )
    set_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        train_dataset,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=train_collate,
        num_workers=config.num_workers,
        drop_last=True,
        generator=generator,
    )
    eval_loader = None
    if eval_dataset is not None:
        eval_loader = DataLoader(
            eval_dataset,
            batch_size=config.eval_batch_size or config.batch_size,
            shuffle=False,
            collate_fn=eval_collate or train_collate,
            num_workers=config.num_workers,
        )
    if len(train_loader) < config.grad_accum_steps:
        raise ValueError(
            f"the training set gives {len(train_loader)} batches of {config.batch_size}, fewer than one optimizer "
            f"step of {config.grad_accum_steps} accumulated batches; lower batch_size or grad_accum_steps"
        )
    groups = param_groups if param_groups is not None else _default_param_groups(model, config)
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    # accelerate's prepared scheduler advances once per process at every optimizer step (unless split_batches)
    ticks = (
        1
        if accelerator.split_batches or not accelerator.step_scheduler_with_optimizer
        else accelerator.num_processes
    )
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * config.max_steps) * ticks, config.max_steps * ticks
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    if latest is not None:
        state = load_checkpoint(accelerator, latest)
        state.metric, state.settings = metric, expected
        logger.info("resuming from %s (step %d of %d)", latest, state.step, config.max_steps)
    else:
        state = TrainerState(metric=metric, settings=expected)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            set_aside(out_dir)
    metrics_path = out_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in state.history))  # up to the checkpoint
    accelerator.wait_for_everyone()
    if config.tensorboard:
        accelerator.init_trackers("tb", config=dataclasses.asdict(config))

    batches_per_epoch = len(train_loader) // config.grad_accum_steps * config.grad_accum_steps
    bar = tqdm(
        total=config.max_steps,
        initial=state.step,
        desc="train",
        unit="step",
        disable=not (config.progress and accelerator.is_local_main_process),
    )
    model.train()
    step, final_metrics, stopped_early = state.step, {}, False
    watch = LossWatch(h["loss"] for h in state.history if "loss" in h)
    t_last, clips_since, micro = time.perf_counter(), 0, []
    with StopSignal() as stop:
        while step < config.max_steps and not stopped_early:
            consumed = step * config.grad_accum_steps
            epoch, skip = divmod(consumed, batches_per_epoch)
            train_loader.set_epoch(epoch)
            if hasattr(train_collate, "set_position"):
                train_collate.set_position(epoch, skip)
            loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
            for i, batch in enumerate(loader):
                if skip + i >= batches_per_epoch:
                    break
                inputs = model_inputs(batch, task)
                if step == state.step and i == 0:
                    _warn_wasted_work(accelerator.unwrap_model(model), inputs)
                with accelerator.accumulate(model):
                    out = model(**inputs)
                    loss = out.loss
                    if not torch.isfinite(loss.detach()):
                        raise TrainingDivergedError(
                            divergence_message(
                                float(loss.detach()),
                                step + 1,
                                config.lr,
                                max(scheduler.get_last_lr()),
                                config.max_grad_norm,
                                ckpt_root,
                                state.last_good_step,
                            )
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                micro.append(loss.detach())
                clips_since += next(iter(inputs.values())).shape[0] * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                step += 1
                bar.update(1)
                watch.add(float(accelerator.reduce(torch.stack(micro).mean(), reduction="mean")))
                micro = []
                if step % config.log_every == 0 or step == 1:
                    now = time.perf_counter()
                    lrs = scheduler.get_last_lr()
                    record = {
                        "step": step,
                        "loss": watch.log_value(),
                        "lr_top": max(lrs),
                        "lr_min": min(lrs),
                        "clips_per_s": clips_since / max(now - t_last, 1e-9),
                    }
                    t_last, clips_since = now, 0
                    bar.set_postfix(loss=f"{record['loss']:.4f}", clips_s=f"{record['clips_per_s']:.1f}")
                    _log(accelerator, metrics_path, record, state)
                if eval_loader is not None and (step % config.eval_every == 0 or step == config.max_steps):
                    final_metrics = evaluate(model, eval_loader, accelerator, class_names, task)
                    stopped_early = _after_eval(
                        accelerator, model, config, task, metric, state, step, final_metrics
                    )
                    _log(accelerator, metrics_path, {"step": step, **_flat_eval(final_metrics)}, state)
                    logger.info(_eval_line(step, config.max_steps, metric, final_metrics, state))
                    model.train()
                stopping = stop.requested(accelerator)
                if step % config.save_every == 0 or step == config.max_steps or stopped_early or stopping:
                    state.step = step
                    state.train_loss = watch.save_value()
                    if watch.is_good(state.train_loss):
                        state.last_good_step = step
                    saved = save_checkpoint(accelerator, ckpt_root, state, config.keep_checkpoints)
                if stopping:
                    bar.close()
                    name = signal.Signals(stop.signum or signal.SIGTERM).name
                    raise TrainingInterrupted(
                        f"stopped by {name} at step {step} of {config.max_steps}; the checkpoint {saved} holds "
                        "it: run the same command again to resume",
                        stop.signum or signal.SIGTERM,
                    )
                if step >= config.max_steps or stopped_early:
                    break
    bar.close()
    for tracker in accelerator.trackers:  # not end_training(): it destroys the process group, which the
        tracker.finish()  # caller still needs (e.g. to evaluate on the test set across processes)
    return TrainResult(
        step=step,
        best_metric=state.best,
        best_step=state.best_step,
        final_metrics=final_metrics,
        history=state.history,
        stopped_early=stopped_early,
        output_dir=str(out_dir),
    )


def _eval_line(
    step: int, max_steps: int, metric: str, metrics: Mapping[str, Any], state: TrainerState
) -> str:
    """One line per validation pass: the scalar metrics (selection metric first) and the best so far."""
    scalars = _flat_eval(metrics)
    first = f"eval/{metric}"
    shown = [first] + [k for k in scalars if k != first and k != "eval/n"]
    values = "  ".join(f"{k.removeprefix('eval/')} {scalars[k]:.4g}" for k in shown)
    best = f"best {metric} {state.best:.4g} at step {state.best_step}"
    return (
        f"step {step}/{max_steps} validation: {values} | {best}{' (new)' if state.best_step == step else ''}"
    )


def _default_param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _warn_wasted_work(model: nn.Module, inputs: Mapping[str, Any]) -> None:
    backbone = getattr(model, "backbone", None)
    if "embeddings" in inputs or backbone is None or any(p.requires_grad for p in backbone.parameters()):
        return
    warnings.warn(
        "the backbone is frozen but runs forward on every batch of every epoch; for a linear probe without "
        "waveform augmentation, cache its embeddings once (finetune.embeddings.cache_embeddings, or "
        "data.cache_embeddings=true in a recipe)",
        stacklevel=3,
    )


def _flat_eval(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}


def _log(accelerator: Accelerator, path: Path, record: dict[str, Any], state: TrainerState) -> None:
    state.history.append(record)
    if accelerator.is_main_process:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def _after_eval(
    accelerator: Accelerator,
    model: nn.Module,
    config: TrainConfig,
    task: Task,
    metric: str,
    state: TrainerState,
    step: int,
    metrics: Mapping[str, Any],
) -> bool:
    """Track the selection ``metric``, save the best model, and say whether to stop early."""
    value = float(metrics[metric])
    if task.is_better(metric, value, state.best):
        state.best, state.best_step, state.bad_evals = value, step, 0
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            if hasattr(unwrapped, "save_pretrained"):
                unwrapped.save_pretrained(Path(config.output_dir) / "best")
        return False
    state.bad_evals += 1
    patience = config.early_stopping_patience
    return patience is not None and state.bad_evals >= patience
