"""The data sets a recipe can name (``data.name``), each registered in its own loader file.

A data set is a config class, which extends :class:`DataConfig` (the settings every data set shares) with its
loader's settings, and a builder that turns such a config into train/validation/test splits::

    @dataclass
    class GTZANConfig(DataConfig):
        name: str = "gtzan"
        root: str | None = None
        ...

    @register_dataset("gtzan", GTZANConfig)
    def build_gtzan(config: GTZANConfig, sample_rate: int) -> TaskData: ...

In a recipe's YAML the data set's own keys sit next to the shared ones (``data.root``, ``data.split``):
:meth:`DataConfig.from_dict` picks the config class by ``name`` and checks every key against it, and
:meth:`~backbones.config.StrictConfig.to_dict` writes them back the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar

from datasets import DatasetDict

from backbones.config import ConfigError, StrictConfig, did_you_mean
from heads.tasks import Task

from .augment import check_data_augment

__all__ = [
    "DATASETS",
    "DataConfig",
    "DatasetEntry",
    "TaskData",
    "get_dataset",
    "register_dataset",
    "required_path",
]

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TaskData:
    """A loaded data set: its ``train``/``validation``/``test`` splits, its task and the output names.

    Attributes:
        splits: rows the collate reads (in-memory audio, or a file's ``path`` with its header facts: see
            :mod:`finetune.data.tracks`) and the task's target column.
        task: what is learned (:data:`heads.SINGLE_LABEL`, :data:`heads.RATING`, ...).
        names: class names or rating dimensions, in output order.
    """

    splits: DatasetDict
    task: Task
    names: tuple[str, ...]


@dataclass
class DataConfig(StrictConfig):
    """What every data set shares: which one, how clips become windows, and the data seed.

    Each registered data set extends this with its loader's settings; :meth:`from_dict` builds the class the
    ``name`` key registers.

    Attributes:
        name: a registered data set (:data:`DATASETS`).
        clip_seconds: clip length (of generated clips; for real data, the nominal length that bounds the window).
        crop_seconds: window length; None uses the backbone's input length (at most ``clip_seconds``).
        train_crops: random windows per training clip in one batch (fixed windows with ``cache_embeddings``).
        crops_per_track: training: each clip is visited this many times per epoch, each time with new random
            windows, in different batches (many crops of long tracks per epoch).
        eval_crops: windows per evaluation clip, evenly spaced over the whole clip; their predictions are averaged.
        seed: seed of generated data, data splits and training crops.
        augment: waveform augmentations of training batches, e.g. ``{gain: {min_db: -6, max_db: 6}}`` (names and
            option keys are checked when the config loads).
        cache_embeddings: linear probes: run the frozen backbone once per window and train on cached vectors.
        decode_cache: files to decode once into an on-disk cache at the model's rate, read by memory map
            (:mod:`finetune.data.decoded`): ``"off"``, ``"slow_seek"`` (MP3) or ``"all"``.
        progress: show the loader's progress bars (generating, rendering, checking files); the recipes and the
            benchmark turn them off with their own progress switch.
    """

    CHANGEABLE_ON_RESUME: ClassVar[frozenset[str]] = frozenset({"decode_cache", "progress"})
    """Settings a resumed run may change: they change how fast the data is read or what is shown, not what is
    read (a data set's config class adds its own, e.g. PercePiano's ``render_workers``)."""

    name: str = "synthetic_genres"
    clip_seconds: float = 10.0
    crop_seconds: float | None = None
    train_crops: int = 1
    crops_per_track: int = 1
    eval_crops: int = 1
    seed: int = 0
    augment: dict[str, Any] = field(default_factory=dict)
    cache_embeddings: bool = False
    decode_cache: Literal["off", "slow_seek", "all"] = "off"
    progress: bool = True

    def __post_init__(self) -> None:
        """Check the shared settings; a data set's config class that has its own ``__post_init__`` calls this."""
        for key in ("train_crops", "crops_per_track", "eval_crops"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.clip_seconds > 0:
            raise ValueError(f"clip_seconds must be > 0, got {self.clip_seconds}")
        if self.crop_seconds is not None and not self.crop_seconds > 0:
            raise ValueError(
                f"crop_seconds must be > 0 (or null: the backbone's input length), got {self.crop_seconds}"
            )
        check_data_augment(self.augment)

    @classmethod
    def config_class_for(cls, data: Mapping[str, Any], where: str) -> type[StrictConfig]:
        """The config class registered under ``data["name"]`` (default: this class's ``name``)."""
        name = data.get("name", _default_name(cls))
        where_name = f"{where}.name" if where else "name"
        if not isinstance(name, str):
            raise ConfigError(f"{where_name}: expected str, got {name!r}")
        try:
            config_cls = get_dataset(name).config_cls
        except KeyError as e:
            raise ConfigError(f"{where_name}: {e.args[0]}") from None
        if not issubclass(config_cls, cls):
            raise ConfigError(
                f"{where_name}: data set {name!r} takes a {config_cls.__name__}, not a {cls.__name__}"
            )
        return config_cls


def _default_name(cls: type) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == "name")


DatasetBuilder = Callable[[Any, int], TaskData]
B = TypeVar("B", bound=DatasetBuilder)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered data set: its config class and its builder. Calling it builds the data set."""

    name: str
    config_cls: type[DataConfig]
    builder: DatasetBuilder

    def __call__(self, config: DataConfig, sample_rate: int) -> TaskData:
        """Build the data set at ``sample_rate`` Hz from ``config`` (an instance of :attr:`config_cls`).

        Raises:
            TypeError: ``config`` is not this data set's config class.
            ValueError: the builder gave no train, validation or test split.
        """
        if not isinstance(config, self.config_cls):
            raise TypeError(
                f"data set {self.name!r} takes a {self.config_cls.__name__}, got {type(config).__name__}"
            )
        data = self.builder(config, sample_rate)
        missing = [s for s in SPLITS if s not in data.splits]
        if missing:
            raise ValueError(
                f"data set {self.name!r} gave the splits {sorted(data.splits)}; a recipe needs train, "
                f"validation and test (missing: {', '.join(missing)})"
            )
        return data


_DATASETS: dict[str, DatasetEntry] = {}
DATASETS: Mapping[str, DatasetEntry] = MappingProxyType(_DATASETS)
"""Registered data sets by name (read-only; add one with :func:`register_dataset`)."""


def register_dataset(name: str, config_cls: type[DataConfig]) -> Callable[[B], B]:
    """Register ``builder(config, sample_rate) -> TaskData`` and its config class under ``name``.

    ``config_cls`` must extend :class:`DataConfig` with ``name`` defaulting to ``name``, so that a config
    built in code names its own data set.

    Raises:
        ValueError: ``name`` is taken, or ``config_cls`` does not fit.
    """
    if not (isinstance(config_cls, type) and issubclass(config_cls, DataConfig)):
        raise ValueError(f"data set {name!r}: its config class must extend DataConfig, got {config_cls!r}")
    if _default_name(config_cls) != name:
        raise ValueError(
            f"data set {name!r}: {config_cls.__name__}.name must default to {name!r}, "
            f"got {_default_name(config_cls)!r}"
        )

    def decorator(builder: B) -> B:
        if name in _DATASETS:
            raise ValueError(f"data set {name!r} is registered twice")
        _DATASETS[name] = DatasetEntry(name, config_cls, builder)
        return builder

    return decorator


def get_dataset(name: str) -> DatasetEntry:
    """The registered data set ``name``.

    Raises:
        KeyError: unknown name; the message suggests the closest one and lists them all.
    """
    if name not in _DATASETS:
        raise KeyError(
            f"unknown data set {name!r}{did_you_mean(name, _DATASETS)}; known: {', '.join(sorted(_DATASETS))}"
        )
    return _DATASETS[name]


def required_path(config: DataConfig, key: str, what: str) -> Path:
    """``config.<key>`` as a path (``~`` expanded), or a ValueError saying which key to set and what it is."""
    value = getattr(config, key)
    if value is None:
        raise ValueError(f"data set {config.name!r} needs data.{key}: {what} (pass data.{key}=/path/to/...)")
    return Path(value).expanduser()
