"""Report formatting: the ``mean ± std [low, high]`` cells and the table rows."""

from __future__ import annotations

from eval.benchmark.report import _table, format_cell


def test_cells_read_mean_std_and_interval() -> None:
    assert format_cell({"mean": 0.8123, "std": 0.0214}, [0.781, 0.8449]) == "0.812 ± 0.021 [0.78, 0.84]"
    assert format_cell({"mean": 0.8123, "std": None}, [0.781, 0.8449]) == "0.812 [0.78, 0.84]"
    assert format_cell({"mean": 0.5, "std": 0.1}) == "0.500 ± 0.100"


def test_classification_tables_put_baselines_first_and_show_calibration() -> None:
    stats = {"mean": 0.5, "std": 0.1}
    model = {
        "backbone": "cnn14.tiny",
        "cells": 3,
        "checkpoint": "/w/cnn14.pth",
        "metrics": {
            "accuracy": stats,
            "macro_f1": stats,
            "ece_before": {"mean": 0.2},
            "ece_after": {"mean": 0.05},
            "nll_before": {"mean": 1.5},
            "nll_after": {"mean": 1.2},
        },
        "ci95": {"accuracy": [0.4, 0.6], "macro_f1": [0.3, 0.7]},
        "wall_seconds": {"mean": 41.6, "std": 2.0},
    }
    baseline = {**model, "backbone": "baseline", "cells": 1, "checkpoint": None}
    lines = _table("single_label", {"cnn14.tiny full fine-tune": model, "baseline: majority": baseline})
    assert (
        lines[0]
        == "| model | weights | cells | accuracy | macro-F1 | ECE raw → calibrated | NLL raw → calibrated "
        "| s / cell |"
    )
    assert lines[2].startswith("| baseline: majority | - | 1 |")
    assert lines[3] == (
        "| cnn14.tiny full fine-tune | `cnn14.pth` | 3 | 0.500 ± 0.100 [0.40, 0.60] | 0.500 ± 0.100 [0.30, 0.70] "
        "| 0.200 → 0.050 | 1.500 → 1.200 | 42 |"
    )


def _row(backbone: str, mode: str, **extra: object) -> dict:
    stats = {"mean": 0.25, "std": None}
    metrics = {"mean_r2": stats, "mean_r": stats, "mae": stats}
    return {
        "backbone": backbone,
        "mode": mode,
        "cells": 1,
        "checkpoint": None,
        "metrics": metrics,
        "ci95": {},
        **extra,
    }


def test_rows_without_timing_or_calibration_keep_every_column() -> None:
    rating = _table("rating", {"cnn14.tiny linear probe": _row("cnn14.tiny", "linear_probe")})
    assert rating[0] == "| model | weights | cells | mean R2 | mean r | MAE | s / cell |"
    assert rating[2] == "| cnn14.tiny linear probe | random init | 1 | 0.250 | 0.250 | 0.250 | - |"
    row = _row("cnn14.tiny", "linear_probe", wall_seconds={"mean": float("nan"), "std": None})
    row["metrics"] = {"accuracy": {"mean": 0.5, "std": None}}
    single = _table("single_label", {"cnn14.tiny linear probe": row})
    assert single[2] == "| cnn14.tiny linear probe | random init | 1 | 0.500 | - | - | - | - |"
    assert single[2].count("|") == single[0].count("|")
