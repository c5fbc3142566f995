"""Prediction and evaluation of a model over a data loader, scored by the model's task.

>>> out = predict(model, loader)                  # Predictions(predictions, targets, loss), one row per clip
>>> metrics = evaluate(model, loader, class_names=model.labels)   # task.metrics(...) plus "loss"

The task (:mod:`heads.tasks`) says which output field holds the prediction, which batch key holds the targets
and which metrics apply; it comes from ``task=`` or from the model (``model.task``, as
:class:`finetune.model.AudioModel` has). Nothing is inferred from array shapes. Crops of one clip
(``clip_index`` in a batch, see :class:`finetune.data.CropCollate`) are averaged by :func:`average_crops`.

This module imports neither the training loop nor accelerate: an :class:`accelerate.Accelerator` is only used
when one is passed (to gather results across processes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from heads.tasks import Task, get_task

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["Predictions", "average_crops", "evaluate", "model_inputs", "predict", "resolve_task"]

_INPUT_KEYS = ("waveform", "features", "embeddings")
_EXTRA_KEYS = ("descriptors",)  # per-example inputs beside the audio (a hybrid head's clip descriptors)


class Predictions(NamedTuple):
    """What :func:`predict` returns (unpacks as ``preds, targets, loss``).

    Shapes:
        predictions: [N, C] per clip (logits or ratings, float32); targets: [N] class indices or [N, C]
        (multi-hot tags, ratings), or None when the batches had none.
    """

    predictions: np.ndarray
    targets: np.ndarray | None
    loss: float

    def metrics(self, task: Task | str, names: Sequence[str] | None = None) -> dict[str, Any]:
        """``task.metrics`` of these predictions against their targets, plus the mean ``loss``.

        Raises:
            ValueError: there are no targets to score against.
        """
        if self.targets is None:
            raise ValueError("these predictions have no targets to score against (the batches carried none)")
        metrics = get_task(task).metrics(self.predictions, self.targets, names)
        metrics["loss"] = self.loss
        return metrics


def resolve_task(
    model: nn.Module, task: Task | str | None = None, accelerator: Accelerator | None = None
) -> Task:
    """``task`` when given (a :class:`Task` or a registered name), else the (unwrapped) model's ``task``.

    Raises:
        TypeError: neither says what the task is.
    """
    if task is not None:
        return get_task(task)
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    found = getattr(unwrapped, "task", None)
    if not isinstance(found, Task):
        raise TypeError(
            f"cannot tell the task of a {type(unwrapped).__name__}: pass task= (e.g. heads.SINGLE_LABEL or "
            "'multi_label') or give the model a `task` property, as AudioModel has"
        )
    return found


def model_inputs(batch: Mapping[str, Any], task: Task, require_targets: bool = True) -> dict[str, Any]:
    """The model's keyword arguments from a collated batch: its input (``waveform``, ``features`` or
    ``embeddings``), ``descriptors`` when the batch has them, and, under ``labels``, the targets found at
    ``task.target_key``.

    Raises:
        KeyError: the batch has no input or several, or (``require_targets``) lacks the task's targets.
    """
    inputs = {k: batch[k] for k in _INPUT_KEYS if k in batch}
    if len(inputs) != 1:
        raise KeyError(f"a batch needs one of {', '.join(map(repr, _INPUT_KEYS))}; got keys {sorted(batch)}")
    inputs.update({k: batch[k] for k in _EXTRA_KEYS if k in batch})
    if task.target_key in batch:
        inputs["labels"] = batch[task.target_key]
    elif require_targets:
        raise KeyError(
            f"the batch has no {task.target_key!r}, where the {task.name} task keeps its targets; "
            f"got keys {sorted(batch)}"
        )
    return inputs


def average_crops(values: Tensor, clip_index: Tensor, num_clips: int | None = None) -> Tensor:
    """Mean of each clip's crops (e.g. logits or probabilities of evaluation windows).

    Args:
        values: Per-crop values.
        clip_index: The clip of each crop (``AudioBatch["clip_index"]``).
        num_clips: Number of clips; default ``clip_index.max() + 1``.

    Shapes:
        values ``[M, ...]``, clip_index ``[M]`` -> ``[num_clips, ...]``.

    Raises:
        ValueError: If a clip has no crop or the lengths differ.
    """
    if values.shape[0] != clip_index.shape[0]:
        raise ValueError(f"{values.shape[0]} values but {clip_index.shape[0]} clip indices")
    num_clips = int(clip_index.max()) + 1 if num_clips is None else num_clips
    idx = clip_index.to(values.device)
    counts = torch.zeros(num_clips, device=values.device).index_add_(
        0, idx, torch.ones_like(idx, dtype=torch.float32)
    )
    if bool((counts == 0).any()):
        raise ValueError(f"clips {torch.nonzero(counts == 0).flatten().tolist()} have no crops")
    sums = values.new_zeros(num_clips, *values.shape[1:]).index_add_(0, idx, values)
    return sums / counts.reshape(-1, *([1] * (values.ndim - 1))).to(values.dtype)


def _to_device(inputs: dict[str, Any], device: torch.device | None) -> dict[str, Any]:
    if device is None:
        return inputs
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    accelerator: Accelerator | None = None,
    task: Task | str | None = None,
) -> Predictions:
    """Per-clip predictions, targets and mean batch loss of ``model`` over ``loader``.

    The crops of one clip (``clip_index`` in the batch) are averaged. With an ``accelerator`` the batches are
    expected on its device (a prepared loader) and the results are gathered across processes; without one,
    batches are moved to the model's device.

    Args:
        task: what the outputs mean; default ``model.task`` (see :func:`resolve_task`).

    Raises:
        TypeError: the task is unknown (see :func:`resolve_task`).
        ValueError: the model returns no ``task.output_field``, or only some batches carry targets.
    """
    task = resolve_task(model, task, accelerator)
    params = next(iter(model.parameters()), None)
    device = params.device if accelerator is None and params is not None else None
    was_training = model.training
    model.eval()
    preds, targets, losses = [], [], []
    try:
        for batch in loader:
            inputs = _to_device(model_inputs(batch, task, require_targets=False), device)
            if preds and ("labels" in inputs) != bool(targets):
                raise ValueError(
                    f"only some batches carry {task.target_key!r}; give it in all of them or none"
                )
            out = model(**inputs)
            pred = getattr(out, task.output_field, None)
            if pred is None:
                raise ValueError(
                    f"the model returned no {task.output_field!r}, which the {task.name} task reads; "
                    "is its head built for another task?"
                )
            pred, target = pred.float(), inputs.get("labels")
            clip_index = batch.get("clip_index")
            if clip_index is not None:
                pred = average_crops(pred, clip_index)
                if target is not None:
                    target = average_crops(target.float(), clip_index).to(target.dtype)
            if accelerator is not None:  # one call per tensor: gather_for_metrics cannot gather None
                pred = accelerator.gather_for_metrics(pred)
                target = accelerator.gather_for_metrics(target) if target is not None else None
            if out.loss is not None:
                losses.append(float(out.loss))
            preds.append(pred.cpu().numpy())
            if target is not None:
                targets.append(target.cpu().numpy())
    finally:
        model.train(was_training)
    if not preds:
        raise ValueError("the loader gave no batches to predict")
    return Predictions(
        np.concatenate(preds),
        np.concatenate(targets) if targets else None,
        float(np.mean(losses)) if losses else float("nan"),
    )


def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    accelerator: Accelerator | None = None,
    class_names: Sequence[str] | None = None,
    task: Task | str | None = None,
) -> dict[str, Any]:
    """The task's metrics of ``model`` over ``loader`` (``task.metrics`` of :func:`predict`'s output) plus
    ``loss``; ``class_names`` label the classes or rating dimensions."""
    task = resolve_task(model, task, accelerator)
    return predict(model, loader, accelerator, task).metrics(task, class_names)
