"""Window plans, and whole-clip prediction in bounded memory: windows run a batch at a time across clips, results
come in input order, a clip's output is the mean of its windows', and an unreadable file does not stop the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from finetune.inference import WINDOWS_NAME, WindowPlan, predict_clips
from finetune.model import ModelOutput
from heads.tasks import SINGLE_LABEL

SR = 1000


class WindowStats(nn.Module):
    """A stand-in model whose 'logits' are each window's mean and maximum, recording its batch sizes."""

    sample_rate = SR
    task = SINGLE_LABEL
    labels = ("mean", "max")

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.batches: list[int] = []

    def forward(self, waveform: torch.Tensor) -> ModelOutput:
        self.batches.append(waveform.shape[0])
        return ModelOutput(logits=torch.stack([waveform.mean(-1), waveform.amax(-1)], -1) + self.anchor)


def test_plans_place_windows_and_round_trip(tmp_path: Path) -> None:
    assert WindowPlan(1.0, crops=3).starts(5000, SR) == [0, 2000, 4000]
    assert WindowPlan(1.0).starts(3500, SR) == [0, 1000, 2000, 2500]  # back to back, the last at the end
    assert WindowPlan(1.0, hop_seconds=0.5).starts(2000, SR) == [0, 500, 1000]
    assert WindowPlan(2.0, crops=3).starts(500, SR) == [-1500]
    assert WindowPlan(1.0, crops=3).describe() == "3 window(s) of 1 s evenly spaced over each clip"
    assert WindowPlan(4.0, hop_seconds=2.0).describe() == "windows of 4 s every 2 s over each clip"
    assert WindowPlan.load(tmp_path) is None
    plan = WindowPlan(4.0, crops=8)
    assert plan.save(tmp_path) == tmp_path / WINDOWS_NAME and WindowPlan.load(tmp_path) == plan
    (tmp_path / WINDOWS_NAME).write_text('{"window_seconds": 4.0, "hops": 2}')
    with pytest.raises(ValueError, match=r"windows\.json is not a window plan \(.*'hops'.*\); delete it"):
        WindowPlan.load(tmp_path)
    for kwargs, message in (
        ({"window_seconds": 0.0}, "window_seconds must be > 0, got 0.0"),
        (
            {"window_seconds": 1.0, "crops": 2, "hop_seconds": 1.0},
            "give crops .* or hop_seconds .*, not both",
        ),
        ({"window_seconds": 1.0, "crops": 0}, "crops must be >= 1, got 0"),
        ({"window_seconds": 1.0, "hop_seconds": -1.0}, "hop_seconds must be > 0, got -1.0"),
    ):
        with pytest.raises(ValueError, match=message):
            WindowPlan(**kwargs)


def test_long_clips_run_a_batch_at_a_time_and_average_their_windows(tmp_path: Path) -> None:
    ramp = np.arange(60 * SR, dtype=np.float32) / (60 * SR)  # a minute: 60 windows of 1 s
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, SR, subtype="FLOAT")
    short = {"audio": np.full(500, 0.5, dtype=np.float32), "sample_rate": SR, "id": "short"}
    rows = [
        {"path": str(path)},
        short,
        {"path": str(tmp_path / "gone.wav")},
        {"path": str(path), "name": "again"},
    ]
    model = WindowStats()
    results = list(predict_clips(model, rows, WindowPlan(1.0), batch_size=7))
    assert [r.index for r in results] == [0, 1, 2, 3] and [r.name for r in results] == [
        "ramp.wav",
        "short",
        "gone.wav",
        "again",
    ]
    assert max(model.batches) == 7 and sum(model.batches) == 60 + 1 + 60  # never more than a batch of windows
    windows = torch.from_numpy(ramp).reshape(60, SR)
    expected = torch.stack([windows.mean(-1), windows.amax(-1)], -1).double().mean(0).float().numpy()
    np.testing.assert_allclose(results[0].output, expected, atol=1e-6)
    assert results[0].windows == 60 and results[0].error is None and results[0].path == str(path)
    np.testing.assert_allclose(results[1].output, [0.25, 0.5], atol=1e-6)  # half a window of 0.5, left-padded
    assert results[2].output is None and results[2].windows == 0 and results[2].error == "file not found"
    np.testing.assert_array_equal(results[3].output, results[0].output)
