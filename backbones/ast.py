"""Audio Spectrogram Transformer (Gong et al., 2021) built from ``transformers``' AST modules.

The encoder blocks, embeddings' parameters and the AudioSet head are ``transformers`` modules
(``ASTModel``/``ASTMLPHead``, SDPA attention); this adapter splits their forward pass into
``frontend -> tokenize -> encode`` and adds what the HF port lacks: other input lengths (the original
YuanGongND position-embedding rule), structured patchout for training, and loading of both official layouts
(HF hub files with transformers-4 or -5 names, and the original ``audioset_10_10_0.4593.pth``).

The HF port uses LayerNorm eps 1e-12 everywhere; the original used 1e-6 in the ViT and 1e-5 in the head. The
registered config follows the HF port, so an original ``.pth`` loaded here behaves as the HF conversion of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import ASTConfig, ASTModel
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    ASTMLPHead,
)

from .base import Backbone, BackboneOutput, PretrainedCfg, register_backbone
from .frontends import KaldiFbank
from .geometry import StreamGeometry
from .state_dict import CheckpointError

__all__ = ["ASTBackbone", "AST_AUDIOSET", "AST_TINY", "build_ast"]

_KALDI_AUDIOSET: dict[str, Any] = {
    "sample_rate": 16000,
    "n_mels": 128,
    "frame_length": 400,
    "hop_length": 160,
    "n_fft": 512,
    "f_min": 20.0,
    "f_max": None,
    "preemphasis": 0.97,
    "remove_dc": True,
    "target_frames": 1024,
    "norm_mean": -4.2677393,
    "norm_std": 4.5689974,
    "compression": "log",
    "cmvn": False,
}
_ARCH_BASE: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "patch_size": 16,
    "frequency_stride": 10,
    "time_stride": 10,
    "max_length": 1024,
    "num_mel_bins": 128,
}

AST_AUDIOSET = PretrainedCfg(
    name="ast.audioset",
    arch=_ARCH_BASE,
    frontend=_KALDI_AUDIOSET,
    sample_rate=16000,
    input_seconds=10.24,
    hub_id="MIT/ast-finetuned-audioset-10-10-0.4593",
    filename="model.safetensors",
    license="BSD-3-Clause",
    num_classes=527,
    description="AST-Base 10x10 patch stride, ImageNet+AudioSet pretrained (mAP 0.459), HF port.",
    extra={
        "original_filename": "audioset_10_10_0.4593.pth",
        "original_repo": "https://github.com/YuanGongND/ast",
    },
)
AST_TINY = PretrainedCfg(
    name="ast.tiny",
    arch={
        **_ARCH_BASE,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    frontend=_KALDI_AUDIOSET,
    sample_rate=16000,
    input_seconds=10.24,
    description="Random-init AST (2 blocks, width 32) with the AudioSet front-end, for tests.",
)

# The original (YuanGongND, timm DeiT) names -> transformers-4 names, the layout of the HF hub files.
_ORIGINAL_TO_HF4 = (
    (r"^v\.cls_token$", "audio_spectrogram_transformer.embeddings.cls_token"),
    (r"^v\.dist_token$", "audio_spectrogram_transformer.embeddings.distillation_token"),
    (r"^v\.pos_embed$", "audio_spectrogram_transformer.embeddings.position_embeddings"),
    (r"^v\.patch_embed\.proj\.", "audio_spectrogram_transformer.embeddings.patch_embeddings.projection."),
    (r"^v\.blocks\.(\d+)\.norm1\.", r"audio_spectrogram_transformer.encoder.layer.\1.layernorm_before."),
    (r"^v\.blocks\.(\d+)\.norm2\.", r"audio_spectrogram_transformer.encoder.layer.\1.layernorm_after."),
    (
        r"^v\.blocks\.(\d+)\.attn\.proj\.",
        r"audio_spectrogram_transformer.encoder.layer.\1.attention.output.dense.",
    ),
    (r"^v\.blocks\.(\d+)\.mlp\.fc1\.", r"audio_spectrogram_transformer.encoder.layer.\1.intermediate.dense."),
    (r"^v\.blocks\.(\d+)\.mlp\.fc2\.", r"audio_spectrogram_transformer.encoder.layer.\1.output.dense."),
    (r"^v\.norm\.", "audio_spectrogram_transformer.layernorm."),
    (r"^mlp_head\.0\.", "classifier.layernorm."),
    (r"^mlp_head\.1\.", "classifier.dense."),
)
_ORIGINAL_QKV = re.compile(r"^v\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_ORIGINAL_UNUSED = re.compile(r"^v\.head(_dist)?\.")  # ImageNet DeiT heads, never used in forward
# transformers-4 (on disk) -> transformers-5 (in-memory) name fragments, applied in order.
_HF4_TO_HF5 = (
    (".encoder.layer.", ".layers."),
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
)
_LORA_TARGETS = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))
_OTHER_FAMILIES = {"freq_new_pos_embed": "PaSST", "conv_block1.conv1.weight": "PANNs CNN14"}
_PREFIX = "audio_spectrogram_transformer."


def _uses_hf5_names(ast: ASTModel) -> bool:
    """Whether the installed ``ASTModel`` names its blocks the transformers-5 way (``layers.{i}.attention.q_proj``)."""
    return any(key.startswith("layers.") for key in ast.state_dict())


def _installed_uses_hf5_names() -> bool:
    probe = ASTConfig(
        hidden_size=4,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=4,
        num_mel_bins=16,
        max_length=16,
    )
    return _uses_hf5_names(ASTModel(probe))


def _original_to_hf4(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if _ORIGINAL_UNUSED.match(key):
            continue
        if m := _ORIGINAL_QKV.match(key):
            block, kind = m.groups()
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[f"{_PREFIX}encoder.layer.{block}.attention.attention.{name}.{kind}"] = part
            continue
        for pattern, repl in _ORIGINAL_TO_HF4:
            if re.match(pattern, key):
                key = re.sub(pattern, repl, key)
                break
        out[key] = value  # unknown keys pass through and are reported as unexpected by the strict load
    return out


def _rename(key: str, to_hf5: bool) -> str:
    pairs = _HF4_TO_HF5 if to_hf5 else [(v5, v4) for v4, v5 in reversed(_HF4_TO_HF5)]
    for old, new in pairs:
        key = key.replace(old, new)
    return key


class ASTBackbone(Backbone):
    """AST adapter. Tokens are the patch-embedding conv output before position embeddings.

    Input length: the front-end pads or crops its frames to ``target_frames`` (1024, 10.24 s, as the original
    data loader and the HF feature extractor do), and the time positions are those of the stored table, cropped
    from its centre or interpolated to the token columns of ``target_frames`` frames (the original's
    ``input_tdim`` rule). Longer input raises :class:`~backbones.base.InputTooLongError` instead of being
    cropped; building with ``target_frames=N`` (or ``None``: as many frames as the input, up to the table's
    ``max_length``) changes the length.

    ``hidden_states`` holds the output of every transformer block (``num_layers`` tensors, before the final
    LayerNorm, ``[cls, dist, time-major patches]``). In training mode ``patchout=(t, f)`` drops ``t`` random
    time columns and ``f`` random frequency rows of tokens (after position embeddings), as PaSST does.
    """

    def __init__(self, cfg: PretrainedCfg, keep_pretrained_head: bool, patchout: tuple[int, int]) -> None:
        super().__init__(cfg)
        config = ASTConfig(**cfg.arch, num_labels=cfg.num_classes, attn_implementation="sdpa")
        if cfg.frontend["n_mels"] != config.num_mel_bins:
            raise ValueError(
                f"{cfg.name}: front-end n_mels={cfg.frontend['n_mels']} but the model expects "
                f"num_mel_bins={config.num_mel_bins}"
            )
        if (
            not isinstance(patchout, tuple | list)
            or len(patchout) != 2
            or any(not isinstance(n, int) or n < 0 for n in patchout)
        ):
            raise ValueError(f"{cfg.name}: patchout must be (time_columns, freq_rows) >= 0, got {patchout!r}")
        self.frontend = KaldiFbank(**cfg.frontend)
        self.audio_spectrogram_transformer = ASTModel(config)
        self.classifier = ASTMLPHead(config) if keep_pretrained_head else None
        self.patchout = tuple(patchout)
        self.embed_dim = config.hidden_size
        self.num_layers = config.num_hidden_layers
        self.frame_hop = self.frontend.hop_length
        self.token_stride = config.time_stride
        self.patch_size = config.patch_size
        self.grid_freq = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
        self.grid_time = (config.max_length - config.patch_size) // config.time_stride + 1
        target = self.frontend.target_frames
        self.max_frames = target if target is not None else config.max_length
        self.max_columns = (self.max_frames - config.patch_size) // config.time_stride + 1
        leaves = {name.rsplit(".", 1)[-1] for name, _ in self._blocks()[0].named_modules()}
        self.default_lora_targets = next(t for t in _LORA_TARGETS if set(t) <= leaves)

    def _blocks(self) -> nn.ModuleList:
        ast = self.audio_spectrogram_transformer
        return ast.layers if hasattr(ast, "layers") else ast.encoder.layer  # transformers 5 / 4 names

    def tokenize(self, frames: Tensor) -> Tensor:
        """Patch embeddings (conv 16x16, stride 10x10) before position embeddings.

        Shapes:
            frames: [B, n_mels, T] -> tokens [B, T', F', D] with T' = (T - 16) // 10 + 1, F' = 12.
        """
        n_mels = self.audio_spectrogram_transformer.config.num_mel_bins
        if frames.dim() != 3 or frames.shape[1] != n_mels or frames.shape[2] < self.patch_size:
            raise ValueError(
                f"{self.name}: expected frames [B, {n_mels}, T >= {self.patch_size}], got {tuple(frames.shape)}"
            )
        conv = self.audio_spectrogram_transformer.embeddings.patch_embeddings.projection
        return conv(frames.unsqueeze(1)).permute(0, 3, 2, 1)  # [B, D, F', T'] -> [B, T', F', D]

    def stream_geometry(self) -> StreamGeometry:
        """Kaldi frames (snip edges: no edge padding) padded to ``target_frames``; 16x16 patches every 10 frames,
        so the columns that read the constant padding after the last real frame are the dirty ones."""
        target = self.frontend.target_frames
        return StreamGeometry.of_frontend(
            self.frontend,
            column_stride=self.token_stride,
            column_pad=0,
            column_span=self.patch_size,
            min_tokenize_frames=self.patch_size,
            min_frames=1 if target is not None else self.patch_size,
            max_samples=self.max_samples,
            fixed_frames=target,
        )

    def position_grid(self, num_columns: int) -> Tensor:
        """Patch position embeddings for ``num_columns`` token columns, by the original AST rule: the stored
        table (freq-major, ``f * T' + t``) is cropped from the centre in time for fewer columns and
        bilinearly interpolated to ``(F', num_columns)`` for more.

        Shapes:
            returns [num_columns, F', D] (time-major).
        """
        table = self.audio_spectrogram_transformer.embeddings.position_embeddings[0, 2:]
        grid = table.reshape(self.grid_freq, self.grid_time, self.embed_dim)
        if num_columns < self.grid_time:
            start = self.grid_time // 2 - num_columns // 2
            grid = grid[:, start : start + num_columns]
        elif num_columns > self.grid_time:
            grid = F.interpolate(
                grid.permute(2, 0, 1).unsqueeze(0),
                size=(self.grid_freq, num_columns),
                mode="bilinear",
                align_corners=False,
            )[0].permute(1, 2, 0)
        return grid.transpose(0, 1)

    def token_times(self, num_columns: int) -> Tensor:
        """Centre time (seconds) of each token column: frames ``[t*stride, t*stride + patch)`` of
        ``frame_length``-sample frames every ``frame_hop`` samples.

        Shapes:
            returns [num_columns].
        """
        centre_frame = (
            torch.arange(num_columns, dtype=torch.float64) * self.token_stride + (self.patch_size - 1) / 2
        )
        centre_sample = centre_frame * self.frame_hop + self.frontend.frame_length / 2
        return (centre_sample / self.sample_rate).float()

    def _drop_patches(self, x: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
        drop_t, drop_f = self.patchout
        num_t, num_f = x.shape[1], x.shape[2]
        if drop_t >= num_t or drop_f >= num_f:
            raise ValueError(
                f"{self.name}: patchout {self.patchout} leaves no tokens of a {num_t}x{num_f} grid"
            )
        keep_t = torch.randperm(num_t, device=x.device)[: num_t - drop_t].sort().values
        keep_f = torch.randperm(num_f, device=x.device)[: num_f - drop_f].sort().values
        return x[:, keep_t][:, :, keep_f], times[keep_t.cpu()]

    def encode(self, tokens: Tensor, output_hidden_states: bool = False) -> BackboneOutput:
        """Position embeddings, [cls, dist] tokens, the encoder blocks, final LayerNorm and pooling.

        Shapes:
            tokens: [B, T', F', D] -> pooled [B, D], sequence [B, T'*F', D] (time-major), logits [B, 527].
        """
        if tokens.dim() != 4 or tokens.shape[2] != self.grid_freq or tokens.shape[3] != self.embed_dim:
            raise ValueError(
                f"{self.name}: expected tokens [B, T', {self.grid_freq}, {self.embed_dim}], got {tuple(tokens.shape)}"
            )
        emb = self.audio_spectrogram_transformer.embeddings
        batch, num_t = tokens.shape[:2]
        if num_t > self.max_columns:
            seconds = num_t * self.token_stride * self.frame_hop / self.sample_rate
            raise self.input_too_long(f"{num_t} token columns (~{seconds:.1f} s; at most {self.max_columns})")
        x = tokens + self.position_grid(num_t).to(tokens.dtype)
        times = self.token_times(num_t)
        if self.training and any(self.patchout):
            x, times = self._drop_patches(x, times)
        grid = (x.shape[1], x.shape[2])
        special = torch.cat([emb.cls_token, emb.distillation_token], dim=1) + emb.position_embeddings[:, :2]
        x = torch.cat([special.expand(batch, -1, -1).to(x.dtype), x.flatten(1, 2)], dim=1)
        hidden: list[Tensor] = []
        for block in self._blocks():
            out = block(x)
            x = out[0] if isinstance(out, tuple) else out  # transformers 4 blocks return tuples
            if output_hidden_states:
                hidden.append(x)
        x = self.audio_spectrogram_transformer.layernorm(x)
        pooled = (x[:, 0] + x[:, 1]) / 2
        return BackboneOutput(
            pooled=pooled,
            sequence=x[:, 2:],
            token_times=times.repeat_interleave(grid[1]).to(x.device),
            grid=grid,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            logits=self.classifier(pooled) if self.classifier is not None else None,
        )

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[patch conv + cls/dist/position embeddings], one group per block, [final LayerNorm + head]."""
        head = [*self.audio_spectrogram_transformer.layernorm.parameters()]
        if self.classifier is not None:
            head += list(self.classifier.parameters())
        stem = list(self.audio_spectrogram_transformer.embeddings.parameters())
        return [stem, *[list(block.parameters()) for block in self._blocks()], head]

    @classmethod
    def remap_state_dict(
        cls, state: Mapping[str, Tensor], cfg: PretrainedCfg
    ) -> tuple[dict[str, Tensor], str]:
        """Detect the layout (original YuanGongND ``.pth``, HF with transformers-4 or -5 names, with or without
        ``module.``/``audio_spectrogram_transformer.`` prefixes) and rename to the installed module's names."""
        state = dict(state)
        if all(k.startswith("module.") for k in state):
            state = {k[len("module.") :]: v for k, v in state.items()}
        for marker, family in _OTHER_FAMILIES.items():
            if any(k.endswith(marker) for k in state):
                raise CheckpointError(f"this looks like a {family} checkpoint, not an AST one ({cfg.name})")
        if any(k.startswith("embeddings.") for k in state):  # a bare ASTModel save
            state = {(k if k.startswith("classifier.") else _PREFIX + k): v for k, v in state.items()}
        if "v.pos_embed" in state:
            fmt, state = "ast-original (YuanGongND)", _original_to_hf4(state)
        elif any(".encoder.layer." in k for k in state):
            fmt = "hf-transformers4"
        elif any(k.startswith(_PREFIX + "layers.") for k in state):
            fmt = "hf-transformers5"
            state = {_rename(k, to_hf5=False): v for k, v in state.items()}
        else:
            raise CheckpointError(
                f"unrecognised checkpoint layout for {cfg.name}: expected the HF AST layout "
                f"('{_PREFIX}encoder.layer.*') or the original one ('module.v.blocks.*'); "
                f"first keys: {', '.join(list(state)[:5])}"
            )
        if _installed_uses_hf5_names():
            state = {_rename(k, to_hf5=True): v for k, v in state.items()}
        return state, fmt

    def filter_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Drop the AudioSet head's tensors unless the head is kept."""
        if self.classifier is not None:
            return state
        return {k: v for k, v in state.items() if not k.startswith("classifier.")}

    def longer_input_hint(self) -> str:
        return (
            f"build it for longer input, load_backbone({self.name!r}, target_frames=N): the time positions are "
            "then interpolated by the original AST rule, so fine-tune at that length"
        )


@register_backbone([AST_AUDIOSET, AST_TINY], frontend=KaldiFbank)
def build_ast(
    cfg: PretrainedCfg, *, keep_pretrained_head: bool = False, patchout: tuple[int, int] = (0, 0)
) -> ASTBackbone:
    """Build an AST backbone from ``cfg`` (random init).

    Args:
        keep_pretrained_head: build the AudioSet classifier (LayerNorm + Linear) and return its ``logits``.
        patchout: (time columns, frequency rows) of tokens dropped at random in training mode; off in eval.
    """
    return ASTBackbone(cfg, keep_pretrained_head=keep_pretrained_head, patchout=patchout)
