"""The head interface, the head config base and the head registry.

A head is registered with its config class::

    @register_head("linear", LinearConfig)
    class LinearHead(Head): ...

and built from a plain dict (for instance one read back from ``config.json``), whose keys and types its
config class checks (:class:`backbones.config.StrictConfig`, re-exported here)::

    head = build_head("linear", in_dim=768, num_outputs=10)
    same = build_head("linear", 768, **head.config.to_dict())
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from backbones.base import BackboneOutput
from backbones.config import StrictConfig

from .tasks import Task

__all__ = [
    "StrictConfig",
    "HeadConfig",
    "Head",
    "register_head",
    "build_head",
    "list_heads",
    "head_config_class",
]


@dataclasses.dataclass
class HeadConfig(StrictConfig):
    """Settings every head has: the number of outputs and their names.

    Attributes:
        num_outputs: classes (classification) or rating dimensions (regression).
        labels: one name per output; a generic default is filled in by the concrete config.
    """

    num_outputs: int
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.num_outputs, int)
            or isinstance(self.num_outputs, bool)
            or self.num_outputs < 1
        ):
            raise ValueError(f"num_outputs must be a positive integer, got {self.num_outputs!r}")
        if self.labels is None:
            self.labels = self.default_labels(self.num_outputs)
        self.labels = tuple(self.labels)
        if len(self.labels) != self.num_outputs:
            raise ValueError(f"got {len(self.labels)} labels for num_outputs={self.num_outputs}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {list(self.labels)}")

    @staticmethod
    def default_labels(n: int) -> tuple[str, ...]:
        return tuple(f"class_{i}" for i in range(n))


class Head(nn.Module):
    """Base class of the task heads: ``forward(output) = project(pool(output))``.

    Subclasses implement :attr:`task` (what the outputs mean; see :mod:`heads.tasks`), :meth:`pool`,
    :meth:`project` and :meth:`loss`.
    """

    name: ClassVar[str] = ""
    config: HeadConfig

    def __init__(self, in_dim: int, config: HeadConfig) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be positive, got {in_dim}")
        self.in_dim = in_dim
        self.config = config

    @property
    def task(self) -> Task:
        """The task this head's outputs serve (single-label, multi-label or ratings)."""
        raise NotImplementedError

    @property
    def output_field(self) -> str:
        """The :class:`finetune.ModelOutput` field the prediction goes to (``logits`` or ``ratings``)."""
        return self.task.output_field

    @property
    def labels(self) -> tuple[str, ...]:
        assert self.config.labels is not None  # filled in by HeadConfig.__post_init__
        return self.config.labels

    def check_input(self, output: BackboneOutput) -> None:
        """Raise a ValueError when the backbone's width is not the one the head was built for."""
        dim = output.sequence.shape[-1]
        if dim != self.in_dim:
            raise ValueError(
                f"{type(self).__name__} was built for in_dim={self.in_dim}, got backbone width {dim}"
            )

    def pool(self, output: BackboneOutput) -> Tensor:
        """The clip vector the output layer sees. Shapes: -> [B, D']."""
        raise NotImplementedError

    def project(self, pooled: Tensor) -> Tensor:
        """Pooled vector -> predictions. Shapes: [B, D'] -> [B, num_outputs]."""
        raise NotImplementedError

    def forward(self, output: BackboneOutput) -> Tensor:
        """Predictions for a backbone output. Shapes: -> [B, num_outputs]."""
        return self.project(self.pool(output))

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Scalar training loss of ``prediction`` (this head's output) against ``target``."""
        raise NotImplementedError


H = TypeVar("H", bound=type[Head])

_HEADS: dict[str, tuple[type[Head], type[HeadConfig]]] = {}


def register_head(name: str, config_cls: type[HeadConfig]) -> Callable[[H], H]:
    """Class decorator: register a :class:`Head` subclass and its config class under ``name``."""

    def decorator(cls: H) -> H:
        if name in _HEADS:
            raise ValueError(f"head {name!r} is registered twice")
        cls.name = name
        _HEADS[name] = (cls, config_cls)
        return cls

    return decorator


def list_heads() -> list[str]:
    """Registered head names, sorted."""
    return sorted(_HEADS)


def _lookup(name: str) -> tuple[type[Head], type[HeadConfig]]:
    if name not in _HEADS:
        raise KeyError(f"unknown head {name!r}. Known heads: {', '.join(list_heads())}")
    return _HEADS[name]


def head_config_class(name: str) -> type[HeadConfig]:
    """The config dataclass of head ``name``."""
    return _lookup(name)[1]


def build_head(name: str, in_dim: int, **config: Any) -> Head:
    """Build head ``name`` for backbone width ``in_dim``; ``config`` are its config's fields.

    Raises:
        KeyError: unknown head name (lists the known ones).
        ConfigError: a config key the head does not have (with a suggestion), a value of the wrong type, or one
            the config rejects.
    """
    cls, config_cls = _lookup(name)
    return cls(in_dim, config_cls.from_dict(config))
