"""Calibration: temperature/vector scaling recover known distortions and lower NLL/ECE, prior correction and EM
label-shift recover known priors, and a saved calibration round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune.calibration import (
    CALIBRATION_NAME,
    Calibration,
    CalibrationError,
    em_label_shift,
    fit_calibration,
    prior_correction,
)
from heads.metrics import expected_calibration_error, negative_log_likelihood, softmax


def _calibrated_set(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true class distribution, and labels drawn from it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, c))
    p = softmax(z)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return z, labels


def test_temperature_recovers_a_known_temperature_within_2_percent() -> None:
    z, labels = _calibrated_set(20000, 10, seed=0)
    cal = fit_calibration(z * 2.5, labels)  # an over-confident model: logits 2.5x too large
    assert cal.temperature == pytest.approx(2.5, rel=0.02)
    assert cal.report["method"] == "temperature" and cal.report["n"] == 20000


def test_fitting_lowers_nll_and_ece_of_an_over_confident_model() -> None:
    z, labels = _calibrated_set(4000, 5, seed=1)
    raw = z * 3.0
    for method in ("temperature", "vector"):
        cal = fit_calibration(raw, labels, method=method)
        fixed = cal.apply(torch.from_numpy(raw)).numpy()
        nll_before, nll_after = negative_log_likelihood(raw, labels), negative_log_likelihood(fixed, labels)
        ece_before = expected_calibration_error(softmax(raw), labels)
        ece_after = expected_calibration_error(softmax(fixed), labels)
        assert nll_after < nll_before - 0.2, method
        assert ece_after < 0.5 * ece_before and ece_after < 0.03, method
        assert cal.report["after"]["nll"] == pytest.approx(nll_after, rel=1e-6)
        assert (fixed.argmax(1) == raw.argmax(1)).mean() > (0.999 if method == "temperature" else 0.9)


def test_multi_label_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(scale=2.0, size=(20000, 4))
    truth = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(np.float64)
    cal = fit_calibration(z * 0.5, truth, task="multi_label")  # under-confident
    assert cal.temperature == pytest.approx(0.5, rel=0.02)
    assert cal.probabilities(torch.zeros(1, 4)).tolist() == [[0.5] * 4]


def test_prior_correction_moves_a_calibrated_classifier_to_a_new_prior() -> None:
    train, target = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.3, 0.6])
    bias = prior_correction(train, target)
    np.testing.assert_allclose(bias, np.log(target / train), rtol=1e-12)
    cal = Calibration("single_label", 3).with_prior(train * 10, target)  # priors are normalised
    # a posterior equal to the training prior (an uninformative clip) becomes the target prior
    out = cal.probabilities(torch.log(torch.tensor(train))).numpy()
    np.testing.assert_allclose(out, target, rtol=1e-6)
    with pytest.raises(CalibrationError, match="single-label classification only"):
        Calibration("multi_label", 3).with_prior(train, target)


def test_em_recovers_a_shifted_prior_within_002_per_class() -> None:
    rng = np.random.default_rng(3)
    c, n = 4, 20000
    train_prior = np.full(c, 1 / c)
    target_prior = np.array([0.55, 0.25, 0.15, 0.05])
    means = 1.5 * np.eye(c)  # class-conditional Gaussians: an informative but imperfect classifier
    y = rng.choice(c, size=n, p=target_prior)
    x = means[y] + rng.normal(size=(n, c))
    log_lik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    probs = softmax(log_lik + np.log(train_prior))  # the exact posterior under the training prior
    result = em_label_shift(probs, train_prior)
    assert result.converged and result.iterations < 100
    np.testing.assert_allclose(result.prior, target_prior, atol=0.02)
    assert np.allclose(result.probs.sum(1), 1.0)
    with pytest.warns(UserWarning, match="did not converge in 2 iterations"):
        em_label_shift(probs, train_prior, max_iter=2)


def test_saved_calibration_round_trips_and_bad_files_are_named(tmp_path: Path) -> None:
    z, labels = _calibrated_set(500, 3, seed=4)
    cal = fit_calibration(z * 2, labels, method="vector", labels=["a", "b", "c"])
    path = cal.save(tmp_path)
    assert path.name == CALIBRATION_NAME
    back = Calibration.load(tmp_path)
    assert back == cal
    logits = torch.randn(7, 3)
    assert torch.equal(back.apply(logits), cal.apply(logits))
    assert Calibration.load(tmp_path / "missing") is None
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match=f"could not read {path}"):
        Calibration.load(tmp_path)
    path.write_text(json.dumps({**cal.to_dict(), "temprature": 2.0}))
    with pytest.raises(CalibrationError, match=r"unknown keys \['temprature'\]"):
        Calibration.load(tmp_path)


def test_bad_inputs_are_refused_with_what_to_fix() -> None:
    with pytest.raises(CalibrationError, match="classification tasks, not 'rating'"):
        fit_calibration(np.zeros((3, 2)), np.zeros((3, 2)), task="rating")
    with pytest.raises(CalibrationError, match="method must be one of temperature, vector"):
        fit_calibration(np.zeros((3, 2)), np.array([0, 1, 0]), method="platt")
    with pytest.raises(CalibrationError, match="NaN or Inf"):
        fit_calibration(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(CalibrationError, match=r"class indices must lie in \[0, 2\)"):
        fit_calibration(np.zeros((2, 2)), np.array([0, 5]))
    with pytest.raises(CalibrationError, match="temperature must be a positive finite number"):
        Calibration("single_label", 2, temperature=0.0)
    with pytest.raises(CalibrationError, match="fitted for 2 classes, got logits with 3"):
        Calibration("single_label", 2).apply(torch.zeros(1, 3))


def test_model_probabilities_use_a_calibration_saved_and_loaded_with_the_model(tmp_path: Path) -> None:
    from finetune import AudioModel, build_model

    model = build_model("cnn14.tiny", head="linear", num_outputs=3, labels=["a", "b", "c"])
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert torch.equal(model.probabilities(logits), logits.softmax(-1))
    cal = Calibration("single_label", 3, temperature=2.0, labels=("a", "b", "c"))
    model.calibration = cal
    torch.testing.assert_close(model.probabilities(logits), (logits / 2).softmax(-1), rtol=0, atol=0)
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / CALIBRATION_NAME).is_file()
    loaded = AudioModel.from_pretrained(tmp_path / "m")
    assert loaded.calibration == cal
    model.calibration = None
    model.save_pretrained(tmp_path / "m")  # a stale calibration.json never survives a save without one
    assert not (tmp_path / "m" / CALIBRATION_NAME).exists()
    with pytest.raises(CalibrationError, match=r"fitted for classes \['x', 'b', 'c'\], the model has"):
        model.calibration = Calibration("single_label", 3, labels=("x", "b", "c"))
    with pytest.raises(CalibrationError, match="multi_label calibration for 3 classes does not fit"):
        model.calibration = Calibration("multi_label", 3)
