"""``PretrainedCfg``: where a checkpoint lives and the input contract it was trained with (timm-style).

A leaf module: the base class, the registry and the checkpoint resolver all read it, and it imports nothing of
the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PretrainedCfg"]


@dataclass(frozen=True)
class PretrainedCfg:
    """Where a checkpoint lives and the input contract it was trained with.

    ``arch`` holds the architecture keyword arguments of the family's module and ``frontend`` the keyword
    arguments of its front-end; the model is built from these alone, so nothing repeats them.
    """

    name: str
    arch: Mapping[str, Any]
    frontend: Mapping[str, Any]
    sample_rate: int
    input_seconds: float
    hub_id: str | None = None
    url: str | None = None
    filename: str | None = None
    sha256: str | None = None
    license: str = ""
    num_classes: int = 527
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def has_weights(self) -> bool:
        return self.hub_id is not None or self.url is not None
