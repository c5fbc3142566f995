"""The augmentation study's summary: means over seeds and changes paired by seed."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from eval.augmentations import resummarise, summarise, table


def _run(setting: str, seed: int, accuracy: float) -> dict[str, object]:
    return {"setting": setting, "seed": seed, "accuracy": accuracy, "macro_f1": accuracy / 2, "ece": 0.1}


RUNS = [
    _run("none", 0, 0.50),
    _run("mixup", 0, 0.60),
    _run("none", 1, 0.70),
    _run("mixup", 1, 0.75),
    _run("none", 2, 0.60),
    _run("mixup", 2, 0.70),
    _run("specmix", 0, 0.40),  # one seed only: no spread
]


def test_summarise_pairs_the_change_by_seed() -> None:
    got = summarise(RUNS)
    assert got["mixup"]["n"] == 3
    assert got["mixup"]["accuracy_mean"] == pytest.approx(2.05 / 3)
    assert got["mixup"]["accuracy_std"] == pytest.approx(statistics.stdev([0.6, 0.75, 0.7]))
    assert got["mixup"]["macro_f1_mean"] == pytest.approx(2.05 / 6)
    # paired: +0.10, +0.05, +0.10 (the unpaired spread of the two settings' means would be far wider)
    assert got["mixup"]["accuracy_change_mean"] == pytest.approx(0.25 / 3)
    assert got["mixup"]["accuracy_change_std"] == pytest.approx(statistics.stdev([0.10, 0.05, 0.10]))
    assert got["none"]["accuracy_change_mean"] == 0.0 and got["none"]["accuracy_change_std"] == 0.0
    assert (got["specmix"]["accuracy_change_mean"], got["specmix"]["accuracy_std"]) == (
        pytest.approx(-0.10),
        0.0,
    )


def test_summarise_without_a_baseline_reports_no_change() -> None:
    got = summarise([_run("mixup", 0, 0.6), _run("mixup", 1, 0.7)])
    assert got["mixup"]["accuracy_change_mean"] != got["mixup"]["accuracy_change_mean"]  # NaN
    assert "accuracy_change_std" not in got["mixup"]
    assert "| mixup | 2 | 0.650 ± 0.071 | +nan |" in table(got)


def test_resummarise_rewrites_the_summary_of_a_result_file(tmp_path: Path) -> None:
    path = tmp_path / "augmentations-cpu.json"
    path.write_text(json.dumps({"steps": 150, "summary": {"stale": {}}, "runs": RUNS}))
    text = resummarise(path)
    assert (
        text.splitlines()[3]
        == "| mixup | 3 | 0.683 ± 0.076 | +0.083 ± 0.029 | 0.342 ± 0.038 | 0.100 ± 0.000 |"
    )
    saved = json.loads(path.read_text())
    assert (
        saved["steps"] == 150
        and saved["runs"] == RUNS
        and set(saved["summary"]) == {"none", "mixup", "specmix"}
    )
