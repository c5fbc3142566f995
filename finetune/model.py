"""``AudioModel`` = backbone (+ LoRA) + head; ``build_model``; ``save_pretrained`` / ``from_pretrained``.

>>> model = build_model("passt_s.tiny", head="linear", num_outputs=10, lora={"r": 8}, freeze="lora")
>>> out = model(waveform, labels=labels)          # out.logits [B, 10], out.loss
>>> model.save_pretrained("runs/x/model")
>>> same = AudioModel.from_pretrained("runs/x/model")

Training augmentations (``build_model(..., spec_augment=..., mixup=..., specmix=...)``) run inside
:meth:`AudioModel.forward` in training mode only, on the device, between the front-end and ``tokenize``; mixing
also mixes the targets, so the returned loss is the loss on the mixed targets (:mod:`finetune.data.augment.training`).
They are training settings, not part of a saved model.

What a saved directory holds, which of its fields are authoritative and the errors loading raises are described
in :mod:`finetune.serialization`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from backbones import Backbone, BackboneOutput, NonFiniteInputError, load_backbone
from backbones.base import as_input_tensor
from heads import SINGLE_LABEL, Head, HybridHead, Task, build_head, head_config_class

from . import serialization
from .calibration import Calibration, CalibrationError
from .data.augment import MixupConfig, SpecAugmentConfig, SpecMixConfig, TrainingAugment
from .freezing import FREEZE_MODES, hold_frozen_norm_statistics, parse_freeze, trainable_backbone_parameters
from .lora import LoraSettings, apply_lora, is_lora_parameter, merge_lora, unmerge_lora
from .serialization import ADAPTER_NAME, CONFIG_NAME, WEIGHTS_NAME, cfg_overrides

__all__ = [
    "AudioModel",
    "ModelOutput",
    "build_model",
    "FREEZE_MODES",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ADAPTER_NAME",
]


@dataclass
class ModelOutput:
    """What :meth:`AudioModel.forward` returns.

    Shapes:
        logits: [B, C] (classification heads) or None.
        ratings: [B, n] (rating head) or None.
        loss: [] when labels were given.
        pooled: [B, D'], the clip vector the head's output layer sees.
    """

    logits: Tensor | None = None
    ratings: Tensor | None = None
    loss: Tensor | None = None
    pooled: Tensor | None = None
    backbone_output: BackboneOutput | None = None


def _check_finite(x: Tensor, name: str) -> None:
    """Refuse NaN/Inf in precomputed inputs, as ``Backbone.forward`` does for waveforms (NaN in, NaN out)."""
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero()[:, 0].tolist()
        raise NonFiniteInputError(
            f"{name} hold NaN or Inf values (batch items {bad}); recompute them from finite audio"
        )


class AudioModel(nn.Module):
    """A backbone, optional LoRA adapters in it, and a task head.

    Args:
        backbone: the backbone (LoRA is injected into it in place).
        head: a head built for ``backbone.embed_dim``.
        lora: LoRA settings, or None.
        freeze: ``"none"`` (full fine-tune), ``"backbone"`` (linear probe; the backbone also stays in eval mode),
            ``"last_k:<k>"`` (train the last k blocks and the final norm), ``"lora"`` (train the adapters only).
            The head always trains. BatchNorm layers whose parameters are frozen keep their running statistics.
        backbone_overrides: builder keyword arguments used for the backbone (saved so it can be rebuilt).
        augment: batch augmentations of the training forward (:class:`finetune.data.augment.TrainingAugment`),
            or None; not saved with the model.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: Head,
        *,
        lora: LoraSettings | None = None,
        freeze: str = "none",
        backbone_overrides: Mapping[str, Any] | None = None,
        augment: TrainingAugment | None = None,
    ) -> None:
        super().__init__()
        kind, _ = parse_freeze(freeze)
        if kind == "lora" and lora is None:
            raise ValueError("freeze='lora' needs lora settings, e.g. lora={'r': 8}")
        if kind == "backbone" and lora is not None:
            raise ValueError("freeze='backbone' would freeze the LoRA adapters too; use freeze='lora'")
        if head.in_dim != backbone.embed_dim:
            raise ValueError(
                f"head built for in_dim={head.in_dim} but {backbone.name} has embed_dim={backbone.embed_dim}"
            )
        self.backbone = backbone
        self.head = head
        self.augment = augment
        self.lora_settings = lora
        self.backbone_overrides = {**cfg_overrides(backbone), **dict(backbone_overrides or {})}
        self.lora_modules = apply_lora(backbone, lora) if lora is not None else []
        self.freeze_mode = freeze
        self._premerge_weights: dict[str, Tensor] | None = None
        self._calibration: Calibration | None = None
        self.eval()  # built in eval mode, like load_backbone; call .train() to train
        self.set_freeze(freeze)

    @property
    def labels(self) -> tuple[str, ...]:
        """Class / rating-dimension names, in output order."""
        return self.head.labels

    @property
    def sample_rate(self) -> int:
        return self.backbone.sample_rate

    @property
    def task(self) -> Task:
        """What the outputs mean (the head's task): output field, targets, metrics (:mod:`heads.tasks`)."""
        return self.head.task

    @property
    def calibration(self) -> Calibration | None:
        """The post-hoc logit correction applied by :meth:`probabilities` (saved as ``calibration.json``)."""
        return self._calibration

    @calibration.setter
    def calibration(self, calibration: Calibration | None) -> None:
        if calibration is not None:
            if calibration.task != self.task.name or calibration.num_classes != len(self.labels):
                raise CalibrationError(
                    f"a {calibration.task} calibration for {calibration.num_classes} classes does not fit this "
                    f"{self.task.name} model with {len(self.labels)} outputs"
                )
            if calibration.labels is not None and tuple(calibration.labels) != self.labels:
                raise CalibrationError(
                    f"the calibration was fitted for classes {list(calibration.labels)}, the model has "
                    f"{list(self.labels)}; fit it again for this model"
                )
        self._calibration = calibration

    def probabilities(self, predictions: Tensor) -> Tensor:
        """What users read: calibrated class probabilities (softmax or sigmoid by task, after
        :attr:`calibration` when one is set), or the ratings themselves for a rating head.

        Shapes: [..., C] -> [..., C].
        """
        if self._calibration is not None:
            return self._calibration.probabilities(predictions)
        return self.task.probabilities(predictions)

    def set_freeze(self, freeze: str) -> None:
        """Change which backbone parameters train (see the class docstring); the head always trains."""
        if parse_freeze(freeze)[0] == "lora" and self.lora_settings is None:
            raise ValueError("freeze='lora' needs a model built with lora settings")
        trainable = trainable_backbone_parameters(self.backbone, freeze)
        for name, param in self.backbone.named_parameters():
            param.requires_grad_(id(param) in trainable or is_lora_parameter(name))
        for param in self.head.parameters():
            param.requires_grad_(True)
        self.freeze_mode = freeze
        self.train(self.training)

    def train(self, mode: bool = True) -> AudioModel:
        super().train(mode)
        if mode and self.freeze_mode == "backbone":
            self.backbone.eval()
        elif mode:
            hold_frozen_norm_statistics(self.backbone)
        return self

    def compute_features(self, waveform: Tensor | np.ndarray) -> Tensor:
        """The backbone's front-end frames (float32), to cache and pass back as ``features``.

        Shapes:
            waveform: [B, N] at :attr:`sample_rate` (a tensor or numpy array) -> [B, n_mels, T].
        """
        return self.backbone.frontend(as_input_tensor(waveform, "waveform", self.backbone.device))

    def forward(
        self,
        waveform: Tensor | np.ndarray | None = None,
        labels: Tensor | np.ndarray | None = None,
        features: Tensor | np.ndarray | None = None,
        output_hidden_states: bool = False,
        embeddings: Tensor | np.ndarray | None = None,
        descriptors: Tensor | np.ndarray | None = None,
    ) -> ModelOutput:
        """Predict (and score against ``labels``) from waveforms, precomputed front-end frames, or cached
        backbone ``pooled`` vectors (:mod:`finetune.embeddings`; heads with ``pooling="pooled"`` only).

        Inputs may be tensors or numpy arrays of floats on any device: they are moved to the model's device and
        cast to its weights' dtype (a bf16/fp16/fp64 model takes float32 input; see
        :meth:`backbones.Backbone.forward`); numpy labels become tensors.

        In training mode with :attr:`augment` set, the batch is augmented first (mixup on the waveform, then
        mixup / SpecMix / SpecAugment on the front-end features) and ``loss`` is the loss on the mixed targets.

        Shapes:
            waveform: [B, N] at :attr:`sample_rate`; features: [B, n_mels, T] from :meth:`compute_features`;
            embeddings: [B, D]; labels: what the head's ``loss`` takes ([B] class indices or [B, C] class
            probabilities, [B, C] multi-label, [B, n] ratings); descriptors: [B, K], the clips' descriptors
            (:mod:`finetune.descriptors`), for a ``hybrid`` head only (and required by it).

        Raises:
            TypeError: an input is not a tensor or numpy array of floats.
            backbones.NonFiniteInputError: an input holds NaN or Inf.
        """
        if sum(x is not None for x in (waveform, features, embeddings)) != 1:
            raise ValueError(
                "pass exactly one of waveform [B, N], features [B, n_mels, T] or embeddings [B, D]"
            )
        device = self.backbone.device
        if labels is not None:
            labels = torch.as_tensor(labels, device=device)
        if descriptors is not None:
            descriptors = as_input_tensor(descriptors, "descriptors", device)
            descriptors = descriptors.to(next(self.head.parameters()).dtype)
        if embeddings is not None:
            if self.training and self.augment is not None:
                raise ValueError(
                    "the model's training augmentations (spec_augment, mixup, specmix) act on waveforms or "
                    "front-end features; cached embeddings skip both. Train on waveforms, or drop the "
                    "augmentations (a recipe: data.cache_embeddings=false, or no model.mixup/specmix/spec_augment)"
                )
            return self.forward_embeddings(embeddings, labels, descriptors)
        if features is not None:
            features = as_input_tensor(features, "features", device).to(self.backbone.compute_dtype)
            if features.dim() != 3:
                raise ValueError(
                    f"features must be front-end frames [B, n_mels, T], got shape {tuple(features.shape)}"
                )
            _check_finite(features, "features")
        if self.training and self.augment is not None:
            waveform, features, labels, descriptors = self.augment.apply(
                self.backbone, waveform, features, labels, descriptors
            )
        if features is not None:
            tokens = self.backbone.tokenize(features)
            backbone_output = self.backbone.encode(tokens, output_hidden_states=output_hidden_states)
        else:
            assert waveform is not None
            backbone_output = self.backbone(waveform, output_hidden_states=output_hidden_states)
        pooled = self.head.pool(backbone_output)
        prediction = self._project(pooled, descriptors)
        return ModelOutput(
            **{self.head.output_field: prediction},
            loss=self._loss(prediction, labels),
            pooled=pooled,
            backbone_output=backbone_output,
        )

    def _loss(self, prediction: Tensor, labels: Tensor | np.ndarray | None) -> Tensor | None:
        """The head's loss; numpy labels become tensors on the prediction's device (their dtype is kept: the
        losses promote, and casting float targets down to a half-precision prediction would round them)."""
        if labels is None:
            return None
        return self.head.loss(prediction, torch.as_tensor(labels, device=prediction.device))

    def _project(self, pooled: Tensor, descriptors: Tensor | None) -> Tensor:
        """The head's prediction from the clip vector (and, for a hybrid head, the clips' descriptors)."""
        if isinstance(self.head, HybridHead):
            return self.head.project(pooled, descriptors)
        if descriptors is not None:
            raise ValueError(
                f"descriptors are an input of the hybrid head; the {self.head.name!r} head takes none"
            )
        return self.head.project(pooled)

    def forward_embeddings(
        self,
        embeddings: Tensor | np.ndarray,
        labels: Tensor | np.ndarray | None = None,
        descriptors: Tensor | np.ndarray | None = None,
    ) -> ModelOutput:
        """Run only the head, on cached backbone ``pooled`` vectors (:mod:`finetune.embeddings`).

        A head that pools with ``pooled`` feeds the backbone's own clip vector to its output layers, so its
        projection of a cached vector is what the waveform path computes; other poolings need the token sequence.

        Shapes:
            embeddings: [B, D] with D = ``backbone.embed_dim``; labels: what the head's ``loss`` takes;
            descriptors: [B, K] for a ``hybrid`` head.

        Raises:
            ValueError: the head does not pool with ``pooled``, or ``embeddings`` is not ``[B, D]``.
        """
        pooling = getattr(self.head.config, "pooling", None)
        if pooling != "pooled":
            raise ValueError(
                f"embeddings= holds the backbone's pooled vectors; the {self.head.name!r} head pools with "
                f"{pooling!r}, which needs the token sequence (use pooling='pooled' or waveforms)"
            )
        head_weight = next(self.head.parameters())
        embeddings = as_input_tensor(embeddings, "embeddings", head_weight.device).to(head_weight.dtype)
        if descriptors is not None:
            descriptors = as_input_tensor(descriptors, "descriptors", head_weight.device).to(
                head_weight.dtype
            )
        if embeddings.dim() != 2 or embeddings.shape[1] != self.head.in_dim:
            raise ValueError(
                f"embeddings must be the backbone's pooled vectors [B, {self.head.in_dim}], "
                f"got shape {tuple(embeddings.shape)}"
            )
        _check_finite(embeddings, "embeddings")
        prediction = self._project(embeddings, descriptors)
        return ModelOutput(
            **{self.head.output_field: prediction}, loss=self._loss(prediction, labels), pooled=embeddings
        )

    # ----------------------------------------------------------------------------------------------- LoRA
    def merge_lora(self) -> None:
        """Merge the LoRA updates into the backbone's weights (faster inference; undo with :meth:`unmerge_lora`)."""
        if self._premerge_weights is None:
            self._premerge_weights = merge_lora(self.backbone)

    def unmerge_lora(self) -> None:
        """Restore the weights :meth:`merge_lora` changed, bit for bit."""
        unmerge_lora(self.backbone, self._premerge_weights)
        self._premerge_weights = None

    @property
    def lora_merged(self) -> bool:
        """Whether :meth:`merge_lora` is in effect (such a model is not saved: unmerge first)."""
        return self._premerge_weights is not None

    # ------------------------------------------------------------------------------------- save / load
    def config_dict(self, weights: str = "full") -> dict[str, Any]:
        """What ``config.json`` holds; ``weights`` is ``"full"``, ``"merged"`` or ``"adapter"``."""
        return serialization.config_dict(self, weights)

    def save_pretrained(
        self, directory: str | os.PathLike[str], merge_lora: bool = False, adapter_only: bool = False
    ) -> Path:
        """Write ``config.json`` and the weights to ``directory`` (created if needed); returns the directory.

        Args:
            merge_lora: save the LoRA updates merged into plain backbone weights (a model without adapters).
            adapter_only: save only the trained tensors (``adapter.safetensors``); loading needs the base backbone.
        """
        return serialization.save_pretrained(
            self, directory, merge_lora=merge_lora, adapter_only=adapter_only
        )

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        base_checkpoint: str | os.PathLike[str] | None = None,
        backbone: Backbone | None = None,
    ) -> AudioModel:
        """Load a directory written by :meth:`save_pretrained`; the model comes back in eval mode.

        Args:
            base_checkpoint: for adapter-only directories, the backbone checkpoint the adapter was trained on
                (anything :func:`backbones.load_backbone` accepts).
            backbone: alternatively, the base backbone itself (without adapters); it must have the saved
                name and settings.

        Raises:
            FileNotFoundError: no ``config.json`` / weights in ``directory``.
            finetune.serialization.SavedModelError: ``config.json`` or the weights file is unreadable or
                inconsistent; the message names the file and what to fix.
            ValueError: the given or base backbone does not match the saved one, or arguments do not fit.
        """
        return serialization.load_pretrained(
            cls, directory, base_checkpoint=base_checkpoint, backbone=backbone
        )


def build_model(
    backbone: str | Backbone,
    head: str = "linear",
    num_outputs: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    lora: Mapping[str, Any] | LoraSettings | None = None,
    freeze: str | None = None,
    labels: Iterable[str] | None = None,
    backbone_overrides: Mapping[str, Any] | None = None,
    spec_augment: SpecAugmentConfig | Mapping[str, Any] | None = None,
    mixup: MixupConfig | Mapping[str, Any] | None = None,
    specmix: SpecMixConfig | Mapping[str, Any] | None = None,
    **head_config: Any,
) -> AudioModel:
    """Assemble a backbone, optional LoRA and a head.

    Args:
        backbone: a registered name (``"passt_s.audioset_swa"``) or a built :class:`backbones.Backbone`.
        head: a registered head (``linear``, ``mlp``, ``attention``, ``crnn``, ``rating``, ``hybrid``).
        num_outputs: classes or rating dimensions (default: ``len(labels)``, or the head's default).
        checkpoint: backbone weights, anything :func:`backbones.load_backbone` accepts (only with a name).
        lora: LoRA settings (``{"r": 8, "alpha": 16, "dropout": 0.0, "targets": [...]}``) or None.
        freeze: ``none``, ``backbone``, ``last_k:<k>`` or ``lora``; default ``lora`` with LoRA, else ``none``.
        labels: class / dimension names.
        backbone_overrides: architecture, front-end or builder settings (``depth=2``, ``patchout=(2, 1)``).
        spec_augment: SpecAugment masks on the front-end features in training
            (:class:`~finetune.data.augment.SpecAugmentConfig` or its fields as a mapping), or None.
        mixup: mixup in training (:class:`~finetune.data.augment.MixupConfig`: ``alpha``, ``p``, ``stage``), or None.
        specmix: SpecMix in training (:class:`~finetune.data.augment.SpecMixConfig`), or None.
        **head_config: the head config's other fields (``hidden_sizes``, ``dropout``, ``multi_label``, ...).
    """
    if isinstance(backbone, Backbone):
        if checkpoint is not None or backbone_overrides:
            raise ValueError(
                "checkpoint and backbone_overrides apply to a backbone name, not a built Backbone"
            )
        built = backbone
    else:
        built = load_backbone(backbone, checkpoint=checkpoint, **dict(backbone_overrides or {}))
    config = dict(head_config)
    if labels is not None:
        config["labels"] = tuple(labels)
    if num_outputs is not None:
        config["num_outputs"] = num_outputs
    elif labels is not None:
        config["num_outputs"] = len(config["labels"])
    num_field = next(f for f in dataclasses.fields(head_config_class(head)) if f.name == "num_outputs")
    if "num_outputs" not in config and num_field.default is dataclasses.MISSING:
        raise ValueError(f"head {head!r} needs num_outputs= (or labels=)")
    settings = lora if isinstance(lora, LoraSettings) or lora is None else LoraSettings.from_dict(lora)
    mode = freeze if freeze is not None else ("lora" if settings is not None else "none")
    built_head = build_head(head, built.embed_dim, **config)
    augment = TrainingAugment.from_settings(
        spec_augment,
        mixup,
        specmix,
        num_classes=len(built_head.labels) if built_head.task is SINGLE_LABEL else None,
    )
    return AudioModel(
        built,
        built_head,
        lora=settings,
        freeze=mode,
        backbone_overrides=backbone_overrides,
        augment=augment,
    )
