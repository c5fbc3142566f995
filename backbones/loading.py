"""``load_backbone``: build a registered backbone and load a checkpoint into it."""

from __future__ import annotations

import logging
import os
from typing import Any

from .base import Backbone, build_backbone, get_pretrained_cfg
from .checkpoints import resolve_checkpoint
from .state_dict import read_state_dict

__all__ = ["load_backbone"]

logger = logging.getLogger(__name__)


def load_backbone(name: str, checkpoint: str | os.PathLike[str] | None = None, **overrides: Any) -> Backbone:
    """Build backbone ``name`` (``family.tag``) and load ``checkpoint`` into it.

    Args:
        name: a registered name, see :func:`backbones.list_backbones`.
        checkpoint: None (random init), a local file, a local HF-layout directory, a hub id (``owner/name``),
            an http(s) URL, or ``"pretrained"`` for the config's released weights. The file type is read from
            its bytes, the checkpoint's format from its keys.
        **overrides: architecture settings (``depth=2``), any front-end option (``dft="fft"``), or adapter
            options such as ``keep_pretrained_head=True``; see :func:`backbones.build_backbone`.

    Raises:
        CheckpointError: the source cannot be found, fetched or read, or holds NaN/Inf.
        CheckpointMismatchError: the tensors do not fit (every missing, unexpected and mis-shaped key listed).
        TypeError: an unknown override.
    """
    cfg = get_pretrained_cfg(name)
    model = build_backbone(name, **overrides)
    if checkpoint is not None:
        path = resolve_checkpoint(checkpoint, cfg)
        fmt = model.load_official_state_dict(read_state_dict(path))
        logger.info("loaded %s from %s (format: %s)", name, path, fmt)
    return model.eval()
