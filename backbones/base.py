"""The uniform backbone interface, its output dataclass, pretrained configs and the registry.

Every backbone splits its forward pass into three stages so that streaming can cache the local ones::

    waveform [B, N] --frontend--> frames [B, n_mels, T] --tokenize--> tokens [B, T', ...] --encode--> BackboneOutput

``frontend`` and ``tokenize`` are local in time (a frame / token column depends only on nearby samples), ``encode``
mixes globally (attention, global pooling) and is recomputed for every window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

__all__ = [
    "Backbone",
    "BackboneOutput",
    "PretrainedCfg",
    "register_backbone",
    "list_backbones",
    "get_pretrained_cfg",
    "build_backbone",
]


@dataclass(frozen=True)
class BackboneOutput:
    """What every backbone returns.

    Shapes:
        pooled: [B, D], the clip embedding the original implementation exposes.
        sequence: [B, L, D], final-layer patch/frame tokens without special tokens, time-major
            (index ``t * grid[1] + f``) so that ``sequence.view(B, *grid, D)`` is ``[B, T', F', D]``.
        token_times: [L], centre time of each token in seconds from the start of the input.
        grid: (T', F'), the token grid; CNN14 has F' = 1.
        hidden_states: per-layer outputs ``[B, L_all, D]`` (special tokens included) when requested.
        logits: [B, num_classes], the pretrained AudioSet head's output when the head is kept.
    """

    pooled: Tensor
    sequence: Tensor
    token_times: Tensor
    grid: tuple[int, int]
    hidden_states: tuple[Tensor, ...] | None = None
    logits: Tensor | None = None


@dataclass(frozen=True)
class PretrainedCfg:
    """Where a checkpoint lives and the input contract it was trained with (timm-style).

    ``arch`` holds the architecture keyword arguments of the family's module and ``frontend`` the keyword
    arguments of its front-end; the model is built from these alone, so nothing repeats them.
    """

    name: str
    arch: Mapping[str, Any]
    frontend: Mapping[str, Any]
    sample_rate: int
    input_seconds: float
    hub_id: str | None = None
    url: str | None = None
    filename: str | None = None
    sha256: str | None = None
    license: str = ""
    num_classes: int = 527
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def has_weights(self) -> bool:
        return self.hub_id is not None or self.url is not None


class Backbone(nn.Module):
    """Base class of the backbone adapters. Subclasses implement the three stages and the checkpoint remap.

    Attributes subclasses set in ``__init__``: ``frontend`` (an ``nn.Module``), ``embed_dim``, ``num_layers``,
    ``frame_hop`` (input samples per frame), ``token_stride`` (frames per token column).
    """

    default_lora_targets: tuple[str, ...] = ()
    embed_dim: int
    num_layers: int
    frame_hop: int
    token_stride: int
    frontend: nn.Module

    def __init__(self, cfg: PretrainedCfg) -> None:
        super().__init__()
        self.pretrained_cfg = cfg

    @property
    def name(self) -> str:
        return self.pretrained_cfg.name

    @property
    def sample_rate(self) -> int:
        return self.pretrained_cfg.sample_rate

    def tokenize(self, frames: Tensor) -> Tensor:
        """Local part after the front-end: frames ``[B, n_mels, T]`` -> tokens with time on dim 1."""
        raise NotImplementedError

    def encode(self, tokens: Tensor, output_hidden_states: bool = False) -> BackboneOutput:
        """Global part: tokens from :meth:`tokenize` -> :class:`BackboneOutput`."""
        raise NotImplementedError

    def forward(self, waveform: Tensor, output_hidden_states: bool = False) -> BackboneOutput:
        """Run the whole backbone on a batch of mono waveforms at :attr:`sample_rate`.

        Shapes:
            waveform: [B, N] float in [-1, 1].
        """
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        if waveform.dim() != 2:
            raise ValueError(
                f"{self.name}: expected a waveform batch [B, N], got shape {tuple(waveform.shape)}"
            )
        return self.encode(self.tokenize(self.frontend(waveform)), output_hidden_states=output_hidden_states)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped from input to output (stem, block 1, ..., block n, final norm/head) for layer-wise
        learning-rate decay. The default is one group."""
        return [list(self.parameters())]

    @classmethod
    def remap_state_dict(
        cls, state: Mapping[str, Tensor], cfg: PretrainedCfg
    ) -> tuple[dict[str, Tensor], str]:
        """Convert an official checkpoint's state dict to this module's key layout.

        Returns the remapped state dict and the name of the format detected from the keys.
        """
        raise NotImplementedError

    def load_official_state_dict(self, state: Mapping[str, Tensor]) -> str:
        """Remap ``state`` from whatever official format it is in and load it strictly; returns the format."""
        from .checkpoints import load_strict

        remapped, fmt = self.remap_state_dict(state, self.pretrained_cfg)
        load_strict(self, remapped, source_format=fmt, model_name=self.name)
        return fmt


Builder = Callable[..., Backbone]


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    cfg: PretrainedCfg


_REGISTRY: dict[str, _Entry] = {}


def register_backbone(
    cfgs: Mapping[str, PretrainedCfg] | list[PretrainedCfg],
) -> Callable[[Builder], Builder]:
    """Class or function decorator: register ``builder(cfg, **overrides) -> Backbone`` under each cfg's name."""
    cfg_list = list(cfgs.values()) if isinstance(cfgs, Mapping) else list(cfgs)

    def decorator(builder: Builder) -> Builder:
        for cfg in cfg_list:
            if "." not in cfg.name:
                raise ValueError(f"backbone names are 'family.tag', got {cfg.name!r}")
            if cfg.name in _REGISTRY:
                raise ValueError(f"backbone {cfg.name!r} is registered twice")
            _REGISTRY[cfg.name] = _Entry(builder=builder, cfg=cfg)
        return builder

    return decorator


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names, sorted; ``pattern`` is an fnmatch filter such as ``"passt_s.*"``."""
    import fnmatch

    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown backbone {name!r}.{hint} Known: {', '.join(list_backbones())}")
    return _REGISTRY[name]


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The pretrained config registered under ``name``."""
    return _entry(name).cfg


def build_backbone(name: str, **overrides: Any) -> Backbone:
    """Build ``name`` with random weights. ``overrides`` replace entries of the config's ``arch`` or
    ``frontend`` settings (e.g. ``depth=2, embed_dim=64`` for a tiny model, ``n_mels=64``)."""
    entry = _entry(name)
    cfg = entry.cfg
    arch, frontend, rest = dict(cfg.arch), dict(cfg.frontend), {}
    for key, value in overrides.items():
        if key in arch:
            arch[key] = value
        elif key in frontend:
            frontend[key] = value
        else:
            rest[key] = value
    cfg = dataclasses.replace(cfg, arch=arch, frontend=frontend)
    return entry.builder(cfg, **rest)
