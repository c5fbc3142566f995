"""The grid runner: entries and report of a small run, resuming, a failing cell recorded while the rest finish,
probe selection that never sees the test split, and fine-tuning cells through the recipe configs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from eval.benchmark import modes, runner
from eval.benchmark.probes import ProbeConfig, select_probe
from eval.benchmark.runner import BenchmarkOptions, Cell, RunContext, run_benchmark
from eval.benchmark.scoring import BOOTSTRAP_METRICS, bootstrap
from eval.benchmark.tasks import get_benchmark_task

pytestmark = pytest.mark.usefixtures("tones", "one_thread")

_SMALL = ProbeConfig(linear_c=(0.1, 1.0), mlp_hidden=(16,), mlp_lr=(1e-2,), mlp_epochs=5)


def _options(tmp_path: Path, **kw: Any) -> BenchmarkOptions:
    defaults = {
        "backbones": ["cnn14.tiny"],
        "tasks": [get_benchmark_task("tones")],
        "modes": ["linear_probe"],
        "seeds": [0, 1],
        "out": tmp_path / "run",
        "bootstrap": 50,
        "cache": tmp_path / "cache",
        "probe": _SMALL,
        "progress": False,
        "plots": False,
        "command": "test",
    }
    return BenchmarkOptions(**{**defaults, **kw})


def test_a_run_records_every_cell_and_reports_pooled_intervals(tmp_path: Path) -> None:
    payload = run_benchmark(_options(tmp_path, plots=True))
    cells = {c["cell"]: c for c in payload["cells"]}
    assert sorted(cells) == [
        "tones/fold0/baseline/majority/seed0",
        "tones/fold0/baseline/spectral/seed0",
        "tones/fold0/cnn14.tiny/linear_probe/seed0",
        "tones/fold0/cnn14.tiny/linear_probe/seed1",
    ]
    entry = cells["tones/fold0/cnn14.tiny/linear_probe/seed1"]
    assert entry["status"] == "ok" and entry["task_kind"] == "single_label" and entry["clips"]["test"] == 9
    assert {"accuracy", "macro_f1", "per_class_f1", "confusion_matrix", "calibration", "ci95"} <= set(
        entry["metrics"]
    )
    assert entry["checkpoint_sha256"] is None and entry["library_version"] and entry["machine"]["cpu_count"]
    assert entry["config"]["selection"]["chosen"]["C"] in (0.1, 1.0) and entry["wall_seconds"] > 0
    run = tmp_path / "run"
    assert (
        json.loads((run / "cells" / entry["cell"] / "done.json").read_text())["metrics"] == entry["metrics"]
    )
    on_disk = json.loads((run / "results.json").read_text())
    assert len(on_disk["cells"]) == 4 and on_disk["command"] == "test"
    row = on_disk["summary"]["tones"]["cnn14.tiny linear probe"]
    assert row["cells"] == 2 and row["seeds"] == [0, 1]
    accuracies = [
        cells[f"tones/fold0/cnn14.tiny/linear_probe/seed{s}"]["metrics"]["accuracy"] for s in (0, 1)
    ]
    assert row["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    arrays = [
        load_file(str(run / "cells" / f"tones/fold0/cnn14.tiny/linear_probe/seed{s}/predictions.safetensors"))
        for s in (0, 1)
    ]
    pooled = bootstrap(
        [([a["test_predictions"] for a in arrays], arrays[0]["test_targets"].astype(np.int64))],
        BOOTSTRAP_METRICS["single_label"]["accuracy"],
        50,
    )
    assert row["ci95"]["accuracy"] == pytest.approx(list(pooled))
    table = (run / "results.md").read_text()
    assert re.search(
        r"\| cnn14\.tiny linear probe \| random init \| 2 \| \d\.\d{3} ± \d\.\d{3} \[\d\.\d\d, \d\.\d\d\] \|",
        table,
    )
    assert "| baseline: majority / training mean | - | 1 | 0.333 [" in table
    assert (run / "plots" / "tones-comparison.png").is_file()
    assert (run / "plots" / "tones-cnn14.tiny_linear_probe-reliability.png").is_file()


def test_a_rerun_skips_finished_cells_and_reruns_only_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_benchmark(_options(tmp_path))
    calls: list[str] = []
    real = runner.run_cell

    def counting(cell: Cell, context: RunContext) -> dict[str, Any]:
        calls.append(cell.name)
        return real(cell, context)

    monkeypatch.setattr(runner, "run_cell", counting)
    again = run_benchmark(_options(tmp_path))
    assert calls == [] and all(c["resumed"] for c in again["cells"])
    assert [c["metrics"] for c in again["cells"]] == [c["metrics"] for c in first["cells"]]
    (tmp_path / "run" / "cells" / "tones/fold0/cnn14.tiny/linear_probe/seed1/done.json").unlink()
    run_benchmark(_options(tmp_path))
    assert calls == ["tones/fold0/cnn14.tiny/linear_probe/seed1"]
    run_benchmark(_options(tmp_path, bootstrap=60))  # other settings: nothing is reused
    assert len(calls) == 1 + 4


def test_a_report_only_run_reports_the_finished_cells_and_lists_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_benchmark(_options(tmp_path, seeds=[0]))
    monkeypatch.setattr(runner, "run_cell", lambda cell, context: pytest.fail(f"ran {cell.name}"))
    payload = run_benchmark(_options(tmp_path, modes=["linear_probe", "mlp_probe"], report_only=True))
    status = {c["cell"]: c["status"] for c in payload["cells"]}
    assert status == {
        "tones/fold0/baseline/majority/seed0": "ok",
        "tones/fold0/baseline/spectral/seed0": "ok",
        "tones/fold0/cnn14.tiny/linear_probe/seed0": "ok",
        "tones/fold0/cnn14.tiny/mlp_probe/seed0": runner.NOT_RUN,
        "tones/fold0/cnn14.tiny/linear_probe/seed1": runner.NOT_RUN,
        "tones/fold0/cnn14.tiny/mlp_probe/seed1": runner.NOT_RUN,
    }
    rows = payload["summary"]["tones"]
    assert set(rows) == {
        "baseline: majority / training mean",
        "baseline: log-mel mean+std, linear",
        "cnn14.tiny linear probe",
    }
    assert rows["cnn14.tiny linear probe"]["cells"] == 1
    assert rows["cnn14.tiny linear probe"]["metrics"]["accuracy"]["mean"] == pytest.approx(
        first["cells"][2]["metrics"]["accuracy"]
    )
    report = (tmp_path / "run" / "results.md").read_text()
    assert (
        "## Cells not run\n\n- `tones/fold0/cnn14.tiny/mlp_probe/seed0`: not run (no finished cell with these settings)"
        in report
    )
    assert "## Failed cells" not in report
    assert not (tmp_path / "run" / "cells" / "tones/fold0/cnn14.tiny/mlp_probe").exists()


def test_a_failing_cell_is_recorded_while_the_others_finish(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pth"
    opts = _options(
        tmp_path, backbones=["ast.tiny", "cnn14.tiny"], seeds=[0], checkpoints={"ast.tiny": str(missing)}
    )
    payload = run_benchmark(opts)
    status = {c["cell"]: c["status"] for c in payload["cells"]}
    assert status["tones/fold0/ast.tiny/linear_probe/seed0"] == "failed"
    assert status["tones/fold0/cnn14.tiny/linear_probe/seed0"] == "ok"
    failed = next(c for c in payload["cells"] if c["status"] == "failed")
    assert (
        failed["error"]
        == f"CheckpointError: checkpoint file {missing} for ast.tiny does not exist; check the path"
    )
    assert "Traceback" in failed["traceback"]
    cell_dir = tmp_path / "run" / "cells" / "tones/fold0/ast.tiny/linear_probe/seed0"
    assert (cell_dir / "failed.json").is_file() and not (cell_dir / "done.json").exists()
    report = (tmp_path / "run" / "results.md").read_text()
    assert f"- `tones/fold0/ast.tiny/linear_probe/seed0`: {failed['error']}" in report
    assert "ast.tiny" not in json.loads((tmp_path / "run" / "results.json").read_text())["summary"]["tones"]


def test_probe_selection_is_only_ever_given_the_training_and_validation_clips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, set[str], set[str]]] = []

    def spy(kind: str, train: Any, validation: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((kind, set(train.ids), set(validation.ids)))
        return select_probe(kind, train, validation, *args, **kwargs)

    monkeypatch.setattr(modes, "select_probe", spy)
    opts = _options(tmp_path, modes=["linear_probe", "mlp_probe"], seeds=[0])
    run_benchmark(opts)
    fold = RunContext(opts).fold(Cell(opts.tasks[0], 0, "cnn14.tiny", "linear_probe", 0))
    assert sorted(kind for kind, _, _ in seen) == ["linear", "linear", "mlp", "prior"]
    for _, train_ids, val_ids in seen:
        assert train_ids == set(fold.train.ids) and val_ids == set(fold.validation.ids)
        assert not (train_ids | val_ids) & set(fold.test.ids)


def test_finetuning_cells_train_from_the_recipe_configs_and_select_on_validation(tmp_path: Path) -> None:
    tasks = [get_benchmark_task("tones"), get_benchmark_task("tones_multi")]
    recipe = ("train.lr=0.003", "train.layer_decay=1.0")
    opts = _options(tmp_path, tasks=tasks, modes=["full"], seeds=[0], steps=3, baselines=False, recipe=recipe)
    payload = run_benchmark(opts)
    for entry in payload["cells"]:
        assert entry["status"] == "ok", entry.get("error")
        config = entry["config"]
        assert config["recipe_config"] == "genre_synthetic_cnn14_full.yaml" and config["steps"] == 3
        assert config["recipe_overrides"] == list(recipe)
        train = config["config"]["train"]
        assert (train["max_steps"], train["eval_every"], train["seed"]) == (3, 1, 0)
        assert (train["lr"], train["layer_decay"], train["weight_decay"]) == (0.003, 1.0, 0.01)
        assert train["best_metric"] == ("accuracy" if entry["task"] == "tones" else "map")
        assert 1 <= config["best_step"] <= 3
        out = tmp_path / "run" / "cells" / entry["cell"] / "train"
        assert (out / "best" / "config.json").is_file() and not (out / "checkpoints").exists()
        assert "calibration" in entry["metrics"]
    multi = next(e for e in payload["cells"] if e["task"] == "tones_multi")
    assert multi["config"]["config"]["model"]["head_config"]["multi_label"] is True
    assert set(multi["metrics"]["ci95"]) == {"map", "roc_auc"}
    torch.manual_seed(0)  # leave the global generator as the other tests expect


def test_recipe_overrides_change_the_fingerprint_of_training_cells_only(tmp_path: Path) -> None:
    task = get_benchmark_task("tones")
    plain = RunContext(_options(tmp_path))
    tuned = RunContext(_options(tmp_path, recipe=("train.lr=0.003",)))
    probe, full = Cell(task, 0, "cnn14.tiny", "linear_probe", 0), Cell(task, 0, "cnn14.tiny", "full", 0)
    assert plain.fingerprint(probe) == tuned.fingerprint(probe)  # probes' results stay valid
    assert plain.fingerprint(full) != tuned.fingerprint(full)  # a fine-tuned cell reruns with the new recipe


def test_rating_tasks_get_per_dimension_r2(tmp_path: Path) -> None:
    payload = run_benchmark(
        _options(tmp_path, tasks=[get_benchmark_task("tones_rating")], seeds=[0], plots=True)
    )
    rows = payload["summary"]["tones_rating"]
    assert set(rows["cnn14.tiny linear probe"]["per_dimension_r2"]) == {"loudness", "pitch"}
    assert "calibration" not in payload["cells"][0]["metrics"]
    assert (tmp_path / "run" / "plots" / "tones_rating-r2.png").is_file()
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| model | weights | cells | mean R2 | mean r | MAE |" in table
