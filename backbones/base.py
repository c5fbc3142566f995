"""The uniform backbone interface, its output dataclass, the input errors and the registry.

Every backbone splits its forward pass into three stages so that streaming can cache the local ones::

    waveform [B, N] --frontend--> frames [B, n_mels, T] --tokenize--> tokens [B, T', ...] --encode--> BackboneOutput

``frontend`` and ``tokenize`` are local in time (a frame / token column depends only on nearby samples), ``encode``
mixes globally (attention, global pooling) and is recomputed for every window.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .config import ConfigError, did_you_mean
from .frontends import MelFrontend
from .geometry import StreamGeometry
from .pretrained import PretrainedCfg
from .state_dict import load_strict

__all__ = [
    "Backbone",
    "BackboneOutput",
    "InputTooLongError",
    "NonFiniteInputError",
    "PretrainedCfg",
    "register_backbone",
    "list_backbones",
    "get_pretrained_cfg",
    "build_backbone",
    "check_options",
    "as_input_tensor",
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


class InputTooLongError(ValueError):
    """The input is longer than the backbone's position embeddings cover."""


class NonFiniteInputError(ValueError):
    """The waveform holds NaN or Inf samples."""


def as_input_tensor(value: object, name: str, device: torch.device) -> Tensor:
    """``value`` (a tensor or numpy array of floats) as a tensor on ``device``; the public forward
    passes call it, so numpy input works and a wrong kind of input gets a clear error instead of torch's.

    The dtype is kept (each stage casts to what it computes in). Integer PCM is refused rather than guessed
    at: its scale depends on the bit depth.

    Raises:
        TypeError: ``value`` is neither a tensor nor a numpy array, or does not hold floating-point numbers.
    """
    if isinstance(value, np.ndarray):
        kind, floating = f"a numpy {value.dtype} array", np.issubdtype(value.dtype, np.floating)
        integer = np.issubdtype(value.dtype, np.integer)
    elif isinstance(value, Tensor):
        kind, floating = f"a {value.dtype} tensor", value.is_floating_point()
        integer = not (floating or value.is_complex() or value.dtype == torch.bool)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or a numpy array, got {type(value).__name__}")
    if not floating:
        hint = " (integer audio samples: divide int16 PCM by 32768)" if integer else ""
        raise TypeError(f"{name} must hold floating-point numbers, got {kind}{hint}")
    # a writable C-ordered copy: arrays may be read-only or have negative strides, which torch refuses
    tensor = torch.from_numpy(np.array(value, order="C")) if isinstance(value, np.ndarray) else value
    return tensor.to(device)


class Backbone(nn.Module):
    """Base class of the backbone adapters. Subclasses implement the three stages and the checkpoint remap.

    Attributes subclasses set in ``__init__``: ``frontend`` (an ``nn.Module``), ``embed_dim``, ``num_layers``,
    ``frame_hop`` (input samples per frame), ``token_stride`` (frames per token column) and, for models with
    learned time positions, ``max_frames`` (the most front-end frames they cover; None: any length).
    """

    default_lora_targets: tuple[str, ...] = ()
    embed_dim: int
    num_layers: int
    frame_hop: int
    token_stride: int
    frontend: nn.Module
    max_frames: int | None = None

    def __init__(self, cfg: PretrainedCfg) -> None:
        super().__init__()
        self.pretrained_cfg = cfg

    def _apply(self, fn: Callable[..., object], *args: object, **kwargs: object) -> Backbone:
        """``.to()``, ``.half()``, ``.double()``, ``.cuda()``...: the front-end keeps computing in float32 (its
        FFTs and filterbanks need it) and its frames are cast to the encoder's dtype in :meth:`forward`."""
        super()._apply(fn, *args, **kwargs)
        self.frontend.float()
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the encoder's parameters (``tokenize`` / ``encode``), which front-end frames are cast
        to; the front-end itself always computes in float32."""
        for name, param in self.named_parameters():
            if not name.startswith("frontend.") and param.is_floating_point():
                return param.dtype
        return torch.float32

    @property
    def name(self) -> str:
        return self.pretrained_cfg.name

    @property
    def sample_rate(self) -> int:
        return self.pretrained_cfg.sample_rate

    @property
    def max_samples(self) -> int | None:
        """Longest waveform :meth:`forward` accepts (``max_frames`` frames of the front-end); None: any."""
        if self.max_frames is None:
            return None
        return self.frontend.max_samples_for(self.max_frames)

    @property
    def max_seconds(self) -> float | None:
        """:attr:`max_samples` in seconds; None: any length."""
        limit = self.max_samples
        return None if limit is None else limit / self.sample_rate

    def longer_input_hint(self) -> str:
        """The family's way to take longer clips, the last option an :class:`InputTooLongError` offers."""
        return "use a variant trained on longer clips"

    def input_too_long(self, got: str) -> InputTooLongError:
        """The error for input beyond :attr:`max_samples`; ``got`` describes what was passed."""
        return InputTooLongError(
            f"{self.name} covers at most {self.max_seconds:.2f} s of audio ({self.max_samples} samples at "
            f"{self.sample_rate} Hz) with its position embeddings, got {got}. Crop the input, window it "
            f"(finetune's predict averages several crops per clip; stream long audio window by window), or "
            f"{self.longer_input_hint()}."
        )

    def tokenize(self, frames: Tensor) -> Tensor:
        """Local part after the front-end: frames ``[B, n_mels, T]`` -> tokens with time on dim 1."""
        raise NotImplementedError

    def encode(self, tokens: Tensor, output_hidden_states: bool = False) -> BackboneOutput:
        """Global part: tokens from :meth:`tokenize` -> :class:`BackboneOutput`."""
        raise NotImplementedError

    def stream_geometry(self) -> StreamGeometry:
        """How :meth:`frontend` and :meth:`tokenize` tile time (:class:`~backbones.geometry.StreamGeometry`), for
        streaming caches; a family that can stream window by window with cached columns describes itself here."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its streaming geometry")

    def check_waveform(self, waveform: Tensor | np.ndarray) -> Tensor:
        """The checks :meth:`forward` makes on its input, for callers that run :attr:`frontend` themselves
        (e.g. training augmentations on the features): the waveform as a ``[B, N]`` tensor on the model's device.

        Shapes:
            waveform: [B, N] or [N] -> [B, N].

        Raises:
            TypeError: not a tensor or numpy array of floats. ValueError: not [B, N] or [N].
            NonFiniteInputError: NaN or Inf samples. InputTooLongError: N > :attr:`max_samples`.
        """
        waveform = as_input_tensor(waveform, f"{self.name}: the waveform", self.device)
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        if waveform.dim() != 2:
            raise ValueError(
                f"{self.name}: expected a waveform batch [B, N], got shape {tuple(waveform.shape)}"
            )
        if not bool(torch.isfinite(waveform).all()):
            bad = (~torch.isfinite(waveform)).any(dim=1).nonzero()[:, 0].tolist()
            raise NonFiniteInputError(
                f"{self.name}: the waveform holds NaN or Inf samples (batch items {bad}); check the audio "
                "decoding and any gain or resampling applied before the model"
            )
        limit = self.max_samples
        if limit is not None and waveform.shape[-1] > limit:
            n = waveform.shape[-1]
            raise self.input_too_long(f"{n / self.sample_rate:.2f} s ({n} samples)")
        return waveform

    def forward(self, waveform: Tensor | np.ndarray, output_hidden_states: bool = False) -> BackboneOutput:
        """Run the whole backbone on a batch of mono waveforms at :attr:`sample_rate`.

        Input length: models with learned time positions (AST, PaSST) take at most :attr:`max_samples` samples
        and raise :class:`InputTooLongError` beyond (never a silent crop); crop or window longer audio, or use
        a variant built for longer clips. Globally pooled models (CNN14) take any length above their minimum.

        Input kind: a tensor or a numpy array of any float dtype, on any device; it is moved to the model's
        device, the front-end computes in float32 and its frames are cast to :attr:`compute_dtype`, so a model
        cast to bf16/fp16/fp64 takes float32 audio as it is.

        Shapes:
            waveform: [B, N] (or [N]) float in [-1, 1], finite.

        Raises:
            TypeError: the waveform is not a tensor or numpy array of floats (see :func:`as_input_tensor`).
            NonFiniteInputError: the waveform holds NaN or Inf.
            InputTooLongError: N > :attr:`max_samples`.
        """
        waveform = self.check_waveform(waveform)
        frames = self.frontend(waveform).to(self.compute_dtype)
        return self.encode(self.tokenize(frames), output_hidden_states=output_hidden_states)

    @property
    def device(self) -> torch.device:
        """Where the weights are (inputs are moved there)."""
        tensor = next(self.parameters(), None)
        return tensor.device if tensor is not None else next(self.buffers(), torch.empty(0)).device

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

    def filter_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Drop remapped tensors this instance does not hold (e.g. the AudioSet head when it is not kept).

        Runs after :meth:`remap_state_dict`, which depends on the checkpoint only; this depends on how the
        instance was built. The default keeps everything.
        """
        return state

    def frontend_tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensors an official checkpoint may carry for the front-end (outside ``state_dict``), with the shapes
        this front-end needs; see :meth:`adopt_frontend_tensors`. The default is none."""
        return {}

    def adopt_frontend_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        """Hand the checkpoint's front-end tensors (all of :meth:`frontend_tensor_shapes`, shapes checked) to the
        front-end; called only after the strict load succeeded."""
        raise NotImplementedError(f"{type(self).__name__} declares front-end tensors but cannot adopt them")

    def load_official_state_dict(self, state: Mapping[str, Tensor]) -> str:
        """Remap ``state`` from whatever official format it is in, filter it, and load it strictly; returns the
        detected format. Front-end tensors the checkpoint carries are checked with the rest and handed to the
        front-end after the load. Nothing is modified unless everything fits.

        Raises:
            CheckpointError: the keys belong to another family or hold NaN/Inf.
            CheckpointMismatchError: keys are missing, unexpected or mis-shaped (every one is listed).
        """
        remapped, fmt = self.remap_state_dict(state, self.pretrained_cfg)
        remapped = self.filter_state_dict(remapped)
        side = self.frontend_tensor_shapes()
        adopted = load_strict(self, remapped, source_format=fmt, model_name=self.name, side=side)
        if adopted:
            self.adopt_frontend_tensors(adopted)
        return fmt


def check_options(owner: str, given: Iterable[str], accepted: Iterable[str]) -> None:
    """Reject keyword options not in ``accepted``, naming each with the closest accepted name and listing all.

    Raises:
        ConfigError: some of ``given`` are unknown.
    """
    accepted = sorted(set(accepted))
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        named = ", ".join(f"{key!r}{did_you_mean(key, accepted)}" for key in unknown)
        raise ConfigError(f"{owner}: unknown option(s) {named}; accepted: {', '.join(accepted)}")


Builder = Callable[..., Backbone]


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    cfg: PretrainedCfg
    frontend_options: frozenset[str]
    builder_options: frozenset[str]


_REGISTRY: dict[str, _Entry] = {}


def _keyword_options(builder: Builder) -> frozenset[str]:
    """The keyword options of ``builder(cfg, *, ...)`` (its parameters after the config)."""
    params = list(inspect.signature(builder).parameters.values())[1:]
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return frozenset(p.name for p in params if p.kind in kinds)


def register_backbone(
    cfgs: Mapping[str, PretrainedCfg] | list[PretrainedCfg],
    frontend: type[MelFrontend] | None = None,
) -> Callable[[Builder], Builder]:
    """Function decorator: register ``builder(cfg, **options) -> Backbone`` under each cfg's name.

    ``frontend`` is the family's front-end class: every option of its constructor can then be overridden
    through :func:`build_backbone`, not only those the config lists.
    """
    cfg_list = list(cfgs.values()) if isinstance(cfgs, Mapping) else list(cfgs)
    frontend_options = frontend.option_names() if frontend is not None else frozenset()

    def decorator(builder: Builder) -> Builder:
        builder_options = _keyword_options(builder)
        for cfg in cfg_list:
            if "." not in cfg.name:
                raise ValueError(f"backbone names are 'family.tag', got {cfg.name!r}")
            if cfg.name in _REGISTRY:
                raise ValueError(f"backbone {cfg.name!r} is registered twice")
            clash = set(cfg.arch) & (set(cfg.frontend) | frontend_options | builder_options)
            if clash:
                raise ValueError(
                    f"{cfg.name}: options {sorted(clash)} are both architecture and other settings"
                )
            _REGISTRY[cfg.name] = _Entry(builder, cfg, frontend_options, builder_options)
        return builder

    return decorator


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names, sorted; ``pattern`` is an fnmatch filter such as ``"passt_s.*"``."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown backbone {name!r}.{hint} Known: {', '.join(list_backbones())}")
    return _REGISTRY[name]


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The pretrained config registered under ``name``."""
    return _entry(name).cfg


def build_backbone(name: str, **overrides: object) -> Backbone:
    """Build ``name`` with random weights.

    ``overrides`` replace entries of the config's ``arch`` settings (``depth=2, embed_dim=64`` for a tiny
    model), set any option of the family's front-end (``n_mels=64``, ``dft="fft"``, ``compression="pcen"``),
    or go to the family's builder (``keep_pretrained_head=True``).

    Raises:
        TypeError: an override is none of these (the message lists what is accepted).
    """
    entry = _entry(name)
    cfg = entry.cfg
    frontend_keys = set(cfg.frontend) | entry.frontend_options
    check_options(name, overrides, {*cfg.arch, *frontend_keys, *entry.builder_options})
    arch, frontend, options = dict(cfg.arch), dict(cfg.frontend), {}
    for key, value in overrides.items():
        if key in arch:
            arch[key] = value
        elif key in frontend_keys:
            frontend[key] = value
        else:
            options[key] = value
    cfg = dataclasses.replace(cfg, arch=arch, frontend=frontend)
    return entry.builder(cfg, **options)
