"""Pretrained audio backbones (AST, PaSST, PANNs CNN14) behind one interface.

>>> from backbones import load_backbone, list_backbones
>>> bb = load_backbone("passt_s.tiny")
"""

from . import ast, cnn14, passt  # noqa: F401  (import registers the families)
from .base import (
    Backbone,
    BackboneOutput,
    InputTooLongError,
    NonFiniteInputError,
    build_backbone,
    get_pretrained_cfg,
    list_backbones,
)
from .geometry import StreamGeometry
from .loading import load_backbone
from .pretrained import PretrainedCfg
from .state_dict import CheckpointError, CheckpointMismatchError

__all__ = [
    "Backbone",
    "BackboneOutput",
    "PretrainedCfg",
    "StreamGeometry",
    "CheckpointError",
    "CheckpointMismatchError",
    "InputTooLongError",
    "NonFiniteInputError",
    "build_backbone",
    "get_pretrained_cfg",
    "list_backbones",
    "load_backbone",
]
