"""Which backbone parameters train: the freeze modes of :class:`~finetune.model.AudioModel`.

A mode is ``none`` (full fine-tune), ``backbone`` (linear probe), ``last_k:<k>`` (the last k blocks and the final
norm) or ``lora`` (the adapters only). Each maps in :data:`FREEZE_MODES` to a function ``(backbone, arg) -> ids
of the backbone parameters that stay trainable``; adding a mode is adding an entry there. LoRA parameters and the
head always train (the model applies that); BatchNorm layers whose parameters are all frozen keep their running
statistics (:func:`hold_frozen_norm_statistics`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from torch import nn

from backbones import Backbone

__all__ = ["FREEZE_MODES", "hold_frozen_norm_statistics", "parse_freeze", "trainable_backbone_parameters"]


def _train_all(backbone: Backbone, arg: str) -> set[int]:
    return {id(p) for p in backbone.parameters()}


def _train_none(backbone: Backbone, arg: str) -> set[int]:
    return set()


def _train_last_k(backbone: Backbone, arg: str) -> set[int]:
    groups = backbone.layer_groups()
    n_blocks = len(groups) - 2  # layer_groups() is [stem, blocks..., final]
    if not arg.isdigit() or not 0 <= int(arg) <= n_blocks:
        raise ValueError(
            f"freeze='last_k:<k>' needs an integer k in [0, {n_blocks}] for {backbone.name}, got {arg!r}"
        )
    k = int(arg)
    return {id(p) for group in groups[len(groups) - 1 - k :] for p in group}


FREEZE_MODES: Mapping[str, Callable[[Backbone, str], set[int]]] = MappingProxyType(
    {"none": _train_all, "backbone": _train_none, "last_k": _train_last_k, "lora": _train_none}
)
"""Freeze mode -> the backbone parameters that stay trainable (LoRA parameters always train)."""


def parse_freeze(mode: str) -> tuple[str, str]:
    """``"last_k:2"`` -> ``("last_k", "2")``; ``"none"`` -> ``("none", "")``.

    Raises:
        ValueError: an unknown mode, or ``last_k`` without its ``:<k>`` (or another mode with one).
    """
    kind, _, arg = mode.partition(":")
    if kind not in FREEZE_MODES or (kind == "last_k") != bool(arg):
        raise ValueError(f"freeze must be one of 'none', 'backbone', 'last_k:<k>', 'lora'; got {mode!r}")
    return kind, arg


def trainable_backbone_parameters(backbone: Backbone, mode: str) -> set[int]:
    """The ids of ``backbone``'s parameters that train under ``mode`` (LoRA parameters aside).

    Raises:
        ValueError: a bad mode, or a ``last_k`` beyond the backbone's number of blocks.
    """
    kind, arg = parse_freeze(mode)
    return FREEZE_MODES[kind](backbone, arg)


def hold_frozen_norm_statistics(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` whose parameters are all frozen in eval mode, so training does
    not move the running statistics of a layer it does not train."""
    for sub in module.modules():
        params = list(sub.parameters(recurse=False))
        if (
            isinstance(sub, nn.modules.batchnorm._BatchNorm)
            and params
            and not any(p.requires_grad for p in params)
        ):
            sub.eval()
