"""Saving and loading :class:`finetune.model.AudioModel` directories (``AudioModel.save_pretrained`` /
``AudioModel.from_pretrained`` call these functions).

A saved directory holds ``config.json`` (backbone name and overrides, front-end settings, head name and config,
LoRA settings, freeze mode, label names, library version) and either ``model.safetensors`` (every tensor) or
``adapter.safetensors`` (only the trained tensors: LoRA, head and any unfrozen backbone layers; loading it needs
the base backbone, ``from_pretrained(dir, base_checkpoint=...)``).

Authoritative fields. The model is rebuilt from ``backbone.name`` + ``backbone.overrides``, ``head.name`` +
``head.in_dim`` + ``head.config``, ``lora`` and ``freeze``. Other fields repeat what these fix, for people and
tools that read the file, and loading checks that they still agree instead of ignoring an edit:

- ``labels`` copies the head's labels (``head.config.labels``), which are authoritative: they name the outputs
  in the order the weights were trained. Rename classes in ``head.config.labels`` and keep the copy equal.
- ``backbone.sample_rate``, ``backbone.embed_dim`` and ``backbone.frontend`` describe the backbone that the name
  and overrides build. The sample rate is the registered backbone's and cannot be changed by editing the file;
  front-end settings change only through ``backbone.overrides``.

Errors. A ``config.json`` that is not JSON, not a JSON object, lacks a key or holds a wrong type, a copy that
disagrees with its source, and a weights file that safetensors cannot read (truncated or damaged) raise
:class:`SavedModelError`, a ``ValueError`` whose message names the file and what to fix. Weights whose keys or
shapes do not fit the rebuilt model raise :class:`backbones.state_dict.CheckpointMismatchError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from backbones import Backbone, get_pretrained_cfg, list_backbones, load_backbone
from backbones.state_dict import CheckpointMismatchError, load_strict
from heads import build_head

from .calibration import CALIBRATION_NAME, Calibration
from .lora import LoraSettings, lora_layers, merged_state_dict

if TYPE_CHECKING:
    from .model import AudioModel

    M = TypeVar("M", bound=AudioModel)

__all__ = [
    "ADAPTER_NAME",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "SavedModelError",
    "WEIGHTS_NAME",
    "config_dict",
    "load_pretrained",
    "read_config",
    "save_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTER_NAME = "adapter.safetensors"
FORMAT_VERSION = 1
_WEIGHT_KINDS = ("full", "merged", "adapter")

# The keys loading reads: dotted path -> (JSON types allowed, what the key holds).
_REQUIRED: Mapping[str, tuple[tuple[type, ...], str]] = {
    "weights": ((str,), "'full', 'merged' or 'adapter'"),
    "backbone": ((dict,), "the backbone's name and overrides"),
    "backbone.name": ((str,), "a registered backbone name"),
    "backbone.overrides": ((dict,), "the backbone's architecture / front-end settings"),
    "head": ((dict,), "the head's name, in_dim and config"),
    "head.name": ((str,), "a registered head name"),
    "head.in_dim": ((int,), "the head's input width"),
    "head.config": ((dict,), "the head config's fields"),
    "lora": ((dict, type(None)), "the LoRA settings, or null"),
    "freeze": ((str,), "the freeze mode"),
}
_JSON_NAMES: Mapping[type, str] = {
    dict: "a JSON object",
    list: "a JSON list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


class SavedModelError(ValueError):
    """A file of a saved-model directory is unreadable or inconsistent; ``file`` is its path."""

    def __init__(self, file: Path, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = file


def tuplify(value: Any) -> Any:
    """JSON lists back to tuples (configs use tuples for fixed-length settings)."""
    return tuple(tuplify(v) for v in value) if isinstance(value, list) else value


def jsonable(value: Any) -> Any:
    """Tuples to lists and mapping keys to strings, recursively: the value as ``config.json`` stores it."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def cfg_overrides(backbone: Backbone) -> dict[str, Any]:
    """The architecture / front-end settings where ``backbone`` differs from its registered config (all of them
    for a backbone that is not registered; such a model runs but cannot be rebuilt by ``from_pretrained``)."""
    own = {**backbone.pretrained_cfg.arch, **backbone.pretrained_cfg.frontend}
    if backbone.name not in list_backbones():
        return own
    registered = get_pretrained_cfg(backbone.name)
    base = {**registered.arch, **registered.frontend}
    return {k: v for k, v in own.items() if k not in base or base[k] != v}


# ------------------------------------------------------------------------------------------------------ save


def config_dict(model: AudioModel, weights: str = "full") -> dict[str, Any]:
    """What ``config.json`` holds; ``weights`` is ``"full"``, ``"merged"`` or ``"adapter"``."""
    try:
        lib_version = version("musicft")
    except PackageNotFoundError:
        lib_version = "unknown"
    lora = None if weights == "merged" or model.lora_settings is None else model.lora_settings.to_dict()
    freeze = "backbone" if weights == "merged" and model.freeze_mode == "lora" else model.freeze_mode
    return jsonable(
        {
            "format_version": FORMAT_VERSION,
            "library_version": lib_version,
            "weights": weights,
            "backbone": {
                "name": model.backbone.name,
                "overrides": model.backbone_overrides,
                "sample_rate": model.backbone.sample_rate,
                "embed_dim": model.backbone.embed_dim,
                "frontend": dict(model.backbone.pretrained_cfg.frontend),
            },
            "head": {
                "name": model.head.name,
                "in_dim": model.head.in_dim,
                "config": model.head.config.to_dict(),
            },
            "lora": lora,
            "freeze": freeze,
            "labels": model.labels,
        }
    )


def adapter_state(model: AudioModel) -> dict[str, Tensor]:
    """Head tensors and every backbone module's tensors that train (LoRA and unfrozen layers)."""
    state = {f"head.{k}": v for k, v in model.head.state_dict().items()}
    for mod_name, module in model.backbone.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not any(p.requires_grad for p in own.values()):
            continue
        prefix = f"backbone.{mod_name}." if mod_name else "backbone."
        for key, value in module.state_dict(keep_vars=False).items():
            if "." not in key:  # this module's own tensors (parameters and persistent buffers)
                state[prefix + key] = value
    return state


def base_fingerprint(backbone: Backbone, adapter_keys: Iterable[str]) -> str:
    """sha256 of the backbone parameters an adapter-only save relies on (the frozen base weights)."""
    skip = set(adapter_keys)
    h = hashlib.sha256()
    for name, param in sorted(backbone.named_parameters()):
        if f"backbone.{name}" not in skip:
            h.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
            h.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_pretrained(
    model: AudioModel, directory: str | os.PathLike[str], merge_lora: bool = False, adapter_only: bool = False
) -> Path:
    """Write ``config.json`` and the weights of ``model`` to ``directory`` (created if needed); returns it.

    Args:
        merge_lora: save the LoRA updates merged into plain backbone weights (a model without adapters).
        adapter_only: save only the trained tensors (``adapter.safetensors``); loading needs the base backbone.
    """
    if merge_lora and adapter_only:
        raise ValueError("merge_lora and adapter_only exclude each other")
    if merge_lora and model.lora_settings is None:
        raise ValueError("merge_lora=True but the model has no LoRA adapters")
    if model.lora_merged:
        raise ValueError("the LoRA adapters are merged; call unmerge_lora() before saving")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if adapter_only:
        state, weights, filename = adapter_state(model), "adapter", ADAPTER_NAME
    elif merge_lora:
        backbone_state = {f"backbone.{k}": v for k, v in merged_state_dict(model.backbone).items()}
        head_state = {f"head.{k}": v for k, v in model.head.state_dict().items()}
        state, weights, filename = {**backbone_state, **head_state}, "merged", WEIGHTS_NAME
    else:
        state, weights, filename = model.state_dict(), "full", WEIGHTS_NAME
    config = config_dict(model, weights)
    if adapter_only:
        config["base_fingerprint"] = base_fingerprint(model.backbone, state)
    stale = out / (WEIGHTS_NAME if adapter_only else ADAPTER_NAME)
    stale.unlink(missing_ok=True)  # never leave two weight files that disagree
    save_file(
        {k: v.detach().cpu().clone().contiguous() for k, v in state.items()},
        str(out / filename),
        metadata={"format": "pt"},
    )
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    stale_calibration = out / CALIBRATION_NAME
    stale_calibration.unlink(missing_ok=True)  # a calibration fitted for other weights must not survive
    if model.calibration is not None:
        model.calibration.save(out)
    return out


# ------------------------------------------------------------------------------------------------------ load


def _json_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the ``config.json`` of a saved-model directory (every key loading reads, with its type).

    Raises:
        FileNotFoundError: ``directory`` has no ``config.json``.
        SavedModelError: not JSON, not an object, another format version, a missing key or a wrong type.
    """
    file = Path(directory) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(
            f"{Path(directory)} has no {CONFIG_NAME}; is it a directory written by save_pretrained?"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SavedModelError(
            file,
            f"not valid JSON ({e}); restore the file written by save_pretrained, or save the model again",
        ) from e
    if not isinstance(config, dict):
        raise SavedModelError(
            file,
            f"expected a JSON object with the keys {', '.join(k for k in _REQUIRED if '.' not in k)}, "
            f"got {_json_name(config)}; restore the file written by save_pretrained",
        )
    if config.get("format_version") != FORMAT_VERSION:
        raise SavedModelError(
            file,
            f"format_version {config.get('format_version')!r}, but this library reads {FORMAT_VERSION}; "
            "load it with the library version that saved it, or save the model again",
        )
    for dotted, (types, what) in _REQUIRED.items():
        *parents, key = dotted.split(".")
        holder = config
        for part in parents:
            holder = holder[part]
        if key not in holder:
            raise SavedModelError(
                file,
                f"missing '{dotted}' ({what}); restore it, or save the model again with save_pretrained",
            )
        value = holder[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(_JSON_NAMES[t] for t in types)
            raise SavedModelError(file, f"'{dotted}' must be {expected} ({what}), got {_json_name(value)}")
    if config["weights"] not in _WEIGHT_KINDS:
        raise SavedModelError(
            file, f"'weights' must be one of {', '.join(_WEIGHT_KINDS)}, got {config['weights']!r}"
        )
    return config


def _read_weights(file: Path) -> dict[str, Tensor]:
    if not file.is_file():
        raise FileNotFoundError(f"{file.parent} has a {CONFIG_NAME} but no {file.name}")
    try:
        return load_file(str(file), device="cpu")
    except SafetensorError as e:
        raise SavedModelError(
            file,
            f"not a readable safetensors file ({e}); it is truncated or damaged (an interrupted save or copy): "
            "copy it again, or save the model again",
        ) from e


def _check_copies(config: Mapping[str, Any], model: AudioModel, file: Path) -> None:
    """The fields that repeat what the rebuilt model fixes must agree with it (see the module docstring)."""
    backbone, saved = model.backbone, config["backbone"]
    name = backbone.name
    if "labels" in config and config["labels"] != list(model.labels):
        raise SavedModelError(
            file,
            f"'labels' {config['labels']!r} disagree with the head's labels {list(model.labels)!r} "
            "('head.config.labels'), which are authoritative: they name the outputs in the order the weights "
            "were trained. Rename classes in 'head.config.labels' and make 'labels' equal to them",
        )
    if "sample_rate" in saved and saved["sample_rate"] != backbone.sample_rate:
        raise SavedModelError(
            file,
            f"'backbone.sample_rate' is {saved['sample_rate']!r}, but {name} runs at {backbone.sample_rate} Hz "
            f"(its registered rate, which config.json cannot change); set it back to {backbone.sample_rate} and "
            "resample the audio instead",
        )
    if "embed_dim" in saved and saved["embed_dim"] != backbone.embed_dim:
        raise SavedModelError(
            file,
            f"'backbone.embed_dim' is {saved['embed_dim']!r}, but {name} built from 'backbone.overrides' has "
            f"width {backbone.embed_dim}; set it back, or change the width through 'backbone.overrides'",
        )
    built = jsonable(dict(backbone.pretrained_cfg.frontend))
    if "frontend" in saved and saved["frontend"] != built:
        other = saved["frontend"] if isinstance(saved["frontend"], dict) else {}
        diff = sorted(k for k in set(built) | set(other) if built.get(k, "unset") != other.get(k, "unset"))
        details = ", ".join(f"{k}: {other.get(k, 'unset')!r} vs {built.get(k, 'unset')!r}" for k in diff)
        raise SavedModelError(
            file,
            f"'backbone.frontend' differs from the front-end {name} builds from 'backbone.overrides' ({details}; "
            "saved vs built): front-end settings change only through 'backbone.overrides' (or the file was saved "
            f"by a library version whose {name} defaults differ). Put the settings to keep in 'backbone.overrides'",
        )


def _check_same_backbone(backbone: Backbone, name: str, overrides: Mapping[str, Any], path: Path) -> None:
    if lora_layers(backbone):
        raise ValueError(
            "the backbone given to from_pretrained already has LoRA adapters; pass the base backbone"
        )
    if backbone.name != name:
        raise ValueError(f"{path} was saved with backbone {name!r}, got {backbone.name!r}")
    own = {k: tuplify(jsonable(v)) for k, v in cfg_overrides(backbone).items()}
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


def _load_adapter_state(
    model: AudioModel, state: Mapping[str, Tensor], fingerprint: str | None, path: Path
) -> None:
    expected = adapter_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            f"AudioModel({model.backbone.name})",
            f"{path.name}/{ADAPTER_NAME}",
            missing,
            unexpected,
            mismatched,
        )
    if fingerprint is not None and fingerprint != base_fingerprint(model.backbone, state):
        raise ValueError(
            f"the adapter in {path} was trained on different {model.backbone.name} base weights than the ones "
            "given (their fingerprints differ); pass the base checkpoint it was trained from"
        )
    model.load_state_dict(dict(state), strict=False)


def load_pretrained(
    model_cls: type[M],
    directory: str | os.PathLike[str],
    base_checkpoint: str | os.PathLike[str] | None = None,
    backbone: Backbone | None = None,
) -> M:
    """Load a directory written by :func:`save_pretrained` as a ``model_cls``, in eval mode.

    Args:
        model_cls: :class:`finetune.model.AudioModel` or a subclass.
        base_checkpoint: for adapter-only directories, the backbone checkpoint the adapter was trained on
            (anything :func:`backbones.load_backbone` accepts).
        backbone: alternatively, the base backbone itself (without adapters); it must have the saved
            name and settings.

    Raises:
        FileNotFoundError: no ``config.json`` / weights in ``directory``.
        SavedModelError: ``config.json`` or the weights file is unreadable or inconsistent (see the module
            docstring).
        ValueError: the given or base backbone does not match the saved one, or arguments do not fit.
    """
    path = Path(directory)
    config = read_config(path)
    adapter = config["weights"] == "adapter"
    if backbone is not None and base_checkpoint is not None:
        raise ValueError("pass base_checkpoint or backbone, not both")
    if adapter and backbone is None and base_checkpoint is None:
        raise ValueError(
            f"{path} holds only adapter weights; pass the base backbone checkpoint it was trained from: "
            f"AudioModel.from_pretrained({str(path)!r}, base_checkpoint=...) (or backbone=...)"
        )
    if not adapter and base_checkpoint is not None:
        raise ValueError(f"{path} holds full weights; base_checkpoint is only for adapter-only directories")
    state = _read_weights(path / (ADAPTER_NAME if adapter else WEIGHTS_NAME))
    name = config["backbone"]["name"]
    overrides = {k: tuplify(v) for k, v in config["backbone"]["overrides"].items()}
    if backbone is not None:
        _check_same_backbone(backbone, name, overrides, path)
    else:  # base_checkpoint is None for full weights: the backbone's tensors are in the file
        backbone = load_backbone(name, checkpoint=base_checkpoint, **overrides)
    head_cfg = config["head"]
    if head_cfg["in_dim"] != backbone.embed_dim:
        raise SavedModelError(
            path / CONFIG_NAME,
            f"'head.in_dim' is {head_cfg['in_dim']}, but {name} built from 'backbone.overrides' has width "
            f"{backbone.embed_dim}; the head must be built for the backbone's width",
        )
    head = build_head(head_cfg["name"], head_cfg["in_dim"], **head_cfg["config"])
    lora = LoraSettings.from_dict(config["lora"]) if config["lora"] is not None else None
    model = model_cls(backbone, head, lora=lora, freeze=config["freeze"], backbone_overrides=overrides)
    _check_copies(config, model, path / CONFIG_NAME)
    model.calibration = Calibration.load(path)
    if adapter:
        _load_adapter_state(model, state, config.get("base_fingerprint"), path)
    else:
        load_strict(
            model, state, source_format=f"{path.name}/{WEIGHTS_NAME}", model_name=f"AudioModel({name})"
        )
    return model.eval()
