"""What a run says about its data and test: the data summary, splits.csv, predictions.csv, the baselines and the
closing summary, exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from finetune.data.registry import TaskData
from finetune.reporting import (
    baselines,
    data_summary,
    row_targets,
    run_summary,
    write_predictions,
    write_splits,
)
from heads.tasks import MULTI_LABEL, RATING, SINGLE_LABEL


def _genres() -> TaskData:
    features = Features(
        {
            "path": Value("string"),
            "name": Value("string"),
            "label": ClassLabel(names=["jazz", "rock"]),
            "duration": Value("float64"),
        }
    )
    rows = {
        "train": (["a", "b", "c"], [0, 1, 1], [600.0, 900.0, 300.0]),
        "validation": (["d"], [0], [None]),
        "test": (["e", "f"], [1, 1], [1800.0, 1800.0]),
    }
    splits = {
        s: Dataset.from_dict(
            {"path": [f"/m/{n}.ogg" for n in names], "name": names, "label": labels, "duration": d},
            features=features,
        )
        for s, (names, labels, d) in rows.items()
    }
    return TaskData(DatasetDict(splits), SINGLE_LABEL, ("jazz", "rock"))


def test_data_summary_counts_clips_per_class_and_split() -> None:
    assert data_summary(_genres(), "manifest").splitlines() == [
        "data set manifest: 6 clips (train 3 / validation 1 / test 2), 2 single_label outputs, 1.50 h of audio",
        "  class       train  validation        test",
        "  jazz            1           1           0",
        "  rock            2           0           2",
    ]


def test_splits_csv_names_every_clip_and_its_class(tmp_path: Path) -> None:
    write_splits(_genres(), tmp_path / "splits.csv")
    with (tmp_path / "splits.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["split", "name", "path", "label", "duration"]
    assert [(r["split"], r["name"], r["label"]) for r in rows] == [
        ("train", "a", "jazz"), ("train", "b", "rock"), ("train", "c", "rock"),
        ("validation", "d", "jazz"), ("test", "e", "rock"), ("test", "f", "rock"),
    ]  # fmt: skip
    assert rows[0]["path"] == "/m/a.ogg" and rows[3]["duration"] == ""


def test_baselines_by_task() -> None:
    data = _genres()
    train, test = (
        row_targets(data.splits["train"], SINGLE_LABEL),
        row_targets(data.splits["test"], SINGLE_LABEL),
    )
    assert baselines(SINGLE_LABEL, train, test, data.names) == {
        "chance_accuracy": 0.5,
        "majority_class": "rock",
        "majority_accuracy": 1.0,
    }
    ratings = baselines(RATING, np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[0.5, 0.0]]), ["x", "y"])
    assert ratings == {"train_mean_mse": 0.5}
    tags = baselines(
        MULTI_LABEL, np.zeros((2, 3)), np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]]), ["a", "b", "c"]
    )
    assert tags == {"chance_map": pytest.approx(0.375)}  # (2/4 + 1/4) / 2 classes with positives


def test_predictions_csv_rows_by_task(tmp_path: Path) -> None:
    clips = [
        {
            "name": "e",
            "path": "/m/e.ogg",
            "windows": 8,
            "error": None,
            "output": np.array([0.3, 0.7]),
            "target": 1,
        },
        {
            "name": "f",
            "path": "/m/f.ogg",
            "windows": 0,
            "error": "the file is empty (0 bytes)",
            "output": None,
            "target": 0,
        },
    ]
    write_predictions(tmp_path / "p.csv", SINGLE_LABEL, ["jazz", "rock"], clips)
    with (tmp_path / "p.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"name": "e", "path": "/m/e.ogg", "windows": "8", "error": "", "target": "rock", "correct": "1", "predicted": "rock", "p_jazz": "0.3", "p_rock": "0.7"},
        {"name": "f", "path": "/m/f.ogg", "windows": "0", "error": "the file is empty (0 bytes)", "target": "", "correct": "", "predicted": "", "p_jazz": "", "p_rock": ""},
    ]  # fmt: skip
    rated = [
        {
            "name": "r",
            "path": None,
            "windows": 2,
            "error": None,
            "output": np.array([0.5]),
            "target": np.array([0.25]),
        }
    ]
    write_predictions(tmp_path / "r.csv", RATING, ["tempo"], rated)
    assert (tmp_path / "r.csv").read_text().splitlines() == [
        "name,path,windows,error,pred_tempo,true_tempo",
        "r,,2,,0.5,0.25",
    ]


def test_run_summary_lines() -> None:
    metrics = {
        "baselines": {"chance_accuracy": 0.5, "majority_class": "rock", "majority_accuracy": 0.75},
        "confusion_matrix": [[3, 1], [0, 4]],
        "class_names": ["jazz", "electronic music"],
        "test_errors": {"f": "the file is empty (0 bytes)"},
        "skipped_rows": 2,
    }
    assert run_summary(metrics).splitlines() == [
        "baselines: chance accuracy 0.500, majority class 'rock' 0.750",
        "confusion matrix (rows: true class, columns: predicted):",
        "  true / predicted        jazz electronic",
        "  jazz                       3          1",
        "  electronic music           0          4",
        "1 test clip(s) could not be read: see predictions.csv",
        "2 row(s) failed to read during training and were skipped: see skipped.jsonl",
    ]
    assert (
        run_summary({"baselines": {"train_mean_mse": 0.01234}})
        == "baseline: predicting the training mean gives MSE 0.0123"
    )
