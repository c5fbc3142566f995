"""Run by ``test_distributed.py`` under ``accelerate launch``: a short recipe on synthetic data in every process.

    accelerate launch --num_processes 2 --cpu tests/recipes/_ddp_worker.py OUT CONFIG [key=value ...]

Each rank writes to ``OUT``: ``rank<r>.safetensors`` (its model's state after the run, and the state it started
from under ``init.`` keys) and ``rank<r>.json`` (per training forward pass: the number of clips and a fingerprint of
each clip's waveform; the test metrics it returned).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from safetensors.torch import save_file
from torch import nn

import finetune.recipe as recipe
from finetune.config import load_config


def main(out: Path, config: str, overrides: list[str]) -> None:
    cfg = load_config(config, overrides)
    built: dict[str, Any] = {}
    forwards: list[dict[str, Any]] = []
    build_model = recipe.build_model

    def record(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if module.training:
            wave = kwargs["waveform"]
            forwards.append({"n": wave.shape[0], "fingerprints": wave.double().sum(-1).tolist()})

    def build_and_watch(*args: Any, **kwargs: Any) -> nn.Module:
        model = build_model(*args, **kwargs)
        built["model"] = model
        built["init"] = {f"init.{k}": v.detach().clone() for k, v in model.state_dict().items()}
        model.register_forward_pre_hook(record, with_kwargs=True)
        return model

    recipe.build_model = build_and_watch  # the recipe builds the model; watch what it trains on
    metrics = recipe.run_recipe(cfg)
    rank = PartialState().process_index
    final = {f"final.{k}": v.detach().clone().contiguous() for k, v in built["model"].state_dict().items()}
    save_file({**final, **built["init"]}, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(
        json.dumps({"forwards": forwards, "n_test": metrics["n"], "steps": metrics["steps"]})
    )
    PartialState().wait_for_everyone()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
