"""Typed recipe configuration: YAML files plus ``key=value`` command-line overrides, mapped onto strict config
dataclasses (torchtune-style), so that a typo fails loudly, with its path and the closest valid name, instead of
being ignored.

Every section is checked when the config loads: ``model.head_config`` against the config class of
``model.head`` (``num_outputs`` and ``labels`` are left to build time: they come from the data set),
``model.lora`` as :class:`~finetune.lora.LoraSettings`, and ``data`` against the config class of the data set
``data.name`` registers (:mod:`finetune.data.registry`), whose own keys sit flat next to the shared ones.
The checking itself is :mod:`backbones.config`; ``ConfigError``, ``from_dict`` and ``to_dict`` are re-exported
here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from backbones.config import ConfigError, StrictConfig, did_you_mean, from_dict, to_dict
from heads import head_config_class, list_heads

from .calibration import METHODS as CALIBRATION_METHODS
from .data.augment import MixupConfig, SpecAugmentConfig, SpecMixConfig
from .data.registry import DataConfig
from .descriptors import descriptor_names
from .lora import LoraSettings
from .train import TrainConfig

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["ModelConfig", "DataConfig", "RecipeConfig", "load_config", "from_dict", "to_dict", "ConfigError"]


@dataclass
class ModelConfig(StrictConfig):
    """What :func:`finetune.model.build_model` receives.

    Attributes:
        num_outputs: classes or rating dimensions; None (the default) takes the count from the data set, and a
            given value must equal it.
        head_config: the head's own settings (its config class's fields but ``num_outputs`` and ``labels``),
            checked against ``head_config_class(head)`` here; keys keep the values as converted.
        spec_augment, mixup, specmix: the batch augmentations of the model's training forward (None: off), on
            the device after the front-end; mixing mixes the targets too (:mod:`finetune.data.augment.training`).
            They sit with the model, not in ``train``, because the model applies them: any loop that passes
            ``labels`` gets them, and they are off in eval mode.
        descriptors: the descriptor groups of a ``hybrid`` head (``[audio]``, ``[audio, midi]``;
            :mod:`finetune.descriptors`), computed per clip and cached; required by that head, refused by others.
    """

    backbone: str = "passt_s.tiny"
    checkpoint: str | None = None
    head: str = "linear"
    num_outputs: int | None = None
    freeze: str | None = None
    lora: LoraSettings | None = None
    head_config: dict[str, Any] = field(default_factory=dict)
    backbone_overrides: dict[str, Any] = field(default_factory=dict)
    spec_augment: SpecAugmentConfig | None = None
    mixup: MixupConfig | None = None
    specmix: SpecMixConfig | None = None
    descriptors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.num_outputs is not None and self.num_outputs < 1:
            raise ConfigError(f"model.num_outputs must be a positive integer, got {self.num_outputs}")
        if self.head not in list_heads():
            raise ConfigError(
                f"model.head: unknown head {self.head!r}{did_you_mean(self.head, list_heads())}; "
                f"known: {', '.join(list_heads())}"
            )
        if "num_outputs" in self.head_config:
            raise ConfigError("model.head_config.num_outputs: set model.num_outputs instead")
        if "labels" in self.head_config:
            raise ConfigError("model.head_config.labels: the output names come from the data set")
        if (self.head == "hybrid") != bool(self.descriptors):
            raise ConfigError(
                "model.descriptors: the hybrid head needs descriptor groups (e.g. [audio] or [audio, midi])"
                if self.head == "hybrid"
                else f"model.descriptors: only the hybrid head takes descriptors, not {self.head!r}"
            )
        if self.descriptors:
            try:
                descriptor_names(self.descriptors)
            except ValueError as e:
                raise ConfigError(f"model.descriptors: {e}") from None
        if "descriptor_names" in self.head_config:
            raise ConfigError(
                "model.head_config.descriptor_names: set model.descriptors (the groups) instead"
            )
        config_cls = head_config_class(self.head)
        # without a count yet, the head's settings are checked with its default (or one output)
        default = next(f.default for f in dataclasses.fields(config_cls) if f.name == "num_outputs")
        count = self.num_outputs or (default if isinstance(default, int) else 1)
        typed = from_dict(config_cls, {**self.head_config, "num_outputs": count}, "model.head_config")
        self.head_config = {k: getattr(typed, k) for k in self.head_config}


def _default_data() -> DataConfig:
    return DataConfig.from_dict({}, "data")  # the default data set's config


@dataclass
class RecipeConfig(StrictConfig):
    """A whole recipe: its kind (``task``: the recipe script, ``genre``, ``piano`` or ``tagging``), model, data
    and training.

    Attributes:
        calibrate: after training, fit a calibration of the best model's outputs on the validation split
            (``temperature`` or ``vector``; :func:`finetune.calibration.fit_calibration`), save it with the model
            and report its effect on the test split; None (default) fits none. Classification only.
    """

    task: str = "genre"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=_default_data)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibrate: str | None = None

    def __post_init__(self) -> None:
        if self.calibrate is not None and self.calibrate not in CALIBRATION_METHODS:
            raise ConfigError(
                f"calibrate must be one of {', '.join(CALIBRATION_METHODS)} or null, got {self.calibrate!r}"
                + did_you_mean(self.calibrate, CALIBRATION_METHODS)
            )


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


def load_config(
    path: str | os.PathLike[str] | Traversable | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RecipeConfig:
    """Read a YAML recipe config (or start from the defaults) and apply ``key.sub=value`` overrides.

    Args:
        path: a YAML file, or a packaged resource (``importlib.resources.files("recipes") / "configs/..."``).
        overrides: ``key.sub=value`` strings, values in YAML syntax (``data.augment={gain: {max_db: 6}}``).

    Raises:
        ConfigError: an unreadable file, a malformed override, or any key or value the config rejects.
    """
    data: dict[str, Any] = {}
    if path is not None:
        source = Path(path) if isinstance(path, (str, os.PathLike)) else path
        try:
            data = yaml.safe_load(source.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"could not read config {path}: {e}") from e
    for override in overrides:
        _apply_override(data, override)
    return from_dict(RecipeConfig, data)
