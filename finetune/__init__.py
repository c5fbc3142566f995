"""Fine-tuning: model assembly, LoRA, data, training, streaming, calibration.

>>> from finetune import build_model, AudioModel
>>> model = build_model("passt_s.tiny", head="linear", num_outputs=10, lora={"r": 8})

The model API is imported on first use, so that ``finetune.data`` does not pull in peft and the backbones.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lora import LoraSettings
    from .model import AudioModel, ModelOutput, build_model
    from .optim import param_groups

_LAZY = {
    "AudioModel": ".model",
    "ModelOutput": ".model",
    "build_model": ".model",
    "LoraSettings": ".lora",
    "param_groups": ".optim",
}

__all__ = ["AudioModel", "LoraSettings", "ModelOutput", "build_model", "param_groups"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
