"""Modes: how a cell turns a fold into validation and test predictions.

- ``linear_probe`` / ``mlp_probe``: frozen backbone embeddings (cached, :mod:`.features`) and a probe chosen on
  validation (:mod:`.probes`); ``probe`` on the command line means both.
- ``lora`` / ``full``: the training loop from the recipe configs (:mod:`.finetuning`).
- baseline rows (:mod:`.baselines`) run through :func:`run_baseline`.

A mode is ``run(cell, fold, context) -> {"validation": (pred, targets), "test": (pred, targets), "info": {...}}``;
:data:`MODES` maps names to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .baselines import BASELINES
from .data import ClipSplit, Fold
from .finetuning import FinetuneOptions, finetune_cell
from .probes import ProbeData, select_probe

if TYPE_CHECKING:
    from .runner import Cell, RunContext

__all__ = ["MODES", "MODE_ALIASES", "Mode", "expand_modes", "run_baseline"]

Predictions = dict[str, Any]


@dataclass(frozen=True)
class Mode:
    """A registered mode: its table label and its runner."""

    label: str
    run: Callable[[Cell, Fold, RunContext], Predictions]


def _probe_data(featurizer: Any, split: ClipSplit, context: RunContext) -> ProbeData:
    if featurizer is None:  # no features: one empty row per clip (the prior probe reads none)
        arrays = [np.zeros((1, 0), np.float32)] * len(split)
    else:
        arrays = context.cache.features(featurizer, split, context.progress)
    return ProbeData.build(arrays, split.targets, split.ids)


def _fit_and_predict(kind: str, featurizer: Any, cell: Cell, fold: Fold, context: RunContext) -> Predictions:
    data = {
        name: _probe_data(featurizer, fold.split(name), context) for name in ("train", "validation", "test")
    }
    probe, record = select_probe(
        kind, data["train"], data["validation"], fold.task, cell.task.metric, context.probe_config, cell.seed
    )
    return {
        "validation": (probe.predict(data["validation"]), data["validation"].targets),
        "test": (probe.predict(data["test"]), data["test"].targets),
        "info": {"selection": record},
    }


def _probe_mode(kind: str) -> Callable[[Cell, Fold, RunContext], Predictions]:
    def run(cell: Cell, fold: Fold, context: RunContext) -> Predictions:
        featurizer = context.backbone_features(cell)
        out = _fit_and_predict(kind, featurizer, cell, fold, context)
        out["info"]["checkpoint_sha256"] = featurizer.checkpoint_sha256
        out["info"]["weights_sha256"] = featurizer.spec()["weights_sha256"]
        out["info"]["window_seconds"] = featurizer.window
        return out

    return run


def _finetune_mode(mode: str) -> Callable[[Cell, Fold, RunContext], Predictions]:
    def run(cell: Cell, fold: Fold, context: RunContext) -> Predictions:
        checkpoint = context.checkpoints.get(cell.backbone)
        opts = FinetuneOptions(
            context.steps, context.workers, context.device, context.progress, context.recipe
        )
        out = finetune_cell(
            cell.task,
            fold,
            cell.backbone,
            mode,
            cell.seed,
            checkpoint,
            context.cell_dir(cell) / "train",
            opts,
        )
        out["info"]["checkpoint_sha256"] = context.checkpoint_sha256(cell.backbone)
        return out

    return run


def run_baseline(cell: Cell, fold: Fold, context: RunContext) -> Predictions:
    """The baseline ``cell.mode`` (:data:`~.baselines.BASELINES`) on ``fold``."""
    baseline = BASELINES[cell.mode]
    featurizer = baseline.featurizer(cell.task.settings) if baseline.featurizer is not None else None
    return _fit_and_predict(baseline.probe, featurizer, cell, fold, context)


MODES: Mapping[str, Mode] = MappingProxyType(
    {
        "linear_probe": Mode("linear probe", _probe_mode("linear")),
        "mlp_probe": Mode("MLP probe", _probe_mode("mlp")),
        "lora": Mode("LoRA fine-tune", _finetune_mode("lora")),
        "full": Mode("full fine-tune", _finetune_mode("full")),
    }
)
"""Registered model modes by name."""

MODE_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType({"probe": ("linear_probe", "mlp_probe")})
"""Command-line names that stand for several modes."""


def expand_modes(names: list[str]) -> tuple[str, ...]:
    """Modes named on the command line, aliases expanded, duplicates dropped, order kept.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    out: list[str] = []
    for name in names:
        if name not in MODES and name not in MODE_ALIASES:
            known = ", ".join([*MODE_ALIASES, *MODES])
            raise KeyError(f"unknown mode {name!r}; known: {known}")
        for mode in MODE_ALIASES.get(name, (name,)):
            if mode not in out:
                out.append(mode)
    return tuple(out)
