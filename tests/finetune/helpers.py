"""Small builders shared by the model and serialization tests."""

from __future__ import annotations

import torch

from backbones import Backbone, build_backbone
from finetune import AudioModel
from tests.audio_signals import music


def base_backbone(name: str, **overrides: object) -> Backbone:
    """Backbone ``name`` with random weights from seed 0."""
    torch.manual_seed(0)
    return build_backbone(name, **overrides)


def music_wave(sample_rate: int, batch: int = 2, seconds: float = 2.0) -> torch.Tensor:
    """A deterministic music-like batch ``[batch, seconds * sample_rate]``."""
    return music(batch, int(seconds * sample_rate), sample_rate, seed=7)


def trainable_names(model: AudioModel) -> set[str]:
    """Names of the parameters that train."""
    return {n for n, p in model.named_parameters() if p.requires_grad}
