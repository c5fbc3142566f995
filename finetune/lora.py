"""LoRA adapters on a backbone, through ``peft``.

Adapters are injected in place (``peft.inject_adapter_in_model``) so the backbone keeps its class, its
``tokenize`` / ``encode`` split and its parameter names; a wrapped layer ``blocks.0.attn.qkv`` keeps its
weights as ``blocks.0.attn.qkv.base_layer.weight`` and gains ``...qkv.lora_A.default.weight`` and
``...qkv.lora_B.default.weight``. Targets default to the backbone's ``default_lora_targets`` (module-name
suffixes, e.g. PaSST's fused ``qkv``); a string is a regular expression matched against full module names.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn

from backbones.base import Backbone
from backbones.config import StrictConfig

__all__ = [
    "ADAPTER",
    "LoraSettings",
    "apply_lora",
    "lora_layers",
    "is_lora_parameter",
    "merge_lora",
    "unmerge_lora",
    "merged_state_dict",
]

ADAPTER = "default"  # peft's adapter name; one adapter per model


@dataclass
class LoraSettings(StrictConfig):
    """LoRA hyper-parameters (saved in ``config.json``).

    Attributes:
        r: rank of the update ``B @ A``.
        alpha: scale; the update is multiplied by ``alpha / r``.
        dropout: dropout on the adapter's input.
        targets: module-name suffixes (a list) or a regular expression matched against full module names (a
            string); None means the backbone's ``default_lora_targets``.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] | str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.targets is not None and not isinstance(self.targets, str):
            self.targets = tuple(self.targets)
            if not self.targets:
                raise ValueError("LoRA targets must not be empty (use None for the backbone's defaults)")


def lora_layers(module: nn.Module) -> dict[str, LoraLayer]:
    """The LoRA-wrapped layers of ``module`` by name."""
    return {name: m for name, m in module.named_modules() if isinstance(m, LoraLayer)}


def is_lora_parameter(name: str) -> bool:
    """Whether a parameter name belongs to a LoRA adapter (``lora_A`` / ``lora_B``)."""
    return ".lora_A." in name or ".lora_B." in name


def apply_lora(backbone: Backbone, settings: LoraSettings) -> list[str]:
    """Inject LoRA adapters into ``backbone`` in place; returns the names of the wrapped modules.

    Afterwards only the adapters' parameters of ``backbone`` require gradients.

    Raises:
        ValueError: the backbone already has adapters, has no default targets, or no module matches.
    """
    if lora_layers(backbone):
        raise ValueError(f"{backbone.name} already has LoRA adapters")
    targets = settings.targets if settings.targets is not None else tuple(backbone.default_lora_targets)
    if not targets:
        raise ValueError(f"{backbone.name} has no default LoRA targets; pass lora={{'targets': [...]}}")
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
    )
    try:
        inject_adapter_in_model(config, backbone, adapter_name=ADAPTER)
    except ValueError as e:
        candidates = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in backbone.named_modules()
                if isinstance(m, (nn.Linear, nn.Conv2d))
            }
        )
        raise ValueError(
            f"LoRA targets {targets!r} do not fit {backbone.name}: {e}. Linear/Conv2d module names there: "
            f"{', '.join(candidates)}"
        ) from e
    return sorted(lora_layers(backbone))


def merge_lora(module: nn.Module) -> dict[str, Tensor]:
    """Add every adapter's update into its base weight (the adapters then stop contributing).

    Returns the base weights as they were before, for an exact :func:`unmerge_lora`.
    """
    originals = {}
    for name, layer in lora_layers(module).items():
        if not layer.merged:
            originals[name] = layer.get_base_layer().weight.detach().clone()
            layer.merge()
    return originals


def unmerge_lora(module: nn.Module, originals: Mapping[str, Tensor] | None = None) -> None:
    """Undo :func:`merge_lora`: exactly when given what it returned, else up to float rounding."""
    for name, layer in lora_layers(module).items():
        if layer.merged:
            layer.unmerge()
            if originals is not None and name in originals:
                with torch.no_grad():
                    layer.get_base_layer().weight.copy_(originals[name])


def merged_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """The state dict ``module`` would have without adapters, with every update merged into its weight.

    ``module`` itself is left untouched (the merge happens on a copy, so unmerging cannot lose precision).
    """
    merged = copy.deepcopy(module)
    merge_lora(merged)
    state = {}
    for key, value in merged.state_dict().items():
        if is_lora_parameter(key):
            continue
        state[key.replace(".base_layer.", ".")] = value
    return state
