"""Probes: selection on validation only (no test argument; the record matches the validation scores), the crop
mean, the prior probe, the MLP's epoch choice, and constant tags."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from eval.benchmark.probes import ProbeConfig, ProbeData, clip_mean, select_probe
from eval.benchmark.scoring import task_loss
from heads.tasks import MULTI_LABEL, RATING, SINGLE_LABEL


def _blobs(n: int, seed: int, noise: float = 1.0) -> ProbeData:
    """Three Gaussian classes in 5-D, two crops per clip."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = np.eye(3, 5) * 3.0
    arrays = [centres[y] + noise * rng.normal(size=(2, 5)) for y in labels]
    return ProbeData.build(arrays, labels, [f"c{seed}-{i}" for i in range(n)])


def test_selection_takes_no_test_split_and_keeps_the_best_validation_point() -> None:
    assert list(inspect.signature(select_probe).parameters) == [
        "kind",
        "train",
        "validation",
        "task",
        "metric",
        "config",
        "seed",
    ]
    train, validation = _blobs(30, 0, noise=2.0), _blobs(30, 1, noise=2.0)
    config = ProbeConfig(linear_c=(1e-4, 1e-2, 1.0))
    probe, record = select_probe("linear", train, validation, SINGLE_LABEL, "accuracy", config)
    assert [p["C"] for p in record["grid"]] == [1e-4, 1e-2, 1.0]
    preds = {}
    for point in record["grid"]:  # every point's score is its validation accuracy and loss
        single = ProbeConfig(linear_c=(point["C"],))
        preds[point["C"]] = select_probe("linear", train, validation, SINGLE_LABEL, "accuracy", single)[
            0
        ].predict(validation)
        hits = preds[point["C"]].argmax(1) == validation.targets
        assert point["validation"] == pytest.approx(float(hits.mean()))
        assert point["validation_loss"] == pytest.approx(
            task_loss(SINGLE_LABEL, preds[point["C"]], validation.targets)
        )
    assert len({p["validation"] for p in record["grid"]}) > 1  # the grid points differ on validation
    best = max(record["grid"], key=lambda p: (p["validation"], -p["validation_loss"]))
    assert record["chosen"] == best
    np.testing.assert_allclose(probe.predict(validation), preds[best["C"]], rtol=1e-6)


def test_clip_prediction_is_the_mean_of_its_crops() -> None:
    values = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    np.testing.assert_allclose(clip_mean(values, np.array([0, 0, 1]), 2), [[2.0, 1.0], [5.0, 5.0]])
    train, validation = _blobs(12, 0), _blobs(6, 1)
    probe, _ = select_probe(
        "linear", train, validation, SINGLE_LABEL, "accuracy", ProbeConfig(linear_c=(1.0,))
    )
    rows = probe.predict_rows(validation.x)
    np.testing.assert_allclose(
        probe.predict(validation), clip_mean(rows, validation.clip_index, 6), rtol=1e-6
    )


def test_prior_probe_predicts_training_frequencies_and_means() -> None:
    empty = [np.zeros((1, 0), np.float32)] * 4
    train = ProbeData.build(empty, np.array([0, 0, 0, 2]), list("abcd"))
    probe, record = select_probe("prior", train, train, SINGLE_LABEL, "accuracy")
    probs = np.exp(probe.predict(train))
    np.testing.assert_allclose(probs[0], [0.75, 0.0, 0.25], atol=1e-3)
    assert record["grid"][0]["validation"] == 0.75
    ratings = np.array([[0.2, 1.0], [0.4, 3.0]], dtype=np.float32)
    rated = ProbeData.build(empty[:2], ratings, ["a", "b"])
    probe, _ = select_probe("prior", rated, rated, RATING, "mean_r2")
    np.testing.assert_allclose(probe.predict(rated), [[0.3, 2.0], [0.3, 2.0]], rtol=1e-6)


def test_mlp_probe_keeps_its_best_validation_epoch_and_is_seeded() -> None:
    train, validation = _blobs(30, 0), _blobs(15, 1)
    config = ProbeConfig(mlp_hidden=(16,), mlp_lr=(1e-2,), mlp_epochs=15)
    probe, record = select_probe("mlp", train, validation, SINGLE_LABEL, "accuracy", config, seed=4)
    again, record_again = select_probe("mlp", train, validation, SINGLE_LABEL, "accuracy", config, seed=4)
    assert record == record_again and 1 <= record["chosen"]["epoch"] <= 15
    np.testing.assert_array_equal(probe.predict(validation), again.predict(validation))
    assert record["chosen"]["validation"] == pytest.approx(
        float((probe.predict(validation).argmax(1) == validation.targets).mean())
    )


def test_multi_label_probe_survives_a_tag_that_never_occurs_in_training() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 1, 4))
    tags = np.zeros((20, 3), np.float32)
    tags[:, 0] = x[:, 0, 0] > 0
    tags[:, 1] = x[:, 0, 1] > 0  # tag 2 never present
    data = ProbeData.build(list(x), tags, [str(i) for i in range(20)])
    probe, _ = select_probe("linear", data, data, MULTI_LABEL, "map", ProbeConfig(linear_c=(1.0,)))
    out = probe.predict(data)
    np.testing.assert_allclose(out[:, 2], np.log(0.5 / 21) - np.log1p(-0.5 / 21), rtol=1e-6)
    assert out[tags[:, 0] == 1, 0].mean() > out[tags[:, 0] == 0, 0].mean()


def test_bad_probe_requests_name_what_to_fix() -> None:
    data = _blobs(6, 0)
    with pytest.raises(KeyError, match="unknown probe 'svm'; known: linear, mlp, prior"):
        select_probe("svm", data, data, SINGLE_LABEL, "accuracy")
    with pytest.raises(ValueError, match="'acc' is not a single_label metric"):
        select_probe("linear", data, data, SINGLE_LABEL, "acc")
    empty = ProbeData.build([], np.zeros(0, np.int64), [])
    with pytest.raises(ValueError, match="probes need training and validation clips, got 6 and 0"):
        select_probe("linear", data, empty, SINGLE_LABEL, "accuracy")


def _ratings(n: int, seed: int) -> ProbeData:
    """Two PercePiano-like ratings (about 0.6, spread 0.05) linear in 4-D features, one crop per clip."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (0.6 + 0.05 * np.stack([x[:, 0], x[:, 1] - x[:, 2]], axis=1) / np.array([1.0, 1.4])).astype(
        np.float32
    )
    return ProbeData.build([row[None] for row in x], y, [f"r{seed}-{i}" for i in range(n)])


def test_mlp_rating_probe_regresses_standardised_targets_and_predicts_in_their_units() -> None:
    train, validation = _ratings(64, 0), _ratings(32, 1)
    config = ProbeConfig(mlp_hidden=(16,), mlp_lr=(1e-2,), mlp_epochs=40)
    probe, record = select_probe("mlp", train, validation, RATING, "mean_r2", config, seed=0)
    pred = probe.predict(validation)
    assert pred.shape == (32, 2)
    assert np.abs(pred.mean(axis=0) - validation.targets.mean(axis=0)).max() < 0.01
    assert record["chosen"]["validation"] > 0.8
