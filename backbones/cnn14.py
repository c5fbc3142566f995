"""PANNs CNN14 (Kong et al. 2020) at 32 kHz and 16 kHz behind the :class:`~backbones.base.Backbone` interface.

One parametrised module serves both released checkpoints (they differ only in the front-end) and the tiny test
configuration. Parameter names follow the original (``bn0``, ``conv_block{k}.conv1``, ``fc1``, ``fc_audioset``),
so the official state dict loads almost unchanged; its stored STFT and mel tensors are handed to the front-end
(:meth:`PannsLogMel.use_official_tensors`) so that outputs match the original bit for bit in the front-end.
Files without them (our own ``state_dict()`` saves) load with the computed tensors. Global pooling over time
makes any input length above :attr:`Cnn14.min_samples` valid: there is no maximum.

Stages::

    waveform [B, N] -> PannsLogMel -> frames [B, 64, T]
    tokenize: bn0 (+ SpecAugment in training) + conv_block1  -> tokens [B, T/2, 64, 32]   (time on dim 1)
    encode:   conv_block2..6, mean over mel, max + mean over time, fc1 + ReLU -> pooled [B, 2048]

``tokenize`` stops after the first block: everything up to there is local in time (a token column depends on
the frames around it only) and its 2-frame grid keeps 0.5 s hops (50 frames) aligned, whereas block 2's pool
would need hops that are multiples of 4 frames. Block 1 runs at full resolution and costs about 11 % of the
network's FLOPs, which a streaming cache then saves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Backbone, BackboneOutput, PretrainedCfg, as_input_tensor, register_backbone
from .frontends import PannsLogMel
from .geometry import StreamGeometry
from .state_dict import CheckpointError

__all__ = ["Cnn14", "CNN14_CFGS", "build_cnn14"]

logger = logging.getLogger(__name__)

_ZENODO = "https://zenodo.org/record/3987831/files/{}?download=1"
_WIDTHS = (64, 128, 256, 512, 1024, 2048)
# Module keyword arguments shared by the released checkpoints (the original's dropout and SpecAugment sizes).
_ARCH = MappingProxyType(
    {
        "widths": _WIDTHS,
        "dropout": 0.2,
        "embed_dropout": 0.5,
        "time_mask": 64,
        "freq_mask": 8,
        "mask_stripes": 2,
    }
)
_FRONTEND_32K = MappingProxyType(
    {
        "sample_rate": 32000,
        "n_fft": 1024,
        "hop_length": 320,
        "n_mels": 64,
        "f_min": 50.0,
        "f_max": 14000.0,
        "compression": "log",
        "cmvn": False,
    }
)
_FRONTEND_16K = MappingProxyType(
    {**_FRONTEND_32K, "sample_rate": 16000, "n_fft": 512, "hop_length": 160, "f_max": 8000.0}
)
_DESCRIPTION = (
    "PANNs CNN14 trained on AudioSet ({}). `pooled` is the original's 2048-d `embedding`; `logits` are "
    "pre-sigmoid, the original's `clipwise_output` is sigmoid(logits)."
)

CNN14_CFGS = {
    cfg.name: cfg
    for cfg in (
        PretrainedCfg(
            name="cnn14.audioset_32k",
            arch=_ARCH,
            frontend=_FRONTEND_32K,
            sample_rate=32000,
            input_seconds=10.0,
            url=_ZENODO.format("Cnn14_mAP%3D0.431.pth"),
            filename="Cnn14_mAP=0.431.pth",
            license="MIT",
            description=_DESCRIPTION.format("32 kHz, mAP 0.431"),
        ),
        PretrainedCfg(
            name="cnn14.audioset_16k",
            arch=_ARCH,
            frontend=_FRONTEND_16K,
            sample_rate=16000,
            input_seconds=10.0,
            url=_ZENODO.format("Cnn14_16k_mAP%3D0.438.pth"),
            filename="Cnn14_16k_mAP=0.438.pth",
            license="MIT",
            description=_DESCRIPTION.format("16 kHz, mAP 0.438; trained on the 32 kHz data decimated by 2"),
        ),
        PretrainedCfg(
            name="cnn14.tiny",
            arch=MappingProxyType({**_ARCH, "widths": (8, 16, 32, 32, 64, 64)}),
            frontend=_FRONTEND_32K,
            sample_rate=32000,
            input_seconds=10.0,
            license="MIT",
            description="Random-init CNN14 with narrow blocks (8..64 channels) for tests; no weights.",
        ),
    )
}

# Frozen front-end tensors stored in every PANNs file, in the argument order of ``use_official_tensors``.
_FRONTEND_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)
_HEAD_PREFIX = "fc_audioset."
# Keys that identify checkpoints of the other families, for a helpful error.
_FOREIGN_MARKERS = (
    ("AST (original YuanGongND layout)", "v.pos_embed"),
    ("AST (Hugging Face layout)", "audio_spectrogram_transformer.embeddings.position_embeddings"),
    ("PaSST", "time_new_pos_embed"),
    ("a ViT/DeiT", "blocks.0.attn.qkv.weight"),
)
_N_POOLS = 5  # 2x2 average pools after blocks 1-5


class ConvBlock(nn.Module):
    """Two 3x3 convolutions without bias, each followed by BatchNorm and ReLU, then an average pool.

    Shapes:
        x: [B, C_in, T, F] -> [B, C_out, T // p, F // p] with p = ``pool``.
    """

    def __init__(self, in_channels: int, out_channels: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)  # in place: BatchNorm's backward does not need it
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        return F.avg_pool2d(x, self.pool) if self.pool > 1 else x


def _drop_stripes(x: Tensor, dim: int, max_width: int, stripes: int) -> Tensor:
    """Zero ``stripes`` random bands of width ``[0, max_width)`` along ``dim`` of each example (SpecAugment).

    Shapes:
        x: [B, 1, T, F]; ``dim`` is 2 (time) or 3 (frequency).
    """
    size = x.shape[dim]
    batch = x.shape[0]
    width = torch.randint(0, max_width, (batch, stripes, 1), device=x.device).clamp(max=size)
    start = (
        (torch.rand(batch, stripes, 1, device=x.device) * (size - width + 1)).long().clamp(max=size - width)
    )
    pos = torch.arange(size, device=x.device)
    dropped = ((pos >= start) & (pos < start + width)).any(dim=1)  # [B, size]
    shape = [batch, 1, 1, 1]
    shape[dim] = size
    return x.masked_fill(dropped.view(shape), 0.0)


class Cnn14(Backbone):
    """CNN14 with the original's parameter names; see the module docstring for the stages.

    ``pooled`` is the original's ``embedding`` (after fc1 + ReLU). ``logits`` (only with
    ``keep_pretrained_head=True``) are the AudioSet head's pre-sigmoid outputs; the original's
    ``clipwise_output`` is ``sigmoid(logits)``. As in the original, the head reads the embedding before the
    training-time dropout, which applies to ``pooled`` only. ``hidden_states`` are the six blocks' outputs
    averaged over mel, ``[B, T_k, C_k]`` (lengths and widths differ per block; the last equals ``sequence``).

    ``token_stride`` is 2 (a token column of :meth:`tokenize` spans 2 frames); ``sequence`` steps span
    ``time_reduction`` = 32 frames (0.32 s). Any input length from :attr:`min_samples` on is accepted (global
    pooling, no position embeddings), so ``max_samples`` is None; shorter inputs are rejected.
    """

    default_lora_targets = ("conv1", "conv2", "fc1")

    def __init__(
        self,
        cfg: PretrainedCfg,
        widths: tuple[int, ...] = _WIDTHS,
        dropout: float = 0.2,
        embed_dropout: float = 0.5,
        keep_pretrained_head: bool = False,
        spec_augment: bool = False,
        time_mask: int = 64,
        freq_mask: int = 8,
        mask_stripes: int = 2,
    ) -> None:
        super().__init__(cfg)
        if len(widths) != _N_POOLS + 1:
            raise ValueError(f"{cfg.name}: CNN14 has {_N_POOLS + 1} conv blocks, got widths {tuple(widths)}")
        self.frontend = PannsLogMel(**cfg.frontend)
        if self.frontend.sample_rate != cfg.sample_rate:
            raise ValueError(
                f"{cfg.name}: front-end sample rate {self.frontend.sample_rate} != config {cfg.sample_rate}"
            )
        self.embed_dim = widths[-1]
        self.num_layers = len(widths)
        self.frame_hop = self.frontend.hop_length
        self.token_stride = 2
        self.time_reduction = 2**_N_POOLS  # frames per `sequence` step
        self.dropout, self.embed_dropout = dropout, embed_dropout
        self.spec_augment = spec_augment
        self.time_mask, self.freq_mask, self.mask_stripes = time_mask, freq_mask, mask_stripes

        self.bn0 = nn.BatchNorm2d(self.frontend.n_mels)
        in_ch = 1
        for k, width in enumerate(widths, start=1):
            self.add_module(f"conv_block{k}", ConvBlock(in_ch, width, pool=2 if k <= _N_POOLS else 1))
            in_ch = width
        self.fc1 = nn.Linear(in_ch, in_ch)
        self.fc_audioset = nn.Linear(in_ch, cfg.num_classes) if keep_pretrained_head else None

    @property
    def min_samples(self) -> int:
        """Shortest waveform that survives the five poolings (32 frames of the centred STFT)."""
        return (self.time_reduction - 1) * self.frame_hop

    def _blocks(self) -> list[ConvBlock]:
        return [getattr(self, f"conv_block{k}") for k in range(1, self.num_layers + 1)]

    def forward(self, waveform: Tensor | np.ndarray, output_hidden_states: bool = False) -> BackboneOutput:
        """Run the whole backbone; see :meth:`Backbone.forward`.

        Shapes:
            waveform: [B, N] float in [-1, 1] at :attr:`sample_rate`, N >= :attr:`min_samples`.
        """
        waveform = as_input_tensor(waveform, f"{self.name}: the waveform", self.device)
        if waveform.shape[-1] < self.min_samples:
            raise ValueError(
                f"{self.name} needs at least {self.min_samples} samples "
                f"({self.min_samples / self.sample_rate:.2f} s at {self.sample_rate} Hz) to survive its "
                f"{_N_POOLS} poolings, got {waveform.shape[-1]}"
            )
        return super().forward(waveform, output_hidden_states=output_hidden_states)

    def stream_geometry(self) -> StreamGeometry:
        """Centred, reflect-padded STFT frames; a token column is block 1's pooled output over 2 frames, whose
        two zero-padded 3x3 convolutions read 2 frames beyond them on each side (6 frames from ``2c - 2``)."""
        return StreamGeometry.of_frontend(
            self.frontend,
            column_stride=self.token_stride,
            column_pad=2,
            column_span=6,
            min_tokenize_frames=self.time_reduction,
            min_frames=self.time_reduction,
            max_samples=None,
        )

    def tokenize(self, frames: Tensor) -> Tensor:
        """bn0 (per mel bin, applied through transposes as in the original), SpecAugment when enabled and
        training, then conv_block1.

        Shapes:
            frames: [B, n_mels, T] log-mel with T >= 32 -> tokens [B, T // 2, C_1, n_mels // 2].
        """
        if frames.dim() != 3 or frames.shape[1] != self.bn0.num_features:
            raise ValueError(
                f"{self.name}: expected frames [B, {self.bn0.num_features}, T], got {tuple(frames.shape)}"
            )
        if frames.shape[-1] < self.time_reduction:
            raise ValueError(
                f"{self.name} needs at least {self.time_reduction} frames "
                f"({self.min_samples / self.sample_rate:.2f} s) to survive its {_N_POOLS} poolings, "
                f"got {frames.shape[-1]}"
            )
        x = frames.transpose(1, 2).unsqueeze(1)  # [B, 1, T, M], the original's layout
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        if self.training and self.spec_augment:
            x = _drop_stripes(x, 2, self.time_mask, self.mask_stripes)
            x = _drop_stripes(x, 3, self.freq_mask, self.mask_stripes)
        return self.conv_block1(x).transpose(1, 2)

    def encode(self, tokens: Tensor, output_hidden_states: bool = False) -> BackboneOutput:
        """conv_block2..6 with dropout between blocks, mean over mel, max + mean over time, fc1 + ReLU.

        Shapes:
            tokens: [B, T', C_1, F'] with T' >= 16 -> pooled [B, D], sequence [B, T' // 16, D].
        """
        if tokens.dim() != 4 or tokens.shape[1] < self.time_reduction // self.token_stride:
            raise ValueError(
                f"{self.name}: expected tokens [B, T' >= {self.time_reduction // self.token_stride}, C, F'], "
                f"got {tuple(tokens.shape)}"
            )
        x = tokens.transpose(1, 2)  # [B, C, T', F']
        hidden = [x.mean(dim=3).transpose(1, 2)] if output_hidden_states else []
        for block in self._blocks()[1:]:
            x = block(F.dropout(x, self.dropout, self.training))
            if output_hidden_states:
                hidden.append(x.mean(dim=3).transpose(1, 2))
        return self.summarize(x, tuple(hidden) if output_hidden_states else None)

    def summarize(self, x: Tensor, hidden_states: tuple[Tensor, ...] | None = None) -> BackboneOutput:
        """The end of :meth:`encode` after the last conv block: dropout, mean over mel, max + mean over time,
        fc1 + ReLU (and the AudioSet head). Streaming caches that compute the blocks themselves finish here.

        Shapes:
            x: [B, D, T6, F6] -> pooled [B, D], sequence [B, T6, D].
        """
        x = F.dropout(x, self.dropout, self.training).mean(dim=3)  # [B, D, T6]
        summary = F.dropout(x.amax(dim=2) + x.mean(dim=2), self.embed_dropout, self.training)
        embedding = F.relu(self.fc1(summary))
        logits = self.fc_audioset(embedding) if self.fc_audioset is not None else None
        steps = torch.arange(x.shape[-1], device=x.device, dtype=torch.float32)
        centres = (
            (steps * self.time_reduction + (self.time_reduction - 1) / 2) * self.frame_hop / self.sample_rate
        )
        return BackboneOutput(
            pooled=F.dropout(embedding, self.embed_dropout, self.training),
            sequence=x.transpose(1, 2),
            token_times=centres,
            grid=(x.shape[-1], 1),
            hidden_states=hidden_states,
            logits=logits,
        )

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Stem (bn0 + conv_block1), conv_block2..6, then fc1 (+ the AudioSet head)."""
        stem = [*self.bn0.parameters(), *self.conv_block1.parameters()]
        head = [
            *self.fc1.parameters(),
            *(self.fc_audioset.parameters() if self.fc_audioset is not None else ()),
        ]
        return [stem, *(list(b.parameters()) for b in self._blocks()[1:]), head]

    @classmethod
    def remap_state_dict(
        cls, state: Mapping[str, Tensor], cfg: PretrainedCfg
    ) -> tuple[dict[str, Tensor], str]:
        """PANNs ``.pth`` state dict (already unwrapped from ``'model'``) -> this module's keys.

        The layout is the original's; a ``module.`` prefix (a DataParallel save) is stripped. The front-end
        tensors are kept under their official names (see :meth:`frontend_tensor_shapes`). CNN14 and
        Cnn14_DecisionLevelMax files share every key, so the latter cannot be told apart and loads as CNN14.

        Raises:
            CheckpointError: the keys belong to another family or another PANNs architecture.
        """
        fmt = "panns"
        if state and all(k.startswith("module.") for k in state):
            state, fmt = (
                {k[len("module.") :]: v for k, v in state.items()},
                "panns (DataParallel 'module.' prefix)",
            )
        if "conv_block1.conv1.weight" not in state:
            for family, marker in _FOREIGN_MARKERS:
                if any(k == marker or k.endswith("." + marker) for k in state):
                    raise CheckpointError(f"{cfg.name}: this checkpoint looks like {family}, not PANNs CNN14")
            raise CheckpointError(
                f"{cfg.name}: not a PANNs CNN14 checkpoint (no conv_block1.conv1.weight among {len(state)} keys, "
                f"e.g. {', '.join(list(state)[:5])})"
            )
        blocks = sorted({k.split(".")[0] for k in state if k.startswith("conv_block")})
        if len(blocks) != _N_POOLS + 1:
            raise CheckpointError(
                f"{cfg.name}: this PANNs checkpoint has {len(blocks)} conv blocks (e.g. Cnn6/Cnn10), CNN14 has "
                f"{_N_POOLS + 1}"
            )
        return dict(state), fmt

    def filter_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Drop the AudioSet head's tensors unless the head is kept."""
        if self.fc_audioset is not None:
            return state
        return {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIX)}

    def frontend_tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The stored STFT and mel tensors of PANNs files, in the shapes this front-end needs."""
        bins, n_fft = self.frontend.n_fft // 2 + 1, self.frontend.n_fft
        shapes = ((bins, 1, n_fft), (bins, 1, n_fft), (bins, self.frontend.n_mels))
        return dict(zip(_FRONTEND_KEYS, shapes))

    def adopt_frontend_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        """Compute the front-end with the checkpoint's tensors, unless it was built with ``dft="fft"`` (a
        choice of speed over PANNs-exactness that loading weights should not undo)."""
        if self.frontend.dft == "fft":
            logger.info(
                "%s: dft='fft' keeps its computed front-end; the stored STFT/mel are unused", self.name
            )
            return
        self.frontend.use_official_tensors(*(tensors[k] for k in _FRONTEND_KEYS))


@register_backbone(CNN14_CFGS, frontend=PannsLogMel)
def build_cnn14(
    cfg: PretrainedCfg, *, keep_pretrained_head: bool = False, spec_augment: bool = False
) -> Cnn14:
    """Build a CNN14 from its config. ``spec_augment`` masks 2x64 time frames and 2x8 mel bins per example
    in training mode only, as the original did; it is off by default (fine-tuning recipes choose)."""
    return Cnn14(cfg, keep_pretrained_head=keep_pretrained_head, spec_augment=spec_augment, **cfg.arch)
