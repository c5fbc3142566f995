"""Optimizer parameter groups with layer-wise learning-rate decay and selective weight decay."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from .model import AudioModel

__all__ = ["param_groups", "NO_DECAY_NAMES", "NO_DECAY_MODULES"]

# Parameter-name parts (of the last name component) that never get weight decay: tokens and position tables.
NO_DECAY_NAMES = ("pos_embed", "position_embed", "cls_token", "dist_token", "distillation_token")
# Module types whose parameters never get weight decay.
NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.Embedding)


def _no_decay(model: nn.Module) -> set[int]:
    ids = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if (
                param.ndim <= 1
                or isinstance(module, NO_DECAY_MODULES)
                or any(p in name for p in NO_DECAY_NAMES)
            ):
                ids.add(id(param))
    return ids


def param_groups(
    model: AudioModel, lr: float, weight_decay: float = 0.05, layer_decay: float = 1.0
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for ``model``'s trainable parameters.

    The backbone's :meth:`~backbones.Backbone.layer_groups` (stem, blocks..., final) get learning rates
    ``lr * layer_decay ** (n - i)`` for group ``i`` of ``n``; the head trains at ``lr``. Biases, norm and
    embedding parameters, tokens and position tables get no weight decay. Each group carries ``lr_scale`` (its
    fraction of ``lr``, for schedulers) and a ``name``.

    Raises:
        ValueError: ``layer_decay`` outside (0, 1], or a parameter in two layer groups.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"need lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    layers = model.backbone.layer_groups()
    depth_of: dict[int, int] = {}
    for i, group in enumerate(layers):
        for param in group:
            if id(param) in depth_of:
                raise ValueError(
                    f"{model.backbone.name}.layer_groups() lists a parameter in groups {depth_of[id(param)]} and {i}"
                )
            depth_of[id(param)] = i
    n = len(layers)
    no_decay = _no_decay(model)
    buckets: dict[tuple[str, bool], dict[str, Any]] = {}
    unassigned = []
    for prefix, module in (("backbone", model.backbone), ("head", model.head)):
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if prefix == "head":
                key, scale = "head", 1.0
            elif id(param) in depth_of:
                key, scale = f"backbone.{depth_of[id(param)]}", layer_decay ** (n - depth_of[id(param)])
            else:
                unassigned.append(name)
                key, scale = "backbone.unassigned", 1.0
            decay = id(param) not in no_decay
            bucket = buckets.setdefault((key, decay), {
                "params": [], "lr": lr * scale, "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": scale, "name": f"{key}.{'decay' if decay else 'no_decay'}",
            })  # fmt: skip
            bucket["params"].append(param)
    if unassigned:
        warnings.warn(
            f"{model.backbone.name}.layer_groups() misses {len(unassigned)} trainable parameters "
            f"({', '.join(unassigned[:5])}...); they train at the full learning rate",
            stacklevel=2,
        )
    return list(buckets.values())
