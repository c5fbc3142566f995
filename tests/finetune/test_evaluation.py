"""Prediction and evaluation by task: crop averaging, targets from the task's key, the task from the model or the
argument, and clear errors when the task or the targets are missing."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from finetune.evaluation import Predictions, average_crops, evaluate, model_inputs, predict, resolve_task
from finetune.model import ModelOutput
from heads.metrics import multilabel_metrics
from heads.tasks import MULTI_LABEL, RATING, SINGLE_LABEL, Task


class _Mean(nn.Module):
    """Predicts ``[m, -m]`` from a waveform's mean ``m``; the loss is the sum of the batch's ``m``."""

    def __init__(self, task: Task | None) -> None:
        super().__init__()
        self.task = task
        self.scale = nn.Parameter(torch.ones(()))
        self.seen_training: list[bool] = []

    def forward(self, waveform: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        self.seen_training.append(self.training)
        m = waveform.mean(-1, keepdim=True) * self.scale
        pred = torch.cat([m, -m], -1)
        field = self.task.output_field if self.task is not None else "logits"
        return ModelOutput(**{field: pred}, loss=m.sum() if labels is not None else None)


def _batch(values: list[float], clip_index: list[int] | None = None, **targets: list) -> dict:
    batch = {
        "waveform": torch.tensor(values)[:, None].repeat(1, 4),
        **{k: torch.tensor(v) for k, v in targets.items()},
    }
    if clip_index is not None:
        batch["clip_index"] = torch.tensor(clip_index)
    return batch


def test_average_crops_pools_each_clips_crops() -> None:
    values = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    torch.testing.assert_close(
        average_crops(values, torch.tensor([0, 0, 1])), torch.tensor([[2.0, 1.0], [5.0, 4.0]]), rtol=0, atol=0
    )
    with pytest.raises(ValueError, match=r"clips \[1\] have no crops"):
        average_crops(values, torch.tensor([0, 0, 2]))
    with pytest.raises(ValueError, match="3 values but 2 clip indices"):
        average_crops(values, torch.tensor([0, 1]))


def test_predict_averages_each_clips_crops_and_its_targets() -> None:
    model = _Mean(SINGLE_LABEL).train()
    loader = [
        _batch([1.0, 3.0, 5.0], [0, 0, 1], labels=[0, 0, 1]),
        _batch([-2.0], [0], labels=[1]),
    ]
    out = predict(model, loader)
    assert isinstance(out, Predictions)
    np.testing.assert_array_equal(out.predictions, [[2.0, -2.0], [5.0, -5.0], [-2.0, 2.0]])
    np.testing.assert_array_equal(out.targets, [0, 1, 1])
    assert out.targets.dtype == np.int64
    assert out.loss == 3.5  # the mean of the batches' losses, 1 + 3 + 5 and -2
    preds, targets, loss = out  # unpacks like the tuple it used to be
    assert preds is out.predictions and targets is out.targets and loss == out.loss
    assert model.seen_training == [False, False] and model.training  # evaluated in eval mode, then restored


def test_targets_come_from_the_tasks_key() -> None:
    batch = _batch([1.0, 2.0], labels=[0, 1], ratings=[[0.5, 0.5], [0.1, 0.9]])
    assert model_inputs(batch, RATING)["labels"] is batch["ratings"]
    assert model_inputs(batch, SINGLE_LABEL)["labels"] is batch["labels"]
    with pytest.raises(KeyError, match="the batch has no 'ratings', where the rating task keeps its targets"):
        model_inputs(_batch([1.0], labels=[0]), RATING)
    assert "labels" not in model_inputs(_batch([1.0], labels=[0]), RATING, require_targets=False)
    with pytest.raises(KeyError, match="a batch needs one of 'waveform', 'features', 'embeddings'"):
        model_inputs({"labels": torch.zeros(1)}, SINGLE_LABEL)
    with_descriptors = {**_batch([1.0], labels=[0]), "descriptors": torch.ones(1, 5)}
    assert model_inputs(with_descriptors, SINGLE_LABEL)["descriptors"] is with_descriptors["descriptors"]

    out = predict(_Mean(RATING), [_batch([1.0, 2.0], ratings=[[0.5, 0.5], [0.1, 0.9]])])
    np.testing.assert_array_equal(out.targets, np.array([[0.5, 0.5], [0.1, 0.9]], dtype=np.float32))


def test_the_task_comes_from_the_argument_or_the_unwrapped_model() -> None:
    assert resolve_task(_Mean(None), "multi_label") is MULTI_LABEL
    assert resolve_task(_Mean(RATING), SINGLE_LABEL) is SINGLE_LABEL  # the argument wins
    wrapper = nn.Module()
    wrapper.module = _Mean(RATING)
    accelerator = SimpleNamespace(unwrap_model=lambda m: m.module)
    assert resolve_task(wrapper, accelerator=accelerator) is RATING
    with pytest.raises(
        TypeError, match=r"cannot tell the task of a _Mean: pass task= \(e.g. heads.SINGLE_LABEL"
    ):
        predict(_Mean(None), [_batch([1.0], labels=[0])])
    with pytest.raises(KeyError, match="unknown task 'multilabel'. Did you mean 'multi_label'"):
        predict(_Mean(None), [_batch([1.0], labels=[0])], task="multilabel")
    with pytest.raises(ValueError, match="the model returned no 'ratings', which the rating task reads"):
        predict(_Mean(SINGLE_LABEL), [_batch([1.0], ratings=[[0.0, 1.0]])], task=RATING)


def test_predictions_without_targets_and_empty_loaders() -> None:
    out = predict(_Mean(SINGLE_LABEL), [_batch([1.0, 2.0])])
    assert out.targets is None and np.isnan(out.loss)
    np.testing.assert_array_equal(out.predictions, [[1.0, -1.0], [2.0, -2.0]])
    with pytest.raises(ValueError, match="these predictions have no targets to score against"):
        out.metrics(SINGLE_LABEL)
    with pytest.raises(ValueError, match="only some batches carry 'labels'"):
        predict(_Mean(SINGLE_LABEL), [_batch([1.0], labels=[0]), _batch([2.0])])
    with pytest.raises(ValueError, match="the loader gave no batches to predict"):
        predict(_Mean(SINGLE_LABEL), [])


def test_evaluate_scores_by_the_models_task() -> None:
    model = _Mean(MULTI_LABEL)
    loader = [_batch([1.0, -1.0, 0.5], labels=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])]
    metrics = evaluate(model, loader, class_names=["a", "b"])
    want = multilabel_metrics(np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, -0.5]]), loader[0]["labels"].numpy())
    assert metrics["map"] == pytest.approx(want["map"], abs=1e-12)
    assert metrics["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-12)
    assert list(metrics["per_class_ap"]) == ["a", "b"] and metrics["loss"] == 0.5
    assert "mean_r" not in metrics and "accuracy" not in metrics
    # the same model scored as single-label: argmax accuracy of [m, -m] against class indices
    single = evaluate(model, [_batch([1.0, -1.0, 0.5], labels=[0, 1, 1])], task=SINGLE_LABEL)
    assert single["accuracy"] == pytest.approx(2 / 3, abs=1e-12) and "map" not in single


def test_importing_evaluation_does_not_import_the_training_loop() -> None:
    code = (
        "import sys, finetune.evaluation; "
        "print(sorted(m for m in ('finetune.train', 'finetune.recipe', 'finetune.checkpointing') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
