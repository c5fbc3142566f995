"""The batch augmentations of a model's training forward: mixup, SpecMix and SpecAugment, with the targets.

:class:`TrainingAugment` is what :class:`finetune.model.AudioModel` holds (``model.augment``, built from the
``spec_augment``, ``mixup`` and ``specmix`` settings of :func:`finetune.model.build_model`, i.e. the
``model.spec_augment`` / ``model.mixup`` / ``model.specmix`` keys of a recipe). In training mode the model runs

    waveform --mixup (stage="waveform")--> front-end --mixup (stage="features") --> SpecMix --> SpecAugment--> tokenize

on the device, batched; in eval mode none of it runs. Mixing draws a partner and a weight per example and mixes
the targets alike: class indices become one-hot vectors (soft targets), multi-hot tags and rating vectors are
mixed as they are; other per-example inputs (a hybrid head's descriptors) are mixed with the same weights.

Randomness. Every draw comes from torch's default generators on the data's device (no generator of its own),
whose states the training loop saves in its checkpoints and restores on resume, so an interrupted run repeats
the uninterrupted run's masks and partners exactly. Under several processes each draws from its own generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple, TypeVar

from torch import Tensor, nn

from backbones import Backbone
from backbones.config import from_dict

from .draws import _expand
from .features import SpecAugment, SpecAugmentConfig
from .mixing import Mixed, Mixup, MixupConfig, SpecMix, SpecMixConfig

__all__ = ["Augmented", "TrainingAugment"]

C = TypeVar("C", MixupConfig, SpecMixConfig)
T = TypeVar("T")


class Augmented(NamedTuple):
    """A training batch after augmentation.

    Shapes:
        inputs: as given; targets: as given, or ``[B, C]`` soft targets once mixed; extra: as given (or None).
    """

    inputs: Tensor
    targets: Tensor | None
    extra: Tensor | None


class TrainingAugment(nn.Module):
    """Mixup (on waveforms or features), SpecMix and SpecAugment for one model (see the module docstring).

    Args:
        spec_augment: time/frequency masks on the front-end features, or None.
        mixup: mixup settings (``stage`` says where), or None.
        specmix: band-wise mixing of the front-end features, or None.
        num_classes: for single-label models, the classes that integer targets are one-hot encoded over before
            mixing (None for multi-label and rating targets, which are floats already).

    Raises:
        ValueError: nothing is configured, or a config's ``num_classes`` disagrees with ``num_classes``.
    """

    def __init__(
        self,
        spec_augment: SpecAugmentConfig | None = None,
        mixup: MixupConfig | None = None,
        specmix: SpecMixConfig | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if spec_augment is None and mixup is None and specmix is None:
            raise ValueError("TrainingAugment needs at least one of spec_augment, mixup, specmix")
        self.spec_augment = SpecAugment(spec_augment) if spec_augment is not None else None
        self.mixup = Mixup(_with_classes(mixup, num_classes, "mixup")) if mixup is not None else None
        self.specmix = (
            SpecMix(_with_classes(specmix, num_classes, "specmix")) if specmix is not None else None
        )

    @classmethod
    def from_settings(
        cls,
        spec_augment: SpecAugmentConfig | Mapping[str, Any] | None = None,
        mixup: MixupConfig | Mapping[str, Any] | None = None,
        specmix: SpecMixConfig | Mapping[str, Any] | None = None,
        num_classes: int | None = None,
    ) -> TrainingAugment | None:
        """Build from configs or their fields as mappings (keys checked); None when all three are None.

        Raises:
            ConfigError: a mapping has an unknown key or a bad value.
        """
        if spec_augment is None and mixup is None and specmix is None:
            return None
        return cls(
            _as_config(SpecAugmentConfig, spec_augment, "spec_augment"),
            _as_config(MixupConfig, mixup, "mixup"),
            _as_config(SpecMixConfig, specmix, "specmix"),
            num_classes,
        )

    @property
    def uses_features(self) -> bool:
        """Whether anything acts on front-end features (the model then runs its backbone stage by stage)."""
        return (
            self.spec_augment is not None
            or self.specmix is not None
            or (self.mixup is not None and self.mixup.config.stage == "features")
        )

    def waveform(self, waveform: Tensor, targets: Tensor | None, extra: Tensor | None = None) -> Augmented:
        """Mixup on waveforms (when ``stage="waveform"`` and targets are given).

        Shapes:
            waveform: [B, N]; targets: [B] class indices or [B, C]; extra: [B, K] or None.
        """
        if self.mixup is None or self.mixup.config.stage != "waveform" or targets is None:
            return Augmented(waveform, targets, extra)
        return _with_extra(self.mixup(waveform, targets), extra)

    def features(self, features: Tensor, targets: Tensor | None, extra: Tensor | None = None) -> Augmented:
        """Mixup (``stage="features"``), then SpecMix, then SpecAugment; mixing only when targets are given.

        Shapes:
            features: [B, F, T]; targets: [B] class indices or [B, C]; extra: [B, K] or None.
        """
        out = Augmented(features, targets, extra)
        for mixer in (
            self.mixup if self.mixup and self.mixup.config.stage == "features" else None,
            self.specmix,
        ):
            if mixer is not None and out.targets is not None:
                out = _with_extra(mixer(out.inputs, out.targets), out.extra)
        if self.spec_augment is not None:
            out = out._replace(inputs=self.spec_augment(out.inputs))
        return out

    def apply(
        self,
        backbone: Backbone,
        waveform: Tensor | None,
        features: Tensor | None,
        targets: Tensor | None,
        extra: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
        """Augment one training batch for ``backbone``: waveform mixup, then, when anything acts on features,
        ``backbone.frontend`` and :meth:`features`. Pass a waveform or front-end features (the other None).

        Returns:
            ``(waveform, features, targets, extra)``: the waveform to run through the whole backbone (features
            None), or the features to tokenize (waveform None); the (mixed) targets and extra inputs.

        Raises:
            backbones.NonFiniteInputError, backbones.InputTooLongError: the checks of ``Backbone.forward``
                (:meth:`~backbones.base.Backbone.check_waveform`), which running the front-end directly bypasses.
        """
        if waveform is not None:
            waveform = backbone.check_waveform(
                waveform
            )  # before mixing: a NaN item would spread to its partner
            waveform, targets, extra = self.waveform(waveform, targets, extra)
            if not self.uses_features:
                return waveform, None, targets, extra
            features = backbone.frontend(waveform)
        if features is None:
            raise ValueError("pass a waveform [B, N] or front-end features [B, n_mels, T]")
        features, targets, extra = self.features(features, targets, extra)
        return None, features, targets, extra


def _as_config(cls: type[T], value: T | Mapping[str, Any] | None, where: str) -> T | None:
    if value is None or isinstance(value, cls):
        return value
    return from_dict(cls, value, where)


def _with_classes(config: C, num_classes: int | None, name: str) -> C:
    """``config`` with ``num_classes`` filled in from the model."""
    if config.num_classes is not None and num_classes is not None and config.num_classes != num_classes:
        raise ValueError(
            f"{name}.num_classes={config.num_classes} but the model has {num_classes} classes; leave it unset "
            "(the model fills it in)"
        )
    return dataclasses.replace(
        config, num_classes=num_classes if num_classes is not None else config.num_classes
    )


def _with_extra(mixed: Mixed, extra: Tensor | None) -> Augmented:
    """The mixed batch, with ``extra`` mixed by the same weights and partners."""
    if extra is not None:
        lam = _expand(mixed.lam, extra)
        extra = lam * extra + (1 - lam) * extra[mixed.perm]
    return Augmented(mixed.inputs, mixed.targets, extra)
