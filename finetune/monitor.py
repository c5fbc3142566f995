"""What the training loop watches besides the data: its loss (interval means, explosions, divergence) and the
signal a cluster scheduler sends before it preempts a job.

Loss: every step's loss goes into :class:`LossWatch`. A logged ``loss`` is the mean over the steps since the
previous record (one batch's loss is too noisy to read). A value *explodes* when it is above
:data:`EXPLOSION_FACTOR` times the running median of the per-step losses (all steps so far: the median stays
at the healthy level until half of the run has blown up, where a mean or a median of a few interval means
would follow the explosion); a checkpoint is *good* when the mean loss of the steps since the previous
checkpoint is finite and does not explode. The loop records the last good checkpoint and names it when the
loss becomes NaN or Inf (:class:`TrainingDivergedError`).

Stopping: inside :class:`StopSignal`, SIGTERM (what SLURM, Kubernetes and other schedulers send before they kill
a job) only sets a flag; the loop saves a checkpoint at the next step boundary and raises
:class:`TrainingInterrupted`, a ``SystemExit`` with status 143 (128 + SIGTERM), so that a preempted job never
looks successful and the next run resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import statistics
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import torch

from .checkpointing import STATE_FILE, list_checkpoints, read_state

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = [
    "EXPLOSION_FACTOR",
    "LossWatch",
    "StopSignal",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "divergence_message",
]

logger = logging.getLogger(__name__)

EXPLOSION_FACTOR = 100.0
"""A loss above this many times the median of the losses logged before it is exploding."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; the message names the step, what the run had (learning rate, clipping) and
    the last good checkpoint."""


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after saving a checkpoint; exits with ``128 + signal`` (143 for SIGTERM)
    unless caught. ``str()`` says where the checkpoint is."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(128 + signum)
        self.message = message
        self.signum = signum

    def __str__(self) -> str:
        return self.message


class LossWatch:
    """Per-step training losses -> interval means for the log, and whether a checkpoint's loss is good.

    Args:
        history: losses of earlier steps (a resumed run passes its logged interval means), for the median.
    """

    def __init__(self, history: Iterable[float] = ()) -> None:
        self._steps = [v for v in history if math.isfinite(v)]
        self._since_log: list[float] = []
        self._since_save: list[float] = []

    def add(self, loss: float) -> None:
        """Record one optimizer step's loss."""
        self._since_log.append(loss)
        self._since_save.append(loss)
        if math.isfinite(loss):
            self._steps.append(loss)

    def log_value(self) -> float:
        """Mean loss over the steps since the previous call (the logged ``loss``); starts a new interval."""
        value = _mean(self._since_log)
        self._since_log = []
        return value

    def save_value(self) -> float:
        """Mean loss over the steps since the previous call (a checkpoint's ``train_loss``); starts anew."""
        value = _mean(self._since_save)
        self._since_save = []
        return value

    def explodes(self, value: float) -> bool:
        """Whether ``value`` is above :data:`EXPLOSION_FACTOR` x the median of the step losses so far."""
        return bool(self._steps) and value > EXPLOSION_FACTOR * statistics.median(self._steps)

    def is_good(self, value: float) -> bool:
        """Finite and not exploding."""
        return math.isfinite(value) and not self.explodes(value)


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def divergence_message(
    loss: float,
    step: int,
    lr: float,
    scheduled_lr: float,
    max_grad_norm: float | None,
    root: Path,
    last_good_step: int | None,
) -> str:
    """The text of :class:`TrainingDivergedError`: what happened, what the run had, which checkpoint under
    ``root`` is sound (``step_<last_good_step>``) and which came after it, and what to change.

    Args:
        lr: the configured learning rate; scheduled_lr: the rate at this step (warmup, decay), top group.
    """
    clipping = f"on (max_grad_norm={max_grad_norm:g})" if max_grad_norm is not None else "off"
    text = (
        f"the training loss is {loss} at step {step}; stopping. This run had learning rate {lr:g} "
        f"({scheduled_lr:.3g} at this step) and gradient clipping {clipping}."
    )
    checkpoints = list_checkpoints(root)
    good = Path(root) / f"step_{last_good_step}"
    if last_good_step is not None and good in checkpoints:
        loss_there = read_state(good / STATE_FILE).train_loss
        text += f" The last good checkpoint is {good} (mean training loss {loss_there:.4g})"
        later, which = checkpoints[checkpoints.index(good) + 1 :], "the later ones"
    else:
        text += (
            f" No good checkpoint was written (finite mean loss, at most {EXPLOSION_FACTOR:g}x the running "
            "median of the step losses)"
        )
        later, which = checkpoints, "those written"
    if later:
        losses = [read_state(p / STATE_FILE).train_loss for p in later]
        text += f"; the loss had already exploded in {which}: "
        text += ", ".join(f"{p.name} ({'n/a' if v is None else f'{v:.3g}'})" for p, v in zip(later, losses))
    text += "."
    fixes = [f"lower the learning rate (train.lr, e.g. {lr / 10:g})"]
    if max_grad_norm is None:
        fixes.append("clip gradients (train.max_grad_norm=1.0)")
    return text + (
        f" To fix: {' and '.join(fixes)}, then start over with train.resume=false (the checkpoints are moved to "
        "previous/) or a new train.output_dir."
    )


class StopSignal:
    """Context manager: while inside, SIGTERM sets :attr:`signum` instead of killing the process.

    Signal handlers can only be installed from the main thread; elsewhere this does nothing (the default
    action stays). The previous handler is restored on exit. Forked data-loader workers inherit the handler
    but ignore the signal: the main process saves, then shuts them down.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.signals = signals
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked data-loader worker: the main process shuts it down
            return
        if self.signum is None:
            logger.warning(
                "received %s: saving a checkpoint at the end of this step, then stopping",
                signal.Signals(signum).name,
            )
        self.signum = signum

    def requested(self, accelerator: Accelerator | None = None) -> bool:
        """Whether a signal arrived, on any process of ``accelerator`` (they must save the checkpoint together;
        with several processes this is one small all-reduce)."""
        flag = self.signum is not None
        if accelerator is not None and accelerator.num_processes > 1:
            count = accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), reduction="sum")
            flag = bool(count > 0)
        return flag

    def __enter__(self) -> StopSignal:
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
