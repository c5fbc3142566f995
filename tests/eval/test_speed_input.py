"""The input-pipeline benchmark on tiny settings: generated tracks are reused, every mode counts the clips it
delivered, and the arithmetic follows from the per-core rates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import soundfile as sf

from eval import speed_input


@pytest.mark.usefixtures("one_thread")
def test_modes_rates_and_arithmetic(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    speed_input.add_arguments(parser)
    args = parser.parse_args(
        ["--formats", "wav", "--minutes", "0.05,0.1", "--window", "1", "--batch", "2", "--budget", "0"]
        + ["--min-batches", "2", "--workdir", str(tmp_path / "tracks"), "--out", str(tmp_path / "out")]
    )
    payload = speed_input.run(args)
    (result,) = payload["results"]
    assert result["format"] == "wav" and result["tracks_min"] == [0.05, 0.1]
    assert sf.info(tmp_path / "tracks" / "0.1min.wav").frames == 6 * 44100
    for mode in speed_input.MODES:
        timing = result[mode]
        assert timing["batches"] == 2 and timing["clips"] == 4
        assert timing["clips_per_s"] == pytest.approx(4 / timing["seconds"])
    assert result["speedup"] == pytest.approx(
        result["windowed"]["clips_per_s"] / result["whole_file"]["clips_per_s"]
    )
    rate = result["cached"]["clips_per_s"]
    assert payload["arithmetic"]["wav/cached"] == {
        "clips_per_s_per_core": rate,
        "cores_for_target": -(-200 // rate),
        "clips_per_s_with_15_workers": rate * 15,
        "feeds_target": rate * 15 >= 200,
    }
    saved = json.loads((tmp_path / "out" / "input-cpu.json").read_text())
    assert (
        saved["benchmark"] == "input"
        and saved["machine"]["cpu_count"] >= 1
        and saved["results"] == payload["results"]
    )
    mtime = (tmp_path / "tracks" / "0.1min.wav").stat().st_mtime_ns
    speed_input._track(tmp_path / "tracks" / "0.1min.wav", "wav", 0.1, seed=0)  # reused, not written again
    assert (tmp_path / "tracks" / "0.1min.wav").stat().st_mtime_ns == mtime
