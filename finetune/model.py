"""``AudioModel`` = backbone (+ LoRA) + head; ``build_model``; ``save_pretrained`` / ``from_pretrained``.

>>> model = build_model("passt_s.tiny", head="linear", num_outputs=10, lora={"r": 8}, freeze="lora")
>>> out = model(waveform, labels=labels)          # out.logits [B, 10], out.loss
>>> model.save_pretrained("runs/x/model")
>>> same = AudioModel.from_pretrained("runs/x/model")

A saved directory holds ``config.json`` (backbone name and overrides, front-end settings, head name and config,
LoRA settings, freeze mode, label names, library version) and either ``model.safetensors`` (every tensor) or
``adapter.safetensors`` (only the trained tensors: LoRA, head and any unfrozen backbone layers; loading it needs
the base backbone, ``from_pretrained(dir, base_checkpoint=...)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from backbones import Backbone, BackboneOutput, get_pretrained_cfg, list_backbones, load_backbone
from backbones.checkpoints import CheckpointMismatchError, load_strict
from heads import Head, Task, build_head, head_config_class

from .lora import (
    LoraSettings,
    apply_lora,
    is_lora_parameter,
    lora_layers,
    merge_lora,
    merged_state_dict,
    unmerge_lora,
)

__all__ = [
    "AudioModel",
    "ModelOutput",
    "build_model",
    "FREEZE_MODES",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ADAPTER_NAME",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTER_NAME = "adapter.safetensors"
_FORMAT_VERSION = 1


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


def _train_all(backbone: Backbone, arg: str) -> set[int]:
    return {id(p) for p in backbone.parameters()}


def _train_none(backbone: Backbone, arg: str) -> set[int]:
    return set()


def _train_last_k(backbone: Backbone, arg: str) -> set[int]:
    groups = backbone.layer_groups()
    n_blocks = len(groups) - 2  # layer_groups() is [stem, blocks..., final]
    if not arg.isdigit() or not 0 <= int(arg) <= n_blocks:
        raise ValueError(
            f"freeze='last_k:<k>' needs an integer k in [0, {n_blocks}] for {backbone.name}, got {arg!r}"
        )
    k = int(arg)
    return {id(p) for group in groups[len(groups) - 1 - k :] for p in group}


# freeze mode -> the backbone parameters that stay trainable (LoRA parameters always train).
FREEZE_MODES: Mapping[str, Callable[[Backbone, str], set[int]]] = MappingProxyType(
    {"none": _train_all, "backbone": _train_none, "last_k": _train_last_k, "lora": _train_none}
)


def _parse_freeze(mode: str) -> tuple[str, str]:
    kind, _, arg = mode.partition(":")
    if kind not in FREEZE_MODES or (kind == "last_k") != bool(arg):
        raise ValueError(f"freeze must be one of 'none', 'backbone', 'last_k:<k>', 'lora'; got {mode!r}")
    return kind, arg


def _tuplify(value: Any) -> Any:
    """JSON lists back to tuples (configs use tuples for fixed-length settings)."""
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def _cfg_overrides(backbone: Backbone) -> dict[str, Any]:
    """The architecture / front-end settings where ``backbone`` differs from its registered config (all of them
    for a backbone that is not registered; such a model runs but cannot be rebuilt by :meth:`from_pretrained`)."""
    if backbone.name not in list_backbones():
        return {**backbone.pretrained_cfg.arch, **backbone.pretrained_cfg.frontend}
    registered = get_pretrained_cfg(backbone.name)
    own = {**backbone.pretrained_cfg.arch, **backbone.pretrained_cfg.frontend}
    base = {**registered.arch, **registered.frontend}
    return {k: v for k, v in own.items() if k not in base or base[k] != v}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


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
    """

    def __init__(
        self,
        backbone: Backbone,
        head: Head,
        *,
        lora: LoraSettings | None = None,
        freeze: str = "none",
        backbone_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        kind, _ = _parse_freeze(freeze)
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
        self.lora_settings = lora
        self.backbone_overrides = {**_cfg_overrides(backbone), **dict(backbone_overrides or {})}
        self.lora_modules = apply_lora(backbone, lora) if lora is not None else []
        self.freeze_mode = freeze
        self._premerge_weights: dict[str, Tensor] | None = None
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

    def set_freeze(self, freeze: str) -> None:
        """Change which backbone parameters train (see the class docstring); the head always trains."""
        kind, arg = _parse_freeze(freeze)
        if kind == "lora" and self.lora_settings is None:
            raise ValueError("freeze='lora' needs a model built with lora settings")
        trainable = FREEZE_MODES[kind](self.backbone, arg)
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
            for module in self.backbone.modules():
                params = list(module.parameters(recurse=False))
                if (
                    isinstance(module, nn.modules.batchnorm._BatchNorm)
                    and params
                    and not any(p.requires_grad for p in params)
                ):
                    module.eval()
        return self

    def compute_features(self, waveform: Tensor) -> Tensor:
        """The backbone's front-end frames, to cache and pass back as ``features``.

        Shapes:
            waveform: [B, N] at :attr:`sample_rate` -> [B, n_mels, T].
        """
        return self.backbone.frontend(waveform)

    def forward(
        self,
        waveform: Tensor | None = None,
        labels: Tensor | None = None,
        features: Tensor | None = None,
        output_hidden_states: bool = False,
        embeddings: Tensor | None = None,
    ) -> ModelOutput:
        """Predict (and score against ``labels``) from waveforms, precomputed front-end frames, or cached
        backbone ``pooled`` vectors (:mod:`finetune.embeddings`; heads with ``pooling="pooled"`` only).

        Shapes:
            waveform: [B, N] at :attr:`sample_rate`; features: [B, n_mels, T] from :meth:`compute_features`;
            embeddings: [B, D]; labels: what the head's ``loss`` takes ([B] class indices, [B, C] multi-label,
            [B, n] ratings).
        """
        if sum(x is not None for x in (waveform, features, embeddings)) != 1:
            raise ValueError(
                "pass exactly one of waveform [B, N], features [B, n_mels, T] or embeddings [B, D]"
            )
        if embeddings is not None:
            pooling = getattr(self.head.config, "pooling", None)
            if pooling != "pooled":
                raise ValueError(
                    f"embeddings= holds the backbone's pooled vectors; the {self.head.name!r} head pools with "
                    f"{pooling!r}, which needs the token sequence (use pooling='pooled' or waveforms)"
                )
            backbone_output = BackboneOutput(
                pooled=embeddings,
                sequence=embeddings[:, None],
                token_times=embeddings.new_zeros(1),
                grid=(1, 1),
            )
        elif features is not None:
            if features.dim() != 3:
                raise ValueError(
                    f"features must be front-end frames [B, n_mels, T], got shape {tuple(features.shape)}"
                )
            tokens = self.backbone.tokenize(features)
            backbone_output = self.backbone.encode(tokens, output_hidden_states=output_hidden_states)
        else:
            assert waveform is not None
            backbone_output = self.backbone(waveform, output_hidden_states=output_hidden_states)
        pooled = self.head.pool(backbone_output)
        prediction = self.head.project(pooled)
        loss = self.head.loss(prediction, labels) if labels is not None else None
        return ModelOutput(
            **{self.head.output_field: prediction}, loss=loss, pooled=pooled, backbone_output=backbone_output
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

    # ------------------------------------------------------------------------------------- save / load
    def config_dict(self, weights: str = "full") -> dict[str, Any]:
        """What ``config.json`` holds; ``weights`` is ``"full"``, ``"merged"`` or ``"adapter"``."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            lib_version = version("musicft")
        except PackageNotFoundError:
            lib_version = "unknown"
        lora = None if weights == "merged" or self.lora_settings is None else self.lora_settings.to_dict()
        freeze = "backbone" if weights == "merged" and self.freeze_mode == "lora" else self.freeze_mode
        cfg = self.backbone.pretrained_cfg
        return _jsonable(
            {
                "format_version": _FORMAT_VERSION,
                "library_version": lib_version,
                "weights": weights,
                "backbone": {
                    "name": self.backbone.name,
                    "overrides": self.backbone_overrides,
                    "sample_rate": self.backbone.sample_rate,
                    "embed_dim": self.backbone.embed_dim,
                    "frontend": dict(cfg.frontend),
                },
                "head": {
                    "name": self.head.name,
                    "in_dim": self.head.in_dim,
                    "config": self.head.config.to_dict(),
                },
                "lora": lora,
                "freeze": freeze,
                "labels": self.labels,
            }
        )

    def _adapter_state(self) -> dict[str, Tensor]:
        """Head tensors and every backbone module's tensors that train (LoRA and unfrozen layers)."""
        state = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        for mod_name, module in self.backbone.named_modules():
            own = dict(module.named_parameters(recurse=False))
            if not any(p.requires_grad for p in own.values()):
                continue
            prefix = f"backbone.{mod_name}." if mod_name else "backbone."
            for key, value in module.state_dict(keep_vars=False).items():
                if "." not in key:  # this module's own tensors (parameters and persistent buffers)
                    state[prefix + key] = value
        return state

    def _base_fingerprint(self, adapter_keys: Iterable[str]) -> str:
        """sha256 of the backbone parameters an adapter-only save relies on (the frozen base weights)."""
        skip = set(adapter_keys)
        h = hashlib.sha256()
        for name, param in sorted(self.backbone.named_parameters()):
            if f"backbone.{name}" not in skip:
                h.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
                h.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        return h.hexdigest()

    def save_pretrained(
        self, directory: str | os.PathLike[str], merge_lora: bool = False, adapter_only: bool = False
    ) -> Path:
        """Write ``config.json`` and the weights to ``directory`` (created if needed); returns the directory.

        Args:
            merge_lora: save the LoRA updates merged into plain backbone weights (a model without adapters).
            adapter_only: save only the trained tensors (``adapter.safetensors``); loading needs the base backbone.
        """
        if merge_lora and adapter_only:
            raise ValueError("merge_lora and adapter_only exclude each other")
        if merge_lora and self.lora_settings is None:
            raise ValueError("merge_lora=True but the model has no LoRA adapters")
        if self._premerge_weights is not None:
            raise ValueError("the LoRA adapters are merged; call unmerge_lora() before saving")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if adapter_only:
            state, weights, filename = self._adapter_state(), "adapter", ADAPTER_NAME
        elif merge_lora:
            backbone_state = {f"backbone.{k}": v for k, v in merged_state_dict(self.backbone).items()}
            head_state = {f"head.{k}": v for k, v in self.head.state_dict().items()}
            state, weights, filename = {**backbone_state, **head_state}, "merged", WEIGHTS_NAME
        else:
            state, weights, filename = self.state_dict(), "full", WEIGHTS_NAME
        config = self.config_dict(weights)
        if adapter_only:
            config["base_fingerprint"] = self._base_fingerprint(state)
        stale = out / (WEIGHTS_NAME if adapter_only else ADAPTER_NAME)
        stale.unlink(missing_ok=True)  # never leave two weight files that disagree
        save_file(
            {k: v.detach().cpu().clone().contiguous() for k, v in state.items()},
            str(out / filename),
            metadata={"format": "pt"},
        )
        (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return out

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
            ValueError: the given or base backbone does not match the saved one, or arguments do not fit.
        """
        path = Path(directory)
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{path} has no {CONFIG_NAME}; is it a directory written by save_pretrained?"
            )
        config = json.loads((path / CONFIG_NAME).read_text())
        if config.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path}/{CONFIG_NAME} has format_version {config.get('format_version')!r}, "
                f"this library reads {_FORMAT_VERSION}"
            )
        adapter = config["weights"] == "adapter"
        weights_file = path / (ADAPTER_NAME if adapter else WEIGHTS_NAME)
        if not weights_file.is_file():
            raise FileNotFoundError(f"{path} has a {CONFIG_NAME} but no {weights_file.name}")
        name = config["backbone"]["name"]
        overrides = {k: _tuplify(v) for k, v in config["backbone"]["overrides"].items()}
        if backbone is not None and base_checkpoint is not None:
            raise ValueError("pass base_checkpoint or backbone, not both")
        if backbone is not None:
            _check_same_backbone(backbone, name, overrides, path)
        elif adapter:
            if base_checkpoint is None:
                raise ValueError(
                    f"{path} holds only adapter weights; pass the base backbone checkpoint it was trained from: "
                    f"AudioModel.from_pretrained({str(path)!r}, base_checkpoint=...) (or backbone=...)"
                )
            backbone = load_backbone(name, checkpoint=base_checkpoint, **overrides)
        elif base_checkpoint is not None:
            raise ValueError(
                f"{path} holds full weights; base_checkpoint is only for adapter-only directories"
            )
        else:
            backbone = load_backbone(name, **overrides)
        head_cfg = config["head"]
        head = build_head(head_cfg["name"], head_cfg["in_dim"], **head_cfg["config"])
        lora = LoraSettings.from_dict(config["lora"]) if config["lora"] is not None else None
        model = cls(backbone, head, lora=lora, freeze=config["freeze"], backbone_overrides=overrides)
        state = load_file(str(weights_file), device="cpu")
        if adapter:
            model._load_adapter_state(state, config.get("base_fingerprint"), path)
        else:
            load_strict(
                model, state, source_format=f"{path.name}/{WEIGHTS_NAME}", model_name=f"AudioModel({name})"
            )
        return model.eval()

    def _load_adapter_state(self, state: Mapping[str, Tensor], fingerprint: str | None, path: Path) -> None:
        expected = self._adapter_state()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        mismatched = [
            (k, tuple(v.shape), tuple(expected[k].shape))
            for k, v in state.items()
            if k in expected and v.shape != expected[k].shape
        ]
        if missing or unexpected or mismatched:
            raise CheckpointMismatchError(
                f"AudioModel({self.backbone.name})",
                f"{path.name}/{ADAPTER_NAME}",
                missing,
                unexpected,
                mismatched,
            )
        if fingerprint is not None and fingerprint != self._base_fingerprint(state):
            raise ValueError(
                f"the adapter in {path} was trained on different {self.backbone.name} base weights than the ones "
                "given (their fingerprints differ); pass the base checkpoint it was trained from"
            )
        self.load_state_dict(dict(state), strict=False)


def _check_same_backbone(backbone: Backbone, name: str, overrides: Mapping[str, Any], path: Path) -> None:
    if lora_layers(backbone):
        raise ValueError(
            "the backbone given to from_pretrained already has LoRA adapters; pass the base backbone"
        )
    if backbone.name != name:
        raise ValueError(f"{path} was saved with backbone {name!r}, got {backbone.name!r}")
    own = {k: _tuplify(_jsonable(v)) for k, v in _cfg_overrides(backbone).items()}
    saved = {
        k: v
        for k, v in overrides.items()
        if k in {**backbone.pretrained_cfg.arch, **backbone.pretrained_cfg.frontend}
    }
    if own != saved:
        diff = sorted(k for k in set(own) | set(saved) if own.get(k) != saved.get(k))
        details = ", ".join(
            f"{k}: saved {saved.get(k, 'default')!r} vs given {own.get(k, 'default')!r}" for k in diff
        )
        raise ValueError(
            f"{path} was saved with different {name} settings than the backbone given: {details}"
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
    **head_config: Any,
) -> AudioModel:
    """Assemble a backbone, optional LoRA and a head.

    Args:
        backbone: a registered name (``"passt_s.audioset_swa"``) or a built :class:`backbones.Backbone`.
        head: a registered head (``linear``, ``mlp``, ``attention``, ``crnn``, ``rating``).
        num_outputs: classes or rating dimensions (default: ``len(labels)``, or the head's default).
        checkpoint: backbone weights, anything :func:`backbones.load_backbone` accepts (only with a name).
        lora: LoRA settings (``{"r": 8, "alpha": 16, "dropout": 0.0, "targets": [...]}``) or None.
        freeze: ``none``, ``backbone``, ``last_k:<k>`` or ``lora``; default ``lora`` with LoRA, else ``none``.
        labels: class / dimension names.
        backbone_overrides: architecture, front-end or builder settings (``depth=2``, ``patchout=(2, 1)``).
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
    return AudioModel(
        built,
        build_head(head, built.embed_dim, **config),
        lora=settings,
        freeze=mode,
        backbone_overrides=backbone_overrides,
    )
