"""PaSST-S (Koutini et al., "Efficient Training of Audio Transformers with Patchout", 2022) behind the
:class:`~backbones.base.Backbone` interface.

A DeiT-style ViT over 16x16 mel patches (stride 10 or 16) with separable time and frequency position
embeddings, a class and a distillation token, and structured patchout during training. Parameter names follow
the released checkpoints (``time_new_pos_embed``, ``blocks.{i}.attn.qkv``, ``head.1``...), so the remap only
drops the unused ``head_dist`` (and the AudioSet ``head`` when it is not kept).

Outputs match the original: ``pooled`` is the mean of the final-normed class and distillation tokens and
``logits = head(pooled)``; ``head_dist`` is never used in the forward pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from .base import Backbone, BackboneOutput, PretrainedCfg, register_backbone
from .frontends import PasstMel
from .geometry import StreamGeometry
from .state_dict import CheckpointError

__all__ = ["PaSST", "build_passt", "PASST_CFGS"]

_RELEASES = "https://github.com/kkoutini/PaSST/releases/download"
_LICENSE = "Apache-2.0"
# The PaSST mel front-end as hear21passt's get_basic_model configures it (eval: 0 Hz to 15 kHz, hop 10 ms).
_MEL = dict(
    sample_rate=32000, n_mels=128, n_fft=1024, win_length=800, hop_length=320, f_min=0.0, f_max=15000.0,
    fmin_aug_range=10, fmax_aug_range=2000,
)  # fmt: skip
_S10 = dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, patch_size=16, stride=10, input_fdim=128)
# AudioSet pretraining used structured patchout of 40 time columns and 4 frequency rows (PaSST
# ex_audioset.py); kept in ``extra`` so a recipe can pass ``patchout=cfg.extra["pretrain_patchout"]``.
_PRETRAIN = {"pretrain_patchout": (40, 4)}


def _cfg(
    tag: str,
    file: str | None,
    desc: str,
    *,
    seconds: float = 10.0,
    hop: int = 320,
    extra: dict | None = None,
    **arch,
) -> PretrainedCfg:
    return PretrainedCfg(
        name=f"passt_s.{tag}",
        arch={**_S10, **arch},
        frontend={**_MEL, "hop_length": hop},
        sample_rate=32000,
        input_seconds=seconds,
        url=f"{_RELEASES}/{file}" if file else None,
        filename=file.rsplit("/", 1)[-1] if file else None,
        license=_LICENSE if file else "",
        num_classes=527,
        description=desc,
        extra=extra or {},
    )


PASST_CFGS: dict[str, PretrainedCfg] = {
    c.name: c
    for c in [
        _cfg(
            "audioset_swa",
            "v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
            "PaSST-S p16 s10 on AudioSet, weight-averaged (mAP .476)",
            input_tdim=998,
            extra=_PRETRAIN,
        ),
        _cfg(
            "audioset_kd",
            "v.0.0.9/passt-s-kd-ap.486.pt",
            "PaSST-S p16 s10 on AudioSet with knowledge distillation (mAP .486)",
            input_tdim=998,
            extra=_PRETRAIN,
        ),
        _cfg(
            "audioset_20s",
            "v0.0.5/passt-s-f128-20sec-p16-s10-ap.474-swa.pt",
            "PaSST-S p16 s10 with time positions for 20 s clips (mAP .474)",
            seconds=20.0,
            input_tdim=2000,
        ),
        _cfg(
            "audioset_30s",
            "v0.0.5/passt-s-f128-30sec-p16-s10-ap.473-swa.pt",
            "PaSST-S p16 s10 with time positions for 30 s clips (mAP .473)",
            seconds=30.0,
            input_tdim=3000,
        ),
        _cfg(
            "audioset_s16",
            "v0.0.2-audioset/passt-s-f128-p16-s16-ap.468.pt",
            "PaSST-S p16 s16, no patch overlap (mAP .468)",
            stride=16,
            input_tdim=998,
        ),
        _cfg(
            "audioset_hop100",
            "v0.0.3-audioset/passt-s-f128-stfthop100-p16-s10-ap.473-swa.pt",
            "PaSST-S p16 s10 on a mel with a 100-sample hop, 3200 frames per 10 s (mAP .473)",
            hop=100,
            input_tdim=3200,
        ),
        _cfg(
            "audioset_hop160",
            "v0.0.3-audioset/passt-s-f128-stfthop160-p16-s10-ap.473-swa.pt",
            "PaSST-S p16 s10 on a mel with a 160-sample hop, 2000 frames per 10 s (mAP .473)",
            hop=160,
            input_tdim=2000,
        ),
        _cfg(
            "tiny",
            None,
            "Random-init PaSST, 2 blocks of width 32, for tests",
            embed_dim=32,
            depth=2,
            num_heads=2,
            input_tdim=998,
        ),
    ]
}


@dataclasses.dataclass(frozen=True)
class _Arch:
    """Architecture settings (``PretrainedCfg.arch``); unknown keys raise TypeError."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    patch_size: int
    stride: int
    input_fdim: int  # mel bins
    input_tdim: int  # frames of the trained clip length; sets the number of time positions

    @property
    def grid(self) -> tuple[int, int]:
        """(frequency rows, time columns) of the position tables, computed as the original does."""
        return self.input_fdim // self.stride, self.input_tdim // self.stride


# Learned tokens and position tables (truncated-normal init, part of the stem for layer-wise LR decay).
_EMBEDDINGS = ("cls_token", "dist_token", "new_pos_embed", "freq_new_pos_embed", "time_new_pos_embed")
# Markers of other families' checkpoints, for a helpful error instead of a wall of missing keys.
_FOREIGN = {
    "conv_block1.conv1.weight": "a PANNs CNN14 checkpoint (conv_block*, fc_audioset); load it with cnn14.*",
    "module.v.pos_embed": "an original AST checkpoint (module.v.* keys); load it with ast.*",
    "v.pos_embed": "an original AST checkpoint (v.* keys); load it with ast.*",
    "audio_spectrogram_transformer.embeddings.position_embeddings": "a Hugging Face AST checkpoint (ast.*)",
    "pos_embed": "an ImageNet ViT/DeiT checkpoint (one 2-D pos_embed, not separable time/freq positions)",
}


class PaSST(Backbone):
    """PaSST-S: patch conv, separable positions, ``depth`` timm ViT blocks, class + distillation tokens.

    Args:
        cfg: the pretrained config; ``cfg.arch`` holds :class:`_Arch` fields, ``cfg.frontend`` the
            :class:`~backbones.frontends.PasstMel` settings.
        keep_pretrained_head: build the AudioSet head (``logits``); otherwise it is not built and its
            checkpoint tensors are dropped.
        patchout: ``(time columns, frequency rows)`` removed at random (the same for the whole batch) in
            ``train()`` mode only (structured patchout); asking for all columns or rows raises ValueError.
            The AudioSet pretraining used ``(40, 4)``; hear21passt's default is ``(0, 0)``.

    Input length: at most :attr:`max_samples` (the clip length the time positions were trained for, 10.05 s
    for the 10 s models); longer input raises :class:`~backbones.base.InputTooLongError`, shorter input uses
    the leading time positions.
    """

    default_lora_targets = ("qkv",)

    def __init__(
        self, cfg: PretrainedCfg, *, keep_pretrained_head: bool = False, patchout: tuple[int, int] = (0, 0)
    ):
        super().__init__(cfg)
        arch = _Arch(**cfg.arch)
        if len(patchout) != 2 or not all(isinstance(p, int) and p >= 0 for p in patchout):
            raise ValueError(f"patchout must be two non-negative integers (time, freq), got {patchout!r}")
        self.arch, self.patchout = arch, (int(patchout[0]), int(patchout[1]))
        self.frontend = PasstMel(**cfg.frontend)
        if self.frontend.n_mels != arch.input_fdim:
            raise ValueError(
                f"{cfg.name}: front-end has {self.frontend.n_mels} mels, the model {arch.input_fdim}"
            )
        d, (n_f, n_t) = arch.embed_dim, arch.grid
        self.embed_dim, self.num_layers = d, arch.depth
        self.frame_hop, self.token_stride = self.frontend.hop_length, arch.stride
        self.max_frames = (
            n_t * arch.stride + arch.patch_size - 1
        )  # the most frames whose columns have a position
        # Names and shapes as in the released checkpoints.
        self.patch_embed = nn.ModuleDict({"proj": nn.Conv2d(1, d, arch.patch_size, stride=arch.stride)})
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, n_f, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, n_t))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *[
                Block(d, arch.num_heads, mlp_ratio=arch.mlp_ratio, qkv_bias=True, norm_layer=norm)
                for _ in range(arch.depth)
            ]
        )
        self.norm = norm(d)
        self.head = (
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.num_classes)) if keep_pretrained_head else None
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for name in _EMBEDDINGS:
            nn.init.trunc_normal_(getattr(self, name), std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def tokenize(self, frames: Tensor) -> Tensor:
        """Patch embeddings before positions.

        Shapes:
            frames: [B, n_mels, T] -> tokens [B, T', F', D] with T' = (T - 16) // stride + 1.
        """
        if frames.dim() != 3 or frames.shape[1] != self.arch.input_fdim:
            raise ValueError(
                f"{self.name}: expected frames [B, {self.arch.input_fdim}, T], got {tuple(frames.shape)}"
            )
        if frames.shape[-1] < self.arch.patch_size:
            raise ValueError(
                f"{self.name}: needs at least {self.arch.patch_size} frames "
                f"({self.arch.patch_size * self.frame_hop / self.sample_rate:.2f} s), got {frames.shape[-1]}"
            )
        return self.patch_embed["proj"](frames.unsqueeze(1)).permute(0, 3, 2, 1)

    def stream_geometry(self) -> StreamGeometry:
        """Centred, reflect-padded STFT frames after pre-emphasis (one raw sample of context); patches of
        ``patch_size`` frames every ``stride`` frames, no padding: only columns over reflect-padded frames are
        dirty (column 0 at the start of a window)."""
        return StreamGeometry.of_frontend(
            self.frontend,
            column_stride=self.arch.stride,
            column_pad=0,
            column_span=self.arch.patch_size,
            min_tokenize_frames=self.arch.patch_size,
            min_frames=self.arch.patch_size,
            max_samples=self.max_samples,
        )

    def _token_times(self, columns: Tensor, n_rows: int) -> Tensor:
        centre_frames = columns * self.arch.stride + (self.arch.patch_size - 1) / 2
        return (centre_frames * self.frame_hop / self.sample_rate).repeat_interleave(n_rows)

    def encode(self, tokens: Tensor, output_hidden_states: bool = False) -> BackboneOutput:
        """Positions, patchout (train only), class/distillation tokens, blocks, final norm and pooling.

        ``hidden_states`` holds each block's output, ``num_layers`` tensors ``[B, 2 + L, D]`` (class and
        distillation tokens first, before the final norm). Shorter inputs use the leading time positions.

        Shapes:
            tokens: [B, T', F', D] -> pooled [B, D], sequence [B, T' * F', D] (time-major), logits [B, 527].
        """
        n_f, n_t = self.arch.grid
        if tokens.dim() != 4 or tokens.shape[2:] != (n_f, self.embed_dim):
            raise ValueError(
                f"{self.name}: expected tokens [B, T', {n_f}, {self.embed_dim}], got {tuple(tokens.shape)}"
            )
        b, t = tokens.shape[:2]
        if t > n_t:
            seconds = t * self.arch.stride * self.frame_hop / self.sample_rate
            raise self.input_too_long(f"{t} token columns (~{seconds:.1f} s; at most {n_t})")
        x = tokens + self.time_new_pos_embed[0, :, 0, :t].t()[None, :, None, :]
        x = x + self.freq_new_pos_embed[0, :, :, 0].t()[None, None, :, :]
        columns = torch.arange(t, device=x.device)
        if self.training and any(self.patchout):
            if self.patchout[0] >= t or self.patchout[1] >= n_f:
                raise ValueError(
                    f"{self.name}: patchout {self.patchout} leaves no tokens of a {t}x{n_f} grid"
                )
            if self.patchout[0]:  # the same draws, in the same order, as the original
                columns = torch.randperm(t, device=x.device)[: t - self.patchout[0]].sort().values
                x = x[:, columns]
            if self.patchout[1]:
                rows = torch.randperm(n_f, device=x.device)[: n_f - self.patchout[1]].sort().values
                x = x[:, :, rows]
        grid = (x.shape[1], x.shape[2])
        special = torch.cat([self.cls_token, self.dist_token], dim=1) + self.new_pos_embed
        x = torch.cat([special.expand(b, -1, -1).to(x.dtype), x.flatten(1, 2)], dim=1)
        hidden: list[Tensor] = []
        for block in self.blocks:
            x = block(x)
            if output_hidden_states:
                hidden.append(x)
        x = self.norm(x)
        pooled = (x[:, 0] + x[:, 1]) / 2
        return BackboneOutput(
            pooled=pooled,
            sequence=x[:, 2:],
            token_times=self._token_times(columns.to(torch.float32), grid[1]),
            grid=grid,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            logits=self.head(pooled) if self.head is not None else None,
        )

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Stem (patch conv, tokens, positions), one group per block, then final norm and head."""
        stem = [*self.patch_embed.parameters(), *(getattr(self, name) for name in _EMBEDDINGS)]
        last = [*self.norm.parameters(), *(self.head.parameters() if self.head is not None else [])]
        return [stem, *[list(b.parameters()) for b in self.blocks], last]

    @classmethod
    def remap_state_dict(
        cls, state: Mapping[str, Tensor], cfg: PretrainedCfg
    ) -> tuple[dict[str, Tensor], str]:
        """Released PaSST files (bare or under ``'model'``) -> this module: drop the unused ``head_dist``.

        Raises:
            CheckpointError: the keys are those of another family (CNN14, AST, ImageNet ViT) or unknown.
        """
        if "time_new_pos_embed" in state and "freq_new_pos_embed" in state:
            return {k: v for k, v in state.items() if not k.startswith("head_dist.")}, "passt"
        for marker, looks_like in _FOREIGN.items():
            if marker in state:
                raise CheckpointError(
                    f"{cfg.name}: this checkpoint is not a PaSST checkpoint; it looks like {looks_like}"
                )
        raise CheckpointError(
            f"{cfg.name}: unrecognised checkpoint (no time_new_pos_embed / freq_new_pos_embed); "
            f"first keys: {', '.join(list(state)[:5])}"
        )

    def filter_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Drop the AudioSet ``head.*`` tensors unless the head is kept."""
        if self.head is not None:
            return state
        return {k: v for k, v in state.items() if not k.startswith("head.")}

    def longer_input_hint(self) -> str:
        longer = [
            name
            for name, cfg in PASST_CFGS.items()
            if cfg.has_weights and cfg.input_seconds > self.pretrained_cfg.input_seconds
        ]
        if not longer:
            return "use a variant trained on longer clips"
        return f"use {' / '.join(longer)}, trained on longer clips"


@register_backbone(PASST_CFGS, frontend=PasstMel)
def build_passt(
    cfg: PretrainedCfg, *, keep_pretrained_head: bool = False, patchout: tuple[int, int] = (0, 0)
) -> PaSST:
    """Build a PaSST-S backbone from its config (see :class:`PaSST` for the options)."""
    return PaSST(cfg, keep_pretrained_head=keep_pretrained_head, patchout=patchout)
