"""The data set registry: every loader registers itself; configs are picked by name, checked key by key and
written back flat; a new data set is one registration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

import finetune.data.registry as registry
from backbones.config import ConfigError
from finetune.data.fma import FMAConfig
from finetune.data.folder import FolderConfig
from finetune.data.gtzan import GTZANConfig
from finetune.data.manifest import ManifestConfig
from finetune.data.percepiano import PercePianoConfig
from finetune.data.registry import (
    DATASETS,
    DataConfig,
    TaskData,
    get_dataset,
    register_dataset,
    required_path,
)
from heads.tasks import RATING, SINGLE_LABEL


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """Let a test register data sets; the registry is restored afterwards."""
    saved = dict(registry._DATASETS)
    yield
    registry._DATASETS.clear()
    registry._DATASETS.update(saved)


def test_every_loader_registers_its_data_set() -> None:
    assert sorted(DATASETS) == [
        "fma",
        "folder",
        "gtzan",
        "magnatagatune",
        "manifest",
        "mtg_jamendo",
        "percepiano",
        "synthetic_genres",
        "synthetic_piano",
        "synthetic_tags",
    ]
    configs = {name: entry.config_cls for name, entry in DATASETS.items()}
    assert configs["gtzan"] is GTZANConfig and configs["percepiano"] is PercePianoConfig
    assert configs["fma"] is FMAConfig and configs["folder"] is FolderConfig
    assert configs["manifest"] is ManifestConfig
    for name, cls in configs.items():
        assert issubclass(cls, DataConfig) and cls().name == name
    assert get_dataset("gtzan") is DATASETS["gtzan"]


def test_the_registry_is_read_only_and_lookups_suggest_names() -> None:
    with pytest.raises(TypeError):
        DATASETS["mine"] = DATASETS["gtzan"]  # type: ignore[index]
    with pytest.raises(
        KeyError, match=r"unknown data set 'gtzn' \(did you mean 'gtzan'\?\); known: fma, folder, gtzan"
    ):
        get_dataset("gtzn")


def test_configs_are_picked_by_name_and_written_back_flat() -> None:
    cfg = DataConfig.from_dict(
        {"name": "gtzan", "root": "/data/gtzan", "split": "random", "eval_crops": 3}, "data"
    )
    assert type(cfg) is GTZANConfig
    assert (cfg.root, cfg.split, cfg.eval_crops, cfg.fractions) == (
        "/data/gtzan",
        "random",
        3,
        (0.8, 0.1, 0.1),
    )
    flat = cfg.to_dict()
    assert flat["name"] == "gtzan" and flat["root"] == "/data/gtzan" and flat["fractions"] == [0.8, 0.1, 0.1]
    assert DataConfig.from_dict(flat, "data") == cfg
    default = DataConfig.from_dict({}, "data")  # no name: the default data set
    assert default.name == "synthetic_genres" and default.n_per_class == 20  # type: ignore[attr-defined]
    assert type(GTZANConfig.from_dict({"root": "/x"})) is GTZANConfig  # a data set's own class, no name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"name": "gtzan", "rooot": "/x"},
            "unknown key(s) data.rooot (did you mean 'root'?); GTZANConfig takes: augment, cache_embeddings, "
            "clip_seconds, crop_seconds, crops_per_track, decode_cache, eval_crops, fold_index, fractions, full_check, min_duration, n_folds, "
            "name, on_error, progress, root, seed, split, splits_dir, train_crops",
        ),
        (
            {"name": "gtzn"},
            "data.name: unknown data set 'gtzn' (did you mean 'gtzan'?); known: fma, folder, gtzan, "
            "magnatagatune, manifest, mtg_jamendo, percepiano, synthetic_genres, synthetic_piano, synthetic_tags",
        ),
        ({"name": 3}, "data.name: expected str, got 3"),
        (
            {"name": "gtzan", "split": "kfol"},
            "data: split must be one of fault_filtered, random, kfold, got 'kfol' (did you mean 'kfold'?)",
        ),
        (
            {"name": "percepiano", "fold": "perfomer"},
            "data: fold must be one of performer, excerpt, composition, random, performer_official, excerpt_official, got 'perfomer' (did you mean 'performer'?)",
        ),
        ({"name": "fma", "subset": "large"}, "data: subset must be 'small' or 'medium', got 'large'"),
        ({"name": "gtzan", "crops_per_track": 0}, "data: crops_per_track must be >= 1, got 0"),
        ({"name": "synthetic_genres", "eval_crops": 0}, "data: eval_crops must be >= 1, got 0"),
        (
            {"name": "gtzan", "crop_seconds": -4},
            "data: crop_seconds must be > 0 (or null: the backbone's input length), got -4.0",
        ),
        ({"name": "synthetic_genres", "clip_seconds": 0}, "data: clip_seconds must be > 0, got 0.0"),
        (
            {"name": "manifest", "labels": "m.csv", "augment": {"time_strech": {}}},
            "data: unknown augmentation 'time_strech' (did you mean 'time_stretch'?); known: gain, eq, noise, "
            "pitch_shift, time_stretch",
        ),
        (
            {"name": "manifest", "labels": "m.csv", "decode_cache": "mp3"},
            "data.decode_cache: expected one of 'off', 'slow_seek', 'all', got 'mp3'",
        ),
        (
            {"name": "folder", "on_error": "ignore"},
            "data.on_error: expected one of 'skip', 'raise', got 'ignore'",
        ),
        (
            {"name": "synthetic_piano", "n_per_class": 3},
            "unknown key(s) data.n_per_class; SyntheticPianoConfig "
            "takes: augment, cache_embeddings, clip_seconds, crop_seconds, crops_per_track, decode_cache, eval_crops, "
            "n_items, name, progress, seed, train_crops",
        ),
    ],
)
def test_bad_data_sections_name_their_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        DataConfig.from_dict(data, "data")
    assert str(info.value) == message


def test_a_config_class_only_takes_its_own_data_set() -> None:
    with pytest.raises(
        ConfigError, match=r"^data\.name: data set 'folder' takes a FolderConfig, not a GTZANConfig$"
    ):
        GTZANConfig.from_dict({"name": "folder"}, "data")
    with pytest.raises(TypeError, match="^data set 'gtzan' takes a GTZANConfig, got FolderConfig$"):
        DATASETS["gtzan"](FolderConfig(root="/x"), 16000)


def test_required_paths_say_which_key_to_set() -> None:
    with pytest.raises(
        ValueError,
        match=r"^data set 'folder' needs data\.root: the tree \(pass data\.root=/path/to/\.\.\.\)$",
    ):
        required_path(FolderConfig(), "root", "the tree")
    assert required_path(FolderConfig(root="~/music"), "root", "the tree") == Path("~/music").expanduser()


@dataclass
class ToyConfig(DataConfig):
    name: str = "toy"
    n: int = 4


def _toy_splits(n: int, splits: tuple[str, ...] = ("train", "validation", "test")) -> DatasetDict:
    return DatasetDict({s: Dataset.from_dict({"ratings": [[float(i)] for i in range(n)]}) for s in splits})


def test_a_new_data_set_is_one_registration(scratch_registry: None) -> None:
    @register_dataset("toy", ToyConfig)
    def build_toy(config: ToyConfig, sample_rate: int) -> TaskData:
        return TaskData(_toy_splits(config.n), RATING, ("level",))

    cfg = DataConfig.from_dict({"name": "toy", "n": 3, "seed": 1}, "data")
    assert cfg == ToyConfig(n=3, seed=1)
    data = DATASETS["toy"](cfg, 16000)
    assert data.task is RATING and data.names == ("level",) and len(data.splits["test"]) == 3
    assert DATASETS["toy"].builder is build_toy
    with pytest.raises(ValueError, match="^data set 'toy' is registered twice$"):
        register_dataset("toy", ToyConfig)(build_toy)


def test_registration_checks_the_config_class(scratch_registry: None) -> None:
    with pytest.raises(
        ValueError, match="^data set 'toy2': ToyConfig.name must default to 'toy2', got 'toy'$"
    ):
        register_dataset("toy2", ToyConfig)
    with pytest.raises(
        ValueError, match="^data set 'toy': its config class must extend DataConfig, got <class 'dict'>$"
    ):
        register_dataset("toy", dict)  # type: ignore[arg-type]


def test_a_builder_must_give_train_validation_and_test(scratch_registry: None) -> None:
    @register_dataset("toy", ToyConfig)
    def build_toy(config: ToyConfig, sample_rate: int) -> TaskData:
        return TaskData(_toy_splits(2, ("train", "test")), SINGLE_LABEL, ("a",))

    with pytest.raises(
        ValueError,
        match=r"^data set 'toy' gave the splits \['test', 'train'\]; a recipe needs train, validation and test "
        r"\(missing: validation\)$",
    ):
        DATASETS["toy"](ToyConfig(), 16000)
