"""Whole-clip predictions in bounded memory: where a clip's windows go (:class:`WindowPlan`), and the model run
over them, batched across clips and averaged per clip (:func:`predict_clips`).

This is the batch counterpart of the streaming engine: a file of any length is covered by windows that are read
one at a time (:mod:`finetune.data.tracks`: only each window's frames are decoded) and run ``batch_size`` at a
time, so memory holds one batch of windows and a running sum per clip, whether the clip lasts ten seconds or
fourteen minutes. A clip's prediction is the mean of its windows' raw outputs (logits or ratings), as
:func:`finetune.evaluation.average_crops` pools evaluation crops; :meth:`AudioModel.probabilities` turns it into
what users read (calibrated when the model has a calibration).

The recipe tests with :func:`predict_clips` and saves its plan with the model (``windows.json``), so that
``python -m finetune predict --model DIR FILE...`` reproduces the test predictions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.audio import AudioLoadError
from .data.tracks import TrackReader, evenly_spaced_starts, sliding_starts
from .model import AudioModel

__all__ = ["WINDOWS_NAME", "ClipPrediction", "WindowPlan", "predict_clips"]

WINDOWS_NAME = "windows.json"


@dataclass(frozen=True)
class WindowPlan:
    """Where a clip's windows go: ``crops`` evenly spaced windows from its first to its last (the recipe's
    evaluation windows, ``data.eval_crops``), or windows every ``hop_seconds`` covering every sample (default:
    ``hop_seconds = window_seconds``, back to back).

    Raises:
        ValueError: a non-positive length, or both ``crops`` and ``hop_seconds``.
    """

    window_seconds: float
    crops: int | None = None
    hop_seconds: float | None = None

    def __post_init__(self) -> None:
        if not self.window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {self.window_seconds!r}")
        if self.crops is not None and self.hop_seconds is not None:
            raise ValueError("give crops (evenly spaced windows) or hop_seconds (sliding windows), not both")
        if self.crops is not None and self.crops < 1:
            raise ValueError(f"crops must be >= 1, got {self.crops}")
        if self.hop_seconds is not None and not self.hop_seconds > 0:
            raise ValueError(f"hop_seconds must be > 0, got {self.hop_seconds!r}")

    def window(self, sample_rate: int) -> int:
        """Window length in samples."""
        return round(self.window_seconds * sample_rate)

    def starts(self, length: int, sample_rate: int) -> list[int]:
        """Window starts, in samples at ``sample_rate``, for a clip of ``length`` samples (negative: the window
        begins before the clip and is padded with silence)."""
        n = self.window(sample_rate)
        if self.crops is not None:
            return evenly_spaced_starts(length, n, self.crops)
        return sliding_starts(length, n, round((self.hop_seconds or self.window_seconds) * sample_rate))

    def describe(self) -> str:
        """One line for people, e.g. ``"3 windows of 10 s evenly spaced over each clip"``."""
        if self.crops is not None:
            return f"{self.crops} window(s) of {self.window_seconds:g} s evenly spaced over each clip"
        hop = self.hop_seconds or self.window_seconds
        return f"windows of {self.window_seconds:g} s every {hop:g} s over each clip"

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the plan to ``directory/windows.json`` (next to a saved model)."""
        path = Path(directory) / WINDOWS_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> WindowPlan | None:
        """The plan saved in ``directory``, or None when there is none.

        Raises:
            ValueError: the file is not a plan; the message names it.
        """
        path = Path(directory) / WINDOWS_NAME
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is not a window plan ({e}); delete it or write it again") from e


@dataclass
class ClipPrediction:
    """One clip's result.

    Attributes:
        index: The clip's position in the input.
        name: Its id, name or file name.
        path: Its file (None for in-memory clips).
        output: The mean of its windows' raw outputs (logits or ratings), float32 ``[C]``; None on error.
        windows: Windows averaged.
        error: Why the clip has no prediction (it could not be read), else None.
    """

    index: int
    name: str
    path: str | None
    output: np.ndarray | None
    windows: int
    error: str | None = None


@dataclass
class _Pending:
    result: ClipPrediction
    total: torch.Tensor | None = None
    queued: int = 0
    done: int = 0
    complete: bool = False  # every window queued (or the clip failed)


def _name(row: Mapping[str, Any], index: int) -> str:
    for key in ("id", "name"):
        if key in row:
            return str(row[key])
    return Path(str(row["path"])).name if "path" in row else str(index)


@torch.inference_mode()
def predict_clips(
    model: AudioModel,
    rows: Iterable[Mapping[str, Any]],
    plan: WindowPlan,
    reader: TrackReader | None = None,
    batch_size: int = 16,
    progress: bool = False,
    total: int | None = None,
) -> Iterator[ClipPrediction]:
    """Predict every clip of ``rows`` from its windows, yielding results in input order.

    Rows follow the contract of :mod:`finetune.data.tracks` (a file row may be just ``{"path": ...}``; a hybrid
    head's rows carry their ``descriptors``). Windows are
    read one at a time and run ``batch_size`` at a time on the model's device (windows of consecutive clips share
    batches); a clip whose file cannot be read yields a result with ``error`` set, and the others go on.

    Args:
        model: The model (put in eval mode).
        rows: The clips.
        plan: Where each clip's windows go.
        reader: Opens rows at the model's rate (default: a plain :class:`TrackReader`).
        batch_size: Windows per forward pass.
        progress: Show a progress bar over clips (``total`` clips if given).

    Shapes:
        Each window ``[N]`` with ``N = plan.window(model.sample_rate)``; ``output`` ``[C]``.
    """
    reader = reader or TrackReader(model.sample_rate)
    rate, n, field_name = model.sample_rate, plan.window(model.sample_rate), model.task.output_field
    device = next(model.parameters()).device
    model.eval()
    pending: dict[int, _Pending] = {}
    batch: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []  # (clip, window, its descriptors)

    def run_batch() -> None:
        if not batch:
            return
        waves = torch.stack([w for _, w, _ in batch]).to(device)
        extra = [d for _, _, d in batch]
        inputs = {"waveform": waves}
        if extra[0] is not None:
            inputs["descriptors"] = torch.stack(extra).to(device)
        outputs = getattr(model(**inputs), field_name).float().cpu().double()
        for (index, _, _), out in zip(batch, outputs):
            clip = pending[index]
            clip.total = out if clip.total is None else clip.total + out
            clip.done += 1
        batch.clear()

    def ready() -> Iterator[ClipPrediction]:
        while pending:
            first = next(iter(pending.values()))
            if not first.complete or (first.result.error is None and first.done < first.queued):
                return
            del pending[first.result.index]
            if first.result.error is None and first.total is not None:
                first.result.output = (first.total / first.done).float().numpy()
                first.result.windows = first.done
            yield first.result

    bar = tqdm(total=total, desc="predicting", unit="clip", disable=not progress)
    for index, row in enumerate(rows):
        name = _name(row, index)
        clip = pending[index] = _Pending(ClipPrediction(index, name, row.get("path"), None, 0))
        try:
            track = reader.open(row, name)
            found = row.get("descriptors")  # a hybrid head's clip descriptors (finetune.descriptors)
            descriptors = None if found is None else torch.as_tensor(np.asarray(found), dtype=torch.float32)
            for start in plan.starts(track.length, rate):
                batch.append((index, track.read(start, start + n), descriptors))
                clip.queued += 1
                if len(batch) == batch_size:
                    run_batch()
        except AudioLoadError as e:
            clip.result.error = e.reason
            batch[:] = [entry for entry in batch if entry[0] != index]
        clip.complete = True
        for result in ready():
            bar.update(1)
            yield result
    run_batch()
    for result in ready():
        bar.update(1)
        yield result
    bar.close()
