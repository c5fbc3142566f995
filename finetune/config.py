"""Typed recipe configuration: YAML files plus ``key=value`` command-line overrides, mapped onto dataclasses
that reject unknown keys (torchtune-style), so a typo fails loudly instead of being ignored."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .train import TrainConfig

__all__ = ["ModelConfig", "DataConfig", "RecipeConfig", "load_config", "from_dict", "to_dict", "ConfigError"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is malformed, names an unknown key, or has a value of the wrong type."""


@dataclass
class ModelConfig:
    """What :func:`finetune.model.build_model` receives."""

    backbone: str = "passt_s.tiny"
    checkpoint: str | None = None
    head: str = "linear"
    num_outputs: int = 10
    freeze: str | None = None
    lora: dict[str, Any] | None = None
    head_config: dict[str, Any] = field(default_factory=dict)
    backbone_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Which data set to load and how to batch it."""

    name: str = "synthetic_genres"
    root: str | None = None
    labels: str | None = None
    splits_dir: str | None = None
    split: str = "fault_filtered"
    fold: str = "performer"
    fold_index: int = 0
    n_per_class: int = 20
    n_items: int = 200
    clip_seconds: float = 10.0
    crop_seconds: float | None = None
    train_crops: int = 1
    eval_crops: int = 1
    seed: int = 0
    # waveform augmentations of training batches, e.g. {gain: {min_db: -6, max_db: 6}, noise: {snr_db: [15, 30], p: 0.5}}
    augment: dict[str, Any] = field(default_factory=dict)
    # linear probes: run the frozen backbone once per (deterministic) crop and train the head on cached vectors
    cache_embeddings: bool = False
    # extra keyword arguments of the data set's loader (e.g. on_error, n_folds, label_column, render_workers)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecipeConfig:
    """A whole recipe: model, data and training settings."""

    task: str = "genre"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_type(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    base = origin or tp
    if base is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if base in (dict, list, tuple) and isinstance(value, (dict, list, tuple)):
        return base(value)
    if isinstance(base, type) and isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {getattr(base, '__name__', base)}, got {value!r}")


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and values of the wrong type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (for saving the resolved config)."""
    return dataclasses.asdict(cfg)


def _apply_override(data: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key.sub=value")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw  # YAML 1.1 reads no/yes/on/off as booleans: train.mixed_precision=no means "no"
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RecipeConfig:
    """Read a YAML recipe config (or start from the defaults) and apply ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"could not read config {path}: {e}") from e
    for override in overrides:
        _apply_override(data, override)
    return from_dict(RecipeConfig, data)
