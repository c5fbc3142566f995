"""run_recipe's own decisions: settings fitted to the machine (one line each), and the output count from the data
(a conflicting model.num_outputs names both numbers before anything trains)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import finetune.recipe as recipe
from finetune.config import ConfigError, load_config
from finetune.train import TrainConfig


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
