"""Window placement (evenly spaced, sliding, random right-aligned) and opening rows as tracks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.data.decoded import DecodedCache
from finetune.data.resample import resample
from finetune.data.tracks import TrackReader, evenly_spaced_starts, random_window_starts, sliding_starts


def test_evenly_spaced_and_sliding_windows_cover_the_clip() -> None:
    assert evenly_spaced_starts(1000, 100, 1) == [450]
    assert evenly_spaced_starts(1000, 100, 4) == [0, 300, 600, 900]
    assert evenly_spaced_starts(60, 100, 3) == [-40]
    assert sliding_starts(1000, 100, 100) == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert sliding_starts(1050, 100, 100)[-2:] == [900, 950]  # the last window ends at the end
    assert sliding_starts(250, 100, 60) == [0, 60, 120, 150]
    assert sliding_starts(100, 100, 50) == [0] and sliding_starts(30, 100, 50) == [-70]


def test_random_windows_end_inside_the_allowed_range() -> None:
    g = torch.Generator().manual_seed(0)
    starts = random_window_starts(1000, 100, 200, 100, g)
    assert min(starts) >= 0 and max(starts) <= 900 and len(set(starts)) > 50
    early = random_window_starts(1000, 100, 200, 20, g)
    assert min(early) >= -80 and min(early) < 0
    assert set(random_window_starts(50, 100, 20, 100, g)) == {-50}  # a short clip: its whole length


def test_reader_opens_memory_and_file_rows(tmp_path: Path) -> None:
    reader = TrackReader(8000)
    tone = np.sin(np.arange(1600) / 5).astype(np.float32)
    track = reader.open({"audio": np.stack([tone, tone]), "sampling_rate": 16000}, "m")
    assert track.length == 800 and track.path is None
    torch.testing.assert_close(track.read(-2, 3)[2:], resample(torch.from_numpy(tone), 16000, 8000)[:3])
    path = tmp_path / "f.wav"
    sf.write(path, tone, 16000, subtype="FLOAT")
    from_header = reader.open({"path": str(path)}, "f")
    from_row = reader.open({"path": str(path), "frames": 1600, "file_rate": 16000}, "f")
    assert from_header.length == from_row.length == 800 and from_row.path == str(path)
    torch.testing.assert_close(from_row.read(100, 200), track.read(100, 200), atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="the decode cache holds 16000 Hz audio, the reader reads 8000 Hz"):
        TrackReader(8000, DecodedCache(16000, root=tmp_path))
    with pytest.raises(KeyError, match="row 'x' has no sample rate"):
        reader.open({"audio": tone}, "x")
