"""Both recipe scripts run end to end (2 optimizer steps, tiny backbone, synthetic data, CPU) in subprocesses, and
leave a complete run directory whose saved model reproduces the reported test metrics."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from finetune.config import RecipeConfig, load_config
from finetune.data.collate import CropCollate
from finetune.evaluation import predict
from finetune.model import AudioModel
from finetune.recipe import DATASETS
from heads.metrics import classification_metrics, rating_metrics

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "configs"
TINY = [
    "model.backbone=cnn14.tiny",
    "data.clip_seconds=2.0",
    "data.crop_seconds=1.0",
    "train.max_steps=2",
    "train.batch_size=4",
    "train.eval_every=2",
    "train.save_every=2",
    "train.log_every=1",
    "train.progress=false",
]
RUNS = {  # script -> (config, extra overrides): LoRA for genre, full fine-tuning for piano
    "genre": ("genre_synthetic_cnn14_lora.yaml", ["data.n_per_class=3"]),
    "piano": ("piano_synthetic_cnn14_full.yaml", ["data.n_items=24"]),
}
PLOTS = {
    "genre": ["loss.png", "confusion_matrix.png", "reliability.png"],
    "piano": ["loss.png", "ratings.png"],
}


def _script(task: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{task}", ROOT / "recipes" / f"{task}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Run both scripts at once (each in its own process, one thread each) and collect what they left."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {}
    for task, (config, extra) in RUNS.items():
        out = tmp_path_factory.mktemp(task) / "run"
        cmd = [sys.executable, str(ROOT / "recipes" / f"{task}.py"), "--config", str(CONFIGS / config)]
        cmd += [*TINY, *extra, f"train.output_dir={out}"]
        procs[task] = (
            out,
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        )
    results = {}
    for task, (out, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"recipes/{task}.py failed:\n{stderr.decode()[-4000:]}"
        results[task] = {
            "out": out,
            "stdout": stdout.decode(),
            "metrics": json.loads((out / "metrics.json").read_text()),
        }
    return results


@pytest.mark.parametrize("task", list(RUNS))
def test_run_directory(runs: dict[str, dict[str, Any]], task: str) -> None:
    out, metrics = runs[task]["out"], runs[task]["metrics"]
    cfg = load_config(out / "config.yaml")  # the resolved config, overrides applied
    assert (cfg.task, cfg.model.backbone, cfg.train.max_steps, cfg.train.output_dir) == (
        task,
        "cnn14.tiny",
        2,
        str(out),
    )
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_2"]
    assert json.loads((out / "checkpoints" / "step_2" / "trainer_state.json").read_text())["step"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(math.isfinite(r["loss"]) for r in steps)
    assert metrics["steps"] == 2 and metrics["split"] == "test"
    if task == "genre":
        assert set(metrics) >= {"accuracy", "macro_f1", "per_class_f1", "confusion_matrix"}
        confusion = np.asarray(metrics["confusion_matrix"])
        assert metrics["n"] == 10 and confusion.shape == (10, 10) and confusion.sum() == 10
        assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / 10)
        assert 0.0 <= metrics["macro_f1"] <= 1.0
    else:
        assert set(metrics) >= {"mean_r", "per_dimension"}
        assert len(metrics["per_dimension"]) == 19 and -1.0 <= metrics["mean_r"] <= 1.0
    for name in PLOTS[task]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert {p.name for p in (out / "model").iterdir()} == {"config.json", "model.safetensors"}


@pytest.mark.parametrize("task", list(RUNS))
def test_saved_model_reproduces_the_test_metrics(runs: dict[str, dict[str, Any]], task: str) -> None:
    out, metrics = runs[task]["out"], runs[task]["metrics"]
    cfg: RecipeConfig = load_config(out / "config.yaml")
    model = AudioModel.from_pretrained(out / "model")
    # the saved model is the best (= last, step 2) checkpoint's weights
    assert metrics["best_step"] == 2
    trained = load_file(str(out / "checkpoints" / "step_2" / "model.safetensors"))
    state = model.state_dict()
    assert set(trained) == set(state) and all(torch.equal(trained[k], state[k]) for k in state)
    if task == "genre":
        assert model.lora_settings is not None and model.freeze_mode == "lora"

    data = DATASETS[cfg.data.name](cfg.data, model.sample_rate)
    collate = CropCollate(
        model.sample_rate, cfg.data.crop_seconds, train=False, crops_per_clip=cfg.data.eval_crops
    )
    loader = DataLoader(data.splits["test"], batch_size=cfg.train.batch_size, collate_fn=collate)
    preds, targets, loss = predict(model, loader)
    assert loss == pytest.approx(metrics["loss"], rel=1e-5)
    if task == "genre":
        again = classification_metrics(preds, targets.astype(np.int64), list(model.labels))
        assert again["confusion_matrix"] == metrics["confusion_matrix"]
        assert again["macro_f1"] == pytest.approx(metrics["macro_f1"], abs=1e-12)
    else:
        again = rating_metrics(preds, targets, list(model.labels))
        assert again["mean_r"] == pytest.approx(metrics["mean_r"], abs=1e-5)
        assert again["mse"] == pytest.approx(metrics["mse"], rel=1e-5)


def test_summary_is_printed(runs: dict[str, dict[str, Any]]) -> None:
    genre, piano = runs["genre"], runs["piano"]
    assert (
        f"accuracy {genre['metrics']['accuracy']:.3f}   macro-F1 {genre['metrics']['macro_f1']:.3f}"
        in genre["stdout"]
    )
    assert f"mean r {piano['metrics']['mean_r']:.3f}" in piano["stdout"]
    first = next(iter(piano["metrics"]["per_dimension"]))
    assert first == "Timing (stable-unstable)" and first in piano["stdout"]


def test_script_rejects_other_tasks_and_typos(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MUSICFT_DEBUG", raising=False)
    genre = _script("genre")
    with pytest.raises(SystemExit) as exit_info:
        genre.main(["--config", str(CONFIGS / "piano_synthetic_cnn14_lora.yaml")])
    assert exit_info.value.code == 2
    assert "is a 'piano' recipe; this script runs 'genre'" in capsys.readouterr().err
    # a config error is one line and exit status 2, its traceback only with --debug
    argv = ["--config", str(CONFIGS / "piano_synthetic_cnn14_lora.yaml"), "train.lerning_rate=1"]
    assert _script("piano").main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key(s) train.lerning_rate; TrainConfig takes: ")
    assert (
        err.endswith(" (run with --debug or MUSICFT_DEBUG=1 for the traceback)\n") and "Traceback" not in err
    )
    assert _script("piano").main([*argv, "--debug"]) == 2
    assert capsys.readouterr().err.startswith("Traceback (most recent call last):")


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.usefixtures("one_thread")
def test_sigterm_checkpoints_exits_143_ends_the_workers_and_the_rerun_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A preempted recipe (SIGTERM from a scheduler) must not look successful, must leave a checkpoint of the
    step it was in, must not leave data-loader workers behind, and the same command must then finish the run."""
    out = tmp_path / "run"
    argv = ["--config", str(CONFIGS / "genre_synthetic_cnn14_lora.yaml"), *TINY, "data.n_per_class=3"]
    argv += ["train.max_steps=40", "train.eval_every=40", "train.save_every=40", "train.num_workers=1"]
    argv += [f"train.output_dir={out}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "recipes" / "genre.py"), *argv],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    workers: list[int] = []
    deadline = time.monotonic() + 500
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        log = out / "metrics.jsonl"
        if log.is_file() and log.read_text().count("\n") >= 2:  # training has started
            workers = _children(proc.pid)  # the loader's worker (between epochs there may be none)
        time.sleep(0.05)
    assert workers, f"no training with a worker seen; rc={proc.poll()}"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    (checkpoint,) = (out / "checkpoints").iterdir()
    step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    assert checkpoint.name == f"step_{step}" and 2 <= step < 40
    assert "received SIGTERM: saving a checkpoint at the end of this step, then stopping" in stderr
    assert stderr.rstrip().endswith(
        f"stopped by SIGTERM at step {step} of 40; the checkpoint {checkpoint} holds it: run the same command "
        "again to resume"
    )
    assert not any(_running(pid) for pid in workers)

    assert _script("genre").main(argv) == 0  # the same command, again: it resumes and finishes
    assert f"resuming from {checkpoint} (step {step} of 40)" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 41))  # each step once
    assert json.loads((out / "metrics.json").read_text())["steps"] == 40


@pytest.mark.parametrize(
    ("head", "head_config", "served"),
    [("linear", "{multi_label: true}", "multi_label"), ("rating", "{}", "rating")],
)
@pytest.mark.usefixtures("one_thread")
def test_a_head_for_another_task_is_refused(tmp_path: Path, head: str, head_config: str, served: str) -> None:
    from finetune.recipe import run_recipe

    cfg = load_config(
        None,
        [
            "model.backbone=cnn14.tiny",
            f"model.head={head}",
            f"model.head_config={head_config}",
            "data.n_per_class=3",
            "data.clip_seconds=1.0",
            f"train.output_dir={tmp_path}",
            "train.progress=false",
        ],
    )
    with pytest.raises(
        ValueError,
        match=rf"the '{head}' head serves the {served} task but data set 'synthetic_genres' is a single_label "
        r"task; choose a head for single_label",
    ):
        run_recipe(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.usefixtures("one_thread")
def test_a_typo_in_best_metric_fails_before_embeddings_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import finetune.recipe as recipe

    def no_caching(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("embeddings were cached before best_metric was checked")

    monkeypatch.setattr(recipe, "cache_embeddings", no_caching)
    cfg = load_config(
        None,
        [
            "model.backbone=cnn14.tiny",
            "model.freeze=backbone",
            "data.cache_embeddings=true",
            "data.n_per_class=3",
            "data.clip_seconds=1.0",
            "train.best_metric=acuracy",
            f"train.output_dir={tmp_path}",
            "train.progress=false",
        ],
    )
    with pytest.raises(
        ValueError, match=r"'acuracy' is not a single_label metric \(did you mean 'accuracy'\?\)"
    ):
        recipe.run_recipe(cfg)
