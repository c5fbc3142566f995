"""run_recipe's own decisions: settings fitted to the machine (one line each), the output count from the data
(a conflicting model.num_outputs names both numbers before anything trains), and which files the decode cache
takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Dataset, DatasetDict

import finetune.recipe as recipe
from finetune.config import ConfigError, load_config
from finetune.data.decoded import DecodedCache
from finetune.data.registry import TaskData
from finetune.train import TrainConfig
from heads.tasks import SINGLE_LABEL


def test_workers_are_capped_at_the_cores_and_bf16_needs_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipe, "_cores", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    said: list[str] = []
    config = TrainConfig(num_workers=4, mixed_precision="bf16")
    recipe.fit_to_machine(config, said.append)
    assert (config.num_workers, config.mixed_precision) == (2, "no")
    assert said == [
        "train.num_workers 4 -> 2: 2 CPU core(s) per process here",
        "train.mixed_precision bf16 -> no: no GPU here supports bf16",
    ]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes share the two cores
    config, said = TrainConfig(num_workers=2, mixed_precision="fp16"), []
    recipe.fit_to_machine(config, said.append)
    assert (config.num_workers, config.mixed_precision) == (1, "no") and len(said) == 2
    fine, said = TrainConfig(num_workers=1, mixed_precision="no"), []
    recipe.fit_to_machine(fine, said.append)
    assert said == [] and (fine.num_workers, fine.mixed_precision) == (1, "no")


@pytest.mark.usefixtures("one_thread")
def test_a_num_outputs_that_disagrees_with_the_data_names_both(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "model.backbone=cnn14.tiny",
            "model.num_outputs=4",
            "data.n_per_class=3",
            "data.clip_seconds=0.5",
            f"train.output_dir={tmp_path}",
            "train.progress=false",
        ],
    )
    with pytest.raises(
        ConfigError,
        match=r"^model\.num_outputs is 4 but data set 'synthetic_genres' has 10 outputs \(blues, classical, .*\); "
        r"leave model\.num_outputs out to take the count from the data \(or set it to 10\)$",
    ):
        recipe.run_recipe(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_the_decode_cache_takes_the_files_its_mode_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSICFT_CACHE", str(tmp_path / "cache"))
    tone = np.sin(np.arange(8000) / 3).astype(np.float32)
    sf.write(tmp_path / "a.wav", tone, 16000)
    sf.write(tmp_path / "b.mp3", tone, 16000, format="MP3")
    (tmp_path / "c.wav").write_bytes(b"")
    split = Dataset.from_dict(
        {"path": [str(tmp_path / n) for n in ("a.wav", "b.mp3", "c.wav")], "label": [0, 1, 0]}
    )
    data = TaskData(
        DatasetDict({"train": split, "validation": split.select([]), "test": split.select([])}),
        SINGLE_LABEL,
        ("x", "y"),
    )
    said: list[str] = []
    off = load_config(None, [f"train.output_dir={tmp_path}"])
    assert recipe._decode_cache(off, data, 8000, said.append, progress=False) is None and said == []
    slow = load_config(None, ["data.decode_cache=slow_seek"])
    cache = recipe._decode_cache(slow, data, 8000, said.append, progress=False)
    assert isinstance(cache, DecodedCache) and cache.root == tmp_path / "cache" / "decoded" / "8000hz"
    assert [p in cache for p in split["path"][:2]] == [False, True]
    assert said == [f"decode cache {cache.root}: 1 file(s) wanted, 1 decoded now, 1 failed"]  # c.wav is empty
    recipe._decode_cache(
        load_config(None, ["data.decode_cache=all"]), data, 8000, said.append, progress=False
    )
    assert said[-1] == f"decode cache {cache.root}: 3 file(s) wanted, 1 decoded now, 1 failed"
    assert str(tmp_path / "a.wav") in cache
