"""Data-parallel training with ``accelerate launch`` on 2 CPU processes (gloo): a 3-step recipe on synthetic data.

``accelerate launch --cpu --num_processes 2`` starts a single process unless it is given an MPI host file
(accelerate's multi-CPU launcher is ``mpirun``); the torchrun launcher (``--multi_gpu``) with
``ACCELERATE_USE_CPU=true`` starts the two processes, which then join a gloo process group.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_ddp_worker.py")
PROCESSES, BATCH, ACCUM, STEPS, LR = 2, 2, 2, 3, 1e-3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ddp")
    overrides = [
        "model.backbone=cnn14.tiny",
        "data.n_per_class=4",  # 10 styles x (2 train, 1 validation, 1 test)
        "data.clip_seconds=2.0",
        "data.crop_seconds=1.0",
        f"train.batch_size={BATCH}",
        f"train.grad_accum_steps={ACCUM}",
        f"train.max_steps={STEPS}",
        f"train.lr={LR}",
        "train.layer_decay=1.0",
        "train.warmup_ratio=0.0",
        f"train.eval_every={STEPS}",
        f"train.save_every={STEPS}",
        "train.log_every=1",
        "train.progress=false",
        f"train.output_dir={out / 'run'}",
    ]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(PROCESSES),
    ]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(_free_port()), str(WORKER), str(out)]
    cmd += [str(ROOT / "recipes" / "configs" / "genre_synthetic_cnn14_full.yaml"), *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env |= {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"accelerate launch failed:\n{proc.stderr[-6000:]}"
    return {
        "out": out,
        "states": [load_file(str(out / f"rank{r}.safetensors")) for r in range(PROCESSES)],
        "records": [json.loads((out / f"rank{r}.json").read_text()) for r in range(PROCESSES)],
    }


def test_ranks_end_with_identical_trained_weights(ddp_run: dict[str, Any]) -> None:
    a, b = ddp_run["states"]
    assert set(a) == set(b)
    final = [k for k in a if k.startswith("final.")]
    assert final and all(torch.equal(a[k], b[k]) for k in final)  # parameters and buffers, bit for bit
    params = [k for k in final if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    changed = [k for k in params if not torch.equal(a[k], a[k.replace("final.", "init.", 1)])]
    assert len(changed) == len(params)  # full fine-tuning moved every parameter


def test_effective_batch_is_batch_times_processes_times_accumulation(ddp_run: dict[str, Any]) -> None:
    per_rank = [r["forwards"] for r in ddp_run["records"]]
    for forwards in per_rank:  # every rank ran ACCUM micro-batches of BATCH clips per optimizer step
        assert [f["n"] for f in forwards] == [BATCH] * (STEPS * ACCUM)
    for step in range(STEPS):
        micro = slice(step * ACCUM, (step + 1) * ACCUM)
        clips = [round(x, 6) for forwards in per_rank for f in forwards[micro] for x in f["fingerprints"]]
        # one optimizer step saw BATCH x PROCESSES x ACCUM different clips: the ranks read different shards
        assert len(clips) == len(set(clips)) == BATCH * PROCESSES * ACCUM == 8


def test_schedule_steps_once_per_optimizer_step(ddp_run: dict[str, Any]) -> None:
    lines = (ddp_run["out"] / "run" / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    lrs = [r["lr_top"] for r in logged if "loss" in r]
    expected = [
        LR * 0.5 * (1 + math.cos(math.pi * k / STEPS)) for k in range(1, STEPS + 1)
    ]  # cosine, no warmup
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_test_metrics_count_every_clip_once(ddp_run: dict[str, Any]) -> None:
    assert [r["n_test"] for r in ddp_run["records"]] == [10, 10]  # gathered across ranks, padding dropped
    assert [r["steps"] for r in ddp_run["records"]] == [STEPS, STEPS]
    metrics = json.loads((ddp_run["out"] / "run" / "metrics.json").read_text())
    assert metrics["n"] == 10 and sum(map(sum, metrics["confusion_matrix"])) == 10
